"""Trunk features of Tiny-ImageNet photos for benchmarks/many_classes.py, cached as npz.

The default bundle's trunk (cut from its template, runtime/head.py) runs once over the photos, each
prepared exactly like `predict` does (the manifest's preprocess); a head-only classifier's logits
are then features @ W.T + b, the same numbers `predict` gives up to float rounding.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def tin_photos(root: Path, split: str, per_class: int) -> tuple[list[str], np.ndarray, list[str], list[str]]:
    """(files, labels, first names, wnids) of at most `per_class` photos per class (sorted, deterministic)."""
    wnids = [w.strip() for w in (root / "wnids.txt").read_text().split() if w.strip()]
    words = {}
    for line in (root / "words.txt").read_text(encoding="utf-8").splitlines():
        w, _, n = line.partition("\t")
        if w in wnids:
            words[w] = n.split(",")[0].strip()
    files, labels = [], []
    if split == "val":
        rows = sorted(l.split("\t")[:2] for l in (root / "val" / "val_annotations.txt").read_text().splitlines() if l)
        count: dict[str, int] = {}
        for f, w in rows:
            if count.get(w, 0) < per_class:
                count[w] = count.get(w, 0) + 1
                files.append(str(root / "val" / "images" / f))
                labels.append(wnids.index(w))
    else:
        for i, w in enumerate(wnids):
            fs = sorted((root / "train" / w / "images").iterdir())[:per_class]
            files += [str(f) for f in fs]
            labels += [i] * len(fs)
    return files, np.asarray(labels, np.int64), [words[w] for w in wnids], wnids


def features(files: list[str], batch: int = 256) -> np.ndarray:
    """[N, 1280] trunk features of the default bundle for the photo files."""
    import onnxruntime as ort

    from tina_edge.runtime import Personalizer
    from tina_edge.runtime.preprocess import PreprocessSpec, load_prepared

    p = Personalizer.from_bundle(threads=1)
    spec = PreprocessSpec.from_dict(p.manifest.template.input.preprocess)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(p.trunk_model().SerializeToString(), so, providers=["CPUExecutionProvider"])
    out = []
    t0 = time.time()
    for i in range(0, len(files), batch):
        x = load_prepared(files[i : i + batch], spec)
        out.append(sess.run(["features"], {sess.get_inputs()[0].name: x})[0].astype(np.float32))
        print(f"  {i + len(x)}/{len(files)} photos, {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    return np.concatenate(out)


def cached(root: Path, cache: Path, split: str, per_class: int) -> dict:
    """{features, labels, names, wnids} for the split, computed once into `cache`."""
    path = cache / f"tin_{split}_{per_class}.npz"
    if not path.is_file():
        from tina_edge.runtime.atomic import atomic_save_npz

        files, labels, names, wnids = tin_photos(root, split, per_class)
        feats = features(files)
        cache.mkdir(parents=True, exist_ok=True)
        atomic_save_npz(path, features=feats, labels=labels, names=np.asarray(names), wnids=np.asarray(wnids))
    z = np.load(path, allow_pickle=False)
    return {k: z[k] for k in z.files}


if __name__ == "__main__":
    root, cache = Path(sys.argv[1]), Path(sys.argv[2])
    for split, n in (("val", 50), ("train", 50)):
        d = cached(root, cache, split, n)
        print(split, d["features"].shape)
