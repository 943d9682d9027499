"""Denoiser and classifier-template graphs -> ONNX, each checked against PyTorch before it is kept.

Graph names and batch axes come from `tina_edge.runtime.contracts`, which the runtime checks too. Both use the legacy TorchScript
exporter (one self-contained file, no `.onnx.data`), are exported with batch >= 2 and checked at
batch 8, and go through `onnx.checker`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from tina_edge.runtime.contracts import CLASS_EMB, CLASS_MASK, IMAGE, LOGITS, PROBABILITIES, TIMESTEP, X_T, input_names, output_names
from tina_edge.runtime.atomic import atomic_save_onnx
from . import require_torch

require_torch()  # the install hint, not a bare ModuleNotFoundError
import torch  # noqa: E402
import torch.nn as nn

from ..runtime.contracts import batch_axes, input_names, output_names
from ..runtime.errors import ExportError
from ..runtime.sessions import make_session
from tina_edge.train.diffusion.denoiser import TinaDenoiser
from tina_edge.train.zoo.templates import ParamLayout, build_model

FP32_TOLERANCE = 1e-4


def _session(path: Path) -> ort.InferenceSession:
    return make_session(path, 1, (), level="all", error=None)


def _export(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str], dyn: dict, opset: int):
    module.eval()
    with torch.no_grad():
        torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs, dynamic_axes=dyn,
                          opset_version=opset, dynamo=False, do_constant_folding=True)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


def store_exact_fp16(path: Path, min_elements: int = 65536) -> int:
    """Store large float32 initializers whose values are all exact float16 numbers as float16 + Cast.

    Why: the text prior keeps its matrices in float16 buffers (train/text_prior.py), but the exporter
    folds their `.float()` into float32 constants, doubling their bytes in denoiser.onnx and again in
    generate.onnx. The rewrite is lossless (every value round-trips), so parity is unchanged; onnxruntime
    folds the Cast back at session creation. Returns the bytes saved.
    """
    from .portable.weight_only import store_as_fp16

    model = onnx.load(str(path))
    saved = store_as_fp16(model.graph, lambda name, a: a.size >= min_elements
                          and np.array_equal(a.astype(np.float16).astype(np.float32), a))
    if saved:
        onnx.checker.check_model(model, full_check=True)
        atomic_save_onnx(path, model)
    return saved


def denoiser_inputs(model: TinaDenoiser, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    cfg = model.cfg
    mask = np.zeros((batch, cfg.k_max), np.float32)
    for b in range(batch):
        mask[b, : 2 + b % (cfg.k_max - 1)] = 1.0
    emb = rng.standard_normal((batch, cfg.k_max, cfg.text_dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=-1, keepdims=True)
    return {X_T: rng.standard_normal((batch, cfg.param_count)).astype(np.float32),
            TIMESTEP: rng.integers(0, 1000, batch).astype(np.int64),
            CLASS_EMB: emb * mask[..., None], CLASS_MASK: mask}


def export_denoiser(model: TinaDenoiser, path: str | Path, *, opset: int = 17) -> dict:
    """Write denoiser.onnx (one step) and return parity figures (max abs diff at batch 8)."""
    path = Path(path)
    ex = denoiser_inputs(model, 2)
    ins, outs = input_names("denoiser"), output_names("denoiser")
    _export(model, tuple(torch.from_numpy(ex[k]) for k in ins), path, ins, outs, batch_axes("denoiser"), opset)
    store_exact_fp16(path)
    feeds = denoiser_inputs(model, 8, seed=1)
    with torch.no_grad():
        ref = model(*(torch.from_numpy(feeds[k]) for k in ins)).numpy()
    got = _session(path).run(outs, feeds)[0]
    diff = float(np.abs(got - ref).max())
    if not diff <= FP32_TOLERANCE:
        raise ExportError(f"ONNX denoiser differs from PyTorch by {diff:.2e} (> {FP32_TOLERANCE})")
    return {"max_abs_diff": diff, "batch": 8, "bytes": path.stat().st_size}


class _TemplateGraph(nn.Module):
    """image uint8 NHWC -> (logits, probabilities): the template at K_max rows."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, image):
        logits = self.net(image)
        return logits, torch.softmax(logits, dim=-1)


