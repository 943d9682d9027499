"""The portable personalized-classifier format ("head"): labels + generated tensors + bundle id.

A standalone model.onnx repeats the bundle's whole template (trunk included) in every classifier,
and its labels sit in ONNX metadata that onnxruntime's JS API cannot read. A head is a small JSON
file instead: any runtime that holds the bundle feeds its tensors to the bundle's
template (weights as graph inputs: `portable.template_inputs.model`, template.onnx itself in one-template bundles), and reads the labels with a JSON parser.

    {"format": "tina-edge-head", "version": 1, "bundle_id": "...", "labels": [...],
     "prompt": "...", "texts": [...], "sampler": {...}, "producer": "...",
     "params": {"fc.weight": {"shape": [k, 64], "dtype": "float32", "data": "<base64, little-endian>"}}}

Python and JS (js/src/classifier.mjs) write and read the same format (docs/PORTABLE.md); the
fields it shares with model.onnx come from and go to `runtime/model_meta.py` `ModelMetadata`.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_write_bytes
from .errors import ModelFileError
from .model_meta import ModelMetadata

HEAD_FORMAT = "tina-edge-head"
HEAD_VERSION = 1


def head_dict(clf: Any) -> dict[str, Any]:
    """The head of a PersonalizedClassifier (its labels, tensors and generation metadata)."""
    meta = clf.meta
    params = {}
    for name, arr in clf.params.items():
        a = np.ascontiguousarray(np.asarray(arr, dtype="<f4"))
        params[name] = {"shape": list(a.shape), "dtype": "float32", "data": base64.b64encode(a.tobytes()).decode("ascii")}
    return {"format": HEAD_FORMAT, "version": HEAD_VERSION, "bundle_id": meta.bundle_id or "",
            "labels": list(clf.labels), "prompt": meta.prompt if meta.prompt is not None else ", ".join(clf.labels),
            "texts": meta.texts if meta.texts is not None else list(clf.labels), "sampler": meta.sampler or {},
            "params": params, "producer": meta.producer or ""}


def save_head(clf: Any, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write the head JSON atomically (refuses an existing file unless overwrite)."""
    return atomic_write_bytes(path, head_bytes(clf), overwrite=overwrite)


def head_bytes(clf: Any) -> bytes:
    """The head JSON as `save_head` writes it (UTF-8, one trailing newline)."""
    return (json.dumps(head_dict(clf), ensure_ascii=False) + "\n").encode("utf-8")


def read_head(source: str | os.PathLike | Mapping[str, Any]) -> tuple[list[str], dict[str, np.ndarray], dict[str, Any]]:
    """(labels, tensors, the whole head) from a head file or dict; ModelFileError if it is not one."""
    if isinstance(source, Mapping):
        h = dict(source)
    else:
        p = Path(source)
        try:
            h = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelFileError(f"head file {p} does not exist") from None
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise ModelFileError(f"{p} is not a readable head JSON file ({type(e).__name__})") from None
    if not isinstance(h, dict) or h.get("format") != HEAD_FORMAT or h.get("version") != HEAD_VERSION:
        raise ModelFileError(f"not a tina-edge head file (format {HEAD_FORMAT!r}, version {HEAD_VERSION} expected)")
    labels = h.get("labels")
    if not (isinstance(labels, list) and len(labels) >= 2 and all(isinstance(x, str) for x in labels)):
        raise ModelFileError("the head file has no valid 'labels' list")
    params: dict[str, np.ndarray] = {}
    try:
        for name, t in h["params"].items():
            if t.get("dtype") != "float32":
                raise ValueError(f"tensor {name} is {t.get('dtype')}, float32 expected")
            a = np.frombuffer(base64.b64decode(t["data"], validate=True), dtype="<f4").astype(np.float32)
            params[name] = a.reshape([int(s) for s in t["shape"]])
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise ModelFileError(f"the head file's params are malformed: {e}") from None
    return labels, params, h


def classifier_from_head(source: str | os.PathLike | Mapping[str, Any], bundle: Any, *, threads: int | None = None):
    """A standalone PersonalizedClassifier from a head and the (verified) bundle it was made with."""
    from .classifier import PersonalizedClassifier
    from .template import fill_template

    labels, params, h = read_head(source)
    m = bundle.manifest
    if h.get("bundle_id") != m.bundle_id:
        raise ModelFileError(f"this head was generated with bundle {h.get('bundle_id')!r}, not {m.bundle_id!r}; "
                             "open the bundle it was made with")
    k = len(labels)
    for t in m.template.layout:
        want = list(t.shape)
        if t.class_axis is not None:
            want[t.class_axis] = k
        if t.name not in params or list(params[t.name].shape) != want:
            raise ModelFileError(f"the head's tensor {t.name!r} is missing or not of shape {want}")
    meta = ModelMetadata(labels=labels, prompt=str(h.get("prompt", "")), texts=h.get("texts", labels),
                         bundle_id=m.bundle_id, sampler=h.get("sampler", {}), params=[t.name for t in m.template.layout],
                         producer=str(h.get("producer", "")))
    model = fill_template(bundle.template_proto, params, k, meta.to_props())
    return PersonalizedClassifier(model, labels, params, threads=threads)
