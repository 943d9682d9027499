"""`train.diffusion.sample` (the torch denoiser stepped by the runtime's samplers, used by
evaluation and by export's parity check) against the independent torch oracle in reference_samplers.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reference_samplers import reference_sample_ddim, reference_sample_ddpm
from test_diffusion_training import tiny_setup
from tina_edge.runtime.errors import SettingsError
from tina_edge.runtime.noise import PortableNoise
from tina_edge.train.diffusion.denoiser import build_denoiser
from tina_edge.train.diffusion.process import Schedule, sample


def _model_and_conditioning(seed=0):
    _, data, dcfg = tiny_setup()
    torch.manual_seed(seed)
    model = build_denoiser(dcfg).eval()
    g = torch.Generator().manual_seed(seed + 1)
    emb = torch.randn(3, dcfg.k_max, dcfg.text_dim, generator=g)
    mask = torch.tensor([[1.0, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]])
    return model, emb, mask


def test_ddpm_all_steps_equals_the_oracle_bit_for_bit():
    model, emb, mask = _model_and_conditioning()
    sched = Schedule(num_train_timesteps=60)  # the paper's sampler, all T steps (a short T keeps it fast)
    got = sample(model, sched, emb, mask, np.random.default_rng(5), sampler="ddpm")
    ref = reference_sample_ddpm(model, sched, emb, mask, np.random.default_rng(5))
    assert torch.equal(got, ref)
    other = sample(model, sched, emb, mask, np.random.default_rng(6), sampler="ddpm")
    assert not torch.equal(got, other)  # the step noise is really drawn


@pytest.mark.parametrize("steps", [1, 4, 20])
def test_ddim_equals_the_oracle_with_portable_noise(steps):
    model, emb, mask = _model_and_conditioning(seed=steps)
    sched = Schedule()
    got = sample(model, sched, emb, mask, PortableNoise(3), sampler="ddim", steps=steps)
    ref = reference_sample_ddim(model, sched, emb, mask, PortableNoise(3), steps=steps)
    assert got.shape == (3, model.cfg.param_count) and torch.equal(got, ref)
    with pytest.raises(SettingsError, match="needs a number of steps"):
        sample(model, sched, emb, mask, PortableNoise(3), sampler="ddim")
