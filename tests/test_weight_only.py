"""Weight-only int8 (export/portable/weight_only.py) and the memory it costs when a session is created.

Graphs are built small with onnx.helper and quantized by onnxruntime's own dynamic quantizer (no
torch). What the rewrite must give: float activations (a row's output does not depend on its
batch), the int8 weights still int8 in the file, outputs equal to x @ dequantized W, and a form
onnxruntime folds into ONE float tensor per weight (the old form folded three: +125 MiB instead of
+70 when the MiniLM session was created).
"""

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tina_edge.export.portable.weight_only import dynamic_int8_to_weight_only
from tina_edge.runtime.sessions import make_session

K, N = 64, 48


def _float_mlp(path, k: int = K, n: int = N, seed: int = 0, layers: int = 2) -> None:
    """x [B, k] -> (MatMul w_i -> Relu) x (layers - 1) -> MatMul -> y [B, n]: `layers` weight MatMuls to quantize."""
    rng = np.random.default_rng(seed)
    shapes = [(k, k)] * (layers - 1) + [(k, n)]
    inits = [numpy_helper.from_array(rng.normal(0, 0.2, s).astype(np.float32), f"w{i + 1}") for i, s in enumerate(shapes)]
    nodes, x = [], "x"
    for i in range(layers):
        out = "y" if i == layers - 1 else f"h{i + 1}"
        nodes.append(helper.make_node("MatMul", [x, f"w{i + 1}"], [out], name=f"mm{i + 1}"))
        if i < layers - 1:
            nodes.append(helper.make_node("Relu", [out], [f"r{i + 1}"], name=f"relu{i + 1}"))
            x = f"r{i + 1}"
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", k])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", n])], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def _dynamic_int8(tmp_path, weight_type: str = "QInt8", **kw) -> onnx.ModelProto:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    _float_mlp(tmp_path / "f.onnx", **kw)
    quantize_dynamic(str(tmp_path / "f.onnx"), str(tmp_path / "q.onnx"), weight_type=getattr(QuantType, weight_type))
    return onnx.load(str(tmp_path / "q.onnx"))


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return make_session(model.SerializeToString(), 1).run(["y"], {"x": x})[0]


