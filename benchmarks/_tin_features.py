"""Trunk features of real photos for benchmarks/many_classes.py, cached as npz keyed by the trunk's sha256.

A bundle's trunk (cut from its template, runtime/head.py) runs once over the photos, each prepared
exactly like `predict` does (the manifest's preprocess); a head-only classifier's logits are then
features @ W.T + b, the same numbers `predict` gives up to float rounding. The cache file names carry
the trunk's sha256, so bundles sharing a trunk (a re-converted default bundle) reuse the features and
a bundle with another trunk never reads stale ones.

Sources: Tiny-ImageNet (val as the test split), CIFAR-10 as JPEG folders, Fashion-MNIST idx files;
together the bundle's 221-class universe (Fashion-MNIST's `sandal` is Tiny-ImageNet's `sandal`,
train/data/universe.py DEFAULT_MERGE).
"""

from __future__ import annotations

import gzip
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FASHION = ["T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]


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


def cifar_photos(root: Path, split: str, per_class: int) -> tuple[list[str], list[str]]:
    """(files, class names) of CIFAR-10 JPEG folders `root/<train|test>/<class>/*.jpg`, first per_class each."""
    files, names = [], []
    for d in sorted(p for p in (root / split).iterdir() if p.is_dir()):
        fs = sorted(d.glob("*.jpg"))[:per_class]
        files += [str(f) for f in fs]
        names += [d.name] * len(fs)
    return files, names


def fashion_photos(root: Path, split: str, per_class: int) -> tuple[np.ndarray, list[str]]:
    """(uint8 [N, 28, 28, 1] grey photos, class names) of Fashion-MNIST idx(.gz) files, first per_class each."""
    prefix = "train" if split == "train" else "t10k"

    def read(stem: str, offset: int) -> np.ndarray:
        p = root / stem
        raw = p.read_bytes() if p.is_file() else gzip.decompress((root / (stem + ".gz")).read_bytes())
        return np.frombuffer(raw, np.uint8, offset=offset)

    grey = read(f"{prefix}-images-idx3-ubyte", 16).reshape(-1, 28, 28)
    labels = read(f"{prefix}-labels-idx1-ubyte", 8)
    idx = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(10)])
    return grey[idx][..., None], [FASHION[c] for c in labels[idx]]  # [N, H, W, 1]: a batch


def features(p, items, batch: int = 256) -> np.ndarray:
    """[N, F] trunk features of Personalizer p's bundle for photo files or uint8 arrays."""
    import onnxruntime as ort

    from tina_edge.runtime.preprocess import PreprocessSpec, load_prepared

    spec = PreprocessSpec.from_dict(p.manifest.template.input.preprocess)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(p.trunk_model().SerializeToString(), so, providers=["CPUExecutionProvider"])
    out = []
    t0 = time.time()
    for i in range(0, len(items), batch):
        x = load_prepared(items[i : i + batch], spec)
        out.append(sess.run(["features"], {sess.get_inputs()[0].name: x})[0].astype(np.float32))
        print(f"  {i + len(x)}/{len(items)} photos, {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    return np.concatenate(out)


def trunk_key(p) -> str:
    """The first 16 hex digits of the sha256 of p's trunk: the features' cache key."""
    from tina_edge.runtime.head import trunk_sha256

    return trunk_sha256(p.trunk_model())[:16]


def _cached(path: Path, build) -> dict:
    if not path.is_file():
        from tina_edge.runtime.atomic import atomic_save_npz

        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_save_npz(path, **build())
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def cached(p, root: Path, cache: Path, split: str, per_class: int) -> dict:
    """{features, labels, names, wnids} of Tiny-ImageNet `split` for p's trunk, computed once into `cache`."""

    def build():
        files, labels, names, wnids = tin_photos(root, split, per_class)
        return dict(features=features(p, files), labels=labels, names=np.asarray(names), wnids=np.asarray(wnids))

    return _cached(cache / f"tin_{split}_{per_class}_{trunk_key(p)}.npz", build)


def cached_small(p, cifar: Path | None, fashion: Path | None, cache: Path, split: str, per_class: int) -> dict:
    """{features, class_names (one per photo)} of CIFAR-10 and Fashion-MNIST `split` (test or train)."""

    def build():
        feats, names = [], []
        if cifar:
            files, n = cifar_photos(cifar, split, per_class)
            feats.append(features(p, files))
            names += n
        if fashion:
            arr, n = fashion_photos(fashion, split, per_class)
            feats.append(features(p, arr))
            names += n
        return dict(features=np.concatenate(feats), class_names=np.asarray(names))

    tag = ("c" if cifar else "") + ("f" if fashion else "")
    return _cached(cache / f"small{tag}_{split}_{per_class}_{trunk_key(p)}.npz", build)


def universe(p, tin: Path, cifar: Path | None, fashion: Path | None, cache: Path, split: str, per_class: int) -> dict:
    """{features, labels, names, n_tin (the first n_tin names are Tiny-ImageNet's)}: Tiny-ImageNet plus (when given) CIFAR-10 and Fashion-MNIST, one label space;
    a small-set class named like a Tiny-ImageNet class (Fashion-MNIST `sandal`) joins that class."""
    t = cached(p, tin, cache, "val" if split == "test" else "train", per_class)
    names = [str(n) for n in t["names"]]
    n_tin = len(names)
    feats, labels = [t["features"]], [t["labels"]]
    if cifar or fashion:
        s = cached_small(p, cifar, fashion, cache, split, per_class)
        lab = []
        for n in (str(x) for x in s["class_names"]):
            if n not in names:
                names.append(n)
            lab.append(names.index(n))
        feats.append(s["features"])
        labels.append(np.asarray(lab, np.int64))
    return {"features": np.concatenate(feats), "labels": np.concatenate(labels), "names": names, "n_tin": n_tin}
