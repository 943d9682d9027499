"""The work directory's layout: every file a stage writes or reads, named once, and its universe.

    workdir.json          which universe the directory belongs to ("photos" | "small"), recorded by
                          the first stage that runs; the CLI picks each universe's stage from it
    universe.json         photos: the universe spec and preprocessing (`train features`)
    classes.json          photos: every class with its WordNet names and the holdout flag
    features/             photos: trunk feature caches ({split}_{size}.f16.npy + labels + done)
    features_{split}.npy  small: cached trunk features of a head template
    generic.safetensors   the generic model            tasks.json   zoo / ID-test / OOD-test tasks
    zoo/                  p-models, index.json, recipe.json
    emb_cache/            cached text embeddings       tina.safetensors   the Tina checkpoint
    eval/                 eval.json, report.md, plots

Torch-free (the CLI reads it before any training code is imported).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tina_edge.runtime.atomic import atomic_write_json
from tina_edge.runtime.errors import WorkDirError

UNIVERSES = ("photos", "small")
RECORD = "workdir.json"


@dataclass(frozen=True)
class WorkDir:
    root: Path

    def __init__(self, root: str | Path):
        object.__setattr__(self, "root", Path(root))

    # ---------------------------------------------------------------- files
    universe_json = property(lambda self: self.root / "universe.json")
    classes_json = property(lambda self: self.root / "classes.json")
    readme = property(lambda self: self.root / "README.txt")
    generic = property(lambda self: self.root / "generic.safetensors")
    tasks = property(lambda self: self.root / "tasks.json")
    zoo = property(lambda self: self.root / "zoo")
    recipe = property(lambda self: self.root / "zoo" / "recipe.json")
    emb_cache = property(lambda self: self.root / "emb_cache")
    eval_dir = property(lambda self: self.root / "eval")
    eval_json = property(lambda self: self.root / "eval" / "eval.json")
    features_dir = property(lambda self: self.root / "features")

    def checkpoint(self, name: str = "tina.safetensors") -> Path:
        return self.root / name

    def photo_features(self, split: str, size: int) -> Path:
        """Prefix of a photo split's feature cache (`.f16.npy`, `.labels.npy`, `.done.npy`, `.json`)."""
        return self.features_dir / f"{split}_{size}"

    def small_features(self, split: str) -> Path:
        return self.root / f"features_{split}.npy"

    def phrasing_bank(self, encoder_kind: str) -> Path:
        return self.root / f"phrasing_bank_{encoder_kind}.npz"

    # ---------------------------------------------------------------- JSON files
    def read_json(self, path: Path):
        if not path.is_file():
            raise WorkDirError(f"{path} does not exist; run the stage that writes it first (tina-edge train --help)")
        return json.loads(path.read_text())

    def classes(self) -> list[dict] | None:
        """classes.json (photo universe), or None for a work directory without one."""
        return self.read_json(self.classes_json) if self.classes_json.is_file() else None

    def universe_info(self) -> dict:
        return self.read_json(self.universe_json)

    # ---------------------------------------------------------------- the recorded universe
    def universe(self) -> str | None:
        """"photos" or "small" as recorded by the first stage; None for a directory no stage has used.

        Work directories made before the record existed are read by what their first stage wrote
        (universe.json: photos; generic.safetensors: small).
        """
        record = self.root / RECORD
        if record.is_file():
            kind = self.read_json(record).get("universe")
            if kind not in UNIVERSES:
                raise WorkDirError(f"{record} records an unknown universe {kind!r}; expected one of {', '.join(UNIVERSES)}")
            return kind
        if self.universe_json.is_file():
            return "photos"
        if self.generic.is_file():
            return "small"
        return None

    def record_universe(self, kind: str) -> None:
        """Record `kind` on first use; refuse to mix universes in one directory."""
        if kind not in UNIVERSES:
            raise ValueError(f"unknown universe {kind!r}")
        have = self.universe()
        if have is not None and have != kind:
            raise WorkDirError(f"{self.root} holds the {have} universe; use another --workdir for the {kind} universe")
        self.root.mkdir(parents=True, exist_ok=True)
        if not (self.root / RECORD).is_file():
            atomic_write_json(self.root / RECORD, {"universe": kind}, indent=1)
