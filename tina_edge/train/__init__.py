"""PyTorch side of tina-edge: datasets, templates, generic model, p-model zoo, Tina training."""
