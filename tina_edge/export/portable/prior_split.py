"""The text prior as its own graph: computed once per personalize, not once per denoiser step.

The exported denoiser holds the text prior (train/diffusion/text_prior.py, the module `prior` of
the RowTokenDenoiser, so its nodes are named "/prior/..."): class_emb -> prior rows in the
denoiser's normalised space. It depends on the class embeddings only, yet ran inside every step
(~5 of the ~16 ms of a warm 10-class personalize), and its fp16 kernel keys and coefficients
(~6 MB) were stored in both denoiser.onnx and generate.onnx.

`split_prior(denoiser)` cuts the graph at the prior's one output tensor, by name, with no torch:
the prior graph keeps every node that tensor needs (class_emb [B, K, D] -> prior [B, K, R]), the
denoiser keeps every node its output needs with that tensor fed as the graph input `prior`. The
same nodes run on the same values, so the outputs are bit-identical to the unsplit graph's.
A denoiser without a "/prior/" scope, one already split, or one whose prior rows are not float32
(a float16-converted denoiser) is left alone (None): the bundle keeps the prior inside its denoiser.
"""

from __future__ import annotations

from typing import Any

from ...runtime.contracts import BATCH, CLASS_EMB, CONTRACTS, PRIOR, input_names, output_names
from ...runtime.errors import BundleError

PRIOR_SCOPE = "/prior/"  # torch.onnx names the nodes of the denoiser's `prior` module so


def _producers(graph) -> dict[str, Any]:
    return {o: n for n in graph.node for o in n.output if o}


def _needed(graph, targets: list[str], stop: set[str]) -> list[int]:
    """Indices (graph order) of the nodes `targets` need, not looking past the names in `stop`."""
    prod = {o: i for i, n in enumerate(graph.node) for o in n.output if o}
    seen: set[int] = set()
    todo = [t for t in targets if t not in stop]
    while todo:
        i = prod.get(todo.pop())
        if i is None or i in seen:
            continue
        seen.add(i)
        todo.extend(v for v in graph.node[i].input if v and v not in stop)
    return sorted(seen)


def prior_cut(graph) -> str | None:
    """The prior's one output tensor (made in the "/prior/" scope, read outside it), None without a prior."""
    inside = [n for n in graph.node if n.name.startswith(PRIOR_SCOPE)]
    if not inside:
        return None
    made = {o for n in inside for o in n.output if o}
    read = {v for n in graph.node if not n.name.startswith(PRIOR_SCOPE) for v in n.input}
    read |= {o.name for o in graph.output}
    cut = sorted(made & read)
    if len(cut) != 1:
        raise BundleError(f"the denoiser's text prior has {len(cut)} outputs read outside it ({cut[:4]}); "
                          "it cannot be split into its own graph (convert with an unchanged denoiser)")
    return cut[0]


def _topological(graph, nodes: list[int]) -> list[int]:
    """`nodes` in an order where every value is made before it is read (graph order where it allows):
    onnxruntime runs graphs stored out of order (e.g. float16 conversion appends its input Casts), onnx's checker does not."""
    made = {o: i for i in nodes for o in graph.node[i].output if o}
    deps = {i: {made[v] for v in graph.node[i].input if v in made and made[v] != i} for i in nodes}
    out: list[int] = []
    done: set[int] = set()
    while len(out) < len(nodes):
        ready = [i for i in nodes if i not in done and deps[i] <= done]
        if not ready:
            raise BundleError("the denoiser graph has a cycle; its prior cannot be split")
        out.append(ready[0])
        done.add(ready[0])
    return out


def _sub_model(model, nodes: list[int], inputs: list, outputs: list, rename: dict[str, str], name: str):
    """A model of `nodes` (made topological) with the initializers they read, `inputs`/`outputs` value infos."""
    import onnx
    from onnx import helper

    g = model.graph
    kept = []
    for i in _topological(g, nodes):
        c = onnx.NodeProto()
        c.CopyFrom(g.node[i])
        c.input[:] = [rename.get(v, v) for v in c.input]
        c.output[:] = [rename.get(v, v) for v in c.output]
        kept.append(c)
    read = {v for n in kept for v in n.input}
    inits = [t for t in g.initializer if t.name in read]
    graph = helper.make_graph(kept, name, inputs, outputs, initializer=inits)
    out = helper.make_model(graph, opset_imports=list(model.opset_import), producer_name=model.producer_name)
    out.ir_version = model.ir_version
    for p in model.metadata_props:
        out.metadata_props.add().CopyFrom(p)
    onnx.checker.check_model(out)
    return out


def split_prior(denoiser) -> tuple[Any, Any] | None:
    """(prior model, denoiser taking `prior` as an input) cut from `denoiser`; None when it has no
    prior to split (no "/prior/" scope, or already a `prior` input)."""
    from onnx import TensorProto, helper

    g = denoiser.graph
    if PRIOR in {i.name for i in g.input}:
        return None
    cut = prior_cut(g)
    if cut is None:
        return None
    inits = {t.name for t in g.initializer}
    graph_inputs = {i.name: i for i in g.input if i.name not in inits}
    prior_nodes = _needed(g, [cut], inits)
    reads = {v for i in prior_nodes for v in g.node[i].input} & set(graph_inputs)
    if reads != {CLASS_EMB}:
        raise BundleError(f"the denoiser's text prior reads {sorted(reads)}, not class_emb alone; "
                          "it cannot be computed once per personalize")
    elem, shape = _cut_type(denoiser, cut)
    if elem != TensorProto.FLOAT:  # e.g. a float16-converted denoiser: the contract's prior rows are float32
        return None
    prior_out = helper.make_tensor_value_info(PRIOR, TensorProto.FLOAT, shape)
    prior = _sub_model(denoiser, prior_nodes, [graph_inputs[CLASS_EMB]], [prior_out], {cut: PRIOR}, "tina_prior")
    outs = [o.name for o in g.output]
    den_nodes = _needed(g, outs, inits | {cut})
    ins = [graph_inputs[n] for n in input_names("denoiser")] + [prior_out]
    den = _sub_model(denoiser, den_nodes, ins, list(g.output), {cut: PRIOR}, g.name or "tina_denoiser")
    _check_roles(prior, den)
    return prior, den


def _cut_type(model, cut: str) -> tuple[int, list]:
    """(element type, [batch, K, R]) of the cut tensor from onnx shape inference (unknown axes left
    symbolic; an uninferred tensor is taken as float32)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    for vi in inferred.graph.value_info:
        if vi.name == cut:
            t = vi.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
            return t.elem_type or onnx.TensorProto.FLOAT, [BATCH] + dims[1:] if dims else [BATCH, None, None]
    return onnx.TensorProto.FLOAT, [BATCH, None, None]


def _check_roles(prior, den) -> None:
    """Both graphs expose exactly their contract's inputs and outputs, in contract order."""
    for model, role in ((prior, "prior"), (den, "denoiser_on_prior")):
        ins = [i.name for i in model.graph.input]
        outs = [o.name for o in model.graph.output]
        if ins != input_names(role) or outs != output_names(role):
            raise BundleError(f"the split {role} graph has inputs {ins} and outputs {outs}, "
                              f"not the contract's {list(CONTRACTS[role][0])} -> {list(CONTRACTS[role][1])}")
