"""Training Tina: x0-prediction diffusion over the p-model zoo, conditioned on class-name embeddings.

AdamW + warm-up/cosine, grad clipping, EMA (evaluation and export use the EMA weights), class-order
permutation augmentation (classes shuffled, classifier rows permuted alike), K_max slot padding with
a mask, deterministic seeds, resumable checkpoints (one safetensors file: weights, EMA, optimizer
state, RNG state; JSON config in its metadata; no pickles), and data-parallel training under
``torchrun`` (gloo on CPU).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from tina_edge.train.diffusion.checkpoint import CHECKPOINT_FORMAT, CheckpointMeta, read_checkpoint, write_checkpoint
from tina_edge.train.diffusion.denoiser import DenoiserConfig, build_denoiser
from tina_edge.train.diffusion.process import Schedule, diffusion_loss
from tina_edge.train.zoo.templates import ParamLayout
from tina_edge.train.configs import TrainConfig  # noqa: F401 (its home is the torch-free configs.py)


@dataclass
class TinaData:
    """What the diffusion model is trained on: normalised flat p-models and their class embeddings."""

    flats: torch.Tensor  # [M, P] normalised, padded rows 0
    valids: torch.Tensor  # [M, P] bool
    class_ids: list[list[int]]  # per p-model, indices into emb_table (prompt order)
    emb_table: torch.Tensor  # [C, D] L2-normalised text embeddings of the vocabulary, or a bank [C, V, D]
    vocabulary: list[str]
    # With a bank [C, V, D]: class c has emb_counts[c] phrasings (rows 0..count-1 of its V); every
    # training sample draws one of them per class, so phrasings plug in without touching the trainer.
    emb_counts: torch.Tensor | None = None
    # Extra classes without p-models (the ImageNet rows of the text prior): each real class slot is
    # replaced with probability `extra_rate` by a random extra class — its normalised row [E, R] as the
    # target, one of its texts (bank [E, V, D], counts [E]) as the condition — so the denoiser learns
    # its correction over ~1,000 classes instead of memorising 177 (issue 12).
    extra_rows: torch.Tensor | None = None
    extra_bank: torch.Tensor | None = None
    extra_counts: torch.Tensor | None = None
    extra_rate: float = 0.0

    def class_embeddings(self, ids: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Embeddings [..., D] of class ids [...]: the table row, or one phrasing drawn from the bank."""
        if self.emb_table.dim() == 2:
            return self.emb_table[ids]
        counts = self.emb_counts if self.emb_counts is not None else torch.full(
            (self.emb_table.shape[0],), self.emb_table.shape[1], dtype=torch.long)
        v = (torch.rand(ids.shape, generator=gen) * counts[ids]).long().clamp_max(self.emb_table.shape[1] - 1)
        return self.emb_table[ids, v]


def compute_normalisation(layout: ParamLayout, flats: torch.Tensor, valids: torch.Tensor) -> None:
    """Set each TensorSpec's mean/std from the zoo (over real entries); stored in the bundle."""
    for s in layout.specs:
        seg = flats[:, s.offset : s.offset + s.numel][valids[:, s.offset : s.offset + s.numel]]
        s.mean = float(seg.mean())
        s.std = float(seg.std().clamp_min(1e-8))


def normalise(layout: ParamLayout, flats: torch.Tensor, valids: torch.Tensor) -> torch.Tensor:
    out = flats.clone()
    for s in layout.specs:
        sl = slice(s.offset, s.offset + s.numel)
        out[:, sl] = (flats[:, sl] - s.mean) / s.std
    return out * valids


