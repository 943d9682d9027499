"""export --quantize-trunk refuses an int8 trunk that does not run or whose features point elsewhere
(issue 20's audit: at 32 px the int8 trunk failed every predict, at 64 px it returned zeros)."""

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from tina_edge.runtime.errors import ExportError

pytest.importorskip("onnxruntime")


def template(feature_scale: float = 1.0, break_batch_one: bool = False):
    """image uint8 [N, 8, 8, 3] -> mean colour (features [N, 3]) -> fc head (the template's shape)."""
    nodes = [helper.make_node("Cast", ["image"], ["x"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["x", "axes"], ["m"], keepdims=0),
             helper.make_node("Mul", ["m", "scale"], ["feats"])]
    inits = [numpy_helper.from_array(np.array([1, 2], np.int64), "axes"),
             numpy_helper.from_array(np.array(feature_scale, np.float32), "scale"),
             numpy_helper.from_array(np.ones((4, 3), np.float32), "fc.weight"),
             numpy_helper.from_array(np.zeros(4, np.float32), "fc.bias")]
    if break_batch_one:  # a shape baked at batch 2: what a broken quantized graph does on one photo
        nodes.append(helper.make_node("Reshape", ["feats", "two"], ["feats2"]))
        inits.append(numpy_helper.from_array(np.array([2, 3], np.int64), "two"))
        feats = "feats2"
    else:
        feats = "feats"
    nodes += [helper.make_node("Gemm", [feats, "fc.weight", "fc.bias"], ["logits"], transB=1),
              helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)]
    g = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", 8, 8, 3])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4]),
                           helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 4])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


PHOTOS = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)


def test_an_int8_trunk_with_the_float_features_passes():
    from tina_edge.export.quantize_trunk import check_int8_trunk

    assert check_int8_trunk(template(), template(feature_scale=1.01), PHOTOS) == pytest.approx(1.0)


def test_an_int8_trunk_with_zero_features_is_refused():
    from tina_edge.export.quantize_trunk import check_int8_trunk

    with pytest.raises(ExportError, match="point elsewhere than the float trunk's"):
        check_int8_trunk(template(), template(feature_scale=0.0), PHOTOS)


def test_an_int8_trunk_that_cannot_run_on_one_photo_is_refused():
    from tina_edge.export.quantize_trunk import check_int8_trunk

    with pytest.raises(ExportError, match="does not run on 8x8 photos"):
        check_int8_trunk(template(), template(break_batch_one=True), PHOTOS)
