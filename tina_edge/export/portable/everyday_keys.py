"""Everyday words as extra kernel keys of the text prior: "puppy" gets the dog's row (torch-free).

The prior (train/diffusion/text_prior.py) is row(e) = ridge(e) + sum_s exp((cos(e, key_s) - 1) / tau)
* residual_s, with one key per seen class name. A user who types an everyday word ("kitty", "tee",
"fridge") is usually far from the name in MiniLM, so the word gets the smooth ridge row, not the
class's own (benchmarks/everyday_words.py: 0.82-0.87 x the names' recall). This step appends the
training part of benchmarks/data/everyday_words.json (everyday_keys.json here: seen classes only,
never a held-out class nor a held-out word) as keys whose target is the class's effective row.

Double counting: a word's key near its name's key would add both residuals. The residuals are
therefore solved jointly, W R = T - ridge(K) with W_ij = exp((cos(k_i, k_j) - 1) / tau_j), so every
key (old names included) returns exactly its target row. The new keys may be wider than the names'
(tau is stored per key: the scalar prior.tau becomes a [M] vector, which Div broadcasts; no node
changes). Measured (benchmarks/notes/everyday-words.md): the listed words go from 0.83 to 0.99 x their
names' recall; other everyday words do not move at any width tried (0.01-0.3), because MiniLM puts
an everyday word as far from its class name (median cosine 0.61) as a new class's name is.

The prior's tensors are found from the initializer named `prior.tau` in whichever graph holds it
(denoiser.onnx, generate.onnx's loop body, or a separate prior graph), never by file. A bundle whose
manifest records `text_prior.everyday_keys` is left alone (converting twice is a no-op).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

TAU = "prior.tau"
WORDS_FILE = Path(__file__).with_name("everyday_keys.json")
WORD_TAU = 0.04  # width of an everyday word's key (names keep 0.01); 2-fold CV on the training words: flat 0.01-0.1


@dataclass
class PriorTensors:
    """Where the prior's kernel term lives inside one graph."""

    graph: Any  # the GraphProto holding the Div by prior.tau (a loop body or the main graph)
    emb: str  # the embedding tensor the keys are matched against
    keys: str  # initializer [D, M] (transposed keys), possibly fp16 behind a Cast
    residuals: str  # initializer [M, R]
    ridge_out: str  # the ridge row the kernel term is added to
    raw_out: str  # ridge + kernel term (the prior's raw row)


def _producers(g) -> dict[str, Any]:
    return {o: n for n in g.node for o in n.output}


def _graphs(g):
    yield g
    for n in g.node:
        for a in n.attribute:
            if a.g is not None and a.g.node:
                yield from _graphs(a.g)


def _through_cast(name: str, prod: dict[str, Any]) -> str:
    n = prod.get(name)
    return n.input[0] if n is not None and n.op_type == "Cast" else name


def find_prior(model) -> PriorTensors | None:
    """The kernel term's tensors, or None when no graph of `model` divides by prior.tau in the
    exported layout MatMul(emb, keys) - 1 -> / tau -> Exp -> MatMul(., residuals) -> Add(ridge, .)
    (any other layout is left alone: convert then adds no keys)."""
    inits = _initializers(model)
    for g in _graphs(model.graph):
        prod = _producers(g)
        cons: dict[str, list] = {}
        for n in g.node:
            for i in n.input:
                cons.setdefault(i, []).append(n)

        def one(nodes, op):
            return nodes[0] if nodes and len(nodes) == 1 and nodes[0].op_type == op else None

        div = next((n for n in g.node if n.op_type == "Div" and len(n.input) == 2 and n.input[1] == TAU), None)
        if div is None:
            continue
        sub = prod.get(div.input[0])
        mm = prod.get(sub.input[0]) if sub is not None and sub.op_type == "Sub" else None
        exp = one(cons.get(div.output[0]), "Exp")
        mm2 = one(cons.get(exp.output[0]), "MatMul") if exp is not None else None
        add = one(cons.get(mm2.output[0]), "Add") if mm2 is not None else None
        if mm is None or mm.op_type != "MatMul" or add is None or mm2.input[0] != exp.output[0]:
            return None
        keys, res = _through_cast(mm.input[1], prod), _through_cast(mm2.input[1], prod)
        if keys not in inits or res not in inits or len(inits[keys].dims) != 2 or len(inits[res].dims) != 2 \
                or inits[keys].dims[1] != inits[res].dims[0]:
            return None
        ridge = add.input[0] if add.input[1] == mm2.output[0] else add.input[1]
        return PriorTensors(g, mm.input[0], keys, res, ridge, add.output[0])
    return None