def make_batch(data: TinaData, layout: ParamLayout, idx: torch.Tensor, gen: torch.Generator, emb_noise: float = 0.0):
    """Gather p-models idx with per-sample class-order permutation; returns x0, valid, class_emb, class_mask."""
    B, K = len(idx), layout.k_max
    x0, valid = data.flats[idx].clone(), data.valids[idx].clone()
    perm = torch.arange(K).repeat(B, 1)
    ids = torch.zeros(B, K, dtype=torch.long)
    mask = torch.zeros(B, K)
    for b, i in enumerate(idx.tolist()):
        cls = data.class_ids[i]
        k = len(cls)
        p = torch.randperm(k, generator=gen)
        perm[b, :k] = p
        ids[b, :k] = torch.tensor(cls)[p]
        mask[b, :k] = 1.0
    for s in layout.specs:
        if s.class_axis is None:
            continue
        sl = slice(s.offset, s.offset + s.numel)
        per = s.numel // K
        g = perm[:, :, None].expand(B, K, per)
        x0[:, sl] = x0[:, sl].view(B, K, per).gather(1, g).reshape(B, -1)
        valid[:, sl] = valid[:, sl].view(B, K, per).gather(1, g).reshape(B, -1)
    emb = data.class_embeddings(ids, gen)
    if data.extra_rows is not None and data.extra_rate > 0:
        substitute_extra_classes(data, layout, x0, emb, mask, gen)
    if emb_noise > 0:
        emb = emb + emb_noise * torch.randn(emb.shape, generator=gen)
        emb = emb / emb.norm(dim=-1, keepdim=True)
    return x0, valid.float(), emb * mask.unsqueeze(-1), mask


def substitute_extra_classes(data: TinaData, layout: ParamLayout, x0: torch.Tensor, emb: torch.Tensor,
                             mask: torch.Tensor, gen: torch.Generator) -> None:
    """In place: real slots drawn with probability data.extra_rate get an extra class's row and text."""
    sub = (torch.rand(mask.shape, generator=gen) < data.extra_rate) & (mask > 0)
    b, j = sub.nonzero(as_tuple=True)
    if len(b) == 0:
        return
    e = torch.randint(0, len(data.extra_rows), (len(b),), generator=gen)
    v = (torch.rand(len(b), generator=gen) * data.extra_counts[e]).long().clamp_max(data.extra_bank.shape[1] - 1)
    emb[b, j] = data.extra_bank[e, v]
    at = 0
    for offset, per in layout.row_segments():
        cols = offset + j[:, None] * per + torch.arange(per)
        x0[b[:, None], cols] = data.extra_rows[e, at : at + per]
        at += per


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    prog = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, prog)))


