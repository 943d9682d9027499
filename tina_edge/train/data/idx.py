"""MNIST-style idx files (Fashion-MNIST from apt): 28x28 grey, padded to 32x32 RGB."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path
from typing import Sequence

import numpy as np

from tina_edge.train.data.image_dataset import IMAGE_SIZE, DatasetError, DatasetNotFoundError, ImageDataset

FASHION_MNIST_CLASSES = [
    "T-shirt/top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
]
FASHION_MNIST_DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"

_IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned byte, 3 dimensions
_IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned byte, 1 dimension


def _read_idx(path_stem: Path, magic: int) -> np.ndarray:
    raw, gz = path_stem, path_stem.with_name(path_stem.name + ".gz")
    if raw.is_file():
        path, blob = raw, raw.read_bytes()
    elif gz.is_file():
        path = gz
        try:
            blob = gzip.decompress(gz.read_bytes())
        except (OSError, EOFError) as e:
            raise DatasetError(f"cannot decompress {gz}: {e}; download it again") from e
    else:
        raise DatasetNotFoundError(
            f"missing {raw} (or {gz.name}): expected MNIST-style idx files "
            f"{{train,t10k}}-{{images-idx3,labels-idx1}}-ubyte[.gz]")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(blob) < header:
        raise DatasetError(f"{path} is too short for an idx header")
    got = struct.unpack(">I", blob[:4])[0]
    if got != magic:
        raise DatasetError(f"{path}: magic number {got}, expected {magic}: not an idx "
                           f"{'image' if ndim == 3 else 'label'} file")
    dims = struct.unpack(f">{ndim}I", blob[4:header])
    n = int(np.prod(dims))
    if len(blob) - header != n:
        raise DatasetError(f"{path}: header says {dims} = {n} bytes, file has "
                           f"{len(blob) - header}; the file is truncated or corrupt")
    return np.frombuffer(blob, dtype=np.uint8, offset=header).reshape(dims)


def load_idx(root: str | os.PathLike, split: str,
             class_names: Sequence[str] = FASHION_MNIST_CLASSES, *,
             name: str = "fashion-mnist") -> ImageDataset:
    """Read MNIST-style idx files; 28x28 grey is zero-padded to 32x32 and copied to 3 channels."""
    if split not in ("train", "test"):
        raise DatasetError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(
            f"no folder {root}: expected idx files there (for Fashion-MNIST: "
            f"apt-get install dataset-fashion-mnist, files go to {FASHION_MNIST_DEFAULT_DIR})")
    prefix = "train" if split == "train" else "t10k"
    grey = _read_idx(root / f"{prefix}-images-idx3-ubyte", _IDX_IMAGES_MAGIC)
    labels = _read_idx(root / f"{prefix}-labels-idx1-ubyte", _IDX_LABELS_MAGIC).astype(np.int64)
    n, h, w = grey.shape
    if labels.shape[0] != n:
        raise DatasetError(f"{root}: {n} images but {labels.shape[0]} labels in split {split!r}")
    if h > IMAGE_SIZE or w > IMAGE_SIZE:
        raise DatasetError(f"{root}: images are {h}x{w}; only up to {IMAGE_SIZE}x{IMAGE_SIZE} "
                           f"can be padded")
    if labels.size and labels.max() >= len(class_names):
        raise DatasetError(f"{root}: label {labels.max()} but only {len(class_names)} class "
                           f"names given")
    top, left = (IMAGE_SIZE - h) // 2, (IMAGE_SIZE - w) // 2
    images = np.zeros((n, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    images[:, top:top + h, left:left + w, :] = grey[..., None]
    return ImageDataset(images, labels, list(class_names), name)
