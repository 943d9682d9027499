"""The manifest's rules, each a check that names the field it refuses (one sentence, `BundleError`):
types, bounds (LIMITS), float32-finite normalisation, file names inside the bundle, the photo
policy, the vocabulary the device may have to encode, the schedule. `validate` runs them all; the
reader (`manifest.manifest_from_dict`) and the writer (`write_manifest`, through its round trip)
both call it."""

from __future__ import annotations

import math
from dataclasses import fields
from pathlib import PurePosixPath
from typing import Any

from .contracts import SAMPLERS
from .errors import BundleError
from .manifest_spec import LIMITS, MANIFEST_NAME, MIN_STD, TEMPLATE_FORMS, DiffusionSpec, InputSpec, Manifest, bundle_files


def check_relative(name: Any, what: str) -> str:
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
        check_relative(name, "files")
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


def validate(m: Manifest) -> None:
    _check_types(m)
    _check_bounds(m)
    _check_files(m)
    _check_preprocess(m.template.input)
    _check_vocabulary(m)
    for what, name in bundle_files(m):
        check_relative(name, what)
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
