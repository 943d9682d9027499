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

    # the calibration session lists every folded constant, and the quantizer suggests a pre-processing pass
    # we skip: quiet both for this call only (no global side effect on the caller's logging)
    old_level, root = logging.getLogger().level, logging.getLogger()
    ort.set_default_logger_severity(3)
    root.setLevel(logging.ERROR)
    try:
        return _quantize(src, dst, calibration, batch)
    finally:
        root.setLevel(old_level)
        ort.set_default_logger_severity(4)  # the runtime's own setting (runtime/sessions.py silences onnxruntime)


def _quantize(src: str | Path, dst: str | Path, calibration: np.ndarray, batch: int) -> dict:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

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
    agreement = check_int8_trunk(model, q, calibration[:batch])
    return {"calibration_images": int(len(calibration)), "bytes": dst.stat().st_size, "excluded_nodes": exclude,
            "feature_cosine_min": agreement}


# mean cosine of float vs int8 pooled features; measured 0.75-0.79 on the test work dir's photos at 128 px (top-1
# agreement 0.99 on real photos); a broken quantization gives ~0 (all-zero features) or fails to run
MIN_FEATURE_COSINE = 0.5


def check_int8_trunk(float_template: "onnx.ModelProto", int8_template: "onnx.ModelProto", photos: np.ndarray) -> float:
    """Run both trunks on calibration photos (the batch, and one photo alone) and refuse an int8 trunk
    that fails to run or whose features point elsewhere: some input sizes quantize into graphs that
    onnxruntime cannot run ("Invalid input shape") or that return all-zero features. Returns the
    smaller mean cosine (the batch, one photo) between float and int8 features."""
    from ..runtime.contracts import FEATURES
    from ..runtime.errors import BundleError
    from ..runtime.head import extract_trunk
    from ..runtime.sessions import make_session, run_graph

    def features(template, x: np.ndarray) -> np.ndarray:
        trunk = extract_trunk(template)
        sess = make_session(trunk.SerializeToString(), 1, what="the int8 check's trunk", error=None)
        return np.asarray(run_graph(sess, [FEATURES], {IMAGE: x}, what="the trunk", error=BundleError)[0], np.float64)

    worst = 1.0
    for x in (photos, photos[:1]):
        ref = features(float_template, x)
        try:
            got = features(int8_template, x)
        except BundleError as e:
            raise ExportError(f"the int8 trunk does not run on {x.shape[1]}x{x.shape[2]} photos ({e}); export "
                              "without --quantize-trunk for this input size") from None
        cos = (ref * got).sum(1) / np.maximum(np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1), 1e-12)
        worst = min(worst, float(cos.mean()))
    if not worst >= MIN_FEATURE_COSINE:
        raise ExportError(f"the int8 trunk's features point elsewhere than the float trunk's (cosine {worst:.3f} < "
                          f"{MIN_FEATURE_COSINE}); export without --quantize-trunk for this input size")
    return worst
