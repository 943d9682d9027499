"""Static padding for phones (issue 24): the default template's run-time "same" padding becomes
constants, outputs unchanged; `convert --ort` ships that template."""

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
def test_convert_ort_writes_a_bundle_whose_models_have_static_padding(tmp_path):
    from click.testing import CliRunner

    from tina_edge.cli.main import main
    from tina_edge.runtime import Personalizer

    # float32 kept: this compares the static padding alone (float16 storage: test_small_storage.py)
    r = CliRunner().invoke(main, ["convert", "-o", str(tmp_path / "mobile"), "--ort", "--keep-float32"])
    assert r.exit_code == 0, r.output
    mobile = Personalizer.from_bundle(tmp_path / "mobile", threads=1)
    assert mobile.manifest.portable.ort["static_shapes"]["pad_nodes"] == [5, 0]
    a = Personalizer.from_bundle(threads=1).personalize("goldfish, lemon, pizza", seed=0)
    b = mobile.personalize("goldfish, lemon, pizza", seed=0)
    x = np.random.default_rng(2).integers(0, 256, (3, 128, 128, 3), dtype=np.uint8)
    np.testing.assert_allclose(b.predict(x).probabilities, a.predict(x).probabilities, atol=1e-5)
    model = onnx.load_from_string(b.to_bytes())
    assert ops(model).get("Pad", 0) == 0 and ops(model).get("Ceil", 0) == 0 and ops(model).get("Shape", 0) <= 5
