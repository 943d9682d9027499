"""Checkpoint -> bundle, in two halves.

- The torch exporters (bundle.py, graphs.py, text_encoder.py; quantize_trunk.py beside them) turn a
  checkpoint into ONNX graphs with parity checks; they call `require_torch()` first, so without the
  [train] extra they fail with the CLI's install hint.
- export/portable/ holds the torch-free rewriters of an existing bundle (generate.onnx, weight
  storage, ORT format, conformance vectors): `tina-edge convert` runs them in a runtime install.
"""

from __future__ import annotations

from .._moved import register_moved
from ..runtime.errors import TRAIN_EXTRA_HINT, InstallError


def require_torch() -> None:
    """Raise the install hint (a TinaEdgeError) when torch cannot be imported."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise InstallError(TRAIN_EXTRA_HINT) from None


# the torch-free rewriters moved into export/portable/ (issue 19); their old paths say so
register_moved(__name__, {m: f"portable.{m}" for m in ("generate", "weight_only", "ort_format", "conformance")})
