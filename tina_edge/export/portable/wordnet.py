"""A small reader of the WordNet 3.0 noun database files (index.noun, data.noun, cntlist.rev).

Why not nltk: the converter runs in the light install (numpy + onnx), and the senses table
(senses.py) needs only the noun index, each synset's lexicographer file, lemmas, hypernyms and
gloss, and WordNet's sense counts, all plain text files that `apt install wordnet-base` puts in
/usr/share/wordnet. Only the build step reads them; the runtime reads the bundle's senses.json.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_DIRS = ("/usr/share/wordnet", "/usr/local/share/wordnet", "/usr/share/wordnet-3.0/dict")
# lexicographer file numbers of the noun files (WordNet's lexnames)
LEXFILES = {3: "tops", 4: "act", 5: "animal", 6: "artifact", 7: "attribute", 8: "body", 9: "cognition",
            10: "communication", 11: "event", 12: "feeling", 13: "food", 14: "group", 15: "location", 16: "motive",
            17: "object", 18: "person", 19: "phenomenon", 20: "plant", 21: "possession", 22: "process",
            23: "quantity", 24: "relation", 25: "shape", 26: "state", 27: "substance", 28: "time"}


@dataclass
class Synset:
    offset: int
    lexfile: str
    lemmas: list[str]  # as written, "_" for spaces
    hypernyms: list[int] = field(default_factory=list)  # "@" pointers (class hypernyms)
    instance_of: list[int] = field(default_factory=list)  # "@i" pointers: a named individual (Hart Crane)
    gloss: str = ""

    @property
    def wnid(self) -> str:
        return f"n{self.offset:08d}"


def find_wordnet(path: str | os.PathLike | None = None) -> Path | None:
    """The WordNet dict directory: `path`, $TINA_EDGE_WORDNET, or a usual install place; None if absent."""
    for p in ([path] if path else []) + [os.environ.get("TINA_EDGE_WORDNET")] + list(DEFAULT_DIRS):
        if p and (Path(p) / "index.noun").is_file() and (Path(p) / "data.noun").is_file():
            return Path(p)
    return None


class WordNet:
    """Nouns of one WordNet dict directory, read lazily (data.noun by byte offset)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.index: dict[str, list[int]] = {}  # lemma (lower, "_") -> synset offsets, most frequent first
        for line in (self.root / "index.noun").read_text(encoding="latin-1").splitlines():
            if not line or line.startswith(" "):
                continue
            f = line.split()
            p_cnt = int(f[3])
            n = int(f[2])
            self.index[f[0]] = [int(x) for x in f[6 + p_cnt:6 + p_cnt + n]]
        self.counts: dict[tuple[str, int], int] = {}  # (lemma, sense number) -> tagged count
        cnt = self.root / "cntlist.rev"
        if cnt.is_file():
            for line in cnt.read_text(encoding="latin-1").splitlines():
                f = line.split()
                if len(f) == 3 and "%1:" in f[0]:
                    self.counts[(f[0].split("%", 1)[0], int(f[1]))] = int(f[2])
        self._data = (self.root / "data.noun").open("rb")
        self._cache: dict[int, Synset] = {}

    def synset(self, offset: int) -> Synset:
        s = self._cache.get(offset)
        if s is None:
            self._data.seek(offset)
            s = self._cache[offset] = _parse(self._data.readline().decode("latin-1"))
        return s

    def senses(self, lemma: str) -> list[Synset]:
        """The noun senses of `lemma` (any case, spaces or "_"), in WordNet's order (most frequent first)."""
        return [self.synset(o) for o in self.index.get(lemma.strip().lower().replace(" ", "_"), [])]

    def count(self, lemma: str, sense_number: int) -> int:
        return self.counts.get((lemma.strip().lower().replace(" ", "_"), sense_number), 0)

    def ancestors(self, s: Synset, depth: int = 12) -> list[Synset]:
        """Hypernyms (instances: their class) breadth first, nearest first, each once."""
        out, seen, frontier = [], {s.offset}, list(s.hypernyms or s.instance_of)
        for _ in range(depth):
            nxt = []
            for o in frontier:
                if o not in seen:
                    seen.add(o)
                    a = self.synset(o)
                    out.append(a)
                    nxt.extend(a.hypernyms or a.instance_of)
            frontier = nxt
        return out


def _parse(line: str) -> Synset:
    data, _, gloss = line.partition(" | ")
    f = data.split()
    w_cnt = int(f[3], 16)
    lemmas = [f[4 + 2 * i] for i in range(w_cnt)]
    i = 4 + 2 * w_cnt
    p_cnt = int(f[i])
    hyper, inst = [], []
    for j in range(p_cnt):
        sym, off, pos = f[i + 1 + 4 * j], int(f[i + 2 + 4 * j]), f[i + 3 + 4 * j]
        if pos == "n" and sym == "@":
            hyper.append(off)
        elif pos == "n" and sym == "@i":
            inst.append(off)
    return Synset(int(f[0]), LEXFILES.get(int(f[1]), f[1]), [_lemma(x) for x in lemmas], hyper, inst, gloss.strip())


def _lemma(x: str) -> str:
    """A lemma as written in data.noun, without its adjective marker ("(a)", "(p)", "(ip)")."""
    return x.split("(", 1)[0] if x.endswith(")") else x