def scale_ridge_norm(model, scale: float) -> bool:
    """Multiply the ridge rows' weight norm (the zoo's norm the prior calibrates to, a scalar the
    export folded into Div(norm, Sqrt(sum w^2))) by `scale`. Keys are solved afterwards, so every key
    keeps its row and only texts away from the keys get larger rows."""
    from onnx import numpy_helper

    inits = _initializers(model)
    for g in _graphs(model.graph):
        prod = _producers(g)
        for n in g.node:
            src = prod.get(n.input[1]) if n.op_type == "Div" and len(n.input) == 2 else None
            if src is not None and src.op_type == "Sqrt" and n.input[0] in inits:
                t = inits[n.input[0]]
                v = numpy_helper.to_array(t)
                if v.size == 1:
                    t.CopyFrom(numpy_helper.from_array((v * scale).astype(v.dtype), t.name))
                    return True
    return False


def _initializers(model) -> dict[str, Any]:
    return {i.name: i for g in _graphs(model.graph) for i in g.initializer}


def prior_function(model, pt: PriorTensors) -> Callable[[np.ndarray, np.ndarray | None], tuple[np.ndarray, np.ndarray]]:
    """emb [N, D] (and optional replacement residuals) -> (ridge rows, raw rows), run by onnxruntime
    on the prior's own nodes cut out of the graph (so it is exactly what every runtime computes)."""
    import onnx
    from onnx import helper, numpy_helper

    from ...runtime.sessions import make_session

    prod = _producers(pt.graph)
    inits = _initializers(model)
    nodes, need, stack = [], set(), [pt.raw_out]
    while stack:
        t = stack.pop()
        if t in need or t == pt.emb:
            continue
        need.add(t)
        n = prod.get(t)
        if n is not None and n not in nodes:
            nodes.append(n)
            stack += [i for i in n.input if i]
    order = [n for n in pt.graph.node if n in nodes]
    used = sorted({i for n in order for i in n.input if i in inits})
    D = int(np.prod(numpy_helper.to_array(inits[pt.keys]).shape[0]))
    x = helper.make_tensor_value_info(pt.emb, onnx.TensorProto.FLOAT, ["n", D])
    outs = [helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in (pt.ridge_out, pt.raw_out)]
    opset = [o for o in model.opset_import if o.domain in ("", "ai.onnx")]

    def run(emb: np.ndarray, residuals: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        init = [inits[u] for u in used if u != pt.residuals]
        res = numpy_helper.to_array(inits[pt.residuals]) if residuals is None else residuals
        init.append(numpy_helper.from_array(np.asarray(res, numpy_helper.to_array(inits[pt.residuals]).dtype), pt.residuals))
        g = helper.make_graph(order, "prior", [x], outs, init)
        m = helper.make_model(g, opset_imports=opset, ir_version=model.ir_version)
        sess = make_session(m.SerializeToString(), 1, what="the text prior")
        ridge, raw = sess.run([pt.ridge_out, pt.raw_out], {pt.emb: np.asarray(emb, np.float32)})
        return ridge.astype(np.float64), raw.astype(np.float64)

    return run


def load_words(path: str | Path = WORDS_FILE) -> dict[str, list[str]]:
    """{class: [training words]}; empty when the file is not installed (convert then adds no keys)."""
    path = Path(path)
    return json.loads(path.read_text(encoding="utf-8"))["words"] if path.is_file() else {}


def solve_keys(prior, keys: np.ndarray, taus: np.ndarray, targets: np.ndarray, ridge_l2: float = 1e-6) -> np.ndarray:
    """Residuals R with ridge(k_i) + sum_j exp((cos(k_i, k_j) - 1) / tau_j) R_j = target_i for every key i."""
    ridge, _ = prior(keys)  # the ridge row does not depend on the residuals
    W = np.exp((keys @ keys.T - 1.0) / taus[None, :])
    return np.linalg.solve(W + ridge_l2 * np.eye(len(W)), targets - ridge)


def add_everyday_keys(model, encode: Callable[[list[str]], np.ndarray], words: dict[str, list[str]],
                      class_names: list[str], tau: float = WORD_TAU, name_tau: float | None = None,
                      norm_scale: float = 1.0) -> int:
    """Append the words' keys to `model`'s prior in place; returns how many keys were added (0: none).

    `class_names` are the seen classes whose names are the prior's keys (bundle order is not assumed:
    each word's class is matched to the key its name encodes to, cosine >= 0.98: the keys were encoded by
    the training encoder, the runtime's int8 one gives 0.994-0.999)."""
    from onnx import numpy_helper

    pt = find_prior(model)
    if pt is None:
        return 0
    inits = _initializers(model)
    keys_t = inits[pt.keys]
    old = numpy_helper.to_array(keys_t).astype(np.float64).T  # [M, D]
    tau_old = numpy_helper.to_array(inits[TAU]).astype(np.float64).reshape(-1)
    if len(tau_old) != 1:
        return 0  # already per-key: rewritten before
    named = [c for c in class_names if words.get(c)]
    if not named:
        return 0
    e_names = np.asarray(encode(named), np.float64)
    if e_names.shape[1] != old.shape[1]:
        return 0  # another encoder than the prior's
    match = (e_names / np.linalg.norm(e_names, axis=1, keepdims=True)) @ (old / np.linalg.norm(old, axis=1, keepdims=True)).T
    texts, owner = [], []
    for c, row in zip(named, match):
        if row.max() >= 0.98:
            for w in words[c]:
                texts.append(w)
                owner.append(int(row.argmax()))
    if not texts:
        return 0
    _, eff = prior_function(model, pt)(old.astype(np.float32))  # every seen name's row, as the bundle has it now
    new = np.asarray(encode(texts), np.float64)
    new /= np.linalg.norm(new, axis=1, keepdims=True)
    if norm_scale != 1.0:
        scale_ridge_norm(model, norm_scale)
    prior = prior_function(model, pt)
    kdt = numpy_helper.to_array(keys_t).dtype
    keys = np.concatenate([old, new]).astype(kdt).astype(np.float64)  # solve with the keys the graph will hold
    taus = np.concatenate([np.full(len(old), tau_old[0] if name_tau is None else name_tau), np.full(len(new), tau)])
    res = solve_keys(prior, keys.astype(np.float32), taus, np.concatenate([eff, eff[owner]]))
    rdt = numpy_helper.to_array(inits[pt.residuals]).dtype
    keys_t.CopyFrom(numpy_helper.from_array(keys.T.astype(kdt), pt.keys))
    inits[pt.residuals].CopyFrom(numpy_helper.from_array(res.astype(rdt), pt.residuals))
    inits[TAU].CopyFrom(numpy_helper.from_array(taus.astype(np.float32), TAU))
    return len(texts)


def bundle_encoder(root: Path, m) -> Callable[[list[str]], np.ndarray]:
    """The bundle's own text encoder (as the runtime builds it), one text at a time."""
    from ...runtime.text_encoder import TextEncoderSession
    from ...runtime.tokenizer import Tokenizer

    te = m.text_encoder
    tok = Tokenizer.from_bytes((root / te.tokenizer).read_bytes(), max_tokens=te.max_tokens, cleaning=te.cleaning,
                               pad_id=te.pad_id, what=te.tokenizer)
    enc = TextEncoderSession(str(root / te.model), tok, threads=1, what=te.model)
    return lambda texts: np.asarray(enc.encode(list(texts)), np.float32)


def apply_to_bundle(root: str | Path, m, words: dict[str, list[str]] | None = None, tau: float = WORD_TAU,
                    norm_scale: float = 1.0) -> int:
    """Add the everyday keys to every graph file of the bundle that holds the prior (denoiser.onnx,
    and any other graph named in the manifest's files); records the count in training.text_prior.
    Returns the keys added (0: no kernel prior, no matching class, or done before)."""
    import onnx

    from ...runtime.atomic import atomic_save_onnx

    root = Path(root)
    tp = m.training.text_prior if m.training is not None else None
    if not tp or tp.get("everyday_keys") or not m.training.classes:
        return 0
    hold = set(m.training.holdout_classes or [])
    seen = [c for c in m.training.classes if c not in hold]
    words = load_words() if words is None else words
    words = {c: ws for c, ws in words.items() if c in seen}
    encode, added = None, 0
    for name in sorted(m.files):
        if not name.endswith(".onnx") or name in (m.text_encoder.model, m.template.model):
            continue
        model = onnx.load(str(root / name))
        if find_prior(model) is None:
            continue
        encode = encode or bundle_encoder(root, m)
        n = add_everyday_keys(model, encode, words, seen, tau, norm_scale=norm_scale)
        if n:
            atomic_save_onnx(root / name, model)
            added = n
    if added:
        tp["everyday_keys"] = {"keys": added, "tau": tau, "norm_scale": norm_scale,
                               "words": "export/portable/everyday_keys.json"}
    return added
