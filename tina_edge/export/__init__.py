"""PyTorch -> ONNX export of the bundle's parts (text encoder, denoiser, template), with parity checks.

The modules that need torch (graphs, bundle, text_encoder) call `require_torch()` first, so
without the training extra they fail with the CLI's install hint; generate, ort_format,
weight_only and conformance are torch-free (`tina-edge convert` uses them in a runtime install).
"""

from __future__ import annotations

from ..runtime.errors import TRAIN_EXTRA_HINT, TinaEdgeError


def require_torch() -> None:
    """Raise the install hint (a TinaEdgeError) when torch cannot be imported."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise TinaEdgeError(TRAIN_EXTRA_HINT) from None
