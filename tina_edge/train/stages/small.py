"""The server-side stages, each a function the CLI calls: generic -> zoo -> diffusion -> eval.

Everything a stage makes lives in one work directory:
    generic.safetensors   generic model (+ JSON metadata)      features_{train,test}.npy (head template)
    tasks.json            zoo / ID-test / OOD-test tasks       zoo/  p-models + index.json
    tina.safetensors      the Tina checkpoint (export reads this)  eval/  eval.json, report.md, plot
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tina_edge.train.configs import DEFAULT_PRIOR_MAP, PRIOR_MAPS, DenoiserConfig, GenericConfig
from tina_edge.train.data.small import ImageDataset, load_cifar_pickle, load_idx, load_image_folder, union
from tina_edge.train.zoo.generic import accuracy, extract_features, load_generic, predict_logits, save_generic, train_generic
from tina_edge.train.zoo.tasks import TaskSplit, check_classes, make_task_split
from tina_edge.train.zoo.templates import ParamLayout, TemplateConfig
from tina_edge.train.prior.fit import PriorData
from tina_edge.train.diffusion.text_prior import PriorFit
from tina_edge.train.zoo.pmodels import TaskData, build_zoo, load_zoo


def load_universe(*, cifar10: str | None = None, fashion_mnist: str | None = None, image_folders=(),
                  cifar_pickles=(), split: str = "train", cache_dir: str | None = None) -> ImageDataset:
    """Union of the given sources in a fixed order (CIFAR-10 folder, Fashion-MNIST, others)."""
    if cifar10 and fashion_mnist and not image_folders and not cifar_pickles:
        from tina_edge.train.data.small import load_default_universe

        return load_default_universe(cifar10, fashion_mnist, split, cache_dir=cache_dir)
    parts = []
    if cifar10:
        parts.append(load_image_folder(cifar10, split, name="cifar10"))
    if fashion_mnist:
        parts.append(load_idx(fashion_mnist, split))
    parts += [load_image_folder(p, split) for p in image_folders]
    parts += [load_cifar_pickle(p, split) for p in cifar_pickles]
    if not parts:
        raise ValueError("no dataset given: pass --cifar10, --fashion-mnist, --image-folder or --cifar-pickle")
    return parts[0] if len(parts) == 1 else union(parts)


def _inputs(workdir: Path, cfg: TemplateConfig, model, ds: ImageDataset, split: str) -> torch.Tensor:
    """What the generated part sees: cached trunk features (head template) or raw images (tiny CNN)."""
    if cfg.name != "resnet_head":
        return torch.from_numpy(ds.images)
    path = workdir / f"features_{split}.npy"
    if path.is_file():
        f = np.load(path, allow_pickle=False)
        if len(f) == len(ds):
            return torch.from_numpy(f)
    f = extract_features(model, ds.images).numpy()
    np.save(path, f, allow_pickle=False)
    return torch.from_numpy(f)


def stage_generic(workdir: str | Path, train: ImageDataset, test: ImageDataset, cfg: TemplateConfig, *,
                  epochs: int = GenericConfig.epochs, batch_size: int = GenericConfig.batch_size,
                  lr: float = GenericConfig.lr, seed: int = GenericConfig.seed, progress: bool = True) -> dict:
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    model = train_generic(train.images, train.labels, train.classes, cfg, epochs=epochs, batch_size=batch_size,
                          lr=lr, seed=seed, progress=progress)
    secs = time.time() - t0
    acc = accuracy(predict_logits(model, test.images), test.labels)
    per_class = {}
    logits = predict_logits(model, test.images)
    for j, c in enumerate(test.classes):
        sel = test.labels == j
        per_class[c] = accuracy(logits[torch.from_numpy(sel)], test.labels[sel])
    info = {"test_accuracy": acc, "per_class": per_class, "seconds": secs, "epochs": epochs,
            "train_images": len(train), "datasets": train.name}
    save_generic(workdir / "generic.safetensors", model, cfg, train.classes, info)
    for p in workdir.glob("features_*.npy"):
        p.unlink()
    return info


def stage_zoo(workdir: str | Path, train: ImageDataset, test: ImageDataset, *, holdout: list[str],
              n_tasks: int = 1000, n_id: int = 45, n_ood_per_class: int = 9, k_max: int = 10,
              shard: tuple[int, int] = (0, 1), group: int = 100, steps: int = 100, seed: int = 0,
              progress: bool = True) -> dict:
    workdir = Path(workdir)
    model, cfg, classes, _ = load_generic(workdir / "generic.safetensors")
    if classes != train.classes:
        raise ValueError("the dataset's classes differ from the generic model's; use the same data options")
    check_classes(holdout, classes)
    tasks_path = workdir / "tasks.json"
    if tasks_path.is_file():
        split = TaskSplit.load(tasks_path)
    else:
        split = make_task_split(classes, holdout, n_zoo=n_tasks, n_id=n_id, n_ood_per_class=n_ood_per_class,
                                k_max=min(k_max, cfg.k_max), seed=seed)
        split.save(tasks_path)
    layout = ParamLayout(cfg)
    tr = TaskData(_inputs(workdir, cfg, model, train, "train"), train.labels, classes)
    te = TaskData(_inputs(workdir, cfg, model, test, "test"), test.labels, classes)
    stats = build_zoo(workdir / "zoo", model.state_dict(), layout, tr, te, split.zoo, shard=shard, group=group,
                      steps=steps, seed=seed, progress=progress)
    return stats


def class_embeddings(encoder_spec: str, names: list[str], cache_dir: str | None = None) -> tuple[np.ndarray, dict]:
    from tina_edge.train.text.encoders import build_text_encoder, cached_encode

    enc = build_text_encoder(encoder_spec)
    emb = cached_encode(enc, names, cache_dir) if cache_dir else enc.encode(names)
    return np.asarray(emb, dtype=np.float32), {"kind": enc.kind, "name": enc.name, "spec": encoder_spec, "dim": enc.dim}


def stage_diffusion(workdir: str | Path, *, text_encoder: str = "minilm", hidden: int = DenoiserConfig.hidden,
                    layers: int = DenoiserConfig.layers, heads: int = DenoiserConfig.heads, chunk_size: int = 64,
                    slot_conditioning: bool = True, train_cfg=None, resume: bool = False,
                    ckpt_name: str = "tina.safetensors", progress: bool = True, emb_cache: str | None = None,
                    row_tokens: bool | None = None, emb_bank: str | None = None, text_prior: str | None = None,
                    extra_rate: float = 0.0, prior_keys: bool = True, prior_map: str = DEFAULT_PRIOR_MAP) -> dict:
    """Train the denoiser on the zoo. `row_tokens` (default: on for head templates) gives one token per
    class row; `emb_bank` is an .npz with `bank` [C, V, D] (L2-normalised phrasings per class, in the
    generic model's class order) and `counts` [C]: each step draws one phrasing per class.
    `text_prior` ("zoo" or "imagenet", row tokens only) puts a calibrated ridge text -> row map in the
    denoiser (train/text_prior.py), fitted on the zoo's seen rows and, with "imagenet", on ImageNet's
    classifier rows under their names and definitions; with "imagenet", `extra_rate` of the class slots
    in training are ImageNet classes (their rows and texts), see TinaData. `prior_keys` makes the prior
    return the zoo's mean row exactly for seen names (TextPrior's kernel term; the denoiser then learns
    only how p-models vary around it) and drops the prior's input projection. `prior_map` "kernel" fits
    the prior on kernel features of the embedding (one key per training class), "linear" on the
    embedding itself (BENCHMARKS §13)."""
    from tina_edge.train.diffusion.trainer import Trainer, TinaData, TrainConfig, compute_normalisation, normalise, setup_distributed

    setup_distributed()
    workdir = Path(workdir)
    generic, cfg, classes, ginfo = load_generic(workdir / "generic.safetensors")
    split = TaskSplit.load(workdir / "tasks.json")
    layout = ParamLayout(cfg)
    flats, valids, entries = load_zoo(workdir / "zoo", layout)
    compute_normalisation(layout, flats, valids)
    emb, enc_info = class_embeddings(text_encoder, classes, emb_cache)
    name_to_idx = {c: i for i, c in enumerate(classes)}
    table, counts, enc_info = _embedding_table(emb, emb_bank, classes, enc_info)
    data = TinaData(flats=normalise(layout, flats, valids), valids=valids,
                    class_ids=[[name_to_idx[c] for c in e["classes"]] for e in entries],
                    emb_table=table, vocabulary=classes, emb_counts=counts)
    prior = (_fit_text_prior(workdir, layout, flats, entries, classes, split.seen, emb, text_encoder, emb_cache,
                             text_prior, prior_map) if text_prior else None)
    dcfg = _denoiser_config(layout, cfg.name, emb.shape[1], hidden=hidden, layers=layers, heads=heads,
                            chunk_size=chunk_size, slot_conditioning=slot_conditioning, row_tokens=row_tokens,
                            text_prior=text_prior, prior_keys=len(split.seen) if text_prior and prior_keys else 0,
                            prior_kernel=len(prior.fit.kernel_keys) if prior and prior.fit.kernel_keys is not None else 0)
    tcfg = train_cfg or TrainConfig()
    extra_meta = {"text_encoder": enc_info, "classes": classes, "holdout": split.holdout,
                  "seen": split.seen, "generic_info": ginfo,
                  "zoo": {"count": len(entries), "mean_accuracy": float(np.mean([e["accuracy"] for e in entries]))}}
    if (workdir / "classes.json").is_file():  # photo universe: WordNet synonyms travel into the manifest
        import json

        extra_meta["synonyms"] = {c["name"]: c["synonyms"] for c in json.loads((workdir / "classes.json").read_text())}
    extra_tensors = {f"generic.{k}": v for k, v in generic.state_dict().items()} | {"vocab_emb": torch.from_numpy(emb)}
    trainer = Trainer(dcfg, layout, data, tcfg, extra_meta=extra_meta, extra_tensors=extra_tensors)
    if prior is not None:
        trainer.extra_meta.update(_install_text_prior(trainer, layout, prior, extra_rate))
    ckpt = workdir / ckpt_name
    if resume and ckpt.is_file():
        trainer.load(ckpt)
    t0 = time.time()
    losses = trainer.fit(ckpt, progress=progress)
    secs = time.time() - t0
    trainer.save(ckpt)
    return {"steps": trainer.step, "seconds": secs, "final_loss": float(np.mean(losses[-100:])) if losses else None,
            "denoiser_params": trainer.model.num_params(), "checkpoint": str(ckpt)}


def _embedding_table(emb: np.ndarray, emb_bank: str | None, classes: list[str], enc_info: dict):
    """The class-embedding table [C, D], or a phrasing bank [C, V, D] with counts [C] from `emb_bank`."""
    if not emb_bank:
        return torch.from_numpy(emb), None, enc_info
    with np.load(emb_bank, allow_pickle=False) as z:
        table, counts = torch.from_numpy(z["bank"].astype(np.float32)), torch.from_numpy(z["counts"].astype(np.int64))
    if table.dim() != 3 or table.shape[0] != len(classes) or table.shape[2] != emb.shape[1] or len(counts) != len(classes):
        raise ValueError(f"{emb_bank}: bank must be [{len(classes)}, V, {emb.shape[1]}] with counts [{len(classes)}]")
    return table, counts, enc_info | {"bank": str(emb_bank), "phrasings_max": int(table.shape[1])}


def _denoiser_config(layout, template: str, text_dim: int, *, hidden: int, layers: int, heads: int, chunk_size: int,
                     slot_conditioning: bool, row_tokens: bool | None, text_prior: str | None, prior_keys: int,
                     prior_kernel: int = 0):
    """The denoiser's shape for this layout: row tokens for head templates (default for lite0_head)."""
    from tina_edge.train.zoo.templates import HEAD_TEMPLATES

    rows = (template == "lite0_head") if row_tokens is None else row_tokens
    if rows and template not in HEAD_TEMPLATES:
        raise ValueError("row tokens need a head template (resnet_head or lite0_head)")
    if text_prior and not rows:
        raise ValueError("--text-prior needs row tokens (a head template)")
    return DenoiserConfig(param_count=layout.size, chunks=layout.chunks(chunk_size), k_max=layout.k_max,
                          text_dim=text_dim, hidden=hidden, layers=layers, heads=heads,
                          chunk_slots=layout.chunk_slots(chunk_size) if slot_conditioning and not rows else None,
                          row_segments=layout.row_segments() if rows else None, text_prior=bool(text_prior),
                          prior_keys=prior_keys, prior_input=not (text_prior and prior_keys), prior_kernel=prior_kernel)


