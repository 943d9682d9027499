"""What `manifest.json` holds: the typed sections of a bundle manifest, the bounds of every number,
and the one list of files a manifest names. Reading, checking and writing are in manifest.py."""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any

from .manifest_sections import EvaluationSummary, PortableInfo, TrainingInfo  # noqa: F401  (re-exported with the other sections)

SCHEMA_VERSION = 1
TEMPLATE_FORMS = ("initializers", "inputs")  # template.form: generated tensors as initializers or graph inputs
MANIFEST_NAME = "manifest.json"

# Upper bounds of every number a manifest holds: a hostile manifest must not make the runtime
# allocate more than its declared files justify, or loop for minutes (docs/RELIABILITY.md, item 3).
LIMITS: dict[str, tuple[float, float]] = {
    "diffusion.num_train_timesteps": (1, 1000),  # DDPM samples all T steps: Tina's T is 1000
    "diffusion.default_steps": (1, 1000),
    "text_encoder.embedding_dim": (1, 4096),
    "text_encoder.max_tokens": (2, 512),
    "text_encoder.pad_id": (0, 10_000_000),
    "text_encoder.image_size": (1, 1024),
    "denoiser.k_max": (2, 1000),
    # generated parameters: the default bundle's head is 25 620, a 1 000-class head on a 1 280-d trunk 1.28 M;
    # 4 M floats bound what the runtime allocates without bytes behind it (noise, an "inputs" template's zeros)
    "denoiser.param_count": (1, 1 << 22),
    "denoiser.embedding_dim": (1, 4096),
    "template.input.height": (1, 2048),
    "template.input.width": (1, 2048),
    "template.input.channels": (3, 3),
    # sizes: the default bundle is 57 MB (largest file 26 MB); an fp32 all-mpnet-base-v2 text encoder
    # (438 MB) or a CLIP ViT-B/32 text + image tower (~610 MB) are the largest real ones we support
    "file.bytes": (0, 512 << 20),
    "bundle.bytes": (1, 1 << 30),  # all listed files together: what an archive may unpack, too
    "files.count": (1, 64),
    "layout.count": (1, 256),
    "layout.rank": (1, 8),
    "layout.dim": (1, 1 << 22),
    "name.chars": (1, 255),
    "string.chars": (0, 200),
    "vocabulary.count": (0, 100_000),
    # without text_encoder.vocabulary_embeddings every name is encoded on the device at the first new
    # name (~4 ms a name with MiniLM, 5x that with mpnet): at most this many (the exporter ships the file)
    "vocabulary.encoded": (0, 1024),
    "vocabulary.floats": (0, 1 << 24),  # len(vocabulary) x embedding_dim of the embeddings file (64 MB as float32)
    "conditioning.floats": (1, 1 << 20),
    "senses.bytes": (0, 8 << 20),  # senses.json (WordNet's ~4 200 ambiguous nouns: 1.3 MB) is parsed whole  # k_max x embedding_dim: class_emb is [candidates <= 64, k_max, D]
}
MAX_MANIFEST_BYTES = 16 << 20  # a 100 000-name vocabulary fits in a few MiB
MAX_JSON_DEPTH = 32  # nesting of the manifest's JSON (the default bundle's is 6): code that walks it recursively stays safe
MAX_JSON_NODES = 1_000_000  # values in the manifest's JSON (the default bundle's: 3 101)
MIN_STD = 1e-12  # a normalisation std below this (after the float32 cast) is treated as vanishing


def bundle_files(m: "Manifest") -> list[tuple[str, str]]:
    """(manifest field, file name) of every file a manifest names: the ONE list of bundle files.

    The validator checks each is listed and hashed; write_manifest hashes each. Add new graphs
    (e.g. an optional generate.onnx) here and nowhere else.
    """
    te = m.text_encoder
    out = [("text_encoder.model", te.model), ("text_encoder.tokenizer", te.tokenizer),
           ("denoiser.model", m.denoiser.model), ("template.model", m.template.model)]
    if te.image_encoder:
        out.append(("text_encoder.image_encoder", te.image_encoder))
    if te.vocabulary_embeddings:
        out.append(("text_encoder.vocabulary_embeddings", te.vocabulary_embeddings))
    if te.senses:
        out.append(("text_encoder.senses", te.senses))
    if te.name_table:
        out.append(("text_encoder.name_table", te.name_table))
    if te.name_vectors:
        out.append(("text_encoder.name_vectors", te.name_vectors))
    return out + m.portable.files()  # optional portable files (docs/PORTABLE.md)



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
    # float16 .npy [len(training.vocabulary), embedding_dim]: the training vocabulary encoded at export,
    # so the novelty report's nearest known names cost no encoding on the device (1,637 names ~ 6 s)
    vocabulary_embeddings: str | None = None
    # senses.json: the visible WordNet senses of ambiguous names (runtime/senses.py; issue 22), optional
    senses: str | None = None
    # name_table.json.gz + name_table.npy: a larger encoder's reading of WordNet's visible nouns as
    # embeddings in this encoder's space (runtime/name_table.py; issue 22 item 3), optional
    name_table: str | None = None
    name_vectors: str | None = None


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
    form: str = "initializers"  # TEMPLATE_FORMS: where the generated tensors live in template.model

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
    training: TrainingInfo = field(default_factory=TrainingInfo)  # datasets, holdout, vocabulary (manifest_sections.py)
    evaluation: EvaluationSummary = field(default_factory=EvaluationSummary)
    producer: str = ""
    schema_version: int = SCHEMA_VERSION
    bundle_id: str = ""
    # optional portable files (generate.onnx, the template with weights as inputs, tokenizer_config.json) and the
    # starting-noise generator; empty for bundles written before them (docs/PORTABLE.md)
    portable: PortableInfo = field(default_factory=PortableInfo)

    def __post_init__(self) -> None:
        """A section given as its JSON object is parsed (and checked) into its typed form."""
        if isinstance(self.training, dict):
            self.training = TrainingInfo.from_dict(self.training, "training")
        if isinstance(self.evaluation, dict):
            self.evaluation = EvaluationSummary.from_dict(self.evaluation, "evaluation")
        if isinstance(self.portable, dict):
            self.portable = PortableInfo.from_dict(self.portable, "portable")

    @property
    def k_max(self) -> int:
        return self.denoiser.k_max

    @property
    def vocabulary(self) -> list[str]:
        return list(self.training.vocabulary or [])

    def to_dict(self) -> dict[str, Any]:
        """The JSON object manifest.json holds (the typed sections in their own JSON form)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, (TrainingInfo, EvaluationSummary, PortableInfo)):
                out[f.name] = copy.deepcopy(v.to_dict())
            else:
                out[f.name] = asdict(v) if is_dataclass(v) else copy.deepcopy(v)
        for key in ("senses", "name_table", "name_vectors"):  # written only when there is one: older readers stay able
            if out["text_encoder"].get(key, "") is None:
                del out["text_encoder"][key]
        return out
