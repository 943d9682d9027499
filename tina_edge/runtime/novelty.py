"""The honest novelty report: which prompt names the generator was trained on, and which it guesses.

For every name: whether it is in the bundle's training vocabulary; if not, its nearest known
names with their text-embedding cosine (what the generator will lean on). For the prompt as a
whole: pairs of names whose embeddings are so close that their generated classes are likely
to be confused (measured on the first bundle: cat~dog 0.65 and automobile~truck 0.69 under
MiniLM were exactly the pairs that collapsed). Numpy only, like the rest of the runtime.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from .prompt import class_key

_OPTIONAL = ("sense", "warning", "reads_as")  # issue-22 fields, written only when set (reports of other names keep their bytes)
CONFUSABLE_COSINE = 0.6  # at or above: warn that two prompt names may be confused
NEAREST = 3


@dataclass
class NameNovelty:
    name: str
    known: bool  # in the training vocabulary (case-insensitive)
    nearest: list[tuple[str, float]] = field(default_factory=list)  # known names, cosine; new names only
    sense: dict | None = None  # the sense an ambiguous name was read in, its alternatives, how to choose (senses.py)
    warning: str | None = None  # nearest known names far, or of another kind: what to do
    reads_as: str | None = None  # the known name the conditioning reads instead (a WordNet synonym, another spelling)


@dataclass
class NoveltyReport:
    names: list[NameNovelty]
    confusable: list[tuple[str, str, float]]  # prompt name pairs at or above `threshold`
    threshold: float

    @property
    def seen(self) -> list[str]:
        return [n.name for n in self.names if n.known]

    @property
    def new(self) -> list[str]:
        return [n.name for n in self.names if not n.known]

    def to_dict(self) -> dict:
        """JSON-ready; keeps the "seen"/"new" lists earlier callers read."""
        return {"seen": self.seen, "new": self.new,
                "nearest": {n.name: [[m, round(s, 3)] for m, s in n.nearest] for n in self.names if not n.known},
                "confusable": [[a, b, round(s, 3)] for a, b, s in self.confusable], "threshold": self.threshold,
                "names": [{k: v for k, v in asdict(n).items() if v is not None or k not in _OPTIONAL} for n in self.names]}

    def lines(self) -> list[str]:
        """One human line per new name and per confusable pair."""
        out = []
        for n in self.names:
            if n.sense:
                out.append(f"'{n.name}' is read as {n.sense['sense']} ({n.sense['how']}); {n.sense['choose']}")
            if not n.known:
                near = ", ".join(f"{m} ({s:.2f})" for m, s in n.nearest) or "none"
                out.append(f"'{n.name}' is not in the training vocabulary; nearest known names: {near}")
            if n.reads_as:
                out.append(reads_as_line(n.name, n.reads_as))
            if n.warning:
                out.append(f"'{n.name}': {n.warning}")
        for a, b, s in self.confusable:
            out.append(f"'{a}' and '{b}' are close in meaning (cosine {s:.2f}): their classes may be confused")
        return out


FAR_COSINE = 0.5  # below: the nearest known name is far; the generator guesses


def reads_as_line(name: str, known: str) -> str:
    """The line for a name the conditioning reads as a known name (the CLI prints it too)."""
    return f"'{name}' is read as '{known}', a name the bundle knows (a WordNet synonym or another spelling of it)"


def far_warning(nearest: list[tuple[str, float]]) -> str | None:
    """Item 5 (issue 22): say when a new name's nearest known names are far, and what to do."""
    if nearest and nearest[0][1] < FAR_COSINE:
        return (f"its nearest known names are far (best cosine {nearest[0][1]:.2f} < {FAR_COSINE}): the classifier is "
                "a guess; describe the class in words the bundle knows (descriptions), add example photos, or "
                "qualify the name, e.g. \"bat (animal)\"")
    return None


def kind_warning(own: str | None, nearest: list[tuple[str, float]], kinds: list[str | None]) -> str | None:
    """Item 5 (issue 22): a new name whose nearest known names are all of another kind of thing."""
    known = [k for k in kinds if k]
    if own is None or not known or own in known:
        return None
    names = ", ".join(m for (m, _), k in zip(nearest, kinds) if k)
    return (f"it is a kind of {own} but its nearest known names ({names}) are {' / '.join(dict.fromkeys(known))}: the "
            "generator leans on the wrong kind of thing; describe the class (descriptions), add example photos, or "
            "write the name with its sense, e.g. \"bat (animal)\"")


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def novelty_report(names: Sequence[str], emb: np.ndarray, vocabulary: Sequence[str],
                   vocab_emb: Callable[[], np.ndarray] | np.ndarray | None, *,
                   threshold: float = CONFUSABLE_COSINE, nearest: int = NEAREST,
                   senses: Sequence | None = None, kind_of: Callable[[str], str | None] | None = None,
                   reads_as: Sequence[str | None] | None = None) -> NoveltyReport:
    """Report for prompt `names` with embeddings `emb` [k, D] (what personalize encodes).

    `vocab_emb` (array or a callable, evaluated only when some name is new) embeds `vocabulary`.
    `senses`: one runtime/senses.py Resolution (or None) per name: an ambiguous name is "seen" only
    in the vocabulary's own sense ("mouse" read as the rodent is new: the vocabulary's mouse is the device).
    `kind_of` (the senses table's: animal, food, plant, artifact, ...) lets a new name whose nearest known
    names are all of another kind be flagged (an animal whose nearest names are tools).
    """
    vocab = [v for v in vocabulary if isinstance(v, str)]
    keys = {class_key(v) for v in vocab}
    e = _unit(np.asarray(emb, dtype=np.float32))
    senses = list(senses) if senses is not None else [None] * len(names)
    reads_as = list(reads_as) if reads_as is not None else [None] * len(names)
    items = [NameNovelty(n, class_key(n) in keys if r is None else (r.word in keys and r.seen),
                         sense=r.to_dict() if r is not None else None, reads_as=a)
             for n, r, a in zip(names, senses, reads_as)]
    if vocab and vocab_emb is not None and any(not i.known for i in items):
        V = _unit(np.asarray(vocab_emb() if callable(vocab_emb) else vocab_emb, dtype=np.float32))
        for i, item in enumerate(items):
            if not item.known:
                sims = V @ e[i]
                top = np.argsort(-sims)[:nearest]
                item.nearest = [(vocab[j], float(sims[j])) for j in top]
                own = senses[i].sense.kind if senses[i] is not None else (kind_of(item.name) if kind_of else None)
                kinds = [kind_of(m) for m, _ in item.nearest] if kind_of else []
                if item.reads_as is None:
                    item.warning = far_warning(item.nearest) or kind_warning(own, item.nearest, kinds)
    sim = e @ e.T
    # two names read as one known name get one row: as confusable as it gets (cosine 1)
    same = [class_key(a if a is not None else n) for a, n in zip(reads_as, names)]
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            if same[a] == same[b] and (reads_as[a] is not None or reads_as[b] is not None):
                sim[a, b] = 1.0
    pairs = [(names[a], names[b], float(sim[a, b])) for a in range(len(names)) for b in range(a + 1, len(names))
             if sim[a, b] >= threshold]
    return NoveltyReport(items, sorted(pairs, key=lambda p: -p[2]), float(threshold))
