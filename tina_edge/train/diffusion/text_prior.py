"""The text prior as the denoiser holds it: buffers that turn a name's embedding into a calibrated row.

Fitting lives in train/prior/fit.py (numpy, no torch module); this is what the fit is loaded into,
exported inside denoiser.onnx / generate.onnx, so every runtime gets it without runtime code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn


@dataclass
class PriorFit:
    coef: np.ndarray  # [D, R] text -> row
    offset: np.ndarray  # [R]  (intercept)
    center: np.ndarray  # [R]  mean zoo row: calibration is around it
    weight_norm: float  # mean norm of the zoo rows' centred weight part
    bias: float  # mean zoo bias
    lam: float
    pairs: int
    kernel_keys: np.ndarray | None = None  # [M, D] one L2-normalised key per training class (kernel map)
    gamma: float = 0.0  # kernel width: feature m = exp(gamma * (cos(e, key_m) - 1))



class TextPrior(nn.Module):
    """emb [..., D] -> calibrated row in the denoiser's normalised space [..., R].

    Buffers only (no trainable weights): coef (and a kernel map's keys) are stored in float16 (half the
    bytes in every exported graph; the torch model uses the same rounded values, so export parity is
    exact). With `kernel` M > 0 the ridge acts on M kernel features of the embedding, not on it.

    With `keys` seen-class names, a kernel term makes the prior exact where training knows the
    answer: row(e) = ridge(e) + sum_s exp((cos(e, key_s) - 1) / tau) * residual_s, residual_s = the
    zoo's mean row of seen class s minus ridge(key_s). Measured (BENCHMARKS §11): the ridge row of a
    seen name is a poor classifier (10-way 55.7 % vs 88.3 % for its zoo row), so without this term
    the denoiser had to learn large per-name corrections, and applied them to new names too (held-out
    recall 68.8 % for the prior alone -> 29.4 % with the correction). At tau 0.01 a key weighs 0.37 at
    cosine 0.99, 0.007 at 0.95 and nothing further away: other words keep the smooth ridge row.
    """

    def __init__(self, text_dim: int, row_dim: int, keys: int = 0, kernel: int = 0):
        super().__init__()
        self.n_keys = int(keys)
        self.n_kernel = int(kernel)
        if self.n_kernel:  # the map is linear in kernel features of the embedding (fit_kernel_prior)
            self.register_buffer("kernel_keys", torch.zeros(self.n_kernel, text_dim, dtype=torch.float16))
            self.register_buffer("gamma", torch.ones(1))
        if self.n_keys:
            self.register_buffer("keys", torch.zeros(self.n_keys, text_dim, dtype=torch.float16))
            self.register_buffer("residuals", torch.zeros(self.n_keys, row_dim, dtype=torch.float16))
            self.register_buffer("tau", torch.tensor([0.01]))
        self.register_buffer("coef", torch.zeros(self.n_kernel or text_dim, row_dim, dtype=torch.float16))
        self.register_buffer("offset", torch.zeros(row_dim))
        self.register_buffer("center", torch.zeros(row_dim))
        self.register_buffer("is_weight", torch.ones(row_dim))  # 1 on weight entries, 0 on the bias
        self.register_buffer("calib", torch.zeros(2))  # [weight_norm, bias]
        self.register_buffer("norm_mean", torch.zeros(row_dim))  # the layout's normalisation per entry
        self.register_buffer("norm_std", torch.ones(row_dim))

    @torch.no_grad()
    def load_fit(self, fit: PriorFit, is_weight: np.ndarray, norm_mean: np.ndarray, norm_std: np.ndarray) -> None:
        if (fit.kernel_keys is not None) != bool(self.n_kernel) or fit.coef.shape != tuple(self.coef.shape):
            raise ValueError(f"a prior fit with coef {fit.coef.shape} does not fit this TextPrior "
                             f"(coef {tuple(self.coef.shape)}, kernel keys {self.n_kernel})")
        if self.n_kernel:
            self.kernel_keys.copy_(torch.from_numpy(fit.kernel_keys).half())
            self.gamma.fill_(fit.gamma)
        self.coef.copy_(torch.from_numpy(fit.coef).half())
        self.offset.copy_(torch.from_numpy(fit.offset))
        self.center.copy_(torch.from_numpy(fit.center))
        self.is_weight.copy_(torch.as_tensor(is_weight, dtype=torch.float32))
        self.calib.copy_(torch.tensor([fit.weight_norm, fit.bias]))
        self.norm_mean.copy_(torch.as_tensor(norm_mean, dtype=torch.float32))
        self.norm_std.copy_(torch.as_tensor(norm_std, dtype=torch.float32))

    @torch.no_grad()
    def load_keys(self, keys: np.ndarray, rows: np.ndarray, tau: float = 0.01) -> None:
        """Seen names' embeddings [S, D] (L2-normalised) and their zoo mean rows [S, R]; call after load_fit."""
        self.keys.copy_(torch.from_numpy(np.asarray(keys, np.float32)).half())
        self.residuals.zero_()
        ridge = self.ridge_rows(self.keys.float())
        self.residuals.copy_((torch.from_numpy(np.asarray(rows, np.float32)) - ridge).half())
        self.tau.fill_(tau)

    def ridge_rows(self, emb: torch.Tensor) -> torch.Tensor:
        """Calibrated ridge rows in parameter units (weight..., bias), without the kernel term."""
        feats = emb
        if self.n_kernel:
            feats = torch.exp(self.gamma * (emb @ self.kernel_keys.float().t() - 1.0))
        c = feats @ self.coef.float() + self.offset - self.center
        w = c * self.is_weight
        scale = self.calib[0] / torch.sqrt((w * w).sum(-1, keepdim=True) + 1e-12)
        return self.is_weight * (w * scale + self.center) + (1.0 - self.is_weight) * self.calib[1]

    def raw_rows(self, emb: torch.Tensor) -> torch.Tensor:
        """Prior rows in parameter units: the ridge row, plus the kernel term when there are keys."""
        rows = self.ridge_rows(emb)
        if self.n_keys:
            w = torch.exp((emb @ self.keys.float().t() - 1.0) / self.tau)
            rows = rows + w @ self.residuals.float()
        return rows

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return (self.raw_rows(emb) - self.norm_mean) / self.norm_std


def row_normalisation(layout) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row entry: is-weight flag, normalisation mean and std (from the layout's TensorSpecs)."""
    flags, means, stds = [], [], []
    by_offset = {s.offset: s for s in layout.specs}
    for i, (offset, per) in enumerate(layout.row_segments()):
        s = by_offset[offset]
        flags += [1.0 if i == 0 else 0.0] * per
        means += [s.mean] * per
        stds += [s.std] * per
    return np.array(flags, np.float32), np.array(means, np.float32), np.array(stds, np.float32)
