"""A Tina checkpoint's metadata, typed: the one builder (`CheckpointMeta.from_trainer`, what
`Trainer.save` writes) and reader (`CheckpointMeta.from_dict`, what `read_checkpoint` checks and
`Checkpoint.info` returns) of the JSON stored in the safetensors header.

Export and evaluation read fields (`info.classes`, `info.encoder.dim`), never string keys, so a
renamed key breaks here and nowhere else. Keys this version does not know are kept in `extra`.
The checkpoint also turns itself into the bundle manifest's `training` section (`training_info`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..runtime.errors import TinaEdgeError
from ..runtime.manifest_sections import TrainingInfo

if TYPE_CHECKING:  # pragma: no cover
    from .trainer import Trainer

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
            raise TinaEdgeError(f"{where} is a safetensors file but not a tina-edge checkpoint (no tina_edge metadata)")
        bad = [k for k, t in REQUIRED if not isinstance(d.get(k), t)]
        if bad:  # fail here with one sentence, not with a KeyError deep inside export
            raise TinaEdgeError(f"{where} is a damaged tina-edge checkpoint: its metadata lacks {', '.join(bad)}")
        known = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in d.items() if k in known},
                   extra={k: v for k, v in d.items() if k not in known and k != "format"})

    @classmethod
    def from_trainer(cls, t: "Trainer") -> "CheckpointMeta":
        """What `Trainer.save` records: configs, layout, progress, and the pipeline's `extra_meta`."""
        opt_groups = [{k: v for k, v in g.items() if k != "params"} for g in t.opt.state_dict()["param_groups"]]
        core = {"format": CHECKPOINT_FORMAT, "step": t.step, "train": asdict(t.cfg), "denoiser": t.model.cfg.to_dict(),
                "schedule": t.sched.to_dict(), "template": asdict(t.layout.cfg),
                "layout": [asdict(s) for s in t.layout.specs], "vocabulary": t.data.vocabulary,
                "optim_groups": opt_groups, "losses_tail": t.losses[-200:]}
        return cls.from_dict(core | t.extra_meta)

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
            raise TinaEdgeError(f"checkpoint {where} does not record its text encoder; it was not written by "
                                "`tina-edge train diffusion`")
        return enc

    @property
    def seen_classes(self) -> list[str]:
        """The names the denoiser was trained on (every class when nothing was held out)."""
        if self.seen:
            return list(self.seen)
        if self.classes is None:
            raise TinaEdgeError("this checkpoint records no class names; it was not written by `tina-edge train diffusion`")
        return list(self.classes)

    def training_info(self, quantize_trunk: str | None = None) -> TrainingInfo:
        """The bundle manifest's `training` section, built from the checkpoint in one place."""
        from .datasets.universe import universe_label

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
