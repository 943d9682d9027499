"""The p-model zoo: the generic model fine-tuned on each task's class subset, many at once.

A batch of M tasks is fine-tuned in one pass with ``torch.func.vmap`` over stacked parameters
(Adam is element-wise, so a stacked Adam is exactly M independent ones); linear heads on cached
features take the faster path of ``zoo_heads.py`` (same recipe, same samples). Output row i of a
p-model = the i-th class of its task. Each p-model is one safetensors file (its tensors at k rows,
metadata = classes, k, accuracy, seed); ``index.json`` is rebuilt from the files, so runs are
resumable (finished ids are skipped) and shardable (``shard=(i, n)`` takes ids with id % n == i).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save
from torch.func import functional_call, vmap
from tqdm.auto import tqdm

from tina_edge.runtime.atomic import atomic_write_bytes, atomic_write_json
from tina_edge.train.zoo.templates import HEAD_TEMPLATES, ParamLayout, TemplateConfig, build_model
from tina_edge.train.zoo.heads import eval_photos, finetune_heads, heads_accuracy


class TaskData:
    """Per-class image indices plus the inputs each template's generated part sees."""

    def __init__(self, inputs: torch.Tensor, labels: np.ndarray, classes: list[str]):
        self.inputs = inputs  # features [N, F] (resnet_head) or uint8 images [N, 32, 32, 3] (tiny_cnn)
        self.classes = classes
        self.by_class = [torch.from_numpy(np.flatnonzero(labels == c)) for c in range(len(classes))]
        self._pool = torch.cat(self.by_class) if self.by_class else torch.zeros(0, dtype=torch.long)
        counts = torch.tensor([len(p) for p in self.by_class], dtype=torch.long)
        self._start, self._count = torch.cumsum(counts, 0) - counts, counts

    def sample_fast(self, tasks: list[list[int]], k_max: int, n: int, gen: torch.Generator):
        """`sample` without Python loops (same distribution, another random stream). Linear heads draw
        this stream for all steps at once (`zoo_heads.draw_batches`, tested equal to calling this once
        per step); the 32x32 universe keeps `sample` so its zoo stays reproducible."""
        M = len(tasks)
        k = torch.tensor([len(t) for t in tasks], dtype=torch.long)
        cls = torch.zeros(M, k_max, dtype=torch.long)
        for m, t in enumerate(tasks):
            cls[m, : len(t)] = torch.tensor(t)
        slots = (torch.rand(M, n, generator=gen) * k[:, None]).long().clamp_max(k[:, None] - 1)
        c = cls.gather(1, slots)
        off = (torch.rand(M, n, generator=gen) * self._count[c]).long().clamp_max(self._count[c] - 1)
        return self._pool[self._start[c] + off], slots

    def sample(self, tasks: list[list[int]], k_max: int, n: int, gen: torch.Generator):
        """For each task: n (input index, slot) pairs, slots uniform over the task's classes."""
        idx = torch.empty(len(tasks), n, dtype=torch.long)
        slots = torch.empty(len(tasks), n, dtype=torch.long)
        for m, t in enumerate(tasks):
            s = torch.randint(0, len(t), (n,), generator=gen)
            for j, c in enumerate(t):
                sel = s == j
                pool = self.by_class[c]
                idx[m, sel] = pool[torch.randint(0, len(pool), (int(sel.sum()),), generator=gen)]
            slots[m] = s
        return idx, slots

    def eval_set(self, task: list[int], per_class: int | None = None):
        xs, ys = [], []
        for j, c in enumerate(task):
            pool = self.by_class[c] if per_class is None else self.by_class[c][:per_class]
            xs.append(pool)
            ys.append(torch.full((len(pool),), j))
        return torch.cat(xs), torch.cat(ys)


def _single_forward(cfg: TemplateConfig):
    """f(params, x) for one model on a batch: the generated part of the template."""
    if cfg.name in HEAD_TEMPLATES:
        return lambda p, x: x @ p["fc.weight"].T + p["fc.bias"]
    if cfg.name == "tiny_cnn":
        net = build_model(cfg, cfg.k_max)
        return lambda p, x: functional_call(net, p, (x,))
    raise ValueError(cfg.name)


