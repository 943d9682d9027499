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


MAX_LOOP_TRIPS = 1000  # a Loop runs at most this many times: the DDPM steps of Tina's T = 1000 (generate.onnx)


def _subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    return [a.g for a in node.attribute if a.HasField("g")] + [g for a in node.attribute for g in a.graphs]


def _loop_trips(node: onnx.NodeProto, graph: onnx.GraphProto) -> int | None:
    """The Loop's trip count when it is a constant int64 scalar initializer the caller cannot feed, else None."""
    import numpy as np
    from onnx import numpy_helper

    name = node.input[0] if node.input else ""
    init = next((t for t in graph.initializer if t.name == name), None)
    if not name or init is None or any(i.name == name for i in graph.input) or _is_external(init):
        return None
    try:
        v = numpy_helper.to_array(init)
    except Exception:  # a malformed tensor: not a usable constant
        return None
    return int(v) if v.shape == () and v.dtype == np.int64 else None


def unbounded_control_flow(model: onnx.ModelProto) -> str | None:
    """Why a graph could run unbounded, or None. Allowed: `If` (runs one branch once) and `Loop` with a
    constant trip count of at most MAX_LOOP_TRIPS in the main graph (generate.onnx's DDIM steps), neither
    holding further subgraphs. Refused: Scan, SequenceMap, a Loop counted by a tensor or a condition
    only (its trip count is data: 2^63 hangs the process), nesting, any subgraph in a model function."""
    for f in model.functions:
        for node in f.node:
            if _subgraphs(node):
                return f"model function {f.name!r:.60} holds a {node.op_type} with a subgraph"
    for node in model.graph.node:
        subs = _subgraphs(node)
        if not subs:
            continue
        where = f"node {node.name or node.op_type!r:.60} ({node.op_type})"
        if node.op_type not in ("If", "Loop") or node.domain not in ("", "ai.onnx"):
            return f"{where} holds a subgraph; only If and a Loop of constant trip count are allowed"
        for sub in subs:
            inner = next((n for n in sub.node if _subgraphs(n)), None)
            if inner is not None:
                return f"{where} nests a {inner.op_type} with a subgraph"
        if node.op_type == "Loop":
            trips = _loop_trips(node, model.graph)
            if trips is None:
                return f"{where} has no constant trip count (an int64 scalar initializer)"
            if not 0 <= trips <= MAX_LOOP_TRIPS:
                return f"{where} runs {trips} times; at most {MAX_LOOP_TRIPS} are allowed"
    return None


def ort_skeleton(data: bytes) -> onnx.ModelProto:
    """What `unbounded_control_flow` reads, from an ORT-format graph (flatbuffers, which onnx cannot
    parse): every node's op type, domain, inputs and subgraphs, the graph inputs and the int64 scalar
    initializers (a Loop's trip count). ValueError if the bytes are not an ORT model."""
    import numpy as np
    from onnx import helper, numpy_helper
    from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs import InferenceSession

    def text(b) -> str:
        return b.decode("utf-8", "replace") if b else ""

    def graph(g, name: str) -> onnx.GraphProto:
        nodes = []
        for i in range(g.NodesLength()):
            n = g.Nodes(i)
            subs: dict[str, list] = {}
            for j in range(n.AttributesLength()):
                a = n.Attributes(j)
                found = ([a.G()] if a.G() is not None else []) + [a.Graphs(k) for k in range(a.GraphsLength())]
                if found:
                    subs[text(a.Name())] = [graph(s, f"{name}/{text(a.Name())}") for s in found]
            node = helper.make_node(text(n.OpType()), [text(n.Inputs(k)) for k in range(n.InputsLength())], [],
                                    domain=text(n.Domain()), name=text(n.Name()))
            for key, gs in subs.items():
                node.attribute.append(helper.make_attribute(key, gs[0]) if len(gs) == 1 else helper.make_attribute(key, gs))
            nodes.append(node)
        inits = []
        for i in range(g.InitializersLength()):
            t = g.Initializers(i)
            if t.DataType() == 7 and t.DimsLength() == 0 and t.RawDataLength() == 8:  # int64 scalar
                value = np.frombuffer(t.RawDataAsNumpy().tobytes(), "<i8").reshape(())
                inits.append(numpy_helper.from_array(value, text(t.Name())))
        ins = [helper.make_empty_tensor_value_info(text(g.Inputs(i))) for i in range(g.InputsLength())]
        return helper.make_graph(nodes, name, ins, [], initializer=inits)

    try:
        sess = InferenceSession.InferenceSession.GetRootAs(data, 0)
        g = sess.Model().Graph() if sess.Model() is not None else None
    except Exception as e:  # flatbuffers raise on garbage offsets
        raise ValueError(f"not an ORT-format model ({type(e).__name__})") from None
    if g is None:
        raise ValueError("not an ORT-format model (no graph)")
    return helper.make_model(graph(g, "ort"))
