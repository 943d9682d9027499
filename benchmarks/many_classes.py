"""Many classes with the default bundle (K_max 20): accuracy against k, the grouping design, the cost.

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/many_classes.py --tin /tmp/tinyimagenet/tiny-imagenet-200 \\
        --cache /tmp/many-classes-cache --plot benchmarks/many_classes.png [--cost]

Tiny-ImageNet val photos (50 per class), features from the bundle's trunk (benchmarks/_tin_features.py),
so a generated head's accuracy is exactly argmax(features @ W.T + b). Seen classes: the bundle's
training classes; held out: its `holdout_classes`. References: a logistic-regression probe fitted on
the train photos of all Tiny-ImageNet classes (50 per class; the bundle ships no generic head),
restricted to a task's classes; a fine-tuned head (the same probe fitted on the task's classes
only, k <= 100); for held-out classes the nearest-seen-name lookup (each held-out name takes the
probe row of the nearest seen name by the bundle's text embedding, not already in the task).
SE: paired over tasks (one task: paired over classes).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _tin_features import cached  # noqa: E402

KS = (2, 10, 20, 50, 100)
MODES = ("none", "group", "row-norm", "row")


def fit_probe(x: np.ndarray, y: np.ndarray, C: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression on standardised features, returned as rows on raw features."""
    from sklearn.linear_model import LogisticRegression

    mu, sd = x.mean(0), x.std(0) + 1e-6
    lr = LogisticRegression(C=C, max_iter=300).fit((x - mu) / sd, y)
    w = lr.coef_ / sd
    return w.astype(np.float32), (lr.intercept_ - w @ mu).astype(np.float32)


def accuracy(w, b, feats, labels, cls) -> tuple[float, np.ndarray]:
    """(accuracy % over the task's photos, per-class recall %) of rows w, b for classes `cls`."""
    pos = {c: j for j, c in enumerate(cls)}
    idx = np.flatnonzero(np.isin(labels, cls))
    y = np.array([pos[v] for v in labels[idx]])
    pred = (feats[idx] @ w.T + b).argmax(1)
    rec = np.array([100.0 * np.mean(pred[y == j] == j) for j in range(len(cls))])
    return 100.0 * float(np.mean(pred == y)), rec


def draw(rng, pool, k, n):
    return [list(rng.choice(pool, size=k, replace=False)) for _ in range(n)]


class Bench:
    def __init__(self, tin: Path, cache: Path):
        from tina_edge.runtime import Personalizer

        self.val = cached(tin, cache, "val", 50)
        self.train = cached(tin, cache, "train", 50)
        self.names = [str(n) for n in self.val["names"]]
        self.p = Personalizer.from_bundle(threads=1)
        tr = self.p.manifest.training
        hold = set(tr.holdout_classes)
        known = set(tr.classes)
        self.seen = [i for i, n in enumerate(self.names) if n in known and n not in hold]
        self.held = [i for i, n in enumerate(self.names) if n in hold]
        probe = cache / "probe_all.npz"
        if not probe.is_file():
            from tina_edge.runtime.atomic import atomic_save_npz

            t = time.time()
            w, b = fit_probe(self.train["features"], self.train["labels"])
            print(f"probe on {len(self.names)} classes fitted in {time.time() - t:.0f} s", file=sys.stderr)
            atomic_save_npz(probe, w=w, b=b)
        with np.load(probe) as z:
            self.W, self.B = z["w"], z["b"]
        self.emb = self.p.class_embeddings(self.names)
        self.smp = self.p._settings(None, None, 0, 1)[0]

    def generated(self, cls, modes=MODES, group=None, seed=0) -> dict[str, tuple]:
        from tina_edge.runtime.groups import calibrate, group_sizes

        raw = self.p._params(self.smp, self.emb[cls], seed, 1, calibration="none", group=group)
        lay = self.p.manifest.template.layout
        sizes = group_sizes(len(cls), min(group or 20, 20))
        out = {}
        for m in modes:
            q = calibrate(raw, lay, sizes, m) if len(sizes) > 1 else raw
            out[m] = (q["fc.weight"], q["fc.bias"])
        return out

    def nearest(self, cls) -> tuple[np.ndarray, np.ndarray]:
        """Probe rows; each held-out class takes the row of its nearest seen name (not in the task)."""
        used = set(cls)
        rows = []
        for c in cls:
            if c in self.held:
                cand = [s for s in self.seen if s not in used] or self.seen  # all seen in the task: any
                s = cand[int(np.argmax(self.emb[cand] @ self.emb[c]))]
                used.add(s)
                rows.append(s)
            else:
                rows.append(c)
        return self.W[rows], self.B[rows]

    def finetuned(self, cls) -> tuple[np.ndarray, np.ndarray]:
        idx = np.flatnonzero(np.isin(self.train["labels"], cls))
        pos = {c: j for j, c in enumerate(cls)}
        w, b = fit_probe(self.train["features"][idx], np.array([pos[v] for v in self.train["labels"][idx]]))
        if len(cls) == 2:  # sklearn's binary form: one row
            w, b = np.concatenate([-w / 2, w / 2]), np.concatenate([-b / 2, b / 2])
        return w, b


