"""The bundle format, defined once: what `manifest.json` holds, how it is written, how it is read.

The exporter writes bundles only through `write_manifest`; the runtime reads them only through
`read_manifest`. A bundle is a directory:

    manifest.json        this schema
    text_encoder.onnx    input_ids/attention_mask int64 [B, L] -> embeddings float32 [B, D] (L2-normed)
    tokenizer.json       `tokenizers` format
    denoiser.onnx        x_t [B, P], timestep int64 [B], class_emb [B, K, D], class_mask [B, K]
                         -> x0 [B, P]   (one denoising step, predicts the clean normalised params)
    template.onnx        image uint8 [N, H, W, 3] -> logits, probabilities [N, k]. `template.form`
                         says where the generated tensors (names in `template.layout`) live:
                         "initializers" (older bundles: K_max-shaped initializers the runtime
                         replaces) or "inputs" (graph inputs: the same file is the portable
                         `template_inputs` graph, and the Python runtime turns those inputs into
                         initializers to write a standalone model.onnx; the trunk is stored once)
    (optional) image_encoder.onnx     CLIP image tower, for image prompts
    (optional, section `portable`, docs/PORTABLE.md) generate.onnx, the template with weights as
                         inputs (template.onnx itself when template.form is "inputs"; older bundles:
                         a second template_inputs.onnx), tokenizer_config.json, the noise generator
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from .errors import BundleError
from .manifest_rules import check_relative, validate
from .manifest_spec import (  # noqa: F401  (re-exported: the format's types are read from here)
    LIMITS,
    MANIFEST_NAME,
    MAX_JSON_DEPTH,
    MAX_JSON_NODES,
    MAX_MANIFEST_BYTES,
    MIN_STD,
    SCHEMA_VERSION,
    TEMPLATE_FORMS,
    DenoiserSpec,
    DiffusionSpec,
    EvaluationSummary,
    InputSpec,
    Manifest,
    TemplateSpec,
    TensorSpec,
    TextEncoderSpec,
    PortableInfo,
    TrainingInfo,
    bundle_files,
)


def compute_bundle_id(manifest_dict: dict[str, Any]) -> str:
    """The bundle's identity: sha256 of the canonical manifest JSON without its `bundle_id` field.

    The manifest holds every file's sha256, so the id pins the files' bytes AND every setting
    (layout, schedule, normalisation). write_manifest and the verifier both call this.
    """
    d = {k: v for k, v in manifest_dict.items() if k != "bundle_id"}
    text = json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:16]


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()



_REQUIRED = ("schema_version", "text_encoder", "diffusion", "denoiser", "template", "files")


def _spec(cls: type, value: Any, where: str, **parsed: Any) -> Any:
    """A typed section from its JSON object; a missing or unknown key is refused naming the field.
    `parsed`: keys already turned into their typed form (template.layout, template.input)."""
    if not isinstance(value, dict):
        raise BundleError(f"manifest field {where} must be a JSON object, got {type(value).__name__}")
    known = [f.name for f in fields(cls)]
    unknown = [k for k in value if k not in known]
    if unknown:
        raise BundleError(f"manifest field {where} has an unknown key {unknown[0]!r:.40}; it may hold {', '.join(known)}")
    required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
    missing = [k for k in required if k not in value]
    if missing:
        raise BundleError(f"manifest field {where} is missing {', '.join(missing)}")
    return cls(**(value | parsed))


def _template(t: Any) -> TemplateSpec:
    if not isinstance(t, dict):
        raise BundleError(f"manifest field template must be a JSON object, got {type(t).__name__}")
    layout = t.get("layout")
    if not isinstance(layout, list):
        raise BundleError("manifest field template.layout must be a list of tensors")
    tensors = [_spec(TensorSpec, x, f"template.layout[{i}]") for i, x in enumerate(layout[: int(LIMITS["layout.count"][1]) + 1])]
    inp = _spec(InputSpec, t.get("input", {}), "template.input")
    return _spec(TemplateSpec, t, "template", layout=tensors, input=inp)


def manifest_from_dict(d: Any) -> Manifest:
    """Build and validate a Manifest from parsed JSON; raise BundleError naming the problem."""
    if not isinstance(d, dict):
        raise BundleError("manifest.json must hold a JSON object")
    missing = [k for k in _REQUIRED if k not in d]
    if missing:
        raise BundleError(f"manifest.json is missing required fields: {', '.join(missing)}")
    if d["schema_version"] != SCHEMA_VERSION:
        raise BundleError(
            f"bundle schema version {d['schema_version']!r:.40} is not supported by this tina-edge "
            f"(it reads version {SCHEMA_VERSION}); re-export the bundle or upgrade tina-edge"
        )
    files = d["files"]
    if not isinstance(files, dict) or not all(isinstance(v, dict) and isinstance(v.get("sha256"), str) for v in files.values()):
        raise BundleError("manifest field files must map file names to {sha256, bytes}")
    for key in ("producer", "bundle_id"):
        if not isinstance(d.get(key, ""), str):
            raise BundleError(f"manifest field {key} must be a string")
    m = Manifest(
        text_encoder=_spec(TextEncoderSpec, d["text_encoder"], "text_encoder"),
        diffusion=_spec(DiffusionSpec, d["diffusion"], "diffusion"),
        denoiser=_spec(DenoiserSpec, d["denoiser"], "denoiser"),
        template=_template(d["template"]), files=dict(files),
        training=TrainingInfo.from_dict(d.get("training", {}), "training"),
        evaluation=EvaluationSummary.from_dict(d.get("evaluation", {}), "evaluation"),
        producer=d.get("producer", ""), schema_version=SCHEMA_VERSION, bundle_id=d.get("bundle_id", ""),
        portable=PortableInfo.from_dict(d.get("portable") or {}, "portable"),
    )
    validate(m)
    return m


def parse_manifest(data: bytes, where: str | os.PathLike = MANIFEST_NAME) -> tuple[Manifest, str]:
    """Validate manifest bytes; return the Manifest and the bundle id its content hashes to."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise BundleError(f"{where} is {len(data)} bytes; a manifest may hold at most {MAX_MANIFEST_BYTES >> 20} MiB")
    try:
        d = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{where} is not valid JSON: {e}") from None
    except RecursionError:  # a crafted '[[[[...' must not end in a traceback
        raise BundleError(f"{where} is not a usable manifest: its JSON is nested too deeply") from None
    _check_json_shape(d, where)
    m = manifest_from_dict(d)
    return m, compute_bundle_id(d)