@dataclass
class FittedPrior:
    """A text prior fitted before the denoiser exists, and what installing it needs."""

    fit: PriorFit
    info: dict
    extra: PriorData | None
    zoo_rows: np.ndarray  # [S, R] the seen classes' zoo mean rows
    seen_emb: np.ndarray  # [S, D] their names' embeddings, L2-normalised
    kind: str


def _fit_text_prior(workdir: Path, layout, flats, entries, classes, seen, emb, text_encoder: str,
                    emb_cache: str | None, kind: str, prior_map: str) -> FittedPrior:
    """Fit the text prior before the denoiser is built (a kernel map's key count sets its buffers)."""
    import json

    from tina_edge.train.evaluation.baselines import zoo_class_rows
    from tina_edge.train.text.encoders import build_text_encoder, cached_encode
    from tina_edge.train.prior.fit import build_text_prior, imagenet_prior_data

    if kind not in ("zoo", "imagenet"):
        raise ValueError(f"--text-prior must be 'zoo' or 'imagenet', not {kind!r}")
    if prior_map not in PRIOR_MAPS:
        raise ValueError(f"--prior-map must be one of {', '.join(PRIOR_MAPS)}, not {prior_map!r}")
    cj = workdir / "classes.json"
    universe = json.loads(cj.read_text()) if cj.is_file() else None
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    rows, counts = zoo_class_rows(layout, flats, entries, classes)
    c2i = {c: i for i, c in enumerate(classes)}
    seen_idx = [c2i[c] for c in seen if counts[c2i[c]] > 0]
    zoo_rows = rows[seen_idx].numpy().astype(np.float64)
    extra = None
    if kind == "imagenet":
        if universe is None:
            raise ValueError("--text-prior imagenet needs the workdir's classes.json (holdout and synonyms)")
        enc = build_text_encoder(text_encoder)  # only the ImageNet texts need encoding here
        extra = imagenet_prior_data(zoo_rows, universe,
                                    (lambda t: cached_encode(enc, t, emb_cache)) if emb_cache else enc.encode)
    fit, info = build_text_prior(zoo_rows=zoo_rows, seen_emb=unit[seen_idx], extra=extra, kernel=prior_map == "kernel")
    if len(seen_idx) != len(seen):
        info["seen_without_pmodel"] = len(seen) - len(seen_idx)
    return FittedPrior(fit, info, extra, zoo_rows, unit[seen_idx], kind)


