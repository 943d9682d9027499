"""The personalized classifier: a standalone ONNX model plus the labels in prompt order.

The saved file needs nothing but onnxruntime: input `image` uint8 [N, H, W, 3] RGB (normalisation
inside the graph), outputs `logits` and `probabilities` [N, k]. Its metadata_props (labels, prompt,
texts, bundle id, sampler, ...) are written and read by `runtime/model_meta.py` `ModelMetadata`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from .atomic import atomic_write_bytes
from .contracts import FEATURES, IMAGE, PROBABILITIES
from .errors import ArgumentError, ImageError, ModelFileError, TinaEdgeError
from .images import expand_items, load_one
from .model_file import check_classifier_contract, check_input_size, check_self_contained, checked_model, image_hw, read_model_bytes, required_trunk_sha
from .model_meta import ModelMetadata, check_preprocess
from .sessions import make_session, run_graph

MAX_BATCH_BYTES = 64 << 20  # decoded input pixels held at once: a batch of larger inputs is split

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
    # onnxruntime's default optimisation (ALL), as a plain onnxruntime user runs model.onnx; its own
    # errors pass through to the caller, which names the model file
    return make_session(model_bytes, threads, (), level="all", error=None)


class PersonalizedClassifier:
    """A generated classifier. Build it with `Personalizer.personalize` or `PersonalizedClassifier.load`."""

    def __init__(
        self,
        model: onnx.ModelProto | Callable[[], onnx.ModelProto],
        labels: Sequence[str],
        params: Mapping[str, np.ndarray] | None = None,
        metadata: Mapping[str, str] | ModelMetadata | None = None,
        *,
        threads: int | None = None,
        trunk: Any = None,
        like: onnx.ModelProto | None = None,
    ):
        """`metadata`: what the model says about itself (default: parsed from the model's metadata_props,
        which dict-form `metadata` overrides); `trunk`: for head-only use, the trunk graph (ModelProto,
        path, or a callable returning one). `model` may be a callable that builds the model on first use,
        with `like` a graph of the same inputs and base metadata_props (the template it fills): writing
        the 13 MB template copy is most of a warm personalize, and an app that only keeps the params
        or the head never needs it."""
        if callable(model):
            if like is None:
                raise TypeError("a model built on first use needs `like`, the graph it is built from")
            self._make_model, self._model_proto, shape = model, None, like
            self._model_lock = threading.Lock()
        else:
            self._make_model, self._model_proto, shape = None, model, model
        self._trunk = trunk
        self._trunk_session = None
        self.labels = list(labels)
        self.params = dict(params or {})
        if isinstance(metadata, ModelMetadata):
            self.meta = replace(metadata, labels=self.labels)
        else:
            props = {p.key: p.value for p in shape.metadata_props} | dict(metadata or {})
            self.meta = ModelMetadata.from_props(props, "the model", labels=self.labels)
        self.threads = threads
        self._bytes: bytes | None = None
        self._session = None
        self._lock = threading.Lock()
        if self.meta.preprocess is not None:  # a ModelMetadata given as is is checked like one read from props
            check_preprocess(self.meta.preprocess, "the model")
        self.input_size: tuple[int, int] | None = image_hw(shape)
        check_input_size(self.input_size, self.meta.preprocess, "the model")

    @property
    def _model(self) -> onnx.ModelProto:
        if self._model_proto is None:
            with self._model_lock:  # not self._lock: sessions are built under it from the model
                if self._model_proto is None:
                    self._model_proto = self._make_model()
        return self._model_proto

    @property
    def k(self) -> int:
        return len(self.labels)

    @property
    def metadata(self) -> dict[str, str]:
        """The metadata_props strings of the model (`self.meta` is the typed form)."""
        return self.meta.to_props()

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
        return bool(self._model.graph.input) and self._model.graph.input[0].name == FEATURES

    def trunk_model(self) -> onnx.ModelProto:
        """The trunk (image -> features): cut from a standalone model, or for a head-only model the one
        given, read through the same checks as a model file (no external data, bounded control flow)
        and matched against the head's required trunk_sha256."""
        from .head import extract_trunk, trunk_sha256

        t = self._trunk() if callable(self._trunk) else self._trunk
        if t is None:
            if not self.is_head:
                return extract_trunk(self._model)
            raise ModelFileError("this head-only model needs its trunk: pass trunk=PATH (the trunk.onnx written "
                                 "beside it, or `tina-edge personalize --head-only` again)")
        if isinstance(t, (str, bytes, os.PathLike)):
            p = Path(os.fsdecode(t))
            t = checked_model(read_model_bytes(p, "trunk file"), p)
        elif not hasattr(t, "graph"):
            raise ModelFileError(f"trunk must be a file path or an onnx.ModelProto, got {type(t).__name__}")
        else:
            check_self_contained(t, "the trunk given")
        if self.is_head and trunk_sha256(t) != required_trunk_sha(self.meta):
            raise ModelFileError("the trunk given is not the one this head was generated for (trunk_sha256 "
                                 "differs); use the trunk.onnx written with it, from the same bundle")
        self._trunk = t
        return t

    def save(self, path: str | os.PathLike, *, overwrite: bool = False, head_only: bool = False) -> Path:
        """Write model.onnx atomically; refuse an existing file unless overwrite.

        head_only=True writes the k x (D+1) head (features -> logits) with the labels; every head of
        one bundle shares the trunk (`save_trunk`)."""
        return atomic_write_bytes(path, self.model_bytes(head_only=head_only), overwrite=overwrite)

    def model_bytes(self, *, head_only: bool = False) -> bytes:
        """What `save` writes: the model, or with head_only its k x (D+1) head (for a unit of several files)."""
        if head_only and not self.is_head:
            from .head import head_model, trunk_sha256

            return head_model(self.params, self.meta, trunk_sha256(self.trunk_model())).SerializeToString(deterministic=True)
        return self.to_bytes()

    def trunk_bytes(self) -> bytes:
        """What `save_trunk` writes: the shared trunk (image uint8 NHWC -> features) head-only models need."""
        return self.trunk_model().SerializeToString(deterministic=True)

    def save_trunk(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the shared trunk (image uint8 NHWC -> features) that head-only models need."""
        return atomic_write_bytes(path, self.trunk_bytes(), overwrite=overwrite)

    def _sess(self):
        if self._session is None:
            with self._lock:
                if self._session is None:
                    self._session = _make_session(self.to_bytes(), self.threads)
        return self._session

    def _trunk_sess(self):
        if self._trunk_session is None:
            with self._lock:
                if self._trunk_session is None:
                    self._trunk_session = _make_session(self.trunk_model().SerializeToString(), self.threads)
        return self._trunk_session

    def _run(self, x: np.ndarray) -> np.ndarray:
        n = int(x.shape[0])
        hint = "it does not run on its declared input; use a model made by tina-edge personalize"
        what = f"the model (on a batch of shape {list(x.shape)})"
        try:
            if self.is_head:  # head-only form: the shared trunk once, then the k x (D+1) head
                feats = run_graph(self._trunk_sess(), [FEATURES], {IMAGE: x}, what=f"the trunk (on a batch of shape "
                                  f"{list(x.shape)})", error=ModelFileError, hint=hint, items=n)[0]
                probs = run_graph(self._sess(), [PROBABILITIES], {FEATURES: feats}, what=what,
                                  error=ModelFileError, hint=hint, items=n)[0]
            else:
                probs = run_graph(self._sess(), [PROBABILITIES], {IMAGE: x}, what=what, error=ModelFileError,
                                  hint=hint, items=n)[0]
        except TinaEdgeError:
            raise
        except Exception as e:  # onnxruntime's own error types while creating a session for the model
            raise ModelFileError(f"the model cannot classify a batch of shape {list(x.shape)}: {' '.join(str(e).split())[:200]}") from None
        probs = np.asarray(probs, dtype=np.float32)
        if probs.shape != (x.shape[0], self.k):
            raise ModelFileError(f"the model returned probabilities of shape {list(probs.shape)} for {x.shape[0]} images "
                                 f"and {self.k} labels; it does not match its labels")
        if not np.all(np.isfinite(probs)):
            raise ModelFileError("the model returned non-finite probabilities (NaN or infinity); it is broken")
        return probs

    def _prediction(self, probs: np.ndarray, min_prob: float | None = None) -> Prediction:
        idx = probs.argmax(axis=1).astype(np.int64) if len(probs) else np.zeros((0,), np.int64)
        if min_prob is not None and len(probs):
            idx = np.where(probs.max(axis=1) >= np.float32(min_prob), idx, -1)
        return Prediction(labels=[self.labels[i] if i >= 0 else UNKNOWN for i in idx], indices=idx, probabilities=probs)

    def __repr__(self) -> str:
        """Labels, bundle id and sampler at a glance (e.g. in a notebook or a log line)."""
        shown = ", ".join(map(repr, self.labels[:8])) + (f", ... +{self.k - 8}" if self.k > 8 else "")
        size = f"{self.input_size[0]}x{self.input_size[1]}" if self.input_size else "any"
        bundle_id = self.meta.bundle_id if self.meta.bundle_id is not None else "?"
        return (f"PersonalizedClassifier(k={self.k}, labels=[{shown}], bundle_id={bundle_id!r}, "
                f"sampler={self.meta.sampler_summary()!r}, input={size})")

    def predict(self, images: Any, *, batch_size: int | None = None, min_prob: float | None = None) -> Prediction:
        """Classify uint8 arrays [H,W,3]/[N,H,W,3], file paths, directories or PIL images.

        min_prob: an image whose top probability is below it is answered UNKNOWN ("unknown",
        index -1) instead of the nearest of the model's classes, which it may belong to none of.
        """
        min_prob = check_min_prob(min_prob)
        parts = [p for _names, p in self.iter_predict(images, batch_size=batch_size)]
        probs = np.concatenate([p.probabilities for p in parts]) if parts else np.zeros((0, self.k), np.float32)
        return self._prediction(probs, min_prob)

    def iter_predict(self, images: Any, *, batch_size: int | None = None,
                     min_prob: float | None = None) -> Iterator[tuple[list[str], Prediction]]:
        """Yield (image names, Prediction) for batches of at most `batch_size` images (None: all at once).

        Only one batch is decoded at a time, so a folder of 20 000 photos runs in bounded memory.
        """
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))
                                       or not 1 <= batch_size <= 1_000_000):
            raise ImageError(f"batch_size must be an integer from 1 to 1000000, got {batch_size!r:.40}")
        min_prob = check_min_prob(min_prob)
        items = expand_items(images)
        if not items:
            raise ImageError("no images were given")
        names: list[str] = []
        imgs: list[np.ndarray] = []
        held = 0  # bytes of decoded images waiting in `imgs`
        pre = self.meta.preprocess
        if pre:  # photos: shorter side + centre crop, alpha on white, as the bundle recorded (runtime/preprocess.py)
            from .preprocess import PreprocessSpec, load_prepared

            spec = PreprocessSpec.from_dict(pre)
        for name, src in items:
            got = list(load_prepared([src], spec)) if pre else load_one(src, name, self.input_size)
            names.extend([name] if len(got) == 1 else [f"{name}[{j}]" for j in range(len(got))])
            imgs.extend(got)
            held += sum(x.nbytes for x in got)
            # a batch is also cut at MAX_BATCH_BYTES of decoded pixels (large or native-size inputs)
            while imgs and (len(imgs) >= (batch_size or len(imgs) + 1) or held >= MAX_BATCH_BYTES):
                n = min(len(imgs), batch_size or len(imgs))
                yield names[:n], self._prediction(self._run(self._stack(imgs[:n])), min_prob)
                names, imgs = names[n:], imgs[n:]
                held = sum(x.nbytes for x in imgs)
        if imgs:
            yield names, self._prediction(self._run(self._stack(imgs)), min_prob)

    @staticmethod
    def _stack(imgs: list[np.ndarray]) -> np.ndarray:
        shapes = {x.shape for x in imgs}
        if len(shapes) > 1:
            raise ImageError(f"images have different sizes {sorted(shapes)[:4]}; this model has no fixed input size to resize them to")
        return np.stack(imgs).astype(np.uint8, copy=False)

    def top(self, prediction: Prediction, n: int = 1) -> list[list[tuple[str, float]]]:
        """The n most probable (label, probability) pairs of every image of a prediction."""
        n = max(1, min(int(n), self.k))
        order = np.argsort(-prediction.probabilities, axis=1, kind="stable")[:, :n]
        return [[(self.labels[j], float(prediction.probabilities[i, j])) for j in row] for i, row in enumerate(order)]

    @classmethod
    def load(cls, path: str | os.PathLike, *, threads: int | None = None,
             trunk: str | os.PathLike | None = None) -> "PersonalizedClassifier":
        """Read a saved model.onnx (once; the session is built from the same bytes); labels come from its metadata.
        A head-only model (input `features`) uses `trunk`, else the trunk.onnx beside it.

        Any ONNX file is checked against the classifier contract first: input `image` uint8
        [N, H, W, 3], outputs `logits` and `probabilities` [N, k] with k = len(labels), no tensor
        kept in external data, bounded `labels` metadata.
        """
        if not isinstance(path, (str, bytes, os.PathLike)):
            raise ModelFileError(f"the model must be a file path, got {type(path).__name__}")
        p = Path(os.fsdecode(path))
        data = read_model_bytes(p)
        model = checked_model(data, p)
        meta = ModelMetadata.from_props({m.key: m.value for m in model.metadata_props}, p)
        check_classifier_contract(model, len(meta.labels), p)
        check_input_size(image_hw(model), meta.preprocess, p)
        if meta.is_head:
            required_trunk_sha(meta, p)
        from onnx import numpy_helper

        names = set(meta.params or ())
        params = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer if i.name in names}
        if trunk is None and meta.is_head and (p.parent / "trunk.onnx").is_file():
            trunk = p.parent / "trunk.onnx"
        clf = cls(model, meta.labels, params, meta, threads=threads, trunk=trunk)
        clf._bytes = data  # the session runs the very bytes that were checked
        return clf


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
