"""The zoo's batched head trainer (train/zoo_heads.py) against the plain recipe it replaces.

Reference = torch autograd + torch.optim.Adam, one head at a time, on the same samples: the
chunked, hand-differentiated, fused-Adam version must give the same heads. The sampler must keep
the random stream of `TaskData.sample_fast` (zoos built before stay reproducible), and the
class-major accuracy must be `task_accuracy`'s figure."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from tina_edge.train.zoo.templates import ParamLayout, TemplateConfig
from tina_edge.train.zoo.pmodels import TaskData, build_zoo, finetune_batch, task_accuracy
from tina_edge.train.zoo.heads import chunk_size, class_table, draw_batches, finetune_heads, heads_accuracy

C, D = 7, 16


def synthetic(n_per_class: list[int], seed: int) -> TaskData:
    """Gaussian blobs, one per class, with unequal class sizes (the sampler must respect them)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(C, D, generator=torch.Generator().manual_seed(0)) * 2
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(n_per_class)])
    perm = np.random.default_rng(seed).permutation(len(labels))  # classes interleaved, as in a real dataset
    labels = labels[perm]
    x = centres[torch.from_numpy(labels)] + torch.randn(len(labels), D, generator=g)
    return TaskData(x, labels, [f"c{i}" for i in range(C)])


TRAIN = synthetic([30, 12, 25, 40, 9, 30, 18], 1)
TEST = synthetic([10, 6, 8, 10, 5, 10, 7], 2)
TASKS = [[0, 1], [2, 3, 4], [5, 0, 6, 1], [3, 6], [4, 5, 2, 0, 1], [6, 2, 3], [1, 4], [0, 2, 4, 6]]
K_MAX = 5
GENERIC_W = torch.randn(C, D, generator=torch.Generator().manual_seed(3)) * 0.1
GENERIC_B = torch.randn(C, generator=torch.Generator().manual_seed(4)) * 0.1


def reference_head(task, idx, slots, lr):
    """One head, the textbook way: autograd cross-entropy + torch.optim.Adam (not fused)."""
    W = GENERIC_W[task].clone().requires_grad_(True)
    b = GENERIC_B[task].clone().requires_grad_(True)
    opt = torch.optim.Adam([W, b], lr=lr)
    for s in range(idx.shape[0]):
        loss = F.cross_entropy(TRAIN.inputs[idx[s]] @ W.T + b, slots[s])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return W.detach(), b.detach()


