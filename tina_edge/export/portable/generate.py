"""Portable files of a bundle, built from its existing graphs with onnx tooling (no torch).

* `generate.onnx`: class_emb [B, K, D], class_mask [B, K], noise [B, P] -> x0 [B, P] (normalised)
  and params [B, P] (de-normalised, K_max class slots). The bundle's DDIM steps (eta = 0) run
  inside: a Loop whose body is the denoiser plus the step arithmetic, in float64 exactly as
  `runtime.samplers.DDIMSampler` computes it, so a port needs no sampler code: tokenizer, text
  encoder, generate.onnx, classifier.
* the template in input form: `template.onnx` is rewritten with every generated tensor turned from
  an initializer into a graph input (class axis symbolic "k"; manifest `template.form: "inputs"`,
  and `portable.template_inputs.model` names the same file), so one session serves every
  personalized classifier, also where initializers cannot be overridden (onnxruntime-web), and
  the trunk is stored once. The Python runtime builds standalone model.onnx files from it
  (`runtime.template.inputs_to_initializers`). Older bundles kept a second `template_inputs.onnx`.
* `tokenizer_config.json`: what standard JS/Python tokenizer loaders expect beside tokenizer.json.
* static shapes: a template that computes its trunk's padding at run time (Shape -> Ceil -> Pad, as
  EfficientNet-Lite0's TF "same" padding does) is rewritten once with that padding as constants
  (`static_shapes.static_template`, checked on random photos: outputs unchanged). Its model.onnx files
  predict about 2x faster on a CPU and run whole on NNAPI / CoreML (BENCHMARKS §14.4). The manifest
  records it in `portable.template_inputs.static_shapes`; `static_template=False` keeps the graph.

`add_portable_files(bundle_dir)` writes the three (generate.onnx's graph: generate_graph.py) and rewrites
the manifest through `write_manifest`; `tina-edge convert` and `tina-edge export` call it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ...runtime.atomic import atomic_save_onnx, atomic_write_text
from ...runtime.contracts import PRIOR, PRIOR_MODEL, input_names, output_names
from ...runtime.errors import BundleError
from ...runtime.manifest import Manifest, PortableInfo, read_manifest, write_manifest
from ...runtime.noise import GENERATOR as NOISE_GENERATOR, VERSION as NOISE_VERSION
from .generate_graph import build_generate
from .small_storage import file_weights_to_fp16

GENERATE = "generate.onnx"
TOKENIZER_CONFIG = "tokenizer_config.json"


def build_template_inputs(template, manifest: Manifest):
    """The template with the generated tensors as graph inputs ([.., k, ..] on the class axis)."""
    import onnx
    from onnx import helper

    m = onnx.ModelProto()
    m.CopyFrom(template)
    g = m.graph
    by_name = {i.name: i for i in g.initializer}
    new_inputs = []
    for t in manifest.template.layout:
        init = by_name.get(t.name)
        if init is None:
            raise BundleError(f"the template has no initializer {t.name!r}; the bundle is broken")
        dims: list[Any] = list(t.shape)
        if t.class_axis is not None:
            dims[t.class_axis] = "k"
        new_inputs.append(helper.make_tensor_value_info(t.name, init.data_type, dims))
    keep = [i for i in g.initializer if i.name not in {t.name for t in manifest.template.layout}]
    del g.initializer[:]
    g.initializer.extend(keep)
    g.input.extend(new_inputs)
    del g.value_info[:]
    onnx.checker.check_model(m)
    return m


_TOKENIZER_CLASSES = {"minilm": "BertTokenizer", "mpnet": "MPNetTokenizer", "open_clip": "CLIPTokenizer"}


def tokenizer_config(tokenizer_json: dict, manifest: Manifest) -> dict:
    """tokenizer_config.json for standard loaders, plus the bundle's own tokenization contract."""
    te = manifest.text_encoder
    vocab_specials = {t["id"]: t["content"] for t in tokenizer_json.get("added_tokens", []) if t.get("special")}
    cfg: dict[str, Any] = {
        "tokenizer_class": _TOKENIZER_CLASSES.get(te.kind, "PreTrainedTokenizerFast"),
        "model_max_length": te.max_tokens,
        "clean_up_tokenization_spaces": True,
    }
    if te.pad_id in vocab_specials:
        cfg["pad_token"] = vocab_specials[te.pad_id]
    for content in vocab_specials.values():
        for role, names in (("cls_token", ("[CLS]", "<s>")), ("sep_token", ("[SEP]", "</s>")), ("unk_token", ("[UNK]", "<unk>")),
                            ("mask_token", ("[MASK]", "<mask>")), ("bos_token", ("<|startoftext|>",)),
                            ("eos_token", ("<|endoftext|>",))):
            if content in names:
                cfg.setdefault(role, content)
    if te.kind == "minilm":
        cfg["do_lower_case"] = True
    # what tina-edge runtimes apply on top of the file (docs/PORTABLE.md)
    cfg["tina_edge"] = {"max_tokens": te.max_tokens, "pad_id": te.pad_id, "cleaning": te.cleaning,
                        "truncation": "keep the last (end) token", "padding": "to the longest text of the batch"}
    return cfg


