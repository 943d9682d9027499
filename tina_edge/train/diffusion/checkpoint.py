"""The Tina checkpoint, in one module: its typed metadata (`CheckpointMeta`), the one writer
(`write_checkpoint`, safetensors + JSON, atomic) and reader (`read_checkpoint`, no pickles), the
loaded `Checkpoint` (denoiser, layout and schedule rebuilt from its metadata, typed once) and the
prior-only surgery. `Trainer.checkpoint_meta` builds what `Trainer.save` writes.

Export and evaluation read fields (`info.classes`, `info.encoder.dim`), never string keys, so a
renamed key breaks here and nowhere else. Keys this version does not know are kept in `extra`.
The checkpoint also turns itself into the bundle manifest's `training` section (`training_info`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from tina_edge.runtime.errors import CheckpointError
from tina_edge.runtime.manifest_sections import TrainingInfo
from tina_edge.train.diffusion.denoiser import DenoiserConfig, RowTokenDenoiser, TinaDenoiser, build_denoiser
from tina_edge.train.diffusion.process import Schedule
from tina_edge.train.zoo.templates import ParamLayout, TemplateConfig

CHECKPOINT_FORMAT = "tina-edge-checkpoint/1"
REQUIRED = (("denoiser", dict), ("schedule", dict), ("template", dict), ("layout", list))
TRUNK_INT8 = "int8 static QDQ per-channel"  # the manifest's training.trunk_quantization for --quantize-trunk int8


@dataclass(frozen=True)
class EncoderRecord:
    """The text encoder the denoiser was trained on: what export and evaluation rebuild and check."""

    kind: str | None = None  # "minilm" | "open_clip" | "st" ...
    name: str | None = None  # e.g. "all-MiniLM-L6-v2"
    spec: str | None = None  # what build_text_encoder takes, e.g. "open_clip:ViT-B-32:openai"
    dim: int | None = None
    bank: str | None = None  # the phrasing bank (.npz, several texts per class) it was trained with

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EncoderRecord":
        return cls(**{f.name: d.get(f.name) for f in fields(cls)})

    def label(self) -> str:
        return self.name or self.kind or "an unknown encoder"


@dataclass
class CheckpointMeta:
    """Everything a checkpoint records beside its tensors. A None field is absent from the JSON."""

    denoiser: dict[str, Any]  # DenoiserConfig.to_dict()
    schedule: dict[str, Any]  # Schedule.to_dict()
    template: dict[str, Any]  # TemplateConfig as a dict
    layout: list[dict[str, Any]]  # the TensorSpecs of the generated parameters
    step: int = 0
    train: dict[str, Any] | None = None  # TrainConfig as a dict
    vocabulary: list[str] | None = None  # names of the embedding table's rows
    optim_groups: list[dict[str, Any]] | None = None
    losses_tail: list[float] | None = None
    # written by the pipelines (Trainer's extra_meta)
    text_encoder: dict[str, Any] | None = None  # typed view: `encoder`
    classes: list[str] | None = None  # every class of the universe, zoo order
    holdout: list[str] | None = None  # classes no training p-model holds
    seen: list[str] | None = None
    zoo: dict[str, Any] | None = None  # {"count", "mean_accuracy"}
    generic_info: dict[str, Any] | None = None  # {"datasets", "test_accuracy", ...}
    synonyms: dict[str, list[str]] | None = None
    text_prior: dict[str, Any] | None = None  # the text -> row prior's settings (train/text_prior.py)
    vocabulary_extra: list[str] | None = None  # names a text prior was fitted on beyond the seen classes
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know

    @classmethod
    def from_dict(cls, d: Any, where: str | Path = "checkpoint") -> "CheckpointMeta":
        """Check and type the stored metadata; a TinaEdgeError says what is wrong, never a KeyError later."""
        if not isinstance(d, dict) or d.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{where} is a safetensors file but not a tina-edge checkpoint (no tina_edge metadata)")
        bad = [k for k, t in REQUIRED if not isinstance(d.get(k), t)]
        if bad:  # fail here with one sentence, not with a KeyError deep inside export
            raise CheckpointError(f"{where} is a damaged tina-edge checkpoint: its metadata lacks {', '.join(bad)}")
        known = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in d.items() if k in known},
                   extra={k: v for k, v in d.items() if k not in known and k != "format"})

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {"format": CHECKPOINT_FORMAT} | {k: v for k, v in out.items() if v is not None} | dict(self.extra)

    @property
    def encoder(self) -> EncoderRecord:
        return EncoderRecord.from_dict(self.text_encoder if isinstance(self.text_encoder, dict) else {})

    def require_encoder(self, where: str | Path) -> EncoderRecord:
        """The encoder record export needs (its dim and spec), or a TinaEdgeError saying why there is none."""
        enc = self.encoder
        if enc.dim is None:
            raise CheckpointError(f"checkpoint {where} does not record its text encoder; it was not written by "
                                "`tina-edge train diffusion`")
        return enc

    @property
    def seen_classes(self) -> list[str]:
        """The names the denoiser was trained on (every class when nothing was held out)."""
        if self.seen:
            return list(self.seen)
        if self.classes is None:
            raise CheckpointError("this checkpoint records no class names; it was not written by `tina-edge train diffusion`")
        return list(self.classes)

    def training_info(self, quantize_trunk: str | None = None) -> TrainingInfo:
        """The bundle manifest's `training` section, built from the checkpoint in one place."""
        from tina_edge.train.data.universe import universe_label

        gen = self.generic_info or {}
        datasets = gen.get("datasets", "")
        return TrainingInfo(
            datasets=universe_label(datasets) if isinstance(datasets, dict) else str(datasets),
            classes=list(self.classes or []), holdout_classes=list(self.holdout or []),
            # every name training saw: the seen classes, and the ImageNet names of a text prior
            vocabulary=list(self.seen or []) + list(self.vocabulary_extra or []), text_prior=self.text_prior,
            zoo=dict(self.zoo or {}),
            generic_test_accuracy=gen.get("test_accuracy"),
            denoiser={k: v for k, v in self.denoiser.items() if k != "chunks"},
            diffusion_steps_trained=self.step, text_encoder=dict(self.text_encoder or {}),
            trunk_quantization=TRUNK_INT8 if quantize_trunk else None, synonyms=dict(self.synonyms or {}))