def _install_text_prior(trainer, layout, prior: FittedPrior, extra_rate: float) -> dict:
    """Copy a fitted prior into the model and its EMA; returns checkpoint metadata."""
    from tina_edge.train.diffusion.text_prior import row_normalisation

    extra = prior.extra
    vocab_extra = extra.vocabulary if extra is not None else []
    flags, mean, std = row_normalisation(layout)
    for m in (trainer.model, trainer.ema):
        m.prior.load_fit(prior.fit, flags, mean, std)
        if m.prior.n_keys:
            if m.prior.n_keys != len(prior.zoo_rows):
                raise ValueError(f"{prior.info.get('seen_without_pmodel', 0)} seen classes have no p-model in the zoo; "
                                 "rebuild the zoo or train with --no-prior-keys")
            m.prior.load_keys(prior.seen_emb, prior.zoo_rows)
    if extra is not None and extra_rate > 0:
        counts = np.bincount(extra.owner, minlength=len(extra.rows))
        bank = torch.zeros(len(extra.rows), int(counts.max()), extra.emb.shape[1])
        for j in range(len(extra.rows)):
            bank[j, : counts[j]] = torch.from_numpy(extra.emb[extra.owner == j])
        trainer.data.extra_rows = torch.from_numpy((extra.rows - mean) / std).float()
        trainer.data.extra_bank, trainer.data.extra_counts = bank, torch.from_numpy(counts)
        trainer.data.extra_rate = float(extra_rate)
    return {"text_prior": prior.info | {"kind": prior.kind, "extra_rate": extra_rate if extra is not None else 0.0},
            "vocabulary_extra": vocab_extra}