def _weight_only_text_encoder(root: Path, m: Manifest) -> str | None:
    """Rewrite a dynamic-int8 text encoder (or the older weight-only form) as weight-only int8, see
    weight_only.py; None when there was nothing to rewrite."""
    import onnx

    from .weight_only import dynamic_int8_to_weight_only

    path = root / m.text_encoder.model
    model = onnx.load(str(path))
    n = dynamic_int8_to_weight_only(model)
    if any(node.op_type == "DynamicQuantizeLinear" for node in model.graph.node):
        raise BundleError(f"{m.text_encoder.model} has dynamic int8 MatMuls this rewrite does not recognise; "
                          "pass keep_dynamic_int8 (the browser's embeddings will then differ from Python's by ~1e-3)")
    if not n:
        return None
    onnx.checker.check_model(model)
    atomic_save_onnx(path, model)
    return f"weight-only int8 ({n} MatMuls as MatMul(x, Cast(W)) * scale: batch-independent, portable)"


def _static_template_note(root: Path, m: Manifest, tpl: Any, wanted: bool) -> dict | None:
    """Rewrite the template with static padding when it computes shapes at run time (once per bundle)."""
    before = (m.portable.template_inputs or {}).get("static_shapes")
    if before or not wanted or not any(n.op_type == "Shape" for n in tpl.graph.node):
        return before
    from .static_shapes import static_template

    rng = np.random.default_rng(0)
    generated = {t.name: (rng.standard_normal(t.shape) * 0.05).astype(np.float32) for t in m.template.layout}
    return static_template(root / m.template.model, generated, m.template.input.height, m.template.input.width)


def _split_prior(root: Path, m: Manifest):
    """(denoiser, the manifest's `portable.prior` section or None): the text prior cut from the denoiser
    into prior.onnx (prior_split.py; denoiser.onnx rewritten to read its rows), kept as it is when the
    bundle was split before, None for a denoiser without a prior."""
    import onnx

    from .prior_split import split_prior

    den = onnx.load(str(root / m.denoiser.model))
    cut = split_prior(den)
    if cut is not None:
        prior, den = cut
        atomic_save_onnx(root / PRIOR_MODEL, prior)
        atomic_save_onnx(root / m.denoiser.model, den)
    elif PRIOR not in {i.name for i in den.graph.input}:
        return den, None
    elif not m.portable.prior_model:
        raise BundleError(f"{m.denoiser.model} reads prior rows but the manifest names no prior graph; the bundle is broken")
    else:
        return den, dict(m.portable.prior)
    return den, {"model": PRIOR_MODEL, "inputs": input_names("prior"), "outputs": output_names("prior")}


def _add_senses(root: Path, m: Manifest) -> None:
    """senses.json from WordNet 3.0 when it is installed (export/portable/senses.py); a bundle converted
    before keeps its table, one converted without WordNet has none and resolves names as before."""
    from .senses import write_senses

    name = write_senses(root, m.vocabulary)
    if name:
        m.text_encoder.senses = name
        m.files[name] = {"sha256": "", "bytes": 0}  # filled in by write_manifest


def _prior_only(root: Path, m: Manifest, den, prior: dict | None, wanted: bool):
    """(denoiser, portable.prior) with the correction zeroed when `wanted` (prior_only.py) and
    `only` recorded whenever the denoiser is the prior alone (asked now, or zeroed before)."""
    from .prior_only import apply_prior_only

    den, only = apply_prior_only(den, prior, m, m.denoiser.model, wanted)
    if wanted:
        atomic_save_onnx(root / m.denoiser.model, den)
    if prior is not None:
        prior = {k: v for k, v in prior.items() if k != "only"} | ({"only": True} if only else {})
    return den, prior


