"""Loading images for prediction into the classifier's input: uint8 [N, H, W, 3] RGB.

Accepted items: file paths (an allow-list of raster formats: JPEG, PNG, WebP, GIF, BMP, TIFF;
never EPS/PostScript or any format whose decoder starts a program), directories (every regular, non-hidden file
directly inside, sorted by name; a file that is not an image, a pipe, a device or a broken link is an
error, not skipped), PIL images
and numpy uint8 arrays [H, W], [H, W, 1], [H, W, 3], [H, W, 4] or batches [N, H, W(, C)] with
C in 1, 3, 4. Conversions (`to_rgb_on_white`, the one RGB converter): EXIF orientation is applied;
alpha is composited on white; grey, palette, CMYK, 16-bit and [0, 1] float images are converted to
RGB; any other mode or value range is an ImageError. Images of another size are resized to (H, W)
with Pillow's bilinear filter, without keeping the aspect ratio.
Decoding is bounded: at most MAX_PIXELS pixels after JPEG draft decoding (a huge photo is decoded
at a reduced scale, no bigger than needed), no strip longer than MAX_ASPECT:1; every decoder
failure is an ImageError naming the file.
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

# Decoders Pillow may use for image files. EPS/PS would start Ghostscript; others (PSD, ICNS, ...)
# are rarely photos and widen the attack surface. Formats are named as Pillow's plugins name them.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
# Decoded pixels per image (after JPEG draft scaling; a bigger JPEG is decoded at 1/2, 1/4 or 1/8 scale):
# Pillow holds 4 bytes a pixel and a conversion one RGB copy, so ~100 MB at most, which keeps a whole
# `tina-edge predict` under 300 MB. A 12 MP phone photo (4032 x 3024) is decoded in full.
MAX_PIXELS = 12_800_000
MAX_ASPECT = 50  # longer side / shorter side: a 1 x 100 000 strip is not a photo, and its resize is huge

if TYPE_CHECKING:  # Pillow is imported when an image file or PIL image is actually handled
    from PIL import Image


def _is_pil(x: Any) -> bool:
    Image = sys.modules.get("PIL.Image")  # a PIL image can only exist once Pillow is imported
    return Image is not None and isinstance(x, Image.Image)


def _check_items(items: Any) -> list:
    if isinstance(items, (str, os.PathLike, np.ndarray)) or _is_pil(items):
        return [items]
    if isinstance(items, (list, tuple)):
        return list(items)
    raise ImageError(f"cannot read images from a {type(items).__name__}; pass a file path, a directory, a PIL image, "
                     "a uint8 array, or a list of those")


def _stat_kind(p: Path) -> str:
    try:
        if p.is_dir():
            return "dir"
        if p.is_file():
            return "file"
        return "other" if p.exists() else "missing"
    except (OSError, ValueError) as e:  # ValueError: an embedded NUL; OSError: a name too long, ...
        raise ImageError(f"image path {str(p)!r:.200} cannot be used: {getattr(e, 'strerror', None) or e}") from None


def expand_items(items: Any) -> list[tuple[str, Any]]:
    """Flatten items into (display name, source) pairs; directories become their image files."""
    out: list[tuple[str, Any]] = []
    for i, it in enumerate(_check_items(items)):
        if isinstance(it, (str, os.PathLike)):
            p = Path(it)
            kind = _stat_kind(p)
            if kind == "dir":
                try:
                    entries = sorted(c for c in p.iterdir() if not c.name.startswith(".") and not c.is_dir())
                except OSError as e:
                    raise ImageError(f"cannot list directory {p}: {e.strerror or e}") from None
                files = [c for c in entries if c.is_file()]
                for c in entries:  # never skipped silently, never opened (a FIFO would block)
                    if not c.is_file():
                        raise ImageError(f"{c} is not a regular file (a pipe, socket, device or broken link); "
                                         "remove it from the folder or pass the image files")
                if not files:
                    raise ImageError(f"directory {p} holds no image files")
                out.extend((str(c), c) for c in files)
            elif kind == "file":
                out.append((str(p), p))
            elif kind == "other":  # a FIFO or device would block or stream forever in Image.open
                raise ImageError(f"{p} is not a regular file; pass image files or directories")
            else:
                raise ImageError(f"image {p} does not exist")
        elif isinstance(it, np.ndarray) or _is_pil(it):
            out.append((f"<image {i}>", it))
        else:
            raise ImageError(f"cannot read an image from a {type(it).__name__}; pass file paths, PIL images or uint8 arrays")
    return out


_STRIP_PIXELS = 1 << 18  # pixels converted at a time: a conversion holds the source, the RGB result and one strip
_ORIENTATION = 0x0112  # the EXIF tag


def check_size(w: int, h: int, name: str, *, decoded: bool = True) -> None:
    """Refuse an image before anything proportional to it is allocated: no pixels, more than
    MAX_PIXELS (files: `decoded`; an in-memory image is already paid for), or a strip thinner than
    1:MAX_ASPECT, whose resized intermediate would be huge (a 1x100000 PNG is 475 bytes)."""
    if w < 1 or h < 1:
        raise ImageError(f"{name} is an empty image ({w}x{h} pixels)")
    if decoded and w * h > MAX_PIXELS:
        raise ImageError(f"{name} is {w}x{h} pixels; images of at most {MAX_PIXELS / 1e6:g} megapixels "
                         "are decoded (shrink it first)")
    if max(w, h) > MAX_ASPECT * min(w, h):
        raise ImageError(f"{name} is {w}x{h} pixels, a strip longer than {MAX_ASPECT}:1; crop it to the part "
                         "to classify first")


def _upright(im: Image.Image, *, own: bool) -> Image.Image:
    """EXIF orientation applied; a copy only when a turn is needed and the image is not ours to change."""
    from PIL import ImageOps

    if im.getexif().get(_ORIENTATION, 1) not in range(2, 9):
        return im
    if own:
        ImageOps.exif_transpose(im, in_place=True)
        return im
    return ImageOps.exif_transpose(im)


def _on_white(rgba: Image.Image) -> Image.Image:
    from PIL import Image

    bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(bg, rgba).convert("RGB")


def _extrema(im: Image.Image) -> tuple[float, float]:
    lo, hi = im.getextrema()
    return float(lo), float(hi)


def _strip_converter(im: Image.Image, name: str):
    """The conversion of one strip of `im` to RGB, chosen (and checked) once for the whole image."""

    mode = im.mode
    if mode in ("RGBA", "LA", "PA", "RGBa") or (mode == "P" and "transparency" in im.info):
        return lambda s: _on_white(s.convert("RGBA"))
    if mode == "La":  # premultiplied grey + alpha: Pillow converts it only to LA
        return lambda s: _on_white(s.convert("LA").convert("RGBA"))
    if mode in ("1", "L", "P", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
        return lambda s: s.convert("RGB")
    if mode.startswith("I;16"):  # 16-bit grey: round(v * 255 / 65535), exactly
        return lambda s: _grey(((np.asarray(s).astype(np.uint32) * 510 + 65535) // 131070).astype(np.uint8))
    if mode == "I":  # 32-bit integers: 8-bit values kept, 16-bit values scaled; anything else is not a photo
        lo, hi = _extrema(im)
        if lo < 0 or hi > 65535:
            raise ImageError(f"{name} is a 32-bit integer image with values from {lo:g} to {hi:g}; "
                             "save it as 8-bit RGB (or 16-bit grey, 0..65535)")
        den = 131070 if hi > 255 else 510
        return lambda s: _grey(((np.asarray(s).astype(np.int64) * 510 + den // 2) // den).astype(np.uint8))
    if mode == "F":  # floating point: only [0, 1] has an unambiguous meaning (0 black, 1 white)
        lo, hi = _extrema(im)
        if not (0.0 <= lo and hi <= 1.0):
            raise ImageError(f"{name} is a floating-point image with values from {lo:g} to {hi:g}; "
                             "give values in [0, 1], or save it as 8-bit RGB")
        return lambda s: _grey(_float_to_uint8(np.asarray(s), name))
    raise ImageError(f"{name} has image mode {mode!r:.20}, which cannot be converted to RGB here; save it as 8-bit RGB")


def _float_to_uint8(a: np.ndarray, name: str) -> np.ndarray:
    if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
        raise ImageError(f"{name} is a floating-point image with values outside [0, 1] (or NaN); "
                         "give values in [0, 1], or save it as 8-bit RGB")
    return np.floor(a.astype(np.float64) * 255.0 + 0.5).astype(np.uint8)


def _grey(a: np.ndarray) -> Image.Image:
    from PIL import Image

    return Image.fromarray(a, "L").convert("RGB")


def to_rgb_on_white(im: Image.Image, name: str = "the image", *, own: bool = False) -> Image.Image:
    """The one RGB converter: EXIF orientation applied, alpha composited on white (a transparent PNG
    is not black), grey / palette / CMYK / YCbCr / 16-bit / [0, 1] float converted; any other mode
    or value range is an ImageError. Strip by strip, so it holds at most the source and its RGB copy.
    `own`: the image is ours (decoded here) and may be turned in place. An RGB image is returned as is."""
    from PIL import Image

    try:  # an image still to be decoded (a lazily opened PIL image: `tile` set) is bounded like a file
        check_size(im.width, im.height, name, decoded=bool(getattr(im, "tile", None)))
        im = _upright(im, own=own)
        if im.mode == "RGB":
            return im
        convert = _strip_converter(im, name)
        out = Image.new("RGB", im.size)
        rows = max(1, _STRIP_PIXELS // im.width)
        for y in range(0, im.height, rows):
            box = (0, y, im.width, min(im.height, y + rows))
            out.paste(convert(im.crop(box)), box[:2])
        return out
    except ImageError:
        raise
    except Exception as e:  # a lazily decoded or damaged image can fail here with any decoder error
        raise ImageError(f"{name} cannot be converted to RGB ({' '.join(str(e).split())[:120] or type(e).__name__})") from None


def _resize(im: Image.Image, size: tuple[int, int] | None) -> np.ndarray:
    from PIL import Image

    if size is not None and (im.height, im.width) != tuple(size):
        im = im.resize((int(size[1]), int(size[0])), Image.BILINEAR)
    return np.asarray(im, dtype=np.uint8)


def _draft(im: Image.Image, size: tuple[int, int] | None) -> None:
    """JPEG only: let libjpeg scale down while decoding (to the target size; or, with no target,
    only as far as the pixel limit requires, so native-size callers such as CLIP keep full detail)."""
    w, h = im.size
    if size is not None:
        im.draft("RGB", (int(size[1]), int(size[0])))
        return
    for scale in (1, 2, 4, 8):
        if -(-w // scale) * -(-h // scale) <= MAX_PIXELS:
            if scale > 1:
                im.draft("RGB", (-(-w // scale), -(-h // scale)))
            return


def open_image(p: Path, size: tuple[int, int] | None = None) -> Image.Image:
    """The one way an image *file* is decoded: allow-listed formats only (never a decoder that starts
    a program), bounded pixels (JPEG draft decoding towards `size` (H, W), or with None only as far as
    the pixel limit requires), every decoder failure one ImageError naming the file. Returns a loaded
    PIL image, EXIF orientation applied, in its own mode (callers convert)."""
    from PIL import Image  # Pillow is imported on first use, keeping `import tina_edge.runtime` light

    try:
        with open(p, "rb") as f, warnings.catch_warnings():
            # our own pixel limit below replaces Pillow's bomb warning (which fires before JPEG draft
            # scaling); decoder warnings (corrupt EXIF, ...) are not actionable and would add stderr lines
            warnings.simplefilter("ignore")
            with Image.open(f, formats=ALLOWED_FORMATS) as im:
                if im.format == "JPEG":  # decode a big photo at 1/2, 1/4 or 1/8 scale, no smaller than needed
                    _draft(im, size)
                check_size(im.width, im.height, str(p))  # before any pixel is decoded
                im.load()
                return _upright(im, own=True)  # leaving `with` only lets go of the file, not the pixels
    except ImageError:
        raise
    except (FileNotFoundError, PermissionError, IsADirectoryError) as e:
        raise ImageError(f"cannot read image {p}: {e.strerror}") from None
    except Exception as e:  # any decoder failure (OSError, SyntaxError, struct.error, ...) names the file
        msg = " ".join(str(e).split())[:120] or type(e).__name__
        if "cannot identify image file" in msg:
            msg = f"not one of the accepted formats {', '.join(ALLOWED_FORMATS)}, or damaged"
        raise ImageError(f"{p} is not a readable image ({msg})") from None


def rgb_image(src: Path | Image.Image, name: str, size: tuple[int, int] | None = None) -> Image.Image:
    """A file (decoded towards `size`) or a PIL image -> upright RGB PIL image, alpha on white."""
    if isinstance(src, Path):
        return to_rgb_on_white(open_image(src, size), str(src), own=True)
    return to_rgb_on_white(src, name)


def _open_file(p: Path, size: tuple[int, int] | None) -> np.ndarray:
    return _resize(rgb_image(p, str(p), size), size)


def _array_images(a: np.ndarray, name: str) -> list[np.ndarray]:
    if a.size == 0 or (a.ndim >= 2 and min(a.shape[:2] if a.ndim < 4 else a.shape[:3]) == 0):
        raise ImageError(f"{name} is empty (shape {a.shape}); pass at least one pixel")
    if a.dtype != np.uint8:
        raise ImageError(f"{name} has dtype {a.dtype}; pass uint8 RGB values 0..255 (e.g. (x * 255).astype(np.uint8))")
    if a.ndim == 2:
        return _array_images(a[:, :, None], name)
    if a.ndim == 3 and a.shape[2] in (1, 3, 4):
        check_size(a.shape[1], a.shape[0], name, decoded=False)
        if a.shape[2] == 4:  # alpha on white, like every other image
            from PIL import Image

            return [np.asarray(to_rgb_on_white(Image.fromarray(np.ascontiguousarray(a), "RGBA"), name))]
        return [np.repeat(a, 3, axis=2) if a.shape[2] == 1 else np.ascontiguousarray(a)]
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
        return [_resize(to_rgb_on_white(src, name), size)]
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
