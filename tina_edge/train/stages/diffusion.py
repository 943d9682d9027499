"""The diffusion stage, shared by both universes: zoo + class embeddings (+ text prior) -> denoiser.

One `DiffusionOptions` (train/configs.py) carries every setting from the CLI to here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tina_edge.train.configs import PRIOR_MAPS, DenoiserConfig, DiffusionOptions
from tina_edge.train.diffusion.text_prior import PriorFit
from tina_edge.train.prior.fit import PriorData
from tina_edge.train.text.phrasings import PhrasingBank
from tina_edge.train.workdir import WorkDir
from tina_edge.train.zoo.generic import load_generic
from tina_edge.train.zoo.pmodels import load_zoo
from tina_edge.train.zoo.tasks import TaskSplit
from tina_edge.train.zoo.templates import ParamLayout


def class_embeddings(encoder_spec: str, names: list[str], cache_dir: str | None = None) -> tuple[np.ndarray, dict]:
    from tina_edge.train.text.encoders import build_text_encoder, cached_encode

    enc = build_text_encoder(encoder_spec)
    emb = cached_encode(enc, names, cache_dir) if cache_dir else enc.encode(names)
    return np.asarray(emb, dtype=np.float32), {"kind": enc.kind, "name": enc.name, "spec": encoder_spec, "dim": enc.dim}


def stage_diffusion(workdir: str | Path, opts: DiffusionOptions | None = None) -> dict:
    """Train the denoiser on the zoo (either universe), as `opts` says (train/configs.py DiffusionOptions).

    Row tokens (default for lite0_head) give one token per class row; a phrasing bank (`emb_bank`:
    bank [C, V, D], counts [C], the generic model's class order) draws one phrasing per class per step.
    A text prior ("zoo" or "imagenet", row tokens only) puts a calibrated text -> row map in the
    denoiser (train/prior/fit.py), fitted on the zoo's seen rows and, with "imagenet", on ImageNet's
    rows under their names and definitions; `prior_keys` makes it return the zoo's mean row exactly
    for seen names; `prior_map` "kernel" fits it on kernel features of the embedding (BENCHMARKS §13).
    """
    from tina_edge.train.diffusion.trainer import Trainer, TinaData, compute_normalisation, normalise, setup_distributed

    o = opts or DiffusionOptions()
    setup_distributed()
    wd = WorkDir(workdir)
    emb_cache = o.emb_cache or str(wd.emb_cache)
    generic, cfg, classes, ginfo = load_generic(wd.generic)
    split = TaskSplit.load(wd.tasks)
    layout = ParamLayout(cfg)
    flats, valids, entries = load_zoo(wd.zoo, layout)
    compute_normalisation(layout, flats, valids)
    emb, enc_info = class_embeddings(o.text_encoder, classes, emb_cache)
    name_to_idx = {c: i for i, c in enumerate(classes)}
    table, counts, enc_info = _embedding_table(emb, o.emb_bank, classes, enc_info)
    data = TinaData(flats=normalise(layout, flats, valids), valids=valids,
                    class_ids=[[name_to_idx[c] for c in e["classes"]] for e in entries],
                    emb_table=table, vocabulary=classes, emb_counts=counts)
    prior = (_fit_text_prior(wd, layout, flats, entries, classes, split.seen, emb, o.text_encoder, emb_cache,
                             o.text_prior, o.prior_map) if o.text_prior else None)
    dcfg = _denoiser_config(layout, cfg.name, emb.shape[1], o,
                            prior_keys=len(split.seen) if o.text_prior and o.prior_keys else 0,
                            prior_kernel=len(prior.fit.kernel_keys) if prior and prior.fit.kernel_keys is not None else 0)
    extra_meta = {"text_encoder": enc_info, "classes": classes, "holdout": split.holdout,
                  "seen": split.seen, "generic_info": ginfo,
                  "zoo": {"count": len(entries), "mean_accuracy": float(np.mean([e["accuracy"] for e in entries]))}}
    universe = wd.classes()
    if universe is not None:  # photo universe: WordNet synonyms travel into the manifest
        extra_meta["synonyms"] = {c["name"]: c["synonyms"] for c in universe}
    extra_tensors = {f"generic.{k}": v for k, v in generic.state_dict().items()} | {"vocab_emb": torch.from_numpy(emb)}
    trainer = Trainer(dcfg, layout, data, o.train, extra_meta=extra_meta, extra_tensors=extra_tensors)
    if prior is not None:
        trainer.extra_meta.update(_install_text_prior(trainer, layout, prior, o.extra_rate))
    ckpt = wd.checkpoint(o.ckpt_name)
    if o.resume and ckpt.is_file():
        trainer.load(ckpt)
    t0 = time.time()
    losses = trainer.fit(ckpt, progress=o.progress)
    secs = time.time() - t0
    trainer.save(ckpt)
    return {"steps": trainer.step, "seconds": secs, "final_loss": float(np.mean(losses[-100:])) if losses else None,
            "denoiser_params": trainer.model.num_params(), "checkpoint": str(ckpt)}


def _embedding_table(emb: np.ndarray, emb_bank: str | None, classes: list[str], enc_info: dict):
    """The class-embedding table [C, D], or a phrasing bank [C, V, D] with counts [C] from `emb_bank`."""
    if not emb_bank:
        return torch.from_numpy(emb), None, enc_info
    b = PhrasingBank.load(emb_bank, classes=len(classes), dim=emb.shape[1])
    table, counts = torch.from_numpy(b.bank), torch.from_numpy(b.counts)
    return table, counts, enc_info | {"bank": str(emb_bank), "phrasings_max": int(table.shape[1])}


def _denoiser_config(layout, template: str, text_dim: int, o: DiffusionOptions, *, prior_keys: int,
                     prior_kernel: int = 0) -> DenoiserConfig:
    """The denoiser's shape for this layout: row tokens for head templates (default for lite0_head)."""
    from tina_edge.train.zoo.templates import HEAD_TEMPLATES

    text_prior, chunk_size = o.text_prior, o.chunk_size
    rows = (template == "lite0_head") if o.row_tokens is None else o.row_tokens
    if rows and template not in HEAD_TEMPLATES:
        raise ValueError("row tokens need a head template (resnet_head or lite0_head)")
    if text_prior and not rows:
        raise ValueError("--text-prior needs row tokens (a head template)")
    return DenoiserConfig(param_count=layout.size, chunks=layout.chunks(chunk_size), k_max=layout.k_max,
                          text_dim=text_dim, hidden=o.hidden, layers=o.layers, heads=o.heads,
                          chunk_slots=layout.chunk_slots(chunk_size) if o.slot_conditioning and not rows else None,
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


def _fit_text_prior(wd: WorkDir, layout, flats, entries, classes, seen, emb, text_encoder: str,
                    emb_cache: str | None, kind: str, prior_map: str) -> FittedPrior:
    """Fit the text prior before the denoiser is built (a kernel map's key count sets its buffers)."""
    from tina_edge.train.evaluation.baselines import zoo_class_rows
    from tina_edge.train.text.encoders import build_text_encoder, cached_encode
    from tina_edge.train.prior.fit import build_text_prior, imagenet_prior_data

    if kind not in ("zoo", "imagenet"):
        raise ValueError(f"--text-prior must be 'zoo' or 'imagenet', not {kind!r}")
    if prior_map not in PRIOR_MAPS:
        raise ValueError(f"--prior-map must be one of {', '.join(PRIOR_MAPS)}, not {prior_map!r}")
    universe = wd.classes()
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
