"""Export a text encoder (and CLIP's image tower) to ONNX + `tokenizer.json`, with parity checks.

What the edge gets:
    text_encoder.onnx   input_ids, attention_mask int64 [B, L] -> embeddings float32 [B, D]
                        (pooling and L2 norm inside the graph; B dynamic, L = max_tokens fixed)
    tokenizer.json      `tokenizers` format, padded and truncated to L
                        MiniLM: the file shipped with the model; CLIP: built here from open_clip's
                        own BPE vocabulary so ids match open_clip (cleaning is done by the runtime)
    image_encoder.onnx  (CLIP only) image uint8 [N, S, S, 3] -> embeddings float32 [N, D]

Every export is checked: the ONNX graph must reproduce the PyTorch module within 1e-4 (fp32) on
varied strings at batch 8, and the runtime tokenizer must reproduce the training-side ids.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from . import require_torch

require_torch()  # the install hint, not a bare ModuleNotFoundError
import torch  # noqa: E402

from tina_edge.runtime.atomic import atomic_save_onnx  # noqa: E402
from tina_edge.runtime.contracts import (ATTENTION_MASK, BATCH, EMBEDDINGS, IMAGE, IMAGE_MODEL, INPUT_IDS,  # noqa: E402
                                         TEXT_MODEL, TOKENIZER, batch_axes, input_names)
from tina_edge.runtime.errors import ArgumentError, ExportError, TextEncoderError  # noqa: E402
from tina_edge.runtime.manifest import TextEncoderSpec  # noqa: E402
from tina_edge.runtime.text_encoder import TextEncoderSession, make_session  # noqa: E402
from tina_edge.runtime.tokenizer import CLIP_PATTERN, Tokenizer  # noqa: E402
from tina_edge.train.text.encoders import OpenCLIPEncoder, SentenceTransformerEncoder, TextEncoder  # noqa: E402

FP32_TOLERANCE = 1e-4
QUANTIZE = (None, "int8", "fp16")

# varied strings for the parity report: class names, unicode, punctuation, empty, overlong
PARITY_TEXTS = [
    "T-shirt/top", "ankle boot", "airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
    "horse", "Sneaker", "café au lait", "東京タワー", "🐶 dog", "rock &amp; roll", "“quoted” name",
    "  multiple   spaces\tand\nnewlines ", "", "42", "a very long class name " * 8,
]

CLIP_SPECIALS = ("<start_of_text>", "<end_of_text>")
# open_clip's SimpleTokenizer pattern (compiled there with re.IGNORECASE)


# ------------------------------------------------------------------------------ tokenizer.json


def build_clip_tokenizer(max_tokens: int, bpe_path: str | os.PathLike | None = None):
    """A `tokenizers.Tokenizer` equal to open_clip's SimpleTokenizer after its text cleaning.

    Same vocabulary and merges (open_clip's bpe_simple_vocab_16e6.txt.gz), same pre-tokenizing
    regex, GPT-2 byte-to-unicode map, `</w>` end-of-word suffix, <start_of_text> ... <end_of_text>
    around every text, zero padding, and truncation that keeps the end token.
    """
    from tokenizers import Regex, Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, processors

    if bpe_path is None:
        from open_clip.tokenizer import default_bpe

        bpe_path = default_bpe()
    from open_clip.tokenizer import bytes_to_unicode

    lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    byte_chars = list(bytes_to_unicode().values())
    vocab_list = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges] + list(CLIP_SPECIALS)
    vocab = {t: i for i, t in enumerate(vocab_list)}
    bpe = models.BPE(vocab=vocab, merges=merges, end_of_word_suffix="</w>", fuse_unk=False)
    tok = HFTokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(CLIP_PATTERN), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.Sequence([decoders.ByteLevel(), decoders.BPEDecoder(suffix="</w>")])
    tok.add_special_tokens(list(CLIP_SPECIALS))
    sot, eot = vocab[CLIP_SPECIALS[0]], vocab[CLIP_SPECIALS[1]]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{CLIP_SPECIALS[0]} $A {CLIP_SPECIALS[1]}",
        special_tokens=[(CLIP_SPECIALS[0], sot), (CLIP_SPECIALS[1], eot)],
    )
    tok.enable_truncation(max_length=max_tokens)
    tok.enable_padding(length=max_tokens, pad_id=0, pad_token=vocab_list[0])
    return tok


def write_tokenizer(encoder: TextEncoder, path: Path) -> tuple[str, int]:
    """Write the encoder's tokenizer.json; returns (cleaning, pad_id) for the spec."""
    if isinstance(encoder, OpenCLIPEncoder):
        build_clip_tokenizer(encoder.max_tokens).save(str(path))
        return "clip", 0
    if isinstance(encoder, SentenceTransformerEncoder):
        from tokenizers import Tokenizer as HFTokenizer

        tok = HFTokenizer.from_file(str(encoder.tokenizer_json))
        pad_id = int(encoder.hf_tokenizer.pad_token_id or 0)
        tok.enable_truncation(max_length=encoder.max_tokens)
        tok.enable_padding(length=encoder.max_tokens, pad_id=pad_id, pad_token=tok.id_to_token(pad_id))
        tok.save(str(path))
        return "none", pad_id
    raise TextEncoderError(f"no tokenizer export for text encoder kind {encoder.kind!r}")


# ------------------------------------------------------------------------------ ONNX


def _onnx_export(module: torch.nn.Module, args: tuple, path: Path, inputs: list[str],
                 dynamic_axes: dict, opset: int) -> None:
    """Legacy TorchScript exporter: one self-contained file, batch axis dynamic."""
    module.eval()
    # nn.MultiheadAttention's fused inference fast path has no ONNX symbolic: trace the plain ops
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad():
            torch.onnx.export(module, args, str(path), input_names=inputs, output_names=[EMBEDDINGS],
                              dynamic_axes=dynamic_axes, opset_version=opset, dynamo=False,
                              do_constant_folding=True, verbose=False)
        with torch.no_grad():
            feature_dims = list(module(*args).shape[1:])
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    model = onnx.load(str(path))
    # the tracer leaves D symbolic ("Divembeddings_dim_1"); state it so readers see [batch, D]
    for d, size in zip(model.graph.output[0].type.tensor_type.shape.dim[1:], feature_dims):
        d.dim_value = int(size)
    atomic_save_onnx(path, model)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


def quantize_model(src: Path, dst: Path, quantize: str, exclude: tuple[str, ...] = ()) -> None:
    """int8: dynamic quantization of weight matrices and embedding tables; fp16: half weights, fp32 I/O.

    int8 touches only nodes that hold a weight (MatMul/Gemm with an initializer, Gather from an
    embedding table), never activation x activation products, and skips node names matching an
    `exclude` regex: MiniLM's FFN down-projections see GELU outliers that per-tensor activation
    scales cannot hold (measured: they alone drop the cosine to fp32 from ~1.0 to 0.92). Those are
    stored as float16 + Cast instead (-7 MB for MiniLM; the report's cosine includes it).
    """
    if quantize == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        model = onnx.load(str(src))
        inits = {i.name for i in model.graph.initializer}
        nodes = [n.name for n in model.graph.node
                 if ((n.op_type in ("MatMul", "Gemm") and any(i in inits for i in n.input))
                     or (n.op_type == "Gather" and n.input[0] in inits))
                 and not any(re.search(p, n.name) for p in exclude)]
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, nodes_to_quantize=nodes,
                         op_types_to_quantize=["MatMul", "Gemm", "Gather"])
        if exclude:  # the weights kept out of int8 are stored as float16 (half the bytes, ~1e-4 on embeddings)
            from .portable.weight_only import float_matmul_weights_to_fp16

            model = onnx.load(str(dst))
            if float_matmul_weights_to_fp16(model):
                atomic_save_onnx(dst, model)
    elif quantize == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
        atomic_save_onnx(dst, model)
    else:
        raise ArgumentError(f"unknown quantization {quantize!r}; use None, 'int8' or 'fp16'")
    onnx.checker.check_model(onnx.load(str(dst)))


