"""Edge image encoder: CLIP's image tower, so example images can stand in for a class name.

Tina's conditioning lives in CLIP's joint image-text space, so a class can be prompted with
pictures instead of words (zero-shot: the denoiser only ever saw text embeddings). Torch-free:

    preprocessing (here, Pillow + numpy)  open_clip's eval transform: resize the shorter side to S
                                          with bicubic filtering (Pillow's, antialiased), centre-
                                          crop S x S with torchvision's rounding, RGB uint8
    image_encoder.onnx (the bundle)       uint8 [N, S, S, 3] -> /255, (x - mean) / std (CLIP's
                                          mean/std inside the graph) -> image tower -> L2 norm

Both halves reproduce `OpenCLIPEncoder.encode_images` (open_clip's own PIL path); the exporter
checks that within 1e-4. Several images of one class become one embedding the way the paper
does few-shot prompting: average the L2-normalised image embeddings, then re-normalise so the
result lies on the unit sphere like the text embeddings Tina was trained on.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .contracts import EMBEDDINGS, IMAGE
from .errors import BundleError, ImageError
from .images import expand_items, load_one, rgb_image
from .sessions import make_session, run_graph


def clip_resize_crop(image: np.ndarray | Any, size: int) -> np.ndarray:
    """RGB uint8 [H, W, 3] of any size -> [size, size, 3] exactly as open_clip's eval transform.

    Same arithmetic as torchvision's Resize(size) on a PIL image (shorter side -> size, longer
    side int(size * long / short), no-op when already that size) and CenterCrop (round-half-even
    offsets); images smaller than `size` are upscaled first, so the crop never pads.
    """
    from PIL import Image

    if isinstance(image, Image.Image):  # an RGB PIL image (`images.rgb_image`): no array copy of a big photo
        im, (w, h) = image, image.size
    else:
        h, w = image.shape[:2]
        im = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8), "RGB")
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)  # bounded: images.MAX_ASPECT refused longer strips
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_h, new_w) != (h, w):
        im = im.resize((new_w, new_h), Image.BICUBIC)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    return np.asarray(im, dtype=np.uint8)[top : top + size, left : left + size]


def mean_embedding(emb: np.ndarray, what: str = "the images") -> np.ndarray:
    """Average of L2-normalised embeddings [n, D], re-normalised to unit length -> [D]."""
    emb = np.asarray(emb, dtype=np.float64)
    if emb.ndim != 2 or emb.shape[0] == 0:
        raise ImageError(f"no images were given for {what}")
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    m = emb.mean(axis=0)
    n = float(np.linalg.norm(m))
    if not n > 1e-6:
        raise ImageError(f"the embeddings of {what} cancel out on average; give more typical example images")
    return (m / n).astype(np.float32)


class ImageEncoderSession:
    """Images (paths, directories, PIL images, uint8 arrays; any size) -> float32 [n, D], L2-normed."""

    def __init__(self, model: bytes | str | os.PathLike, image_size: int, *, threads: int | None = None,
                 batch_size: int = 32, what: str = "image encoder"):
        model_path = what if isinstance(model, (bytes, bytearray, memoryview)) else model
        self.image_size = int(image_size)
        self.what = f"image encoder {model_path}"
        self.session = make_session(model, threads, what=what)
        ins = self.session.get_inputs()
        if [i.name for i in ins] != ["image"]:
            raise BundleError(f"image encoder {model_path} has inputs {[i.name for i in ins]}, expected ['image']")
        shape = ins[0].shape
        for axis in (1, 2):
            if isinstance(shape[axis], int) and shape[axis] != self.image_size:
                raise BundleError(f"image encoder {model_path} takes {shape[axis]}-pixel images but the manifest says {self.image_size}")
        d = self.session.get_outputs()[0].shape[-1]
        self.dim = d if isinstance(d, int) else None
        self.batch_size = int(batch_size)

    def preprocess(self, items: Any) -> np.ndarray:
        """Load and resize/crop items to uint8 [n, S, S, 3] (what the graph takes)."""
        out: list[np.ndarray] = []
        for name, src in expand_items(items):
            if isinstance(src, np.ndarray):
                imgs = load_one(src, name, None)  # native size, RGB, alpha on white
            else:  # a file or PIL image stays one PIL image at native size (upright, RGB, alpha on white)
                imgs = [rgb_image(src, name)]
            out.extend(clip_resize_crop(img, self.image_size) for img in imgs)
        if not out:
            raise ImageError("no images were given")
        return np.stack(out)

    def encode_batch(self, batch: np.ndarray) -> np.ndarray:
        """Already preprocessed uint8 [n, S, S, 3] -> [n, D]."""
        res = [run_graph(self.session, [EMBEDDINGS], {IMAGE: batch[i : i + self.batch_size]}, what=self.what)[0]
               for i in range(0, len(batch), self.batch_size)]
        return np.concatenate(res).astype(np.float32, copy=False)

    def encode(self, items: Any) -> np.ndarray:
        """Embed every image in `items` (a directory counts each image file in it)."""
        return self.encode_batch(self.preprocess(items))