@pytest.mark.parametrize("cache_bytes", [1, 10**9])  # one head per chunk; all heads (mixed k) in one chunk
def test_batched_heads_equal_one_at_a_time_autograd_adam(cache_bytes):
    steps, batch, lr, seed = 15, 8, 5e-2, 11
    got = finetune_heads(GENERIC_W, GENERIC_B, TRAIN, TASKS, k_out=K_MAX, steps=steps, batch=batch, lr=lr, seed=seed,
                         cache_bytes=cache_bytes)
    assert got["fc.weight"].shape == (len(TASKS), K_MAX, D) and got["fc.bias"].shape == (len(TASKS), K_MAX)
    cls, k = class_table(TASKS, K_MAX)
    idx, slots = draw_batches(TRAIN._pool, TRAIN._start, TRAIN._count, cls, k, steps, batch,
                              torch.Generator().manual_seed(seed))
    for m, t in enumerate(TASKS):
        W, b = reference_head(t, idx[:, m], slots[:, m], lr)
        assert not torch.allclose(W, GENERIC_W[t], atol=1e-3)  # it did train
        torch.testing.assert_close(got["fc.weight"][m, : len(t)], W, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(got["fc.bias"][m, : len(t)], b, rtol=1e-4, atol=1e-5)
        assert not got["fc.weight"][m, len(t):].any() and not got["fc.bias"][m, len(t):].any()  # padding stays 0


def test_draw_batches_keeps_the_sample_fast_stream():
    """Same seed -> the very samples `TaskData.sample_fast` drew step by step (old zoos reproduce)."""
    steps, batch = 6, 10
    old = [TRAIN.sample_fast(TASKS, K_MAX, batch, g) for g in [torch.Generator().manual_seed(5)] for _ in range(steps)]
    cls, k = class_table(TASKS, K_MAX)
    idx, slots = draw_batches(TRAIN._pool, TRAIN._start, TRAIN._count, cls, k, steps, batch,
                              torch.Generator().manual_seed(5))
    assert torch.equal(idx, torch.stack([o[0] for o in old])) and torch.equal(slots, torch.stack([o[1] for o in old]))
    labels = torch.as_tensor(np.concatenate([np.full(len(p), c) for c, p in enumerate(TRAIN.by_class)]))
    by_photo = torch.empty_like(labels)
    by_photo[TRAIN._pool] = labels
    assert torch.equal(by_photo[idx], cls[torch.arange(len(TASKS))[:, None], slots])  # each photo is its slot's class
    assert int(slots.max()) < K_MAX and all(int(slots[:, m].max()) < len(t) for m, t in enumerate(TASKS))


@pytest.mark.parametrize("per_class", [None, 3])
def test_heads_accuracy_is_task_accuracy(per_class):
    layout = ParamLayout(TemplateConfig("resnet_head", k_max=K_MAX, widths=[8, 8, D]))
    g = torch.Generator().manual_seed(9)
    W, b = torch.randn(len(TASKS), K_MAX, D, generator=g), torch.randn(len(TASKS), K_MAX, generator=g)
    accs = heads_accuracy(W, b, TEST, TASKS, per_class)
    want = [task_accuracy(layout, {"fc.weight": W[m, : len(t)], "fc.bias": b[m, : len(t)]}, TEST, t, per_class)
            for m, t in enumerate(TASKS)]
    assert accs == pytest.approx(want, abs=1e-9)
    assert len(set(accs)) > 3  # random heads: the figures differ, so the comparison means something


def test_chunk_size_fits_the_budget():
    assert chunk_size(2, 32, 1280) > chunk_size(20, 32, 1280) >= 4  # real sizes: several heads per chunk
    assert chunk_size(20, 32, 1280, budget=1) == 1


def test_build_zoo_heads_path_files_and_accuracy(tmp_path):
    """build_zoo on the batched path: one file per task, tensors at k rows equal to finetune_batch's,
    and the recorded accuracy is task_accuracy of the saved head."""
    layout = ParamLayout(TemplateConfig("resnet_head", k_max=K_MAX, widths=[8, 8, D]))
    sd = {"fc.weight": torch.zeros(C, D), "fc.bias": torch.zeros(C)}  # generic rows: untrained
    sd["fc.weight"][:] = GENERIC_W
    names = [[TRAIN.classes[c] for c in t] for t in TASKS]
    recipe = {"steps": 20, "batch": 16, "lr": 5e-2, "fast_sampling": True}
    s = build_zoo(tmp_path / "z", sd, layout, TRAIN, TEST, names, group=5, seed=2, eval_per_class=None,
                  progress=False, **recipe)
    assert s["done"] == len(TASKS)
    index = json.loads((tmp_path / "z" / "index.json").read_text())
    first_group = finetune_batch(sd, layout, TRAIN, TASKS[:5], seed=2 * 100003 + 0, **recipe)
    for e in index:
        t = TASKS[e["id"]]
        p = load_file(str(tmp_path / "z" / e["file"]))
        assert e["classes"] == names[e["id"]] and p["fc.weight"].shape == (len(t), D)
        assert e["accuracy"] == pytest.approx(task_accuracy(layout, p, TEST, t))
        if e["id"] < 5:
            torch.testing.assert_close(p["fc.weight"], first_group["fc.weight"][e["id"], : len(t)])
    assert np.mean([e["accuracy"] for e in index]) > 80  # blobs are separable: fine-tuning learned them
