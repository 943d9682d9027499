"""More classes than the bundle's K_max slots: generate in groups, then put every row on one scale.

A prompt of k > K_max classes is split into G = ceil(k / K_max) groups of balanced sizes (the first
k mod G groups hold one class more), each group a contiguous run of the prompt, so classes keep
their prompt order in the output. All groups run as one batch through the denoiser (or
generate.onnx) from the same portable starting noise: candidate c of every group starts from row c
of `initial_noise(seed, (C, P))`, the noise a prompt of <= K_max classes uses (docs/PORTABLE.md;
js/src/core.mjs does the same). The groups' class slices are then joined in prompt order and
calibrated (`calibrate`, mode "group"): each group's weights are scaled so that its mean row norm
is the mean row norm of all k classes, and its biases shifted so that its mean bias is the mean of
all k biases. Class 1 and class 100, generated in different groups, then compete on one scale,
while the rows within a group keep the spread the generator gave them (equalising every row,
mode "row", cost 0.2 points at k = 50 and 100: benchmarks/MANY_CLASSES.md measured all four).

Prompts of <= K_max classes never come here: their classifiers stay bit-identical.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from .manifest import TensorSpec

MAX_CLASSES = 1000  # classes per prompt; 1000 x 1281 floats of head, 50 groups of the default bundle
BATCH_ROWS = 64  # rows per denoiser run (= MAX_CANDIDATES): peak memory stays that of 64 candidates today
CALIBRATIONS = ("none", "group", "row-norm", "row")
CALIBRATION = "group"  # the one the runtime uses (chosen by benchmarks/many_classes.py)


def max_classes(k_max: int) -> int:
    """The most classes a prompt may name with a bundle of `k_max` slots."""
    return max(MAX_CLASSES, int(k_max))


def group_sizes(k: int, k_max: int) -> list[int]:
    """Balanced group sizes for k classes in groups of at most k_max: [k] when k <= k_max."""
    g = max(1, math.ceil(k / k_max))
    base, extra = divmod(k, g)
    return [base + (1 if i < extra else 0) for i in range(g)]


def split_rows(emb: np.ndarray, k_max: int) -> list[np.ndarray]:
    """The conditioning rows [k, D] cut into the groups of `group_sizes` (prompt order kept)."""
    out, start = [], 0
    for n in group_sizes(len(emb), k_max):
        out.append(emb[start : start + n])
        start += n
    return out


def join_groups(parts: Sequence[Mapping[str, np.ndarray]], layout: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    """Per group its denormalised tensors (k_g on the class axis) -> one set with all k classes in
    prompt order; a tensor without a class axis is shared by the groups: the first group's is kept."""
    out: dict[str, np.ndarray] = {}
    for t in layout:
        if t.class_axis is None:
            out[t.name] = parts[0][t.name]
        else:
            out[t.name] = np.ascontiguousarray(np.concatenate([p[t.name] for p in parts], axis=t.class_axis),
                                               dtype=np.float32)
    return out


def _class_tensors(layout: Sequence[TensorSpec]) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """(weights, biases): class-axis tensors whose per-class slice has several numbers, or one."""
    cls = [t for t in layout if t.class_axis is not None]
    per_class = {t.name: t.numel // t.shape[t.class_axis] for t in cls}
    return [t for t in cls if per_class[t.name] > 1], [t for t in cls if per_class[t.name] == 1]


def calibrate(params: Mapping[str, np.ndarray], layout: Sequence[TensorSpec], sizes: Sequence[int],
              mode: str = CALIBRATION) -> dict[str, np.ndarray]:
    """Put the rows of groups generated apart on one scale (float32 copies; `sizes`: the groups).

    "row": every class's weights (all its weight slices together) scaled to the mean norm of all
    k classes, and every bias set to the mean bias; "row-norm": the norms only; "group": each
    group's mean norm and mean bias moved to those of all classes (rows keep their spread within
    a group); "none": the rows as generated.
    """
    if mode not in CALIBRATIONS:
        raise ValueError(f"calibration must be one of {CALIBRATIONS}, got {mode!r}")
    out = {n: np.array(v, dtype=np.float32) for n, v in params.items()}
    weights, biases = _class_tensors(layout)
    if mode == "none" or not (weights or biases):
        return out
    k = int(sum(sizes))
    moved = {t.name: np.moveaxis(out[t.name], t.class_axis, 0) for t in weights + biases}  # views
    sq = np.zeros(k, np.float64)
    for t in weights:
        sq += (moved[t.name].reshape(k, -1).astype(np.float64) ** 2).sum(1)
    norm = np.sqrt(sq)
    if mode == "group":
        starts = np.cumsum([0, *sizes])
        scale = np.ones(k, np.float64)
        for a, b in zip(starts[:-1], starts[1:]):
            scale[a:b] = norm.mean() / max(norm[a:b].mean(), 1e-12)
    else:
        scale = norm.mean() / np.maximum(norm, 1e-12)
    for t in weights:
        w = moved[t.name]
        w *= scale.reshape((k,) + (1,) * (w.ndim - 1)).astype(np.float32)
    for t in biases:
        b = moved[t.name]  # [k, 1, ...] view: written in place
        mean = b.astype(np.float64).mean()
        if mode == "row":
            b[...] = np.float32(mean)
        elif mode == "group":
            starts = np.cumsum([0, *sizes])
            for a, e in zip(starts[:-1], starts[1:]):
                b[a:e] += np.float32(mean - b[a:e].astype(np.float64).mean())
    return out
