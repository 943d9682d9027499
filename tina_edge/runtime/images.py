"""Loading images for prediction into the classifier's input: uint8 [N, H, W, 3] RGB.

Accepted items: file paths (any format Pillow reads), directories (every regular, non-hidden file
directly inside, sorted by name; a file that is not an image is an error, not skipped), PIL images
and numpy uint8 arrays [H, W], [H, W, 1], [H, W, 3], [H, W, 4] or batches [N, H, W(, C)] with
C in 1, 3, 4. Conversions: EXIF orientation is applied; grey, palette, CMYK, 16-bit etc. are
converted to RGB by Pillow; an alpha channel is dropped (not composited). Images of another size
are resized to (H, W) with Pillow's bilinear filter, without keeping the aspect ratio.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ImageError

if TYPE_CHECKING:  # Pillow is imported when an image file or PIL image is actually handled
    from PIL import Image


def _is_pil(x: Any) -> bool:
    Image = sys.modules.get("PIL.Image")  # a PIL image can only exist once Pillow is imported
    return Image is not None and isinstance(x, Image.Image)


def expand_items(items: Any) -> list[tuple[str, Any]]:
    """Flatten items into (display name, source) pairs; directories become their image files."""
    if isinstance(items, (str, os.PathLike, np.ndarray)) or _is_pil(items):
        items = [items]
    out: list[tuple[str, Any]] = []
    for i, it in enumerate(items):
        if isinstance(it, (str, os.PathLike)):
            p = Path(it)
            if p.is_dir():
                files = sorted(c for c in p.iterdir() if not c.name.startswith(".") and c.is_file())
                if not files:
                    raise ImageError(f"directory {p} holds no image files")
                out.extend((str(c), c) for c in files)
            elif p.is_file():
                out.append((str(p), p))
            elif p.exists():  # a FIFO or device would block or stream forever in Image.open
                raise ImageError(f"{p} is not a regular file; pass image files or directories")
            else:
                raise ImageError(f"image {p} does not exist")
        elif isinstance(it, np.ndarray) or _is_pil(it):
            out.append((f"<image {i}>", it))
        else:
            raise ImageError(f"cannot read an image from a {type(it).__name__}; pass file paths, PIL images or uint8 arrays")
    return out


def _to_rgb(im: Image.Image) -> Image.Image:
    from PIL import Image, ImageOps

    im = ImageOps.exif_transpose(im) or im
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        im = Image.fromarray(np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    return im if im.mode == "RGB" else im.convert("RGB")


def _resize(im: Image.Image, size: tuple[int, int] | None) -> np.ndarray:
    from PIL import Image

    if size is not None and (im.height, im.width) != tuple(size):
        im = im.resize((int(size[1]), int(size[0])), Image.BILINEAR)
    return np.asarray(im, dtype=np.uint8)


def _open_file(p: Path, size: tuple[int, int] | None) -> np.ndarray:
    from PIL import Image  # Pillow is imported on first use, keeping `import tina_edge.runtime` light

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as im:
                im.load()
                return _resize(_to_rgb(im), size)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning, EOFError) as e:
        if isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError)):
            raise ImageError(f"cannot read image {p}: {e.strerror}") from None
        raise ImageError(f"{p} is not a readable image ({str(e)[:120] or type(e).__name__})") from None


def _array_images(a: np.ndarray, name: str) -> list[np.ndarray]:
    if a.dtype != np.uint8:
        raise ImageError(f"{name} has dtype {a.dtype}; pass uint8 RGB values 0..255 (e.g. (x * 255).astype(np.uint8))")
    if a.ndim == 2:
        return [np.repeat(a[:, :, None], 3, axis=2)]
    if a.ndim == 3 and a.shape[2] in (1, 3, 4):
        c = a.shape[2]
        return [np.repeat(a, 3, axis=2) if c == 1 else np.ascontiguousarray(a[:, :, :3])]
    if a.ndim == 3:
        raise ImageError(f"{name} has shape {a.shape}; pass [H, W, 3] for one image or [N, H, W, 1] for grey batches")
    if a.ndim == 4 and a.shape[3] in (1, 3, 4):
        return [img for x in a for img in _array_images(x, name)]
    raise ImageError(f"{name} has shape {a.shape}; pass [H, W], [H, W, C] or [N, H, W, C] with C in 1, 3, 4")


def load_one(src: Any, name: str, size: tuple[int, int] | None) -> list[np.ndarray]:
    """Decode one item into a list of [H, W, 3] uint8 arrays (an array item may hold a batch)."""
    if isinstance(src, Path):
        return [_open_file(src, size)]
    if _is_pil(src):
        try:
            return [_resize(_to_rgb(src), size)]
        except (OSError, ValueError) as e:
            raise ImageError(f"{name} cannot be converted to RGB: {e}") from None
    imgs = _array_images(src, name)
    if size is None:
        return imgs
    if all(x.shape[:2] == tuple(size) for x in imgs):
        return imgs
    from PIL import Image

    return [x if x.shape[:2] == tuple(size) else _resize(Image.fromarray(x, "RGB"), size) for x in imgs]


def load_images(items: Any, size: Sequence[int] | None = (32, 32)) -> np.ndarray:
    """Load items into uint8 [N, H, W, 3]; size=None keeps native sizes (they must then agree)."""
    sz = None if size is None else (int(size[0]), int(size[1]))
    imgs: list[np.ndarray] = []
    for name, src in expand_items(items):
        imgs.extend(load_one(src, name, sz))
    if not imgs:
        raise ImageError("no images were given")
    shapes = {x.shape for x in imgs}
    if len(shapes) > 1:
        raise ImageError(f"images have different sizes {sorted(shapes)}; give a target size")
    return np.stack(imgs).astype(np.uint8, copy=False)


def image_names(items: Any) -> list[str]:
    """Display names, one per image that load_images(items) returns (array batches count each)."""
    names: list[str] = []
    for name, src in expand_items(items):
        if isinstance(src, np.ndarray) and src.ndim == 4:
            names.extend(f"{name}[{j}]" for j in range(src.shape[0]))
        else:
            names.append(name)
    return names
