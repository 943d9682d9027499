"""Static padding (issue 24): the default template's run-time "same" padding becomes constants,
outputs unchanged; `convert` (and so `export`) ships that template, `--keep-template-shapes` keeps it."""

import shutil

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


def test_the_default_template_gets_constant_padding_and_the_same_outputs(tmp_path):
    path = tmp_path / "template.onnx"
    shutil.copyfile(DEFAULT / "template.onnx", path)
    before = ops(onnx.load(str(path)))
    assert before.get("Pad", 0) == 5 and before.get("Ceil", 0) == 10  # TF "same" padding computed at run time
    rng = np.random.default_rng(1)
    gen = {"fc.weight": (rng.standard_normal((4, 1280)) * 0.05).astype(np.float32), "fc.bias": np.zeros(4, np.float32)}
    report = static_template(path, gen, 128, 128)
    after = onnx.load(str(path))
    assert ops(after).get("Pad", 0) == 0 and ops(after).get("Ceil", 0) == 0 and report["max_abs_diff"] <= 1e-5
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

    for name, extra in (("mobile", ["--ort"]), ("kept", ["--keep-template-shapes"])):
        r = CliRunner().invoke(main, ["convert", "-o", str(tmp_path / name), *extra])
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
