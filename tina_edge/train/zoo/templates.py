"""Classifier templates: an architecture plus the layout of the parameters Tina generates.

Three templates:
  * ``tiny_cnn``    -- the whole ~5K-parameter CNN is generated (conv3->16 s2, conv16->32, GAP, fc32->k).
  * ``resnet_head`` -- a frozen ResNet trunk (trained once on the universe); only the head 64->k is generated.
  * ``lite0_head``  -- the frozen ImageNet-pretrained EfficientNet-Lite0 trunk (train/trunk.py) at
                       ``image_size`` px; only the linear head 1280->k is generated (k x 1281 numbers).

Every template accepts any class count k in 2..K_max: generated tensors with a class axis are laid
out at K_max rows; a k-class model uses the first k rows (the rest are padding and discarded).
Images enter as uint8 NHWC [N, H, W, 3]; normalisation happens inside ``forward`` so the exported
ONNX graph carries it.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from tina_edge.runtime.manifest import InputSpec, TensorSpec
from tina_edge.train.configs import TemplateConfig  # noqa: F401 (its home is the torch-free configs.py)

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


class Normalize(nn.Module):
    """uint8 NHWC -> float NCHW normalised; kept in the model so the ONNX takes raw pixels."""

    def __init__(self, mean=CIFAR_MEAN, std=CIFAR_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("inv_std", 1.0 / (torch.tensor(std).view(1, 3, 1, 1) * 255.0), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.permute(0, 3, 1, 2).to(torch.float32)
        return (x - self.mean) * self.inv_std


# ---------------------------------------------------------------------------------------------
# Tiny CNN (whole network generated)


class TinyCNN(nn.Module):
    """The paper's tiny CNN: conv3->16 stride 2, conv16->32, global average pool, fc32->k, no conv bias."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.normalize = Normalize()
        self.conv1 = nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False)
        self.conv2 = nn.Conv2d(16, 32, 3, stride=1, padding=1, bias=False)
        self.fc = nn.Linear(32, num_classes)

    def features(self, image: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(self.normalize(image)))
        x = F.relu(self.conv2(x))
        return x.mean(dim=(2, 3))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(image))


# ---------------------------------------------------------------------------------------------
# ResNet trunk (frozen) + generated head


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetTrunk(nn.Module):
    """ResNet-(6n+2) for 32x32 images (He et al. CIFAR variant); n=3 is ResNet-20. Output: [N, widths[-1]]."""

    def __init__(self, blocks_per_stage: int = 1, widths: tuple[int, int, int] = (16, 32, 64), stem_stride: int = 1):
        super().__init__()
        self.normalize = Normalize()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, stem_stride, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        layers, cin = [], widths[0]
        for i, w in enumerate(widths):
            for j in range(blocks_per_stage):
                layers.append(BasicBlock(cin, w, 2 if (i > 0 and j == 0) else 1))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.out_dim = widths[-1]

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(self.normalize(image)))
        return x.mean(dim=(2, 3))


class Lite0Classifier(nn.Module):
    """Frozen EfficientNet-Lite0 trunk + linear head (``lite0_head``); the trunk's weights come from the
    generic model's state dict (which holds the pretrained trunk), so building it needs no download."""

    def __init__(self, num_classes: int):
        super().__init__()
        from tina_edge.train.zoo.trunk import Lite0Trunk

        self.trunk = Lite0Trunk()
        self.fc = nn.Linear(self.trunk.out_dim, num_classes)

    def features(self, image: torch.Tensor) -> torch.Tensor:
        return self.trunk(image)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.fc(self.trunk(image))


class ResNetClassifier(nn.Module):
    """Trunk + linear head; the generic model and every p-model of the ``resnet_head`` template."""

    def __init__(self, num_classes: int, blocks_per_stage: int = 1, widths=(16, 32, 64), stem_stride: int = 1):
        super().__init__()
        self.trunk = ResNetTrunk(blocks_per_stage, tuple(widths), stem_stride)
        self.fc = nn.Linear(self.trunk.out_dim, num_classes)

    def features(self, image: torch.Tensor) -> torch.Tensor:
        return self.trunk(image)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.fc(self.trunk(image))


# ---------------------------------------------------------------------------------------------
# Template description: which tensors are generated, and their flat layout


def build_model(cfg: TemplateConfig, num_classes: int) -> nn.Module:
    if cfg.name == "tiny_cnn":
        return TinyCNN(num_classes)
    if cfg.name == "resnet_head":
        return ResNetClassifier(num_classes, cfg.blocks_per_stage, tuple(cfg.widths), cfg.stem_stride)
    if cfg.name == "lite0_head":
        return Lite0Classifier(num_classes)
    raise ValueError(f"unknown template {cfg.name!r}; choose tiny_cnn, resnet_head or lite0_head")


HEAD_TEMPLATES = ("resnet_head", "lite0_head")  # frozen trunk + generated linear head: features are cached


def generated_names(cfg: TemplateConfig) -> list[str]:
    """Names (state-dict order) of the tensors Tina generates for this template."""
    if cfg.name == "tiny_cnn":
        return ["conv1.weight", "conv2.weight", "fc.weight", "fc.bias"]
    if cfg.name in HEAD_TEMPLATES:
        return ["fc.weight", "fc.bias"]
    raise ValueError(f"unknown template {cfg.name!r}")


