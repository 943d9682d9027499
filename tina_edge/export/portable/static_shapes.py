"""Static shapes for phones: a template whose trunk computes TF-style "same" padding at run time
(Shape -> Gather -> Ceil -> Pad, once per strided conv) gets that padding as constants.

Why: onnxruntime's mobile check splits such a graph into 15 NNAPI / 20 CoreML partitions and
advises the CPU (BENCHMARKS.md §14.4), although the template's input side is fixed (128 px): every
padding is known before any photo is seen. The rewrite replaces each Shape (or Gather of a Shape)
whose dimensions shape inference knows by a constant, lets onnxruntime's basic optimiser (standard
ONNX ops only: constant folding, Conv+BatchNorm folding) fold what follows, and repeats until
nothing is left to fold (5 rounds for EfficientNet-Lite0). The batch axis stays dynamic; the
outputs are unchanged (checked on random photos before the rewrite is kept).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ...runtime.contracts import IMAGE, PROBABILITIES
from ...runtime.errors import ExportError

MAX_ROUNDS = 32


def _known_dims(model: Any) -> dict[str, list[int | None]]:
    from onnx import shape_inference

    inf = shape_inference.infer_shapes(model)
    out = {}
    for vi in list(inf.graph.value_info) + list(inf.graph.input) + list(inf.graph.output):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            out[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    return out


def fold_known_shapes(model: Any) -> int:
    """Replace Shape nodes (or Gathers of one dimension of a Shape) whose values shape inference knows
    by initializers, in place; returns how many were replaced."""
    from onnx import numpy_helper

    dims = _known_dims(model)
    const = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant":
            const.update({n.output[0]: numpy_helper.to_array(a.t) for a in n.attribute if a.name == "value"})
    starts = {n.output[0]: (n.input[0], {a.name: a.i for a in n.attribute})
              for n in model.graph.node if n.op_type == "Shape"}
    keep, new = [], []
    for n in model.graph.node:
        value = None
        if n.op_type == "Shape" and dims.get(n.input[0]) is not None:
            a = {x.name: x.i for x in n.attribute}
            d = dims[n.input[0]][a.get("start", 0): a.get("end", len(dims[n.input[0]]))]
            value = np.array(d, np.int64) if d and all(v is not None for v in d) else None
        elif n.op_type == "Gather" and n.input[0] in starts and n.input[1] in const:
            src, a = starts[n.input[0]]
            d = dims.get(src)
            idx = const[n.input[1]]
            if d is not None and "end" not in a and idx.ndim == 0:
                d = d[a.get("start", 0):]
                i = int(idx)
                value = np.array(d[i], np.int64) if -len(d) <= i < len(d) and d[i] is not None else None
        if value is None:
            keep.append(n)
        else:
            new.append(numpy_helper.from_array(value, n.output[0]))
    del model.graph.node[:]
    model.graph.node.extend(keep)
    model.graph.initializer.extend(new)
    return len(new)


def _basic_optimised(model: Any) -> Any:
    """onnxruntime's basic graph optimisations (standard ONNX ops only), written out and read back."""
    import onnx

    from ...runtime.sessions import make_session

    with tempfile.TemporaryDirectory(prefix="tina-static-") as d:
        dst = os.path.join(d, "out.onnx")  # written by onnxruntime into a directory of our own, deleted below
        make_session(model.SerializeToString(), 1, (), what="the template", level="basic", error=None, save_optimized=dst)
        return onnx.load(dst)


def static_shapes(model: Any) -> tuple[Any, int]:
    """(the rewritten model, rounds); the graph inputs and outputs keep their names."""
    rounds = 0
    while rounds < MAX_ROUNDS:
        folded = fold_known_shapes(model)
        model = _basic_optimised(model)
        rounds += 1
        if not folded:
            break
    return model, rounds


def _probabilities(model_bytes: bytes, feeds: dict[str, np.ndarray]) -> np.ndarray:
    from ...runtime.sessions import make_session, run_graph

    sess = make_session(model_bytes, 1, what="the template", error=None)
    return np.asarray(run_graph(sess, [PROBABILITIES], feeds, what="the template")[0])


def static_template(path: str | Path, generated: dict[str, np.ndarray], height: int, width: int) -> dict:
    """Rewrite template `path` in place with static padding, after checking on random photos that it
    computes the same probabilities (`generated`: the template's generated tensors, as graph inputs)."""
    import onnx

    from ...runtime.atomic import atomic_save_onnx

    path = Path(path)
    before = onnx.load(str(path))
    after, rounds = static_shapes(before)
    x = np.random.default_rng(0).integers(0, 256, (3, height, width, 3), dtype=np.uint8)
    feeds = {IMAGE: x, **{k: v for k, v in generated.items() if k in {i.name for i in before.graph.input}}}
    a, b = _probabilities(before.SerializeToString(), feeds), _probabilities(after.SerializeToString(), feeds)
    if not np.allclose(a, b, atol=1e-5):
        raise ExportError(f"the static-shape template differs from the original by {np.abs(a - b).max():.2e}; "
                          "convert without --ort")
    count = lambda m, op: sum(n.op_type == op for n in m.graph.node)  # noqa: E731
    atomic_save_onnx(path, after)
    return {"rounds": rounds, "nodes": [len(before.graph.node), len(after.graph.node)],
            "pad_nodes": [count(before, "Pad"), count(after, "Pad")], "ceil_nodes": [count(before, "Ceil"), count(after, "Ceil")],
            "max_abs_diff": float(np.abs(a - b).max())}
