"""Which sense of an ambiguous name a class is built from, read from the bundle's senses.json.

Why: the training vocabulary took ImageNet's lemmas, so `mouse` was "seen" as the computer mouse
and `bat` leaned on baseball. With a senses table (export/portable/senses.py writes it from WordNet
3.0; bundles without one behave exactly as before) a name with several visible senses resolves:
1. a qualifier the user wrote, "mouse (rodent)" (runtime/prompt.py grammar), picks the sense whose
   tag or qualifier keys hold it ("rodent", "computer", "animal"), else the first sense of the
   qualifier's kind ("crane (machine)": a machine is an artifact);
2. else the prompt's other names: each one the table knows votes for the sense it is close family
   of (a common hypernym at most 2 levels up from both: "keyboard" and the computer mouse meet at
   device), else, when it is an animal, a food or a plant, for the first sense of that kind
   ("chicken, cow, pig"); another sense wins with half the votes or more, more than the first's,
   and two votes when the first sense is firm (tagged EVIDENCE times in WordNet, or the vocabulary's);
3. else the table's first sense: the most frequent one a camera can see.
No text encoding is needed to resolve, so every port resolves alike from the same table.
A vocabulary name resolved to a sense other than the vocabulary's is encoded as "name (tag)" and is
not "seen in training"; another name is encoded as "name (tag)" when the encoder reads the bare
name closer to another of its senses (`bat` alone is closer to "bat (club)": written "bat (mammal)").
"""

from __future__ import annotations

import functools
import json
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .errors import BundleError
from .prompt import split_qualifier

FORMAT, VERSION = "tina-edge-senses", 1
KINDS = ("animal", "food", "plant", "artifact", "object", "body")
# kinds specific enough that a context name of that kind points to a name's sense of that kind
# ("chicken, cow, pig": animals); an artifact must be close family instead ("mouse, keyboard")
CONTEXT_KINDS = ("animal", "food", "plant")
EVIDENCE = 4  # a first sense tagged this often in WordNet (or the vocabulary's) needs two context names to move


@dataclass(frozen=True)
class Sense:
    wnid: str  # WordNet 3.0 synset id, "n02330245"
    tag: str  # the word written after the name: "rodent" -> "mouse (rodent)"
    kind: str  # one of KINDS (WordNet's lexicographer file of the sense)
    rank: int  # WordNet's sense number of the word
    keys: tuple[str, ...] = ()  # words a qualifier may use: other names, ancestors, the file's name
    family_text: str = ""  # hypernyms up to 2 levels up (indices into the table's nodes), parsed on first use
    count: int = 0  # WordNet's tagged count: EVIDENCE or more and a context needs two names to move off it

    @functools.cached_property
    def family(self) -> frozenset[int]:
        return _family(self.family_text)

    def text(self, word: str) -> str:
        return f"{word} ({self.tag})"


