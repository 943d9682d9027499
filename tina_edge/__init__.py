"""tina-edge: text prompt -> personalized image classifier (Tina, arXiv 2405.14132)."""

__version__ = "0.1.0"
