"""PyTorch -> ONNX export of the bundle's parts (text encoder, denoiser, template), with parity checks."""
