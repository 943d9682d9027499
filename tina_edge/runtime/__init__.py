"""The torch-free edge runtime: bundle -> Personalizer -> PersonalizedClassifier (numpy + onnxruntime).

Nothing imported from here may import torch, open_clip or transformers (tests/test_no_torch.py).
"""

from . import errors
from .bundle import LoadedBundle, default_bundle_path, open_bundle
from .classifier import PersonalizedClassifier, Prediction
from .errors import BundleError, ImageError, ModelFileError, PromptError, RunError, SettingsError, TinaEdgeError
from .personalizer import Personalizer
from .prompt import check_class_count, parse_classes

__all__ = [
    "BundleError",
    "ImageError",
    "LoadedBundle",
    "ModelFileError",
    "PersonalizedClassifier",
    "Personalizer",
    "Prediction",
    "PromptError",
    "RunError",
    "SettingsError",
    "TinaEdgeError",
    "check_class_count",
    "default_bundle_path",
    "errors",
    "open_bundle",
    "parse_classes",
]
