"""Smaller weight storage for portable bundles (no torch): each weight stored once, in the smallest
onnx-standard form whose outputs hold (measured in benchmarks/notes/bundle-size.md).

The first visit of a browser downloads the text encoder, the template and generate.onnx (issue 24:
63 MB raw, 43 MB gzipped with float32 trunk and denoiser weights). One pass, generic over a
ModelProto's initializers by size and consumer (no node names):

* `float_weights_to_fp16`: every large float32 initializer read only as the weight of a Conv,
  ConvTranspose, MatMul or Gemm (in the graph or a Loop/If body) is stored as float16 + Cast back to
  float32 (`weight_only.store_as_fp16`, the one writer of that form). onnxruntime folds the Cast into
  a float tensor when the session is created, so the graph runs at float32 speed on weights rounded
  to 11 bits of mantissa. Biases, normalisation constants and layout tables (`layout_std`,
  `layout_mean`) stay float32: their consumers are Add/Mul, never a weight slot.
* the text encoder is left as it is: it already stores each weight once (the 30522 x 384 word table
  as uint8, the attention and FFN-up matrices as int8, the FFN down-projections as float16), and
  every smaller form measured moved the nearest-vocabulary answers of real names (int8 FFN
  down-projections per column or per block of 32, a 4-bit word table; benchmarks/bundle_size.py).
* int8 trunk kernels (per output channel, `Cast(W_int8) * scale`) were measured too and refused:
  personalized classifiers agreed with the float32 ones on 96.0 % of photos (float16: 99.9 %).

Older bundles keep working: the runtime reads any of these forms, they are plain onnx graphs.
"""

from __future__ import annotations

from collections import defaultdict

# (op_type, input index) slots that read a weight matrix or kernel
WEIGHT_SLOTS = frozenset({("Conv", 1), ("ConvTranspose", 1), ("MatMul", 0), ("MatMul", 1), ("Gemm", 0), ("Gemm", 1)})


def consumers(graph) -> dict[str, list[tuple[str, int]]]:
    """Every (op_type, input index) that reads each value name, subgraphs (Loop/If bodies) included."""
    import onnx

    out: dict[str, list[tuple[str, int]]] = defaultdict(list)

    def walk(g) -> None:
        for n in g.node:
            for k, name in enumerate(n.input):
                if name:
                    out[name].append((n.op_type, k))
            for a in n.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g)
                elif a.type == onnx.AttributeProto.GRAPHS:
                    for sub in a.graphs:
                        walk(sub)

    walk(graph)
    return out


def float_weights_to_fp16(model, min_elements: int = 1024, exclude: frozenset[str] | set[str] = frozenset()) -> int:
    """Store each float32 initializer of >= min_elements read only in weight slots as float16 + Cast;
    returns the bytes saved (0: nothing to do, e.g. a graph converted before). `exclude`: initializer
    names to keep float32 (a template's layout tensors, when they are initializers)."""
    from .weight_only import store_as_fp16

    uses = consumers(model.graph)
    return store_as_fp16(model.graph, lambda name, a: (name not in exclude and a.size >= min_elements and bool(uses.get(name))
                                                       and all(u in WEIGHT_SLOTS for u in uses[name])))


def file_weights_to_fp16(path, exclude: frozenset[str] | set[str] = frozenset(), min_elements: int = 1024) -> int:
    """`float_weights_to_fp16` on an .onnx file, rewritten in place (atomically) when anything changed."""
    import onnx

    from ...runtime.atomic import atomic_save_onnx

    model = onnx.load(str(path))
    saved = float_weights_to_fp16(model, min_elements, exclude)
    if saved:
        onnx.checker.check_model(model)
        atomic_save_onnx(path, model)
    return saved

