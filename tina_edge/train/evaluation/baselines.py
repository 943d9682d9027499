"""The baselines a generated classifier head must beat, all on the same rows-and-features footing.

For head templates (a linear head on a frozen trunk) a k-class model is k rows, one per class,
row = [weight (F numbers), bias]. Every method here turns a task (its class texts, in prompt
order) into such rows, so one scoring function serves Tina, the references and the baselines:
  zoo-average  -- the mean row of a class over every p-model that contains it (seen names only)
  ridge        -- seen names look up their zoo row; other names get a ridge map text -> row fit on
                  the seen classes (regularisation by closed-form leave-one-out)
  ridge-l2     -- the same fit on rows scaled to unit weight norm, predictions rescaled to the
                  seen rows' mean norm (raw ridge rows are shrunk and lose to full-scale seen rows)
  nearest-seen -- other names take the zoo row of the nearest training-vocabulary text whose
                  class is not already in the task (what a lookup table does)
  direct       -- an MLP text -> row trained with the classification loss on seen-class features
                  (no diffusion): the baseline that tells whether diffusion earns its place
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from tina_edge.runtime.errors import TrainingError
from tina_edge.train.prior.ridge import RidgeMap, fit_ridge  # noqa: F401 (the ridge baselines' map)
from tina_edge.train.zoo.templates import ParamLayout

# ------------------------------------------------------------------------------------------ rows


def check_head_layout(layout: ParamLayout) -> None:
    """Baselines exist for generated heads only (every generated tensor has a class axis 0)."""
    if any(s.class_axis != 0 for s in layout.specs):
        raise TrainingError(f"row baselines need a head template (every generated tensor per class); "
                            f"{layout.cfg.name!r} also generates shared tensors")


def row_dim(layout: ParamLayout) -> int:
    return sum(s.numel // s.shape[0] for s in layout.specs)


def pack_rows(layout: ParamLayout, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """k-class head tensors -> rows [k, R] (tensors in layout order, each flattened per class)."""
    return torch.cat([params[s.name].reshape(params[s.name].shape[0], -1).float() for s in layout.specs], dim=1)


def unpack_rows(layout: ParamLayout, rows: torch.Tensor) -> dict[str, torch.Tensor]:
    """rows [k, R] -> k-class head tensors."""
    out, at = {}, 0
    k = rows.shape[0]
    for s in layout.specs:
        per = s.numel // s.shape[0]
        out[s.name] = rows[:, at : at + per].reshape(k, *s.shape[1:])
        at += per
    return out


def head_logits(rows: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
    """Linear head as rows: the last column is the bias (the layout of every head template here)."""
    return feats @ rows[:, :-1].T + rows[:, -1]


def zoo_class_rows(layout: ParamLayout, flats: torch.Tensor, entries: list[dict], classes: list[str]):
    """Mean row per class over the zoo's p-models [C, R] (NaN for classes in none) and counts [C]."""
    check_head_layout(layout)
    c2i = {c: i for i, c in enumerate(classes)}
    R = row_dim(layout)
    acc, cnt = torch.zeros(len(classes), R, dtype=torch.float64), torch.zeros(len(classes))
    for flat, e in zip(flats, entries):
        k = len(e["classes"])
        rows = pack_rows(layout, layout.unflatten(flat, k))
        idx = torch.tensor([c2i[c] for c in e["classes"]])
        acc.index_add_(0, idx, rows.double())
        cnt.index_add_(0, idx, torch.ones(k))
    out = (acc / cnt.clamp_min(1)[:, None]).float()
    out[cnt == 0] = float("nan")
    return out, cnt


# ------------------------------------------------------------------------------------ nearest seen


def nearest_known(query: np.ndarray, vocab_emb: np.ndarray, vocab_class: np.ndarray, exclude: set[int]) -> tuple[int, float]:
    """(class, cosine) of the vocabulary text nearest to `query` whose class is not in `exclude`."""
    q = query / max(float(np.linalg.norm(query)), 1e-12)
    v = vocab_emb / np.maximum(np.linalg.norm(vocab_emb, axis=1, keepdims=True), 1e-12)
    sims = v @ q
    ok = np.array([c not in exclude for c in vocab_class])
    if not ok.any():
        raise TrainingError("every known class is already in the task; nothing left to look up")
    j = int(np.argmax(np.where(ok, sims, -np.inf)))
    return int(vocab_class[j]), float(sims[j])


# ------------------------------------------------------------------------------------------ direct


