"""The photo preprocessing policy, implemented once: any photo -> uint8 [S, S, 3] RGB for the trunk.

Why one place: the features the zoo was trained on and the pixels a device feeds the classifier must
go through the same steps, or accuracy silently drops. Training (feature extraction) and the runtime
(`predict`) both call `prepare`. The policy is data (`PreprocessSpec`, stored in the manifest):
  1. alpha composited on white (a transparent PNG is not black);
  2. greyscale / palette / CMYK converted to RGB (grey replicated into three channels);
  3. shorter side resized to size / crop_fraction (Pillow, bilinear, antialiased);
  4. centre crop to size x size (the ImageNet convention; crop_fraction 1.0 keeps the whole short side).
Normalisation is not here: it is inside the ONNX graph.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .errors import ImageError

_FILTERS = ("bilinear", "bicubic", "nearest")


@dataclass(frozen=True)
class PreprocessSpec:
    """How a photo of any size becomes the classifier's input (recorded in the bundle manifest)."""

    size: int = 128
    resize: str = "shorter_side"  # the only policy: keep the aspect ratio, then crop
    crop: str = "center"
    crop_fraction: float = 1.0
    interpolation: str = "bilinear"
    alpha: str = "white"  # RGBA / LA / transparent palette images are composited on white
    grey: str = "replicate"

    def __post_init__(self) -> None:
        if not (isinstance(self.size, int) and 8 <= self.size <= 4096):
            raise ValueError(f"preprocessing size must be an integer in 8..4096, got {self.size!r}")
        if not 0.1 <= float(self.crop_fraction) <= 1.0:
            raise ValueError(f"crop_fraction must lie in [0.1, 1], got {self.crop_fraction}")
        if self.interpolation not in _FILTERS:
            raise ValueError(f"interpolation must be one of {_FILTERS}, got {self.interpolation!r}")
        if (self.resize, self.crop, self.alpha, self.grey) != ("shorter_side", "center", "white", "replicate"):
            raise ValueError("unsupported preprocessing policy; this tina-edge implements resize=shorter_side, "
                             "crop=center, alpha=white, grey=replicate")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PreprocessSpec":
        return cls(**d)


def _to_pil(img: Any):
    from PIL import Image

    if isinstance(img, Image.Image):
        return img
    a = np.asarray(img)
    if a.dtype != np.uint8:
        raise ImageError(f"image array has dtype {a.dtype}; pass uint8 values 0..255")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 2:
        return Image.fromarray(a, "L")
    if a.ndim == 3 and a.shape[2] in (3, 4):
        return Image.fromarray(np.ascontiguousarray(a), "RGB" if a.shape[2] == 3 else "RGBA")
    raise ImageError(f"image array has shape {a.shape}; pass [H, W], [H, W, 1], [H, W, 3] or [H, W, 4]")


def to_rgb_on_white(im):
    """RGB PIL image: alpha composited on white, grey/palette/CMYK/16-bit converted, EXIF orientation applied."""
    from PIL import Image, ImageOps

    im = ImageOps.exif_transpose(im) or im
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        im = Image.fromarray(np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    return im if im.mode == "RGB" else im.convert("RGB")


def prepare(img: Any, spec: PreprocessSpec) -> np.ndarray:
    """One photo (PIL image or uint8 array of any size) -> uint8 [size, size, 3] following `spec`."""
    from PIL import Image

    im = to_rgb_on_white(_to_pil(img))
    w, h = im.size
    if w < 1 or h < 1:
        raise ImageError("image has no pixels")
    S = spec.size
    short = S / float(spec.crop_fraction)
    scale = short / min(w, h)
    nw, nh = max(S, int(round(w * scale))), max(S, int(round(h * scale)))
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), getattr(Image, spec.interpolation.upper()))
    left, top = (nw - S) // 2, (nh - S) // 2
    if (nw, nh) != (S, S):
        im = im.crop((left, top, left + S, top + S))
    return np.asarray(im, dtype=np.uint8)


def _open(path) -> Any:
    """Photo files go through the runtime's one hardened decoder (allow-listed formats, bounded pixels)."""
    from .images import open_image

    return open_image(path, None)


def load_prepared(items: Any, spec: PreprocessSpec) -> np.ndarray:
    """Files, directories, PIL images or uint8 arrays (one or a batch [N, H, W(, C)]) -> uint8 [N, S, S, 3]."""
    from pathlib import Path

    from .images import expand_items

    out = []
    for name, src in expand_items(items):
        if isinstance(src, Path):
            out.append(prepare(_open(src), spec))
        elif isinstance(src, np.ndarray) and src.ndim == 4:
            out.extend(prepare(x, spec) for x in src)
        else:
            out.append(prepare(src, spec))
    if not out:
        raise ImageError("no images were given")
    return np.stack(out)
