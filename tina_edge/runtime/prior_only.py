"""The generator as the text prior alone (manifest `portable.prior.only`): no denoiser steps at all.

Why: the denoiser's learned correction adds nothing measurable (BENCHMARKS §15: the prior alone ties
on seen classes and wins on held-out names), so `tina-edge convert --prior-only`
(export/portable/prior_only.py) zeroes it. Then every step's x0 prediction is, float for float,
`0 + prior * mask` scattered from rows to the flat parameter vector (the denoiser's last ops: the
zero MatMul and zero bias give +0, `/Add_2` adds the masked prior rows, `index_select` scatters), and
every sampler's last step has a zero coefficient on x_t (abar_prev = 1). So the sampled parameters
are the sampler's last step applied to that x0, bit-identical to running the steps, and neither the
starting noise nor the seed changes them. This module computes that x0 from the prior rows; the
Personalizer applies the sampler's last step (tests/test_prior_only.py proves the equality).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import BundleError
from .manifest import TensorSpec


def row_segments(layout: Sequence[TensorSpec], k_max: int, row_dim: int) -> list[tuple[int, int]]:
    """[(offset, per-slot numel)] of the layout's tensors, in layout order: slot j's row is the
    concatenation of flat[offset + j*per : offset + (j+1)*per] (train/zoo/templates.py row_segments)."""
    segs = []
    for t in layout:
        if t.class_axis != 0 or not t.shape or t.shape[0] != k_max:
            raise BundleError(f"the generated tensor {t.name} has no leading class axis of K_max {k_max}; the prior "
                              "alone needs one row per class (convert without --prior-only)")
        segs.append((int(t.offset), int(t.numel) // k_max))
    if sum(per for _, per in segs) != row_dim:
        raise BundleError(f"the prior rows hold {row_dim} numbers but the layout's rows hold "
                          f"{sum(per for _, per in segs)}; convert without --prior-only")
    return segs


def prior_x0(prior: np.ndarray, mask: np.ndarray, layout: Sequence[TensorSpec], param_count: int) -> np.ndarray:
    """x0 [B, P] float32 of a denoiser whose correction is zero: 0 + prior [B, K, R] * mask [B, K],
    the rows scattered to the flat parameter vector (the same float ops as the graph)."""
    prior = np.asarray(prior, np.float32)
    B, K, R = prior.shape
    rows = np.float32(0.0) + prior * np.asarray(mask, np.float32)[..., None]
    out = np.empty((B, param_count), np.float32)
    at = 0
    for offset, per in row_segments(layout, K, R):
        out[:, offset : offset + K * per] = rows[:, :, at : at + per].reshape(B, K * per)
        at += per
    return out
