"""The graph contract of a bundle, declared once: file names, input/output names and types, batch axes.

The exporter builds graphs from these declarations and the runtime checks and feeds graphs with the
same ones, so a renamed input cannot make an exporter write a bundle the runtime refuses.
"""

from __future__ import annotations

# onnx.TensorProto element types (stable values of the ONNX spec); no onnx import, the runtime stays light
FLOAT, UINT8, INT64, FLOAT16, DOUBLE = 1, 2, 7, 10, 11

# File names an exporter gives a bundle's parts (the manifest records them; a reader takes the manifest's)
TEXT_MODEL = "text_encoder.onnx"
IMAGE_MODEL = "image_encoder.onnx"
TOKENIZER = "tokenizer.json"
DENOISER = "denoiser.onnx"
TEMPLATE = "template.onnx"

# role -> ({input: element type}, {output: element type}), in graph order
CONTRACTS: dict[str, tuple[dict[str, int], dict[str, int]]] = {
    "text_encoder": ({"input_ids": INT64, "attention_mask": INT64}, {"embeddings": FLOAT}),
    "denoiser": ({"x_t": FLOAT, "timestep": INT64, "class_emb": FLOAT, "class_mask": FLOAT}, {"x0": FLOAT}),
    "template": ({"image": UINT8}, {"logits": FLOAT, "probabilities": FLOAT}),
    "image_encoder": ({"image": UINT8}, {"embeddings": FLOAT}),  # optional: CLIP's image tower
}
SAMPLERS = ("ddim", "ddpm")  # sampler names a manifest may choose as its default (runtime/samplers.py runs them)
BATCH = "batch"  # name of the dynamic leading axis of every input and output of the denoiser


def input_names(role: str) -> list[str]:
    """Input names of a role's graph, in graph order."""
    return list(CONTRACTS[role][0])


def output_names(role: str) -> list[str]:
    """Output names of a role's graph, in graph order."""
    return list(CONTRACTS[role][1])


def batch_axes(role: str) -> dict[str, dict[int, str]]:
    """`dynamic_axes` for torch.onnx.export: axis 0 of every input and output is the batch."""
    return {name: {0: BATCH} for name in input_names(role) + output_names(role)}
