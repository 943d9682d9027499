"""The personalized classifier: a standalone ONNX model plus the labels in prompt order.

The saved file needs nothing but onnxruntime: input `image` uint8 [N, H, W, 3] RGB (normalisation
inside the graph), outputs `logits` and `probabilities` [N, k]. metadata_props carry `labels`
(JSON list), `prompt`, `texts`, `bundle_id`, `sampler` (JSON), `params` (JSON list of the
generated tensor names) and `producer`.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .atomic import atomic_write_bytes
from .errors import ArgumentError, ModelFileError
from .images import load_images

if TYPE_CHECKING:  # onnx is imported where a model is built or read
    import onnx


UNKNOWN = "unknown"
"""The label `predict(..., min_prob=P)` gives an image whose top probability is below P."""


@dataclass
class Prediction:
    """Per image: the arg-max label and index, and the full probability rows [N, k] (prompt order).

    With `min_prob`, an image whose top probability is below it gets the label UNKNOWN and index -1.
    """

    labels: list[str]
    indices: np.ndarray
    probabilities: np.ndarray

    @property
    def confidence(self) -> np.ndarray:
        """The top probability of every image, [N] (what min_prob is compared with)."""
        return self.probabilities.max(axis=1) if self.probabilities.size else np.zeros(0, np.float32)


def _make_session(model_bytes: bytes, threads: int | None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = int(threads)
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


class PersonalizedClassifier:
    """A generated classifier. Build it with `Personalizer.personalize` or `PersonalizedClassifier.load`."""

    def __init__(
        self,
        model: onnx.ModelProto,
        labels: Sequence[str],
        params: Mapping[str, np.ndarray] | None = None,
        metadata: Mapping[str, str] | None = None,
        *,
        threads: int | None = None,
    ):
        self._model = model
        self.labels = list(labels)
        self.params = dict(params or {})
        self.metadata = {p.key: p.value for p in model.metadata_props}
        if metadata:
            self.metadata.update(metadata)
        self.threads = threads
        self._bytes: bytes | None = None
        self._session = None
        self._lock = threading.Lock()
        dims = model.graph.input[0].type.tensor_type.shape.dim if model.graph.input else []
        hw = [d.dim_value if d.HasField("dim_value") else 0 for d in dims][1:3]
        self.input_size: tuple[int, int] | None = (hw[0], hw[1]) if len(hw) == 2 and all(hw) else None

    @property
    def k(self) -> int:
        return len(self.labels)

    def to_model_proto(self) -> onnx.ModelProto:
        """A copy of the ONNX model (edit it freely)."""
        import onnx

        m = onnx.ModelProto()
        m.CopyFrom(self._model)
        return m

    def to_bytes(self) -> bytes:
        """The serialised model; the same inputs give the same bytes (deterministic serialisation)."""
        if self._bytes is None:
            self._bytes = self._model.SerializeToString(deterministic=True)
        return self._bytes

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write model.onnx atomically; refuse an existing file unless overwrite."""
        return atomic_write_bytes(path, self.to_bytes(), overwrite=overwrite)

    def _sess(self):
        if self._session is None:
            with self._lock:
                if self._session is None:
                    self._session = _make_session(self.to_bytes(), self.threads)
        return self._session

    def predict(self, images: Any, *, min_prob: float | None = None) -> Prediction:
        """Classify uint8 arrays [H,W,3]/[N,H,W,3], file paths, directories or PIL images.

        min_prob: an image whose top probability is below it is answered UNKNOWN ("unknown",
        index -1) instead of the nearest of the model's classes, which it may belong to none of.
        """
        min_prob = check_min_prob(min_prob)
        x = load_images(images, self.input_size)
        logits, probs = self._sess().run(["logits", "probabilities"], {"image": x})
        probs = np.asarray(probs, dtype=np.float32)
        idx = probs.argmax(axis=1).astype(np.int64)
        if min_prob is not None:
            idx = np.where(probs.max(axis=1) >= np.float32(min_prob), idx, -1)
        return Prediction(labels=[self.labels[i] if i >= 0 else UNKNOWN for i in idx], indices=idx, probabilities=probs)

    def __repr__(self) -> str:
        """Labels, bundle id and sampler at a glance (e.g. in a notebook or a log line)."""
        shown = ", ".join(map(repr, self.labels[:8])) + (f", ... +{self.k - 8}" if self.k > 8 else "")
        try:
            s = json.loads(self.metadata.get("sampler", "{}"))
            sampler = f"{s['sampler']}-{s['steps']} seed {s['seed']}"
        except (ValueError, TypeError, KeyError):
            sampler = "?"
        size = f"{self.input_size[0]}x{self.input_size[1]}" if self.input_size else "any"
        return (f"PersonalizedClassifier(k={self.k}, labels=[{shown}], bundle_id={self.metadata.get('bundle_id', '?')!r}, "
                f"sampler={sampler!r}, input={size})")

    def top(self, prediction: Prediction, n: int = 1) -> list[list[tuple[str, float]]]:
        """The n most probable (label, probability) pairs of every image of a prediction."""
        n = max(1, min(int(n), self.k))
        order = np.argsort(-prediction.probabilities, axis=1, kind="stable")[:, :n]
        return [[(self.labels[j], float(prediction.probabilities[i, j])) for j in row] for i, row in enumerate(order)]

    @classmethod
    def load(cls, path: str | os.PathLike, *, threads: int | None = None) -> "PersonalizedClassifier":
        """Read a saved model.onnx; labels come from its metadata."""
        p = Path(path)
        if not p.is_file():
            raise ModelFileError(f"model file {p} does not exist")
        import onnx
        from onnx import numpy_helper

        try:
            model = onnx.load(str(p))
        except Exception as e:
            raise ModelFileError(f"{p} is not a readable ONNX model ({type(e).__name__})") from None
        meta = {m.key: m.value for m in model.metadata_props}
        try:
            labels = json.loads(meta["labels"])
            if not (isinstance(labels, list) and len(labels) >= 2 and all(isinstance(x, str) for x in labels)):
                raise ValueError
        except (KeyError, ValueError):
            raise ModelFileError(f"{p} is not a tina-edge classifier: its metadata has no valid 'labels' list") from None
        names = set()
        try:
            names = set(json.loads(meta.get("params", "[]")))
        except (ValueError, TypeError):
            pass
        params = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer if i.name in names}
        return cls(model, labels, params, threads=threads)


def check_min_prob(min_prob: float | None) -> float | None:
    """None, or a probability in [0, 1] (anything else is an ArgumentError, NaN included)."""
    if min_prob is None:
        return None
    try:
        p = float(min_prob)
    except (TypeError, ValueError):
        raise ArgumentError(f"min_prob must be a number from 0 to 1; got {min_prob!r}") from None
    if not 0.0 <= p <= 1.0:
        raise ArgumentError(f"min_prob must be from 0 to 1; got {min_prob!r}")
    return p
