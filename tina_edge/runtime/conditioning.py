"""Class slots: a task's k class rows padded to the bundle's K_max slots, the denoiser's input form.

Written once: the runtime's personalize, export's parity check and the training-side evaluation
all pad here, so slot j is class j everywhere and padded slots are zero with mask 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pad_to_slots(tasks: Sequence[np.ndarray], k_max: int) -> tuple[np.ndarray, np.ndarray]:
    """Per task a [k, D] array of class rows -> class_emb float32 [B, K_max, D], class_mask float32 [B, K_max]."""
    if not len(tasks):
        raise ValueError("pad_to_slots needs at least one task")
    dim = int(np.shape(tasks[0])[-1])
    emb = np.zeros((len(tasks), int(k_max), dim), dtype=np.float32)
    mask = np.zeros((len(tasks), int(k_max)), dtype=np.float32)
    for b, rows in enumerate(tasks):
        k = len(rows)
        if k > k_max:
            raise ValueError(f"a task of {k} classes does not fit {k_max} class slots")
        emb[b, :k] = rows
        mask[b, :k] = 1.0
    return emb, mask
