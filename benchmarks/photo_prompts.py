"""Photo prompts on the default bundle (issue 21): names, photos and their fusions on the same few-shot tasks.

Trunk features of Tiny-ImageNet photos computed exactly as the runtime computes them for user photos
(runtime/photo_prompts.py `PhotoFeaturizer`: the manifest's preprocessing, the bundle's own trunk);
shots are train photos (the first 20 per class), queries 50 val photos per class. 10-way tasks of
held-out classes (the bundle's holdout that are Tiny-ImageNet classes) and of seen classes (split in
two halves: TUNE, the only classes any constant is chosen on, and EVAL); 5-way tasks of the universe's
dog breeds with photos-only labels. Every method sees the same tasks, shots and photos; differences
to the shipped rule are paired (SE over tasks, [SE over classes]).

    OMP_NUM_THREADS=1 python benchmarks/photo_prompts.py --tiny /tmp/tinyimagenet/tiny-imagenet-200
    ... --tune     # the grid over the fusion weight on the TUNE half of the seen classes
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tina_edge.runtime.photo_prompts import PhotoFeaturizer, photo_head_rows  # noqa: E402
from tina_edge.train.evaluation.fewshot import (class_recalls, cosine_prototype_logits, logreg,  # noqa: E402
                                                map_logreg, zscore)
from tina_edge.train.evaluation.stats import mean_se, paired_difference  # noqa: E402

DOGS = ["Chihuahua", "Yorkshire terrier", "golden retriever", "Labrador retriever", "German shepherd", "standard poodle"]
SHIPPED = "shipped: name + photos"
SHIPPED_PHOTOS = "shipped: photos only"


def tiny_classes(root: Path) -> dict[str, tuple[list[Path], list[Path]]]:
    """name (words.txt first name) -> (first 20 train photos, first 50 val photos)."""
    words = {}
    for line in (root / "words.txt").read_text().splitlines():
        w, _, v = line.partition("\t")
        words[w] = v.split(",")[0].strip()
    val: dict[str, list[str]] = {}
    for line in (root / "val" / "val_annotations.txt").read_text().splitlines():
        f, w = line.split("\t")[:2]
        val.setdefault(w, []).append(f)
    out = {}
    for w in (root / "wnids.txt").read_text().split():
        tr = root / "train" / w / "images"
        out[words[w]] = (sorted(tr.iterdir())[:20], [root / "val" / "images" / f for f in sorted(val[w])[:50]])
    return out


def features(p, files: dict, names: list[str], cache: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Trunk features per class, cached under /tmp keyed by the trunk's sha256."""
    from tina_edge.runtime.head import trunk_sha256

    trunk = p.trunk_model()
    path = cache / f"photo_prompts_{trunk_sha256(trunk)[:16]}_all.npz"  # _all: the runtime's ORT_ENABLE_ALL session
    have = dict(np.load(path)) if path.exists() else {}
    todo = [n for n in names if f"{n}|train" not in have]
    if todo:
        fz = PhotoFeaturizer(trunk, p.manifest.template.input.preprocess, threads=1)
        for j, n in enumerate(todo):
            have[f"{n}|train"] = fz.features([str(f) for f in files[n][0]])
            have[f"{n}|val"] = fz.features([str(f) for f in files[n][1]])
            print(f"\rtrunk features {j + 1}/{len(todo)} classes", end="", file=sys.stderr)
        print(file=sys.stderr)
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(path, **have)
    return {n: (have[f"{n}|train"], have[f"{n}|val"]) for n in names}


