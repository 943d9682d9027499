"""A personalized model's metadata: the one class that writes and reads model.onnx `metadata_props`.

Why one class: the personalizer, the portable head and the head-only form all write these string
props, and the classifier, the head JSON and the CLI read them back; written as dicts with string
keys in each place, a key or an encoding could drift between them. `ModelMetadata.to_props` gives
the exact strings the files have always held (same keys, order and JSON encoding: old files load,
new files are byte-identical), `from_props` reads them (labels strictly, the rest tolerantly).

    labels        JSON list of the class names, in prompt order (the output columns)
    prompt        the prompt as given
    texts         JSON list: the text encoded per class (null: prompted by images)
    bundle_id     the content id of the bundle that generated the model
    sampler       JSON {"sampler", "steps", "seed", "candidates"}
    params        JSON list of the generated tensor names
    producer      "tina-edge VERSION"
    preprocess    JSON PreprocessSpec (photo bundles): how predict prepares photos of any size
    image_prompts JSON {class: number of example images} for classes prompted by images
    trunk_sha256  head-only form: the sha256 of the trunk it needs
    form          "head" for the head-only form
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import ModelFileError

MAX_LABELS_JSON = 1 << 20  # the `labels` metadata value, in characters
MAX_LABELS = 10_000
MAX_LABEL_CHARS = 1000

# every key this module owns, in the order a file holds them (after any props it does not know)
KEYS = ("labels", "prompt", "texts", "bundle_id", "sampler", "params", "producer", "preprocess", "image_prompts",
        "trunk_sha256", "form")
HEAD_FORM = "head"


@dataclass(frozen=True)
class ModelMetadata:
    """What a personalized model says about itself. None means "not recorded" (the key is absent)."""

    labels: list[str]
    prompt: str | None = None
    texts: list[str | None] | None = None
    bundle_id: str | None = None
    sampler: dict[str, Any] | None = None
    params: list[str] | None = None
    producer: str | None = None
    preprocess: dict[str, Any] | None = None
    image_prompts: dict[str, int] | None = None
    trunk_sha256: str | None = None
    form: str | None = None
    extra: dict[str, str] = field(default_factory=dict)  # props of other writers (e.g. the template's own), kept

    # ------------------------------------------------------------------ writing

    def to_props(self) -> dict[str, str]:
        """The metadata_props strings, in file order: unknown props first, then KEYS (absent: left out)."""
        enc = {
            "labels": _dumps(self.labels),
            "prompt": self.prompt,
            "texts": None if self.texts is None else _dumps(self.texts),
            "bundle_id": self.bundle_id,
            "sampler": None if self.sampler is None else json.dumps(self.sampler),
            "params": None if self.params is None else json.dumps(self.params),
            "producer": self.producer,
            "preprocess": None if self.preprocess is None else json.dumps(self.preprocess, sort_keys=True),
            "image_prompts": None if not self.image_prompts else _dumps(self.image_prompts),
            "trunk_sha256": self.trunk_sha256,
            "form": self.form,
        }
        out = {k: v for k, v in self.extra.items() if k not in enc}
        out.update((k, v) for k, v in enc.items() if v is not None)
        return out

    def as_head(self, trunk_sha256: str, params: Sequence[str]) -> "ModelMetadata":
        """The same metadata for the head-only form of the model (its tensors, the trunk it needs)."""
        return replace(self, trunk_sha256=trunk_sha256, form=HEAD_FORM, params=list(params))

    # ------------------------------------------------------------------ reading

    @classmethod
    def from_props(cls, props: Mapping[str, str], where: Path | str, *, labels: Sequence[str] | None = None
                   ) -> "ModelMetadata":
        """Parse metadata_props. `labels` given: they replace the file's (a model being built);
        else the file's `labels` must be valid (ModelFileError naming `where`). Other malformed
        values read as not recorded, except `preprocess`, without which photos cannot be prepared."""
        props = dict(props)
        got = list(labels) if labels is not None else parse_labels(props.get("labels"), where)
        pre = _loads(props.get("preprocess"), dict)
        if "preprocess" in props and pre is None:
            raise ModelFileError(f"{where}: its 'preprocess' metadata is not a JSON object; re-create the model "
                                 "with `tina-edge personalize`")
        if pre is not None:
            check_preprocess(pre, where)
        params = _loads(props.get("params"), list)
        return cls(
            labels=got,
            prompt=props.get("prompt"),
            texts=_loads(props.get("texts"), list),
            bundle_id=props.get("bundle_id"),
            sampler=_loads(props.get("sampler"), dict),
            params=[str(p) for p in params] if params is not None else None,
            producer=props.get("producer"),
            preprocess=pre,
            image_prompts=_loads(props.get("image_prompts"), dict),
            trunk_sha256=props.get("trunk_sha256"),
            form=props.get("form"),
            extra={k: v for k, v in props.items() if k not in KEYS},
        )

    @property
    def is_head(self) -> bool:
        return self.form == HEAD_FORM

    def sampler_summary(self) -> str:
        """"ddim-10 seed 3", or "?" when the sampler was not recorded."""
        s = self.sampler or {}
        try:
            return f"{s['sampler']}-{s['steps']} seed {s['seed']}"
        except KeyError:
            return "?"


def check_preprocess(pre: dict[str, Any], where: Path | str) -> None:
    """The model's photo policy, checked by the one validator (`PreprocessSpec.from_dict`) when the
    model loads, so a foreign model's bad policy is refused by `info` as by `predict`."""
    from .preprocess import PreprocessSpec

    try:
        PreprocessSpec.from_dict(pre)
    except (ValueError, TypeError) as e:
        raise ModelFileError(f"{where}: its 'preprocess' metadata is invalid ({e}); re-create the model "
                             "with `tina-edge personalize`") from None


def parse_labels(raw: str | None, where: Path | str) -> list[str]:
    """`labels` metadata: a JSON list of 2..MAX_LABELS strings, bounded in size and nesting."""
    bad = f"{where} is not a tina-edge classifier: its metadata has no valid 'labels' list"
    if raw is None:
        raise ModelFileError(bad)
    if len(raw) > MAX_LABELS_JSON:
        raise ModelFileError(f"{where}: its 'labels' metadata is {len(raw)} characters; at most {MAX_LABELS_JSON} are allowed")
    try:
        labels = json.loads(raw)
    except (ValueError, RecursionError):
        raise ModelFileError(bad) from None
    if not (isinstance(labels, list) and 2 <= len(labels) <= MAX_LABELS and all(isinstance(x, str) for x in labels)):
        raise ModelFileError(bad + f" (it must be a JSON list of 2 to {MAX_LABELS} strings)")
    if any(len(x) > MAX_LABEL_CHARS for x in labels):
        raise ModelFileError(f"{where}: a label in its metadata is longer than {MAX_LABEL_CHARS} characters")
    return labels


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _loads(raw: str | None, kind: type) -> Any:
    """The JSON value of a prop when it is of `kind` and bounded, else None."""
    if raw is None or len(raw) > MAX_LABELS_JSON:
        return None
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, kind) else None
