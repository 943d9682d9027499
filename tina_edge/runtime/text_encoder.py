"""Edge text encoder: tokenizer + one onnxruntime session, created once and reused.

The ONNX graph does pooling and L2 norm itself, so `encode` returns what training saw.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from .errors import BundleError
from .tokenizer import Tokenizer


# onnxruntime 1.32 segfaults while creating a session for an fp16 CLIP text graph unless one of
# these is off (found by bisection); NCHWc only re-lays out convolutions, which encoders barely use.
SAFE_DISABLED_OPTIMIZERS = ("NchwcTransformer",)


def make_session(model: bytes | str | os.PathLike, threads: int | None = None,
                 disabled_optimizers: tuple[str, ...] = SAFE_DISABLED_OPTIMIZERS, *, what: str = "model"):
    """One CPU InferenceSession from verified bytes (or a path, for tools); `threads` caps intra-op threads.

    Bundles pass bytes: the session runs exactly what was hashed, never a file re-opened by path.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    # EXTENDED (not ALL): measured on the int8 MiniLM, session start 244 -> 130 ms and no slower
    # runs; ALL adds CPU layout transforms (NCHWc) that these graphs do not benefit from.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    if threads is not None:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    try:
        src = bytes(model) if isinstance(model, (bytes, bytearray, memoryview)) else str(model)
        if not isinstance(model, (bytes, bytearray, memoryview)):
            what = str(model)
        return ort.InferenceSession(src, sess_options=opts, providers=["CPUExecutionProvider"],
                                    disabled_optimizers=list(disabled_optimizers))
    except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf types
        raise BundleError(f"cannot load ONNX model {what}: {str(e)[:300]}; re-export the bundle") from None


class TextEncoderSession:
    """texts -> float32 [n, D] embeddings (L2-normed), with the bundle's tokenizer."""

    def __init__(self, model: bytes | str | os.PathLike, tokenizer: Tokenizer, *, threads: int | None = None,
                 batch_size: int = 64, what: str = "text encoder"):
        model_path = what if isinstance(model, (bytes, bytearray, memoryview)) else model
        self.tokenizer = tokenizer
        self.session = make_session(model, threads, what=what)
        names = {i.name for i in self.session.get_inputs()}
        if names != {"input_ids", "attention_mask"}:
            raise BundleError(f"text encoder {model_path} has inputs {sorted(names)}, expected input_ids, attention_mask")
        shape = self.session.get_inputs()[0].shape
        if isinstance(shape[1], int) and shape[1] != tokenizer.max_tokens:
            raise BundleError(f"text encoder takes {shape[1]} tokens but the tokenizer makes {tokenizer.max_tokens}")
        # a symbolic sequence axis means the graph takes any length: trim padding per batch
        self.dynamic_length = not isinstance(shape[1], int)
        d = self.session.get_outputs()[0].shape[-1]
        self.dim = d if isinstance(d, int) else None
        self.batch_size = int(batch_size)

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
            ids, mask = self.tokenizer([text])
            if self.dynamic_length:
                n = max(1, int(mask.sum()))
                ids, mask = np.ascontiguousarray(ids[:, :n]), np.ascontiguousarray(mask[:, :n])
            out.append(self.session.run(["embeddings"], {"input_ids": ids, "attention_mask": mask})[0])
        return np.concatenate(out).astype(np.float32, copy=False)
