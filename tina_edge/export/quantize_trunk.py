"""int8 trunk: static (calibrated) QDQ quantization of the template's frozen trunk, head left in float.

Why static and per-channel: EfficientNet-Lite was designed for int8 (ReLU6, no squeeze-excite), but
its depthwise convolutions need one scale per channel, and conv activations need calibrated scales
(dynamic quantization only covers MatMul/Gemm). The generated head (the node reading fc.weight and
the softmax) stays float, so the runtime still fills fc.weight/fc.bias by name. The accuracy cost is
measured by `benchmarks/photo_accuracy.py --compare-bundle` (BENCHMARKS.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import onnx

from tina_edge.runtime.contracts import IMAGE
from ..runtime.errors import ExportError
from ..runtime.head import HEAD_WEIGHT


class _Photos:
    """onnxruntime CalibrationDataReader over uint8 NHWC batches."""

    def __init__(self, batches: Iterable[np.ndarray]):
        self._it = iter(batches)

    def get_next(self):
        b = next(self._it, None)
        return None if b is None else {IMAGE: b}


def quantize_template_int8(src: str | Path, dst: str | Path, calibration: np.ndarray, batch: int = 16) -> dict:
    """Write an int8 (QDQ, per-channel) copy of template `src`; `calibration` is uint8 [N, H, W, 3]."""
    import logging

    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    ort.set_default_logger_severity(3)  # the calibration session lists every folded constant otherwise
    logging.getLogger().setLevel(logging.ERROR)  # and the quantizer suggests a pre-processing pass we skip
    src, dst = Path(src), Path(dst)
    model = onnx.load(str(src))
    head = [n.name for n in model.graph.node if HEAD_WEIGHT in n.input]
    if not head:
        raise ExportError("template has no fc.weight head: only trunk templates can get an int8 trunk")
    consumers = {o for n in model.graph.node if n.name in head for o in n.output}
    exclude = head + [n.name for n in model.graph.node if any(i in consumers for i in n.input)]
    calibration = np.asarray(calibration, dtype=np.uint8)
    batches = [calibration[i : i + batch] for i in range(0, len(calibration), batch)]
    quantize_static(str(src), str(dst), _Photos(batches), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
                    calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
    q = onnx.load(str(dst))
    inits = {i.name: i for i in q.graph.initializer}
    if HEAD_WEIGHT not in inits or inits[HEAD_WEIGHT].data_type != onnx.TensorProto.FLOAT:
        raise ExportError("int8 quantization changed the generated head; the runtime could not fill it")
    return {"calibration_images": int(len(calibration)), "bytes": dst.stat().st_size, "excluded_nodes": exclude}
