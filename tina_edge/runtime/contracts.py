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
PRIOR_MODEL = "prior.onnx"  # the text prior cut from the denoiser (export/portable/prior_split.py)

# Graph value names: every exporter, runtime feed, test and conformance vector uses these constants.
INPUT_IDS, ATTENTION_MASK, EMBEDDINGS = "input_ids", "attention_mask", "embeddings"  # text / image encoders
X_T, TIMESTEP, CLASS_EMB, CLASS_MASK, X0 = "x_t", "timestep", "class_emb", "class_mask", "x0"  # denoiser
NOISE, PARAMS = "noise", "params"  # generate.onnx: x_T in, x0 and de-normalised parameters out
PRIOR = "prior"  # prior.onnx out, the split denoiser / generate.onnx in: prior rows [B, K, R], normalised
# torch.onnx's node scope of the denoiser's correction output (RowTokenDenoiser.row_out; x0 = correction + prior):
# export/portable/prior_only.py zeroes the initializers it reads
CORRECTION_SCOPE = "/row_out/"
IMAGE, FEATURES, LOGITS, PROBABILITIES = "image", "features", "logits", "probabilities"  # classifier, trunk, head

# role -> ({input: element type}, {output: element type}), in graph order
CONTRACTS: dict[str, tuple[dict[str, int], dict[str, int]]] = {
    "text_encoder": ({INPUT_IDS: INT64, ATTENTION_MASK: INT64}, {EMBEDDINGS: FLOAT}),
    "denoiser": ({X_T: FLOAT, TIMESTEP: INT64, CLASS_EMB: FLOAT, CLASS_MASK: FLOAT}, {X0: FLOAT}),
    "generate": ({CLASS_EMB: FLOAT, CLASS_MASK: FLOAT, NOISE: FLOAT}, {X0: FLOAT, PARAMS: FLOAT}),
    # bundles whose manifest names a prior graph (portable.prior): the prior runs once per personalize
    # and the denoiser steps (and generate.onnx's loop) read its rows instead of recomputing them
    "prior": ({CLASS_EMB: FLOAT}, {PRIOR: FLOAT}),
    "denoiser_on_prior": ({X_T: FLOAT, TIMESTEP: INT64, CLASS_EMB: FLOAT, CLASS_MASK: FLOAT, PRIOR: FLOAT}, {X0: FLOAT}),
    "generate_on_prior": ({CLASS_EMB: FLOAT, CLASS_MASK: FLOAT, NOISE: FLOAT, PRIOR: FLOAT}, {X0: FLOAT, PARAMS: FLOAT}),
    "template": ({IMAGE: UINT8}, {LOGITS: FLOAT, PROBABILITIES: FLOAT}),  # also every personalized model.onnx
    "trunk": ({IMAGE: UINT8}, {FEATURES: FLOAT}),  # the template cut before its head (head-only models)
    "head": ({FEATURES: FLOAT}, {LOGITS: FLOAT, PROBABILITIES: FLOAT}),  # a head-only model on the trunk
    "image_encoder": ({IMAGE: UINT8}, {EMBEDDINGS: FLOAT}),  # optional: CLIP's image tower
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
