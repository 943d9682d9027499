"""x0-prediction DDPM as the official Tina code does it: training's forward process and loss, and
sampling the torch denoiser with the runtime's samplers.

T=1000, linear betas 1e-4..0.02, the network predicts x0, MSE loss (over the real, non-padded
parameter entries). The paper's sampler runs all 1000 ancestral steps. The independent torch
reference samplers (the oracle the runtime is checked against) live in tests/reference_samplers.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tina_edge.runtime.samplers import make_sampler
from tina_edge.runtime.schedule import NoiseSchedule


@dataclass
class Schedule:
    """The runtime's `NoiseSchedule` (the one schedule of the project) plus the torch copies that
    training's forward process needs; the dataclass fields are what a checkpoint records."""

    num_train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02

    def __post_init__(self):
        self.noise = NoiseSchedule.linear(self.beta_start, self.beta_end, self.num_train_timesteps)
        self.betas, self.alphas, self.abar = self.noise.betas, self.noise.alphas, self.noise.alphas_cumprod
        self._sqrt_abar = torch.tensor(np.sqrt(self.abar), dtype=torch.float32)
        self._sqrt_1m_abar = torch.tensor(np.sqrt(1.0 - self.abar), dtype=torch.float32)

    def to_dict(self) -> dict:
        return {"num_train_timesteps": self.num_train_timesteps, "beta_start": self.beta_start, "beta_end": self.beta_end}

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Forward process: x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps."""
        a = self._sqrt_abar.to(x0.device)[t].unsqueeze(-1)
        b = self._sqrt_1m_abar.to(x0.device)[t].unsqueeze(-1)
        return a * x0 + b * noise


def diffusion_loss(model, sched: Schedule, x0, valid, class_emb, class_mask, generator=None) -> torch.Tensor:
    """MSE between predicted and true x0, over the valid (non-padded) parameter entries."""
    B = x0.shape[0]
    t = torch.randint(0, sched.num_train_timesteps, (B,), generator=generator, device=x0.device)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device)
    pred = model(sched.q_sample(x0, t, noise), t, class_emb, class_mask)
    err = (pred - x0) ** 2 * valid
    return err.sum() / valid.sum().clamp_min(1)


@torch.no_grad()
def sample(model, sched: Schedule, class_emb: torch.Tensor, class_mask: torch.Tensor, rng, *, sampler: str = "ddim",
           steps: int | None = None) -> torch.Tensor:
    """Normalised parameters [B, P] from the torch denoiser, stepped by the runtime's sampler (one
    step formula for the whole project; the tests keep an independent torch oracle of it).

    `rng` draws x_T first and then each step's noise (a numpy Generator, or `PortableNoise` as the
    runtime uses); "ddpm" with `steps` None runs all T steps, as the paper does. Evaluation and the export's
    whole-run parity check both sample through here, so only the denoiser differs from the edge.
    """
    s = make_sampler(sampler, sched.noise, steps)
    B, P = class_emb.shape[0], model.cfg.param_count
    dev = class_emb.device
    x = rng.standard_normal((B, P)).astype(np.float32)
    for t in s.timesteps:
        x0 = model(torch.from_numpy(x).to(dev), torch.full((B,), int(t), dtype=torch.long, device=dev), class_emb, class_mask)
        x = s.step(x0.detach().cpu().numpy(), int(t), x, rng)
    return torch.from_numpy(x).to(dev)
