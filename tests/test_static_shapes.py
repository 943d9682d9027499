"""Static padding (issue 24): the default template's run-time "same" padding becomes constants,
outputs unchanged; `convert` (and so `export`) ships that template, `--keep-template-shapes` keeps it."""


import numpy as np
import onnx
import pytest

from tina_edge.export.portable.static_shapes import static_template
from tina_edge.runtime.bundle import default_bundle_path

DEFAULT = default_bundle_path()


def ops(model) -> dict[str, int]:
    out: dict[str, int] = {}
    for n in model.graph.node:
        out[n.op_type] = out.get(n.op_type, 0) + 1
    return out


def _same_padded_template(size: int = 16) -> onnx.ModelProto:
    """A template like EfficientNet-Lite0's: TF "same" padding computed at run time (Shape -> Gather ->
    Div -> Ceil -> Pad) before a stride-2 conv, pooled features, a generated head as graph inputs."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    c = lambda name, arr: numpy_helper.from_array(np.asarray(arr), name)
    nodes = [
        helper.make_node("Cast", ["image"], ["xf"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["xf"], ["x"], perm=[0, 3, 1, 2]),
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "two"], ["h"], axis=0),
        helper.make_node("Cast", ["h"], ["hf"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["hf", "stride"], ["hs"]),
        helper.make_node("Ceil", ["hs"], ["hc"]),
        helper.make_node("Mul", ["hc", "stride"], ["hm"]),
        helper.make_node("Sub", ["hm", "hf"], ["hd"]),
        helper.make_node("Add", ["hd", "one"], ["total_f"]),  # (ceil(H/2) - 1) * 2 + 3 - H
        helper.make_node("Cast", ["total_f"], ["total"], to=TensorProto.INT64),
        helper.make_node("Unsqueeze", ["total", "axis0"], ["total1"]),
        helper.make_node("Div", ["total1", "two_i"], ["top"]),
        helper.make_node("Sub", ["total1", "top"], ["bottom"]),
        helper.make_node("Concat", ["zeros", "top", "top", "zeros", "bottom", "bottom"], ["pads"], axis=0),
        helper.make_node("Pad", ["x", "pads"], ["xp"]),
        helper.make_node("Conv", ["xp", "conv.weight"], ["y"], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["y"], ["gp"]),
        helper.make_node("Flatten", ["gp"], ["pooled"]),
        helper.make_node("Gemm", ["pooled", "fc.weight", "fc.bias"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
    ]
    inits = [c("two", np.array(2, np.int64)), c("stride", np.float32(2.0)), c("one", np.float32(1.0)),
             c("two_i", np.array([2], np.int64)), c("zeros", np.zeros(2, np.int64)), c("axis0", np.array([0], np.int64)),
             c("conv.weight", (rng.standard_normal((4, 3, 3, 3)) * 0.01).astype(np.float32))]
    g = helper.make_graph(nodes, "template", [
        helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", size, size, 3]),
        helper.make_tensor_value_info("fc.weight", TensorProto.FLOAT, ["k", 4]),
        helper.make_tensor_value_info("fc.bias", TensorProto.FLOAT, ["k"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", "k"]),
         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", "k"])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_run_time_padding_becomes_constants_with_the_same_outputs(tmp_path):
    path = tmp_path / "template.onnx"
    onnx.save(_same_padded_template(), str(path))
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    before = ops(onnx.load(str(path)))
    assert before["Pad"] == 1 and before["Ceil"] == 1 and before["Shape"] == 1
    rng = np.random.default_rng(1)
    gen = {"fc.weight": rng.standard_normal((5, 4)).astype(np.float32), "fc.bias": np.zeros(5, np.float32)}
    report = static_template(path, gen, 16, 16)
    after = onnx.load(str(path))
    assert ops(after).get("Ceil", 0) == 0 and report["max_abs_diff"] <= 1e-5
    assert report["ceil_nodes"] == [1, 0] and report["nodes"][1] < report["nodes"][0] - 8  # the padding arithmetic is gone
    assert [i.name for i in after.graph.input] == ["image", "fc.weight", "fc.bias"]  # the contract is kept
    assert [o.name for o in after.graph.output] == ["logits", "probabilities"]


@pytest.mark.slow
def test_convert_makes_the_padding_static_once_same_outputs_and_can_keep_it(tmp_path):
    """`convert` (and `--ort`) ships the static template; `--keep-template-shapes` keeps the original
    bytes; both personalize the same classifier; converting again changes nothing."""
    from click.testing import CliRunner

    from tina_edge.cli.main import main
    from tina_edge.runtime import Personalizer
    from tina_edge.runtime.manifest import read_manifest

    for name, extra in (("mobile", ["--ort"]), ("kept", ["--keep-template-shapes"])):  # float32 kept: the padding
        r = CliRunner().invoke(main, ["convert", "-o", str(tmp_path / name), "--keep-float32", *extra])  # alone
        assert r.exit_code == 0, r.output
    mobile, kept = read_manifest(tmp_path / "mobile"), read_manifest(tmp_path / "kept")
    note = mobile.portable.template_inputs["static_shapes"]
    assert note["pad_nodes"][1] == 0 and note["ceil_nodes"][1] == 0 and note["max_abs_diff"] <= 1e-5
    if "static_shapes" not in (read_manifest(DEFAULT).portable.template_inputs or {}):
        assert "static_shapes" not in kept.portable.template_inputs
        assert kept.files["template.onnx"] == read_manifest(DEFAULT).files["template.onnx"]  # byte-identical
    a = Personalizer.from_bundle(tmp_path / "kept", threads=1).personalize("goldfish, lemon, pizza", seed=0)
    b = Personalizer.from_bundle(tmp_path / "mobile", threads=1).personalize("goldfish, lemon, pizza", seed=0)
    x = np.random.default_rng(2).integers(0, 256, (3, 128, 128, 3), dtype=np.uint8)
    np.testing.assert_allclose(b.predict(x).probabilities, a.predict(x).probabilities, atol=1e-5)
    model = onnx.load_from_string(b.to_bytes())
    assert ops(model).get("Pad", 0) == 0 and ops(model).get("Ceil", 0) == 0 and ops(model).get("Shape", 0) <= 5
    r = CliRunner().invoke(main, ["convert", str(tmp_path / "kept"), "-o", str(tmp_path / "again")])
    r2 = CliRunner().invoke(main, ["convert", str(tmp_path / "again"), "-o", str(tmp_path / "twice")])
    assert r.exit_code == 0 and r2.exit_code == 0, r.output + r2.output
    assert read_manifest(tmp_path / "twice").bundle_id == read_manifest(tmp_path / "again").bundle_id