def _check_json_shape(d: Any, where: str | os.PathLike) -> None:
    """Bound the depth and the number of values (iteratively) before any code walks the JSON
    recursively (validation, deepcopy, `info --json`): 600 nested lists must not end in RecursionError."""
    stack, nodes = [(d, 1)], 0
    while stack:
        value, depth = stack.pop()
        nodes += 1
        if depth > MAX_JSON_DEPTH:
            raise BundleError(f"{where} is not a usable manifest: its JSON is nested too deeply "
                              f"(more than {MAX_JSON_DEPTH} levels)")
        if nodes > MAX_JSON_NODES:
            raise BundleError(f"{where} is not a usable manifest: its JSON holds more than {MAX_JSON_NODES} values")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)


def check_bundle_id(m: Manifest, ident: str, where: str | os.PathLike, expected_id: str | None = None) -> None:
    """The recorded id must be the content's, and (when an app pins one) the expected id: checked
    right after the manifest is parsed, before any listed file is read or extracted."""
    if m.bundle_id != ident:
        raise BundleError(f"the manifest of {where} records bundle_id {m.bundle_id!r:.40} but its content hashes to "
                          f"{ident!r}; the bundle was modified after export (re-export it)")
    if expected_id is not None and ident != expected_id.strip().lower():
        raise BundleError(f"bundle {where} has id {ident} but {expected_id.strip()!r:.40} was expected; "
                          "refusing a bundle other than the one pinned")


def read_manifest(bundle_dir: str | os.PathLike) -> Manifest:
    """Parse and validate `manifest.json` of a bundle directory (hashes are checked by bundle.py)."""
    path = Path(bundle_dir) / MANIFEST_NAME
    if not path.is_file():
        raise BundleError(f"{bundle_dir} is not a tina-edge bundle: it has no {MANIFEST_NAME}")
    with open(path, "rb") as f:
        data = f.read(MAX_MANIFEST_BYTES + 1)
    return parse_manifest(data, path)[0]


def write_manifest(bundle_dir: str | os.PathLike, manifest: Manifest) -> Manifest:
    """Hash every file the manifest names, set `files` and `bundle_id`, write manifest.json atomically."""
    bundle_dir = Path(bundle_dir)
    names = {name for _what, name in bundle_files(manifest)} | set(manifest.files)
    files = {}
    for name in sorted(names):
        check_relative(name, "files")
        p = bundle_dir / name
        if not p.is_file():
            raise BundleError(f"cannot write manifest: bundle file {p} does not exist")
        files[name] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
    manifest.files = files
    manifest.schema_version = SCHEMA_VERSION
    manifest.bundle_id = ""
    manifest.bundle_id = compute_bundle_id(json.loads(json.dumps(manifest.to_dict())))
    text = json.dumps(manifest.to_dict(), indent=2, sort_keys=False) + "\n"
    _m, ident = parse_manifest(text.encode("utf-8"))  # what we write, we can read, with the same id
    assert ident == manifest.bundle_id, (ident, manifest.bundle_id)
    from .atomic import atomic_write_text

    atomic_write_text(bundle_dir / MANIFEST_NAME, text)
    return manifest
