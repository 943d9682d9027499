"""Dynamic int8 -> weight-only int8: the same int8 weights, float activations (no torch).

onnxruntime's dynamic quantization quantizes every MatMul's *activations* at run time with a
per-tensor scale taken from the batch (DynamicQuantizeLinear), so a class name's embedding depends
on the other texts in the batch and on padding, and integer kernels round differently on x86,
ARM and WebAssembly: the browser's parameters differed from Python's by 1.3e-4 on the default
bundle. Rewriting each DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul(scales) chain as
(Cast(int8 weight) - zero point) * scale -> MatMul keeps the file size (weights stay int8) and
makes the encoder a float graph whose outputs agree across platforms to float rounding.

Plain Cast/Sub/Mul rather than DequantizeLinear: onnxruntime's "extended" level fuses
DequantizeLinear -> MatMul into MatMulNBits, which quantizes the activations again (to int8 on
x86 and differently in WebAssembly: 5e-3 apart); Cast/Mul of initializers is constant-folded
into an ordinary float MatMul instead.
"""

from __future__ import annotations

from collections import Counter


def _consumers(graph, name: str) -> list:
    return [n for n in graph.node if name in n.input]


def dynamic_int8_to_weight_only(model) -> int:
    """Rewrite `model` (onnx.ModelProto) in place; returns how many MatMuls were rewritten."""
    from onnx import TensorProto, helper

    g = model.graph
    inits = {i.name for i in g.initializer}
    prod = {o: n for n in g.node for o in n.output}
    drop: set[int] = set()
    new_nodes: dict[int, list] = {}
    count = 0
    for idx, n in enumerate(g.node):
        if n.op_type != "MatMulInteger" or len(n.input) != 4 or n.input[1] not in inits:
            continue
        dql = prod.get(n.input[0])
        casts = _consumers(g, n.output[0])
        if dql is None or dql.op_type != "DynamicQuantizeLinear" or len(casts) != 1 or casts[0].op_type != "Cast":
            continue
        muls = _consumers(g, casts[0].output[0])
        if len(muls) != 1 or muls[0].op_type != "Mul":
            continue
        mul = muls[0]
        scale_name = mul.input[1] if mul.input[0] == casts[0].output[0] else mul.input[0]
        smul = prod.get(scale_name)
        if smul is None or smul.op_type != "Mul":
            continue
        w_scale = [x for x in smul.input if x in inits]
        if len(w_scale) != 1:
            continue
        w = n.input[1]
        w_f = w + "_dequantized"
        nodes = [helper.make_node("Cast", [w], [w + "_f"], to=TensorProto.FLOAT, name=n.name + "_wcast"),
                 helper.make_node("Cast", [n.input[3]], [w + "_zp_f"], to=TensorProto.FLOAT, name=n.name + "_zpcast"),
                 helper.make_node("Sub", [w + "_f", w + "_zp_f"], [w + "_centred"], name=n.name + "_wsub"),
                 helper.make_node("Mul", [w + "_centred", w_scale[0]], [w_f], name=n.name + "_wscale"),
                 helper.make_node("MatMul", [dql.input[0], w_f], [mul.output[0]], name=n.name + "_float")]
        new_nodes[idx] = nodes
        for node in (casts[0], mul):
            drop.add(id(node))
        drop.add(id(n))
        count += 1
    if not count:
        return 0
    out = []
    for idx, n in enumerate(g.node):
        if idx in new_nodes:
            out.extend(new_nodes[idx])
        elif id(n) not in drop:
            out.append(n)
    # dead code: scale products, DynamicQuantizeLinear nodes and initializers nobody reads any more
    graph_outputs = {o.name for o in g.output}
    while True:
        used = Counter(x for node in out for x in node.input)
        keep = [node for node in out if any(o in graph_outputs or used[o] for o in node.output)]
        if len(keep) == len(out):
            break
        out = keep
    del g.node[:]
    g.node.extend(out)
    used = {x for node in g.node for x in node.input} | graph_outputs
    live = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(live)
    del g.value_info[:]
    return count