def task_methods(W, b, sup, Xq, tune: list[float] | None, known: list[bool]) -> dict[str, np.ndarray]:
    """Query logits of every method for one task (W, b: the name rows; sup: shots per class; known[i]:
    class i's text is a name the bundle knows, as the runtime decides)."""
    k = len(sup)
    Xs, ys = np.concatenate(sup), np.repeat(np.arange(k), [len(s) for s in sup])
    feats = dict(enumerate(sup))
    zt = Xq @ W.T + b
    Wp, bp = photo_head_rows(None, None, feats, [False] * k, k)
    Wf, bf = photo_head_rows(W, b, feats, [True] * k, k, known=known)
    Wl, bl = logreg(Xs, ys, k)
    Wm, bm = map_logreg(Xs, ys, W, b)
    zc = cosine_prototype_logits(sup, Xq)
    out = {"names only": zt, "cosine prototype (photos only)": zc,
           "logistic regression (photos only)": Xq @ Wl.T + bl,
           "MAP regression from the name's rows": Xq @ Wm.T + bm,
           "z-fusion 0.5 of name and cosine logits (per photo, not a head)": 0.5 * zscore(zt) + 0.5 * zscore(zc),
           SHIPPED_PHOTOS: Xq @ Wp.T + bp, SHIPPED: Xq @ Wf.T + bf}
    for centred in (True, False):
        Wr, br = photo_head_rows(None, None, feats, [False] * k, k, centred=centred)
        out[f"prototype rows, {'' if centred else 'un'}centred (photos only)"] = Xq @ Wr.T + br
        for lam in tune or ():
            Wt, bt = photo_head_rows(W, b, feats, [True] * k, k, weight=lam, centred=centred)
            out[f"fusion lam={lam:g}{'' if centred else ', uncentred'}"] = Xq @ Wt.T + bt
    Wt, bt = photo_head_rows(W, b, feats, [True] * k, k, known=known, loo=True)
    out["name + photos, lam by leave-one-out per task (the previous rule; 1 photo: lam(1))"] = Xq @ Wt.T + bt
    Wt, bt = photo_head_rows(W, b, feats, [True] * k, k, known=[True] * k)
    out["name + photos, every name weighted as a known one (lam 0.5)"] = Xq @ Wt.T + bt
    return out


def run_kind(p, F, pool, k, tasks, shots_list, rng, tune=None, names_usable=True, descriptions=None) -> dict:
    """{shots: {method: [(task accuracy, per-class recalls, class names)]}} on seeded tasks of `pool`;
    `descriptions` {class: text} describe the classes instead of naming them (the --tune-new proxy)."""
    from tina_edge.runtime.prompt import class_key

    vocab = {class_key(v) for v in p.manifest.vocabulary}
    res: dict = {}
    for t in range(tasks):
        cls = rng.sample(pool, k)
        known = [descriptions is None and class_key(n) in vocab for n in cls]
        if names_usable:
            c = p.personalize(cls, seed=0, descriptions={n: descriptions[n] for n in cls} if descriptions else None)
            W, b = np.asarray(c.params["fc.weight"], np.float64), np.asarray(c.params["fc.bias"], np.float64)
        else:  # photos-only labels: no name rows
            W, b = np.zeros((k, F[cls[0]][0].shape[1])), np.zeros(k)
        Xq = np.concatenate([F[n][1] for n in cls]).astype(np.float64)
        yq = np.repeat(np.arange(k), [len(F[n][1]) for n in cls])
        for shots in shots_list:
            sup = [F[n][0][rng.sample(range(len(F[n][0])), shots)].astype(np.float64) for n in cls]
            for m, z in task_methods(W, b, sup, Xq, tune, known).items():
                if not names_usable and ("name" in m and "photos only" not in m or m.startswith("fusion")
                                         or m.startswith("z-fusion")):
                    continue
                res.setdefault(shots, {}).setdefault(m, []).append(
                    (float((z.argmax(1) == yq).mean()), class_recalls(z, yq, k), cls))
        print(f"\r  task {t + 1}/{tasks}", end="", file=sys.stderr)
    print(file=sys.stderr)
    return res


def glosses(root: Path, names: list[str], wordnet: Path | None) -> dict[str, str]:
    """{class: the first clause of its WordNet gloss} via Tiny-ImageNet's wnids (the --tune-new proxy)."""
    from tina_edge.export.portable.wordnet import WordNet, find_wordnet

    wn = WordNet(find_wordnet(wordnet) or sys.exit("--tune-new needs WordNet 3.0 (apt install wordnet-base)"))
    words = dict(line.rstrip("\n").split("\t") for line in (root / "words.txt").open())
    wnid = {}
    for w in (root / "wnids.txt").read_text().split():
        for n in words[w].split(", "):
            wnid.setdefault(n, w)
    return {n: wn.synset(int(wnid[n][1:])).gloss.split(";")[0] for n in names if n in wnid}