@dataclass
class Resolution:
    """The sense a class name resolved to, how, and what else it could have meant."""
    name: str
    word: str  # class key of the name without its qualifier
    sense: Sense
    alternatives: list[Sense]
    how: str  # "qualifier", "context: <other names>", "most frequent visible sense"
    vocabulary_wnid: str | None = None  # the vocabulary's sense of `word`, when the word is in it
    tagged: bool = True  # not in the vocabulary: whether the bare word reads as another sense (set by `sense_texts`)

    @property
    def seen(self) -> bool:
        return self.vocabulary_wnid == self.sense.wnid

    @property
    def text(self) -> str:
        """What the text encoder reads: the bare word for the vocabulary's own sense (or, for a word not in
        the vocabulary, when the encoder reads the bare word as this sense anyway), else "word (tag)"."""
        if self.seen or (self.vocabulary_wnid is None and not self.tagged):
            return self.word
        return self.sense.text(self.word)

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
    nouns: dict[str, tuple[str, str]] = field(default_factory=dict)  # other visible nouns: kind, family text

    @classmethod
    def from_bytes(cls, data: bytes, what: str = "senses.json") -> "SenseTable":
        """Parse and check the table (the bundle verified its size and sha256); BundleError if malformed."""
        try:
            d = json.loads(inflate_bounded(data, what).decode("utf-8"))
            if d.get("format") != FORMAT or d.get("version") != VERSION:
                raise ValueError(f"format {d.get('format')!r} version {d.get('version')!r}, expected {FORMAT!r} {VERSION}")
            words = {}
            for word, rows in d["words"].items():
                words[str(word)] = [Sense(str(w), str(t), str(k), int(r), tuple(str(q).split()), str(f), int(c))
                                    for w, t, k, r, q, f, c in rows]
                if len(words[word]) < 2:
                    raise ValueError(f"{word!r} has fewer than 2 senses")
            vocab = {str(k): str(v) for k, v in d.get("vocabulary", {}).items()}
            nouns = {}  # word -> (kind, family text): families are parsed when a prompt names the word
            for k, text in d.get("nouns", {}).items():
                for line in str(text).split("\n"):
                    w, _, f = line.partition("\t")
                    nouns[w] = (str(k), f)
            bad = {s.kind for ss in words.values() for s in ss} | {k for k, _ in nouns.values()}
            if bad - set(KINDS):
                raise ValueError(f"unknown kind {sorted(bad - set(KINDS))[0]!r}; kinds are {', '.join(KINDS)}")
        except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as e:
            raise BundleError(f"bundle file {what} is not a usable senses table: {str(e)[:200]}") from None
        return cls(words, vocab, nouns)

    def noun(self, name: str) -> tuple[str | None, frozenset[int]] | None:
        """(kind, family) of a name as a context name: for an ambiguous one no kind and the family of all
        its senses (it may be read in any of them); a plural ("keys") as its singular; None when unknown."""
        word = split_qualifier(name)[0]
        for w in (word, word[:-1] if word.endswith("s") else None, word[:-2] if word.endswith("es") else None):
            if w and w in self.words:
                return None, frozenset().union(*(s.family for s in self.words[w]))
            if w and w in self.nouns:
                kind, fam = self.nouns[w]
                return kind, _family(fam)
        return None

    def kind_of(self, name: str) -> str | None:
        """The kind of thing a name is: an ambiguous one's first sense's, else the table's (None: unknown)."""
        word = split_qualifier(name)[0]
        return self.words[word][0].kind if word in self.words else (self.noun(name) or (None,))[0]

    def resolve(self, names: Sequence[str]) -> list[Resolution | None]:
        """One Resolution per name with several visible senses (None for the others), in prompt order.
        Twice: an ambiguous context name counts first by the family of all its senses, then as the sense
        the first pass gave it (its kind: "chicken, cow, pig" are animals once resolved), falling back
        on its other senses' family; a qualified one counts as its sense alone."""
        infos = [None if i is None else (*i, frozenset()) for i in map(self.noun, names)]
        first = self._resolve(names, infos)
        infos = [i if r is None else (r.sense.kind, r.sense.family,
                                      frozenset() if split_qualifier(r.name)[1] is not None else i[1])
                 for r, i in zip(first, infos)]
        return self._resolve(names, infos)

    def _resolve(self, names: Sequence[str], infos: list) -> list[Resolution | None]:
        out: list[Resolution | None] = []
        for i, name in enumerate(names):
            word, qual = split_qualifier(name)
            senses = self.words.get(word)
            if not senses:
                out.append(None)
                continue
            others = [(n, infos[j]) for j, n in enumerate(names) if j != i and infos[j] is not None]
            trained = self.vocabulary.get(word)
            firm = senses[0].count >= EVIDENCE or senses[0].wnid == trained
            sense, how = (self._by_qualifier(qual, senses) if qual is not None
                          else self._by_context(senses, others, 2 if firm else 1))
            out.append(Resolution(name, word, sense, [s for s in senses if s is not sense], how, trained))
        return out

    def _by_qualifier(self, qual: str, senses: list[Sense]) -> tuple[Sense, str]:
        for s in senses:
            if qual == s.tag or qual in s.keys or qual == s.wnid:
                return s, "qualifier"
        k = self.words[qual][0].kind if qual in self.words else (self.noun(qual) or (None,))[0]
        for s in senses:
            if s.kind == k:
                return s, f"qualifier: {qual} is a kind of {k}"
        return senses[0], "qualifier not recognised: most frequent visible sense"

    def _by_context(self, senses: list[Sense], others: list[tuple[str, tuple]], need: int = 1) -> tuple[Sense, str]:
        """Each other name the table knows (name, (kind, family, other senses' family)) votes for the sense it is close family of,
        else (an animal, a food or a plant) for the first sense of its kind; a sense other than the first
        wins with at least half the votes of the known names, more than the first sense's, and at least
        `need` (2 when the first sense is firm: WordNet's evidence or the vocabulary's, so one name cannot
        move "dog" off the animal)."""
        votes: Counter = Counter()
        voters: dict[int, list[str]] = {}
        for o, (kind, fam, more) in others:
            hit = next((i for i, s in enumerate(senses) if s.family & fam), None)
            if hit is None and more:
                hit = next((i for i, s in enumerate(senses) if s.family & more), None)
            if hit is None and kind in CONTEXT_KINDS:
                hit = next((i for i, s in enumerate(senses) if s.kind == kind), None)
            if hit is not None:
                votes[hit] += 1
                voters.setdefault(hit, []).append(o)
        if votes:
            i, n = votes.most_common(1)[0]
            if i != 0 and 2 * n >= len(others) and n > votes[0] and n >= need:
                return senses[i], "context: " + ", ".join(voters[i])
        return senses[0], "most frequent visible sense"


