"""The two dataset universes, one room.

- 32-px universe (`small.py`): CIFAR-10 / CIFAR-100 / Fashion-MNIST / image folders decoded once to
  fixed-size uint8 arrays (`ImageDataset`), for the small templates trained from scratch.
- Photo universe (`photos.py`, `tinyimagenet.py`, `folders.py`, `universe.py`): lists of photos at
  native size (`PhotoSet`); pixels are decoded once, through the runtime's preprocessing policy, by
  the trunk feature cache (`train/zoo/features.py`).

Both loaders take the official on-disk layouts (paths are options; nothing is downloaded).
"""

from tina_edge.train.data.image_dataset import ImageDataset
from tina_edge.train.data.small import load_default_universe, load_image_folder, union
from tina_edge.train.data.photos import PhotoSet, concat_photosets, take_per_class
from tina_edge.train.data.tinyimagenet import load_tiny_imagenet, read_words
from tina_edge.train.data.folders import load_class_folders
from tina_edge.train.data.universe import UniverseSpec, build_universe, choose_holdout

__all__ = ["ImageDataset", "load_default_universe", "load_image_folder", "union",
           "PhotoSet", "concat_photosets", "take_per_class", "load_tiny_imagenet", "read_words",
           "load_class_folders", "UniverseSpec", "build_universe", "choose_holdout"]
