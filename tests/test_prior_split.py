"""The text prior as its own graph (issue 22, item 4): `tina-edge convert` cuts it out of the
denoiser (export/portable/prior_split.py) and every output stays bit-identical.

The shipped default bundle is split already; the tests rebuild the unsplit bundle from it
(tests/bundle_variants.py: prior.onnx's nodes back inside denoiser.onnx) and split that again."""

import json
import shutil

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from bundle_variants import unsplit
from runtime_fixtures import make_tiny_bundle
from tests.golden.make_default_bundle_vectors import OUT
from tina_edge.cli.main import main
from tina_edge.export.portable.generate import add_portable_files
from tina_edge.export.portable.prior_split import split_prior
from tina_edge.runtime.bundle import default_bundle_path, open_bundle
from tina_edge.runtime.contracts import PRIOR, PRIOR_MODEL, input_names, output_names
from tina_edge.runtime.errors import BundleError
from tina_edge.runtime.manifest import read_manifest, write_manifest
from tina_edge.runtime.personalizer import Personalizer


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    """The default bundle before the split: its prior inside denoiser.onnx and generate.onnx."""
    return unsplit(tmp_path_factory.mktemp("prior") / "raw")


@pytest.fixture(scope="module")
def converted(raw):
    out = raw.parent / "conv"
    r = CliRunner().invoke(main, ["convert", str(raw), "-o", str(out),  # the split alone
                                  "--keep-template-shapes", "--no-everyday-keys", "--keep-float32"])
    assert r.exit_code == 0, r.output
    return out


def _inits(path):
    return {t.name: t for t in onnx.load(str(path)).graph.initializer}


def test_convert_writes_the_split_layout(raw, converted):
    m = read_manifest(converted)
    assert read_manifest(raw).portable.prior is None
    assert m.portable.prior == {"model": PRIOR_MODEL, "inputs": ["class_emb"], "outputs": [PRIOR], "only": True}  # zero correction
    assert m.portable.generate["inputs"] == input_names("generate_on_prior") == ["class_emb", "class_mask", "noise", PRIOR]
    for name, role in ((PRIOR_MODEL, "prior"), ("denoiser.onnx", "denoiser_on_prior"), ("generate.onnx", "generate_on_prior")):
        g = onnx.load(str(converted / name)).graph
        assert [i.name for i in g.input] == input_names(role) and [o.name for o in g.output] == output_names(role), name
    den = onnx.load(str(converted / "denoiser.onnx")).graph
    assert not [n.name for n in den.node if n.name.startswith("/prior/")]
    # the prior's weights (its fp16 kernel keys and coefficients) are stored once, in prior.onnx
    prior = {n for n, t in _inits(converted / PRIOR_MODEL).items() if np.prod(t.dims) >= 10_000}
    assert len(prior) >= 3
    assert not prior & set(_inits(converted / "denoiser.onnx")) and not prior & set(_inits(converted / "generate.onnx"))
    sizes = {n: (converted / n).stat().st_size for n in ("denoiser.onnx", "generate.onnx", PRIOR_MODEL)}
    old = {n: (raw / n).stat().st_size for n in ("denoiser.onnx", "generate.onnx")}
    assert sizes["denoiser.onnx"] < old["denoiser.onnx"] - 3_000_000 and sizes["generate.onnx"] < old["generate.onnx"] - 3_000_000
    open_bundle(converted).close()


def test_splitting_the_unsplit_bundle_gives_the_shipped_bundle_byte_for_byte(raw, converted):
    """Merge then split is exact: the same prior.onnx, denoiser.onnx, generate.onnx and manifest as the
    committed bundle (so every golden vector, tests/test_golden_default_bundle.py), and the unsplit
    bundle itself already personalizes with the same bits, by the denoiser steps and by generate.onnx."""
    src = default_bundle_path()
    assert read_manifest(converted).bundle_id == read_manifest(src).bundle_id
    for n in sorted(read_manifest(src).files) + ["manifest.json"]:
        assert (converted / n).read_bytes() == (src / n).read_bytes(), n
    saved = dict(np.load(OUT, allow_pickle=False))
    for use_generate in (False, True):
        clf = Personalizer.from_bundle(raw, threads=1, use_generate=use_generate).personalize("goldfish, school bus, sneaker", seed=0)
        for n, a in clf.params.items():
            assert a.tobytes() == saved[f"ddim_default/params/{n}"].tobytes(), (use_generate, n)


