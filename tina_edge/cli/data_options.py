"""The dataset options of the train commands as one object, checked and loaded once per command.

Why: `train generic`, `zoo` and `eval` take the same five options (and `features` four of its
own); passing them as loose arguments meant the same folder check and the same load call in every
command, once per split. `@data_options` (or `@photo_data_options`) adds the options and hands the
command one `DataOptions`; `load()` checks the folders and returns (train, test), read once.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from ..runtime.errors import DatasetError


@dataclass
class DataOptions:
    """Where the training images are. Paths are checked by `check`; nothing is read before `load`."""

    cifar10: str | None = None
    fashion_mnist: str | None = None
    image_folder: tuple[str, ...] = ()
    cifar_pickle: tuple[str, ...] = ()
    cache_dir: str | None = None
    tiny_imagenet: str | None = None  # `train features` only
    _loaded: tuple[Any, Any] | None = field(default=None, init=False, repr=False)

    def check(self) -> None:
        """Every named data folder exists (TinaEdgeError naming the first that does not)."""
        for p in [self.tiny_imagenet, self.cifar10, self.fashion_mnist, *self.image_folder, *self.cifar_pickle]:
            if p and not Path(p).is_dir():
                raise DatasetError(f"data folder {p} does not exist")

    def load(self) -> tuple[Any, Any]:
        """(train, test) ImageDatasets of the 32-px universe, read on the first call only."""
        if self._loaded is None:
            from tina_edge.train.stages.small import load_universe

            self.check()
            kw = dict(cifar10=self.cifar10, fashion_mnist=self.fashion_mnist, image_folders=self.image_folder,
                      cifar_pickles=self.cifar_pickle, cache_dir=self.cache_dir)
            self._loaded = (load_universe(split="train", **kw), load_universe(split="test", **kw))
        return self._loaded

    def universe_spec(self, **kw: Any) -> Any:
        """The photo universe (`train features`) these options name; `kw`: subset sizes and seed."""
        from tina_edge.train.data.universe import UniverseSpec

        return UniverseSpec(tiny_imagenet=self.tiny_imagenet, cifar10=self.cifar10, fashion_mnist=self.fashion_mnist,
                            image_folders=list(self.image_folder), **kw)


_UNIVERSE_OPTIONS = [
    click.option("--cifar10", type=click.Path(file_okay=False), default=None,
                 help="CIFAR-10 image folders (DIR/train/<class>/*.jpg, DIR/test/...); e.g. extracted "
                      "from ../shared/data/cifar10-jpeg.tar.gz"),
    click.option("--fashion-mnist", type=click.Path(file_okay=False), default=None,
                 help="Fashion-MNIST idx files (apt-get install dataset-fashion-mnist puts them in "
                      "/usr/share/datasets/fashion-mnist)"),
    click.option("--image-folder", multiple=True, type=click.Path(file_okay=False),
                 help="extra class-named image folder dataset (DIR/<split>/<class>/*.jpg); repeatable"),
    click.option("--cifar-pickle", multiple=True, type=click.Path(file_okay=False),
                 help="CIFAR-10/100 python-pickle folder; repeatable"),
    click.option("--cache", "cache_dir", type=click.Path(file_okay=False), default=None,
                 help="cache decoded arrays here (.npz) so later stages load in a second"),
]

_PHOTO_OPTIONS = [
    click.option("--tiny-imagenet", type=click.Path(file_okay=False), default=None,
                 help="Tiny-ImageNet folder (wnids.txt, words.txt, train/, val/), e.g. extracted tiny-imagenet-200"),
    click.option("--cifar10", type=click.Path(file_okay=False), default=None, help="CIFAR-10 JPEG folders (DIR/train, DIR/test)"),
    click.option("--fashion-mnist", type=click.Path(file_okay=False), default=None, help="Fashion-MNIST idx folder"),
    click.option("--image-folder", multiple=True, type=click.Path(file_okay=False),
                 help="DIR/<class>/*.jpg (split 80/20 by seed) or DIR/{train,test}/<class>/; repeatable"),
]

_NAMES = ("tiny_imagenet", "cifar10", "fashion_mnist", "image_folder", "cifar_pickle", "cache_dir")


def _options_into_one(opts: list) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            given = {n: kwargs.pop(n) for n in _NAMES if n in kwargs}
            for n in ("image_folder", "cifar_pickle"):
                if n in given:
                    given[n] = tuple(given[n])
            return f(*args, data=DataOptions(**given), **kwargs)

        for o in reversed(opts):
            wrapper = o(wrapper)
        return wrapper

    return decorate


data_options = _options_into_one(_UNIVERSE_OPTIONS)
"""--cifar10, --fashion-mnist, --image-folder, --cifar-pickle, --cache -> one `data` argument."""

photo_data_options = _options_into_one(_PHOTO_OPTIONS)
"""--tiny-imagenet, --cifar10, --fashion-mnist, --image-folder (`train features`) -> one `data` argument."""