def _free_class_dims(model: onnx.ModelProto) -> None:
    """Make output dims symbolic [N, k] and drop inferred shapes, so any k rows can be filled in."""
    del model.graph.value_info[:]
    for out in model.graph.output:
        dims = out.type.tensor_type.shape.dim
        dims[0].ClearField("dim_value")
        dims[0].dim_param = "N"
        dims[1].ClearField("dim_value")
        dims[1].dim_param = "k"


def _rename_initializers(model: onnx.ModelProto, names: dict[str, str]) -> None:
    """Give generated tensors their layout names (the export wrapper prefixed them with `net.`)."""
    for init in model.graph.initializer:
        if init.name in names:
            init.name = names[init.name]
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            if name in names:
                node.input[i] = names[name]


def export_template(layout: ParamLayout, generic_state: dict[str, torch.Tensor], path: str | Path, *,
                    opset: int = 17) -> dict:
    """Write template.onnx: frozen (non-generated) weights baked in, generated tensors as named
    initializers at K_max rows; checked by filling random k-class tensors for every k."""
    path = Path(path)
    cfg = layout.cfg
    net = build_model(cfg, cfg.k_max).eval()
    sd = {k: v for k, v in generic_state.items()}
    for s in layout.specs:  # generated tensors: placeholder values at K_max rows
        sd[s.name] = torch.zeros(s.shape)
    net.load_state_dict(sd)
    placeholder = torch.Generator().manual_seed(0)  # seeded: re-exports give the same bytes
    for s in layout.specs:
        # keep each generated tensor a distinct parameter so it stays a named initializer
        p = dict(net.named_parameters())[s.name]
        p.data.copy_(torch.randn(p.shape, generator=placeholder) * 0.01)
    inp = layout.input_spec()
    H, W = inp.height, inp.width
    ex = torch.randint(0, 256, (2, H, W, 3), dtype=torch.uint8)
    _export(_TemplateGraph(net), (ex,), path, input_names("template"), output_names("template"),
            {IMAGE: {0: "N"}, LOGITS: {0: "N", 1: "k"}, PROBABILITIES: {0: "N", 1: "k"}}, opset)
    model = onnx.load(str(path))
    _rename_initializers(model, {f"net.{s.name}": s.name for s in layout.specs})
    inits = {i.name: i for i in model.graph.initializer}
    for s in layout.specs:
        if s.name not in inits or list(inits[s.name].dims) != s.shape:
            raise ExportError(f"template export lost the generated tensor {s.name!r} as an initializer; "
                                "the runtime could not fill it")
    _free_class_dims(model)
    onnx.checker.check_model(model, full_check=True)
    atomic_save_onnx(path, model)
    # parity for every k: fill random tensors into the graph and into torch
    from ..runtime.template import fill_template

    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (8, H, W, 3), dtype=torch.uint8, generator=gen)
    worst = 0.0
    ks = list(range(2, cfg.k_max + 1)) if cfg.k_max <= 10 else sorted({2, 3, cfg.k_max // 2, cfg.k_max - 1, cfg.k_max})
    for k in ks:
        tensors = {}
        for s in layout.specs:
            shape = list(s.shape)
            if s.class_axis is not None:
                shape[s.class_axis] = k
            tensors[s.name] = torch.randn(shape, generator=gen) * 0.1
        tnet = build_model(cfg, k).eval()
        tsd = dict(sd)
        tsd.update(tensors)
        tnet.load_state_dict(tsd)
        with torch.no_grad():
            ref = tnet(images).numpy()
        filled = fill_template(model, {n: t.numpy() for n, t in tensors.items()}, k)
        sess = make_session(filled.SerializeToString(), None, (), level="all", error=None)
        logits, probs = sess.run(output_names("template"), {IMAGE: images.numpy()})
        if logits.shape != (8, k) or not np.allclose(probs.sum(1), 1.0, atol=1e-5):
            raise ExportError(f"template graph gave shape {logits.shape} for k={k}")
        worst = max(worst, float(np.abs(logits - ref).max()))
    if not worst <= FP32_TOLERANCE * 10:
        raise ExportError(f"ONNX template differs from PyTorch by {worst:.2e}")
    return {"max_abs_diff_logits": worst, "k_checked": ks, "bytes": path.stat().st_size}
