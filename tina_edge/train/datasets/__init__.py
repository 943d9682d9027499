"""Photo datasets for the pretrained-trunk universe: lists of photos (files or arrays) at native size.

Unlike `train.data` (everything decoded to 32x32 arrays), these loaders only *list* photos; pixels
are decoded once, through the runtime's preprocessing policy, by the feature cache (`train.features`).
"""

from .photos import PhotoSet, concat_photosets, take_per_class
from .tinyimagenet import load_tiny_imagenet, read_words
from .folders import load_class_folders
from .universe import UniverseSpec, build_universe, choose_holdout

__all__ = ["PhotoSet", "concat_photosets", "take_per_class", "load_tiny_imagenet", "read_words",
           "load_class_folders", "UniverseSpec", "build_universe", "choose_holdout"]
