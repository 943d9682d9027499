"""The default universe: Tiny-ImageNet ∪ CIFAR-10 ∪ Fashion-MNIST, classes that are the same thing merged.

221 classes with our 202-class Tiny-ImageNet copy: 202 + 10 + 10, minus Fashion-MNIST's `sandal`,
which *is* Tiny-ImageNet's `sandal` (n04133789). No other pair is the same thing: CIFAR's `cat` is
a superclass of Tiny-ImageNet's `tabby`/`Persian cat`/`Egyptian cat`, not one of them, and stays its
own class. The holdout (20 % of classes by default) is drawn by seed and recorded; a held-out
class's name *and its synonyms* are kept out of every training p-model and phrasing.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tina_edge.train.data.idx import FASHION_MNIST_CLASSES, _IDX_IMAGES_MAGIC, _IDX_LABELS_MAGIC, _read_idx
from tina_edge.train.data.folders import load_class_folders
from tina_edge.train.data.photos import PhotoSet, concat_photosets, take_per_class
from tina_edge.train.data.tinyimagenet import load_tiny_imagenet

DEFAULT_MERGE = {"fashion-mnist:sandal": "sandal"}


@dataclass
class UniverseSpec:
    """Where each source lives and how many photos per class each split takes (None = all)."""

    tiny_imagenet: str | None = None
    cifar10: str | None = None
    fashion_mnist: str | None = None
    image_folders: list[str] = field(default_factory=list)
    train_per_class: int | None = 100
    test_per_class: int | None = 50
    merge: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_MERGE))
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def load_fashion_photos(root: str | Path, split: str) -> PhotoSet:
    """Fashion-MNIST idx files as native 28x28 grey photos (the preprocessing replicates grey to RGB)."""
    root = Path(root)
    prefix = "train" if split == "train" else "t10k"
    grey = _read_idx(root / f"{prefix}-images-idx3-ubyte", _IDX_IMAGES_MAGIC)
    labels = _read_idx(root / f"{prefix}-labels-idx1-ubyte", _IDX_LABELS_MAGIC).astype(np.int64)
    return PhotoSet(list(range(len(grey))), labels, list(FASHION_MNIST_CLASSES), "fashion-mnist", arrays=grey)


def build_universe(spec: UniverseSpec, split: str) -> PhotoSet:
    """The union for `split` ("train" or "test"; Tiny-ImageNet's val is its test), capped per class."""
    cap = spec.train_per_class if split == "train" else spec.test_per_class
    parts = []
    if spec.tiny_imagenet:
        parts.append(load_tiny_imagenet(spec.tiny_imagenet, "train" if split == "train" else "val"))
    if spec.cifar10:
        parts.append(load_class_folders(spec.cifar10, split, name="cifar10"))
    if spec.fashion_mnist:
        parts.append(load_fashion_photos(spec.fashion_mnist, split))
    for i, folder in enumerate(spec.image_folders):
        parts.append(load_class_folders(folder, split, name=Path(folder).name or f"folder{i}", seed=spec.seed))
    if not parts:
        raise ValueError("no dataset given: pass --tiny-imagenet, --cifar10, --fashion-mnist or --image-folder")
    parts = [take_per_class(p, cap, seed=spec.seed) for p in parts]
    return concat_photosets(parts, spec.merge, name="+".join(p.name for p in parts))


def universe_label(spec: dict) -> str:
    """"tiny-imagenet+cifar10+fashion-mnist" from a UniverseSpec dict: the sources, not their paths."""
    names = [n for k, n in (("tiny_imagenet", "tiny-imagenet"), ("cifar10", "cifar10"), ("fashion_mnist", "fashion-mnist"))
             if spec.get(k)]
    return "+".join(names + [Path(f).name for f in spec.get("image_folders") or []])


def choose_holdout(classes: list[str], fraction: float = 0.2, seed: int = 0) -> list[str]:
    """round(fraction * C) classes drawn by seed, in universe order."""
    n = int(round(fraction * len(classes)))
    pick = set(random.Random(seed).sample(range(len(classes)), n))
    return [c for i, c in enumerate(classes) if i in pick]


def class_table(ps: PhotoSet, holdout: list[str]) -> list[dict]:
    """The class list JSON: name, synonyms, id (WordNet id or dataset:name), held out or not."""
    hs = set(holdout)
    return [{"name": c, "synonyms": ps.synonyms.get(c, []), "id": ps.ids.get(c, c), "holdout": c in hs}
            for c in ps.classes]
