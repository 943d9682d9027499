"""Dynamic int8 -> weight-only int8: the same int8 weights, float activations (no torch).

onnxruntime's dynamic quantization quantizes every MatMul's *activations* at run time with a
per-tensor scale taken from the batch (DynamicQuantizeLinear), so a class name's embedding depends
on the other texts in the batch and on padding, and integer kernels round differently on x86,
ARM and WebAssembly: the browser's parameters differed from Python's by 1.3e-4 on the default
bundle. Each DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul(scales) chain becomes

    MatMul(x, Cast(W_int8 -> float)) * w_scale        (- zero point before the MatMul when it is not 0)

which keeps the file size (weights stay int8) and makes the encoder a float graph whose outputs
agree across platforms to float rounding. Why this form and no other (measured on the MiniLM,
BENCHMARKS.md §10.4):

- No DequantizeLinear: onnxruntime's "extended" level (Python, node, web, and the ORT-format
  converter) fuses DequantizeLinear -> MatMul into MatMulNBits, which quantizes the activations
  again (4.7e-3 off; x86 and WebAssembly differ) unless every runtime sets session.disable_quant_qdq.
- One constant-folded tensor per weight: onnxruntime folds Cast(W) into a float initializer when
  the session is created, so the encoder runs at float speed (keeping W int8 and dequantizing on
  every run took 2.4x longer per name; MatMulNBits with float accumulation 6x). The form exported
  before, (Cast(W) - Cast(zp)) * scale -> MatMul, folded three full-size float tensors per weight,
  all alive until the graph was cleaned: creating the session peaked at +125 MiB instead of +70.
  `dynamic_int8_to_weight_only` rewrites that older form too, so existing bundles can be converted.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass


@dataclass
class _Product:
    """One int8-weight MatMul found in the graph: what replaces `anchor`, and what goes with it."""

    anchor: object  # the node whose place the new nodes take
    drop: list  # nodes removed with it (the rest of the old chain is pruned as dead code)
    x: str  # float activations
    weight: str  # int8 initializer [K, N]
    zero_point: str  # initializer, or "" when absent
    scale: str  # float initializer (per-tensor)
    output: str  # the float product the rest of the graph reads
    name: str


def _index(graph) -> tuple[dict, dict, dict]:
    inits = {i.name: i for i in graph.initializer}
    prod = {o: n for n in graph.node for o in n.output}
    cons: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            cons.setdefault(i, []).append(n)
    return inits, prod, cons


def _only(nodes: list | None, op_type: str):
    """The single consumer of a tensor when it is an `op_type` node, else None."""
    return nodes[0] if nodes and len(nodes) == 1 and nodes[0].op_type == op_type else None


def _match_dynamic(n, inits, prod, cons) -> _Product | None:
    """DynamicQuantizeLinear(x) -> MatMulInteger(., W) -> Cast -> Mul(., x_scale * w_scale)."""
    if n.op_type != "MatMulInteger" or len(n.input) != 4 or n.input[1] not in inits:
        return None
    dql = prod.get(n.input[0])
    cast = _only(cons.get(n.output[0]), "Cast")
    mul = _only(cons.get(cast.output[0]), "Mul") if cast is not None else None
    if dql is None or dql.op_type != "DynamicQuantizeLinear" or mul is None:
        return None
    smul = prod.get(mul.input[1] if mul.input[0] == cast.output[0] else mul.input[0])
    w_scale = [x for x in smul.input if x in inits] if smul is not None and smul.op_type == "Mul" else []
    if len(w_scale) != 1:
        return None
    return _Product(n, [cast, mul], dql.input[0], n.input[1], n.input[3], w_scale[0], mul.output[0], n.name)


def _match_cast_sub_mul(n, inits, prod, cons) -> _Product | None:
    """MatMul(x, (Cast(W) - Cast(zp)) * scale): the weight-only form exported before (see module doc)."""
    if n.op_type != "MatMul" or len(cons.get(n.input[1], [])) != 1:
        return None
    mul = prod.get(n.input[1])
    if mul is None or mul.op_type != "Mul" or mul.input[1] not in inits:
        return None
    sub = prod.get(mul.input[0])
    if sub is None or sub.op_type != "Sub":
        return None
    cw, cz = prod.get(sub.input[0]), prod.get(sub.input[1])
    if not (cw is not None and cz is not None and cw.op_type == cz.op_type == "Cast"
            and cw.input[0] in inits and cz.input[0] in inits):
        return None
    if any(len(cons.get(t, [])) != 1 for t in (mul.output[0], sub.output[0], cw.output[0])):
        return None
    name = n.name[: -len("_float")] if n.name.endswith("_float") else n.name
    return _Product(n, [mul, sub, cw, cz], n.input[0], cw.input[0], cz.input[0], mul.input[1], n.output[0], name)


def _nonzero(inits, name: str) -> bool:
    from onnx import numpy_helper

    return bool(name) and bool(numpy_helper.to_array(inits[name]).any())


def _weight_only_nodes(p: _Product, inits) -> list:
    """MatMul(x, Cast(W)) * scale; the zero point is subtracted (exactly, in float) only when non-zero."""
    from onnx import TensorProto, helper

    w = f"{p.weight}_as_float"
    nodes = [helper.make_node("Cast", [p.weight], [w], to=TensorProto.FLOAT, name=f"{p.name}_wcast")]
    if _nonzero(inits, p.zero_point):
        nodes += [helper.make_node("Cast", [p.zero_point], [f"{p.zero_point}_as_float"], to=TensorProto.FLOAT,
                                   name=f"{p.name}_zpcast"),
                  helper.make_node("Sub", [w, f"{p.zero_point}_as_float"], [f"{p.weight}_centred"], name=f"{p.name}_wsub")]
        w = f"{p.weight}_centred"
    return nodes + [helper.make_node("MatMul", [p.x, w], [f"{p.output}_unscaled"], name=f"{p.name}_float"),
                    helper.make_node("Mul", [f"{p.output}_unscaled", p.scale], [p.output], name=f"{p.name}_wscale")]


def _prune(graph) -> None:
    """Drop nodes and initializers nobody reads any more (scale products, DynamicQuantizeLinear)."""
    graph_outputs = {o.name for o in graph.output}
    out = list(graph.node)
    while True:
        used = Counter(x for node in out for x in node.input)
        keep = [node for node in out if any(o in graph_outputs or used[o] for o in node.output)]
        if len(keep) == len(out):
            break
        out = keep
    del graph.node[:]
    graph.node.extend(out)
    used = {x for node in graph.node for x in node.input} | graph_outputs
    live = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(live)
    del graph.value_info[:]


def dynamic_int8_to_weight_only(model) -> int:
    """Rewrite `model` (onnx.ModelProto) in place; returns how many MatMuls were rewritten (0: none found).

    Rewrites onnxruntime's dynamic-int8 chains and the Cast/Sub/Mul weight-only form of earlier
    exports; a graph already in the current form is left as it is.
    """
    g = model.graph
    inits, prod, cons = _index(g)
    found = [p for n in g.node if (p := _match_dynamic(n, inits, prod, cons) or _match_cast_sub_mul(n, inits, prod, cons))]
    if not found:
        return 0
    new = {id(p.anchor): _weight_only_nodes(p, inits) for p in found}
    drop = {id(d) for p in found for d in p.drop}
    out = []
    for n in g.node:
        if id(n) in new:
            out.extend(new[id(n)])
        elif id(n) not in drop:
            out.append(n)
    del g.node[:]
    g.node.extend(out)
    _prune(g)
    return len(found)


def store_as_fp16(graph, select) -> int:
    """Replace every float32 initializer for which `select(name, array)` holds by a float16 copy read
    through a Cast back to float32 (same tensor name for the rest of the graph); returns bytes saved.

    The one writer of this form: export/graphs.py stores exact-float16 prior buffers with it,
    `float_matmul_weights_to_fp16` the float32 MatMul weights int8 leaves, and small_storage.py the
    float32 weights of the denoiser and the template's trunk (`tina-edge convert`). onnxruntime folds each Cast
    into a float tensor when the session is created.
    """
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    saved, keep, casts = 0, [], []
    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT:
            a = numpy_helper.to_array(init)
            if np.isfinite(a).all() and np.abs(a).max(initial=0.0) <= 65504 and select(init.name, a):
                keep.append(numpy_helper.from_array(a.astype(np.float16), init.name + "_fp16"))
                casts.append(helper.make_node("Cast", [init.name + "_fp16"], [init.name], to=TensorProto.FLOAT,
                                              name=init.name + "_cast_fp16"))
                saved += a.nbytes - a.nbytes // 2
                continue
        keep.append(init)
    if casts:
        del graph.initializer[:]
        graph.initializer.extend(keep)
        nodes = casts + list(graph.node)
        del graph.node[:]
        graph.node.extend(nodes)
    return saved


def float_matmul_weights_to_fp16(model, min_elements: int = 65536) -> int:
    """Store the float32 weight of every large MatMul(x, W) as float16 + Cast; returns the bytes saved.

    Why: the int8 export leaves MiniLM's FFN down-projections in float32 (their GELU outliers do not
    survive int8, see export/text_encoder.py), and those six 1536x384 matrices are 14 MB of the
    33 MB encoder. float16 keeps 11 bits of mantissa (relative rounding 2^-12): the embeddings move by
    about 1e-4 (cosine to float32 unchanged at 5 digits, BENCHMARKS §13), and onnxruntime folds the
    Cast into a float tensor when the session is created, so speed is unchanged. Weights already
    int8 or float16 are left alone; Python, node and the browser run the same graph.
    """
    g = model.graph
    weights = {n.input[1] for n in g.node if n.op_type == "MatMul" and len(n.input) > 1}
    return store_as_fp16(g, lambda name, a: name in weights and a.size >= min_elements)
