"""A personalized model file, read and checked before anything runs it: bytes read once with a size
bound, no tensor in external data, no unbounded control flow, the classifier contract (input
`image` or, head-only, `features`; outputs `logits` and `probabilities` [N, k]), the declared input
size against the model's `preprocess` policy, and a head-only model's trunk hash."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .contracts import FEATURES, IMAGE, output_names
from .errors import ModelFileError
from .model_meta import ModelMetadata
from .onnx_checks import external_tensors, parse_model, unbounded_control_flow

if TYPE_CHECKING:  # onnx is imported where a model is built or read
    import onnx

MAX_MODEL_BYTES = 2 << 30  # protobuf cannot hold more in one message anyway
MAX_INPUT_SIDE = 2048  # a model's declared input height and width: the manifest's bound (template.input.height)


def checked_model(data: bytes, p: Path | str) -> onnx.ModelProto:
    """Parse a model or trunk file's bytes: no tensor in external data (onnxruntime never opens a file
    of the model's choosing), no control flow that could run unbounded (runtime/onnx_checks.py)."""
    try:
        model = parse_model(data)
    except Exception as e:
        raise ModelFileError(f"{p} is not a readable ONNX model ({type(e).__name__})") from None
    check_self_contained(model, p)
    return model


def check_self_contained(model: onnx.ModelProto, p: Path | str) -> None:
    for where, t, loc in external_tensors(model):
        raise ModelFileError(f"{p} keeps tensor {t.name!r:.80} ({where}) in an external file {loc!r:.120}; "
                             "a personalized model or trunk must be one self-contained file")
    why = unbounded_control_flow(model)
    if why:
        raise ModelFileError(f"{p} could run unbounded: {why}; a personalized model or trunk holds no such control flow")


def required_trunk_sha(meta: ModelMetadata, p: Path | str = "this head-only model") -> str:
    """A head-only model must name the sha256 of its trunk: without it any trunk (or a trunk reading
    a neighbouring file) would be used unchecked."""
    want = meta.trunk_sha256
    if not (isinstance(want, str) and len(want) == 64 and all(c in "0123456789abcdef" for c in want)):
        raise ModelFileError(f"{p} is a head-only model without a valid trunk_sha256, so the trunk it needs cannot be "
                             "checked; write it again with `tina-edge personalize --head-only`")
    return want


def read_model_bytes(p: Path, noun: str = "model file") -> bytes:
    """The model file's bytes, read once; a FIFO or device is refused before any blocking open."""
    import stat as _stat

    try:
        st = os.stat(p)
        if _stat.S_ISDIR(st.st_mode):
            raise ModelFileError(f"{noun} {p} is a directory; pass a .onnx file")
        if not _stat.S_ISREG(st.st_mode):
            raise ModelFileError(f"{noun} {p} is not a regular file (a device, pipe or socket); pass a .onnx file")
        if st.st_size > MAX_MODEL_BYTES:
            raise ModelFileError(f"{noun} {p} is {st.st_size} bytes; a model may have at most 2 GiB")
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as f:
            if not _stat.S_ISREG(os.fstat(f.fileno()).st_mode):  # swapped for a FIFO since the stat
                raise ModelFileError(f"{noun} {p} is not a regular file")
            return f.read(MAX_MODEL_BYTES + 1)
    except FileNotFoundError:
        raise ModelFileError(f"{noun} {p} does not exist") from None
    except (OSError, ValueError) as e:
        raise ModelFileError(f"cannot read {noun} {str(p)!r:.200}: {getattr(e, 'strerror', None) or e}") from None


def check_classifier_contract(model: onnx.ModelProto, k: int, p: Path | str) -> None:
    """Input `image` uint8 rank 4 (NHWC, 3 channels), outputs `logits`/`probabilities` float [N, k]."""
    inits = {i.name for i in model.graph.initializer}
    ins = [i for i in model.graph.input if i.name not in inits]
    if [i.name for i in ins] == [FEATURES]:  # head-only form: float features [N, D] from the bundle's trunk
        ft = ins[0].type.tensor_type
        if not ins[0].type.HasField("tensor_type") or ft.elem_type != 1 or len(ft.shape.dim) != 2:
            raise ModelFileError(f"{p}: a head-only classifier takes float32 'features' [N, D]")
    elif [i.name for i in ins] != [IMAGE]:
        raise ModelFileError(f"{p} takes inputs {[i.name for i in ins][:8]}; a tina-edge classifier takes one input 'image'")
    tt = ins[0].type.tensor_type
    if ins[0].name == FEATURES:
        pass
    elif not ins[0].type.HasField("tensor_type") or tt.elem_type != 2:  # uint8
        raise ModelFileError(f"{p}: input 'image' must be a uint8 tensor (RGB values 0..255), it is element type {tt.elem_type}")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
    if ins[0].name == IMAGE and (not tt.HasField("shape") or len(dims) != 4 or dims[3] not in (None, 3)):
        raise ModelFileError(f"{p}: input 'image' must be [N, H, W, 3] (NHWC RGB), it is {fmt_dims(dims) if tt.HasField('shape') else 'of unknown rank'}")
    outs = {o.name: o for o in model.graph.output}
    for name in output_names("template"):
        if name not in outs:
            raise ModelFileError(f"{p} has no output {name!r}; it has {sorted(outs)[:8]}")
        ot = outs[name].type.tensor_type
        if not outs[name].type.HasField("tensor_type") or ot.elem_type != 1:
            raise ModelFileError(f"{p}: output {name!r} must be a float32 tensor")
        od = [d.dim_value if d.HasField("dim_value") else None for d in ot.shape.dim]
        if ot.HasField("shape") and len(od) != 2:
            raise ModelFileError(f"{p}: output {name!r} must be [N, k], it is {fmt_dims(od)}")
        if ot.HasField("shape") and od[1] is not None and od[1] != 0 and od[1] != k:
            raise ModelFileError(f"{p}: output {name!r} has {od[1]} classes but its labels metadata names {k}")


def image_hw(model: onnx.ModelProto) -> tuple[int, int] | None:
    """(H, W) of an NHWC `image` input when both are fixed; None for dynamic sizes and head-only models."""
    dims = model.graph.input[0].type.tensor_type.shape.dim if model.graph.input else []
    hw = [d.dim_value if d.HasField("dim_value") else 0 for d in dims][1:3]
    return (hw[0], hw[1]) if len(hw) == 2 and all(hw) else None


def check_input_size(hw: tuple[int, int] | None, preprocess: Mapping[str, Any] | None, p: Path | str) -> None:
    """A declared image input is at most MAX_INPUT_SIDE on a side (every photo is resized to it) and,
    with a photo policy, the policy's square size."""
    if hw is None:
        return
    if max(hw) > MAX_INPUT_SIDE:
        raise ModelFileError(f"{p} takes {hw[0]}x{hw[1]}-pixel images; a classifier input may be at most "
                             f"{MAX_INPUT_SIDE}x{MAX_INPUT_SIDE}")
    size = (preprocess or {}).get("size")
    if size is not None and hw != (size, size):
        raise ModelFileError(f"{p} takes {hw[0]}x{hw[1]}-pixel images but its 'preprocess' metadata prepares "
                             f"{size}x{size}; re-create the model with `tina-edge personalize`")


def fmt_dims(dims: list[int | None]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"
