"""Denoiser, diffusion loss, trainer: masking, one step lowers the loss, exact resume, torchrun."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tina_edge.train.diffusion.denoiser import DenoiserConfig, build_denoiser
from tina_edge.train.diffusion.process import Schedule, diffusion_loss
from tina_edge.train.zoo.templates import ParamLayout, TemplateConfig
from tina_edge.train.diffusion.checkpoint import read_checkpoint
from tina_edge.train.diffusion.trainer import TinaData, TrainConfig, Trainer, compute_normalisation, make_batch, normalise

ROOT = Path(__file__).resolve().parents[1]


def tiny_setup(M=12, D=8, k_max=4, seed=0):
    torch.manual_seed(seed)
    layout = ParamLayout(TemplateConfig("resnet_head", k_max=k_max, widths=[8, 8, 16], stem_stride=2))
    gen = torch.Generator().manual_seed(seed)
    V = 6
    emb = torch.randn(V, D, generator=gen)
    emb = emb / emb.norm(dim=-1, keepdim=True)
    flats, valids, class_ids = [], [], []
    proto = torch.randn(V, 16, generator=gen)  # a "true" head row per class
    for m in range(M):
        k = 2 + m % (k_max - 1)
        cls = torch.randperm(V, generator=gen)[:k].tolist()
        flat, valid = layout.flatten({"fc.weight": proto[cls], "fc.bias": torch.zeros(k)})
        flats.append(flat)
        valids.append(valid)
        class_ids.append(cls)
    flats, valids = torch.stack(flats), torch.stack(valids)
    compute_normalisation(layout, flats, valids)
    data = TinaData(normalise(layout, flats, valids), valids, class_ids, emb, [f"c{i}" for i in range(V)])
    dcfg = DenoiserConfig(param_count=layout.size, chunks=layout.chunks(16), k_max=k_max, text_dim=D, hidden=32,
                          layers=2, heads=2)
    return layout, data, dcfg


def test_padded_class_slots_do_not_change_the_output():
    layout, data, dcfg = tiny_setup()
    model = build_denoiser(dcfg).eval()
    B = 3
    x = torch.randn(B, layout.size)
    t = torch.tensor([0, 500, 999])
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.float32)
    emb = torch.randn(B, 4, 8)
    with torch.no_grad():
        a = model(x, t, emb * mask[..., None], mask)
        b = model(x, t, emb * mask[..., None] + 5.0 * (1 - mask[..., None]) * torch.randn(B, 4, 8), mask)
    assert torch.allclose(a, b, atol=1e-5)
    with torch.no_grad():  # but a present class's embedding matters
        c = model(x, t, (emb + torch.randn(B, 4, 8)) * mask[..., None], mask)
    assert (a - c).abs().max() > 1e-3


def test_batch_permutation_keeps_pairs_consistent():
    layout, data, _ = tiny_setup()
    gen = torch.Generator().manual_seed(1)
    idx = torch.arange(len(data.flats))
    x0, valid, emb, mask = make_batch(data, layout, idx, gen)
    w = x0[:, :64].view(len(idx), 4, 16)  # normalised head rows, permuted with their embeddings
    for b in range(len(idx)):
        k = int(mask[b].sum())
        for j in range(k):
            v = int(torch.argmax(data.emb_table @ emb[b, j]))  # which class sits in slot j
            orig_slot = data.class_ids[b].index(v)
            assert torch.allclose(w[b, j], data.flats[b, :64].view(4, 16)[orig_slot])
        assert float(valid[b, 16 * k : 64].sum()) == 0.0


def test_one_training_step_lowers_the_loss_on_a_fixed_batch():
    layout, data, dcfg = tiny_setup()
    torch.manual_seed(0)
    model = build_denoiser(dcfg)
    sched = Schedule()
    gen = torch.Generator().manual_seed(0)
    x0, valid, emb, mask = make_batch(data, layout, torch.arange(8), gen)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def loss_fixed():
        return diffusion_loss(model, sched, x0, valid, emb, mask, generator=torch.Generator().manual_seed(42))

    before = loss_fixed()
    opt.zero_grad()
    before.backward()
    opt.step()
    after = loss_fixed()
    assert float(after) < float(before)


def test_checkpoint_resume_gives_identical_next_steps(tmp_path):
    layout, data, dcfg = tiny_setup()
    cfg = TrainConfig(steps=6, batch_size=4, warmup=2, seed=3)
    a = Trainer(dcfg, layout, data, cfg)
    for _ in range(3):
        a.train_step()
    a.save(tmp_path / "ck.safetensors")
    losses_a = [a.train_step() for _ in range(3)]
    b = Trainer(dcfg, layout, data, cfg)
    b.load(tmp_path / "ck.safetensors")
    assert b.step == 3
    losses_b = [b.train_step() for _ in range(3)]
    assert losses_a == losses_b
    for pa, pb in zip(a.ema.parameters(), b.ema.parameters()):
        assert torch.equal(pa, pb)
    ck = read_checkpoint(tmp_path / "ck.safetensors")
    assert ck.meta["step"] == 3 and ck.meta["format"] == "tina-edge-checkpoint/1"


def test_pickle_checkpoints_are_refused_without_running_code(tmp_path):
    from tina_edge.runtime.errors import TinaEdgeError

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    bad = tmp_path / "evil.ckpt"
    torch.save({"x": Evil()}, bad)
    with pytest.raises(TinaEdgeError, match="pickle"):
        read_checkpoint(bad)
    assert not marker.exists()
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ")
    with pytest.raises(TinaEdgeError, match="not a valid safetensors"):
        read_checkpoint(junk)


TORCHRUN_SCRIPT = """
import sys, json, torch
sys.path.insert(0, {tests!r})
from test_diffusion_training import tiny_setup
from tina_edge.train.diffusion.trainer import Trainer, TrainConfig, setup_distributed
import torch.distributed as dist
setup_distributed()
layout, data, dcfg = tiny_setup()
t = Trainer(dcfg, layout, data, TrainConfig(steps=4, batch_size=4, warmup=1))
t.fit({ckpt!r}, save_every=2, progress=False)
w = torch.cat([p.detach().flatten() for p in t.model.parameters()])
import pathlib
pathlib.Path({rows!r}, f"rank{{dist.get_rank()}}.json").write_text(json.dumps({{"rank": dist.get_rank(), "world": dist.get_world_size(), "step": t.step, "wsum": float(w.sum())}}))
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_torchrun_two_process_data_parallel(tmp_path):
    script = tmp_path / "ddp.py"
    ckpt = tmp_path / "ddp.safetensors"
    script.write_text(TORCHRUN_SCRIPT.format(tests=str(ROOT / "tests"), ckpt=str(ckpt), rows=str(tmp_path)))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(script)], capture_output=True, text=True, timeout=240, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    import json

    rows = [json.loads(f.read_text()) for f in sorted(tmp_path.glob("rank*.json"))]  # one file per rank: stdout lines of two processes can interleave
    assert sorted(r["rank"] for r in rows) == [0, 1]
    assert all(r["world"] == 2 and r["step"] == 4 for r in rows)
    assert abs(rows[0]["wsum"] - rows[1]["wsum"]) < 1e-4  # DDP keeps replicas identical
    assert read_checkpoint(ckpt).meta["step"] == 4


def test_config_of_an_older_checkpoint_with_extra_still_loads():
    """DenoiserConfig lost its unused `extra` field; a checkpoint that still records it loads the same model."""
    layout, data, dcfg = tiny_setup()
    d = dcfg.to_dict()
    assert "extra" not in d
    old = dict(d, extra={})
    assert DenoiserConfig.from_dict(old) == DenoiserConfig.from_dict(d) == dcfg
