"""The manifest's informational sections, typed: `training` (what the generator learnt from) and
`evaluation` (how well its models did). One class each writes (`to_dict`) and reads (`from_dict`)
its section, and `check` runs on write and on read like every other manifest rule.

Only `training.vocabulary` drives behaviour (novelty, cached embeddings); the rest is reported by
`tina-edge info`. Keys this version does not know are kept in `extra` and written back unchanged,
so a bundle from a newer exporter (or an older one: `holdout`, `in_distribution`) still loads.
Absent reads as None, and a None field is not written, except one the JSON it was read from held
as null: what is read is written back key for key (an old bundle's `info --json` does not change).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from .errors import BundleError

NAME_CHARS = 200  # a class name or a dataset label (LIMITS["string.chars"])
NAMES_COUNT = 100_000  # LIMITS["vocabulary.count"]
LABEL_CHARS = 4096  # the datasets label names image folders too
_BOOKKEEPING = ("extra", "nulls")  # dataclass fields that are not keys of the section
FIGURES_DEPTH = 3  # {"ood": {"per_k": {"2": {"generated": 81.0}}}}: a figure table nests at most this deep


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_names(what: str, v: Any) -> None:
    """A list of class names: strings of at most NAME_CHARS characters, at most NAMES_COUNT of them."""
    if not isinstance(v, list) or not all(isinstance(x, str) and len(x) <= NAME_CHARS for x in v):
        raise BundleError(f"manifest field {what} must be a list of class names (at most {NAME_CHARS} characters each)")
    if len(v) > NAMES_COUNT:
        raise BundleError(f"manifest field {what} (count) is {len(v)}; it must be between 0 and {NAMES_COUNT}")


def _check_object(what: str, v: Any) -> None:
    if not isinstance(v, dict) or not all(isinstance(k, str) for k in v):
        raise BundleError(f"manifest field {what} must be a JSON object")


def _check_figures(what: str, v: Any, depth: int = FIGURES_DEPTH) -> None:
    """A figure table: names -> numbers (NaN or null: nothing to measure, e.g. no task of that k) or
    nested tables, at most FIGURES_DEPTH deep."""
    _check_object(what, v)
    for k, x in v.items():
        if isinstance(x, dict) and depth > 1:
            _check_figures(f"{what}.{k}", x, depth - 1)
        elif not (x is None or _is_number(x)):
            raise BundleError(f"manifest field {what}.{k} must be a number, got {x!r:.40}")


def _check_number(what: str, v: Any) -> None:
    if not (v is None or _is_number(v)):
        raise BundleError(f"manifest field {what} must be a number, got {v!r:.40}")


def _check_int(what: str, v: Any) -> None:
    if not (v is None or (isinstance(v, int) and not isinstance(v, bool))):
        raise BundleError(f"manifest field {what} must be an integer, got {v!r:.40}")


def _check_text(what: str, v: Any, chars: int = NAME_CHARS) -> None:
    if not (v is None or (isinstance(v, str) and len(v) <= chars)):
        raise BundleError(f"manifest field {what} must be a string of at most {chars} characters, got {v!r:.40}")


class _Section:
    """Shared JSON form of a typed section: declared fields (None = absent), then `extra` verbatim."""

    extra: dict[str, Any]
    nulls: set[str]

    @classmethod
    def _known(cls) -> list[str]:
        return [f.name for f in fields(cls) if f.name not in _BOOKKEEPING]

    @classmethod
    def from_dict(cls, d: Any, where: str):
        if not isinstance(d, dict):
            raise BundleError(f"manifest field {where} must be a JSON object")
        known = set(cls._known())
        out = cls(**{k: v for k, v in d.items() if k in known},
                  extra={k: v for k, v in d.items() if k not in known},
                  nulls={k for k, v in d.items() if k in known and v is None})
        out.check()
        return out

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self._known()}
        return {k: v for k, v in out.items() if v is not None or k in self.nulls} | dict(self.extra)

    def __bool__(self) -> bool:
        """True when anything was recorded."""
        return bool(self.extra) or any(getattr(self, k) is not None for k in self._known())

    def check(self) -> None:  # pragma: no cover - every section overrides it
        raise NotImplementedError


@dataclass
class TrainingInfo(_Section):
    """What the generator was trained on; built from a checkpoint by `train/checkpoint.py`."""

    datasets: str | list[str] | None = None  # a label ("tiny-imagenet+cifar10"); older bundles: a list
    classes: list[str] | None = None  # every class of the universe, zoo order
    holdout_classes: list[str] | None = None  # classes no training p-model ever held
    vocabulary: list[str] | None = None  # every name training saw (novelty's "seen"): seen classes, a prior's names
    text_prior: dict[str, Any] | None = None  # the text -> row prior inside the denoiser (train/text_prior.py)
    zoo: dict[str, Any] | None = None  # {"count", "mean_accuracy"}
    generic_test_accuracy: float | None = None
    denoiser: dict[str, Any] | None = None  # the DenoiserConfig the checkpoint was built with
    diffusion_steps_trained: int | None = None
    text_encoder: dict[str, Any] | None = None  # {"kind", "name", "spec", "dim", ...} of the checkpoint
    trunk_quantization: str | None = None
    synonyms: dict[str, list[str]] | None = None  # WordNet synonyms per class (photo universes)
    extra: dict[str, Any] = field(default_factory=dict)
    nulls: set[str] = field(default_factory=set, repr=False, compare=False)  # fields read as an explicit null

    def check(self) -> None:
        if isinstance(self.datasets, list):
            _check_names("training.datasets", self.datasets)
        else:
            _check_text("training.datasets", self.datasets, LABEL_CHARS)
        for name in ("classes", "holdout_classes", "vocabulary"):
            if getattr(self, name) is not None:
                _check_names(f"training.{name}", getattr(self, name))
        for name in ("text_prior", "zoo", "denoiser", "text_encoder"):
            if getattr(self, name) is not None:
                _check_object(f"training.{name}", getattr(self, name))
        _check_number("training.generic_test_accuracy", self.generic_test_accuracy)
        _check_int("training.diffusion_steps_trained", self.diffusion_steps_trained)
        _check_text("training.trunk_quantization", self.trunk_quantization)
        if self.synonyms is not None:
            _check_object("training.synonyms", self.synonyms)
            for c, words in self.synonyms.items():
                _check_names(f"training.synonyms[{c!r:.40}]", words)


@dataclass
class EvaluationSummary(_Section):
    """Accuracy (%) of the checkpoint's generated models beside the fine-tuned p-models, the
    generic head's rows ("selection") and chance, on held-out tasks; `train/evaluate.py` measures it."""

    id: dict[str, Any] | None = None  # in-distribution tasks: {method: %, "n", "per_k": {k: {method: %}}}
    ood: dict[str, Any] | None = None  # tasks holding a held-out class
    ood_per_class: dict[str, Any] | None = None  # held-out class -> {method: %}
    holdout_recall: dict[str, Any] | None = None  # recall on the held-out classes' own images
    holdout_recall_per_class: dict[str, Any] | None = None
    sampler: str | None = None  # the sampler and steps the figures were measured with
    steps: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. image_prompts, baselines
    nulls: set[str] = field(default_factory=set, repr=False, compare=False)

    @classmethod
    def from_eval_json(cls, ev: Any) -> "EvaluationSummary":
        """The one builder from `train eval`'s eval.json: its summary, with the sampler and steps."""
        if not isinstance(ev, dict) or not isinstance(ev.get("summary"), dict):
            raise BundleError("an eval.json written by `tina-edge train eval` holds a `summary` object; this one does not")
        return cls.from_dict(ev["summary"] | {"sampler": ev.get("sampler"), "steps": ev.get("steps")}, "evaluation")

    def check(self) -> None:
        for name in ("id", "ood", "holdout_recall"):
            if getattr(self, name) is not None:
                _check_figures(f"evaluation.{name}", getattr(self, name))
        for name in ("ood_per_class", "holdout_recall_per_class"):
            if getattr(self, name) is not None:
                _check_figures(f"evaluation.{name}", getattr(self, name), depth=2)
        _check_text("evaluation.sampler", self.sampler)
        _check_int("evaluation.steps", self.steps)


