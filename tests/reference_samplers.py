"""The torch reference samplers: the oracle the runtime's samplers are checked against.

Written independently of `tina_edge.runtime.samplers` (their own loop and coefficients, torch
float64), as the official Tina code samples. The package samples through the runtime's samplers
(`tina_edge.train.diffusion.process.sample`); tests compare both with this code, bit for bit where the noise
is shared. Noise order: x_T first, then one draw per step t > 0.
"""

from __future__ import annotations

import numpy as np
import torch

from tina_edge.runtime.samplers import spaced_timesteps
from tina_edge.train.diffusion.process import Schedule


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
    """Deterministic DDIM (eta=0) on the explicit timestep list."""
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