def add_portable_files(bundle_dir: str | Path, steps: int | None = None, *, keep_dynamic_int8: bool = False,
                       static_template: bool = True, everyday_keys: bool = True, keep_float32: bool = False,
                       prior_only: bool = False) -> Manifest:
    """Write generate.onnx and tokenizer_config.json, rewrite the template with its weights as inputs
    and rewrite its manifest (hashes, bundle_id, the `portable` section) through write_manifest.

    A dynamic-int8 text encoder is rewritten as weight-only int8 unless keep_dynamic_int8: its
    embeddings would otherwise depend on the batch and differ between CPUs and WebAssembly.
    everyday_keys: add everyday words of seen classes as prior keys (everyday_keys.py; once per bundle).
    Unless keep_float32, the float32 weights of the denoiser (hence generate.onnx) and the template's
    trunk are stored as float16 + Cast (small_storage.py): half their bytes, accuracy measured equal.
    prior_only: zero the denoiser's correction, the generator becomes the text prior alone (prior_only.py)."""
    import onnx

    root = Path(bundle_dir)
    m = read_manifest(root)
    te_note = None if keep_dynamic_int8 else _weight_only_text_encoder(root, m)
    te_note = te_note or m.portable.text_encoder_quantization  # converted before: keep its note
    if everyday_keys:
        from .everyday_keys import apply_to_bundle

        apply_to_bundle(root, m)
    den, prior = _split_prior(root, m)
    den, prior = _prior_only(root, m, den, prior, prior_only)
    if not keep_float32:  # before generate.onnx is built from it, so both graphs hold the same weights
        file_weights_to_fp16(root / m.denoiser.model)  # (the prior's big tensors are float16 already)
        den = onnx.load(str(root / m.denoiser.model))
    gen, ts = build_generate(den, m, steps)
    atomic_save_onnx(root / GENERATE, gen)
    # ONE template serves both runtimes (the trunk is stored once): template.model becomes the graph
    # with the generated tensors as inputs; the Python runtime makes the initializer form from it
    tpl = onnx.load(str(root / m.template.model))
    if m.template.form != "inputs":
        tpl = build_template_inputs(tpl, m)
        atomic_save_onnx(root / m.template.model, tpl)
        m.template.form = "inputs"
    static = _static_template_note(root, m, tpl, static_template and m.template.input is not None)
    if not keep_float32:  # after the static rewrite (its optimiser would fold the Casts back to float32)
        file_weights_to_fp16(root / m.template.model, exclude={t.name for t in m.template.layout})
    old_inputs = m.portable.template_inputs_model
    if old_inputs and old_inputs != m.template.model:  # a bundle converted before: drop its second copy
        m.files.pop(old_inputs, None)
        (root / old_inputs).unlink(missing_ok=True)
    tok = json.loads((root / m.text_encoder.tokenizer).read_text(encoding="utf-8"))
    atomic_write_text(root / TOKENIZER_CONFIG, json.dumps(tokenizer_config(tok, m), indent=2) + "\n")
    m.portable = PortableInfo(
        noise={"generator": NOISE_GENERATOR, "version": NOISE_VERSION, "dtype": "float32", "spec": "docs/PORTABLE.md"},
        generate={"model": GENERATE, "sampler": "ddim", "eta": 0.0, "steps": len(ts), "timesteps": ts,
                  "inputs": [i.name for i in gen.graph.input], "outputs": output_names("generate")},
        template_inputs={"model": m.template.model, "inputs": [t.name for t in m.template.layout]}
        | ({"static_shapes": static} if static else {}),
        tokenizer_config=TOKENIZER_CONFIG, text_encoder={"quantization": te_note} if te_note else None,
        prior=prior)
    m.portable.check()
    _add_senses(root, m)
    m.files = {n: e for n, e in m.files.items()}
    for name in (GENERATE, m.template.model, TOKENIZER_CONFIG, m.denoiser.model) + ((PRIOR_MODEL,) if prior else ()):
        m.files[name] = {"sha256": "", "bytes": 0}  # filled in by write_manifest
    return write_manifest(root, m)
