"""Which sense of an ambiguous name a class is built from, read from the bundle's senses.json.

Why: the training vocabulary took ImageNet's lemmas, so `mouse` was "seen" as the computer mouse
and `bat` leaned on baseball. With a senses table (export/portable/senses.py writes it from WordNet
3.0; bundles without one behave exactly as before) a name with several visible senses resolves:
1. a qualifier the user wrote, "mouse (rodent)" (runtime/prompt.py grammar), picks the sense whose
   tag or qualifier keys hold it, else the sense whose text is closest to it in the text encoder;
2. else the prompt's other names: the sense whose text ("mouse (device)") is closest (cosine) to
   one of them wins when it beats the name-alone sense by CONTEXT_MARGIN ("mouse, keyboard, monitor");
3. else the table's first sense: the most frequent one a camera can see.
A class whose resolved sense is not the vocabulary's sense of that name is encoded as "name (tag)"
and is not "seen in training"; the vocabulary's own sense is encoded as the bare name, as trained.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .errors import BundleError
from .prompt import class_key, split_qualifier

FORMAT, VERSION = "tina-edge-senses", 1
# how much closer (cosine) a sense's text must be to another prompt name than the name-alone sense's
# text is, for the context to switch senses (measured on tests/data/ambiguous_words.json: benchmarks/notes/senses.md)
CONTEXT_MARGIN = 0.05


@dataclass(frozen=True)
class Sense:
    wnid: str  # WordNet 3.0 synset id, "n02330245"
    tag: str  # the word written after the name: "rodent" -> "mouse (rodent)"
    lexfile: str  # WordNet lexicographer file: animal, artifact, food, ...
    rank: int  # WordNet's sense number of the word
    keys: tuple[str, ...] = ()  # words a qualifier may use: other names, ancestors, the file's name

    def text(self, word: str) -> str:
        return f"{word} ({self.tag})"


@dataclass
class Resolution:
    """The sense a class name resolved to, how, and what else it could have meant."""
    name: str
    word: str  # class key of the name without its qualifier
    sense: Sense
    alternatives: list[Sense]
    how: str  # "qualifier", "context: <other name>", "most frequent visible sense"
    vocabulary_wnid: str | None = None  # the vocabulary's sense of `word`, when the word is in it

    @property
    def seen(self) -> bool:
        return self.vocabulary_wnid == self.sense.wnid

    @property
    def text(self) -> str:
        """What the text encoder reads: the bare word for the vocabulary's own sense, else "word (tag)"."""
        return self.word if self.seen else self.sense.text(self.word)

    def to_dict(self) -> dict:
        return {"sense": self.sense.text(self.word), "wnid": self.sense.wnid, "how": self.how, "encoded_as": self.text,
                "alternatives": [{"sense": s.text(self.word), "wnid": s.wnid} for s in self.alternatives],
                "choose": self.choose()}

    def choose(self) -> str:
        """How to pick another sense: a qualifier, or a description."""
        alts = " or ".join(f'"{s.text(self.word)}"' for s in self.alternatives[:3])
        return f"for another sense write {alts} in the prompt, or describe the class (descriptions)"

    def line(self) -> str:
        return f"'{self.name}' is read as {self.sense.text(self.word)} ({self.how}); {self.choose()}"


@dataclass
class SenseTable:
    words: dict[str, list[Sense]]
    vocabulary: dict[str, str] = field(default_factory=dict)  # class key -> wnid of the vocabulary's sense

    @classmethod
    def from_bytes(cls, data: bytes, what: str = "senses.json") -> "SenseTable":
        """Parse and check the table (the bundle verified its size and sha256); BundleError if malformed."""
        try:
            d = json.loads(data.decode("utf-8"))
            if d.get("format") != FORMAT or d.get("version") != VERSION:
                raise ValueError(f"format {d.get('format')!r} version {d.get('version')!r}, expected {FORMAT!r} {VERSION}")
            words = {}
            for word, rows in d["words"].items():
                words[str(word)] = [Sense(str(w), str(t), str(lf), int(r), tuple(str(k).split()))
                                    for w, t, lf, r, k in rows]
                if len(words[word]) < 2:
                    raise ValueError(f"{word!r} has fewer than 2 senses")
            vocab = {str(k): str(v) for k, v in d.get("vocabulary", {}).items()}
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as e:
            raise BundleError(f"bundle file {what} is not a usable senses table: {str(e)[:200]}") from None
        return cls(words, vocab)

    def resolve(self, names: Sequence[str], encode: Callable[[list[str]], np.ndarray]) -> list[Resolution | None]:
        """One Resolution per name with several visible senses (None for the others), in prompt order.
        `encode` (the bundle's text encoder, cached) is called only when a context or a qualifier needs it."""
        out: list[Resolution | None] = []
        for i, name in enumerate(names):
            word, qual = split_qualifier(name)
            senses = self.words.get(word)
            if not senses:
                out.append(None)
                continue
            others = [n for j, n in enumerate(names) if j != i]
            sense, how = (self._by_qualifier(word, qual, senses, encode) if qual is not None
                          else self._by_context(word, senses, others, encode))
            out.append(Resolution(name, word, sense, [s for s in senses if s is not sense], how,
                                  self.vocabulary.get(word)))
        return out

    @staticmethod
    def _by_qualifier(word: str, qual: str, senses: list[Sense], encode) -> tuple[Sense, str]:
        for s in senses:
            if qual == s.tag or qual in s.keys or qual == s.wnid:
                return s, "qualifier"
        q, S = _unit(encode([qual])), _unit(encode([s.text(word) for s in senses]))
        return senses[int(np.argmax(S @ q[0]))], "qualifier, closest meaning"

    @staticmethod
    def _by_context(word: str, senses: list[Sense], others: list[str], encode) -> tuple[Sense, str]:
        if not others:
            return senses[0], "most frequent visible sense"
        S, O = _unit(encode([s.text(word) for s in senses])), _unit(encode(others))
        sim = S @ O.T  # [senses, others]
        best = sim.max(axis=1)
        j = int(np.argmax(best))
        if j != 0 and best[j] - best[0] >= CONTEXT_MARGIN:
            return senses[j], f"context: {others[int(np.argmax(sim[j]))]}"
        return senses[0], "most frequent visible sense"


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def load_senses(bundle, manifest) -> SenseTable | None:
    """The bundle's senses table, or None for a bundle without one (names are read as before)."""
    from .manifest_spec import LIMITS

    name = manifest.text_encoder.senses
    if not name:
        return None
    data = bundle.data(name)
    if len(data) > LIMITS["senses.bytes"][1]:
        raise BundleError(f"bundle file {name} has {len(data)} bytes; at most {LIMITS['senses.bytes'][1]} are read")
    return SenseTable.from_bytes(data, name)


def sense_texts(table: SenseTable | None, names: list[str], texts: list[str], aligned: list | None,
                encode) -> tuple[list[str], list[Resolution | None]]:
    """The texts to encode with each described class's description kept and each ambiguous name
    written with its resolved sense ("mouse (rodent)"); and the resolutions (None: not ambiguous)."""
    if table is None:
        return list(texts), [None] * len(names)
    res = table.resolve(names, encode)
    out = [r.text if r is not None and (aligned is None or aligned[i] is None) else t
           for i, (t, r) in enumerate(zip(texts, res))]
    return out, res
