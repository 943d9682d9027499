"""Tiny synthetic image universe and a tiny trained Tina, shared by the training/export tests.

Classes are colour-and-stripe patterns with noise, so a small network learns them in seconds and
accuracy figures mean something (far above chance after training, chance before).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tina_edge.train.data.small import ImageDataset

NAMES = ["red square", "green stripe", "blue dot", "yellow ring", "purple cross", "orange wave"]


def synthetic_universe(n_per_class: int = 60, seed: int = 0, classes=NAMES) -> tuple[ImageDataset, ImageDataset]:
    rng = np.random.default_rng(seed)
    base = rng.integers(30, 226, size=(len(classes), 3))
    def make(n):
        imgs, labels = [], []
        yy, xx = np.mgrid[0:32, 0:32]
        for c in range(len(classes)):
            pattern = ((xx * (c + 1) + yy * (len(classes) - c)) // 6) % 2
            for _ in range(n):
                img = base[c][None, None, :] * (0.6 + 0.4 * pattern[..., None]) + rng.normal(0, 20, (32, 32, 3))
                imgs.append(np.clip(img, 0, 255).astype(np.uint8))
                labels.append(c)
        return ImageDataset(np.stack(imgs), np.array(labels, dtype=np.int64), list(classes), "synthetic")
    return make(n_per_class), make(n_per_class // 3)


def tiny_workdir(tmp: Path, *, template: str = "resnet_head", k_max: int = 4, n_tasks: int = 24,
                 diffusion_steps: int = 60, text_encoder: str = "minilm") -> Path:
    """Run every stage at toy size; returns the workdir holding tina.safetensors."""
    from tina_edge.train.configs import DiffusionOptions
    from tina_edge.train.stages.diffusion import stage_diffusion
    from tina_edge.train.stages.small import stage_generic, stage_zoo
    from tina_edge.train.zoo.templates import TemplateConfig
    from tina_edge.train.diffusion.trainer import TrainConfig

    train, test = synthetic_universe()
    cfg = TemplateConfig(name=template, k_max=k_max, blocks_per_stage=1, widths=[8, 8, 16], stem_stride=2)
    stage_generic(tmp, train, test, cfg, epochs=2, batch_size=64, lr=0.05, progress=False)
    stage_zoo(tmp, train, test, holdout=["orange wave"], n_tasks=n_tasks, n_id=4, n_ood_per_class=3, k_max=k_max,
              group=8, steps=20, progress=False)
    stage_diffusion(tmp, DiffusionOptions(text_encoder=text_encoder, hidden=32, layers=2, heads=2, chunk_size=16,
                                          train=TrainConfig(steps=diffusion_steps, batch_size=16, warmup=10),
                                          progress=False))
    return tmp
