"""ONNX models from bytes, and where a model could make onnxruntime read a file.

A tensor can hide external data (a `location` naming another file) in many places, not only in
`graph.initializer`: sparse initializers, Constant nodes and any other tensor attribute, the
subgraphs of If/Loop/Scan, and model-local functions. `external_tensors` walks all of them, so the
callers can refuse (or, for listed and hashed bundle files, inline) every one. Models are always
parsed from bytes the caller has already read (and for bundles, hashed): nothing is re-opened by
path, so a file swapped after the check is never used.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

_EXTERNAL = 1  # onnx.TensorProto.EXTERNAL (a stable value of the ONNX spec)
_ATTR_TENSOR, _ATTR_GRAPH, _ATTR_SPARSE = 4, 5, 11
_ATTR_TENSORS, _ATTR_GRAPHS, _ATTR_SPARSES = 9, 10, 12


def parse_model(data: bytes) -> onnx.ModelProto:
    """Parse serialized ONNX bytes (raises whatever protobuf raises on garbage)."""
    import onnx

    model = onnx.ModelProto()
    model.ParseFromString(data)
    return model


def _is_external(t: onnx.TensorProto) -> bool:
    return t.data_location == _EXTERNAL or len(t.external_data) > 0


def _tensors_of_graph(g: onnx.GraphProto, where: str) -> Iterator[tuple[str, onnx.TensorProto]]:
    for t in g.initializer:
        yield f"{where}initializer", t
    for s in g.sparse_initializer:
        yield f"{where}sparse initializer", s.values
        yield f"{where}sparse initializer", s.indices
    yield from _tensors_of_nodes(g.node, where)


def _tensors_of_nodes(nodes, where: str) -> Iterator[tuple[str, onnx.TensorProto]]:
    for node in nodes:
        here = f"{where}node {node.name or node.op_type!r} "
        for a in node.attribute:
            if a.HasField("t"):
                yield f"{here}attribute {a.name!r}", a.t
            for t in a.tensors:
                yield f"{here}attribute {a.name!r}", t
            if a.HasField("sparse_tensor"):
                yield f"{here}attribute {a.name!r}", a.sparse_tensor.values
                yield f"{here}attribute {a.name!r}", a.sparse_tensor.indices
            for s in a.sparse_tensors:
                yield f"{here}attribute {a.name!r}", s.values
                yield f"{here}attribute {a.name!r}", s.indices
            if a.HasField("g"):
                yield from _tensors_of_graph(a.g, f"{here}subgraph {a.name!r} ")
            for sub in a.graphs:
                yield from _tensors_of_graph(sub, f"{here}subgraph {a.name!r} ")


def all_tensors(model: onnx.ModelProto) -> Iterator[tuple[str, onnx.TensorProto]]:
    """Every TensorProto of the model with a description of where it sits."""
    yield from _tensors_of_graph(model.graph, "")
    for f in model.functions:
        yield from _tensors_of_nodes(f.node, f"function {f.name!r} ")


def external_tensors(model: onnx.ModelProto) -> Iterator[tuple[str, onnx.TensorProto, str]]:
    """(where, tensor, location) for every tensor that keeps its data in another file."""
    for where, t in all_tensors(model):
        if _is_external(t):
            loc = {e.key: e.value for e in t.external_data}.get("location", "")
            yield where, t, loc


def inline_external(t: onnx.TensorProto, blob: bytes) -> None:
    """Move a tensor's external bytes (offset/length into `blob`) into raw_data; ValueError if out of range."""
    info = {e.key: e.value for e in t.external_data}
    offset = int(info.get("offset", 0) or 0)
    length = info.get("length")
    end = len(blob) if length in (None, "") else offset + int(length)
    if offset < 0 or end < offset or end > len(blob):
        raise ValueError(f"its external data range {offset}..{end} lies outside the {len(blob)}-byte file")
    t.raw_data = blob[offset:end]
    del t.external_data[:]
    t.data_location = 0