@dataclass
class PortableInfo(_Section):
    """The optional portable files (docs/PORTABLE.md) and the starting-noise generator they assume;
    written by export/portable/generate.py (and ort_format.py), read by the runtime, `info` and the JS
    package. Empty for bundles exported before them."""

    noise: dict[str, Any] | None = None  # {"generator", "version", "dtype", "spec"}
    generate: dict[str, Any] | None = None  # {"model", "sampler", "eta", "steps", "timesteps", "inputs", "outputs"}
    template_inputs: dict[str, Any] | None = None  # {"model", "inputs"}: the template with its weights as graph inputs
    tokenizer_config: str | None = None  # tokenizer_config.json for standard tokenizer loaders
    text_encoder: dict[str, Any] | None = None  # {"quantization"}: the text encoder's portable rewrite
    ort: dict[str, Any] | None = None  # {"optimization", "required_operators", ...}: ORT-format graphs
    # {"model", "inputs", "outputs"}: the text prior cut from the denoiser (export/portable/prior_split.py);
    # when set, denoiser.model and generate.onnx read its `prior` rows, computed once per personalize;
    # "only": true when the denoiser's correction is zero (export/portable/prior_only.py): the prior alone
    prior: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    nulls: set[str] = field(default_factory=set, repr=False, compare=False)

    @property
    def generate_model(self) -> str | None:
        """generate.onnx's file name, or None without one."""
        return self.generate.get("model") if self.generate else None

    @property
    def generate_timesteps(self) -> list[int]:
        """The DDIM timesteps generate.onnx runs (descending), [] without it."""
        return list(self.generate.get("timesteps") or []) if self.generate else []

    @property
    def prior_model(self) -> str | None:
        """The prior graph's file name, or None (the denoiser computes the prior itself)."""
        return self.prior.get("model") if self.prior else None

    @property
    def prior_only(self) -> bool:
        """True when the generator is the text prior alone (portable.prior.only): personalize runs no
        denoiser step (runtime/prior_only.py); noise and seed change nothing."""
        return bool(self.prior and self.prior.get("only") is True)

    @property
    def template_inputs_model(self) -> str | None:
        return self.template_inputs.get("model") if self.template_inputs else None

    @property
    def text_encoder_quantization(self) -> str | None:
        return self.text_encoder.get("quantization") if self.text_encoder else None

    def files(self) -> list[tuple[str, str]]:
        """(field, file name) of every portable file the section names (manifest_spec.bundle_files)."""
        out = [(f"portable.{k}.model", sec["model"]) for k, sec in (("generate", self.generate),
                                                                     ("template_inputs", self.template_inputs),
                                                                     ("prior", self.prior))
               if sec and sec.get("model") is not None]
        return out + ([("portable.tokenizer_config", self.tokenizer_config)] if self.tokenizer_config is not None else [])

    def check(self) -> None:
        for name in ("noise", "generate", "template_inputs", "text_encoder", "ort", "prior"):
            if getattr(self, name) is not None:
                _check_object(f"portable.{name}", getattr(self, name))
        _check_text("portable.tokenizer_config", self.tokenizer_config)
        for name in ("generate", "template_inputs", "prior"):
            sec = getattr(self, name)
            if sec is not None and not (isinstance(sec.get("model"), str) and 0 < len(sec["model"]) <= NAME_CHARS):
                raise BundleError(f"manifest field portable.{name}.model must name a file of the bundle")
        if self.generate is not None:
            ts = self.generate.get("timesteps")
            if not (isinstance(ts, list) and 0 < len(ts) <= 1000 and all(isinstance(t, int) and not isinstance(t, bool)
                                                                       and 0 <= t < 100_000 for t in ts)):
                raise BundleError("manifest field portable.generate.timesteps must be a list of 1 to 1000 timesteps")
            if ts != sorted(set(ts), reverse=True):
                raise BundleError("manifest field portable.generate.timesteps must be distinct and descending")
            _check_int("portable.generate.steps", self.generate.get("steps"))
            if self.generate.get("steps") is not None and self.generate["steps"] != len(ts):
                raise BundleError("manifest field portable.generate.steps must equal the number of its timesteps")
            _check_number("portable.generate.eta", self.generate.get("eta"))
            for key in ("inputs", "outputs"):
                if self.generate.get(key) is not None:
                    _check_names(f"portable.generate.{key}", self.generate[key])
        for key in ("inputs", "outputs"):
            if self.prior is not None and self.prior.get(key) is not None:
                _check_names(f"portable.prior.{key}", self.prior[key])
        if self.prior is not None and not isinstance(self.prior.get("only", False), bool):
            raise BundleError("manifest field portable.prior.only must be true or false")
