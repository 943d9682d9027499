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
import math
import os
from dataclasses import MISSING, fields
from pathlib import Path, PurePosixPath
from typing import Any

from .contracts import SAMPLERS
from .errors import BundleError
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


def _check_relative(name: Any, what: str) -> str:
    """A file named by the manifest must be a plain relative path inside the bundle."""
    if not isinstance(name, str) or not name:
        raise BundleError(f"manifest field {what} must be a file name, got {name!r:.80}")
    lo, hi = LIMITS["name.chars"]
    if len(name) > hi:
        raise BundleError(f"manifest field {what} names a file of {len(name)} characters; at most {hi:.0f} are allowed")
    p = PurePosixPath(name)
    if p.is_absolute() or name.startswith(("/", "\\")) or ".." in p.parts or "\\" in name or ":" in name:
        raise BundleError(f"manifest field {what} points outside the bundle: {name!r}")
    if any(not ch.isprintable() for ch in name):
        raise BundleError(f"manifest field {what} names a file with control or invisible characters: {name!r}")
    parts = name.split("/")
    if any(x in ("", ".") for x in parts):  # "", ".", "./a", "a//b", "a/": one file, many spellings
        raise BundleError(f"manifest field {what} names {name!r}, which is not a normalised relative path (no '.', './', '//' or trailing '/')")
    return name


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
    _validate(m)
    return m


def _type_ok(value: Any, ann: str) -> bool:
    """Check a value against a manifest dataclass annotation (they are simple: int, float, str, lists)."""
    ann = ann.replace(" ", "")
    if ann.endswith("|None"):
        return value is None or _type_ok(value, ann[: -len("|None")])
    if ann.startswith("list[") and ann.endswith("]"):
        return isinstance(value, list) and all(_type_ok(v, ann[5:-1]) for v in value)
    if ann == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if ann == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ann == "str":
        return isinstance(value, str)
    return True  # dicts and nested specs are checked elsewhere


def _check_types(m: Manifest) -> None:
    """Every scalar field has the type its dataclass declares (the constructors do not check this)."""
    specs = [("text_encoder", m.text_encoder), ("diffusion", m.diffusion), ("denoiser", m.denoiser),
             ("template", m.template), ("template.input", m.template.input)]
    specs += [(f"template.layout[{i}]", t) for i, t in enumerate(m.template.layout)]
    for where, obj in specs:
        for f in fields(obj):
            if not _type_ok(getattr(obj, f.name), str(f.type)):
                raise BundleError(f"manifest field {where}.{f.name} must be {f.type}, got {getattr(obj, f.name)!r:.80}")


def _bounded(what: str, value: Any, key: str | None = None) -> None:
    lo, hi = LIMITS[key or what]
    if not (lo <= value <= hi):
        raise BundleError(f"manifest field {what} is {value!r:.40}; it must be between {_num(lo)} and {_num(hi)}")


def _num(x: float) -> str:
    """A limit as written in LIMITS: 536870912, not 5.36871e+08."""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _f32(x: float) -> float:
    """The value the runtime computes with (float32): a finite float64 may still overflow to inf."""
    import numpy as np

    with np.errstate(over="ignore"):
        return float(np.float32(x))


def _check_normalisation(what: str, mean: float, std: float) -> None:
    m32, s32 = _f32(mean), _f32(std)
    if not (math.isfinite(m32) and math.isfinite(s32) and abs(s32) >= MIN_STD):
        raise BundleError(f"{what} has an invalid normalisation (mean {mean!r:.30}, std {std!r:.30} as float32); "
                          "both must be finite and std must not vanish")


def _check_bounds(m: Manifest) -> None:
    """Every number has a lower AND an upper bound; strings and lists are bounded in length."""
    te, dif, den, tm = m.text_encoder, m.diffusion, m.denoiser, m.template
    for what, v in (("diffusion.num_train_timesteps", dif.num_train_timesteps), ("diffusion.default_steps", dif.default_steps),
                    ("text_encoder.embedding_dim", te.embedding_dim), ("text_encoder.max_tokens", te.max_tokens),
                    ("text_encoder.pad_id", te.pad_id), ("denoiser.k_max", den.k_max),
                    ("denoiser.param_count", den.param_count), ("denoiser.embedding_dim", den.embedding_dim),
                    ("template.input.height", tm.input.height), ("template.input.width", tm.input.width),
                    ("template.input.channels", tm.input.channels)):
        _bounded(what, v)
    if te.image_size is not None:
        _bounded("text_encoder.image_size", te.image_size)
    _bounded("denoiser.k_max x denoiser.embedding_dim", den.k_max * den.embedding_dim, "conditioning.floats")
    for what, v in (("text_encoder.kind", te.kind), ("text_encoder.name", te.name), ("text_encoder.cleaning", te.cleaning),
                    ("template.name", tm.name), ("producer", m.producer)):
        _bounded(f"{what} (length)", len(v), "string.chars")
    if (tm.input.dtype, tm.input.layout) != ("uint8", "NHWC"):
        raise BundleError(f"manifest template.input must be uint8 NHWC, got {tm.input.dtype!r:.20} {tm.input.layout!r:.20}")
    if tm.form not in TEMPLATE_FORMS:
        raise BundleError(f"manifest template.form is {tm.form!r:.40}; it must be one of {TEMPLATE_FORMS} "
                          "(re-export the bundle or upgrade tina-edge)")
    if not (len(tm.input.mean) == len(tm.input.std) == 3):
        raise BundleError("manifest template.input.mean and .std must hold 3 numbers (R, G, B)")
    for c, (mu, sd) in enumerate(zip(tm.input.mean, tm.input.std)):
        _check_normalisation(f"manifest template.input channel {c}", mu, sd)
    _bounded("files (count)", len(m.files), "files.count")
    _bounded("template.layout (count)", len(tm.layout), "layout.count")
    for t in tm.layout:
        _bounded(f"template.layout {t.name!r:.40} (name length)", len(t.name), "name.chars")
        _bounded(f"template.layout {t.name!r:.40} (rank)", len(t.shape), "layout.rank")
        for s in t.shape:
            _bounded(f"template.layout {t.name!r:.40} (shape)", s, "layout.dim")
        if t.class_axis is not None and not (0 <= t.class_axis < len(t.shape)):
            raise BundleError(f"tensor {t.name!r:.40} has class_axis {t.class_axis}, outside its {len(t.shape)} axes")
        _check_normalisation(f"tensor {t.name!r:.40}", t.mean, t.std)
    m.training.check()  # the typed informational sections (manifest_sections.py)
    m.evaluation.check()


