"""A folder of class folders with no split (DIR/<class>/*.jpg): split deterministically by seed.

Also reads the split layouts (DIR/<split>/<class>/...) such as the CIFAR-10 JPEG folders.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tina_edge.train.data.small import DatasetError, DatasetNotFoundError
from tina_edge.train.data.photos import PhotoSet, image_files


def _classes(root: Path) -> list[Path]:
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not dirs:
        raise DatasetError(f"no class folders in {root}: put each class's images in {root}/<class name>/")
    return dirs


def load_class_folders(root: str | Path, split: str, *, name: str | None = None, test_fraction: float = 0.2,
                       seed: int = 0) -> PhotoSet:
    """root/<split>/<class>/ if that exists, else root/<class>/ split per class: a seeded
    `test_fraction` of each class's (sorted) files is `test`/`val`, the rest `train`."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(f"no folder {root}")
    if split not in ("train", "test", "val"):
        raise DatasetError(f"split must be train, test or val, got {split!r}")
    presplit = root / split
    if split == "val" and not presplit.is_dir():
        presplit = root / "test"
    base = presplit if presplit.is_dir() else root
    dirs = _classes(base)
    classes = [d.name.replace("_", " ") for d in dirs]
    items, labels = [], []
    for c, d in enumerate(dirs):
        files = image_files(d)
        if not files:
            raise DatasetError(f"class folder {d} holds no .jpg/.jpeg/.png images: add images or remove it")
        if base is root:
            rng = np.random.default_rng([seed, c])
            perm = rng.permutation(len(files))
            n_test = max(1, int(round(test_fraction * len(files)))) if len(files) > 1 else 0
            pick = perm[:n_test] if split != "train" else perm[n_test:]
            files = [files[i] for i in sorted(pick)]
        items += files
        labels += [c] * len(files)
    return PhotoSet(items, np.asarray(labels, np.int64), classes, name or root.name)
