"""What `--min-prob P` buys on real photos: in-prompt images kept vs out-of-prompt images rejected.

For each prompt, a model is personalized from the bundle (as a user gets it) and run once over a
labelled folder (DIR/<class>/*.jpg): images of the prompt's classes are "in-prompt", images of
every other folder are "out-of-prompt" (a photo of none of the model's classes). For each
threshold P the script reports, averaged over prompts:

- kept: share of in-prompt images whose top probability is >= P (answered with a class);
- right: share of in-prompt images answered with their own class (unknown counts as wrong);
- precision: share of kept in-prompt answers that are right;
- rejected: share of out-of-prompt images answered "unknown" (top probability < P);
- rejected far: the same for --far DIR, photos of objects unlike any class of the data (optional);
- AUROC of the top probability as an in-vs-out score (0.5 = no separation), per prompt.

Run from the repository root (see benchmarks/README.md), e.g.

    python benchmarks/unknown_threshold.py --data /work/data/cifar10/test \\
        --far /work/data/tiny-imagenet-objects \\
        --plot docs/img/unknown_threshold.png --json-out unknown_threshold.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python benchmarks/x.py` without installing
    sys.path.insert(0, str(ROOT))

from tina_edge.runtime import Personalizer  # noqa: E402
from tina_edge.runtime.evaluation import labelled_images, predict_files, walk_images  # noqa: E402

# CIFAR-10 class names (the defaults assume --data is CIFAR-10's test folder; pass --prompt otherwise)
DEFAULT_PROMPTS = ["airplane, bird, dog, horse, ship", "automobile, cat, deer, frog, truck", "dog, horse, truck"]
DEFAULT_THRESHOLDS = [0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99]


def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of a random positive > score of a random negative), ties counted half (Mann-Whitney)."""
    scores = np.concatenate([pos, neg])
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    s = scores[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def limit(files: list[Path], targets: np.ndarray, n: int | None) -> tuple[list[Path], np.ndarray]:
    """The first n files of every class (all when n is None), order kept."""
    if n is None:
        return files, targets
    keep = np.zeros(len(files), bool)
    for t in np.unique(targets):
        keep[np.flatnonzero(targets == t)[:n]] = True
    return [f for f, k in zip(files, keep) if k], targets[keep]


def measure_prompt(tina: Personalizer, prompt: str, data: Path, seed: int, per_class: int | None,
                   thresholds: list[float], batch_size: int, far: list[Path]) -> dict:
    """Personalize one prompt and score every threshold on its in- and out-of-prompt images."""
    from tina_edge.runtime.prompt import parse_classes

    t0 = time.perf_counter()
    clf = tina.personalize(parse_classes(prompt), seed=seed)
    inside = labelled_images(data, clf.labels)
    if inside.missing_labels:
        raise SystemExit(f"{data} has no folder for {', '.join(inside.missing_labels)} (prompt {prompt!r})")
    files_in, targets = limit(inside.files, inside.targets, per_class)
    files_out: list[Path] = []
    for name in inside.unmatched_folders:
        found = walk_images(data / name).images
        files_out.extend(found[:per_class] if per_class else found)
    if not files_out:
        raise SystemExit(f"{data} has no folder outside the prompt {prompt!r}: nothing to reject")
    p_in = predict_files(clf, files_in, batch_size=batch_size)
    p_out = predict_files(clf, files_out, batch_size=batch_size)
    c_in, c_out = p_in.confidence, p_out.confidence
    c_far = predict_files(clf, far, batch_size=batch_size).confidence if far else None
    right = p_in.indices == targets
    rows = []
    for t in thresholds:
        kept = c_in >= np.float32(t)
        rows.append({
            "threshold": t, "kept": float(kept.mean()), "right": float((kept & right).mean()),
            "precision": float((kept & right).sum() / max(1, kept.sum())),
            "rejected": float((c_out < np.float32(t)).mean()),
            **({"rejected_far": float((c_far < np.float32(t)).mean())} if c_far is not None else {}),
        })
    return {
        "prompt": prompt, "labels": clf.labels, "out_classes": inside.unmatched_folders,
        "n_in": len(files_in), "n_out": len(files_out), "accuracy": float(right.mean()),
        "auroc": auroc(c_in.astype(np.float64), c_out.astype(np.float64)),
        "median_confidence_in": float(np.median(c_in)), "median_confidence_out": float(np.median(c_out)),
        "seconds": round(time.perf_counter() - t0, 1), "rows": rows,
        **({"n_far": len(far), "auroc_far": auroc(c_in.astype(np.float64), c_far.astype(np.float64)),
            "median_confidence_far": float(np.median(c_far))} if c_far is not None else {}),
    }


def mean_rows(results: list[dict]) -> list[dict]:
    keys = [k for k in ("kept", "right", "precision", "rejected", "rejected_far") if k in results[0]["rows"][0]]
    return [{"threshold": r0["threshold"], **{k: float(np.mean([res["rows"][i][k] for res in results])) for k in keys}}
            for i, r0 in enumerate(results[0]["rows"])]


def markdown(results: list[dict], rows: list[dict]) -> str:
    out = ["| prompt | in-prompt images | out-of-prompt images | accuracy (no threshold) | AUROC in vs out | median top-p in / out |",
           "|---|---|---|---|---|---|"]
    far = "n_far" in results[0]
    if far:
        out[0] += " far images | AUROC in vs far | median top-p far |"
        out[1] += "---|---|---|"
    for r in results:
        out.append(f"| {r['prompt']} | {r['n_in']} | {r['n_out']} ({', '.join(r['out_classes'])}) | {100 * r['accuracy']:.1f} "
                   f"| {r['auroc']:.3f} | {r['median_confidence_in']:.2f} / {r['median_confidence_out']:.2f} |"
                   + (f" {r['n_far']} | {r['auroc_far']:.3f} | {r['median_confidence_far']:.2f} |" if far else ""))
    out += ["", "| --min-prob | in-prompt kept % | in-prompt right % | precision of kept % | out-of-prompt rejected %"
            + (" | far rejected % |" if far else " |"), "|---|---|---|---|---|" + ("---|" if far else "")]
    for r in rows:
        out.append(f"| {r['threshold']:g} | {100 * r['kept']:.1f} | {100 * r['right']:.1f} | {100 * r['precision']:.1f} "
                   f"| {100 * r['rejected']:.1f} |" + (f" {100 * r['rejected_far']:.1f} |" if far else ""))
    return "\n".join(out)


def plot(results: list[dict], rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4), dpi=120)
    t = [r["threshold"] for r in rows]
    for key, label in (("kept", "in-prompt kept"), ("right", "in-prompt right"), ("rejected", "out-of-prompt rejected"),
                       ("rejected_far", "far images rejected")):
        if key in rows[0]:
            a.plot(t, [100 * r[key] for r in rows], marker="o", label=label)
    a.set_xlabel("--min-prob (top probability threshold)")
    a.set_ylabel("% of images")
    a.set_title(f"mean over {len(results)} prompts")
    a.grid(alpha=0.3)
    a.legend()
    for res in results:
        line, = b.plot([100 * r["rejected"] for r in res["rows"]], [100 * r["kept"] for r in res["rows"]], marker=".",
                       label=f"{res['prompt']} (AUROC {res['auroc']:.2f})")
        if "n_far" in res:
            b.plot([100 * r["rejected_far"] for r in res["rows"]], [100 * r["kept"] for r in res["rows"]], marker="x",
                   ls=":", color=line.get_color(), label=f"  same, far images (AUROC {res['auroc_far']:.2f})")
    b.plot([0, 100], [100, 0], color="grey", lw=0.8, ls="--", label="no separation")
    b.set_xlabel("out-of-prompt images rejected % (x: far images)")
    b.set_ylabel("in-prompt images kept %")
    b.set_title("trade-off, one curve per prompt")
    b.grid(alpha=0.3)
    b.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="DIR/<class>/*.jpg with the prompt's classes and others")
    p.add_argument("--bundle", type=Path, default=None, help="Bundle (default: the embedded one)")
    p.add_argument("--prompt", action="append", default=None, help=f"Classes of one model (repeatable; default: {DEFAULT_PROMPTS})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--far", type=Path, default=None, help="DIR of photos of none of --data's classes (walked; optional)")
    p.add_argument("--max-per-class", type=int, default=None, help="At most N images per folder (default: all)")
    p.add_argument("--thresholds", default=",".join(map(str, DEFAULT_THRESHOLDS)))
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json-out", type=Path, default=None)
    p.add_argument("--plot", type=Path, default=None)
    a = p.parse_args(argv)
    tina = Personalizer.from_bundle(a.bundle, threads=a.threads)
    thresholds = [float(x) for x in a.thresholds.split(",") if x.strip()]
    far = walk_images(a.far).images if a.far else []
    if a.far and not far:
        raise SystemExit(f"--far {a.far} holds no image files")
    results = []
    for prompt in a.prompt or DEFAULT_PROMPTS:
        results.append(measure_prompt(tina, prompt, a.data, a.seed, a.max_per_class, thresholds, a.batch_size, far))
        print(f"{prompt}: {results[-1]['seconds']} s", file=sys.stderr)
    rows = mean_rows(results)
    print(f"bundle {tina.manifest.bundle_id}, data {a.data}, seed {a.seed}\n")
    print(markdown(results, rows))
    if a.json_out:
        a.json_out.write_text(json.dumps({"bundle_id": tina.manifest.bundle_id, "data": str(a.data), "far": str(a.far), "seed": a.seed,
                                          "prompts": results, "mean": rows}, indent=1))
    if a.plot:
        plot(results, rows, a.plot)


if __name__ == "__main__":
    main()