@dataclass
class Checkpoint:
    tensors: dict[str, torch.Tensor]
    meta: dict = field(default_factory=dict)

    @cached_property
    def info(self) -> CheckpointMeta:
        """`meta` typed, built once; read fields from here, not `meta[...]` string keys."""
        return CheckpointMeta.from_dict(self.meta)

    def prefixed(self, prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix):]: v for k, v in self.tensors.items() if k.startswith(prefix)}

    def layout(self) -> ParamLayout:
        """The generated parameters' layout (a fresh object: callers may set its normalisation)."""
        from tina_edge.runtime.manifest import TensorSpec

        lay = ParamLayout(TemplateConfig(**self.info.template))
        lay.specs = [TensorSpec(**s) for s in self.info.layout]
        return lay

    def denoiser(self, ema: bool = True) -> TinaDenoiser:
        m = build_denoiser(DenoiserConfig.from_dict(self.info.denoiser))
        m.load_state_dict(self.prefixed("ema." if ema else "model."))
        return m.eval()

    def schedule(self) -> Schedule:
        return Schedule(**self.info.schedule)


def write_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """The one writer of checkpoint files: safetensors + JSON metadata, atomically (temp + rename)."""
    from safetensors.torch import save

    from tina_edge.runtime.atomic import atomic_write_bytes

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = save({k: v.contiguous() for k, v in tensors.items()}, metadata={"tina_edge": json.dumps(meta)})
    atomic_write_bytes(path, data, overwrite=True)


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Load a checkpoint: safetensors + JSON metadata only; anything else (e.g. a pickle) is refused."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    with open(path, "rb") as f:
        head = f.read(9)
    # safetensors = u64 header length + '{'; its first byte may be 0x80 ("PK" too), so only then sniff
    if head[8:9] != b"{" and (head[:1] == b"\x80" or head[:2] == b"PK"):
        raise CheckpointError(f"{path} looks like a pickle/torch.save file; tina-edge only loads safetensors "
                            "checkpoints (pickles can execute code). Convert it with safetensors first.")
    try:
        with safe_open(str(path), "pt") as f:
            meta = json.loads((f.metadata() or {}).get("tina_edge", "{}"))
        tensors = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for malformed headers
        raise CheckpointError(f"{path} is not a valid safetensors checkpoint: {e}") from None
    CheckpointMeta.from_dict(meta, path)  # format and required fields, one sentence if damaged
    return Checkpoint(tensors, meta)


def prior_only_checkpoint(src, dst) -> dict:
    """A copy of checkpoint `src` whose denoiser returns its text prior and nothing else.

    Why: on the photo universe the prior alone beats prior + correction on names never seen in
    training (held-out recall 68.1 vs 66.5 %, BENCHMARKS §12) and ties on seen names. Zeroing the
    correction's output layer (model and EMA) keeps every graph, runtime and the sampler unchanged:
    x0 = prior at every step, so any sampler returns the prior. Returns the new text_prior record.
    """
    ck = read_checkpoint(src)
    if not ck.meta["denoiser"].get("text_prior"):
        raise CheckpointError(f"{src} has no text prior (train it with `train diffusion --text-prior`)")
    tensors = dict(ck.tensors)
    for prefix in ("model.", "ema."):
        for name in RowTokenDenoiser.CORRECTION_OUTPUT:
            tensors[prefix + name] = torch.zeros_like(tensors[prefix + name])
    meta = dict(ck.meta)
    meta["text_prior"] = dict(meta.get("text_prior") or {}) | {"prior_only": True}
    write_checkpoint(dst, tensors, meta)
    return meta["text_prior"]
