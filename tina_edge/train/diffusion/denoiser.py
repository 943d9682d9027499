"""The Tina denoiser: a non-causal transformer over [class tokens | timestep token | parameter chunks].

Read top to bottom, nanoGPT style. One forward is one denoising step:
    x_t [B, P] noisy normalised params, t [B] int64, class_emb [B, K_max, D], class_mask [B, K_max]
    -> predicted x0 [B, P]
Each parameter chunk (a slice that never crosses a layer boundary) has its own linear in/out
projection; sequence positions are learned. Padded class slots (mask 0) are hidden from attention.
Only plain ops (Linear, LayerNorm, matmul, softmax, gather) are used so the ONNX export is exact.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from tina_edge.train.configs import DenoiserConfig  # noqa: F401 (its home is the torch-free configs.py)
from tina_edge.train.diffusion.text_prior import TextPrior


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps [B] -> [B, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.to(torch.float32)[:, None] * freqs[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class SelfAttention(nn.Module):
    def __init__(self, cfg: DenoiserConfig):
        super().__init__()
        self.heads = cfg.heads
        self.scale = 1.0 / math.sqrt(cfg.hidden // cfg.heads)
        self.qkv = nn.Linear(cfg.hidden, 3 * cfg.hidden)
        self.proj = nn.Linear(cfg.hidden, cfg.hidden)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor) -> torch.Tensor:
        B, S, H = x.shape
        q, k, v = self.qkv(x).split(H, dim=2)
        q = q.view(B, S, self.heads, H // self.heads).transpose(1, 2)
        k = k.view(B, S, self.heads, H // self.heads).transpose(1, 2)
        v = v.view(B, S, self.heads, H // self.heads).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * self.scale + attn_bias
        att = self.drop(F.softmax(att, dim=-1))
        y = (att @ v).transpose(1, 2).reshape(B, S, H)
        return self.drop(self.proj(y))


class Block(nn.Module):
    def __init__(self, cfg: DenoiserConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.hidden)
        self.attn = SelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.hidden)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.hidden, cfg.mlp_ratio * cfg.hidden), nn.GELU(),
            nn.Linear(cfg.mlp_ratio * cfg.hidden, cfg.hidden), nn.Dropout(cfg.dropout),
        )

    def forward(self, x, attn_bias):
        x = x + self.attn(self.ln1(x), attn_bias)
        return x + self.mlp(self.ln2(x))


class TinaDenoiser(nn.Module):
    """What every Tina denoiser shares: its config, the gather/scatter between the flat parameter
    vector and tokens, the timestep MLP, the transformer blocks and the final norm.

    Build one with `build_denoiser(cfg)`, which names the variant the config asks for:
    `ChunkTokenDenoiser` (the paper's chunks of any template) or `RowTokenDenoiser` (one token per
    head row, `cfg.row_segments`). The forward pass is the subclass's.
    """

    def __init__(self, cfg: DenoiserConfig):
        if type(self) is TinaDenoiser:
            raise TypeError("TinaDenoiser is the shared base; build a denoiser with build_denoiser(cfg)")
        super().__init__()
        self.cfg = cfg

    def _register_token_index(self, gather: torch.Tensor, scatter: torch.Tensor) -> None:
        """flat parameters -> token slots (`gather`) and back (`scatter`); not saved (rebuilt from cfg)."""
        self.register_buffer("gather_idx", gather.reshape(-1), persistent=False)
        self.register_buffer("scatter_idx", scatter, persistent=False)

    def _add_time_mlp(self) -> None:
        H = self.cfg.hidden
        self.time_mlp = nn.Sequential(nn.Linear(H, H), nn.SiLU(), nn.Linear(H, H))

    def _add_blocks(self) -> None:
        self.blocks = nn.ModuleList([Block(self.cfg) for _ in range(self.cfg.layers)])
        self.ln_f = nn.LayerNorm(self.cfg.hidden)

    def _run_blocks(self, h: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """The blocks over tokens `h`, with key mask `keep` (0 = a padded class slot, invisible)."""
        attn_bias = ((1.0 - keep) * -1e9).view(h.shape[0], 1, 1, -1)
        for blk in self.blocks:
            h = blk(h, attn_bias)
        return h

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


class ChunkTokenDenoiser(TinaDenoiser):
    """The paper's layout: [K class tokens | timestep | parameter chunks], each chunk its own projection."""

    def __init__(self, cfg: DenoiserConfig):
        super().__init__(cfg)
        n, c, H = len(cfg.chunks), max(l for _, l in cfg.chunks), cfg.hidden
        self.n_chunks, self.chunk_max = n, c
        # gather index: token j, slot i -> flat index (P = the appended zero column for padding)
        gather = torch.full((n, c), cfg.param_count, dtype=torch.long)
        scatter = torch.empty(cfg.param_count, dtype=torch.long)
        for j, (s, l) in enumerate(cfg.chunks):
            gather[j, :l] = torch.arange(s, s + l)
            scatter[s : s + l] = j * c + torch.arange(l)
        covered = torch.zeros(cfg.param_count, dtype=torch.bool)
        for s, l in cfg.chunks:
            covered[s : s + l] = True
        if not bool(covered.all()):
            raise ValueError("chunks must cover every parameter exactly once")
        self._register_token_index(gather, scatter)
        self.class_proj = nn.Linear(cfg.text_dim, H)
        self.slot_conditioning = bool(cfg.chunk_slots)
        if self.slot_conditioning:
            if len(cfg.chunk_slots) != n:
                raise ValueError("chunk_slots needs one entry (class slot or -1) per chunk")
            # -1 (no class) points at an appended zero row
            slots = torch.tensor([s if s >= 0 else cfg.k_max for s in cfg.chunk_slots], dtype=torch.long)
            self.register_buffer("chunk_slot_idx", slots, persistent=False)
            self.slot_proj = nn.Linear(cfg.text_dim, H)
        self._add_time_mlp()
        self.chunk_in_w = nn.Parameter(torch.randn(n, c, H) / math.sqrt(c))
        self.chunk_in_b = nn.Parameter(torch.zeros(n, H))
        self.pos = nn.Parameter(torch.randn(cfg.k_max + 1 + n, H) * 0.02)
        self._add_blocks()
        self.chunk_out_w = nn.Parameter(torch.randn(n, H, c) * 0.02)
        self.chunk_out_b = nn.Parameter(torch.zeros(n, c))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, class_emb: torch.Tensor, class_mask: torch.Tensor) -> torch.Tensor:
        B = x_t.shape[0]
        cfg = self.cfg
        # parameter chunks -> tokens (each chunk its own projection)
        x_pad = torch.cat([x_t, torch.zeros_like(x_t[:, :1])], dim=1)
        chunks = x_pad.index_select(1, self.gather_idx).view(B, self.n_chunks, self.chunk_max)
        p_tok = torch.einsum("bnc,nch->bnh", chunks, self.chunk_in_w) + self.chunk_in_b
        if self.slot_conditioning:
            s_tok = self.slot_proj(class_emb) * class_mask.unsqueeze(-1)
            s_tok = torch.cat([s_tok, torch.zeros_like(s_tok[:, :1])], dim=1)
            p_tok = p_tok + s_tok.index_select(1, self.chunk_slot_idx)
        c_tok = self.class_proj(class_emb) * class_mask.unsqueeze(-1)
        t_tok = self.time_mlp(timestep_embedding(t, cfg.hidden)).unsqueeze(1)
        h = torch.cat([c_tok, t_tok, p_tok], dim=1) + self.pos
        # key mask: padded class slots are invisible to every query
        keep = torch.cat([class_mask, torch.ones(B, 1 + self.n_chunks, dtype=class_mask.dtype, device=class_mask.device)], 1)
        h = self.ln_f(self._run_blocks(h, keep)[:, cfg.k_max + 1 :])
        out = torch.einsum("bnh,nhc->bnc", h, self.chunk_out_w) + self.chunk_out_b
        return out.reshape(B, -1).index_select(1, self.scatter_idx)


