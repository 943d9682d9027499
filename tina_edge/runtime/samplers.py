"""x0-prediction samplers (diffusers style): `set_timesteps(n)`, `.timesteps`, `step(x0, t, x_t, rng)`.

Both keep an explicit list of timesteps (diffusers derives the previous timestep by a formula that
is wrong for some spacings). Coefficients are float64; the state stays float32 so the denoiser is
always fed float32. The starting noise x_T comes from the portable counter-based generator (`noise.py`, specified in
docs/PORTABLE.md, twinned in JavaScript) so the same seed gives the same x_T on every platform;
step noise (DDPM, or DDIM with eta > 0) is drawn float64 from the caller's numpy Generator and
cast to float32. Either way a run is reproducible from its seed, byte for byte.
"""

from __future__ import annotations

import numpy as np

from .contracts import SAMPLERS
from .errors import SettingsError
from .noise import portable_normal
from .schedule import NoiseSchedule



def initial_noise(seed: int | np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """x_T ~ N(0, I) float32: from the portable generator for an integer seed (what personalize
    uses, identical on every platform), or one float64 draw of a numpy Generator, cast (analysis)."""
    if isinstance(seed, np.random.Generator):
        return seed.standard_normal(shape).astype(np.float32)
    return portable_normal(seed, shape)


def spaced_timesteps(num_train_timesteps: int, n: int) -> np.ndarray:
    """n timesteps evenly spaced over [0, T-1], descending, always including T-1 and 0.

    Rounding can merge neighbours when n is close to T, so fewer than n entries may remain.
    """
    T = int(num_train_timesteps)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not (1 <= int(n) <= T):
        raise SettingsError(f"the number of sampling steps must be an integer from 1 to {T}, got {n!r}")
    if int(n) == 1:
        return np.array([T - 1], dtype=np.int64)
    return np.unique(np.round(np.linspace(0, T - 1, int(n))).astype(np.int64))[::-1].copy()


class _Sampler:
    name = ""

    def __init__(self, schedule: NoiseSchedule):
        self.schedule = schedule
        self.timesteps = np.arange(schedule.num_train_timesteps - 1, -1, -1, dtype=np.int64)
        self._prev: dict[int, int] | None = None  # built on first use: set_timesteps usually follows

    def set_timesteps(self, n: int) -> None:
        self.timesteps = spaced_timesteps(self.schedule.num_train_timesteps, n)
        self._prev = None

    def prev_timestep(self, t: int) -> int:
        if self._prev is None:  # t -> the next timestep in the (descending) list, -1 after the last
            ts = self.timesteps.tolist()
            self._prev = dict(zip(ts, ts[1:] + [-1]))
        try:
            return self._prev[int(t)]
        except KeyError:
            raise ValueError(f"timestep {t} is not in this sampler's timesteps; call set_timesteps first") from None

    def step(self, x0_pred: np.ndarray, t: int, x_t: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        raise NotImplementedError


class DDPMSampler(_Sampler):
    """Ancestral DDPM with the posterior q(x_{t'} | x_t, x0) — the paper's (and official code's) sampler.

    With all T steps t' = t - 1. With fewer steps (`set_timesteps(n)`, spacing as DDIM) the same
    posterior formula is used between the spaced timesteps with alpha_t = abar[t] / abar[t'], i.e.
    the "respaced" DDPM of improved-diffusion.
    """

    name = "ddpm"

    def coefficients(self, t: int) -> tuple[float, float, float]:
        """(coef_x0, coef_xt, variance) of the step from t to its previous timestep."""
        s = self.schedule
        t = int(t)
        tp = self.prev_timestep(t)
        abar_t = float(s.alphas_cumprod[t])
        abar_prev = float(s.alphas_cumprod[tp]) if tp >= 0 else 1.0
        if tp == t - 1:
            beta_t, alpha_t = float(s.betas[t]), float(s.alphas[t])
        else:  # respaced: the effective beta between the two kept timesteps
            alpha_t = abar_t / abar_prev
            beta_t = 1.0 - alpha_t
        coef_x0 = beta_t * np.sqrt(abar_prev) / (1.0 - abar_t)
        coef_xt = (1.0 - abar_prev) * np.sqrt(alpha_t) / (1.0 - abar_t)
        var = beta_t * (1.0 - abar_prev) / (1.0 - abar_t)
        return float(coef_x0), float(coef_xt), float(var)

    def step(self, x0_pred, t, x_t, rng=None):
        coef_x0, coef_xt, var = self.coefficients(t)
        mean = coef_x0 * x0_pred.astype(np.float64) + coef_xt * x_t.astype(np.float64)
        if self.prev_timestep(t) < 0:
            return mean.astype(np.float32)
        if rng is None:
            raise ValueError("DDPM steps with t > 0 need a numpy Generator for their noise")
        z = rng.standard_normal(x_t.shape).astype(np.float32)
        return (mean + np.sqrt(var) * z.astype(np.float64)).astype(np.float32)


class DDIMSampler(_Sampler):
    """DDIM (Song et al.) for an x0-predicting network; eta = 0 is deterministic after x_T.

    The last step (to t' = -1, abar = 1) returns x0 itself.
    """

    name = "ddim"

    def __init__(self, schedule: NoiseSchedule, eta: float = 0.0):
        super().__init__(schedule)
        if not (0.0 <= float(eta) <= 1.0):
            raise ValueError(f"DDIM eta must be in [0, 1], got {eta}")
        self.eta = float(eta)

    def coefficients(self, t: int) -> tuple[float, float, float, float, float]:
        """The one DDIM step formula's numbers, float64, for the step from t to its previous timestep:
        (sqrt abar_t, sqrt(1 - abar_t), sqrt abar_prev, sqrt(1 - abar_prev - sigma^2), sigma);
        abar_prev = 1 after the last timestep. `step` and export's generate.onnx table both use it."""
        s = self.schedule
        t = int(t)
        tp = self.prev_timestep(t)
        abar_t = float(s.alphas_cumprod[t])
        abar_prev = float(s.alphas_cumprod[tp]) if tp >= 0 else 1.0
        sigma = 0.0
        if self.eta > 0.0 and tp >= 0:
            sigma = float(self.eta * np.sqrt((1.0 - abar_prev) / (1.0 - abar_t) * (1.0 - abar_t / abar_prev)))
        return (float(np.sqrt(abar_t)), float(np.sqrt(1.0 - abar_t)), float(np.sqrt(abar_prev)),
                float(np.sqrt(max(1.0 - abar_prev - sigma**2, 0.0))), sigma)

    def step(self, x0_pred, t, x_t, rng=None):
        sqrt_abar, sqrt_1m_abar, sqrt_abar_prev, dir_xt, sigma = self.coefficients(t)
        x0 = x0_pred.astype(np.float64)
        eps = (x_t.astype(np.float64) - sqrt_abar * x0) / sqrt_1m_abar
        x_prev = sqrt_abar_prev * x0 + dir_xt * eps
        if sigma > 0.0:
            if rng is None:
                raise ValueError("DDIM with eta > 0 needs a numpy Generator for its noise")
            z = rng.standard_normal(x_t.shape).astype(np.float32)
            x_prev = x_prev + sigma * z.astype(np.float64)
        return x_prev.astype(np.float32)


def make_sampler(name: str, schedule: NoiseSchedule, steps: int | None = None) -> _Sampler:
    """A sampler by name ("ddim" | "ddpm") with `steps` timesteps (None: DDPM all T, DDIM must be given)."""
    key = str(name).strip().lower()
    if key == "ddpm":
        s: _Sampler = DDPMSampler(schedule)
    elif key == "ddim":
        s = DDIMSampler(schedule)
    else:
        raise SettingsError(f"unknown sampler {name!r}; choose one of: {', '.join(SAMPLERS)}")
    if steps is not None:
        s.set_timesteps(steps)
    elif key == "ddim":
        raise SettingsError("the DDIM sampler needs a number of steps")
    return s
