"""The DDPM noise schedule, in float64 so the edge sampler matches the torch reference bit for bit.

Only the linear schedule of the paper (betas 1e-4 ... 0.02 over T = 1000 steps) is defined; the
manifest validator refuses any other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .manifest import DiffusionSpec


@dataclass(frozen=True)
class NoiseSchedule:
    """betas, alphas and cumulative alpha products (abar) of a linear schedule, all float64."""

    betas: np.ndarray
    alphas: np.ndarray
    alphas_cumprod: np.ndarray

    @property
    def num_train_timesteps(self) -> int:
        return int(self.betas.shape[0])

    @classmethod
    def linear(cls, beta_start: float = 1e-4, beta_end: float = 0.02, num_train_timesteps: int = 1000) -> "NoiseSchedule":
        if int(num_train_timesteps) < 1:
            raise ValueError(f"num_train_timesteps must be at least 1, got {num_train_timesteps}")
        betas = np.linspace(beta_start, beta_end, int(num_train_timesteps), dtype=np.float64)
        alphas = 1.0 - betas
        abar = np.cumprod(alphas)
        for a in (betas, alphas, abar):
            a.setflags(write=False)
        return cls(betas=betas, alphas=alphas, alphas_cumprod=abar)

    @classmethod
    def from_spec(cls, spec: DiffusionSpec) -> "NoiseSchedule":
        return cls.linear(spec.beta_start, spec.beta_end, spec.num_train_timesteps)