def table(title: str, res: dict, ref: str) -> str:
    shots = sorted(res)
    methods = list(res[shots[0]])
    lines = [f"### {title}", "", "| method | " + " | ".join(f"{s} shot(s): acc ± SE; Δ vs {ref}" for s in shots) + " |",
             "|---|" + "---|" * len(shots)]
    for m in methods:
        cells = []
        for s in shots:
            r, base = res[s][m], res[s][ref]
            acc, se, _ = mean_se([x[0] for x in r])
            d = paired_difference([x[0] for x in r], [x[0] for x in base])
            dc = paired_difference(np.concatenate([x[1] for x in r]), np.concatenate([x[1] for x in base]),
                                   clusters=[n for x in r for n in x[2]])
            diff = "" if m == ref else f"; {100 * d['mean']:+.1f} ± {100 * d['se']:.1f} [{100 * dc['cluster_se']:.1f}]"
            cells.append(f"{acc:.3f} ± {se:.3f}{diff}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    from tina_edge.runtime import Personalizer

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", type=Path, required=True, help="an extracted tiny-imagenet-200 folder")
    ap.add_argument("--tasks", type=int, default=40)
    ap.add_argument("--shots", default="1,2,5,10")
    ap.add_argument("--seen-classes", type=int, default=40, help="classes in each seen half (TUNE, EVAL)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/tina_photo_prompts"))
    ap.add_argument("--tune", action="store_true", help="only the fusion-weight grid on the TUNE half of seen classes")
    ap.add_argument("--no-grid", action="store_true", help="with --tune: leave out the fixed-lam grid")
    ap.add_argument("--tune-new", action="store_true",
                    help="with --tune: the TUNE classes described by their WordNet glosses (texts the prior has no "
                         "key for, like new names): the grid behind FUSION_WEIGHTS_NEW")
    ap.add_argument("--wordnet", type=Path, default=None, help="WordNet 3.0 dict folder (default: found)")
    ap.add_argument("--grid-on-held", action="store_true",
                    help="diagnosis only: the fixed-lam grid on held-out tasks (the ceiling of any one weight; "
                         "never used to choose a constant)")
    ap.add_argument("--json-out", type=Path, default=None)
    ap.add_argument("--bundle", default=None, help="bundle directory (default: the embedded one)")
    a = ap.parse_args()
    t0 = time.perf_counter()
    p = Personalizer.from_bundle(a.bundle, threads=1)
    files = tiny_classes(a.tiny)
    held = [n for n in p.manifest.training.holdout_classes if n in files]
    vocab = set(p.manifest.vocabulary)
    seen = sorted(n for n in files if n in vocab and n not in set(p.manifest.training.holdout_classes))
    seen_tune, seen_eval = seen[0::2][:a.seen_classes], seen[1::2][:a.seen_classes]
    dogs = [d for d in DOGS if d in files]
    F = features(p, files, sorted(set(held + seen_tune + seen_eval + dogs)), a.cache)
    shots = [int(s) for s in a.shots.split(",")]
    rng = random.Random(a.seed)
    out = {}
    print(f"{len(held)} held-out Tiny-ImageNet classes, {len(seen_tune)} + {len(seen_eval)} seen (tune + eval), "
          f"{len(dogs)} dog breeds; {a.tasks} tasks per kind; features in {time.perf_counter() - t0:.0f} s\n")
    if a.grid_on_held:
        out["held_grid"] = run_kind(p, F, held, 10, a.tasks, shots, rng, tune=[0.5, 1.0, 1.5, 2.0, 3.0, 4.0])
        print(table("DIAGNOSIS ONLY (nothing is chosen here): held-out classes, 10-way, fixed-lam grid",
                    out["held_grid"], SHIPPED))
    elif a.tune:
        if a.tune_new:
            grid = [0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0] if not a.no_grid else []
            desc = glosses(a.tiny, seen_tune, a.wordnet)
            out["seen_tune_glosses"] = run_kind(p, F, seen_tune, 10, a.tasks, shots, rng, tune=grid, descriptions=desc)
            print(table("TUNE half of seen classes described by their WordNet glosses, 10-way (fusion-weight grid)",
                        out["seen_tune_glosses"], SHIPPED))
        else:
            grid = [0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0] if not a.no_grid else []
            out["seen_tune"] = run_kind(p, F, seen_tune, 10, a.tasks, shots, rng, tune=grid)  # same seed, same tasks
            print(table("TUNE half of seen classes, 10-way (fusion-weight grid)", out["seen_tune"], SHIPPED))
    else:
        for key, title, pool in [("held", "held-out classes, 10-way", held), ("seen_eval", "seen classes (EVAL half), 10-way", seen_eval)]:
            out[key] = run_kind(p, F, pool, 10, a.tasks, shots, rng)
            print(table(title, out[key], SHIPPED))
        out["dogs"] = run_kind(p, F, dogs, 5, a.tasks, [5], rng, names_usable=False)
        print(table(f"dog breeds ({', '.join(dogs)}), 5-way, photos-only labels", out["dogs"], SHIPPED_PHOTOS))
    print(f"total {time.perf_counter() - t0:.0f} s")
    if a.json_out:
        a.json_out.write_text(json.dumps({k: {s: {m: [x[0] for x in r] for m, r in v.items()} for s, v in res.items()}
                                          for k, res in out.items()}, indent=1))


if __name__ == "__main__":
    main()
