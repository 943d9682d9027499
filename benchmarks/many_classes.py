"""Many classes with one bundle (K_max 20, groups above it): accuracy against k for every method, the cost.

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/many_classes.py --tin /tmp/tinyimagenet/tiny-imagenet-200 \\
        --cifar10 /tmp/cifar10x/cifar10 --fashion-mnist /usr/share/datasets/fashion-mnist \\
        --cache /tmp/many-classes-cache --plot benchmarks/many_classes.png [--cost] [--bundle DIR]

Real test photos (Tiny-ImageNet val, CIFAR-10 and Fashion-MNIST test: 50 per class; 221 classes with
all three), features from the bundle's trunk (benchmarks/_tin_features.py, cached by the trunk's
sha256), so a head's accuracy is exactly argmax(features @ W.T + b). Seen classes: the bundle's
training classes; held out: its `holdout_classes`. Methods: benchmarks/_many_refs.py. SE: paired
against the runtime's method (generated/group) over tasks (one task: over its classes).
`--cost` (personalize time and RSS at k = 100, sizes, predict time against k): benchmarks/_many_cost.py;
`--cost --no-accuracy --bundle DIR` times another bundle without any photos.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import _many_refs as refs  # noqa: E402
from _tin_features import trunk_key, universe  # noqa: E402

KS = (2, 10, 20, 50, 100)
REF = "generated/group"


def accuracy(w, b, feats, labels, cls) -> tuple[float, np.ndarray]:
    """(accuracy % over the task's photos, per-class recall %) of rows w, b for classes `cls`."""
    pos = {c: j for j, c in enumerate(cls)}
    idx = np.flatnonzero(np.isin(labels, cls))
    y = np.array([pos[v] for v in labels[idx]])
    pred = (feats[idx] @ w.T + b).argmax(1)
    rec = np.array([100.0 * np.mean(pred[y == j] == j) for j in range(len(cls))])
    return 100.0 * float(np.mean(pred == y)), rec


class Bench:
    """Photos' features, the bundle's Personalizer and its prior-only twin, the probe, the vocabulary."""

    def __init__(self, args):
        from tina_edge.runtime import Personalizer

        self.p = Personalizer.from_bundle(args.bundle, threads=1)
        key = trunk_key(self.p)
        self.val = universe(self.p, args.tin, args.cifar10, args.fashion_mnist, args.cache, "test", 50)
        counts = [int(n) for n in str(args.train_per_class).split(",")]
        self.trains = {n: universe(self.p, args.tin, args.cifar10, args.fashion_mnist, args.cache, "train", n) for n in counts}
        assert all(t["names"] == self.val["names"] for t in self.trains.values())
        self.names = self.val["names"]
        tr = self.p.manifest.training
        hold, known = set(tr.holdout_classes), set(tr.classes)
        self.seen = [i for i, n in enumerate(self.names) if n in known and n not in hold]
        self.held = [i for i, n in enumerate(self.names) if n in hold]
        self.tin_seen = [i for i in self.seen if i < self.val["n_tin"]]  # the "Tiny-ImageNet 100-way"
        self.probes = {n: refs.cached_probe(args.cache / f"probe_{len(self.names)}_{n}_{key}.npz", t["features"], t["labels"])
                       for n, t in self.trains.items()}
        self.tag = (lambda n: "") if len(counts) == 1 else (lambda n: f" ({n}/class)")
        self.W, self.B = self.probes[counts[0]]  # the nearest-seen lookup's rows
        self.emb = self.p.class_embeddings(self.names)
        self.unit = self.emb / np.linalg.norm(self.emb, axis=1, keepdims=True)
        self.prior, self.prior_note = refs.prior_only(self.p, args.bundle)
        print(f"prior alone: {self.prior_note}", file=sys.stderr)
        self.vocab = refs.Vocabulary(self.p)
        self.lookups: list[dict[str, str]] = []

    def finetuned(self, cls, train: dict) -> tuple[np.ndarray, np.ndarray]:
        idx = np.flatnonzero(np.isin(train["labels"], cls))
        pos = {c: j for j, c in enumerate(cls)}
        return refs.fit_probe(train["features"][idx], np.array([pos[v] for v in train["labels"][idx]]))

    def methods(self, cls, held_out: bool, finetune: bool) -> dict[str, tuple]:
        """{method: (W, b)} for the task `cls` (class indices)."""
        out = {f"generated/{m}": wb for m, wb in refs.generated(self.p, self.emb[cls], ("group", "none", "row")).items()}
        if self.prior is not None:
            out["prior alone"] = refs.generated(self.prior, self.emb[cls])["group"]
        for n, (W, B) in self.probes.items():
            out["probe" + self.tag(n)] = (W[cls], B[cls])
        for n, train in self.trains.items() if finetune else ():
            out["fine-tuned" + self.tag(n)] = self.finetuned(cls, train)
        if held_out:
            names = [self.names[c] for c in cls]
            emb, chosen = self.vocab.substitute(names, {self.names[c] for c in self.held}, self.emb[cls])
            self.lookups.append(chosen)
            out["nearest vocabulary"] = refs.generated(self.p, emb)["group"]
            out["nearest seen (probe row)"] = refs.nearest_seen(self.W, self.B, self.unit, cls, self.seen, set(self.held))
        return out


def se(diffs) -> float:
    d = np.asarray(diffs, float)
    return float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else float("nan")


def held_tasks(rng, bn: Bench, k, n: int) -> list[list[int]]:
    """Mixed tasks: round(k * held/all) held-out classes (at least 1), the rest seen, shuffled."""
    if k == "all":
        return [bn.seen + bn.held]
    nh = max(1, round(k * len(bn.held) / (len(bn.held) + len(bn.seen))))
    return [list(rng.permutation(list(rng.choice(bn.held, nh, replace=False)) + list(rng.choice(bn.seen, k - nh, replace=False))))
            for _ in range(n)]


def run_accuracy(bn: Bench, n_tasks: dict, seed: int, finetune_max: int) -> dict:
    rng = np.random.default_rng(seed)
    F, L = bn.val["features"], bn.val["labels"]
    res: dict = {"seen": {}, "heldout": {}, "grouping": {}}
    for k in list(KS) + ["all seen", "100 TIN"]:
        pool = bn.tin_seen if k == "100 TIN" else bn.seen
        tasks = ([bn.seen] if k == "all seen" else
                 [list(rng.choice(pool, int(str(k).split()[0]), replace=False)) for _ in range(n_tasks[100 if k == "100 TIN" else k])])
        rows: dict[str, list] = {}
        for cls in tasks:
            for m, (w, b) in bn.methods(cls, False, len(cls) <= finetune_max).items():
                rows.setdefault(m, []).append(accuracy(w, b, F, L, cls))
        key = {"all seen": f"all seen ({len(bn.seen)})", "100 TIN": "100, Tiny-ImageNet only"}.get(str(k), str(k))
        res["seen"][key] = summarise(rows, REF)
        print(f"seen k={key}: " + ", ".join(f"{m} {v['acc']:.1f}" for m, v in res["seen"][key].items()), file=sys.stderr)
    held = set(bn.held)
    for k in [2] + list(KS[1:]) + ["all"]:
        rows = {}
        for cls in held_tasks(rng, bn, k, n_tasks.get(k, 1)):
            hmask = np.isin(cls, list(held))
            for m, (w, b) in bn.methods(cls, True, False).items():
                acc, rec = accuracy(w, b, F, L, cls)
                rows.setdefault(m, []).append((acc, rec[hmask], rec[~hmask]))
        key = f"all ({len(bn.seen) + len(bn.held)})" if k == "all" else str(k)
        res["heldout"][key] = summarise(rows, REF, recall=True)
        print(f"held-out k={key}: " + ", ".join(f"{m} {v['recall']:.1f}" for m, v in res["heldout"][key].items()), file=sys.stderr)
    rows = {}  # grouping itself: the same 20 seen classes in 1 group of 20, 2 of 10, 4 of 5
    for cls in [list(rng.choice(bn.seen, 20, replace=False)) for _ in range(n_tasks[20])]:
        for gsz in (20, 10, 5):
            for m, (w, b) in refs.generated(bn.p, bn.emb[cls], ("none", "group", "row"), group=gsz).items():
                if gsz == 20 and m != "none":
                    continue
                rows.setdefault(f"groups of {gsz}" + ("" if gsz == 20 else f"/{m}"), []).append(accuracy(w, b, F, L, cls))
    res["grouping"]["20"] = summarise(rows, "groups of 20")
    res["prior_note"] = bn.prior_note
    res["lookup_examples"] = bn.lookups[:3] + bn.lookups[-1:]
    return res


def summarise(rows: dict[str, list], ref: str, recall: bool = False) -> dict:
    """Per method: mean accuracy (and held-out / seen recall), paired SE against `ref` over tasks (or classes)."""
    out = {}
    for m, r in rows.items():
        accs = np.array([a[0] for a in r])
        d = {"acc": float(accs.mean()), "tasks": len(r)}
        d["se_vs_ref"] = se(accs - np.array([a[0] for a in rows[ref]])) if len(r) > 1 else se(r[0][1] - rows[ref][0][1])
        if recall:
            for name, i in (("recall", 1), ("seen_recall", 2)):
                recs = np.array([np.mean(x[i]) for x in r])
                d[name] = float(recs.mean())
                d[name + "_se_vs_ref"] = (se(recs - np.array([np.mean(x[i]) for x in rows[ref]])) if len(r) > 1
                                          else se(r[0][i] - rows[ref][0][i]))
        out[m] = d
    return out


def _pm(v: dict, m: str, key: str = "acc", se_key: str = "se_vs_ref") -> str:
    s = f"{v[key]:.1f}"
    return f"**{s}**" if m == REF else s + ("" if math.isnan(v[se_key]) else f" ± {v[se_key]:.1f}")


def tables(res: dict) -> str:
    """The accuracy tables as markdown."""
    out = ["### Seen classes: accuracy % (± SE paired vs generated/group, the runtime's)\n"]
    seen = res["seen"]
    methods = list(dict.fromkeys(m for row in seen.values() for m in row))
    out += ["| k | tasks | " + " | ".join(methods) + " |", "|---" * (len(methods) + 2) + "|"]
    for k, row in seen.items():
        out.append(f"| {k} | {row[REF]['tasks']} | " + " | ".join(_pm(row[m], m) if m in row else "-" for m in methods) + " |")
    out.append("\n### Held-out classes in mixed tasks: held-out recall % (task accuracy %), ± SE paired vs generated/group\n")
    ho = res["heldout"]
    methods = list(next(iter(ho.values())).keys())
    out += ["| k | tasks | " + " | ".join(methods) + " |", "|---" * (len(methods) + 2) + "|"]
    for k, row in ho.items():
        out.append(f"| {k} | {row[REF]['tasks']} | " + " | ".join(
            _pm(row[m], m, "recall", "recall_se_vs_ref") + f" ({row[m]['acc']:.1f})" for m in methods) + " |")
    out.append("\n### The same 20 seen classes generated in groups: accuracy % (± SE paired vs one group of 20)\n")
    g = res["grouping"]["20"]
    out += ["| " + " | ".join(g) + " |", "|---" * len(g) + "|",
            "| " + " | ".join(f"{v['acc']:.1f}" + ("" if m == "groups of 20" else f" ± {v['se_vs_ref']:.1f}") for m, v in g.items()) + " |"]
    return "\n".join(out)


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tina_edge.runtime.atomic import atomic_save_figure

    def x_of(k: str) -> int:
        return int(k.split("(")[-1].rstrip(")")) if "(" in k else int(k)

    colours = {"generated/group": "C0", "prior alone": "C1", "nearest vocabulary": "C2", "nearest seen (probe row)": "C3"}
    refs_ = sorted({m for row in res["seen"].values() for m in row if m.startswith(("probe", "fine"))})

    def colour(m: str) -> str:  # one colour per method in both panels
        return colours.get(m) or f"C{4 + refs_.index(m)}"

    fig, ax = plt.subplots(1, 2, figsize=(12, 4.5))
    seen = res["seen"]
    for m in ["generated/group", "prior alone"] + [m for m in next(iter(seen.values())) if m.startswith(("fine-tuned", "probe"))]:
        pts = [(x_of(k), row[m]["acc"]) for k, row in seen.items() if m in row and "only" not in k]
        if pts:
            ax[0].plot(*zip(*pts), marker="o", color=colour(m), label=m + (" (runtime)" if m == REF else ""))
    ax[0].set(xscale="log", xlabel="k (classes per prompt; last: all seen)", ylabel="accuracy %",
              title="seen classes (Tiny-ImageNet, CIFAR-10, Fashion-MNIST)")
    ho = res["heldout"]
    probes = [m for m in next(iter(ho.values())) if m.startswith("probe")]
    for m in ["generated/group", "prior alone", "nearest vocabulary", "nearest seen (probe row)"] + probes:
        pts = [(x_of(k), row[m]["recall"]) for k, row in ho.items() if m in row]
        if pts:
            ax[1].plot(*zip(*pts), marker="o", color=colour(m), label=m + (" (saw their photos)" if m.startswith("probe") else ""),
                       linestyle=":" if m.startswith("probe") else "-")
    ax[1].set(xscale="log", xlabel="k (classes per prompt, ~20 % held out; last: all)", ylabel="held-out recall %",
              title="held-out classes in mixed tasks")
    for a in ax:
        a.set_xticks([2, 10, 20, 50, 100, 200])
        a.set_xticklabels(["2", "10", "20", "50", "100", "200"])
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    fig.tight_layout()
    atomic_save_figure(path, fig, dpi=110)


def add_photo_arguments(ap: argparse.ArgumentParser, required: bool = False) -> None:
    """The photo sources and the feature cache every many-classes benchmark reads (one set of flags)."""
    ap.add_argument("--tin", type=Path, default=Path("/tmp/tinyimagenet/tiny-imagenet-200"))
    ap.add_argument("--cifar10", type=Path, default=None, required=required,
                    help="CIFAR-10 JPEG folders DIR/<train|test>/<class>/*.jpg")
    ap.add_argument("--fashion-mnist", type=Path, default=None, required=required, help="Fashion-MNIST idx(.gz) files directory")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/many-classes-cache"))


def reference_bench(args: argparse.Namespace, bundle: Path | None) -> "Bench":
    """The Bench of `bundle` on add_photo_arguments' photos (50 train photos per class), as many_classes measured it."""
    return Bench(argparse.Namespace(bundle=bundle, tin=args.tin, cifar10=args.cifar10, fashion_mnist=args.fashion_mnist,
                                    cache=args.cache, train_per_class="50"))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", type=Path, default=None, help="bundle directory or archive (default: the embedded one)")
    add_photo_arguments(ap)
    ap.add_argument("--tasks", type=int, default=20, help="tasks per k <= 20 (k = 50, 100: half as many)")
    ap.add_argument("--train-per-class", default="50",
                    help="train photos per class for the probe and the fine-tuned head; several (50,200): one of each per count")
    ap.add_argument("--finetune-max", type=int, default=250, help="fit the fine-tuned head up to this many classes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cost", action="store_true")
    ap.add_argument("--repeats", type=int, default=11, help="timed calls per cost figure (medians)")
    ap.add_argument("--no-accuracy", action="store_true")
    ap.add_argument("--plot", type=Path, default=None)
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args(argv)
    res: dict = {}
    if not args.no_accuracy:
        n = {2: args.tasks, 10: args.tasks, 20: args.tasks, 50: max(2, args.tasks // 2), 100: max(2, args.tasks // 2)}
        res = run_accuracy(Bench(args), n, args.seed, args.finetune_max)
        print(tables(res))
        if args.plot:
            plot(res, args.plot)
    if args.cost:
        from _many_cost import run_cost

        res["cost"] = run_cost(args.bundle, args.repeats)
        print(json.dumps(res["cost"], indent=1))
    if args.json_out:
        from tina_edge.runtime.atomic import atomic_write_json

        atomic_write_json(args.json_out, res, indent=1)
    return res


if __name__ == "__main__":
    main()
