"""Everyday words as text-prior keys (export/portable/everyday_keys.py), on small real graphs.

The graph below has the exported prior's node structure (train/diffusion/text_prior.py through
export/graphs.py: float16 keys and maps behind Casts, the calibration folded into a scalar Div).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tina_edge.export.portable import everyday_keys as ek
from tina_edge.runtime.sessions import make_session

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "tina_edge" / "bundles" / "default"
D, KK, R = 8, 6, 5  # embedding, kernel features, row (4 weights + bias)


def unit(v) -> np.ndarray:
    v = np.asarray(v, np.float64)
    return (v / np.linalg.norm(v)).astype(np.float32)


def embeddings() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    e = {n: unit(rng.normal(size=D)) for n in ("cat", "dog", "car", "other")}
    e["kitty"] = unit(0.7 * e["cat"] + 0.71 * unit(rng.normal(size=D)))  # far from its name (cos ~0.7)
    e["cat-ish"] = unit(e["cat"] + 0.33 * unit(rng.normal(size=D)))  # right next to it (cos ~0.95)
    return e


def prior_graph(e: dict[str, np.ndarray]) -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    f16 = lambda a, n: numpy_helper.from_array(np.asarray(a, np.float16), n)  # noqa: E731
    f32 = lambda a, n: numpy_helper.from_array(np.asarray(a, np.float32), n)  # noqa: E731
    names = ["cat", "dog", "car"]
    keys = np.stack([e[n] for n in names])
    rows = rng.normal(size=(3, R)).astype(np.float32)
    is_w = np.array([1, 1, 1, 1, 0], np.float32)
    inits = [f16(np.stack([unit(rng.normal(size=D)) for _ in range(KK)]).T, "kk_fp16"), f32([6.0], "prior.gamma"),
             f16(rng.normal(size=(KK, R)), "coef_fp16"), f32(rng.normal(size=R) * 0.1, "prior.offset"),
             f32(np.zeros(R), "prior.center"), f32(is_w, "prior.is_weight"), f32([2.0], "wnorm"), f32([1e-12], "eps"),
             f32([0, 0, 0, 0, -0.5], "bias_part"), f16(keys.T, "keys_fp16"), f32([1.0], "one"),
             f32([0.01], "prior.tau"), f32(np.zeros(R), "prior.norm_mean"), f32(np.ones(R), "prior.norm_std"),
             numpy_helper.from_array(np.array([-1], np.int64), "axes")]
    N = helper.make_node
    nodes = [N("Cast", ["kk_fp16"], ["kk"], to=TensorProto.FLOAT), N("MatMul", ["class_emb", "kk"], ["a"]),
             N("Sub", ["a", "one"], ["b"]), N("Mul", ["prior.gamma", "b"], ["c"]), N("Exp", ["c"], ["f"]),
             N("Cast", ["coef_fp16"], ["coef"], to=TensorProto.FLOAT), N("MatMul", ["f", "coef"], ["g"]),
             N("Add", ["g", "prior.offset"], ["h"]), N("Sub", ["h", "prior.center"], ["i"]),
             N("Mul", ["i", "prior.is_weight"], ["w"]), N("Mul", ["w", "w"], ["w2"]),
             N("ReduceSum", ["w2", "axes"], ["s"], keepdims=1), N("Add", ["s", "eps"], ["s2"]), N("Sqrt", ["s2"], ["sq"]),
             N("Div", ["wnorm", "sq"], ["scale"]), N("Mul", ["w", "scale"], ["ws"]), N("Add", ["ws", "prior.center"], ["wc"]),
             N("Mul", ["prior.is_weight", "wc"], ["wr"]), N("Add", ["wr", "bias_part"], ["ridge"]),
             N("Cast", ["keys_fp16"], ["keys"], to=TensorProto.FLOAT), N("MatMul", ["class_emb", "keys"], ["k1"]),
             N("Sub", ["k1", "one"], ["k2"]), N("Div", ["k2", "prior.tau"], ["k3"]), N("Exp", ["k3"], ["k4"]),
             N("Cast", ["res_fp16"], ["res"], to=TensorProto.FLOAT), N("MatMul", ["k4", "res"], ["k5"]),
             N("Add", ["ridge", "k5"], ["raw"]), N("Sub", ["raw", "prior.norm_mean"], ["n1"]),
             N("Div", ["n1", "prior.norm_std"], ["out"])]
    g = helper.make_graph(nodes, "prior", [helper.make_tensor_value_info("class_emb", TensorProto.FLOAT, ["n", D])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", R])],
                          inits + [f16(np.zeros((3, R)), "res_fp16")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    # the residuals make each name's row its "zoo row", as load_keys does at training
    pt = ek.find_prior(m)
    ridge, _ = ek.prior_function(m, pt)(keys)
    m.graph.initializer[-1].CopyFrom(f16(rows - ridge, "res_fp16"))
    return m


def run(m: onnx.ModelProto, e: np.ndarray) -> np.ndarray:
    sess = make_session(m.SerializeToString(), 1, what="test prior")
    return sess.run(["out"], {"class_emb": np.atleast_2d(e).astype(np.float32)})[0]


@pytest.fixture()
def setup():
    e = embeddings()
    return e, prior_graph(e), (lambda texts: np.stack([e[t] for t in texts]))


def test_a_word_key_gives_the_word_its_class_row_and_leaves_names_and_far_texts_alone(setup):
    e, m, encode = setup
    before = {t: run(m, e[t])[0] for t in e}
    assert np.abs(before["kitty"] - before["cat"]).max() > 0.1  # far from its name: the ridge row, not the cat's
    added = ek.add_everyday_keys(m, encode, {"cat": ["kitty"], "unknown class": ["x"]}, ["cat", "dog", "car"])
    assert added == 1
    after = {t: run(m, e[t])[0] for t in e}
    np.testing.assert_allclose(after["kitty"], before["cat"], atol=1e-2)
    for t in ("cat", "dog", "car", "other"):
        np.testing.assert_allclose(after[t], before[t], atol=1e-2)
    tau = numpy_helper.to_array(next(i for i in m.graph.initializer if i.name == "prior.tau"))
    assert tau.shape == (4,) and tau[0] == np.float32(0.01) and tau[-1] == np.float32(ek.WORD_TAU)


def test_a_key_next_to_its_name_does_not_count_the_name_twice(setup):
    e, m, encode = setup
    cat = run(m, e["cat"])[0]
    ek.add_everyday_keys(m, encode, {"cat": ["cat-ish"]}, ["cat", "dog", "car"], tau=0.1)
    # at tau 0.1 the two keys weigh ~0.6 on each other; the joint solve keeps both rows exact
    np.testing.assert_allclose(run(m, e["cat"])[0], cat, atol=1e-2)
    np.testing.assert_allclose(run(m, e["cat-ish"])[0], cat, atol=1e-2)


def test_rewriting_twice_or_a_graph_without_the_prior_changes_nothing(setup):
    e, m, encode = setup
    assert ek.add_everyday_keys(m, encode, {"cat": ["kitty"]}, ["cat", "dog", "car"]) == 1
    once = m.SerializeToString()
    assert ek.add_everyday_keys(m, encode, {"cat": ["kitty"]}, ["cat", "dog", "car"]) == 0
    assert m.SerializeToString() == once
    plain = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                                                [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                                                [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])]))
    b = plain.SerializeToString()
    assert ek.find_prior(plain) is None
    assert ek.add_everyday_keys(plain, encode, {"cat": ["kitty"]}, ["cat"]) == 0 and plain.SerializeToString() == b


def test_the_prior_is_found_by_name_in_the_shipped_prior_graph():
    """The shipped default is split (prior.onnx): its keys are the 177 training classes and the shipped
    everyday words; the denoiser and generate.onnx read the rows as an input and hold no prior."""
    m = onnx.load(str(DEFAULT / "prior.onnx"))
    pt = ek.find_prior(m)
    assert pt is not None and pt.graph is m.graph
    inits = {i.name: i for g in ek._graphs(m.graph) for i in g.initializer}
    words = sum(len(ws) for ws in ek.load_words().values())
    assert list(inits[pt.keys].dims) == [384, 177 + words] and list(inits[pt.residuals].dims) == [177 + words, 1281]
    ridge, raw = ek.prior_function(m, pt)(numpy_helper.to_array(inits[pt.keys]).astype(np.float32).T[:3])
    assert ridge.shape == raw.shape == (3, 1281) and np.abs(raw - ridge).max() > 0.05  # the names' own residuals
    for name in ("denoiser.onnx", "generate.onnx"):
        assert ek.find_prior(onnx.load(str(DEFAULT / name))) is None, name


def test_the_shipped_words_are_the_training_part_of_seen_classes_only():
    keys = ek.load_words()
    data = json.loads((ROOT / "benchmarks/data/everyday_words.json").read_text())["classes"]
    man = json.loads((DEFAULT / "manifest.json").read_text())["training"]
    hold = set(man["holdout_classes"])
    held_words = {w["word"].casefold() for c in data for w in c["heldout"]}
    assert keys and not set(keys) & hold and set(keys) <= set(man["classes"])
    assert not {w.casefold() for ws in keys.values() for w in ws} & (held_words | {h.casefold() for h in hold})
    assert keys == {c["class"]: [w["word"] for w in c["train"]] for c in data if c["train"] and not c["holdout_class"]}


@pytest.mark.slow
def test_convert_adds_the_keys_once_and_the_bundle_still_personalizes(tmp_path):
    from tina_edge.export.portable.generate import add_portable_files
    from tina_edge.runtime import Personalizer
    from tina_edge.runtime.manifest import read_manifest

    b = tmp_path / "b"
    shutil.copytree(DEFAULT, b)
    m = add_portable_files(b)
    rec = m.training.text_prior["everyday_keys"]
    assert rec["keys"] == sum(len(v) for v in ek.load_words().values())
    p = Personalizer.from_bundle(b, threads=1)
    assert m.portable.prior_model == "prior.onnx"  # the keys went in before the prior was cut out
    for name in ("prior.onnx",):
        g = onnx.load(str(b / name))
        prior = ek.prior_function(g, ek.find_prior(g))
        _, raw = prior(p.encode(["cat", "kitty", "refrigerator", "icebox"]))
        # a training word's prior row is its class's row (the name's own row at the runtime's encoding)
        assert np.corrcoef(raw[0, :-1], raw[1, :-1])[0, 1] > 0.97, name
        assert np.corrcoef(raw[2, :-1], raw[3, :-1])[0, 1] > 0.97, name
    clf = p.personalize(["kitty", "dog", "refrigerator"], seed=0)
    assert clf.params["fc.weight"].shape == (3, 1280)
    before = (b / "prior.onnx").read_bytes(), (b / "denoiser.onnx").read_bytes()
    add_portable_files(b)  # converting again leaves the keys as they are
    assert ((b / "prior.onnx").read_bytes(), (b / "denoiser.onnx").read_bytes()) == before
    assert read_manifest(b).training.text_prior["everyday_keys"] == rec


def test_a_graph_dividing_by_prior_tau_in_another_layout_is_left_alone(setup):
    e, m, encode = setup
    g = m.graph
    div = next(n for n in g.node if n.op_type == "Div" and n.input[1] == "prior.tau")
    div.input[0] = "class_emb"  # no MatMul(emb, keys) - 1 before it any more
    b = m.SerializeToString()
    assert ek.find_prior(m) is None
    assert ek.add_everyday_keys(m, encode, {"cat": ["kitty"]}, ["cat", "dog", "car"]) == 0
    assert m.SerializeToString() == b


def test_words_of_another_encoder_or_a_missing_words_file_add_nothing(setup, tmp_path):
    e, m, encode = setup
    assert ek.load_words(tmp_path / "absent.json") == {}
    wide = lambda texts: np.ones((len(texts), D + 1), np.float32)  # noqa: E731
    assert ek.add_everyday_keys(m, wide, {"cat": ["kitty"]}, ["cat", "dog", "car"]) == 0
