"""Personalization tasks: ordered class lists (prompt order = classifier row order).

The universe is split into seen classes (used by training p-models) and held-out classes (OOD).
Some combinations of seen classes are kept out of the zoo for in-distribution (ID) tests.
"""

from __future__ import annotations

from tina_edge.runtime.atomic import atomic_write_json
import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class TaskSplit:
    classes: list[str]  # the whole universe, in dataset label order
    holdout: list[str]
    k_min: int
    k_max: int
    zoo: list[list[str]] = field(default_factory=list)
    id_test: list[list[str]] = field(default_factory=list)
    ood_test: list[list[str]] = field(default_factory=list)
    seed: int = 0

    @property
    def seen(self) -> list[str]:
        return [c for c in self.classes if c not in self.holdout]

    def save(self, path: str | Path) -> None:
        atomic_write_json(path, asdict(self), indent=1)

    @classmethod
    def load(cls, path: str | Path) -> "TaskSplit":
        return cls(**json.loads(Path(path).read_text()))


def check_classes(names: list[str], universe: list[str]) -> None:
    unknown = [n for n in names if n not in universe]
    if unknown:
        raise ValueError(f"unknown class names {unknown}; the universe has: {', '.join(universe)}")


def make_task_split(classes: list[str], holdout: list[str], *, n_zoo: int = 1000, n_id: int = 45,
                    n_ood_per_class: int = 9, k_min: int = 2, k_max: int = 10, seed: int = 0) -> TaskSplit:
    """Sample zoo tasks, held-out ID combinations and OOD tasks (each OOD task has one holdout class).

    k is uniform in k_min..k_max; an ID test task's class *set* never appears in the zoo.
    """
    check_classes(holdout, classes)
    seen = [c for c in classes if c not in holdout]
    if not 2 <= k_min <= k_max <= len(seen):
        raise ValueError(f"need 2 <= k_min <= k_max <= {len(seen)} seen classes, got {k_min}..{k_max}")
    rng = random.Random(seed)
    ks = list(range(k_min, k_max + 1))
    id_test, id_sets = [], set()
    while len(id_test) < n_id:
        k = ks[len(id_test) % len(ks)]  # every k covered evenly
        t = rng.sample(seen, k)
        if frozenset(t) not in id_sets:
            id_sets.add(frozenset(t))
            id_test.append(t)
    zoo = []
    while len(zoo) < n_zoo:
        t = rng.sample(seen, rng.choice(ks))
        if frozenset(t) not in id_sets:
            zoo.append(t)
    ood = []
    for h in holdout:
        for i in range(n_ood_per_class):
            k = ks[i % len(ks)]
            t = rng.sample(seen, k - 1)
            t.insert(rng.randrange(k), h)
            ood.append(t)
    return TaskSplit(classes=list(classes), holdout=list(holdout), k_min=k_min, k_max=k_max,
                     zoo=zoo, id_test=id_test, ood_test=ood, seed=seed)
