"""The generic model: one classifier trained on every class of the universe.

Every p-model starts from it, and its rows give the "classifier selection" baseline. For the
``resnet_head`` template its trunk is the frozen feature extractor baked into the exported template.
Saved as safetensors weights + a JSON sidecar (never a pickle).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save
from tqdm.auto import tqdm

from tina_edge.runtime.atomic import atomic_write_bytes
from tina_edge.train.configs import GenericConfig
from tina_edge.train.zoo.templates import TemplateConfig, build_model


def augment(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random crop (pad 4) + horizontal flip on uint8 NHWC, as usual for 32x32 images."""
    N = images.shape[0]
    padded = F.pad(images.permute(0, 3, 1, 2), (4, 4, 4, 4)).permute(0, 2, 3, 1)
    dx, dy = torch.randint(0, 9, (2,), generator=gen).tolist()  # one offset per batch: cheap on CPU
    out = padded[:, dy : dy + 32, dx : dx + 32]
    flip = torch.rand(N, generator=gen) < 0.5
    out = torch.where(flip.view(N, 1, 1, 1), out.flip(2), out)
    return out.contiguous()


def train_generic(images: np.ndarray, labels: np.ndarray, classes: list[str], cfg: TemplateConfig, *,
                  epochs: int = GenericConfig.epochs, batch_size: int = GenericConfig.batch_size,
                  lr: float = GenericConfig.lr, seed: int = GenericConfig.seed, progress: bool = True) -> torch.nn.Module:
    """SGD + nesterov, one-cycle cosine, label smoothing 0.1; returns the trained model (eval mode)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = build_model(cfg, len(classes))
    x_all = torch.from_numpy(images)
    y_all = torch.from_numpy(labels.astype(np.int64))
    steps_per_epoch = max(1, len(x_all) // batch_size)
    total = epochs * steps_per_epoch
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.15)
    model.train()
    bar = tqdm(total=total, desc="generic", disable=not progress, unit="step")
    for ep in range(epochs):
        perm = torch.randperm(len(x_all), generator=gen)
        for i in range(steps_per_epoch):
            idx = perm[i * batch_size : (i + 1) * batch_size]
            logits = model(augment(x_all[idx], gen))
            loss = F.cross_entropy(logits, y_all[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            if i % 20 == 0:
                bar.set_postfix(epoch=ep, loss=f"{loss.item():.3f}")
    bar.close()
    return model.eval()


@torch.no_grad()
def predict_logits(model: torch.nn.Module, images: np.ndarray, batch_size: int = 1000) -> torch.Tensor:
    model.eval()
    return torch.cat([model(torch.from_numpy(images[i : i + batch_size])) for i in range(0, len(images), batch_size)])


@torch.no_grad()
def extract_features(model: torch.nn.Module, images: np.ndarray, batch_size: int = 1000) -> torch.Tensor:
    model.eval()
    return torch.cat([model.features(torch.from_numpy(images[i : i + batch_size])) for i in range(0, len(images), batch_size)])


def save_generic(path: str | Path, model: torch.nn.Module, cfg: TemplateConfig, classes: list[str], info: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"template": cfg.__dict__, "classes": classes, "info": info}
    data = save({k: v.contiguous() for k, v in model.state_dict().items()}, metadata={"tina_edge": json.dumps(meta)})
    atomic_write_bytes(path, data, overwrite=True)


def load_generic(path: str | Path) -> tuple[torch.nn.Module, TemplateConfig, list[str], dict]:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"generic model {path} does not exist; run `tina-edge train generic` first")
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["tina_edge"])
    cfg = TemplateConfig(**meta["template"])
    model = build_model(cfg, len(meta["classes"]))
    model.load_state_dict(load_file(str(path)))
    return model.eval(), cfg, meta["classes"], meta.get("info", {})


def accuracy(logits: torch.Tensor, labels) -> float:
    labels = torch.as_tensor(labels)
    return float((logits.argmax(-1) == labels).float().mean()) * 100.0