def init_from_generic(generic_sd: dict, layout: ParamLayout, tasks: list[list[int]]) -> dict[str, torch.Tensor]:
    """Stacked K_max-row parameters for M tasks, initialised from the generic model (its rows for the classes)."""
    out = {}
    for s in layout.specs:
        g = generic_sd[s.name].float()
        if s.class_axis is None:
            out[s.name] = g.unsqueeze(0).repeat(len(tasks), *[1] * g.dim()).clone()
        else:
            t = torch.zeros(len(tasks), *s.shape)
            for m, task in enumerate(tasks):
                t[m, : len(task)] = g[torch.tensor(task)]
            out[s.name] = t
    return out


def finetune_batch(generic_sd: dict, layout: ParamLayout, data: TaskData, tasks: list[list[int]], *,
                   steps: int = 100, batch: int = 64, lr: float = 1e-2, seed: int = 0,
                   fast_sampling: bool = False) -> dict[str, torch.Tensor]:
    """Fine-tune M p-models at once; returns stacked params [M, K_max, ...] (padded rows stay 0)."""
    if fast_sampling and layout.cfg.name in HEAD_TEMPLATES:
        return _finetune_heads(generic_sd, layout, data, tasks, steps=steps, batch=batch, lr=lr, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    params = {k: v.requires_grad_(True) for k, v in init_from_generic(generic_sd, layout, tasks).items()}
    opt = torch.optim.Adam(params.values(), lr=lr)
    f = vmap(_single_forward(layout.cfg))
    k_max = layout.k_max
    slot_ok = torch.zeros(len(tasks), k_max, dtype=torch.bool)
    for m, t in enumerate(tasks):
        slot_ok[m, : len(t)] = True
    for _ in range(steps):
        idx, slots = (data.sample_fast if fast_sampling else data.sample)(tasks, k_max, batch, gen)
        x = data.inputs[idx]  # [M, B, ...]
        logits = f(params, x).masked_fill(~slot_ok[:, None, :], -1e9)
        loss = F.cross_entropy(logits.reshape(-1, k_max), slots.reshape(-1)) * len(tasks)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():  # padded class rows are not part of any p-model
            for s in layout.specs:
                if s.class_axis is not None:
                    params[s.name].mul_(slot_ok.view(len(tasks), k_max, *[1] * (len(s.shape) - 1)))
    return {k: v.detach() for k, v in params.items()}


def _finetune_heads(generic_sd: dict, layout: ParamLayout, data: TaskData, tasks: list[list[int]], *,
                    steps: int, batch: int, lr: float, seed: int) -> dict[str, torch.Tensor]:
    """`finetune_batch` for linear heads on cached features: cache-sized chunks, hand-written gradient,
    fused Adam (train/zoo_heads.py says why)."""
    return finetune_heads(generic_sd["fc.weight"], generic_sd["fc.bias"], data, tasks, k_out=layout.k_max,
                          steps=steps, batch=batch, lr=lr, seed=seed)


@torch.no_grad()
def task_accuracy(layout: ParamLayout, params: dict[str, torch.Tensor], data: TaskData, task: list[int],
                  per_class: int | None = None) -> float:
    """Accuracy (%) of one k-class model (tensors at k rows) on the task's eval images."""
    idx, y = data.eval_set(task, per_class)
    f = _single_forward(layout.cfg)
    correct = 0
    for i in range(0, len(idx), 2000):
        correct += int((f(params, data.inputs[idx[i : i + 2000]]).argmax(-1) == y[i : i + 2000]).sum())
    return 100.0 * correct / max(1, len(idx))


@torch.no_grad()
def task_class_recall(layout: ParamLayout, params: dict[str, torch.Tensor], data: TaskData, task: list[int],
                      slot: int) -> float:
    """Recall (%) of class slot `slot`: its test images predicted as that slot, among the task's k."""
    idx, y = data.eval_set(task)
    idx = idx[y == slot]
    pred = _single_forward(layout.cfg)(params, data.inputs[idx]).argmax(-1)
    return 100.0 * float((pred == slot).float().mean()) if len(idx) else float("nan")


def _pmodel_name(i: int) -> str:
    return f"{i:05d}.safetensors"


def pmodel_path(zoo_dir: Path, i: int) -> Path:
    return Path(zoo_dir) / "pmodels" / _pmodel_name(i)


def build_zoo(zoo_dir: str | Path, generic_sd: dict, layout: ParamLayout, train: TaskData, test: TaskData,
              tasks: list[list[str]], *, shard: tuple[int, int] = (0, 1), group: int = 50, steps: int = 100,
              seed: int = 0, eval_per_class: int = 300, progress: bool = True, lr: float = 1e-2,
              batch: int = 64, fast_sampling: bool = False) -> dict:
    """Fine-tune every task of this shard that has no file yet.

    Returns {done, skipped, seconds, cpu_seconds, per_minute}."""
    zoo_dir = Path(zoo_dir)
    (zoo_dir / "pmodels").mkdir(parents=True, exist_ok=True)
    i_shard, n_shard = shard
    name_to_idx = {c: j for j, c in enumerate(train.classes)}
    present = set(os.listdir(zoo_dir / "pmodels"))  # one directory read, not a stat per task
    todo = [i for i in range(len(tasks)) if i % n_shard == i_shard and _pmodel_name(i) not in present]
    skipped = sum(1 for i in range(len(tasks)) if i % n_shard == i_shard) - len(todo)
    heads = fast_sampling and layout.cfg.name in HEAD_TEMPLATES
    t0, c0 = time.time(), time.process_time()
    photos = eval_photos(test, eval_per_class) if heads and todo else None  # gathered once, not per group
    bar = tqdm(total=len(todo), desc=f"zoo shard {i_shard}/{n_shard}", disable=not progress, unit="p-model")
    for g in range(0, len(todo), group):
        ids = todo[g : g + group]
        tidx = [[name_to_idx[c] for c in tasks[i]] for i in ids]
        stacked = finetune_batch(generic_sd, layout, train, tidx, steps=steps, seed=seed * 100003 + ids[0], lr=lr,
                                 batch=batch, fast_sampling=fast_sampling)
        tensors = [{s.name: (stacked[s.name][m, : len(t)] if s.class_axis is not None else stacked[s.name][m])
                    .contiguous() for s in layout.specs} for m, t in enumerate(tidx)]
        if heads:
            accs = heads_accuracy(stacked["fc.weight"], stacked["fc.bias"], test, tidx, eval_per_class, photos)
        else:
            accs = [task_accuracy(layout, p, test, t, eval_per_class) for p, t in zip(tensors, tidx)]
        for i, t, p, acc in zip(ids, tidx, tensors, accs):
            _save_pmodel(zoo_dir, i, p, {"id": i, "classes": tasks[i], "k": len(t), "accuracy": acc, "seed": seed})
        bar.update(len(ids))
    bar.close()
    secs = time.time() - t0
    write_index(zoo_dir)
    cpu = time.process_time() - c0  # this process's CPU time: comparable across loads of a shared machine
    return {"done": len(todo), "skipped": skipped, "seconds": secs, "cpu_seconds": cpu,
            "per_minute": (len(todo) / secs * 60.0) if secs > 0 and todo else 0.0}


def _save_pmodel(zoo_dir: Path, i: int, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """One p-model file, written atomically (a killed run leaves no half file)."""
    final = os.path.join(zoo_dir, "pmodels", _pmodel_name(i))  # str paths: pathlib cost ~4 % of a head
    atomic_write_bytes(final, save(tensors, metadata={"tina_edge": json.dumps(meta)}), overwrite=True)


def write_index(zoo_dir: str | Path) -> list[dict]:
    """Rebuild index.json from the p-model files present (any shard may have written them)."""
    zoo_dir = Path(zoo_dir)
    entries = []
    for p in sorted((zoo_dir / "pmodels").glob("*.safetensors")):
        with safe_open(str(p), "pt") as f:
            meta = json.loads(f.metadata()["tina_edge"])
        meta["file"] = f"pmodels/{p.name}"
        entries.append(meta)
    atomic_write_json(zoo_dir / "index.json", entries, indent=0)
    return entries


def load_zoo(zoo_dir: str | Path, layout: ParamLayout) -> tuple[torch.Tensor, torch.Tensor, list[dict]]:
    """All p-models as flat K_max-padded vectors [M, P], validity masks [M, P], and index entries."""
    zoo_dir = Path(zoo_dir)
    idx_path = zoo_dir / "index.json"
    if not idx_path.is_file():
        raise FileNotFoundError(f"{zoo_dir} has no index.json; run `tina-edge train zoo` first")
    entries = json.loads(idx_path.read_text())
    flats, valids = [], []
    for e in entries:
        flat, valid = layout.flatten(load_file(str(zoo_dir / e["file"])))
        flats.append(flat)
        valids.append(valid)
    return torch.stack(flats), torch.stack(valids), entries
