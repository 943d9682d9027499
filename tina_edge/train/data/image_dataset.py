"""The dataset type every loader returns: 32x32 RGB uint8 NHWC arrays + labels, and its errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from tina_edge.runtime.errors import TinaEdgeError

IMAGE_SIZE = 32


class DatasetError(TinaEdgeError, ValueError):
    """A dataset on disk is malformed, inconsistent or unsafe to read."""


class DatasetNotFoundError(TinaEdgeError, FileNotFoundError):
    """A dataset file or folder that should exist does not."""


# ---------------------------------------------------------------------------------------------
# The dataset type
# ---------------------------------------------------------------------------------------------


@dataclass
class ImageDataset:
    """Images [N, H, W, 3] uint8 with labels [N] int64 indexing `classes`."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    name: str = field(default="dataset")

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.classes = [str(c) for c in self.classes]
        imgs = self.images
        if not (isinstance(imgs, np.ndarray) and imgs.dtype == np.uint8 and imgs.ndim == 4
                and imgs.shape[3] == 3):
            raise DatasetError(
                f"dataset {self.name!r}: images must be a uint8 array [N, H, W, 3], got "
                f"{getattr(imgs, 'dtype', type(imgs))} {getattr(imgs, 'shape', '')}")
        if self.labels.shape != (imgs.shape[0],):
            raise DatasetError(
                f"dataset {self.name!r}: {imgs.shape[0]} images but labels of shape "
                f"{self.labels.shape}")
        if len(set(self.classes)) != len(self.classes):
            raise DatasetError(f"dataset {self.name!r}: duplicate class names in {self.classes}")
        if self.labels.size and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise DatasetError(
                f"dataset {self.name!r}: labels must lie in [0, {len(self.classes)}), got "
                f"[{self.labels.min()}, {self.labels.max()}]")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def counts(self) -> dict[str, int]:
        """Number of images per class, in class order."""
        n = np.bincount(self.labels, minlength=len(self.classes))
        return {c: int(k) for c, k in zip(self.classes, n)}

    def subset(self, class_names: Sequence[str]) -> ImageDataset:
        """Keep only `class_names`; label i of the result means class_names[i]."""
        names = list(class_names)
        if len(set(names)) != len(names):
            raise DatasetError(f"subset of {self.name!r}: class names repeat in {names}")
        index = {c: i for i, c in enumerate(self.classes)}
        missing = [c for c in names if c not in index]
        if missing:
            raise DatasetError(
                f"subset of {self.name!r}: unknown classes {missing}; available: {self.classes}")
        remap = np.full(len(self.classes), -1, dtype=np.int64)
        for new, c in enumerate(names):
            remap[index[c]] = new
        new_labels = remap[self.labels]
        keep = new_labels >= 0
        return ImageDataset(self.images[keep], new_labels[keep], names, self.name)
