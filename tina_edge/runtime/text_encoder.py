"""Edge text encoder: tokenizer + one onnxruntime session, created once and reused.

The ONNX graph does pooling and L2 norm itself, so `encode` returns what training saw.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Sequence

import numpy as np

from .contracts import ATTENTION_MASK, EMBEDDINGS, INPUT_IDS, input_names
from .errors import BundleError
from .tokenizer import Tokenizer


# make_session lives in sessions.py (the one session factory); imported here, where tools and
# image_encoder have always found it.
from .sessions import SAFE_DISABLED_OPTIMIZERS, make_session, run_graph  # noqa: E402,F401


class TextEncoderSession:
    """texts -> float32 [n, D] embeddings (L2-normed), with the bundle's tokenizer."""

    def __init__(self, model: bytes | str | os.PathLike, tokenizer: Tokenizer, *, threads: int | None = None,
                 batch_size: int = 64, what: str = "text encoder", cache_size: int = 1024):
        model_path = what if isinstance(model, (bytes, bytearray, memoryview)) else model
        self.what = f"text encoder {model_path}"
        self.tokenizer = tokenizer
        self.session = make_session(model, threads, what=what)
        names = {i.name for i in self.session.get_inputs()}
        if names != set(input_names("text_encoder")):
            raise BundleError(f"text encoder {model_path} has inputs {sorted(names)}, expected {', '.join(input_names('text_encoder'))}")
        shape = self.session.get_inputs()[0].shape
        if isinstance(shape[1], int) and shape[1] != tokenizer.max_tokens:
            raise BundleError(f"text encoder takes {shape[1]} tokens but the tokenizer makes {tokenizer.max_tokens}")
        # a symbolic sequence axis means the graph takes any length: trim padding per batch
        self.dynamic_length = not isinstance(shape[1], int)
        d = self.session.get_outputs()[0].shape[-1]
        self.dim = d if isinstance(d, int) else None
        self.batch_size = int(batch_size)
        # a name's embedding is a function of the name alone (see encode), so caching it is exact;
        # apps re-use their class names across prompts. Bounded LRU: cache_size x D floats.
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """One text at a time (batch 1, no padding beyond the text's own tokens).

        Dynamic int8 quantization picks activation scales per run from the whole batch, so a name
        encoded beside others (or padded to their length) got a different embedding (up to 2e-2).
        Encoding each text alone makes its embedding a function of the text only: the same class
        gets the same weights in any prompt, on any platform that runs the same graph.
        """
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim or 0), np.float32)
        out = []
        for text in texts:
            with self._cache_lock:
                emb = self._cache.get(text)
                if emb is not None:
                    self._cache.move_to_end(text)
            if emb is None:
                emb = self._encode_one(text)
                if self.cache_size > 0:
                    with self._cache_lock:
                        self._cache[text] = emb
                        while len(self._cache) > self.cache_size:
                            self._cache.popitem(last=False)
            out.append(emb)
        return np.stack(out).astype(np.float32, copy=False)

    def _encode_one(self, text: str) -> np.ndarray:
        ids, mask = self.tokenizer([text])
        if self.dynamic_length:
            n = max(1, int(mask.sum()))
            ids, mask = np.ascontiguousarray(ids[:, :n]), np.ascontiguousarray(mask[:, :n])
        row = np.asarray(self._run(ids, mask), dtype=np.float32)[0]
        row.setflags(write=False)  # shared through the cache: nobody may edit it in place
        return row

    def encode_many(self, texts: Sequence[str]) -> np.ndarray:
        """Many texts in batches of `batch_size`, padding trimmed per batch, bypassing the cache.

        For lookups over a whole vocabulary (the novelty report's nearest known names): a thousand
        names in a dozen runs instead of a thousand, without evicting the user's cached class names.
        With the weight-only encoder a text's embedding does not depend on its batch beyond float
        rounding (masked padding; ~1e-6), which a nearest-name lookup does not notice; personalize
        itself always uses `encode`.
        """
        texts = list(texts)
        out = []
        for s in range(0, len(texts), self.batch_size):
            ids, mask = self.tokenizer(texts[s : s + self.batch_size])
            if self.dynamic_length:
                n = max(1, int(mask.sum(1).max()))
                ids, mask = np.ascontiguousarray(ids[:, :n]), np.ascontiguousarray(mask[:, :n])
            out.append(np.asarray(self._run(ids, mask), dtype=np.float32))
        return np.concatenate(out) if out else np.zeros((0, self.dim or 0), np.float32)

    def _run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """One graph run (runtime/sessions.py: interruptible, bounded in time, failures as BundleError).

        A tokenizer id beyond the encoder's embedding rows fails here: the tokenizer and the encoder
        do not belong together."""
        return run_graph(self.session, [EMBEDDINGS], {INPUT_IDS: ids, ATTENTION_MASK: mask}, what=self.what,
                         hint="its tokenizer and graph do not belong together or the graph is broken; re-export the bundle")[0]
