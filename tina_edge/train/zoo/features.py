"""The feature cache: trunk features computed once per (dataset split, resolution), reused by every stage.

Why: the trunk is frozen, so the generic head, the zoo (thousands of heads) and the evaluation only
ever need its 1280-d output. Running EfficientNet-Lite0 is the slow part on a CPU (~100-350 img/s);
everything after it is matrix products on cached rows.

Files, for a prefix P (e.g. WORKDIR/features/train_128):
    P.f16.npy      float16 [N, D] features (a .npy memmap, written in place)
    P.labels.npy   int64 [N] labels (index into the universe's class list)
    P.done.npy     uint8 [N], 1 where the row is computed: a killed run resumes where it stopped
    P.json         written last, when every row is done: source, resolution, trunk, count, seconds

Photos go through `runtime.preprocess.prepare` (the policy the device uses) before the trunk.
Under `torchrun` every rank computes the rows of its blocks (block b goes to rank b % world) into
the same memmap (a shared filesystem), and rank 0 writes P.json once all ranks are through.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from tina_edge.runtime.atomic import atomic_save_npy, atomic_write_json
from tina_edge.runtime.preprocess import PreprocessSpec, prepare
from tina_edge.train.data.photos import PhotoSet


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def is_complete(prefix: str | Path) -> bool:
    return Path(f"{prefix}.json").is_file()


def load_features(prefix: str | Path) -> tuple[np.ndarray, np.ndarray, dict]:
    """(features float16 [N, D] memmap, labels [N], info) of a completed cache."""
    info_path = Path(f"{prefix}.json")
    if not info_path.is_file():
        raise FileNotFoundError(f"feature cache {prefix} is incomplete or missing; run `tina-edge train features`")
    feats = np.load(f"{prefix}.f16.npy", mmap_mode="r", allow_pickle=False)
    labels = np.load(f"{prefix}.labels.npy", allow_pickle=False)
    return feats, labels, json.loads(info_path.read_text())


def _prepare_batch(photos: PhotoSet, rows: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    return np.stack([prepare(photos.load(int(i)), spec) for i in rows])


def extract(trunk: torch.nn.Module, photos: PhotoSet, prefix: str | Path, spec: PreprocessSpec, *,
            batch: int = 64, progress: bool = True, info: dict | None = None) -> dict:
    """Fill the cache at `prefix` (resumable, shardable under torchrun); returns its info dict."""
    prefix = Path(prefix)
    rank, world = _rank_world()
    if is_complete(prefix):
        return json.loads(Path(f"{prefix}.json").read_text())
    n, dim = len(photos), int(getattr(trunk, "out_dim", 1280))
    fpath, dpath = Path(f"{prefix}.f16.npy"), Path(f"{prefix}.done.npy")
    if rank == 0:
        prefix.parent.mkdir(parents=True, exist_ok=True)
        fresh = not (fpath.is_file() and dpath.is_file())
        if not fresh:  # a previous run's files must describe the same photo list
            old = np.load(f"{prefix}.labels.npy", allow_pickle=False) if Path(f"{prefix}.labels.npy").is_file() else None
            fresh = old is None or old.shape != (n,) or not np.array_equal(old, photos.labels)
        if fresh:  # resumable by design: written in place, rows count only once `done` marks them
            np.lib.format.open_memmap(fpath, mode="w+", dtype=np.float16, shape=(n, dim)).flush()
            np.lib.format.open_memmap(dpath, mode="w+", dtype=np.uint8, shape=(n,)).flush()
            atomic_save_npy(f"{prefix}.labels.npy", photos.labels)
    _barrier()
    feats = np.load(fpath, mmap_mode="r+", allow_pickle=False)
    done = np.load(dpath, mmap_mode="r+", allow_pickle=False)
    blocks = [b for b in range((n + batch - 1) // batch) if b % world == rank]
    todo = [b for b in blocks if not done[b * batch : (b + 1) * batch].all()]
    bar = tqdm(total=sum(min(batch, n - b * batch) for b in todo), desc=f"features {prefix.name} r{rank}",
               unit="img", disable=not progress, smoothing=0.1)
    t0 = time.time()
    trunk.eval()
    with torch.no_grad():
        for b in todo:
            rows = np.arange(b * batch, min(n, (b + 1) * batch))
            x = torch.from_numpy(_prepare_batch(photos, rows, spec))
            feats[rows] = trunk(x).numpy().astype(np.float16)
            feats.flush()
            done[rows] = 1
            done.flush()
            bar.update(len(rows))
    bar.close()
    secs = time.time() - t0
    _barrier()
    result = {"count": n, "dim": dim, "preprocess": spec.to_dict(), "source": photos.name,
              "seconds_rank0": secs, "images_per_second_rank0": (bar.n / secs if secs > 0 else None),
              "world_size": world, **(info or {})}
    if rank == 0:
        done_all = np.load(dpath, mmap_mode="r", allow_pickle=False)
        if not bool(done_all.all()):
            raise RuntimeError(f"feature cache {prefix}: {int((done_all == 0).sum())} rows missing after all ranks")
        atomic_write_json(f"{prefix}.json", result, indent=1)
    _barrier()
    return result
