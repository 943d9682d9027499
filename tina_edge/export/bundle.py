"""Checkpoint -> edge bundle: every graph exported, parity-checked, hashed into manifest.json.

The bundle is assembled in a temporary sibling directory and renamed into place only when every
check passed, so a failed or interrupted export never leaves a half-written bundle. The last
check runs the real runtime (`tina_edge.runtime.Personalizer`) on the new bundle and compares its
generated parameters with the torch denoiser's (`train.diffusion.sample`) fed the same noise and embeddings.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
from tina_edge.runtime.conditioning import pad_to_slots
from tina_edge.train.workdir import WorkDir
from tina_edge.runtime.atomic import atomic_save_npy
from . import require_torch

require_torch()  # the install hint, not a bare ModuleNotFoundError
import torch  # noqa: E402

from .. import __version__
from ..runtime.atomic import atomic_output_dir
from ..runtime.errors import ArgumentError, ExportError, TextEncoderError
from ..runtime.noise import PortableNoise
from ..runtime.manifest import DenoiserSpec, DiffusionSpec, EvaluationSummary, Manifest, TemplateSpec, write_manifest
from tina_edge.train.diffusion.process import sample
from ..runtime.template import denormalise
from tina_edge.train.diffusion.checkpoint import read_checkpoint
from .graphs import export_denoiser, export_template

from ..runtime.contracts import DENOISER, TEMPLATE  # the bundle's file names, declared once


def _quantize_denoiser(path: Path, quantize: str) -> None:
    from .text_encoder import quantize_model

    tmp = path.with_name("q_" + path.name)
    quantize_model(path, tmp, quantize)
    tmp.replace(path)


def personalize_parity(bundle_dir: Path, ckpt, prompts: list[list[str]], steps: int = 20) -> float:
    """Max abs diff between the runtime's parameters (ONNX graphs) and the torch denoiser's, sampled
    with the same seed, embeddings and sampler (DDIM): a whole run, so only the exported graphs differ."""
    from ..runtime.personalizer import Personalizer

    p = Personalizer.from_bundle(bundle_dir, threads=1)
    layout = ckpt.layout()
    model = ckpt.denoiser(ema=True)
    worst = 0.0
    for seed, names in enumerate(prompts):
        clf = p.personalize(names, sampler="ddim", steps=steps, seed=seed)
        k = len(names)
        emb, mask = (torch.from_numpy(a) for a in pad_to_slots([p.encode(names)], layout.k_max))
        x = sample(model, ckpt.schedule(), emb, mask, PortableNoise(seed), sampler="ddim", steps=steps)
        ref = denormalise(x[0].numpy(), layout.specs, k)
        for name, t in ref.items():
            worst = max(worst, float(np.abs(clf.params[name] - t).max()))
    return worst


def image_prompt_parity(encoder, model_path: Path, image_size: int, seed: int = 0) -> float:
    """Max abs diff, runtime image path (Pillow resize/crop + ONNX) vs open_clip's own preprocess + torch.

    Eight images of varied sizes and aspect ratios (batch 8), so the resize and crop are checked too.
    """
    from ..runtime.image_encoder import ImageEncoderSession

    rng = np.random.default_rng(seed)
    S = int(image_size)
    sizes = [(S, S), (S + 18, S + 38), (S + 38, S + 18), (S // 2 + 1, S // 2 + 7), (2 * S + 3, S + 1),
             (S + 1, 3 * S), (S, S + 2), (7, 5)]
    imgs = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]
    got = ImageEncoderSession(model_path, S, threads=1).encode(imgs)
    return float(np.abs(got - encoder.encode_images(imgs)).max())


def _open_checkpoint(ckpt_path: str | Path, text_encoder: str | None, evaluation: EvaluationSummary | dict | None):
    """Stage 0: the checkpoint, a text encoder that matches it, and its evaluation summary."""
    from tina_edge.train.text.encoders import build_text_encoder

    ck = read_checkpoint(ckpt_path)
    rec = ck.info.require_encoder(ckpt_path)
    enc_spec = text_encoder or rec.spec
    encoder = build_text_encoder(enc_spec)
    if encoder.dim != rec.dim:
        raise TextEncoderError(f"text encoder {enc_spec!r} makes {encoder.dim}-d embeddings but the checkpoint "
                            f"was trained on {rec.dim}-d ones")
    if evaluation is None:
        ev = WorkDir(Path(ckpt_path).parent).eval_json
        evaluation = EvaluationSummary.from_eval_json(json.loads(ev.read_text())) if ev.is_file() else EvaluationSummary()
    return ck, encoder, evaluation


def _export_graphs(tmp: Path, ck, encoder, summary: dict, *, quantize, quantize_denoiser, quantize_trunk, calibration,
                   log: Callable[[str], None], done_stage: Callable[[], None]):
    """Stage 1: every ONNX graph, each parity-checked against PyTorch as it is written; returns the text encoder spec."""
    from tina_edge.train.text.encoders import OpenCLIPEncoder
    from .text_encoder import export_image_encoder, export_text_encoder

    log("exporting text encoder ...")
    te_spec, summary["text_encoder"] = export_text_encoder(encoder, tmp, quantize=quantize)
    done_stage()
    if isinstance(encoder, OpenCLIPEncoder):  # CLIP: ship the image tower too, for image prompts
        log("exporting CLIP image encoder ...")
        te_spec, summary["image_encoder"] = export_image_encoder(encoder, tmp, spec=te_spec)
        diff = image_prompt_parity(encoder, tmp / te_spec.image_encoder, te_spec.image_size)
        summary["image_encoder"]["runtime_max_abs_diff_vs_open_clip"] = diff
        if not diff <= 1e-4:
            raise ExportError(f"runtime image path (resize, crop, ONNX) differs from open_clip by {diff:.2e} (> 1e-4)")
        done_stage()
    log("exporting denoiser ...")
    den = ck.denoiser(ema=True)
    summary["denoiser"] = export_denoiser(den, tmp / DENOISER)
    if quantize_denoiser:
        _quantize_denoiser(tmp / DENOISER, quantize_denoiser)
    done_stage()
    log("exporting classifier template ...")
    layout = ck.layout()
    summary["template"] = export_template(layout, ck.prefixed("generic."), tmp / TEMPLATE)
    if quantize_trunk:
        from .quantize_trunk import quantize_template_int8

        log("quantizing the trunk to int8 ...")
        q = tmp / ("int8_" + TEMPLATE)
        summary["template_int8"] = quantize_template_int8(tmp / TEMPLATE, q, calibration)
        q.replace(tmp / TEMPLATE)
    return te_spec


def _write_bundle_manifest(tmp: Path, ck, te_spec, evaluation: EvaluationSummary | dict, *, default_sampler: str, default_steps: int,
                           quantize_trunk: str | None) -> Manifest:
    """Stage 2: manifest.json through write_manifest, then the portable files (docs/PORTABLE.md)."""
    layout, sched = ck.layout(), ck.schedule()
    manifest = Manifest(
        text_encoder=te_spec,
        diffusion=DiffusionSpec(num_train_timesteps=sched.num_train_timesteps, beta_start=sched.beta_start,
                                beta_end=sched.beta_end, default_sampler=default_sampler,
                                default_steps=default_steps),
        denoiser=DenoiserSpec(model=DENOISER, k_max=layout.k_max, param_count=layout.size,
                              embedding_dim=te_spec.embedding_dim),
        template=TemplateSpec(model=TEMPLATE, name=layout.cfg.name, layout=layout.specs, input=layout.input_spec()),
        training=ck.info.training_info(quantize_trunk),
        evaluation=evaluation,
        producer=f"tina-edge {__version__}",
    )
    if manifest.vocabulary:  # a valid manifest at every step: a large vocabulary needs its embeddings file
        manifest.text_encoder.vocabulary_embeddings = write_vocabulary_embeddings(tmp, manifest)
    write_manifest(tmp, manifest)
    # portable files (generate.onnx, template.onnx rewritten with weights as inputs, tokenizer_config.json; a dynamic-int8
    # text encoder becomes weight-only int8): docs/PORTABLE.md. The parity check runs on them.
    from .portable.generate import add_portable_files

    manifest = add_portable_files(tmp)
    if manifest.vocabulary:  # encoded again by the final (portable) text encoder, as the runtime will
        write_vocabulary_embeddings(tmp, manifest)
        write_manifest(tmp, manifest)
    return manifest


VOCABULARY_EMBEDDINGS = "vocabulary_embeddings.npy"


def write_vocabulary_embeddings(root: Path, manifest: Manifest) -> str:
    """The training vocabulary through the bundle's own tokenizer and text encoder, one name at a
    time (exactly the runtime's `encode`), stored as float16 .npy for the novelty report."""
    from ..runtime.text_encoder import TextEncoderSession
    from ..runtime.tokenizer import Tokenizer

    te = manifest.text_encoder
    tok = Tokenizer.from_file(root / te.tokenizer, max_tokens=te.max_tokens, cleaning=te.cleaning, pad_id=te.pad_id)
    enc = TextEncoderSession(root / te.model, tok, threads=1, cache_size=0)
    emb = enc.encode(manifest.vocabulary).astype(np.float16)
    atomic_save_npy(root / VOCABULARY_EMBEDDINGS, emb, overwrite=True)
    return VOCABULARY_EMBEDDINGS


def _check_personalize_parity(tmp: Path, ck, summary: dict, quantize_denoiser: str | None) -> None:
    """Stage 3: a whole personalize run of the runtime against the torch reference."""
    seen = ck.info.seen_classes
    prompts = [seen[:2], seen[: ck.layout().k_max]]
    summary["personalize_max_abs_diff"] = personalize_parity(tmp, ck, prompts)
    # the reference is fed the runtime's own embeddings, so only a quantized denoiser may differ
    tol = 1e-3 if not quantize_denoiser else float("inf")
    if not summary["personalize_max_abs_diff"] <= tol:
        raise ExportError(f"runtime personalize differs from the torch reference by "
                            f"{summary['personalize_max_abs_diff']:.2e} (> {tol})")


def export_bundle(ckpt_path: str | Path, out_dir: str | Path, *, text_encoder: str | None = None,
                  quantize: str | None = None, quantize_denoiser: str | None = None, overwrite: bool = False,
                  evaluation: EvaluationSummary | dict | None = None, default_sampler: str = "ddim", default_steps: int = 5,
                  log: Callable[[str], None] = print, progress: bool = False, quantize_trunk: str | None = None,
                  calibration: np.ndarray | None = None) -> dict:
    """Export a Tina checkpoint to a bundle directory; returns a summary (files, sizes, parity).

    Named stages: checkpoint -> graphs -> manifest (+ portable files) -> personalize parity, all in a
    temp directory that replaces `out_dir` only when every check passed.
    quantize_trunk="int8" quantizes the template's frozen trunk (static, calibrated on `calibration`,
    uint8 photos [N, H, W, 3] at the template's input size); the generated head stays float."""
    if quantize_trunk not in (None, "int8"):
        raise ArgumentError(f"--quantize-trunk supports int8 only, got {quantize_trunk!r}")
    if quantize_trunk and calibration is None:
        raise ArgumentError("an int8 trunk needs calibration photos (the work dir's universe provides them)")
    from tina_edge.train.text.encoders import OpenCLIPEncoder

    t0 = time.time()
    ck, encoder, evaluation = _open_checkpoint(ckpt_path, text_encoder, evaluation)
    Path(out_dir).parent.mkdir(parents=True, exist_ok=True)
    summary: dict = {"checkpoint": str(ckpt_path), "quantize": quantize, "quantize_denoiser": quantize_denoiser}
    from tqdm.auto import tqdm

    n_stages = 5 if isinstance(encoder, OpenCLIPEncoder) else 4
    bar = tqdm(total=n_stages, desc="export", unit="stage", disable=True)  # shown once the output is free
    user_log = log

    def log(msg: str) -> None:  # noqa: F811 - the bar shows the current stage; the caller's log gets the line
        bar.set_description(msg.rstrip(" ."))
        user_log(msg)

    def done_stage() -> None:
        bar.update(1)

    try:
        with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
            tmp = Path(tmp)
            bar = tqdm(total=n_stages, desc="export", unit="stage", disable=not progress)
            te_spec = _export_graphs(tmp, ck, encoder, summary, quantize=quantize, quantize_denoiser=quantize_denoiser,
                                     quantize_trunk=quantize_trunk, calibration=calibration, log=log,
                                     done_stage=done_stage)
            manifest = _write_bundle_manifest(tmp, ck, te_spec, evaluation, default_sampler=default_sampler,
                                              default_steps=default_steps, quantize_trunk=quantize_trunk)
            summary["portable"] = manifest.portable.to_dict()  # e.g. the text encoder's weight-only rewrite
            done_stage()
            log("checking a whole personalize run against the torch reference ...")
            _check_personalize_parity(tmp, ck, summary, quantize_denoiser)
            done_stage()
            summary["files"] = {n: f["bytes"] for n, f in manifest.files.items()}
            summary["total_bytes"] = sum(summary["files"].values())
            summary["bundle_id"] = manifest.bundle_id
    finally:
        bar.close()  # ends the progress line, so an error message starts on its own line
    summary["seconds"] = time.time() - t0
    summary["bundle"] = str(out_dir)
    return summary
