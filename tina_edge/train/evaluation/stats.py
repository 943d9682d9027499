"""Paired statistics for comparing methods evaluated on the same tasks and images.

Every method is scored on the same tasks, so per-task differences (Tina − baseline) cancel the
task-to-task variance that dominates unpaired comparisons. Tasks that share a held-out class are
not independent, so besides the plain paired standard error we report a cluster-robust one
(per-cluster mean differences, SE across clusters): the honest one when few classes repeat often.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def mean_se(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, standard error of the mean (ddof=1) and n over finite values; NaN where undefined."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    n = len(v)
    if n == 0:
        return float("nan"), float("nan"), 0
    se = float(v.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return float(v.mean()), se, n


def paired_difference(a: Sequence[float], b: Sequence[float], clusters: Sequence | None = None) -> dict:
    """Mean of a − b over pairs where both are finite, its paired SE, and a cluster SE if given.

    `clusters[i]` labels pair i (e.g. its held-out class); the cluster SE is the SE of the
    per-cluster mean differences (weights equal per cluster), which does not assume that tasks
    sharing a class are independent.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in length: {a.shape} vs {b.shape}")
    ok = np.isfinite(a) & np.isfinite(b)
    d = (a - b)[ok]
    mean, se, n = mean_se(d)
    out = {"mean": mean, "se": se, "n": n, "ci95": [mean - 1.96 * se, mean + 1.96 * se] if n > 1 else None,
           "wins": int((d > 0).sum()), "losses": int((d < 0).sum())}
    if clusters is not None:
        labels = np.asarray(list(clusters), dtype=object)[ok]
        per = [float(d[labels == c].mean()) for c in dict.fromkeys(labels.tolist())]
        cm, cse, cn = mean_se(per)
        out |= {"cluster_mean": cm, "cluster_se": cse, "clusters": cn}
    return out


def format_diff(d: dict, digits: int = 1) -> str:
    """'+3.2 ± 0.8' (paired SE), with the cluster SE in brackets when known."""
    if not d or d.get("n", 0) == 0 or not np.isfinite(d["mean"]):
        return "—"
    s = f"{d['mean']:+.{digits}f} ± {d['se']:.{digits}f}" if np.isfinite(d["se"]) else f"{d['mean']:+.{digits}f}"
    if "cluster_se" in d and np.isfinite(d["cluster_se"]):
        s += f" [{d['cluster_se']:.{digits}f}]"
    return s
