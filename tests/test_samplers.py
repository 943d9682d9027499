"""Golden values of the noise schedule and the DDPM / DDIM samplers (torch-free)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tina_edge.runtime.errors import ArgumentError, PromptError, SettingsError
from tina_edge.runtime.manifest import DiffusionSpec
from tina_edge.runtime.samplers import DDIMSampler, DDPMSampler, initial_noise, make_sampler, spaced_timesteps
from tina_edge.runtime.schedule import NoiseSchedule

S = NoiseSchedule.from_spec(DiffusionSpec())


def _beta(t: int) -> float:
    return 1e-4 + (0.02 - 1e-4) * t / 999


def _abar(t: int) -> float:
    return math.prod(1.0 - _beta(i) for i in range(t + 1))


def test_schedule_by_hand():
    assert S.betas.dtype == np.float64 and S.betas.shape == (1000,)
    assert S.betas[0] == 1e-4 and S.betas[-1] == 0.02
    for t in (0, 1, 500, 999):
        assert S.betas[t] == pytest.approx(_beta(t), rel=1e-14)
        assert S.alphas_cumprod[t] == pytest.approx(_abar(t), rel=1e-12)
    assert S.alphas_cumprod[999] == pytest.approx(4.035e-5, rel=1e-3)


def test_ddim_timesteps_golden():
    s = DDIMSampler(S)
    s.set_timesteps(10)
    assert s.timesteps.tolist() == [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]
    assert s.timesteps.dtype == np.int64
    s.set_timesteps(2)
    assert s.timesteps.tolist() == [999, 0]
    s.set_timesteps(3)
    assert s.timesteps.tolist() == [999, 500, 0]  # 499.5 rounds half to even
    s.set_timesteps(1)
    assert s.timesteps.tolist() == [999]
    s.set_timesteps(1000)
    assert s.timesteps.tolist() == list(range(999, -1, -1))
    s.set_timesteps(20)
    ts = s.timesteps.tolist()
    assert len(ts) == 20 and ts[0] == 999 and ts[-1] == 0 and ts == sorted(ts, reverse=True)
    assert ts[:4] == [999, 946, 894, 841]  # 999 * i / 19 rounded
    assert [s.prev_timestep(t) for t in (999, 946, 0)] == [946, 894, -1]


@pytest.mark.parametrize("bad", [0, 1001, -3, 2.5, "10", True])
def test_bad_step_counts(bad):
    with pytest.raises(SettingsError, match="from 1 to 1000"):  # a setting, not the prompt, is wrong
        spaced_timesteps(1000, bad)
    assert issubclass(SettingsError, ArgumentError) and issubclass(SettingsError, PromptError)  # old handlers still catch it


def test_ddpm_default_timesteps_and_coefficients():
    s = DDPMSampler(S)
    assert s.timesteps.tolist() == list(range(999, -1, -1))
    # t = 1 by hand
    ab1, ab0 = _abar(1), _abar(0)
    c_x0, c_xt, var = s.coefficients(1)
    assert c_x0 == pytest.approx(_beta(1) * math.sqrt(ab0) / (1 - ab1), rel=1e-10)
    assert c_xt == pytest.approx((1 - ab0) * math.sqrt(1 - _beta(1)) / (1 - ab1), rel=1e-10)
    assert var == pytest.approx(_beta(1) * (1 - ab0) / (1 - ab1), rel=1e-10)
    # t = 0: the posterior mean is x0 itself, no noise
    c_x0, c_xt, var = s.coefficients(0)
    assert c_x0 == pytest.approx(1.0, abs=1e-12) and c_xt == 0.0 and var == 0.0


def test_ddpm_step_value_and_noise_order():
    s = DDPMSampler(S)
    x_t = np.linspace(-1, 1, 12, dtype=np.float32).reshape(2, 6)
    x0 = np.full((2, 6), 0.25, np.float32)
    rng = np.random.default_rng(7)
    out = s.step(x0, 500, x_t, rng)
    z = np.random.default_rng(7).standard_normal((2, 6)).astype(np.float32)  # one float64 draw, cast
    c_x0, c_xt, var = s.coefficients(500)
    want = (c_x0 * x0.astype(np.float64) + c_xt * x_t.astype(np.float64) + math.sqrt(var) * z.astype(np.float64)).astype(np.float32)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, want)
    # exactly one draw of x.shape was consumed
    ref = np.random.default_rng(7)
    ref.standard_normal((2, 6))
    assert rng.standard_normal() == ref.standard_normal()
    # t = 0 consumes nothing and returns the posterior mean
    rng2 = np.random.default_rng(1)
    np.testing.assert_allclose(s.step(x0, 0, x_t, rng2), x0, atol=1e-7)
    assert rng2.standard_normal() == np.random.default_rng(1).standard_normal()


def test_ddim_step_by_hand():
    s = DDIMSampler(S)
    s.set_timesteps(10)
    x_t = np.full((1, 4), 0.5, np.float32)
    x0 = np.full((1, 4), 0.2, np.float32)
    a, ap = _abar(999), _abar(888)
    eps = (0.5 - math.sqrt(a) * 0.2) / math.sqrt(1 - a)
    want = math.sqrt(ap) * 0.2 + math.sqrt(1 - ap) * eps
    out = s.step(x0, 999, x_t, None)  # eta = 0 needs no rng
    np.testing.assert_allclose(out, want, rtol=1e-6)
    assert out.dtype == np.float32


def _run(sampler, x0_value, shape=(3, 5), seed=0):
    rng = np.random.default_rng(seed)
    x = initial_noise(rng, shape)
    for t in sampler.timesteps:
        x = sampler.step(np.full(shape, x0_value, np.float32), int(t), x, rng)
    return x


@pytest.mark.parametrize("n", [1, 2, 10, 50])
def test_ddim_constant_denoiser_ends_exactly_at_it(n):
    s = DDIMSampler(S)
    s.set_timesteps(n)
    out = _run(s, 0.3125)
    np.testing.assert_array_equal(out, np.full((3, 5), np.float32(0.3125)))


def test_ddpm_constant_denoiser_ends_close_and_is_reproducible():
    out = _run(DDPMSampler(S), -0.75, seed=3)
    np.testing.assert_allclose(out, -0.75, atol=1e-5)
    np.testing.assert_array_equal(out, _run(DDPMSampler(S), -0.75, seed=3))
    respaced = make_sampler("ddpm", S, 25)
    assert len(respaced.timesteps) == 25
    np.testing.assert_allclose(_run(respaced, 0.5), 0.5, atol=1e-5)


def test_initial_noise_is_float64_draw_cast():
    got = initial_noise(np.random.default_rng(11), (4, 3))
    np.testing.assert_array_equal(got, np.random.default_rng(11).standard_normal((4, 3)).astype(np.float32))
    assert got.dtype == np.float32


def test_ddim_eta_draws_noise_and_zero_does_not():
    s = DDIMSampler(S, eta=1.0)
    s.set_timesteps(10)
    x = np.zeros((1, 3), np.float32)
    a = s.step(x + 0.1, 999, x, np.random.default_rng(0))
    b = s.step(x + 0.1, 999, x, np.random.default_rng(1))
    assert not np.array_equal(a, b)
    s0 = DDIMSampler(S)
    s0.set_timesteps(10)
    np.testing.assert_array_equal(s0.step(x + 0.1, 999, x, np.random.default_rng(0)), s0.step(x + 0.1, 999, x, None))


def test_make_sampler_names():
    assert make_sampler("DDIM", S, 10).timesteps.tolist()[:2] == [999, 888]
    assert len(make_sampler("ddpm", S).timesteps) == 1000
    with pytest.raises(PromptError, match="unknown sampler 'euler'"):
        make_sampler("euler", S, 10)
