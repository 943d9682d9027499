"""Head-only classifiers: every classifier of a trunk bundle shares the trunk, so ship it once.

A head model is a tiny ONNX graph, input `features` float32 [N, D] -> `logits`, `probabilities`
[N, k] (Gemm + Softmax), with the same metadata as a standalone model (labels, prompt, bundle id,
preprocessing) plus `form` = "head" and `trunk_sha256` (`ModelMetadata.as_head`). The trunk (`image`
uint8 NHWC -> `features`) is cut out of the bundle's template graph (everything up to the input of
the generated head), so the bundle carries no second copy of it; `trunk.onnx` is written next to
head models on demand.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from .contracts import FEATURES, LOGITS, PROBABILITIES
from .errors import ModelFileError
from .model_meta import ModelMetadata

if TYPE_CHECKING:
    import onnx

HEAD_WEIGHT, HEAD_BIAS = "fc.weight", "fc.bias"


def head_input_name(template: "onnx.ModelProto") -> str:
    """The tensor the generated head reads: the other input of the node that consumes fc.weight."""
    for node in template.graph.node:
        if HEAD_WEIGHT in node.input:
            others = [i for i in node.input if i not in (HEAD_WEIGHT, HEAD_BIAS)]
            if len(others) == 1:
                return others[0]
    raise ModelFileError("this bundle's template has no linear head on a trunk (no fc.weight); "
                         "head-only classifiers need a trunk template such as lite0_head")


def extract_trunk(template: "onnx.ModelProto") -> "onnx.ModelProto":
    """image -> features: the template graph cut at the head's input (weights shared with it)."""
    import onnx
    from onnx import helper

    feat = head_input_name(template)
    keep: set[str] = {feat}
    nodes = []
    for node in reversed(template.graph.node):  # walk back from the features tensor
        if any(o in keep for o in node.output):
            nodes.append(node)
            keep.update(node.input)
    nodes.reverse()
    inits = [i for i in template.graph.initializer if i.name in keep]
    inputs = [i for i in template.graph.input if i.name in keep]
    out = helper.make_tensor_value_info(FEATURES, onnx.TensorProto.FLOAT, ["N", None])
    ident = helper.make_node("Identity", [feat], [FEATURES], name="features_out")
    graph = helper.make_graph(nodes + [ident], "tina_edge_trunk", inputs, [out], initializer=inits)
    model = helper.make_model(graph, opset_imports=list(template.opset_import), producer_name="tina-edge")
    model.ir_version = template.ir_version
    return model


def trunk_sha256(trunk: "onnx.ModelProto") -> str:
    return hashlib.sha256(trunk.SerializeToString(deterministic=True)).hexdigest()


def head_model(params: Mapping[str, np.ndarray], meta: ModelMetadata, trunk_sha: str) -> "onnx.ModelProto":
    """features [N, D] -> logits, probabilities [N, k] for a generated linear head; `meta` is the
    standalone model's, recorded with the head form and the sha256 of the trunk it needs."""
    import onnx
    from onnx import helper, numpy_helper

    if HEAD_WEIGHT not in params or HEAD_BIAS not in params:
        raise ModelFileError("head-only form needs a classifier with a linear head (fc.weight, fc.bias); "
                             "this bundle generates a whole network: save the standalone model instead")
    w = np.ascontiguousarray(params[HEAD_WEIGHT], dtype=np.float32)
    b = np.ascontiguousarray(params[HEAD_BIAS], dtype=np.float32)
    k, d = w.shape
    nodes = [helper.make_node("Gemm", [FEATURES, HEAD_WEIGHT, HEAD_BIAS], [LOGITS], transB=1),
             helper.make_node("Softmax", [LOGITS], [PROBABILITIES], axis=1)]
    graph = helper.make_graph(
        nodes, "tina_edge_head",
        [helper.make_tensor_value_info(FEATURES, onnx.TensorProto.FLOAT, ["N", d])],
        [helper.make_tensor_value_info(LOGITS, onnx.TensorProto.FLOAT, ["N", k]),
         helper.make_tensor_value_info(PROBABILITIES, onnx.TensorProto.FLOAT, ["N", k])],
        initializer=[numpy_helper.from_array(w, HEAD_WEIGHT), numpy_helper.from_array(b, HEAD_BIAS)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tina-edge")
    model.ir_version = 8
    for key, value in meta.as_head(trunk_sha, [HEAD_WEIGHT, HEAD_BIAS]).to_props().items():
        p = model.metadata_props.add()
        p.key, p.value = key, value
    onnx.checker.check_model(model)
    return model
