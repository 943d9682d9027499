"""Tiny-ImageNet in its standard layout (train/<wnid>/images, val/val_annotations.txt, wnids.txt, words.txt).

The label of a class is the first name in words.txt ("goldfish"); the other names are kept as
synonyms ("Carassius auratus") for phrasings and for keeping held-out names out of training.
Our copy has two classes beyond the standard 200 (n02480855 gorilla, n10148035 groom): they are
kept (`extra=True`, the default) because they are real ImageNet classes with train and val photos.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tina_edge.train.data.small import DatasetError, DatasetNotFoundError
from tina_edge.train.data.photos import PhotoSet, image_files

STANDARD_EXTRA = ("n02480855", "n10148035")


def read_words(path: str | Path, wnids: list[str]) -> dict[str, list[str]]:
    """wnid -> [name, synonym, ...] from words.txt (tab-separated, names comma-separated)."""
    want, out = set(wnids), {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            wnid, _, names = line.rstrip("\n").partition("\t")
            if wnid in want:
                out[wnid] = [n.strip() for n in names.split(",") if n.strip()]
    missing = [w for w in wnids if w not in out]
    if missing:
        raise DatasetError(f"{path} has no names for {missing[:5]}")
    return out


def load_tiny_imagenet(root: str | Path, split: str, *, extra: bool = True) -> PhotoSet:
    """Photos of Tiny-ImageNet's `train` or `val` split (val is the test split)."""
    root = Path(root)
    if split not in ("train", "val"):
        raise DatasetError(f"Tiny-ImageNet split must be 'train' or 'val', got {split!r}")
    if not (root / "wnids.txt").is_file():
        raise DatasetNotFoundError(f"{root} is not Tiny-ImageNet: it has no wnids.txt (extract "
                                   "tiny-imagenet-200.tar.gz and point to its tiny-imagenet-200 folder)")
    wnids = [w.strip() for w in (root / "wnids.txt").read_text().split() if w.strip()]
    if not extra:
        wnids = [w for w in wnids if w not in STANDARD_EXTRA]
    words = read_words(root / "words.txt", wnids)
    names = [words[w][0] for w in wnids]
    if len(set(names)) != len(names):
        raise DatasetError(f"{root}: two classes share a first name in words.txt")
    w2i = {w: i for i, w in enumerate(wnids)}
    items, labels = [], []
    if split == "train":
        for w in wnids:
            folder = root / "train" / w / "images"
            if not folder.is_dir():
                raise DatasetNotFoundError(f"missing {folder}")
            files = image_files(folder)
            items += files
            labels += [w2i[w]] * len(files)
    else:
        ann = root / "val" / "val_annotations.txt"
        if not ann.is_file():
            raise DatasetNotFoundError(f"missing {ann}")
        rows = []
        for line in ann.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 2 and parts[1] in w2i:
                rows.append((parts[0], parts[1]))
        rows.sort()
        items = [str(root / "val" / "images" / f) for f, _ in rows]
        labels = [w2i[w] for _, w in rows]
    return PhotoSet(items, np.asarray(labels, np.int64), names, "tiny-imagenet",
                    synonyms={words[w][0]: words[w][1:] for w in wnids}, ids={words[w][0]: w for w in wnids})
