"""Feature cache: the runtime preprocessing + a trunk, written once, resumable, and sharded under torchrun."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tina_edge.runtime.preprocess import PreprocessSpec, prepare
from tina_edge.train.data.photos import PhotoSet
from tina_edge.train.zoo.features import extract, is_complete, load_features

ROOT = Path(__file__).resolve().parents[1]


class SmallTrunk(torch.nn.Module):
    """A real (small) trunk: per-channel means and a fixed random projection, 6-d."""

    out_dim = 6

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.proj = torch.randn(3, 6, generator=g)
        self.calls = 0
        self.fail_after = None

    def forward(self, img):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt  # a killed run
        return img.float().mean(dim=(1, 2)) @ self.proj / 255.0


def photos(n=21):
    rng = np.random.default_rng(0)
    arrays = rng.integers(0, 256, (n, 20, 30, 3), dtype=np.uint8)
    return PhotoSet(list(range(n)), np.arange(n) % 3, ["a", "b", "c"], "toy", arrays=arrays)


def test_cache_matches_direct_computation_and_is_reused(tmp_path):
    ps, spec = photos(), PreprocessSpec(size=16)
    info = extract(SmallTrunk(), ps, tmp_path / "f" / "train_16", spec, batch=4, progress=False)
    feats, labels, meta = load_features(tmp_path / "f" / "train_16")
    ref = SmallTrunk()(torch.from_numpy(np.stack([prepare(ps.arrays[i], spec) for i in range(len(ps))]))).numpy()
    assert feats.dtype == np.float16 and feats.shape == (21, 6)
    np.testing.assert_allclose(feats, ref, atol=2e-3)
    assert labels.tolist() == ps.labels.tolist() and meta["count"] == 21 == info["count"]
    again = SmallTrunk()
    extract(again, ps, tmp_path / "f" / "train_16", spec, batch=4, progress=False)
    assert again.calls == 0  # complete caches are never recomputed


def test_killed_run_resumes_where_it_stopped(tmp_path):
    ps, spec, prefix = photos(), PreprocessSpec(size=16), tmp_path / "train_16"
    t = SmallTrunk()
    t.fail_after = 3
    with pytest.raises(KeyboardInterrupt):
        extract(t, ps, prefix, spec, batch=4, progress=False)
    assert not is_complete(prefix)
    t2 = SmallTrunk()
    extract(t2, ps, prefix, spec, batch=4, progress=False)
    assert t2.calls == 3  # 6 blocks of 4 (last of 1), 3 done before the kill
    full = tmp_path / "full"
    extract(SmallTrunk(), ps, full, spec, batch=4, progress=False)
    np.testing.assert_array_equal(load_features(prefix)[0], load_features(full)[0])


SCRIPT = """
import sys, json
sys.path.insert(0, {tests!r})
import torch.distributed as dist
dist.init_process_group("gloo")
from test_features import SmallTrunk, photos
from tina_edge.runtime.preprocess import PreprocessSpec
from tina_edge.train.zoo.features import extract
t = SmallTrunk()
info = extract(t, photos(), {prefix!r}, PreprocessSpec(size=16), batch=4, progress=False)
import pathlib
pathlib.Path({rows!r}, f"rank{{dist.get_rank()}}.json").write_text(json.dumps({{"rank": dist.get_rank(), "calls": t.calls, "world": info["world_size"]}}))
dist.destroy_process_group()
"""


@pytest.mark.slow  # two torchrun processes
def test_torchrun_two_ranks_share_the_blocks(tmp_path):
    script = tmp_path / "feat.py"
    script.write_text(SCRIPT.format(tests=str(ROOT / "tests"), prefix=str(tmp_path / "ddp_16"), rows=str(tmp_path)))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(script)], capture_output=True, text=True, timeout=240, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(f.read_text()) for f in sorted(tmp_path.glob("rank*.json"))]  # one file per rank: stdout lines of two processes can interleave
    assert sorted(r["calls"] for r in rows) == [3, 3] and all(r["world"] == 2 for r in rows)
    extract(SmallTrunk(), photos(), tmp_path / "one_16", PreprocessSpec(size=16), batch=4, progress=False)
    np.testing.assert_array_equal(load_features(tmp_path / "ddp_16")[0], load_features(tmp_path / "one_16")[0])