class RowTokenDenoiser(TinaDenoiser):
    """Tokens = [timestep | K row tokens]; row j = class slot j's head row, plus class j's embedding.

    Why: a 1281-number row cut into 64-number chunks gives 400+ tokens (too slow on a CPU); one
    token per row with a shared projection keeps the sequence at K+1 and lets every row use the
    same map from text to weights. Class j's embedding is added to row token j (slot conditioning),
    so separate class tokens would only double the sequence (measured: 2x the step time).
    Padded slots (mask 0) are hidden as keys.
    """

    CORRECTION_OUTPUT = ("row_out.weight", "row_out.bias")  # zeroed by the prior-only surgery (checkpoint.py)

    def __init__(self, cfg: DenoiserConfig):
        super().__init__(cfg)
        K, H = cfg.k_max, cfg.hidden
        segs = [(int(o), int(p)) for o, p in cfg.row_segments]
        self.row_dim = sum(p for _, p in segs)
        index = torch.cat([torch.stack([torch.arange(o + j * p, o + (j + 1) * p) for j in range(K)]) for o, p in segs], 1)
        if sorted(index.reshape(-1).tolist()) != list(range(cfg.param_count)):
            raise ValueError("row_segments must cover every parameter exactly once (class-axis tensors only)")
        scatter = torch.empty(cfg.param_count, dtype=torch.long)
        scatter[index.reshape(-1)] = torch.arange(index.numel())
        self._register_token_index(index, scatter)
        self.slot_proj = nn.Linear(cfg.text_dim, H)
        self._add_time_mlp()
        self.row_in = nn.Linear(self.row_dim, H)
        self.pos = nn.Parameter(torch.randn(1, H) * 0.02)  # rows share no position: slots are exchangeable
        self._add_blocks()
        self.row_out = nn.Linear(H, self.row_dim)
        nn.init.normal_(self.row_out.weight, std=0.02)
        nn.init.zeros_(self.row_out.bias)
        if cfg.text_prior:
            self.prior = TextPrior(cfg.text_dim, self.row_dim, keys=cfg.prior_keys, kernel=cfg.prior_kernel)
            if cfg.prior_input:
                self.prior_in = nn.Linear(self.row_dim, H)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, class_emb: torch.Tensor, class_mask: torch.Tensor) -> torch.Tensor:
        B, K = x_t.shape[0], self.cfg.k_max
        rows = x_t.index_select(1, self.gather_idx).view(B, K, self.row_dim)
        m = class_mask.unsqueeze(-1)
        r_tok = self.row_in(rows) + self.slot_proj(class_emb) * m
        prior = None
        if self.cfg.text_prior:
            prior = self.prior(class_emb) * m
            if self.cfg.prior_input:
                r_tok = r_tok + self.prior_in(prior)
        t_tok = self.time_mlp(timestep_embedding(t, self.cfg.hidden)).unsqueeze(1) + self.pos
        h = torch.cat([t_tok, r_tok], dim=1)
        keep = torch.cat([torch.ones_like(class_mask[:, :1]), class_mask], 1)
        out = self.row_out(self.ln_f(self._run_blocks(h, keep)[:, 1:]))
        if prior is not None:
            out = out + prior
        return out.reshape(B, -1).index_select(1, self.scatter_idx)


def build_denoiser(cfg: DenoiserConfig) -> TinaDenoiser:
    """The denoiser `cfg` describes: one token per head row when it has row segments, else chunks."""
    return RowTokenDenoiser(cfg) if cfg.row_segments else ChunkTokenDenoiser(cfg)