def _check_preprocess(inp: InputSpec) -> None:
    """template.input.preprocess: None, or a policy the one validator accepts, for a square input of its size."""
    if inp.preprocess is None:
        return
    from .preprocess import PreprocessSpec

    try:
        spec = PreprocessSpec.from_dict(inp.preprocess)
    except (ValueError, TypeError) as e:
        raise BundleError(f"manifest field template.input.preprocess is invalid ({e}); re-export the bundle") from None
    if (inp.height, inp.width) != (spec.size, spec.size):
        raise BundleError(f"manifest field template.input.preprocess.size is {spec.size} but template.input is "
                          f"{inp.height}x{inp.width}; re-export the bundle")


def _check_files(m: Manifest) -> None:
    """File keys are normalised, unique (also case-insensitively), with a sha256 and a bounded size."""
    folded: dict[str, str] = {}
    for name, entry in m.files.items():
        _check_relative(name, "files")
        if name == MANIFEST_NAME:
            raise BundleError(f"manifest field files lists {MANIFEST_NAME} itself; it cannot hash itself")
        key = name.casefold()
        if key in folded:
            raise BundleError(f"manifest field files lists {folded[key]!r} and {name!r}, the same file on some filesystems")
        folded[key] = name
        sha, size = entry.get("sha256"), entry.get("bytes")
        if not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
            raise BundleError(f"manifest field files[{name!r}].sha256 must be 64 lower-case hex digits")
        if not (isinstance(size, int) and not isinstance(size, bool)):
            raise BundleError(f"manifest field files[{name!r}].bytes must be the file's size in bytes")
        _bounded(f"files[{name!r}].bytes", size, "file.bytes")
    _bounded("files (total bytes)", sum(e["bytes"] for e in m.files.values()), "bundle.bytes")


def _check_vocabulary(m: Manifest) -> None:
    """The work a vocabulary asks of the device is bounded: without the embeddings file every name is
    encoded at the first new name (10 000 names: a minute), with it the file is [V, D] floats."""
    te, n = m.text_encoder, len(m.vocabulary)
    if te.vocabulary_embeddings:
        _bounded("training.vocabulary x text_encoder.embedding_dim", n * te.embedding_dim, "vocabulary.floats")
    elif n > LIMITS["vocabulary.encoded"][1]:
        raise BundleError(f"manifest field training.vocabulary holds {n} names but text_encoder.vocabulary_embeddings "
                          f"is absent; at most {LIMITS['vocabulary.encoded'][1]:.0f} names are encoded on the device "
                          "(re-export the bundle: the exporter writes vocabulary_embeddings.npy)")


def _validate(m: Manifest) -> None:
    _check_types(m)
    _check_bounds(m)
    _check_files(m)
    _check_preprocess(m.template.input)
    _check_vocabulary(m)
    for what, name in bundle_files(m):
        _check_relative(name, what)
        if name not in m.files:
            raise BundleError(f"manifest field {what} names {name!r}, which is not listed in files")
    off = 0
    for i, t in enumerate(m.template.layout):
        if t.offset != off:
            raise BundleError(f"manifest field template.layout[{i}].offset of tensor {t.name!r:.40} is {t.offset}; "
                              f"the tensors follow each other, so it must be {off}")
        if t.class_axis is not None and t.shape[t.class_axis] != m.denoiser.k_max:
            raise BundleError(f"manifest field template.layout[{i}].shape of tensor {t.name!r:.40} is {t.shape}: its class "
                              f"axis {t.class_axis} must be denoiser.k_max = {m.denoiser.k_max} long")
        off += t.numel
    if off != m.denoiser.param_count:
        raise BundleError(
            f"manifest template.layout holds {off} parameters but denoiser.param_count is {m.denoiser.param_count}"
        )
    if m.diffusion.prediction_type != "sample":
        raise BundleError(f"unsupported diffusion.prediction_type {m.diffusion.prediction_type!r:.40}")
    if m.diffusion.beta_schedule != "linear":
        raise BundleError(f"unsupported diffusion.beta_schedule {m.diffusion.beta_schedule!r:.40}")
    _check_schedule(m.diffusion)


def _check_schedule(d: DiffusionSpec) -> None:
    """Schedule ranges and the default sampler: run on write as on read, so an exporter cannot
    write a bundle the runtime refuses."""
    if not (0.0 < d.beta_start <= d.beta_end < 1.0):
        raise BundleError("manifest diffusion schedule is invalid: need 0 < beta_start <= beta_end < 1")
    if d.default_sampler not in SAMPLERS or not (1 <= d.default_steps <= d.num_train_timesteps):
        raise BundleError(
            f"manifest diffusion defaults are invalid: sampler must be one of {SAMPLERS} and default_steps 1..{d.num_train_timesteps}"
        )


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
        _check_relative(name, "files")
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
