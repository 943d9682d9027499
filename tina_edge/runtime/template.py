"""From a flat sampled parameter vector to a filled classifier graph.

`denormalise` undoes the per-tensor normalisation of the manifest layout and keeps the first k
class slices; `fill_template` copies the template graph (loaded once per bundle) with those
tensors in place of the K_max-shaped initializers. Graph value_info is dropped from the copy since
intermediate shapes recorded at K_max would be stale; graph outputs get their class axis set to k.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from typing import TYPE_CHECKING

import numpy as np

from .manifest import TensorSpec

if TYPE_CHECKING:
    import onnx

_NP_OF = {1: np.float32, 10: np.float16, 11: np.float64}  # onnx.TensorProto FLOAT, FLOAT16, DOUBLE


def denormalise_flat(x: np.ndarray, layout: Sequence[TensorSpec]) -> np.ndarray:
    """[..., P] normalised vectors -> [..., P] parameters (float32, a copy), every class slot kept.

    The one place the per-tensor normalisation is undone: the runtime slices the result per tensor
    (`denormalise`), training's evaluation and export parity keep whole flat vectors.
    """
    out = np.array(x, dtype=np.float32)
    for t in layout:
        sl = slice(t.offset, t.offset + t.numel)
        out[..., sl] = out[..., sl] * np.float32(t.std) + np.float32(t.mean)
    return out


def denormalise(x: np.ndarray, layout: Sequence[TensorSpec], k: int) -> dict[str, np.ndarray]:
    """w = x[offset:offset+numel].reshape(shape) * std + mean, first k entries on the class axis (float32)."""
    flat = denormalise_flat(np.asarray(x).reshape(-1), layout)
    out: dict[str, np.ndarray] = {}
    for t in layout:
        w = flat[t.offset : t.offset + t.numel].reshape(t.shape)
        if t.class_axis is not None:
            w = np.take(w, np.arange(k), axis=t.class_axis)
        out[t.name] = np.ascontiguousarray(w, dtype=np.float32)
    return out


def fill_template(
    template: onnx.ModelProto, params: Mapping[str, np.ndarray], k: int, metadata: Mapping[str, str] | None = None
) -> onnx.ModelProto:
    """A copy of `template` with `params` replacing the same-named initializers, outputs [N, k]."""
    import onnx
    from onnx import numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(template)
    g = model.graph
    found = set()
    for init in g.initializer:
        if init.name in params:
            arr = np.asarray(params[init.name]).astype(_NP_OF.get(init.data_type, np.float32), copy=False)
            init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(arr), init.name))
            found.add(init.name)
    missing = set(params) - found
    if missing:
        raise KeyError(f"template has no initializer(s) {sorted(missing)}")
    del g.value_info[:]
    for out in g.output:
        dims = out.type.tensor_type.shape.dim
        if len(dims) == 2:
            dims[1].Clear()
            dims[1].dim_value = int(k)
    if metadata is not None:
        merged = {p.key: p.value for p in model.metadata_props}  # the template's own props stay
        merged.update(metadata)
        del model.metadata_props[:]
        for key, value in merged.items():
            p = model.metadata_props.add()
            p.key, p.value = key, value
    return model


def inputs_to_initializers(template: onnx.ModelProto, layout: Sequence[TensorSpec]) -> onnx.ModelProto:
    """The initializer form of a template whose generated tensors are graph inputs (template.form "inputs").

    Why: a bundle stores the trunk once, in the graph every runtime can feed (weights as inputs);
    the Python runtime writes standalone model.onnx files, whose weights are initializers. Each
    layout input becomes a zero initializer of its K_max shape (appended in layout order), which
    `fill_template` then replaces: same bytes every run, same contract as an initializer-form
    template. Raises KeyError naming a layout tensor that is not a graph input.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(template)
    g = model.graph
    by_name = {i.name: i for i in g.input}
    missing = [t.name for t in layout if t.name not in by_name]
    if missing:
        raise KeyError(f"template has no graph input(s) {missing}")
    dtypes = {t.name: _NP_OF.get(by_name[t.name].type.tensor_type.elem_type, np.float32) for t in layout}
    keep = [i for i in g.input if i.name not in dtypes]
    del g.input[:]
    g.input.extend(keep)
    for t in layout:
        g.initializer.append(numpy_helper.from_array(np.zeros(t.shape, dtypes[t.name]), t.name))
    del g.value_info[:]
    return model
