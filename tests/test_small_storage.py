"""float16 storage of float32 weights (export/portable/small_storage.py): which tensors, and what it costs.

The pass picks initializers by size and consumer (weight slots of Conv/MatMul/Gemm, in Loop bodies
too), never biases or tables read by Add/Mul; `convert` applies it unless --keep-float32, and the
default bundle converted so stays within a stated tolerance of the committed one.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from runtime_fixtures import make_tiny_bundle
from tina_edge.export.portable.generate import add_portable_files
from tina_edge.export.portable.small_storage import float_weights_to_fp16
from tina_edge.runtime.personalizer import Personalizer


def _run(model: onnx.ModelProto, feeds: dict) -> np.ndarray:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def _graph_with_a_loop(rng) -> onnx.ModelProto:
    """Weights in MatMul slots (one only inside a Loop body), a table read by Add, one read by MatMul and
    Mul at once, one below the size threshold (1024 elements)."""
    N = 64
    body = helper.make_graph(
        [helper.make_node("MatMul", ["x_in", "W_body"], ["xm"]), helper.make_node("Tanh", ["xm"], ["x_out"]),
         helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body",
        [helper.make_tensor_value_info("iter", TensorProto.INT64, []), helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x_in", TensorProto.FLOAT, [N, N])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), helper.make_tensor_value_info("x_out", TensorProto.FLOAT, [N, N])])
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]),
             helper.make_node("Add", ["h", "table"], ["h2"]),
             helper.make_node("MatMul", ["h2", "W_shared"], ["h3"]),
             helper.make_node("Mul", ["h3", "W_shared"], ["h4"]),
             helper.make_node("Loop", ["trips", "true", "h4"], ["h5"], body=body),
             helper.make_node("MatMul", ["h5", "W_small"], ["y"])]
    inits = {name: (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)
             for name, shape in (("W", (N, N)), ("table", (N, N)), ("W_shared", (N, N)), ("W_body", (N, N)), ("W_small", (N, 8)))}
    inits.update(trips=np.array(2, np.int64), true=np.array(True))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [N, N])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [N, 8])],
                          [numpy_helper.from_array(a, n) for n, a in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def test_only_weights_read_in_weight_slots_become_float16_and_outputs_stay_close():
    rng = np.random.default_rng(0)
    m = _graph_with_a_loop(rng)
    x = rng.standard_normal((64, 64)).astype(np.float32)
    before = _run(m, {"x": x})
    kept = onnx.ModelProto()
    kept.CopyFrom(m)
    assert float_weights_to_fp16(kept, exclude={"W", "W_body"}) == 0  # excluded by name (a template's layout tensors)
    saved = float_weights_to_fp16(m)
    types = {i.name: i.data_type for i in m.graph.initializer}
    assert types["W_fp16"] == types["W_body_fp16"] == TensorProto.FLOAT16  # a MatMul weight, also inside the Loop body
    assert "W" not in types and "W_body" not in types  # each weight stored once
    assert types["table"] == types["W_shared"] == types["W_small"] == TensorProto.FLOAT  # Add / Mul readers, too small
    assert saved == 2 * 64 * 64 * 2
    onnx.checker.check_model(m)
    after = _run(m, {"x": x})
    assert 0 < np.abs(after - before).max() < 2e-3 * np.abs(before).max()
    assert float_weights_to_fp16(m) == 0  # a converted graph is left as it is


def test_convert_stores_weights_as_float16_unless_keep_float32(tmp_path):
    """A real (tiny) bundle: the denoiser's large weight, in denoiser.onnx and generate.onnx alike; the
    classifiers stay within 1e-3 of the float32 ones; --keep-float32 leaves every weight as it was."""
    src = make_tiny_bundle(tmp_path / "src", k_max=5, default_steps=4)  # W2 [k_max * D, 32] = 1280 elements
    small, f32 = tmp_path / "small", tmp_path / "f32"
    shutil.copytree(src, small)
    shutil.copytree(src, f32)
    ms, mf = add_portable_files(small), add_portable_files(f32, keep_float32=True)
    assert (f32 / "denoiser.onnx").read_bytes() == (src / "denoiser.onnx").read_bytes()
    for name in ("denoiser.onnx", "generate.onnx"):
        inits = {i.name: i.data_type for i in onnx.load(str(small / name)).graph.initializer}
        assert inits.get("W2_fp16") == TensorProto.FLOAT16 and "W2" not in inits, name
        assert ms.files[name]["bytes"] < mf.files[name]["bytes"]
    pa, pb = Personalizer.from_bundle(f32, threads=1), Personalizer.from_bundle(small, threads=1)
    pg = Personalizer.from_bundle(small, threads=1, use_generate=True)
    imgs = np.random.default_rng(1).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    for names, seed in (("dog, cat", 0), ("ship, dog, bird, cat, frog", 7)):
        a, b, g = pa.personalize(names, seed=seed), pb.personalize(names, seed=seed), pg.personalize(names, seed=seed)
        for t in ms.template.layout:
            assert 0 < np.abs(a.params[t.name] - b.params[t.name]).max() < 1e-3
            np.testing.assert_array_equal(b.params[t.name], g.params[t.name])  # generate.onnx == the runtime's sampler
        np.testing.assert_allclose(a.predict(imgs).probabilities, b.predict(imgs).probabilities, atol=1e-3)


@pytest.mark.slow
def test_the_default_bundle_ships_small_and_converting_it_again_changes_nothing(tmp_path):
    """The committed default bundle was converted with float16 storage (BENCHMARKS §20, §22: parameters
    within 1e-4 and the same top-1 answers as its float32 source, measured 8.4e-6 and 99.87% agreement):
    the trunk's and the denoiser's weights are float16 behind Casts, the text encoder keeps its own
    storage, and `tina-edge convert` of it gives the same bundle (same bundle_id)."""
    from click.testing import CliRunner

    from tina_edge.cli.main import main
    from tina_edge.runtime.bundle import default_bundle_path

    src = default_bundle_path()
    for name in ("template.onnx", "denoiser.onnx", "generate.onnx"):
        g = onnx.load(str(src / name)).graph
        nbytes = {TensorProto.FLOAT16: 0, TensorProto.FLOAT: 0}
        for t in g.initializer:
            if t.data_type in nbytes:
                nbytes[t.data_type] += len(t.raw_data)
        assert nbytes[TensorProto.FLOAT16] > 0.85 * sum(nbytes.values()), (name, nbytes)  # generate.onnx: 88% (tables stay float32)
        assert sum(t.data_type == TensorProto.FLOAT16 for t in g.initializer) >= 10, name  # weights, each read through a Cast
    res = CliRunner().invoke(main, ["convert", str(src), "-o", str(tmp_path / "again")])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output.strip().splitlines()[-1])["bundle_id"] == Personalizer.from_bundle(src).manifest.bundle_id
    assert (tmp_path / "again" / "text_encoder.onnx").read_bytes() == (src / "text_encoder.onnx").read_bytes()