def stage_eval(workdir: str | Path, train: ImageDataset, test: ImageDataset, *, ckpt: str | Path | None = None,
               sampler: str = "ddpm", steps: int = 1000, seed: int = 0, out_dir: str | Path | None = None,
               progress: bool = True, image_prompts: tuple[int, ...] = ()) -> dict:
    """Evaluate a checkpoint on the held-out ID/OOD tasks; writes eval/{eval.json,report.md,png}.

    `image_prompts` (e.g. (1, 5, 10); CLIP checkpoints only) adds rows where each class is prompted
    by that many example images from the train split instead of its name.
    """
    from tina_edge.train.evaluation.evaluate import evaluate, evaluate_image_prompts, image_prompt_encoder, write_report
    from tina_edge.train.diffusion.checkpoint import read_checkpoint

    workdir = Path(workdir)
    ck = read_checkpoint(ckpt or workdir / "tina.safetensors")
    clip = image_prompt_encoder(ck) if image_prompts else None  # refuse non-CLIP before the long text eval
    generic, cfg, classes, _ = load_generic(workdir / "generic.safetensors")
    split = TaskSplit.load(workdir / "tasks.json")
    tr = TaskData(_inputs(workdir, cfg, generic, train, "train"), train.labels, classes)
    te = TaskData(_inputs(workdir, cfg, generic, test, "test"), test.labels, classes)
    result = evaluate(ck, te, tr, split.id_test, split.ood_test, split.holdout, sampler=sampler, steps=steps,
                      seed=seed, progress=progress)
    if clip is not None:
        c2i = {c: i for i, c in enumerate(classes)}
        labels = np.array([c2i[train.classes[j]] for j in train.labels], dtype=np.int64)
        result["image_prompts"] = evaluate_image_prompts(
            ck, te, train.images, labels, split.id_test, split.ood_test, shots=tuple(image_prompts),
            sampler=sampler, steps=steps, seed=seed, encoder=clip)
        result["summary"]["image_prompts"] = result["image_prompts"]["summary"]
    result["zoo"] = ck.info.zoo or {}
    result["generic"] = {k: v for k, v in (ck.info.generic_info or {}).items() if k != "per_class"}
    write_report(result, out_dir or workdir / "eval")
    return result