MAX_TABLE_BYTES = 32 << 20  # the table once inflated (WordNet's: 1.9 MB); a gzip bomb stops here


def inflate_bounded(data: bytes, what: str, limit: int = MAX_TABLE_BYTES, kind: str = "senses table") -> bytes:
    """A bundle table's JSON: gzip (the export writes *.json.gz) inflated at most to `limit` bytes, or plain.
    The senses table and the name table (runtime/name_table.py) read their files through it."""
    if data[:2] != b"\x1f\x8b":
        return data
    import zlib

    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(data, limit + 1)
    except zlib.error as e:
        raise BundleError(f"bundle file {what} is not valid gzip: {e}") from None
    if len(out) > limit or d.unconsumed_tail:
        raise BundleError(f"bundle file {what} inflates to more than {limit} bytes; it is not a {kind}")
    return out


def _family(text: str) -> frozenset[int]:
    return frozenset(int(x) for x in str(text).split())


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
    written with its resolved sense ("mouse (rodent)"); and the resolutions (None: not ambiguous).
    `encode` is called only for an ambiguous word the vocabulary does not hold: its bare text and its
    senses' ("bat" against "bat (mammal)", "bat (club)", ...), cached like every name."""
    if table is None:
        return list(texts), [None] * len(names)
    res = table.resolve(names)
    for r in res:
        if r is not None and r.vocabulary_wnid is None:
            senses = [r.sense, *r.alternatives]
            E = _unit(encode([r.word] + [s.text(r.word) for s in senses]))
            r.tagged = int(np.argmax(E[1:] @ E[0])) != 0
    out = [r.text if r is not None and (aligned is None or aligned[i] is None) else t
           for i, (t, r) in enumerate(zip(texts, res))]
    return out, res


class PromptSenses:
    """A Personalizer's senses: its table (None: the bundle has none) and the prompts resolved so far,
    so a warm personalize of the same prompt resolves and encodes nothing again."""

    MAX_PROMPTS = 256

    def __init__(self, table: SenseTable | None):
        self.table = table
        self._done: dict[tuple, tuple[list[str], list[Resolution | None]]] = {}
        self._lock = threading.Lock()

    @classmethod
    def of(cls, table: SenseTable | None) -> "PromptSenses":
        return cls(table)

    def texts(self, names: list[str], texts: list[str], aligned: list | None,
              encode) -> tuple[list[str], list[Resolution | None]]:
        """`sense_texts`, remembered per (names, texts, which classes are described)."""
        if self.table is None:
            return list(texts), [None] * len(names)
        key = (tuple(names), tuple(texts), None if aligned is None else tuple(d is None for d in aligned))
        hit = self._done.get(key)
        if hit is None:
            hit = sense_texts(self.table, names, texts, aligned, encode)
            with self._lock:  # threads may personalize at once: evict and insert under the lock
                if len(self._done) >= self.MAX_PROMPTS:
                    self._done.pop(next(iter(self._done)), None)
                self._done[key] = hit
        return list(hit[0]), hit[1]
