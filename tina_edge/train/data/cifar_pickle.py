"""CIFAR-10/100 python pickles, read with a restricted unpickler (a pickle can run code; a dataset must not)."""

from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from tina_edge.train.data.image_dataset import IMAGE_SIZE, DatasetError, DatasetNotFoundError, ImageDataset

def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    # Protocol-2 pickles written by Python 3 rebuild `bytes` as _codecs.encode(str, "latin1").
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    from numpy._core import multiarray, numeric  # numpy >= 2

    return {
        ("numpy.core.multiarray", "_reconstruct"): multiarray._reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): multiarray._reconstruct,
        ("numpy.core.numeric", "_frombuffer"): numeric._frombuffer,
        ("numpy._core.numeric", "_frombuffer"): numeric._frombuffer,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays, lists, dicts and scalars, and nothing else.

    A pickle names any importable callable and calls it while loading; a downloaded "dataset"
    could run `os.system`. Only the globals numpy needs to rebuild an array are resolved.
    """

    _allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing global {module}.{name}: a dataset pickle may only hold numpy arrays, "
                f"lists, dicts, numbers and strings") from None


def _safe_unpickle(path: Path) -> Any:
    try:
        with open(path, "rb") as f:
            return _ArrayOnlyUnpickler(f, encoding="bytes").load()
    except FileNotFoundError as e:
        raise DatasetNotFoundError(f"missing CIFAR file {path}") from e
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, struct.error) as e:
        raise DatasetError(f"cannot load {path} as a CIFAR pickle: {e}") from e


def _get(d: Any, key: bytes, path: Path) -> Any:
    if not isinstance(d, dict):
        raise DatasetError(f"{path} does not hold a dict (got {type(d).__name__}): not CIFAR")
    if key in d:
        return d[key]
    if key.decode() in d:  # pickles written with str keys by Python 3 tools
        return d[key.decode()]
    raise DatasetError(f"{path} lacks key {key!r}: not a CIFAR python-pickle file")


def _decode_names(names: Iterable[Any]) -> list[str]:
    out = []
    for n in names:
        s = n.decode("utf-8") if isinstance(n, bytes) else str(n)
        out.append(s.replace("_", " "))
    return out


def _cifar_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    d = _safe_unpickle(path)
    data = _get(d, b"data", path)
    labels = np.asarray(_get(d, label_key, path), dtype=np.int64)
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == 3 * IMAGE_SIZE * IMAGE_SIZE):
        raise DatasetError(f"{path}: b'data' must be uint8 [N, 3072], got "
                           f"{getattr(data, 'dtype', type(data))} {getattr(data, 'shape', '')}")
    if labels.shape != (data.shape[0],):
        raise DatasetError(f"{path}: {data.shape[0]} images but {labels.shape[0]} labels")
    # Rows are channel-major (1024 R, 1024 G, 1024 B), each plane row-major.
    images = data.reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def load_cifar_pickle(root: str | os.PathLike, split: str) -> ImageDataset:
    """Read the CIFAR-10 (cifar-10-batches-py) or CIFAR-100 (cifar-100-python) pickle layout."""
    if split not in ("train", "test"):
        raise DatasetError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(
            f"no folder {root}: expected the extracted cifar-10-batches-py or cifar-100-python")
    for sub in ("cifar-10-batches-py", "cifar-100-python"):  # accept the parent folder too
        if not (root / "batches.meta").exists() and not (root / "meta").exists() \
                and (root / sub).is_dir():
            root = root / sub
    if (root / "batches.meta").is_file():
        names = _decode_names(_get(_safe_unpickle(root / "batches.meta"), b"label_names",
                                   root / "batches.meta"))
        files = ([root / f"data_batch_{i}" for i in range(1, 6)] if split == "train"
                 else [root / "test_batch"])
        label_key, ds_name = b"labels", "cifar10"
    elif (root / "meta").is_file():
        names = _decode_names(_get(_safe_unpickle(root / "meta"), b"fine_label_names",
                                   root / "meta"))
        files = [root / split]
        label_key, ds_name = b"fine_labels", "cifar100"
    else:
        raise DatasetNotFoundError(
            f"{root} holds neither batches.meta (CIFAR-10) nor meta (CIFAR-100): point to the "
            f"extracted cifar-10-batches-py or cifar-100-python folder")
    parts = [_cifar_batch(f, label_key) for f in files]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return ImageDataset(images, labels, names, ds_name)
