"""The bundle format, defined once: what `manifest.json` holds, how it is written, how it is read.

The exporter writes bundles only through `write_manifest`; the runtime reads them only through
`read_manifest`. A bundle is a directory:

    manifest.json        this schema
    text_encoder.onnx    input_ids/attention_mask int64 [B, L] -> embeddings float32 [B, D] (L2-normed)
    tokenizer.json       `tokenizers` format
    denoiser.onnx        x_t [B, P], timestep int64 [B], class_emb [B, K, D], class_mask [B, K]
                         -> x0 [B, P]   (one denoising step, predicts the clean normalised params)
    template.onnx        image uint8 [N, H, W, 3] -> logits, probabilities [N, k]; the generated
                         tensors are initializers the runtime replaces (names in `template.layout`)
    (optional) image_encoder.onnx, vocab_embeddings.npy
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import BundleError

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class TensorSpec:
    """One generated tensor: its place in the flat parameter vector and how to de-normalise it.

    `shape` is the shape at K_max classes; when `class_axis` is not None that axis holds one slice
    per class slot and the runtime keeps the first k. Stored values are (w - mean) / std.
    """

    name: str
    shape: list[int]
    offset: int
    class_axis: int | None = None
    mean: float = 0.0
    std: float = 1.0

    @property
    def numel(self) -> int:
        return int(math.prod(self.shape))


@dataclass
class TextEncoderSpec:
    kind: str  # "minilm" | "open_clip" | ...
    name: str  # e.g. "all-MiniLM-L6-v2" or "ViT-B-32/openai"
    model: str  # file name inside the bundle
    tokenizer: str
    embedding_dim: int
    max_tokens: int
    cleaning: str = "none"  # "none" | "clip" (ftfy + html unescape + whitespace + lower)
    pad_id: int = 0
    image_encoder: str | None = None  # file name of the image tower, if the encoder has one
    image_size: int | None = None


@dataclass
class DiffusionSpec:
    num_train_timesteps: int = 1000
    beta_schedule: str = "linear"
    beta_start: float = 1e-4
    beta_end: float = 0.02
    prediction_type: str = "sample"  # the denoiser predicts x0
    default_sampler: str = "ddim"
    default_steps: int = 20


@dataclass
class DenoiserSpec:
    model: str
    k_max: int
    param_count: int
    embedding_dim: int


@dataclass
class InputSpec:
    height: int = 32
    width: int = 32
    channels: int = 3
    dtype: str = "uint8"
    layout: str = "NHWC"
    mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    # photos of any size -> [height, width]: a runtime.preprocess.PreprocessSpec as a dict (None: plain resize)
    preprocess: dict | None = None


@dataclass
class TemplateSpec:
    model: str
    name: str
    layout: list[TensorSpec]
    input: InputSpec = field(default_factory=InputSpec)

    @property
    def param_count(self) -> int:
        return sum(t.numel for t in self.layout)


@dataclass
class Manifest:
    text_encoder: TextEncoderSpec
    diffusion: DiffusionSpec
    denoiser: DenoiserSpec
    template: TemplateSpec
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {sha256, bytes}
    training: dict[str, Any] = field(default_factory=dict)  # datasets, holdout, vocabulary
    evaluation: dict[str, Any] = field(default_factory=dict)
    producer: str = ""
    schema_version: int = SCHEMA_VERSION
    bundle_id: str = ""

    @property
    def k_max(self) -> int:
        return self.denoiser.k_max

    @property
    def vocabulary(self) -> list[str]:
        return list(self.training.get("vocabulary", []))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_REQUIRED = ("schema_version", "text_encoder", "diffusion", "denoiser", "template", "files")


def _check_relative(name: Any, what: str) -> str:
    """A file named by the manifest must be a plain relative path inside the bundle."""
    if not isinstance(name, str) or not name:
        raise BundleError(f"manifest field {what} must be a file name, got {name!r}")
    p = PurePosixPath(name)
    if p.is_absolute() or name.startswith(("/", "\\")) or ".." in p.parts or "\\" in name or ":" in name:
        raise BundleError(f"manifest field {what} points outside the bundle: {name!r}")
    return name


def manifest_from_dict(d: Any) -> Manifest:
    """Build and validate a Manifest from parsed JSON; raise BundleError naming the problem."""
    if not isinstance(d, dict):
        raise BundleError("manifest.json must hold a JSON object")
    missing = [k for k in _REQUIRED if k not in d]
    if missing:
        raise BundleError(f"manifest.json is missing required fields: {', '.join(missing)}")
    if d["schema_version"] != SCHEMA_VERSION:
        raise BundleError(
            f"bundle schema version {d['schema_version']!r} is not supported by this tina-edge "
            f"(it reads version {SCHEMA_VERSION}); re-export the bundle or upgrade tina-edge"
        )
    try:
        te = TextEncoderSpec(**d["text_encoder"])
        diff = DiffusionSpec(**d["diffusion"])
        den = DenoiserSpec(**d["denoiser"])
        t = dict(d["template"])
        layout = [TensorSpec(**x) for x in t.pop("layout")]
        inp = InputSpec(**t.pop("input", {}))
        tmpl = TemplateSpec(layout=layout, input=inp, **t)
        files = d["files"]
        if not isinstance(files, dict) or not all(
            isinstance(v, dict) and isinstance(v.get("sha256"), str) for v in files.values()
        ):
            raise BundleError("manifest field files must map file names to {sha256, bytes}")
        m = Manifest(
            text_encoder=te, diffusion=diff, denoiser=den, template=tmpl, files=dict(files),
            training=dict(d.get("training", {})), evaluation=dict(d.get("evaluation", {})),
            producer=str(d.get("producer", "")), schema_version=int(d["schema_version"]),
            bundle_id=str(d.get("bundle_id", "")),
        )
    except BundleError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise BundleError(f"manifest.json has a malformed field: {e}") from None
    _validate(m)
    return m


def _validate(m: Manifest) -> None:
    for name in m.files:
        _check_relative(name, "files")
    for what, name in (
        ("text_encoder.model", m.text_encoder.model),
        ("text_encoder.tokenizer", m.text_encoder.tokenizer),
        ("denoiser.model", m.denoiser.model),
        ("template.model", m.template.model),
    ) + ((("text_encoder.image_encoder", m.text_encoder.image_encoder),) if m.text_encoder.image_encoder else ()):
        _check_relative(name, what)
        if name not in m.files:
            raise BundleError(f"manifest field {what} names {name!r}, which is not listed in files")
    if not (2 <= m.denoiser.k_max <= 1000):
        raise BundleError(f"manifest denoiser.k_max must be at least 2, got {m.denoiser.k_max}")
    off = 0
    for t in m.template.layout:
        if t.offset != off or any((not isinstance(s, int)) or s <= 0 for s in t.shape):
            raise BundleError(f"manifest template.layout is inconsistent at tensor {t.name!r}")
        if t.class_axis is not None and t.shape[t.class_axis] != m.denoiser.k_max:
            raise BundleError(f"tensor {t.name!r} has a class axis that is not K_max long")
        if not (t.std > 0 and math.isfinite(t.std) and math.isfinite(t.mean)):
            raise BundleError(f"tensor {t.name!r} has an invalid normalisation")
        off += t.numel
    if off != m.denoiser.param_count:
        raise BundleError(
            f"manifest template.layout holds {off} parameters but the denoiser makes {m.denoiser.param_count}"
        )
    if m.diffusion.prediction_type != "sample":
        raise BundleError(f"unsupported diffusion.prediction_type {m.diffusion.prediction_type!r}")
    if m.diffusion.beta_schedule != "linear":
        raise BundleError(f"unsupported diffusion.beta_schedule {m.diffusion.beta_schedule!r}")


def read_manifest(bundle_dir: str | os.PathLike) -> Manifest:
    """Parse and validate `manifest.json` of a bundle directory (hashes are checked by bundle.py)."""
    path = Path(bundle_dir) / MANIFEST_NAME
    if not path.is_file():
        raise BundleError(f"{bundle_dir} is not a tina-edge bundle: it has no {MANIFEST_NAME}")
    try:
        d = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{path} is not valid JSON: {e}") from None
    except RecursionError:  # a crafted '[[[[...' must not end in a traceback
        raise BundleError(f"{path} is not a usable manifest: its JSON is nested too deeply") from None
    return manifest_from_dict(d)


def write_manifest(bundle_dir: str | os.PathLike, manifest: Manifest) -> Manifest:
    """Hash every file the manifest names, set `files` and `bundle_id`, write manifest.json atomically."""
    bundle_dir = Path(bundle_dir)
    names = {manifest.text_encoder.model, manifest.text_encoder.tokenizer, manifest.denoiser.model,
             manifest.template.model} | set(manifest.files)
    if manifest.text_encoder.image_encoder:
        names.add(manifest.text_encoder.image_encoder)
    files = {}
    for name in sorted(names):
        _check_relative(name, "files")
        p = bundle_dir / name
        if not p.is_file():
            raise BundleError(f"cannot write manifest: bundle file {p} does not exist")
        files[name] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
    manifest.files = files
    manifest.schema_version = SCHEMA_VERSION
    ident = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]
    manifest.bundle_id = ident
    manifest_from_dict(json.loads(json.dumps(manifest.to_dict())))  # what we write, we can read
    tmp = bundle_dir / (MANIFEST_NAME + ".tmp")
    tmp.write_text(json.dumps(manifest.to_dict(), indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, bundle_dir / MANIFEST_NAME)
    return manifest
