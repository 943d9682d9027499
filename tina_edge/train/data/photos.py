"""`PhotoSet`: a labelled list of photos, each a file path or a row of an in-memory uint8 array."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from tina_edge.train.data.small import DatasetError


@dataclass
class PhotoSet:
    """items[i] is a path (str) or an int row into `arrays`; labels index `classes`.

    `synonyms[c]` lists other names of class c (WordNet synonyms for Tiny-ImageNet) and `ids[c]` a
    stable identifier (a WordNet id where there is one); both travel into the universe's class list.
    """

    items: list
    labels: np.ndarray
    classes: list[str]
    name: str = "photos"
    arrays: np.ndarray | None = None
    synonyms: dict[str, list[str]] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.labels.shape != (len(self.items),):
            raise DatasetError(f"{self.name}: {len(self.items)} photos but {self.labels.shape} labels")
        if len(set(self.classes)) != len(self.classes):
            raise DatasetError(f"{self.name}: duplicate class names")
        if self.labels.size and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise DatasetError(f"{self.name}: labels outside [0, {len(self.classes)})")

    def __len__(self) -> int:
        return len(self.items)

    def load(self, i: int) -> np.ndarray | "object":
        """The i-th photo at native size: a PIL image for files, a uint8 array for array rows."""
        it = self.items[i]
        if isinstance(it, (int, np.integer)):
            return self.arrays[int(it)]
        from PIL import Image

        try:
            with Image.open(it) as im:
                im.load()
                return im
        except (OSError, ValueError) as e:
            raise DatasetError(f"cannot read image {it}: {e}; delete or replace the file") from None


def take_per_class(ps: PhotoSet, n: int | None, seed: int = 0) -> PhotoSet:
    """At most n photos per class, chosen by seed (None keeps all); order: by class, then by position."""
    if n is None:
        return ps
    rng = np.random.default_rng(seed)
    keep = []
    for c in range(len(ps.classes)):
        idx = np.flatnonzero(ps.labels == c)
        if len(idx) > n:
            idx = np.sort(rng.choice(idx, n, replace=False))
        keep.append(idx)
    keep = np.concatenate(keep) if keep else np.zeros(0, np.int64)
    return PhotoSet([ps.items[i] for i in keep], ps.labels[keep], ps.classes, ps.name, ps.arrays,
                    ps.synonyms, ps.ids)


def concat_photosets(parts: Sequence[PhotoSet], merge: dict[str, str] | None = None, name: str = "union") -> PhotoSet:
    """One class list over several sets. `merge` maps "dataset:class" to the name of a class it *is*
    (same thing in two datasets); any other repeated name is an error. Arrays are concatenated."""
    merge = merge or {}
    classes: list[str] = []
    index: dict[str, int] = {}
    synonyms: dict[str, list[str]] = {}
    ids: dict[str, str] = {}
    items: list = []
    labels: list[np.ndarray] = []
    arrays: list[np.ndarray] = []
    row0 = 0
    for ps in parts:
        remap = np.empty(len(ps.classes), np.int64)
        for j, c in enumerate(ps.classes):
            target = merge.get(f"{ps.name}:{c}", c)
            if target in index and target == c and f"{ps.name}:{c}" not in merge:
                raise DatasetError(f"class {c!r} of {ps.name} repeats a class of another dataset; "
                                   f"declare it in merge as '{ps.name}:{c}' if it is the same thing")
            if target not in index:
                index[target] = len(classes)
                classes.append(target)
            remap[j] = index[target]
            syn = synonyms.setdefault(target, [])
            syn += [s for s in ps.synonyms.get(c, []) + ([c] if c != target else []) if s not in syn and s != target]
            if c in ps.ids:
                ids.setdefault(target, ps.ids[c])
            else:
                ids.setdefault(target, f"{ps.name}:{c}")
        if ps.arrays is not None:
            items += [int(i) + row0 if isinstance(i, (int, np.integer)) else i for i in ps.items]
            arrays.append(ps.arrays)
            row0 += len(ps.arrays)
        else:
            items += list(ps.items)
        labels.append(remap[ps.labels])
    return PhotoSet(items, np.concatenate(labels) if labels else np.zeros(0, np.int64), classes, name,
                    np.concatenate(arrays) if arrays else None, synonyms, ids)


def image_files(folder: Path, suffixes=(".jpg", ".jpeg", ".png")) -> list[str]:
    """Sorted image files directly inside `folder` (hidden files skipped)."""
    return sorted(str(p) for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in suffixes)
