"""x0-prediction DDPM as the official Tina code does it, plus the torch reference sampler.

T=1000, linear betas 1e-4..0.02, the network predicts x0, MSE loss (over the real, non-padded
parameter entries). The reference sampler runs all 1000 ancestral steps. Its noise comes from a
``numpy.random.Generator`` in the same order as the runtime's numpy sampler, so the two can be
compared bit for bit (the runtime is the edge implementation, this one is the reference).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..runtime.samplers import spaced_timesteps
from ..runtime.schedule import NoiseSchedule


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
def reference_sample_ddpm(model, sched: Schedule, class_emb: torch.Tensor, class_mask: torch.Tensor,
                          rng: np.random.Generator) -> torch.Tensor:
    """The paper's sampler: all T ancestral DDPM steps with x0 prediction (posterior variance).

    Noise order (shared with tina_edge.runtime.samplers): x_T first, then one draw per step t > 0.
    """
    B, P = class_emb.shape[0], model.cfg.param_count
    x = torch.from_numpy(rng.standard_normal((B, P)).astype(np.float32))
    T = sched.num_train_timesteps
    for t in range(T - 1, -1, -1):
        x0 = model(x, torch.full((B,), t, dtype=torch.long), class_emb, class_mask)
        abar_t = sched.abar[t]
        abar_prev = sched.abar[t - 1] if t > 0 else 1.0
        c_x0 = sched.betas[t] * np.sqrt(abar_prev) / (1.0 - abar_t)
        c_xt = (1.0 - abar_prev) * np.sqrt(sched.alphas[t]) / (1.0 - abar_t)
        mean = (c_x0 * x0.double() + c_xt * x.double())
        if t > 0:
            var = sched.betas[t] * (1.0 - abar_prev) / (1.0 - abar_t)
            z = torch.from_numpy(rng.standard_normal((B, P)).astype(np.float32))
            x = (mean + np.sqrt(var) * z.double()).float()
        else:
            x = mean.float()
    return x


@torch.no_grad()
def reference_sample_ddim(model, sched: Schedule, class_emb, class_mask, rng: np.random.Generator, steps: int = 20) -> torch.Tensor:
    """Deterministic DDIM (eta=0) on the explicit timestep list; used for fast evaluation in training."""
    B, P = class_emb.shape[0], model.cfg.param_count
    x = torch.from_numpy(rng.standard_normal((B, P)).astype(np.float32))
    ts = spaced_timesteps(sched.num_train_timesteps, steps)  # the runtime's explicit list
    for i, t in enumerate(ts):
        x0 = model(x, torch.full((B,), int(t), dtype=torch.long), class_emb, class_mask)
        t_prev = ts[i + 1] if i + 1 < len(ts) else -1
        abar_t = sched.abar[t]
        abar_prev = sched.abar[t_prev] if t_prev >= 0 else 1.0
        eps = (x.double() - np.sqrt(abar_t) * x0.double()) / np.sqrt(1.0 - abar_t)
        x = (np.sqrt(abar_prev) * x0.double() + np.sqrt(1.0 - abar_prev) * eps).float()
    return x
