"""Few-shot baselines on frozen trunk features (issue 21), numpy only: what an app could do with photos.

Why here: benchmarks/photo_prompts.py compares the runtime's shipped photo rule
(runtime/photo_prompts.py) with these baselines on the same tasks, shots and photos. They follow
../shared/tools/fewshot_calibration.py (the issue's calibration) so the figures are comparable:
softmax regression by Adam on the shots, the same regression started from and regularised toward
the name's rows (a MAP fit with the prior as its mean), a raw cosine prototype, and the z-scored
logit average (per photo, so not a linear head: a reference, not something a head can ship).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def l2(x: np.ndarray) -> np.ndarray:
    return x / (np.linalg.norm(x, axis=-1, keepdims=True) + 1e-12)


def zscore(z: np.ndarray) -> np.ndarray:
    """Per-photo z-score of logits across classes."""
    return (z - z.mean(1, keepdims=True)) / (z.std(1, keepdims=True) + 1e-6)


def logreg(X: np.ndarray, y: np.ndarray, k: int, W0: np.ndarray | None = None, b0: np.ndarray | None = None,
           steps: int = 300, wd: float = 1e-3, lr: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Softmax regression by Adam (full batch); L2 toward (W0, b0) when given: the MAP fit around the
    name's rows (prior mean W0), else toward 0 from 0. Returns (W [k, D], b [k])."""
    X = np.asarray(X, np.float32)
    W = np.zeros((k, X.shape[1]), np.float32) if W0 is None else np.array(W0, np.float32)
    b = np.zeros(k, np.float32) if b0 is None else np.array(b0, np.float32)
    Wr = np.zeros_like(W) if W0 is None else np.array(W0, np.float32)
    m, v, Y = [0 * W, 0 * b], [0 * W, 0 * b], np.eye(k, dtype=np.float32)[y]
    for t in range(1, steps + 1):
        z = X @ W.T + b
        z -= z.max(1, keepdims=True)
        P = np.exp(z)
        P /= P.sum(1, keepdims=True)
        g = (P - Y) / len(X)
        for i, (gr, par) in enumerate([(g.T @ X + wd * (W - Wr), W), (g.sum(0), b)]):
            m[i] = 0.9 * m[i] + 0.1 * gr
            v[i] = 0.999 * v[i] + 0.001 * gr ** 2
            par -= lr * (m[i] / (1 - 0.9 ** t)) / (np.sqrt(v[i] / (1 - 0.999 ** t)) + 1e-8)
    return W, b


def map_logreg(X: np.ndarray, y: np.ndarray, W0: np.ndarray, b0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The calibration's MAP fit: 100 Adam steps from the name's rows, L2 1e-2 toward them, lr 0.01."""
    return logreg(X, y, W0.shape[0], W0, b0, steps=100, wd=1e-2, lr=0.01)


def cosine_prototype_logits(shots: Sequence[np.ndarray], Xq: np.ndarray) -> np.ndarray:
    """Raw cosine prototype: cos(query, mean feature of the class's shots)."""
    mu = l2(np.stack([np.asarray(s).mean(0) for s in shots]))
    return l2(Xq) @ mu.T


def class_recalls(logits: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """Recall per class [k] (accuracy on each class's own photos)."""
    pred = logits.argmax(1)
    return np.array([float((pred[y == c] == c).mean()) for c in range(k)])