def test_converting_a_split_bundle_again_keeps_it(converted, tmp_path):
    again = tmp_path / "again"
    r = CliRunner().invoke(main, ["convert", str(converted), "-o", str(again), "--keep-template-shapes", "--no-everyday-keys", "--keep-float32"])
    assert r.exit_code == 0, r.output
    assert read_manifest(again).portable.prior == read_manifest(converted).portable.prior
    for n in ("denoiser.onnx", PRIOR_MODEL):
        assert (again / n).read_bytes() == (converted / n).read_bytes()
    a = Personalizer.from_bundle(converted, threads=1, use_generate=True).personalize("dog, cat, oboe", seed=4)
    b = Personalizer.from_bundle(again, threads=1, use_generate=True).personalize("dog, cat, oboe", seed=4)
    assert all(a.params[n].tobytes() == b.params[n].tobytes() for n in a.params)


def test_a_denoiser_without_a_prior_is_left_as_it_is(tmp_path):
    d = make_tiny_bundle(tmp_path / "b", k_max=4)
    assert split_prior(onnx.load(str(d / "denoiser.onnx"))) is None
    m = add_portable_files(d)
    assert m.portable.prior is None and not (d / PRIOR_MODEL).exists()
    assert m.portable.generate["inputs"] == input_names("generate")
    assert "prior" not in json.loads((d / "manifest.json").read_text())["portable"]


def test_a_manifest_naming_a_prior_graph_needs_a_denoiser_that_reads_it(raw, converted, tmp_path):
    d = tmp_path / "b"
    shutil.copytree(converted, d)
    shutil.copy(raw / "denoiser.onnx", d / "denoiser.onnx")  # the prior inside again
    write_manifest(d, read_manifest(d))
    with pytest.raises(BundleError, match=r"bundle file denoiser.onnx \(denoiser_on_prior\) has no input 'prior'"):
        open_bundle(d)


def test_a_split_bundle_without_its_prior_graph_is_refused_on_convert(converted, tmp_path):
    d = tmp_path / "b"
    shutil.copytree(converted, d)
    m = read_manifest(d)
    m.portable.prior = None
    m.files.pop(PRIOR_MODEL)
    (d / PRIOR_MODEL).unlink()
    write_manifest(d, m)
    with pytest.raises(BundleError, match="denoiser.onnx reads prior rows but the manifest names no prior graph"):
        add_portable_files(d)


