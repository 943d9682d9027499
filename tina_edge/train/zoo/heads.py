"""The zoo's hot loop: many linear heads fine-tuned at once on cached features.

Why its own module: this loop is the zoo's whole cost. Heads are trained in *chunks* small enough
that their photos, weights and Adam state stay in the CPU cache for every step (a whole 250-head
group at once spilled to memory and ran ~1.7x slower per head), the softmax cross-entropy gradient
is written out by hand (no autograd graph, no fresh tensors per step), and one fused Adam step
updates a whole chunk. Same recipe and samples as the autograd version it replaced
(`tests/test_zoo_heads.py` checks it against torch's autograd + Adam head by head): each task's
loss is the mean cross-entropy over its `batch` photos, slots uniform over its k classes, photos
uniform within a class. BENCHMARKS.md §10.2 has the figures."""

from __future__ import annotations

import numpy as np
import torch

CACHE_BYTES = 4 << 20  # per-chunk working set: 3-6 MiB measured best on the shared EPYC; 64 MiB is ~1.7x slower


def chunk_size(k: int, batch: int, dim: int, budget: int = CACHE_BYTES) -> int:
    """Heads per chunk so that photos [B, D], weights, grads and Adam moments [4, k, D+1] fit `budget`."""
    per_head = 4 * (batch * dim + 4 * k * (dim + 1) + 2 * batch * k)
    return max(1, budget // per_head)


def class_table(tasks: list[list[int]], k_pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """([M, k_pad] class index per slot (0 in padding), [M] class count) for a list of tasks."""
    cls = torch.zeros(len(tasks), k_pad, dtype=torch.long)
    for m, t in enumerate(tasks):
        cls[m, : len(t)] = torch.as_tensor(t, dtype=torch.long)
    return cls, torch.tensor([len(t) for t in tasks], dtype=torch.long)


def draw_batches(pool: torch.Tensor, start: torch.Tensor, count: torch.Tensor, cls: torch.Tensor, k: torch.Tensor,
                 steps: int, batch: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """All steps' samples at once: photo indices and slots, each [steps, M, batch].

    `pool`, `start`, `count` index the photos class by class (TaskData's flat pool); a sample picks
    a slot uniformly among the task's k, then a photo uniformly among that class's. The random
    stream is exactly that of `TaskData.sample_fast` called once per step, so zoos built before
    this module existed are reproduced (up to float rounding)."""
    M = len(k)
    u = torch.rand(steps, 2, M, batch, generator=gen)
    slots = (u[:, 0] * k[:, None]).long().clamp_max(k[:, None] - 1)
    c = cls[torch.arange(M)[:, None], slots]  # [steps, M, batch]
    off = (u[:, 1] * count[c]).long().clamp_max(count[c] - 1)
    return pool[start[c] + off], slots


def train_chunk(feats: torch.Tensor, W: torch.Tensor, b: torch.Tensor, k: torch.Tensor, idx: torch.Tensor,
                slots: torch.Tensor, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Adam on M heads W [M, K, D], b [M, K] (rows >= k[m] stay untouched), samples idx/slots [steps, M, B].

    Gradient of the mean cross-entropy per head, by hand: (softmax(logits) - onehot) / B, times the
    photos. Padded rows get logit -inf, so probability 0 and gradient exactly 0: Adam leaves them as they are."""
    steps, M, B = idx.shape
    K, D = W.shape[1], W.shape[2]
    W, b = W.clone().contiguous(), b.clone().contiguous()
    gW, gb = torch.empty_like(W), torch.empty_like(b)
    state = [torch.zeros_like(W), torch.zeros_like(b), torch.zeros_like(W), torch.zeros_like(b)]
    step = [torch.zeros(()), torch.zeros(())]
    pad = (torch.arange(K)[None, :] >= k[:, None])[:, :, None]  # [M, K, 1]
    mixed = bool(pad.any())
    buf = torch.empty(M * B, D, dtype=feats.dtype)
    x, xT, b_col = buf.view(M, B, D), buf.view(M, B, D).transpose(1, 2), b[:, :, None]  # views, made once
    idx, slots = idx.reshape(steps, M * B), slots[:, :, None, :]
    minus = torch.full((M, 1, B), -1.0 / B)
    for s in range(steps):
        torch.index_select(feats, 0, idx[s], out=buf)
        logits = torch.baddbmm(b_col, W, xT)  # [M, K, B]
        if mixed:
            logits.masked_fill_(pad, float("-inf"))
        p = torch.softmax(logits, dim=1).div_(B)
        p.scatter_add_(1, slots[s], minus)
        torch.bmm(p, x, out=gW)
        torch.sum(p, dim=2, out=gb)
        torch._foreach_add_(step, 1.0)
        # torch.optim.Adam(fused=True)'s kernel without its per-step Python wrapper (~10 % of a step here)
        torch._fused_adam_([W, b], [gW, gb], state[:2], state[2:], [], step, lr=lr, beta1=0.9, beta2=0.999,
                           weight_decay=0.0, eps=1e-8, amsgrad=False, maximize=False)
    return W, b


def finetune_heads(weight: torch.Tensor, bias: torch.Tensor, data, tasks: list[list[int]], *, k_out: int,
                   steps: int, batch: int, lr: float, seed: int,
                   cache_bytes: int = CACHE_BYTES) -> dict[str, torch.Tensor]:
    """Fine-tune one head per task from the generic rows `weight` [C, D], `bias` [C] of its classes.

    The samples of all steps are drawn first (the stream of the autograd version), then tasks are
    trained in cache-sized chunks of equal (or near) k, in order of k; returns
    {"fc.weight": [M, k_out, D], "fc.bias": [M, k_out]} in the tasks' order, rows >= k zero."""
    M, D = len(tasks), weight.shape[1]
    gen = torch.Generator().manual_seed(seed)
    cls, k = class_table(tasks, k_out)
    idx, slots = draw_batches(data._pool, data._start, data._count, cls, k, steps, batch, gen)
    keep = torch.arange(k_out)[None, :] < k[:, None]
    out_w = weight.float()[cls] * keep[:, :, None]
    out_b = bias.float()[cls] * keep
    order = sorted(range(M), key=lambda m: len(tasks[m]))
    i = 0
    while i < M:
        sel = torch.as_tensor(order[i : i + chunk_size(int(k[order[i]]), batch, D, cache_bytes)])
        kc = int(k[sel].max())
        W, b = train_chunk(data.inputs, out_w[sel, :kc], out_b[sel, :kc], k[sel], idx[:, sel], slots[:, sel], lr)
        out_w[sel, :kc], out_b[sel, :kc] = W, b
        i += len(sel)
    return {"fc.weight": out_w, "fc.bias": out_b}


def eval_photos(data, per_class: int | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The photos `TaskData.eval_set` uses, class after class: (features [N, D], start [C], count [C])."""
    sel = [p if per_class is None else p[:per_class] for p in data.by_class]
    count = torch.tensor([len(p) for p in sel], dtype=torch.long)
    flat = torch.cat(sel) if sel else torch.zeros(0, dtype=torch.long)
    return data.inputs.index_select(0, flat), torch.cumsum(count, 0) - count, count


@torch.no_grad()
def heads_accuracy(weight: torch.Tensor, bias: torch.Tensor, data, tasks: list[list[int]],
                   per_class: int | None = None, photos: tuple | None = None) -> list[float]:
    """Accuracy (%) of each head (weight [M, K, D], bias [M, K], first len(task) rows) on its task's
    eval photos: the figure `zoo.task_accuracy` gives head by head.

    Class-major: one matmul per class scores its photos under every head that contains it, so each
    photo is read once per group (not once per head) and the matmuls are wide."""
    feats, start, count = photos or eval_photos(data, per_class)  # `photos`: eval_photos' result, reused
    k = torch.tensor([len(t) for t in tasks], dtype=torch.long)
    K = int(k.max())
    valid = torch.arange(K)[None, :] < k[:, None]  # [M, K]
    rows_w, rows_b = weight[:, :K][valid], bias[:, :K][valid]  # only real rows: no matmul on padding
    correct = torch.zeros(len(tasks), dtype=torch.long)
    for c, hm, hj, rows, pos, kc in _class_blocks(tasks, k):
        n = int(count[c])
        if n == 0:
            continue
        x = feats[int(start[c]) : int(start[c]) + n]
        scores = torch.full((n, len(hm) * kc), float("-inf"))
        scores.index_copy_(1, pos, torch.addmm(rows_b[rows], x, rows_w[rows].T))
        correct.index_add_(0, hm, (scores.view(n, len(hm), kc).argmax(-1) == hj).sum(0))
    total = torch.zeros(len(tasks), dtype=torch.long)
    total.index_add_(0, torch.repeat_interleave(torch.arange(len(tasks)), k), count[torch.cat([torch.as_tensor(t) for t in tasks])])
    return (100.0 * correct.double() / total.clamp_min(1).double()).tolist()


def _class_blocks(tasks: list[list[int]], k: torch.Tensor):
    """Per class c: the heads holding it (hm), its slot in each (hj), the flat rows of those heads
    (rows, in a table of every head's real rows), and where each row's score goes in a [H, kc] grid."""
    row0 = (np.cumsum(k.numpy()) - k.numpy()).tolist()
    by_class: dict[int, list[tuple[int, int]]] = {}
    for m, t in enumerate(tasks):
        for j, c in enumerate(t):
            by_class.setdefault(c, []).append((m, j))
    for c, mj in by_class.items():
        hm = [m for m, _ in mj]
        kc = max(len(tasks[m]) for m in hm)
        rows = [row0[m] + r for m in hm for r in range(len(tasks[m]))]
        pos = [h * kc + r for h, m in enumerate(hm) for r in range(len(tasks[m]))]
        yield (c, torch.tensor(hm), torch.tensor([j for _, j in mj]), torch.tensor(rows), torch.tensor(pos), kc)