def se(diffs) -> float:
    d = np.asarray(diffs, float)
    return float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else float("nan")


def run_accuracy(bn: Bench, n_tasks: dict[int, int], seed: int, finetune_max: int) -> dict:
    rng = np.random.default_rng(seed)
    F, L = bn.val["features"], bn.val["labels"]
    res: dict = {"seen": {}, "heldout": {}, "grouping": {}}
    ks = list(KS) + ["all seen"]
    for k in ks:
        tasks = [bn.seen] if k == "all seen" else draw(rng, bn.seen, k, n_tasks[k])
        rows: dict[str, list] = {}
        for cls in tasks:
            g = bn.generated(cls)
            for m, (w, b) in g.items():
                rows.setdefault(f"generated/{m}", []).append(accuracy(w, b, F, L, cls))
            rows.setdefault("probe", []).append(accuracy(bn.W[cls], bn.B[cls], F, L, cls))
            if k != "all seen" and k <= finetune_max:
                rows.setdefault("fine-tuned", []).append(accuracy(*bn.finetuned(cls), F, L, cls))
        res["seen"][str(k)] = summarise(rows, "generated/group")
        print(f"seen k={k}: " + ", ".join(f"{m} {v['acc']:.1f}" for m, v in res["seen"][str(k)].items()), file=sys.stderr)
    for k in [10, 20, 50, 100, "all"]:
        if k == "all":
            tasks = [bn.seen + bn.held]
        else:
            nh = max(1, round(k * len(bn.held) / (len(bn.held) + len(bn.seen))))
            tasks = [list(rng.permutation(list(rng.choice(bn.held, nh, replace=False)) + list(rng.choice(bn.seen, k - nh, replace=False))))
                     for _ in range(n_tasks[k])]
        rows = {}
        for cls in tasks:
            hmask = np.isin(cls, bn.held)
            g = bn.generated(cls, modes=("none", "group", "row"))
            for m, (w, b) in g.items():
                acc, rec = accuracy(w, b, F, L, cls)
                rows.setdefault(f"generated/{m}", []).append((acc, rec[hmask]))
            for name, (w, b) in (("probe", (bn.W[cls], bn.B[cls])), ("nearest-seen", bn.nearest(cls))):
                acc, rec = accuracy(w, b, F, L, cls)
                rows.setdefault(name, []).append((acc, rec[hmask]))
        res["heldout"][str(k)] = summarise(rows, "generated/group", recall=True)
        print(f"held-out k={k}: " + ", ".join(f"{m} {v['recall']:.1f}" for m, v in res["heldout"][str(k)].items()), file=sys.stderr)
    # grouping itself: the same 20 classes in 1 group of 20, 2 of 10, 4 of 5 (calibrated "row" and not)
    tasks = draw(rng, bn.seen, 20, n_tasks[20])
    rows = {}
    for cls in tasks:
        for gsz in (20, 10, 5):
            g = bn.generated(cls, modes=("none", "group", "row"), group=gsz)
            for m, (w, b) in g.items():
                if gsz == 20 and m != "none":
                    continue
                rows.setdefault(f"groups of {gsz}" + ("" if gsz == 20 else f"/{m}"), []).append(accuracy(w, b, F, L, cls))
    res["grouping"]["20"] = summarise(rows, "groups of 20")
    return res