class ParamLayout:
    """Flat layout of the generated tensors at K_max classes; flatten/unflatten any k in 2..K_max."""

    def __init__(self, cfg: TemplateConfig):
        self.cfg = cfg
        self.k_max = cfg.k_max
        sd = _generated_shapes(cfg)
        self.specs: list[TensorSpec] = []
        off = 0
        for name in generated_names(cfg):
            shape = list(sd[name].shape)
            class_axis = 0 if name.startswith("fc.") else None
            self.specs.append(TensorSpec(name=name, shape=shape, offset=off, class_axis=class_axis))
            off += math.prod(sd[name].shape)
        self.size = off

    def check_k(self, k: int) -> None:
        if not 2 <= k <= self.k_max:
            raise ValueError(f"class count k={k} is outside 2..{self.k_max} (K_max of this template)")

    def flatten(self, tensors: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """k-class tensors -> (flat vector [P] zero-padded to K_max, validity mask [P] of real entries)."""
        flat = torch.zeros(self.size)
        valid = torch.zeros(self.size, dtype=torch.bool)
        for s in self.specs:
            t = tensors[s.name].detach().float().cpu()
            full = torch.zeros(s.shape)
            ok = torch.zeros(s.shape, dtype=torch.bool)
            if s.class_axis is None:
                if list(t.shape) != s.shape:
                    raise ValueError(f"{s.name}: shape {list(t.shape)} != {s.shape}")
                full, ok = t, torch.ones(s.shape, dtype=torch.bool)
            else:
                k = t.shape[0]
                self.check_k(k)
                full[:k] = t
                ok[:k] = True
            flat[s.offset : s.offset + s.numel] = full.reshape(-1)
            valid[s.offset : s.offset + s.numel] = ok.reshape(-1)
        return flat, valid

    def unflatten(self, flat: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
        """flat [P] (or [B, P]) -> tensors for a k-class model (class axes sliced to k)."""
        self.check_k(k)
        lead = flat.shape[:-1]
        out = {}
        for s in self.specs:
            t = flat[..., s.offset : s.offset + s.numel].reshape(*lead, *s.shape)
            if s.class_axis is not None:
                t = t.narrow(len(lead) + s.class_axis, 0, k)
            out[s.name] = t
        return out

    def permute_classes(self, flat: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
        """Reorder class slots of flat [..., P] by perm (a permutation of 0..K_max-1)."""
        out = flat.clone()
        for s in self.specs:
            if s.class_axis is None:
                continue
            seg = flat[..., s.offset : s.offset + s.numel].reshape(*flat.shape[:-1], *s.shape)
            seg = seg.index_select(flat.dim() - 1 + s.class_axis, perm)
            out[..., s.offset : s.offset + s.numel] = seg.reshape(*flat.shape[:-1], -1)
        return out

    def chunks(self, chunk_size: int) -> list[tuple[int, int]]:
        """(start, length) chunks that never cross a tensor boundary.

        Tensors with a class axis are cut per class slot (so padded classes map to whole tokens);
        slots (or other tensors) longer than chunk_size are cut further.
        """
        out = []
        for s in self.specs:
            pieces = s.shape[0] if s.class_axis is not None else 1
            if s.numel // pieces < 8:  # e.g. a bias: one value per class is too small for a token
                pieces = 1
            piece = s.numel // pieces
            for p in range(pieces):
                start = s.offset + p * piece
                for c in range(0, piece, chunk_size):
                    out.append((start + c, min(chunk_size, piece - c)))
        return out

    def chunk_slots(self, chunk_size: int) -> list[int]:
        """Class slot of each chunk from `chunks(chunk_size)`, or -1 when it spans no single class."""
        slot = param_class_slot(self)
        out = []
        for start, length in self.chunks(chunk_size):
            s = slot[start : start + length]
            out.append(int(s[0]) if bool((s == s[0]).all()) and int(s[0]) >= 0 else -1)
        return out

    def row_segments(self) -> list[list[int]]:
        """[[offset, per_slot_numel], ...] of every class-axis tensor: slot j's row = the concatenation
        of flat[offset + j*per : offset + (j+1)*per] over segments (a 1281-number row for lite0_head)."""
        segs = []
        for s in self.specs:
            if s.class_axis is not None:
                if s.class_axis != 0:
                    raise ValueError(f"{s.name}: row tokens need the class axis first")
                segs.append([s.offset, s.numel // s.shape[0]])
        return segs

    def input_spec(self) -> InputSpec:
        if self.cfg.name == "lite0_head":
            from tina_edge.train.zoo.trunk import LITE0_MEAN, LITE0_STD

            from tina_edge.runtime.preprocess import PreprocessSpec

            n = self.cfg.image_size
            return InputSpec(height=n, width=n, channels=3, mean=list(LITE0_MEAN), std=list(LITE0_STD),
                             preprocess=PreprocessSpec(size=n).to_dict())
        return InputSpec(height=32, width=32, channels=3, mean=list(CIFAR_MEAN), std=list(CIFAR_STD))


def _generated_shapes(cfg: TemplateConfig) -> dict[str, torch.Tensor]:
    """Shapes of the generated tensors at K_max rows (the lite0 head without building the trunk)."""
    if cfg.name == "lite0_head":
        from tina_edge.train.zoo.trunk import LITE0_DIM

        return {"fc.weight": torch.empty(cfg.k_max, LITE0_DIM), "fc.bias": torch.empty(cfg.k_max)}
    return build_model(cfg, cfg.k_max).state_dict()


def param_class_slot(layout: ParamLayout) -> torch.Tensor:
    """For each flat parameter, its class slot (0..K_max-1) or -1 when it belongs to no class."""
    slot = torch.full((layout.size,), -1, dtype=torch.long)
    for s in layout.specs:
        if s.class_axis is None:
            continue
        per = s.numel // s.shape[0]
        slot[s.offset : s.offset + s.numel] = torch.arange(s.shape[0]).repeat_interleave(per)
    return slot
