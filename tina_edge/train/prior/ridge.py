"""Ridge regression, the one solve of every text -> row map: the ridge baselines and the text prior.

`fit_ridge` picks the penalty by closed-form leave-one-out (one SVD for every lambda); `ridge_solve`
refits with a chosen penalty on more pairs. Both centre x and y (the intercept is not penalised).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tina_edge.runtime.errors import TrainingError


@dataclass
class RidgeMap:
    """Linear text -> row map with an unpenalised intercept; `lam` chosen by leave-one-out."""

    x_mean: np.ndarray
    y_mean: np.ndarray
    coef: np.ndarray  # [D, R]
    lam: float
    loo_mse: float
    unit_rows: bool = False
    row_norm: float = 1.0  # mean weight norm of the training rows (rescales unit-row predictions)

    def predict(self, x: np.ndarray) -> np.ndarray:
        y = (np.asarray(x, np.float64) - self.x_mean) @ self.coef + self.y_mean
        if self.unit_rows:  # calibrate the norm: every predicted row gets the seen rows' mean scale
            y = y / np.maximum(np.linalg.norm(y[:, :-1], axis=1, keepdims=True), 1e-12) * self.row_norm
        return y.astype(np.float32)


def fit_ridge(x: np.ndarray, y: np.ndarray, *, unit_rows: bool = False,
              lambdas: np.ndarray | None = None) -> RidgeMap:
    """Ridge regression x [n, D] -> y [n, R]; the penalty minimising the closed-form LOO error wins.

    LOO residual of point i = residual_i / (1 - h_ii), with h the hat matrix of the centred fit
    (+1/n for the intercept), computed for every lambda from one SVD.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 3:
        raise TrainingError(f"ridge needs at least 3 seen classes, got {len(x)}")
    norms = np.linalg.norm(y[:, :-1], axis=1)
    row_norm = float(norms.mean())
    if unit_rows:
        y = y / np.maximum(norms, 1e-12)[:, None]
    xm, ym = x.mean(0), y.mean(0)
    xc, yc = x - xm, y - ym
    u, s, vt = np.linalg.svd(xc, full_matrices=False)
    uty = u.T @ yc
    n = len(x)
    lambdas = np.logspace(-4, 4, 33) * max(float((s ** 2).mean()), 1e-12) if lambdas is None else lambdas
    best = (np.inf, None)
    for lam in lambdas:
        d = s ** 2 / (s ** 2 + lam)
        resid = yc - u @ (d[:, None] * uty)
        h = (u ** 2) @ d + 1.0 / n
        mse = float(((resid / (1.0 - h)[:, None]) ** 2).mean())
        if mse < best[0]:
            best = (mse, float(lam))
    mse, lam = best
    coef = vt.T @ ((s / (s ** 2 + lam))[:, None] * uty)
    return RidgeMap(xm, ym, coef, lam, mse, unit_rows, row_norm)


def ridge_solve(x: np.ndarray, y: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """(coef [D, R], offset [R]) of ridge x [n, D] -> y [n, R] with penalty `lam`, in float64."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    xm, ym = x.mean(0), y.mean(0)
    xc = x - xm
    coef = np.linalg.solve(xc.T @ xc + lam * np.eye(x.shape[1]), xc.T @ (y - ym))
    return coef, ym - xm @ coef