def summarise(rows: dict[str, list], ref: str, recall: bool = False) -> dict:
    """Per method: mean accuracy (and held-out recall), paired SE against `ref` over tasks (or classes)."""
    out = {}
    for m, r in rows.items():
        accs = np.array([a for a, _ in r])
        d = {"acc": float(accs.mean()), "tasks": len(r)}
        if len(r) > 1:
            d["se_vs_ref"] = se(accs - np.array([a for a, _ in rows[ref]]))
        else:  # one task: paired over its classes
            d["se_vs_ref"] = se(r[0][1] - rows[ref][0][1])
        if recall:
            recs = [np.mean(x) for _, x in r]
            d["recall"] = float(np.mean(recs))
            d["recall_se_vs_ref"] = (se(np.array(recs) - np.array([np.mean(x) for _, x in rows[ref]])) if len(r) > 1
                                     else se(r[0][1] - rows[ref][0][1]))
        out[m] = d
    return out


# ------------------------------------------------------------------------------------- cost

_RSS_CHILD = r"""
import sys, json, numpy as np
from tina_edge.runtime import Personalizer
p = Personalizer.from_bundle(threads=1)
names = json.loads(sys.argv[1])
c = p.personalize(names)
c.predict(np.zeros((8, 128, 128, 3), np.uint8))
hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]
print(int(hwm) / 1024)
"""


def run_cost(bn: Bench) -> dict:
    import os

    vocab = list(bn.p.manifest.vocabulary)
    res: dict = {}
    names100 = [bn.names[i] for i in bn.seen[:100]]
    bn.p.personalize(names100)  # names now cached
    ts = []
    for _ in range(7):
        t = time.perf_counter()
        c = bn.p.personalize(names100)
        ts.append(time.perf_counter() - t)
    res["personalize_ms_k100"] = 1000 * float(np.median(ts))
    names20 = names100[:20]
    bn.p.personalize(names20)
    ts = []
    for _ in range(7):
        t = time.perf_counter()
        bn.p.personalize(names20)
        ts.append(time.perf_counter() - t)
    res["personalize_ms_k20"] = 1000 * float(np.median(ts))
    from tina_edge.runtime.prompt import class_key, skeleton

    keys: set[str] = set()
    big = [v for v in vocab if not ({class_key(v), skeleton(v)} & keys or keys.update({class_key(v), skeleton(v)}))][:1000]
    bn.p.personalize(big)
    t = time.perf_counter()
    bn.p.personalize(big)
    res["personalize_ms_k1000"] = 1000 * (time.perf_counter() - t)
    res["model_onnx_bytes_k100"] = len(c.model_bytes())
    res["head_onnx_bytes_k100"] = len(c.model_bytes(head_only=True))
    res["head_numbers_k100"] = int(c.params["fc.weight"].size + c.params["fc.bias"].size)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    for k, names in (("20", names20), ("100", names100), ("1000", big)):
        out = subprocess.run([sys.executable, "-c", _RSS_CHILD, json.dumps(names)], env=env, capture_output=True,
                             text=True, check=True)
        res[f"peak_rss_mb_k{k}"] = float(out.stdout.strip().splitlines()[-1])
    x = np.zeros((64, 128, 128, 3), np.uint8)
    res["predict_ms_64"] = {}
    for k, names in (("2", names100[:2]), ("20", names20), ("100", names100), ("1000", big)):
        c = bn.p.personalize(names)
        c.predict(x)
        ts = []
        for _ in range(5):
            t = time.perf_counter()
            c.predict(x)
            ts.append(time.perf_counter() - t)
        res["predict_ms_64"][k] = 1000 * float(np.median(ts))
    return res