@dataclass
class DirectConfig:
    hidden: int = 512
    depth: int = 2
    steps: int = 2000
    tasks_per_step: int = 32
    images_per_task: int = 64
    k_min: int = 2
    k_max: int = 10
    lr: float = 1e-3
    weight_decay: float = 1e-4
    emb_noise: float = 0.0
    seed: int = 0


class TextToHead(nn.Module):
    """MLP text embedding -> head row (weights + bias); L2-normalised input, as the encoders give."""

    def __init__(self, text_dim: int, row_dim: int, hidden: int = 1024, depth: int = 2):
        super().__init__()
        layers, d = [], text_dim
        for _ in range(depth - 1):
            layers += [nn.Linear(d, hidden), nn.LayerNorm(hidden), nn.GELU()]
            d = hidden
        layers.append(nn.Linear(d, row_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.net(F.normalize(emb, dim=-1))


def train_direct(bank: torch.Tensor, counts: torch.Tensor, train_inputs: torch.Tensor, by_class: list[torch.Tensor],
                 classes_idx: list[int], cfg: DirectConfig, progress: bool = False) -> tuple[TextToHead, list[float]]:
    """Fit TextToHead with cross-entropy on k-way tasks of the given (seen) classes.

    `bank` [C, V, D] holds up to V phrasing embeddings per class (`counts[c]` of them real); each
    task slot draws one at random, so the network learns from every phrasing. Features are the
    cached trunk features `train_inputs` [N, F]; `by_class[c]` lists class c's feature indices.
    """
    from tqdm.auto import tqdm

    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    Fdim = train_inputs.shape[1]
    model = TextToHead(bank.shape[-1], Fdim + 1, cfg.hidden, cfg.depth)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    pool = torch.tensor(classes_idx)
    C = len(pool)
    # feature indices per pool class, padded, so a batch of labels draws its images in one gather
    n_max = max(len(by_class[c]) for c in classes_idx)
    pad = torch.zeros(C, n_max, dtype=torch.long)
    n_c = torch.tensor([len(by_class[c]) for c in classes_idx])
    for j, c in enumerate(classes_idx):
        pad[j, : n_c[j]] = by_class[c]
    M, K, n = cfg.tasks_per_step, min(cfg.k_max, C), cfg.images_per_task
    losses = []
    for step in tqdm(range(cfg.steps), desc="direct text->head", disable=not progress):
        # one phrasing per class this step; rows for every pool class at once (cheaper than per slot)
        v = (torch.rand(C, generator=gen) * counts[pool].float()).long()
        emb = bank[pool, v]
        if cfg.emb_noise > 0:
            emb = emb + cfg.emb_noise * torch.randn(emb.shape, generator=gen)
        rows_all = model(emb)  # [C, F+1]
        ks = torch.randint(cfg.k_min, K + 1, (M,), generator=gen)
        cls = torch.stack([torch.randperm(C, generator=gen)[:K] for _ in range(M)])  # [M, K] local ids
        mask = torch.arange(K)[None, :] < ks[:, None]
        slots = (torch.rand(M, n, generator=gen) * ks[:, None].float()).long()  # [M, n]
        lab = cls.gather(1, slots)
        idx = pad[lab, (torch.rand(M, n, generator=gen) * n_c[lab].float()).long()]
        rows = rows_all[cls]  # [M, K, F+1]
        x = train_inputs[idx].float()  # [M, n, F]
        logits = torch.einsum("mnf,mkf->mnk", x, rows[..., :-1]) + rows[..., -1][:, None, :]
        logits = logits.masked_fill(~mask[:, None, :], -1e9)
        loss = F.cross_entropy(logits.reshape(-1, K), slots.reshape(-1))
        lr = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / max(1, cfg.steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return model.eval(), losses


@torch.no_grad()
def direct_rows(model: TextToHead, emb: np.ndarray | torch.Tensor) -> torch.Tensor:
    return model(torch.as_tensor(np.asarray(emb), dtype=torch.float32))


def direct_generator(model: TextToHead, layout: ParamLayout):
    """(class_emb [B, K, D], class_mask [B, K]) -> flat parameters [B, P]: the direct network used
    where Tina's sampler would be (padded slots zero), e.g. to compare on identical code paths."""
    check_head_layout(layout)

    @torch.no_grad()
    def gen(emb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, K = mask.shape
        rows = model(emb.float()) * mask[..., None]  # [B, K, R]
        flat = torch.zeros(B, layout.size)
        at = 0
        for s in layout.specs:
            per = s.numel // s.shape[0]
            flat[:, s.offset : s.offset + s.numel] = rows[:, :, at : at + per].reshape(B, -1)
            at += per
        return flat

    return gen