def _tiny_denoiser(prior_reads_mask: bool = False, second_output: bool = False) -> onnx.ModelProto:
    """x0 = x_t W + sum_k(prior(class_emb) * mask) V + t, the prior in the "/prior/" scope as torch names it."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    K, D, R, P = 3, 4, 5, 6
    node = helper.make_node
    pin = "class_mask3" if prior_reads_mask else "class_emb"
    nodes = [node("Unsqueeze", ["class_mask", "ax_last"], ["class_mask3"], name="/Unsqueeze"),
             node("Cast", ["Wp_fp16"], ["Wp"], name="/prior/Cast", to=TensorProto.FLOAT),
             node("MatMul", [pin, "Wp"], ["/prior/mm"], name="/prior/MatMul"),
             node("Tanh", ["/prior/mm"], ["/prior/out"], name="/prior/Tanh"),
             node("Mul", ["/prior/out", "class_mask3"], ["pm"], name="/Mul"),
             node("ReduceSum", ["pm", "ax1"], ["ps"], name="/ReduceSum", keepdims=0),
             node("MatMul", ["ps", "V"], ["pv"], name="/MatMul"),
             node("MatMul", ["x_t", "W"], ["xw"], name="/MatMul_1"),
             node("Cast", ["timestep"], ["tf"], name="/Cast", to=TensorProto.FLOAT),
             node("Unsqueeze", ["tf", "ax_last"], ["t2"], name="/Unsqueeze_1"),
             node("Add", ["xw", "pv"], ["s"], name="/Add"),
             node("Add", ["s", "t2"], ["x0" if not second_output else "s2"], name="/Add_1")]
    if second_output:  # a tensor inside the prior scope read outside it besides its output
        nodes += [node("ReduceSum", ["/prior/mm", "ax1"], ["leak"], name="/ReduceSum_1", keepdims=0),
                  node("MatMul", ["leak", "V"], ["leak_v"], name="/MatMul_2"),
                  node("Add", ["s2", "leak_v"], ["x0"], name="/Add_2")]
    inits = [numpy_helper.from_array(rng.standard_normal((D, R)).astype(np.float16), "Wp_fp16"),
             numpy_helper.from_array(rng.standard_normal((R, P)).astype(np.float32), "V"),
             numpy_helper.from_array(rng.standard_normal((P, P)).astype(np.float32), "W"),
             numpy_helper.from_array(np.array([-1], np.int64), "ax_last"),
             numpy_helper.from_array(np.array([1], np.int64), "ax1")]
    vi = helper.make_tensor_value_info
    g = helper.make_graph(nodes, "den", [vi("x_t", TensorProto.FLOAT, ["batch", P]), vi("timestep", TensorProto.INT64, ["batch"]),
                                         vi("class_emb", TensorProto.FLOAT, ["batch", K, D]),
                                         vi("class_mask", TensorProto.FLOAT, ["batch", K])],
                          [vi("x0", TensorProto.FLOAT, ["batch", P])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_split_prior_on_a_small_graph_gives_the_same_bytes():
    import onnxruntime as ort

    den = _tiny_denoiser()
    onnx.checker.check_model(den)
    prior, cut = split_prior(den)
    assert [n.op_type for n in prior.graph.node] == ["Cast", "MatMul", "Tanh"]
    assert [t.name for t in prior.graph.initializer] == ["Wp_fp16"] and "Wp_fp16" not in {t.name for t in cut.graph.initializer}
    assert not [n for n in cut.graph.node if n.name.startswith("/prior/")]
    rng = np.random.default_rng(1)
    feeds = {"x_t": rng.standard_normal((2, 6)).astype(np.float32), "timestep": np.array([3, 999], np.int64),
             "class_emb": rng.standard_normal((2, 3, 4)).astype(np.float32),
             "class_mask": np.array([[1, 1, 0], [1, 0, 0]], np.float32)}
    run = lambda m, f: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, f)
    want = run(den, feeds)[0]
    rows = run(prior, {"class_emb": feeds["class_emb"]})[0]
    assert rows.shape == (2, 3, 5)
    assert run(cut, feeds | {PRIOR: rows})[0].tobytes() == want.tobytes()
    assert split_prior(cut) is None  # split already


def test_a_prior_that_reads_more_than_class_emb_is_not_split():
    with pytest.raises(BundleError, match=r"the denoiser's text prior reads \['class_mask'\], not class_emb alone"):
        split_prior(_tiny_denoiser(prior_reads_mask=True))


def test_a_prior_with_two_outputs_is_not_split():
    with pytest.raises(BundleError, match=r"the denoiser's text prior has 2 outputs read outside it"):
        split_prior(_tiny_denoiser(second_output=True))


def test_the_converted_manifest_follows_the_schema(converted):
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is in the [test] extra")
    from pathlib import Path

    schema = json.loads((Path(__file__).resolve().parents[1] / "docs" / "manifest.schema.json").read_text())
    d = json.loads((converted / "manifest.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(d)
    d["portable"]["prior"]["outputs"] = ["rows"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate(d)


def test_info_names_the_prior_graph(raw, converted):
    r = CliRunner().invoke(main, ["info", str(converted)])
    assert r.exit_code == 0, r.output
    assert "prior       prior.onnx: the text prior, once per personalize (denoiser.onnx reads its rows)" in r.output
    r = CliRunner().invoke(main, ["info", str(raw)])
    assert r.exit_code == 0 and "prior.onnx" not in r.output


def test_conformance_prior_rows_are_what_the_runtime_feeds(raw, converted):
    from tina_edge.export.portable.conformance import prior_vectors

    p = Personalizer.from_bundle(converted, threads=1)
    doc = prior_vectors(p, ["goldfish", "oboe"])
    assert doc["shape"] == [1, 20, 1281] and len(doc["rows"]) == 2 * 1281
    emb = np.zeros((1, 20, 384), np.float32)
    emb[0, :2] = p.encode(["goldfish", "oboe"])
    rows = p._prior_rows(emb)[PRIOR]
    assert np.array_equal(np.asarray(doc["rows"], np.float32), rows[0, :2].reshape(-1))
    assert prior_vectors(Personalizer.from_bundle(raw, threads=1), ["goldfish", "oboe"]) is None


@pytest.mark.slow
def test_an_ort_format_split_bundle_gives_the_golden_params(tmp_path):
    out = tmp_path / "ort"
    r = CliRunner().invoke(main, ["convert", str(default_bundle_path()), "-o", str(out), "--ort", "--no-everyday-keys", "--keep-float32"])
    assert r.exit_code == 0, r.output
    m = read_manifest(out)
    assert m.portable.prior_model == "prior.ort" and m.denoiser.model == "denoiser.ort"
    saved = np.load(OUT, allow_pickle=False)
    for use_generate in (False, True):
        clf = Personalizer.from_bundle(out, threads=1, use_generate=use_generate).personalize("goldfish, school bus, sneaker", seed=0)
        for n, a in clf.params.items():
            assert a.tobytes() == saved[f"ddim_default/params/{n}"].tobytes(), (use_generate, n)


def test_a_graph_stored_out_of_order_is_split_in_order():
    """float16 conversion appends its input Casts at the end of the graph: onnxruntime runs that, the split sorts it."""
    den = _tiny_denoiser()
    nodes = list(den.graph.node)
    del den.graph.node[:]
    den.graph.node.extend(nodes[2:] + nodes[:2])  # the Unsqueeze and the prior's Cast last
    prior, cut = split_prior(den)
    onnx.checker.check_model(prior)
    onnx.checker.check_model(cut)
    assert [n.op_type for n in prior.graph.node] == ["Cast", "MatMul", "Tanh"]


def test_a_float16_prior_is_left_inside_the_denoiser():
    from onnx import TensorProto, helper

    den = _tiny_denoiser()
    for n in den.graph.node:  # the prior's rows leave its scope as float16, and are cast back outside it
        if n.name == "/prior/Tanh":
            n.output[0] = "/prior/tanh32"
        if n.name == "/Mul":
            n.input[0] = "back32"
    den.graph.node.insert(4, helper.make_node("Cast", ["/prior/tanh32"], ["/prior/out"], name="/prior/Cast_1", to=TensorProto.FLOAT16))
    den.graph.node.insert(5, helper.make_node("Cast", ["/prior/out"], ["back32"], name="/Cast_back", to=TensorProto.FLOAT))
    onnx.checker.check_model(den)
    assert split_prior(den) is None


@pytest.mark.parametrize("prior, message", [
    ({"inputs": ["class_emb"]}, "manifest field portable.prior.model must name a file of the bundle"),
    ({"model": ""}, "manifest field portable.prior.model must name a file of the bundle"),
    ({"model": "prior.onnx", "outputs": "prior"}, "manifest field portable.prior.outputs must be a list of class names"),
    ("prior.onnx", "manifest field portable.prior must be a JSON object"),
])
def test_a_malformed_prior_section_is_refused(prior, message):
    from tina_edge.runtime.manifest import PortableInfo

    with pytest.raises(BundleError, match=message):
        PortableInfo.from_dict({"prior": prior}, "portable")


def test_the_prior_section_round_trips_and_lists_its_file(raw, converted):
    m = read_manifest(converted)
    assert ("portable.prior.model", PRIOR_MODEL) in m.portable.files()
    assert m.to_dict()["portable"]["prior"] == json.loads((converted / "manifest.json").read_text())["portable"]["prior"]
    assert read_manifest(raw).portable.prior_model is None