def print_tables(res: dict) -> None:
    print("## Seen classes: accuracy % (SE paired vs generated/group, the runtime's)\n")
    seen = res["seen"]
    methods = list(next(iter(seen.values())).keys())
    print("| k | tasks | " + " | ".join(methods) + " |")
    print("|---" * (len(methods) + 2) + "|")
    for k, row in seen.items():
        cells = [f"{row[m]['acc']:.1f}" + (f" ± {row[m]['se_vs_ref']:.1f}" if m in row and not math.isnan(row[m]['se_vs_ref'])
                                          and m != "generated/group" else "") if m in row else "-" for m in methods]
        print(f"| {k} | {row['probe']['tasks']} | " + " | ".join(cells) + " |")
    print("\n## Held-out classes in mixed tasks: held-out recall % (task accuracy %), SE paired vs generated/group\n")
    ho = res["heldout"]
    methods = list(next(iter(ho.values())).keys())
    print("| k | tasks | " + " | ".join(methods) + " |")
    print("|---" * (len(methods) + 2) + "|")
    for k, row in ho.items():
        cells = [f"{row[m]['recall']:.1f}" + ("" if m == "generated/group" else f" ± {row[m]['recall_se_vs_ref']:.1f}")
                 + f" ({row[m]['acc']:.1f})" for m in methods]
        print(f"| {k} | {row['probe']['tasks']} | " + " | ".join(cells) + " |")
    print("\n## The same 20 seen classes generated in groups: accuracy % (SE paired vs one group of 20)\n")
    g = res["grouping"]["20"]
    print("| " + " | ".join(g) + " |")
    print("|---" * len(g) + "|")
    print("| " + " | ".join(f"{v['acc']:.1f}" + ("" if m == "groups of 20" else f" ± {v['se_vs_ref']:.1f}") for m, v in g.items()) + " |")
    if "cost" in res:
        print("\n## Cost\n")
        for key, v in res["cost"].items():
            print(f"- {key}: {v if not isinstance(v, float) else round(v, 1)}")


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tina_edge.runtime.atomic import atomic_save_figure

    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    seen = res["seen"]
    ks = list(seen)
    xs = [int(k) if k.isdigit() else 161 for k in ks]
    for m in ("generated/group", "generated/row", "probe", "fine-tuned"):
        pts = [(x, seen[k][m]["acc"]) for x, k in zip(xs, ks) if m in seen[k]]
        ax[0].plot(*zip(*pts), marker="o", label=m)
    ax[0].set(xscale="log", xlabel="k (classes per prompt)", ylabel="accuracy %", title="seen Tiny-ImageNet classes")
    ax[0].legend()
    ho = res["heldout"]
    ks = list(ho)
    xs = [int(k) if k.isdigit() else 202 for k in ks]
    for m in ("generated/group", "generated/row", "probe", "nearest-seen"):
        ax[1].plot(xs, [ho[k][m]["recall"] for k in ks], marker="o", label=m)
    ax[1].set(xscale="log", xlabel="k (classes per prompt)", ylabel="held-out recall %", title="held-out classes in mixed tasks")
    ax[1].legend()
    fig.tight_layout()
    atomic_save_figure(path, fig, dpi=110)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tin", type=Path, default=Path("/tmp/tinyimagenet/tiny-imagenet-200"))
    ap.add_argument("--cache", type=Path, default=Path("/tmp/many-classes-cache"))
    ap.add_argument("--tasks", type=int, default=20, help="tasks per k (k=50: half, k=100: a quarter)")
    ap.add_argument("--finetune-max", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cost", action="store_true")
    ap.add_argument("--no-accuracy", action="store_true")
    ap.add_argument("--plot", type=Path, default=None)
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args(argv)
    bn = Bench(args.tin, args.cache)
    n = {2: args.tasks, 10: args.tasks, 20: args.tasks, 50: max(2, args.tasks // 2), 100: max(2, args.tasks // 4)}
    res = {} if args.no_accuracy else run_accuracy(bn, n, args.seed, args.finetune_max)
    if args.cost:
        res["cost"] = run_cost(bn)
    if res.get("seen"):
        print_tables(res)
        if args.plot:
            plot(res, args.plot)
    elif "cost" in res:
        print(json.dumps(res["cost"], indent=1))
    if args.json_out:
        from tina_edge.runtime.atomic import atomic_write_json

        atomic_write_json(args.json_out, res, indent=1)
    return res


if __name__ == "__main__":
    main()
