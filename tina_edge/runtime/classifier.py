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
from .errors import ModelFileError
from .images import load_images

if TYPE_CHECKING:  # onnx is imported where a model is built or read
    import onnx


@dataclass
class Prediction:
    """Per image: the arg-max label and index, and the full probability rows [N, k] (prompt order)."""

    labels: list[str]
    indices: np.ndarray
    probabilities: np.ndarray


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
        trunk: Any = None,
    ):
        """`trunk`: for head-only use, the trunk graph (ModelProto, path, or a callable returning one)."""
        self._model = model
        self._trunk = trunk
        self._trunk_session = None
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

    @property
    def is_head(self) -> bool:
        """True for a head-only model (input `features`), which needs the bundle's trunk to predict."""
        return bool(self._model.graph.input) and self._model.graph.input[0].name == "features"

    def trunk_model(self) -> onnx.ModelProto:
        from .head import extract_trunk

        t = self._trunk() if callable(self._trunk) else self._trunk
        if t is None:
            if not self.is_head:
                return extract_trunk(self._model)
            raise ModelFileError("this head-only model needs its trunk: pass trunk=PATH (the trunk.onnx written "
                                 "beside it, or `tina-edge personalize --head-only` again)")
        if isinstance(t, (str, os.PathLike)):
            import onnx

            if not Path(t).is_file():
                raise ModelFileError(f"trunk file {t} does not exist")
            t = onnx.load(str(t))
        want = self.metadata.get("trunk_sha256")
        if self.is_head and want:
            from .head import trunk_sha256

            if trunk_sha256(t) != want:
                raise ModelFileError("the trunk given is not the one this head was generated for (trunk_sha256 "
                                     "differs); use the trunk.onnx written with it, from the same bundle")
        self._trunk = t
        return t

    def save(self, path: str | os.PathLike, *, overwrite: bool = False, head_only: bool = False) -> Path:
        """Write model.onnx atomically; refuse an existing file unless overwrite.

        head_only=True writes the k x (D+1) head (features -> logits) with the labels; every head of
        one bundle shares the trunk (`save_trunk`)."""
        if head_only and not self.is_head:
            from .head import head_model, trunk_sha256

            meta = dict(self.metadata) | {"trunk_sha256": trunk_sha256(self.trunk_model())}
            data = head_model(self.params, meta).SerializeToString(deterministic=True)
            return atomic_write_bytes(path, data, overwrite=overwrite)
        return atomic_write_bytes(path, self.to_bytes(), overwrite=overwrite)

    def save_trunk(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the shared trunk (image uint8 NHWC -> features) that head-only models need."""
        return atomic_write_bytes(path, self.trunk_model().SerializeToString(deterministic=True), overwrite=overwrite)

    def _sess(self):
        if self._session is None:
            with self._lock:
                if self._session is None:
                    self._session = _make_session(self.to_bytes(), self.threads)
        return self._session

    def predict(self, images: Any) -> Prediction:
        """Classify uint8 arrays [H,W,3]/[N,H,W,3], file paths, directories or PIL images."""
        pre = self.metadata.get("preprocess")
        if pre:  # photos: resize shorter side + centre crop, alpha on white (runtime/preprocess.py)
            from .preprocess import PreprocessSpec, load_prepared

            x = load_prepared(images, PreprocessSpec.from_dict(json.loads(pre)))
        else:
            x = load_images(images, self.input_size)
        if self.is_head:  # trunk once, then the k x (D+1) head
            if self._trunk_session is None:
                self._trunk_session = _make_session(self.trunk_model().SerializeToString(), self.threads)
            feats = self._trunk_session.run(["features"], {"image": x})[0]
            logits, probs = self._sess().run(["logits", "probabilities"], {"features": feats})
        else:
            logits, probs = self._sess().run(["logits", "probabilities"], {"image": x})
        probs = np.asarray(probs, dtype=np.float32)
        idx = probs.argmax(axis=1).astype(np.int64)
        return Prediction(labels=[self.labels[i] for i in idx], indices=idx, probabilities=probs)

    def top(self, prediction: Prediction, n: int = 1) -> list[list[tuple[str, float]]]:
        """The n most probable (label, probability) pairs of every image of a prediction."""
        n = max(1, min(int(n), self.k))
        order = np.argsort(-prediction.probabilities, axis=1, kind="stable")[:, :n]
        return [[(self.labels[j], float(prediction.probabilities[i, j])) for j in row] for i, row in enumerate(order)]

    @classmethod
    def load(cls, path: str | os.PathLike, *, threads: int | None = None,
             trunk: str | os.PathLike | None = None) -> "PersonalizedClassifier":
        """Read a saved model.onnx (or a head-only model: its trunk is `trunk`, else trunk.onnx beside
        it); labels come from its metadata."""
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
        if trunk is None and meta.get("form") == "head" and (p.parent / "trunk.onnx").is_file():
            trunk = p.parent / "trunk.onnx"
        return cls(model, labels, params, threads=threads, trunk=trunk)