class Trainer:
    """Owns model, EMA, optimizer and RNG; `fit` runs to cfg.steps, checkpointing as it goes."""

    def __init__(self, denoiser_cfg: DenoiserConfig, layout: ParamLayout, data: TinaData, cfg: TrainConfig,
                 schedule: Schedule | None = None, extra_meta: dict | None = None,
                 extra_tensors: dict[str, torch.Tensor] | None = None):
        self.cfg, self.layout, self.data = cfg, layout, data
        self.sched = schedule or Schedule()
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.world = dist.get_world_size() if dist.is_initialized() else 1
        torch.manual_seed(cfg.seed)
        self.model = build_denoiser(denoiser_cfg)
        self.ema = build_denoiser(denoiser_cfg)  # a RowTokenDenoiser when denoiser_cfg.row_segments is set
        self.ema.load_state_dict(self.model.state_dict())
        self.ema.requires_grad_(False)
        decay, no_decay = [], []
        for n, p in self.model.named_parameters():
            (decay if p.dim() >= 2 and not n.startswith("pos") else no_decay).append(p)
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                      {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.999))
        self.gen = torch.Generator().manual_seed(cfg.seed * 1000 + self.rank)
        self.step = 0
        self.extra_meta = extra_meta or {}
        self.extra_tensors = extra_tensors or {}
        self.losses: list[float] = []
        self.ddp = None
        if self.world > 1:
            self.ddp = torch.nn.parallel.DistributedDataParallel(self.model)

    # -- one optimisation step ------------------------------------------------------------------
    def train_step(self) -> float:
        cfg = self.cfg
        idx = torch.randint(0, len(self.data.flats), (cfg.batch_size,), generator=self.gen)
        x0, valid, emb, mask = make_batch(self.data, self.layout, idx, self.gen, cfg.emb_noise)
        for g in self.opt.param_groups:
            g["lr"] = lr_at(self.step, cfg)
        net = self.ddp if self.ddp is not None else self.model
        loss = diffusion_loss(net, self.sched, x0, valid, emb, mask, generator=self.gen)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.opt.step()
        d = min(cfg.ema_decay, (1.0 + self.step) / (10.0 + self.step))
        with torch.no_grad():
            for pe, pm in zip(self.ema.parameters(), self.model.parameters()):
                pe.mul_(d).add_(pm.detach(), alpha=1.0 - d)
        self.step += 1
        return float(loss.detach())

    def fit(self, ckpt_path: str | Path | None = None, save_every: int = 1000, progress: bool = True) -> list[float]:
        bar = tqdm(total=self.cfg.steps, initial=self.step, desc="tina", disable=not progress or self.rank != 0, unit="step")
        while self.step < self.cfg.steps:
            loss = self.train_step()
            self.losses.append(loss)
            bar.update(1)
            if self.step % self.cfg.log_every == 0:
                bar.set_postfix(loss=f"{np.mean(self.losses[-self.cfg.log_every:]):.4f}", lr=f"{lr_at(self.step, self.cfg):.2e}")
            if ckpt_path and (self.step % save_every == 0 or self.step == self.cfg.steps):
                self.save(ckpt_path)
        bar.close()
        return self.losses

    # -- checkpoints ----------------------------------------------------------------------------
    def checkpoint_meta(self) -> CheckpointMeta:
        """What `save` records: configs, layout, progress, and the pipeline's `extra_meta`."""
        opt_groups = [{k: v for k, v in g.items() if k != "params"} for g in self.opt.state_dict()["param_groups"]]
        core = {"format": CHECKPOINT_FORMAT, "step": self.step, "train": asdict(self.cfg),
                "denoiser": self.model.cfg.to_dict(), "schedule": self.sched.to_dict(),
                "template": asdict(self.layout.cfg), "layout": [asdict(s) for s in self.layout.specs],
                "vocabulary": self.data.vocabulary, "optim_groups": opt_groups, "losses_tail": self.losses[-200:]}
        return CheckpointMeta.from_dict(core | self.extra_meta)

    def save(self, path: str | Path) -> None:
        """Rank 0 writes one safetensors file atomically (temp + rename)."""
        if self.rank != 0:
            return
        tensors = {f"model.{k}": v.contiguous() for k, v in self.model.state_dict().items()}
        tensors.update({f"ema.{k}": v.contiguous() for k, v in self.ema.state_dict().items()})
        opt_sd = self.opt.state_dict()
        for pid, st in opt_sd["state"].items():
            for name, v in st.items():
                tensors[f"optim.{pid}.{name}"] = torch.as_tensor(v).contiguous()
        tensors["rng.gen"] = self.gen.get_state()
        tensors["rng.torch"] = torch.get_rng_state()
        tensors.update({k: v.contiguous() for k, v in self.extra_tensors.items()})
        write_checkpoint(path, tensors, self.checkpoint_meta().to_dict())

    def load(self, path: str | Path) -> None:
        """Resume: weights, EMA, optimizer moments, step and RNG state."""
        ck = read_checkpoint(path)
        self.model.load_state_dict(ck.prefixed("model."))
        self.ema.load_state_dict(ck.prefixed("ema."))
        opt_sd = self.opt.state_dict()
        state = {}
        for key, v in ck.tensors.items():
            if key.startswith("optim."):
                _, pid, name = key.split(".", 2)
                state.setdefault(int(pid), {})[name] = v
        opt_sd["state"] = state
        for g, saved in zip(opt_sd["param_groups"], ck.meta["optim_groups"]):
            g.update(saved)
        self.opt.load_state_dict(opt_sd)
        self.gen.set_state(ck.tensors["rng.gen"])
        torch.set_rng_state(ck.tensors["rng.torch"])
        self.step = int(ck.meta["step"])
        self.losses = list(ck.meta.get("losses_tail", []))


def setup_distributed() -> bool:
    """Join a torchrun group (gloo on CPU) when launched under torchrun; no-op otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")
        return True
    return False
