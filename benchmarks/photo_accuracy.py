"""Accuracy of classifiers a user gets from a trunk bundle, on real held-out val photos (torch-free).

Seeded k-way tasks (default 10-way): ID = seen classes only; OOD = one held-out class among k-1 seen
ones (its recall on its own photos is reported too). Every classifier comes from `Personalizer` (the
bundle's ONNX files, default sampler); photos go through the runtime's preprocessing and the bundle's
own trunk (cut from template.onnx) once, and each model's head is applied to those features; the first
model is checked against `PersonalizedClassifier.predict` on 32 photos. `--compare-bundle B2` scores
the same tasks with another bundle (e.g. the int8-trunk one) on the same photos.

    OMP_NUM_THREADS=1 python benchmarks/photo_accuracy.py --bundle /work/bundles/tiny --workdir /work/runs/tiny
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def trunk_features(p, photos, rows, batch: int = 32) -> np.ndarray:
    import onnxruntime as ort

    from tina_edge.runtime.preprocess import PreprocessSpec, prepare

    spec = PreprocessSpec.from_dict(p.manifest.template.input.preprocess)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(p.trunk_model().SerializeToString(), so, providers=["CPUExecutionProvider"])
    out = []
    for i in range(0, len(rows), batch):
        x = np.stack([prepare(photos.load(int(r)), spec) for r in rows[i : i + batch]])
        out.append(sess.run(["features"], {"image": x})[0])
        print(f"\rtrunk {min(i + batch, len(rows))}/{len(rows)}", end="", file=sys.stderr)
    print(file=sys.stderr)
    return np.concatenate(out)


def score(p, tasks, feats, labels, classes, seed: int, steps: int | None) -> list[dict]:
    rows = []
    for i, (kind, names, held) in enumerate(tasks):
        clf = p.personalize(names, seed=seed + i, steps=steps)
        W, b = clf.params["fc.weight"], clf.params["fc.bias"]
        idx = [classes.index(n) for n in names]
        sel = np.isin(labels, idx)
        y = np.array([idx.index(int(l)) for l in labels[sel]])
        pred = (feats[sel] @ W.T + b).argmax(1)
        r = {"kind": kind, "classes": names, "accuracy": float((pred == y).mean())}
        if held is not None:
            j = names.index(held)
            r["holdout_class"], r["holdout_recall"] = held, float((pred[y == j] == j).mean())
        rows.append(r)
    return rows


def main() -> None:
    from tina_edge.runtime import Personalizer
    from tina_edge.train.data.universe import UniverseSpec, build_universe

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--workdir", required=True, help="the work dir the bundle was trained from (classes.json, universe.json)")
    ap.add_argument("--compare-bundle", default=None)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--tasks", type=int, default=100, help="ID tasks; OOD tasks: one per held-out class")
    ap.add_argument("--per-class", type=int, default=25, help="val photos per class scored")
    ap.add_argument("--steps", type=int, default=None, help="sampler steps (default: the bundle's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--features-cache", type=Path, default=None,
                    help="folder to keep trunk features in, keyed by the trunk's sha256 (bundles sharing a trunk reuse them)")
    ap.add_argument("--json-out", type=Path, default=None)
    a = ap.parse_args()
    w = Path(a.workdir)
    table = json.loads((w / "classes.json").read_text())
    classes = [c["name"] for c in table]
    held = [c["name"] for c in table if c["holdout"]]
    seen = [c for c in classes if c not in held]
    spec = UniverseSpec(**(json.loads((w / "universe.json").read_text())["universe"] | {"test_per_class": a.per_class}))
    photos = build_universe(spec, "test")
    assert photos.classes == classes, "the work dir's classes differ from the data's"
    rng = np.random.default_rng(a.seed)
    tasks = [("id", [seen[j] for j in rng.choice(len(seen), a.k, replace=False)], None) for _ in range(a.tasks)]
    for h in held:
        t = [seen[j] for j in rng.choice(len(seen), a.k - 1, replace=False)]
        t.insert(int(rng.integers(0, a.k)), h)
        tasks.append(("ood", t, h))
    rows = np.arange(len(photos))
    out = {}
    for name, bundle in (("bundle", a.bundle), ("compare", a.compare_bundle)):
        if bundle is None:
            continue
        p = Personalizer.from_bundle(bundle, threads=1)
        t0 = time.time()
        cache = None
        if a.features_cache:
            from tina_edge.runtime.head import trunk_sha256

            a.features_cache.mkdir(parents=True, exist_ok=True)
            cache = a.features_cache / f"{trunk_sha256(p.trunk_model())[:16]}_{a.per_class}.npy"
        if cache is not None and cache.is_file():
            feats = np.load(cache)
        else:
            feats = trunk_features(p, photos, rows)
            if cache is not None:
                np.save(cache, feats)
        secs = time.time() - t0
        res = score(p, tasks, feats, photos.labels, classes, a.seed, a.steps)
        clf = p.personalize(tasks[0][1], seed=a.seed, steps=a.steps)
        pick = np.flatnonzero(np.isin(photos.labels, [classes.index(n) for n in tasks[0][1]]))[:32]
        full = clf.predict([photos.load(int(r)) for r in pick])
        direct = (feats[pick] @ clf.params["fc.weight"].T + clf.params["fc.bias"]).argmax(1)
        out[name] = {
            "bundle": str(bundle), "id_accuracy": float(np.mean([r["accuracy"] for r in res if r["kind"] == "id"])),
            "ood_accuracy": float(np.mean([r["accuracy"] for r in res if r["kind"] == "ood"])),
            "holdout_recall": float(np.mean([r["holdout_recall"] for r in res if r["kind"] == "ood"])),
            "chance": 1.0 / a.k, "predict_agrees": float((full.indices == direct).mean()),
            "trunk_seconds": secs, "photos": int(len(rows)), "tasks": res,
        }
    print(f"\n{a.k}-way tasks on real val photos ({a.per_class} per class, {len(rows)} photos), "
          f"{a.tasks} ID tasks + {len(held)} OOD tasks (one per held-out class)\n")
    print("| bundle | ID accuracy | OOD task accuracy | held-out recall | chance | predict agrees |")
    print("|---|---|---|---|---|---|")
    for r in out.values():
        print(f"| {r['bundle']} | {r['id_accuracy']:.3f} | {r['ood_accuracy']:.3f} | {r['holdout_recall']:.3f} | "
              f"{r['chance']:.3f} | {r['predict_agrees']:.3f} |")
    if a.json_out:
        a.json_out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
