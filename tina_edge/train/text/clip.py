"""open_clip text (and image) towers as Tina text encoders; a tiny seeded CLIP for tests."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tina_edge.runtime.contracts import ATTENTION_MASK, INPUT_IDS
from tina_edge.runtime.atomic import atomic_write_bytes, atomic_write_json
from tina_edge.runtime.errors import TextEncoderError
from tina_edge.runtime.manifest import sha256_file

from tina_edge.train.text.base import DEFAULT_MAX_TOKENS, TextEncoder, _as_list

# A tiny CLIP architecture for tests and smoke runs (random weights, ~3.4M params, mostly the
# 49408-token embedding table). Registered with open_clip under TINY_CLIP_ARCH on first use.
TINY_CLIP_ARCH = "tina-tiny-clip"
TINY_CLIP_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}



def register_tiny_clip() -> str:
    """Make TINY_CLIP_ARCH known to open_clip (idempotent); returns its name."""
    import open_clip

    if TINY_CLIP_ARCH not in open_clip.list_models():
        d = Path(tempfile.mkdtemp(prefix="tina-openclip-cfg-"))
        atomic_write_json(d / f"{TINY_CLIP_ARCH}.json", TINY_CLIP_CONFIG)
        open_clip.add_model_config(d)
    return TINY_CLIP_ARCH


class _ClipText(nn.Module):
    """open_clip's encode_text at a context of L <= 77 tokens, then L2 norm.

    CLIP's text transformer is causal, so the token at the end-of-text position sees only the
    tokens before it: cutting the context to L changes nothing for texts that fit, and keeps the
    exported graph small. Pooling is open_clip's argmax over ids (end-of-text has the highest id);
    ids are multiplied by the mask first so the graph keeps its attention_mask input.
    """

    def __init__(self, clip: nn.Module):
        super().__init__()
        self.clip = clip

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        c = self.clip
        L = input_ids.shape[1]
        cast = c.transformer.get_cast_dtype()
        x = c.token_embedding(input_ids).to(cast) + c.positional_embedding[:L].to(cast)
        x = c.transformer(x, attn_mask=c.attn_mask[:L, :L])
        x = c.ln_final(x)
        eot = (input_ids * attention_mask).argmax(dim=-1)
        x = x[torch.arange(x.shape[0]), eot]
        if c.text_projection is not None:
            x = c.text_projection(x) if isinstance(c.text_projection, nn.Linear) else x @ c.text_projection
        return F.normalize(x, dim=-1)


class _ClipImage(nn.Module):
    """uint8 NHWC at the model's image size -> normalise -> encode_image -> L2 norm."""

    def __init__(self, clip: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.clip = clip
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.permute(0, 3, 1, 2).to(torch.float32)
        x = (x - self.mean) / self.std
        return F.normalize(self.clip.encode_image(x), dim=-1)


class OpenCLIPEncoder(TextEncoder):
    """An open_clip model: `pretrained` is an open_clip tag, a local checkpoint file, or None.

    None gives random weights drawn from `seed` (for tests and pipelines without weights; such
    embeddings carry no meaning). Pretrained tags download, which this machine cannot do.
    """

    kind = "open_clip"

    def __init__(self, arch: str = "ViT-B-32", pretrained: str | os.PathLike | None = None, *,
                 max_tokens: int = DEFAULT_MAX_TOKENS, seed: int = 0):
        import open_clip

        if arch == TINY_CLIP_ARCH:
            register_tiny_clip()
        if arch not in open_clip.list_models():
            raise TextEncoderError(f"unknown open_clip architecture {arch!r}; see open_clip.list_models()")
        self.arch = arch
        self._ckpt_sha = None
        if pretrained is None:
            tag = f"random-seed{seed}"
        else:
            pretrained = str(pretrained)
            if os.path.isfile(pretrained):
                self._ckpt_sha = sha256_file(pretrained)[:16]
            tag = pretrained
        try:
            with torch.random.fork_rng(devices=[]):  # seeded weights without touching the caller's RNG
                torch.manual_seed(seed)
                model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=pretrained)
        except RuntimeError as e:
            raise TextEncoderError(f"cannot load open_clip {arch} weights {pretrained!r}: {e}") from None
        self.model = model.eval()
        self.preprocess = preprocess
        self.name = f"open_clip:{arch}:{tag}"
        self.pretrained = pretrained
        ctx = int(self.model.positional_embedding.shape[0])
        if not 2 <= max_tokens <= ctx:
            raise TextEncoderError(f"max_tokens must be between 2 and the model's context {ctx}, got {max_tokens}")
        if getattr(self.model, "text_pool_type", "argmax") != "argmax":
            raise TextEncoderError(f"open_clip {arch} pools text by {self.model.text_pool_type!r}; only argmax (CLIP) is supported")
        self.max_tokens = int(max_tokens)
        self.tokenizer = open_clip.get_tokenizer(arch)
        self.dim = int(self.model.text_projection.shape[-1] if isinstance(self.model.text_projection, torch.Tensor)
                       else self.model.text_projection.out_features)
        cfg = getattr(self.model.visual, "preprocess_cfg", {}) or {}
        size = cfg.get("size", self.model.visual.image_size)
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.image_mean = tuple(float(v) for v in cfg.get("mean", open_clip.OPENAI_DATASET_MEAN))
        self.image_std = tuple(float(v) for v in cfg.get("std", open_clip.OPENAI_DATASET_STD))
        self._text = _ClipText(self.model).eval()
        self._image = _ClipImage(self.model, self.image_mean, self.image_std).eval()

    @property
    def cache_key(self) -> str:
        return self.name + (f"@{self._ckpt_sha}" if self._ckpt_sha else "")

    def tokenize(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        ids = self.tokenizer(_as_list(texts), context_length=self.max_tokens).numpy().astype(np.int64)
        # real tokens are those up to the last end-of-text; not `ids != 0`, as 0 is the token "!"
        eot = ids == self.tokenizer.eot_token_id
        mask = np.flip(np.cumsum(np.flip(eot, 1), 1), 1) > 0
        return {INPUT_IDS: ids, ATTENTION_MASK: mask.astype(np.int64)}

    def torch_module(self) -> nn.Module:
        return self._text

    def image_module(self) -> nn.Module:
        """uint8 [N, S, S, 3] at S = image_size -> L2-normed image embeddings [N, dim]."""
        return self._image

    @torch.no_grad()
    def encode_images(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Embed RGB uint8 images (any size; open_clip's resize + centre crop) -> [n, dim] L2-normed."""
        from PIL import Image

        imgs = list(images)
        if not imgs:
            return np.zeros((0, self.dim), np.float32)
        x = torch.stack([self.preprocess(Image.fromarray(np.asarray(im, dtype=np.uint8))) for im in imgs])
        return F.normalize(self.model.encode_image(x), dim=-1).float().numpy()

    def save_checkpoint(self, path: str | os.PathLike) -> Path:
        """Write the weights where `OpenCLIPEncoder(arch, pretrained=path)` loads them back."""
        path = Path(path)
        if path.suffix == ".safetensors":
            from safetensors.torch import save

            atomic_write_bytes(path, save({k: v.contiguous() for k, v in self.model.state_dict().items()}), overwrite=True)
        else:  # open_clip's own format, for `pretrained=path` (never read back by tina-edge itself)
            buf = io.BytesIO()
            torch.save(self.model.state_dict(), buf)
            atomic_write_bytes(path, buf.getvalue(), overwrite=True)
        return path
