"""A tiny but real bundle built without torch (onnx.helper + tokenizers + write_manifest).

Every graph is a real function of all its inputs, so the runtime is tested end to end:
text encoder = embedding Gather + masked mean + L2 norm; denoiser = tanh MLP of x_t, the masked
class embeddings (slot by slot) and a sinusoidal timestep embedding; template = uint8 NHWC image
-> normalise -> frozen 1x1 "conv" (MatMul) -> ReLU -> global mean -> Gemm(head.weight, head.bias)
-> logits, Softmax -> probabilities, with the class dimension dynamic.
"""

from __future__ import annotations

import string
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tina_edge.runtime.manifest import (
    DenoiserSpec, DiffusionSpec, InputSpec, Manifest, TemplateSpec, TensorSpec, TextEncoderSpec, write_manifest,
)

OPSET = 17
VOCABULARY = ["dog", "cat", "horse", "bird", "frog", "ship"]


def _save(model: onnx.ModelProto, path: Path) -> None:
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString(deterministic=True))


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tina-edge-tests")
    m.ir_version = 8
    return m


def _c(name: str, arr: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(arr), name)


def make_tokenizer(path: Path) -> int:
    """WordPiece over single letters/digits (so every latin word gets its own ids) plus a few words."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    toks = ["[PAD]", "[UNK]"] + VOCABULARY + list(string.ascii_lowercase + string.digits)
    toks += ["##" + c for c in string.ascii_lowercase + string.digits]
    vocab = {t: i for i, t in enumerate(toks)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.Lowercase(), normalizers.StripAccents()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(path))
    return len(vocab)


def make_text_encoder(V: int, D: int, rng: np.random.Generator) -> onnx.ModelProto:
    E = rng.standard_normal((V, D)).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["E", "input_ids"], ["emb"]),
        helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["m", "ax_last"], ["m3"]),
        helper.make_node("Mul", ["emb", "m3"], ["em"]),
        helper.make_node("ReduceSum", ["em", "ax1"], ["s"], keepdims=0),
        helper.make_node("ReduceSum", ["m", "ax1"], ["cnt0"], keepdims=1),
        helper.make_node("Max", ["cnt0", "one"], ["cnt"]),
        helper.make_node("Div", ["s", "cnt"], ["mean"]),
        helper.make_node("Add", ["mean", "bias"], ["v"]),
        helper.make_node("Mul", ["v", "v"], ["v2"]),
        helper.make_node("ReduceSum", ["v2", "ax1"], ["n2"], keepdims=1),
        helper.make_node("Sqrt", ["n2"], ["n0"]),
        helper.make_node("Max", ["n0", "eps"], ["n"]),
        helper.make_node("Div", ["v", "n"], ["embeddings"]),
    ]
    inits = [
        _c("E", E), _c("ax_last", np.array([-1], np.int64)), _c("ax1", np.array([1], np.int64)),
        _c("one", np.array(1.0, np.float32)), _c("eps", np.array(1e-6, np.float32)),
        _c("bias", (0.01 * rng.standard_normal(D)).astype(np.float32)),
    ]
    g = helper.make_graph(
        nodes, "text_encoder",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["B", "L"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["B", "L"])],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["B", D])],
        inits,
    )
    return _model(g)


def make_denoiser(P: int, K: int, D: int, rng: np.random.Generator, H: int = 32) -> onnx.ModelProto:
    nodes = [
        helper.make_node("MatMul", ["x_t", "W1"], ["h1"]),
        helper.make_node("Unsqueeze", ["class_mask", "ax_last"], ["mask3"]),
        helper.make_node("Mul", ["class_emb", "mask3"], ["ce"]),
        helper.make_node("Reshape", ["ce", "flat_shape"], ["ce_flat"]),
        helper.make_node("MatMul", ["ce_flat", "W2"], ["h2"]),
        helper.make_node("Cast", ["timestep"], ["tf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["tf", "ax_last"], ["t2"]),
        helper.make_node("Mul", ["t2", "freqs"], ["targ"]),
        helper.make_node("Sin", ["targ"], ["temb"]),
        helper.make_node("Add", ["h1", "h2"], ["h12"]),
        helper.make_node("Add", ["h12", "temb"], ["hsum"]),
        helper.make_node("Tanh", ["hsum"], ["h"]),
        helper.make_node("MatMul", ["h", "W3"], ["x0"]),
    ]
    inits = [
        _c("W1", (rng.standard_normal((P, H)) / np.sqrt(P)).astype(np.float32)),
        _c("W2", (rng.standard_normal((K * D, H)) / np.sqrt(D)).astype(np.float32)),
        _c("W3", (rng.standard_normal((H, P)) / np.sqrt(H)).astype(np.float32)),
        _c("freqs", np.exp(-np.linspace(0, 6, H)).astype(np.float32).reshape(1, H)),
        _c("ax_last", np.array([-1], np.int64)),
        _c("flat_shape", np.array([0, K * D], np.int64)),
    ]
    g = helper.make_graph(
        nodes, "denoiser",
        [helper.make_tensor_value_info("x_t", TensorProto.FLOAT, ["B", P]),
         helper.make_tensor_value_info("timestep", TensorProto.INT64, ["B"]),
         helper.make_tensor_value_info("class_emb", TensorProto.FLOAT, ["B", K, D]),
         helper.make_tensor_value_info("class_mask", TensorProto.FLOAT, ["B", K])],
        [helper.make_tensor_value_info("x0", TensorProto.FLOAT, ["B", P])],
        inits,
    )
    return _model(g)


def make_template(K: int, C: int, size: int, rng: np.random.Generator, *, mix: bool = False) -> onnx.ModelProto:
    """Template with a frozen trunk (trunk.weight [3, C], optional trunk.mix [C, C]) and a K_max head."""
    feat = "r"
    nodes = [
        helper.make_node("Cast", ["image"], ["xf"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["xf", "c255"], ["x01"]),
        helper.make_node("Sub", ["x01", "mean"], ["xc"]),
        helper.make_node("Div", ["xc", "std"], ["xn"]),
        helper.make_node("MatMul", ["xn", "trunk.weight"], ["f"]),
        helper.make_node("Relu", ["f"], ["r"]),
    ]
    inits = [
        _c("c255", np.array(255.0, np.float32)), _c("mean", np.full(3, 0.5, np.float32)),
        _c("std", np.full(3, 0.25, np.float32)),
        _c("trunk.weight", rng.standard_normal((3, C)).astype(np.float32)),
    ]
    if mix:
        nodes.append(helper.make_node("MatMul", ["r", "trunk.mix"], ["rm"]))
        inits.append(_c("trunk.mix", (rng.standard_normal((C, C)) / np.sqrt(C)).astype(np.float32)))
        feat = "rm"
    nodes += [
        helper.make_node("ReduceMean", [feat], ["pooled"], axes=[1, 2], keepdims=0),
        helper.make_node("Gemm", ["pooled", "head.weight", "head.bias"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
    ]
    inits += [_c("head.weight", np.zeros((K, C), np.float32)), _c("head.bias", np.zeros((K,), np.float32))]
    g = helper.make_graph(
        nodes, "template",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", size, size, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", "k"]),
         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", "k"])],
        inits,
    )
    return _model(g)


def make_tiny_bundle(
    directory: str | Path,
    k_max: int = 4,
    D: int = 8,
    *,
    channels: int = 6,
    size: int = 8,
    default_steps: int = 10,
    default_sampler: str = "ddim",
    seed: int = 0,
    mix: bool = False,
) -> Path:
    """Write a complete, valid bundle into `directory` (created) and return its path."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    V = make_tokenizer(d / "tokenizer.json")
    _save(make_text_encoder(V, D, rng), d / "text_encoder.onnx")
    layout = [
        TensorSpec("head.weight", [k_max, channels], 0, class_axis=0, mean=0.0, std=0.5),
        TensorSpec("head.bias", [k_max], k_max * channels, class_axis=0, mean=0.01, std=0.1),
    ]
    P = sum(t.numel for t in layout)
    _save(make_denoiser(P, k_max, D, rng), d / "denoiser.onnx")
    _save(make_template(k_max, channels, size, rng, mix=mix), d / "template.onnx")
    m = Manifest(
        text_encoder=TextEncoderSpec(kind="wordpiece-test", name="tiny", model="text_encoder.onnx",
                                     tokenizer="tokenizer.json", embedding_dim=D, max_tokens=16),
        diffusion=DiffusionSpec(default_sampler=default_sampler, default_steps=default_steps),
        denoiser=DenoiserSpec(model="denoiser.onnx", k_max=k_max, param_count=P, embedding_dim=D),
        template=TemplateSpec(model="template.onnx", name="tiny-mlp", layout=layout,
                              input=InputSpec(height=size, width=size, mean=[0.5] * 3, std=[0.25] * 3)),
        training={"datasets": ["tiny-test"], "holdout": ["ship"], "vocabulary": list(VOCABULARY)},
        evaluation={"in_distribution": {"accuracy": 0.61, "p_model_accuracy": 0.7}, "steps": default_steps},
        producer="tina-edge tests",
    )
    write_manifest(d, m)
    return d