def _reference(q: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """x @ (W - zp) * scale per layer in float64, from the quantized model's own initializers."""
    inits = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    layers = sum(name.endswith("_quantized") for name in inits)
    h = x.astype(np.float64)
    for i in range(layers):
        w = f"w{i + 1}"
        wq = inits[f"{w}_quantized"].astype(np.float64) - inits[f"{w}_zero_point"].astype(np.float64)
        h = h @ (wq * inits[f"{w}_scale"].astype(np.float64))
        h = np.maximum(h, 0) if i < layers - 1 else h
    return h


def _old_form(q: onnx.ModelProto, layers: int = 2) -> onnx.ModelProto:
    """The weight-only form exported before, built from `q`'s int8 initializers:
    MatMul(x, (Cast(W) - Cast(zp)) * scale) per layer."""
    inits = [i for i in q.graph.initializer if i.name.endswith(("_quantized", "_scale", "_zero_point"))]
    nodes, x = [], "x"
    for i in range(layers):
        w = f"w{i + 1}"
        out = "y" if i == layers - 1 else f"{w}_h"
        nodes += [helper.make_node("Cast", [f"{w}_quantized"], [f"{w}_f"], to=TensorProto.FLOAT, name=f"{w}_wcast"),
                  helper.make_node("Cast", [f"{w}_zero_point"], [f"{w}_zpf"], to=TensorProto.FLOAT, name=f"{w}_zpcast"),
                  helper.make_node("Sub", [f"{w}_f", f"{w}_zpf"], [f"{w}_c"], name=f"{w}_wsub"),
                  helper.make_node("Mul", [f"{w}_c", f"{w}_scale"], [f"{w}_deq"], name=f"{w}_wscale"),
                  helper.make_node("MatMul", [x, f"{w}_deq"], [out], name=f"{w}_mm_float")]
        if i < layers - 1:
            nodes.append(helper.make_node("Relu", [out], [f"{w}_r"], name=f"{w}_relu"))
            x = f"{w}_r"
    g = helper.make_graph(nodes, "old", list(q.graph.input), list(q.graph.output), inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _check_form(model: onnx.ModelProto, signed: bool, layers: int = 2) -> None:
    """No integer or dequantizing op left; each int8 weight kept and read by ONE Cast, whose
    output goes straight to the MatMul (or to the zero-point Sub first when the zero point is not 0)."""
    g = model.graph
    ops = {n.op_type for n in g.node}
    assert not ops & {"DynamicQuantizeLinear", "MatMulInteger", "DequantizeLinear", "MatMulNBits"}, ops
    want = TensorProto.INT8 if signed else TensorProto.UINT8
    weights = [i for i in g.initializer if i.name.endswith("_quantized")]
    assert len(weights) == layers and all(w.data_type == want for w in weights)
    for w in weights:
        readers = [n for n in g.node if w.name in n.input]
        assert [n.op_type for n in readers] == ["Cast"], readers
        nxt = [n.op_type for n in g.node if readers[0].output[0] in n.input]
        assert nxt == (["MatMul"] if signed else ["Sub"]), nxt


@pytest.mark.parametrize("weight_type", ["QInt8", "QUInt8"])
def test_dynamic_int8_becomes_weight_only(tmp_path, weight_type):
    q = _dynamic_int8(tmp_path, weight_type)
    x = np.random.default_rng(1).normal(0, 1, (5, K)).astype(np.float32)
    ref = _reference(q, x)
    assert np.abs(_run(q, x) - ref).max() > 1e-3  # dynamic int8: activations quantized, off the reference
    assert dynamic_int8_to_weight_only(q) == 2
    onnx.checker.check_model(q, full_check=True)
    _check_form(q, signed=weight_type == "QInt8")
    got = _run(q, x)
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)
    alone = np.concatenate([_run(q, x[i : i + 1]) for i in range(len(x))])
    np.testing.assert_allclose(alone, got, atol=1e-6, rtol=0)  # a row does not depend on its batch
    assert dynamic_int8_to_weight_only(q) == 0  # already in the current form


def test_older_weight_only_form_is_rewritten(tmp_path):
    q = _dynamic_int8(tmp_path, "QUInt8")
    old = _old_form(q)
    onnx.checker.check_model(old, full_check=True)
    x = np.random.default_rng(2).normal(0, 1, (4, K)).astype(np.float32)
    before = _run(old, x)
    np.testing.assert_allclose(before, _reference(q, x), atol=1e-5, rtol=0)
    assert dynamic_int8_to_weight_only(old) == 2
    onnx.checker.check_model(old, full_check=True)
    _check_form(old, signed=False)
    np.testing.assert_allclose(_run(old, x), before, atol=1e-6, rtol=2e-6)  # (x @ W) * s vs x @ (W * s)


_HWM_CHILD = """
import sys
from tina_edge.runtime.sessions import make_session
def hwm():
    return [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")][0] / 1024
data = open(sys.argv[1], "rb").read()
before = hwm()
s = make_session(data, 1)
print(hwm() - before)
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads VmHWM from /proc")
def test_session_creation_folds_one_float_copy_per_weight(tmp_path):
    """The rewrite's point (BENCHMARKS.md §10.4): creating a session for the old form peaked with
    three folded float copies of each weight; the current form folds one. Sixteen 1024 x 1024 int8
    weights are 64 MiB in float32; measured here the old form peaks 52-72 MiB higher (55 MiB on the
    MiniLM), and the peaks themselves move by up to 16 MiB from run to run. Half a float copy (32 MiB)
    is the bound: with eight weights the margin was one allocator wobble and CI once saw 15.96 MiB."""
    q = _dynamic_int8(tmp_path, "QUInt8", k=1024, n=1024, layers=16)
    old = _old_form(q, layers=16)
    onnx.save(old, str(tmp_path / "old.onnx"))
    dynamic_int8_to_weight_only(q)
    onnx.save(q, str(tmp_path / "new.onnx"))
    peaks = {}
    for form in ("old", "new"):
        r = subprocess.run([sys.executable, "-c", _HWM_CHILD, str(tmp_path / f"{form}.onnx")],
                           capture_output=True, text=True, check=True)
        peaks[form] = float(r.stdout.strip().splitlines()[-1])
    print(json.dumps({k: round(v, 1) for k, v in peaks.items()}))
    _check_form(q, signed=False, layers=16)
    assert peaks["old"] - peaks["new"] >= 32, peaks


def test_make_session_does_not_keep_the_model_bytes():
    """onnxruntime's Python wrapper keeps the bytes a session was made from for the session's life;
    make_session lets them go, so a bundle's release() really frees its 33 MB text encoder."""
    q = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])]), opset_imports=[helper.make_opsetid("", 17)])
    data = q.SerializeToString()
    refs = sys.getrefcount(data)
    s = make_session(data, 1)
    assert sys.getrefcount(data) == refs
    np.testing.assert_array_equal(s.run(["y"], {"x": np.array([-1.0, 2.0], np.float32)})[0], [0.0, 2.0])


def test_float_matmul_weights_become_fp16_and_int8_weights_stay(tmp_path):
    """The MatMuls int8 left in float32 (MiniLM's FFN down-projections) are stored as float16 + Cast:
    half their bytes, outputs within float16 rounding, the int8 weights untouched."""
    from tina_edge.export.portable.weight_only import float_matmul_weights_to_fp16

    q = _dynamic_int8(tmp_path)
    assert dynamic_int8_to_weight_only(q) == 2
    rng = np.random.default_rng(2)
    w3 = rng.normal(0, 0.2, (N, N)).astype(np.float32)  # a float32 MatMul after the int8 ones
    g = q.graph
    g.initializer.append(numpy_helper.from_array(w3, "w3"))
    y_in = g.output[0].name
    for n in g.node:
        n.output[:] = ["y_int8" if o == y_in else o for o in n.output]
    g.node.append(helper.make_node("MatMul", ["y_int8", "w3"], [y_in], name="mm3_float"))
    x = rng.normal(0, 1, (4, K)).astype(np.float32)
    before, size = _run(q, x), len(q.SerializeToString())

    assert float_matmul_weights_to_fp16(q, min_elements=10**6) == 0  # below the size threshold: nothing
    assert float_matmul_weights_to_fp16(q, min_elements=N * N) == w3.nbytes // 2
    onnx.checker.check_model(q, full_check=True)
    inits = {i.name: i for i in q.graph.initializer}
    assert "w3" not in inits and inits["w3_fp16"].data_type == TensorProto.FLOAT16
    assert all(inits[f"w{i}_quantized"].data_type == TensorProto.INT8 for i in (1, 2))
    assert [n.op_type for n in q.graph.node if "w3_fp16" in n.input] == ["Cast"]
    assert len(q.SerializeToString()) < size - w3.nbytes // 2 + 200
    after = _run(q, x)
    err = np.abs(after - before).max()
    assert 0 < err <= 2e-3 * np.abs(before).max(), err  # float16 rounding of w3, nothing worse
    assert float_matmul_weights_to_fp16(q, min_elements=N * N) == 0  # already float16
