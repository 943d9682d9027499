"""The photo preprocessing policy, implemented once: any photo -> uint8 [S, S, 3] RGB for the trunk.

Why one place: the features the zoo was trained on and the pixels a device feeds the classifier must
go through the same steps, or accuracy silently drops. Training (feature extraction) and the runtime
(`predict`) both call `prepare`. The policy is data (`PreprocessSpec`, stored in the manifest):
  1. alpha composited on white (a transparent PNG is not black);
  2. greyscale / palette / CMYK converted to RGB (grey replicated into three channels);
     (1 and 2: `runtime/images.py` `to_rgb_on_white`, the one RGB converter of the package)
  3. shorter side resized to size / crop_fraction (Pillow, bilinear, antialiased);
  4. centre crop to size x size (the ImageNet convention; crop_fraction 1.0 keeps the whole short side).
Normalisation is not here: it is inside the ONNX graph. Memory is bounded: the decoded photo by
`images.MAX_PIXELS` and `MAX_ASPECT`, the resized intermediate by MAX_INTERMEDIATE.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from .errors import ImageError

_FILTERS = ("bilinear", "bicubic", "nearest")
MAX_SIZE = 1024  # the trunk's input side: every photo trunk we ship or benchmark takes 96..336
MIN_CROP_FRACTION = 0.5  # ImageNet's convention is 0.875; below 1/2 most of the photo is thrown away
# Pixels of the resized image before its crop. Normal photos stay far below (the default 128 policy on
# a 50:1 strip: 0.8 M) and take the exact resize-then-crop path; beyond it only the crop's region is
# resized (`resize(box=...)`), so a large size or small crop_fraction never builds a huge intermediate.
MAX_INTERMEDIATE = 4_000_000


@dataclass(frozen=True)
class PreprocessSpec:
    """How a photo of any size becomes the classifier's input (recorded in the bundle manifest and in
    each model's `preprocess` metadata). Checked on construction: `from_dict` is the one validator of
    that JSON, used by the manifest reader and the model reader alike (ValueError naming the field)."""

    size: int = 128
    resize: str = "shorter_side"  # the only policy: keep the aspect ratio, then crop
    crop: str = "center"
    crop_fraction: float = 1.0
    interpolation: str = "bilinear"
    alpha: str = "white"  # RGBA / LA / transparent palette images are composited on white
    grey: str = "replicate"

    def __post_init__(self) -> None:
        if not (isinstance(self.size, int) and not isinstance(self.size, bool) and 8 <= self.size <= MAX_SIZE):
            raise ValueError(f"preprocessing size must be an integer in 8..{MAX_SIZE}, got {self.size!r:.40}")
        cf = self.crop_fraction
        if not (isinstance(cf, (int, float)) and not isinstance(cf, bool) and math.isfinite(cf)
                and MIN_CROP_FRACTION <= cf <= 1.0):
            raise ValueError(f"crop_fraction must be a number in [{MIN_CROP_FRACTION:g}, 1], got {cf!r:.40}")
        if self.interpolation not in _FILTERS:
            raise ValueError(f"interpolation must be one of {_FILTERS}, got {self.interpolation!r:.40}")
        if (self.resize, self.crop, self.alpha, self.grey) != ("shorter_side", "center", "white", "replicate"):
            raise ValueError("unsupported preprocessing policy; this tina-edge implements resize=shorter_side, "
                             "crop=center, alpha=white, grey=replicate")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> "PreprocessSpec":
        """The one validator of a stored policy: a JSON object with `size` and only known keys."""
        if not isinstance(d, dict):
            raise ValueError(f"preprocessing must be a JSON object, got {type(d).__name__}")
        unknown = sorted(str(k) for k in d if k not in _KEYS)
        if unknown:
            raise ValueError(f"preprocessing has unknown keys {unknown[:5]!r:.120}; it knows {sorted(_KEYS)}")
        if "size" not in d:
            raise ValueError("preprocessing has no size")
        return cls(**d)


_KEYS = frozenset(f.name for f in fields(PreprocessSpec))


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


def prepare(img: Any, spec: PreprocessSpec, name: str = "the image") -> np.ndarray:
    """One photo (PIL image or uint8 array of any size) -> uint8 [size, size, 3] following `spec`."""
    from PIL import Image

    from .images import to_rgb_on_white

    pil = _to_pil(img)
    im = to_rgb_on_white(pil, name, own=pil is not img)  # also refuses empty images and absurd strips
    w, h = im.size
    S = spec.size
    short = S / float(spec.crop_fraction)
    scale = short / min(w, h)
    nw, nh = max(S, int(round(w * scale))), max(S, int(round(h * scale)))
    left, top = (nw - S) // 2, (nh - S) // 2
    filt = getattr(Image, spec.interpolation.upper())
    if nw * nh > MAX_INTERMEDIATE:  # the same crop, resized from its region of the photo alone
        box = (left * w / nw, top * h / nh, (left + S) * w / nw, (top + S) * h / nh)
        return np.asarray(im.resize((S, S), filt, box=box), dtype=np.uint8)
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), filt)
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
            out.append(prepare(_open(src), spec, name))
        elif isinstance(src, np.ndarray) and src.ndim == 4:
            out.extend(prepare(x, spec, f"{name}[{j}]") for j, x in enumerate(src))
        else:
            out.append(prepare(src, spec, name))
    if not out:
        raise ImageError("no images were given")
    return np.stack(out)
