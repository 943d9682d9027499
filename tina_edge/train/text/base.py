"""The interface every text encoder implements (what training and export need from one)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Sequence

import numpy as np
import torch
from torch import nn

from tina_edge.runtime.contracts import ATTENTION_MASK, INPUT_IDS


DEFAULT_MAX_TOKENS = 16  # class names are short; 16 tokens hold every name we have seen (CLIP's cut)


class TextEncoder(ABC):
    """What the rest of the training code needs from a text encoder."""

    kind: str
    name: str
    dim: int
    max_tokens: int
    int8_exclude: tuple[str, ...] = ()  # ONNX node-name regexes int8 export keeps in fp32

    @property
    def cache_key(self) -> str:
        """Identifies the weights for the embedding cache (defaults to the name)."""
        return self.name

    @abstractmethod
    def tokenize(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Reference tokenization: input_ids, attention_mask int64 [n, max_tokens]."""

    @abstractmethod
    def torch_module(self) -> nn.Module:
        """A module (input_ids, attention_mask) -> L2-normed embeddings [n, dim], in eval mode."""

    @torch.no_grad()
    def encode(self, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
        """Embed `texts` as float32 [n, dim], L2-normalised, no prompt template."""
        texts = _as_list(texts)
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        module = self.torch_module()
        out = []
        for i in range(0, len(texts), batch_size):
            tok = self.tokenize(texts[i : i + batch_size])
            ids = torch.from_numpy(tok[INPUT_IDS])
            mask = torch.from_numpy(tok[ATTENTION_MASK])
            out.append(module(ids, mask).float().numpy())
        return np.concatenate(out).astype(np.float32)


def _as_list(texts: Sequence[str] | str) -> list[str]:
    if isinstance(texts, str):
        texts = [texts]
    texts = list(texts)
    if not all(isinstance(t, str) for t in texts):
        raise TypeError("texts must be strings")
    return texts