def _ort_text(path: Path, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return make_session(path).run([EMBEDDINGS], {INPUT_IDS: ids, ATTENTION_MASK: mask})[0]


def _tokenizer_checked(encoder: TextEncoder, out_dir: Path) -> tuple[Tokenizer, str, int, np.ndarray, np.ndarray]:
    """Write tokenizer.json; the runtime tokenizer must give the training tokenizer's ids on PARITY_TEXTS.

    Returns the runtime tokenizer, (cleaning, pad_id) for the spec and the parity texts' ids and mask."""
    cleaning, pad_id = write_tokenizer(encoder, out_dir / TOKENIZER)
    tok = Tokenizer.from_file(out_dir / TOKENIZER, max_tokens=encoder.max_tokens, cleaning=cleaning, pad_id=pad_id)
    ref = encoder.tokenize(PARITY_TEXTS)
    ids, mask = tok(PARITY_TEXTS)
    if not (np.array_equal(ids, ref[INPUT_IDS]) and np.array_equal(mask, ref[ATTENTION_MASK])):
        bad = [t for t, a, b in zip(PARITY_TEXTS, ids, ref[INPUT_IDS]) if not np.array_equal(a, b)]
        raise ExportError(f"exported tokenizer disagrees with the training tokenizer on {bad[:3]!r}")
    return tok, cleaning, pad_id, ids, mask


def _export_fp32_checked(encoder: TextEncoder, module: torch.nn.Module, path: Path, ids: np.ndarray,
                         mask: np.ndarray, opset: int) -> tuple[np.ndarray, float]:
    """Export the fp32 graph; returns PyTorch's embeddings of the parity texts and the graph's max
    abs difference to them (all texts at once and at batch 8), raising above FP32_TOLERANCE."""
    example = encoder.tokenize(["dog", "ankle boot"])  # batch 2: keeps the batch axis dynamic
    args = (torch.from_numpy(example[INPUT_IDS]), torch.from_numpy(example[ATTENTION_MASK]))
    # BERT-style encoders take any sequence length: the runtime then trims padding to the longest
    # name in the batch (class names are a few tokens; 3-4x less work than max_tokens).
    seq = {1: "seq"} if getattr(encoder, "dynamic_length", False) else {}
    _onnx_export(module, args, path, input_names("text_encoder"),
                 {INPUT_IDS: {0: BATCH, **seq}, ATTENTION_MASK: {0: BATCH, **seq}, EMBEDDINGS: {0: BATCH}}, opset)
    with torch.no_grad():
        ref = module(torch.from_numpy(ids), torch.from_numpy(mask)).float().numpy()
    got, batch8 = _ort_text(path, ids, mask), _ort_text(path, ids[:8], mask[:8])
    diff = float(max(np.abs(got - ref).max(), np.abs(batch8 - ref[:8]).max()))
    if not diff <= FP32_TOLERANCE:
        raise ExportError(f"ONNX text encoder differs from PyTorch by {diff:.2e} (> {FP32_TOLERANCE})")
    return ref, diff


def _quantized_report(q: Path, quantize: str, ids: np.ndarray, mask: np.ndarray, ref: np.ndarray) -> dict[str, Any]:
    """How far the quantized graph's embeddings are from PyTorch's fp32 ones (cosine, max abs), and its size."""
    qe = _ort_text(q, ids, mask)
    cos = np.sum(qe * ref, axis=1) / (np.linalg.norm(qe, axis=1) * np.linalg.norm(ref, axis=1))
    return {f"{quantize}_bytes": q.stat().st_size, "cosine_min": float(cos.min()), "cosine_mean": float(cos.mean()),
            "max_abs_diff_quantized": float(np.abs(qe - ref).max())}


def _runtime_report(path: Path, tok: Tokenizer, ids: np.ndarray, mask: np.ndarray, quantize: str | None) -> dict[str, Any]:
    """The runtime path end to end (tokenizer + session) must give what the graph gives; the runtime
    trims padding for dynamic-length graphs, so equal up to float rounding (int8: up to 1e-2)."""
    sess = TextEncoderSession(path, tok)
    diff = float(np.abs(sess.encode(PARITY_TEXTS) - _ort_text(path, ids, mask)).max())
    return {"bytes": path.stat().st_size, "runtime_vs_graph_max_abs_diff": diff,
            "runtime_matches_graph": bool(diff <= 1e-5 if not quantize else diff <= 1e-2)}


def export_text_encoder(encoder: TextEncoder, out_dir: str | os.PathLike, *, quantize: str | None = None,
                        opset: int = 17) -> tuple[TextEncoderSpec, dict[str, Any]]:
    """Write text_encoder.onnx + tokenizer.json into out_dir; return the bundle spec and a report.

    With `quantize` the quantized graph becomes text_encoder.onnx; the report says how far its
    embeddings are from fp32 (cosine) and both file sizes. Raises TinaEdgeError when the fp32 graph
    or the tokenizer does not reproduce PyTorch.
    """
    if quantize not in QUANTIZE:
        raise ArgumentError(f"unknown quantization {quantize!r}; use None, 'int8' or 'fp16'")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok, cleaning, pad_id, ids, mask = _tokenizer_checked(encoder, out_dir)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        fp32 = Path(tmp) / TEXT_MODEL
        ref, diff = _export_fp32_checked(encoder, encoder.torch_module(), fp32, ids, mask, opset)
        report: dict[str, Any] = {"name": encoder.name, "texts": len(PARITY_TEXTS), "max_abs_diff_fp32": diff,
                                  "fp32_bytes": fp32.stat().st_size, "quantize": quantize}
        final = fp32
        if quantize:
            final = Path(tmp) / f"q_{TEXT_MODEL}"
            quantize_model(fp32, final, quantize, tuple(getattr(encoder, "int8_exclude", ())))
            report.update(_quantized_report(final, quantize, ids, mask, ref))
        shutil.move(str(final), out_dir / TEXT_MODEL)
    report.update(_runtime_report(out_dir / TEXT_MODEL, tok, ids, mask, quantize))
    spec = TextEncoderSpec(kind=encoder.kind, name=encoder.name, model=TEXT_MODEL, tokenizer=TOKENIZER,
                           embedding_dim=int(encoder.dim), max_tokens=int(encoder.max_tokens), cleaning=cleaning,
                           pad_id=pad_id)
    return spec, report


def export_image_encoder(encoder: OpenCLIPEncoder, out_dir: str | os.PathLike, *, opset: int = 17,
                         spec: TextEncoderSpec | None = None) -> tuple[TextEncoderSpec | None, dict[str, Any]]:
    """Write image_encoder.onnx (uint8 NHWC at image_size -> L2-normed embeddings).

    Images must already be image_size square (the runtime resizes); normalisation is in the graph.
    When `spec` is given, returns it with image_encoder and image_size filled in.
    """
    if not isinstance(encoder, OpenCLIPEncoder):
        raise TextEncoderError(f"only open_clip encoders have an image tower, not {encoder.kind!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    S = encoder.image_size
    images = np.random.default_rng(0).integers(0, 256, (8, S, S, 3), dtype=np.uint8)
    path = out_dir / IMAGE_MODEL
    module = encoder.image_module()
    _onnx_export(module, (torch.from_numpy(images[:2]),), path, input_names("image_encoder"),
                 batch_axes("image_encoder"), opset)
    with torch.no_grad():
        ref = module(torch.from_numpy(images)).numpy()
    got = make_session(path).run([EMBEDDINGS], {IMAGE: images})[0]
    prep = encoder.encode_images(list(images))  # open_clip's own PIL preprocessing path
    diff = float(np.abs(got - ref).max())
    if not diff <= FP32_TOLERANCE:
        raise ExportError(f"ONNX image encoder differs from PyTorch by {diff:.2e} (> {FP32_TOLERANCE})")
    report = {"max_abs_diff_fp32": diff, "max_abs_diff_vs_open_clip_preprocess": float(np.abs(got - prep).max()),
              "bytes": path.stat().st_size, "image_size": S}
    if spec is not None:
        spec.image_encoder, spec.image_size = IMAGE_MODEL, S
    return spec, report
