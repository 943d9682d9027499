"""The bundle's word-sense table (senses.json), built from WordNet 3.0 without torch.

Why: the training vocabulary took ImageNet's lemmas, so an everyday word can be a class in a rare
sense (`mouse` is ImageNet's computer mouse). The runtime needs, for every noun with several senses
a camera can see, those senses in the order a name alone should take them, a short tag to write the
sense with ("mouse (rodent)": what is encoded, and what a user may type), the words a qualifier may
use, and which sense the vocabulary's entry is. It reads them from this file (runtime/senses.py),
never WordNet itself.

Visible senses: WordNet nouns of the lexicographer files of things a photo shows (VISIBLE: animals,
artifacts, foods, plants, natural objects, body parts) and the organism tops ("plant, flora").
Persons are left out (a pupil or a pitcher, as a role, is not a look), as are named individuals
(Hart Crane) and proper-name senses (the ship Monitor). The order for a name alone (`_order`):
1. WordNet's tagged frequency where it has evidence (a count of at least EVIDENCE): `mouse` the
   rodent (14) before the device (0), `tie` the necktie (5) before the tie beam (1);
2. senses whose own name is the word (the synset's first lemma, lower case) before senses where
   it is a secondary synonym (`bulb` is the plant part before the light bulb, whose name is
   "light bulb");
3. else the sense this bundle's vocabulary was trained on (`monitor` the display, `ram` the sheep);
4. else organisms, then foods, plants, artifacts, natural objects, body parts (LEX_PRIORITY):
   artifacts are often named after animals (crane, mouse), rarely the other way round;
5. else WordNet's order.
"""

from __future__ import annotations

import functools
import gzip
import json
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path

from ...runtime.atomic import atomic_write_bytes
from ...runtime.prompt import class_key
from .wordnet import Synset, WordNet, find_wordnet

SENSES = "senses.json.gz"  # gzip of the JSON table (1.9 MB -> ~0.4 MB)
FORMAT = "tina-edge-senses"
VERSION = 1
VISIBLE = ("animal", "food", "plant", "artifact", "object", "body")
LEX_PRIORITY = {"animal": 0, "food": 1, "plant": 2, "tops": 2, "artifact": 3, "object": 4, "body": 5}
EVIDENCE = 4  # tagged occurrences in WordNet's corpus that count as evidence of the more frequent sense
ORGANISM = 4  # offset of organism.n.01 (n00004475): tops senses under it are visible
MAX_KEYS = 8
NEAR = 2  # levels of hypernyms that make two nouns close family (context; measured in benchmarks/notes/senses.md)
KEY_DEPTH = 3  # ancestors whose names a qualifier may use ("crane (bird)": bird is 2 levels up)
# everyday category words a tag prefers to a technical hypernym ("bat (animal)", not "bat (placental)")
CATEGORY_WORDS = ("poultry", "meat", "seafood", "rodent", "bird", "fish", "insect", "snake", "lizard", "reptile", "dog", "cat", "mammal",
                  "animal", "fruit", "vegetable", "tree", "flower", "plant", "drink", "food", "dish", "garment",
                  "shoe", "furniture", "vehicle", "boat", "aircraft", "weapon", "tool", "container", "musical instrument",
                  "machine", "device", "building", "structure", "toy", "fabric", "body part")


def visible(wn: WordNet, s: Synset) -> bool:
    """A sense a photo can show: a VISIBLE lexicographer file, or an organism top ("plant, flora")."""
    if s.instance_of:
        return False
    if s.lexfile in VISIBLE:
        return True
    return s.lexfile == "tops" and any(a.offset == 4475 for a in wn.ancestors(s))


def kind(wn: WordNet, s: Synset) -> str:
    """The kind of thing a visible sense is: its lexicographer file, the organism tops as plant or animal."""
    if s.lexfile != "tops":
        return s.lexfile
    return "plant" if s.offset == 17222 or any(a.offset == 17222 for a in wn.ancestors(s)) else "animal"


def _primary(word: str, s: Synset) -> bool:
    """The sense's own name is the word (its first lemma, as a common noun)."""
    first = s.lemmas[0]
    return first == first.lower() and class_key(first.replace("_", " ")) == word


def _tag(wn: WordNet, s: Synset) -> str:
    """The nearest everyday category above the sense, else its direct hypernym's name."""
    anc = wn.ancestors(s, depth=8)
    for a in anc:
        for lemma in a.lemmas[:1]:
            if lemma.replace("_", " ").lower() in CATEGORY_WORDS:
                return lemma.replace("_", " ").lower()
    return anc[0].lemmas[0].replace("_", " ").lower() if anc else s.lexfile


def _keys(wn: WordNet, word: str, s: Synset) -> list[str]:
    """Words a qualifier may use for the sense: its other names, its ancestors' names, its file's name."""
    out: dict[str, None] = {}
    for lemma in s.lemmas:
        k = class_key(lemma.replace("_", " "))
        out[k] = None
        for part in k.split():
            if part != word:
                out[part] = None
    for a in wn.ancestors(s, depth=KEY_DEPTH):
        out[class_key(a.lemmas[0].replace("_", " "))] = None
    out[kind(wn, s)] = None
    out.pop(word, None)
    return list(out)[:MAX_KEYS]


def _order(word: str, senses: list[tuple[int, Synset, int]], vocab_wnids: set[str]) -> list[tuple[int, Synset, int]]:
    """(sense number, synset, count) in the order a name alone takes them (the module's rule)."""
    def key(item):
        no, s, count = item
        return (-(count if count >= EVIDENCE else 0), not _primary(word, s), s.wnid not in vocab_wnids,
                LEX_PRIORITY.get(s.lexfile, 9), no)
    return sorted(senses, key=key)


def word_senses(wn: WordNet, word: str, vocab_wnids: set[str] = frozenset()) -> list[dict]:
    """The visible senses of `word`, ordered for a name alone, with distinct tags."""
    key = class_key(word)
    items = [(i + 1, s, wn.count(word, i + 1)) for i, s in enumerate(wn.senses(word))]
    items = _order(key, [it for it in items if visible(wn, it[1])], set(vocab_wnids))
    out, used = [], set()
    for no, s, count in items:
        tag = _tag(wn, s)
        if tag in used or tag == key:  # two senses under one category: the sense's own other name, else its parent
            alt = [l.replace("_", " ").lower() for l in s.lemmas if class_key(l.replace("_", " ")) != key]
            anc = wn.ancestors(s, depth=1)
            tag = next((t for t in alt + [a.lemmas[0].replace("_", " ").lower() for a in anc] if t not in used), s.wnid)
        used.add(tag)
        out.append({"wnid": s.wnid, "tag": tag, "kind": kind(wn, s), "rank": no, "count": count,
                    "keys": _keys(wn, key, s), "gloss": s.gloss.split(";")[0][:120]})
    return out


def imagenet_wnids() -> set[str]:
    """The ImageNet-1k synsets (Tiny-ImageNet's 200 are among them): what the vocabulary's names were."""
    text = resources.files(__package__).joinpath("imagenet_wnids.txt").read_text(encoding="ascii")
    return {line.strip() for line in text.splitlines() if line.strip()}


def vocabulary_synsets(wn: WordNet, vocabulary: Sequence[str], known: set[str]) -> dict[str, str]:
    """class_key -> wnid of every vocabulary name: its ImageNet synset where the name is one's lemma
    (the first lemma first), else the name's first visible sense by `_order` (CIFAR-10/Fashion-MNIST)."""
    out: dict[str, str] = {}
    for name in vocabulary:
        word = name.split("/", 1)[0]  # "T-shirt/top"
        synsets = wn.senses(word)
        hits = [s for s in synsets if s.wnid in known]
        hits.sort(key=lambda s: class_key(s.lemmas[0].replace("_", " ")) != class_key(word))
        if hits:
            out[class_key(name)] = hits[0].wnid
        else:
            ordered = word_senses(wn, word)
            if ordered:
                out[class_key(name)] = ordered[0]["wnid"]
    return out


def near(wn: WordNet, s: Synset) -> list[int]:
    """The synset's hypernyms up to NEAR levels up (its close family: "keyboard" and the computer
    mouse meet at device, the mouse's grandparent), as offsets."""
    out: dict[int, None] = {}
    frontier = [s]
    for _ in range(NEAR):
        frontier = [wn.synset(h) for x in frontier for h in (x.hypernyms or x.instance_of)]
        out.update((x.offset, None) for x in frontier)
    return list(out)


def build_senses(wn: WordNet, vocabulary: Sequence[str], words: Iterable[str] | None = None) -> dict:
    """The senses table: every noun with two or more visible senses (or only `words`), the vocabulary's
    synsets of those names, and the kind and close family of every other visible common noun (what a
    context name is)."""
    vocab = vocabulary_synsets(wn, vocabulary, imagenet_wnids())
    vocab_wnids = set(vocab.values())
    nodes: dict[int, int] = {}  # offset -> index into "nodes"

    def family(x: Synset) -> str:
        return " ".join(str(nodes.setdefault(o, len(nodes))) for o in near(wn, x))

    table: dict[str, list] = {}
    nouns: dict[str, list[str]] = {}
    for lemma in (wn.index if words is None else [w.lower().replace(" ", "_") for w in words]):
        if any(ch.isdigit() for ch in lemma):
            continue
        word = lemma.replace("_", " ")
        offsets = wn.index.get(lemma, ())
        if len(offsets) == 1:  # one sense: only its kind and family matter (fast path: 82 000 such nouns)
            x = wn.synset(offsets[0])
            if words is None and visible(wn, x) and _common(wn, lemma, x.wnid):
                nouns.setdefault(kind(wn, x), []).append(f"{class_key(word)}\t{family(x)}")
            continue
        senses = word_senses(wn, word, vocab_wnids)
        if len(senses) >= 2:
            table[class_key(word)] = [[x["wnid"], x["tag"], x["kind"], x["rank"], " ".join(x["keys"]),
                                       family(wn.synset(int(x["wnid"][1:]))), x["count"]] for x in senses]
        elif senses and words is None and _common(wn, lemma, senses[0]["wnid"]):
            nouns.setdefault(senses[0]["kind"], []).append(f"{class_key(word)}\t{family(wn.synset(int(senses[0]['wnid'][1:])))}")
    return {"format": FORMAT, "version": VERSION, "source": "WordNet 3.0",
            "fields": ["wnid", "tag", "kind", "wordnet_sense_number", "qualifier_keys", "family", "tagged_count"],
            "words": table, "vocabulary": {k: v for k, v in sorted(vocab.items()) if k in table},
            "nouns": {k: "\n".join(sorted(v)) for k, v in sorted(nouns.items())},
            "nodes": [f"n{o:08d}" for o in nodes]}


def _common(wn: WordNet, lemma: str, wnid: str) -> bool:
    """The word is written in lower case in its sense (a common noun, not a genus or a brand)."""
    return any(lem == lem.lower() and lem.lower() == lemma for lem in wn.synset(int(wnid[1:])).lemmas)


def write_senses(bundle_dir: str | Path, vocabulary: Sequence[str], wordnet: str | Path | None = None) -> str | None:
    """Write senses.json.gz into the bundle (None, nothing written, when WordNet is not installed).
    gzip with mtime 0: the same table gives the same bytes, so the bundle id is reproducible."""
    root = find_wordnet(wordnet)
    if root is None:
        return None
    atomic_write_bytes(Path(bundle_dir) / SENSES, _table_bytes(str(root), tuple(vocabulary)), overwrite=True)
    return SENSES


@functools.lru_cache(maxsize=4)
def _table_bytes(root: str, vocabulary: tuple[str, ...]) -> bytes:
    """The gzipped table, built once per process for a vocabulary (a build reads WordNet for ~10 s)."""
    table = build_senses(WordNet(root), vocabulary)
    data = json.dumps(table, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return gzip.compress(data, compresslevel=9, mtime=0)


def measure(table, cases: dict) -> dict:
    """How often `table` (a runtime SenseTable) resolves the words of `cases` (tests/data/ambiguous_words.json)
    to the expected sense, alone and with their context names; the misses, for the report."""
    from ...runtime.prompt import parse_classes

    alone, ctx, misses = [], [], []
    for e in cases["words"]:
        r = table.resolve([e["word"]])[0]
        got = r.sense.wnid if r else None
        alone.append(got == e["alone"])
        if got != e["alone"]:
            misses.append({"prompt": e["word"], "expected": e["alone"], "got": got, "as": r.sense.text(r.word) if r else None})
        for c in e.get("contexts", []):
            names = parse_classes([e["word"], c["others"]])
            r = table.resolve(names)[0]
            got = r.sense.wnid if r else None
            ctx.append(got == c["expected"])
            if got != c["expected"]:
                misses.append({"prompt": ", ".join(names), "expected": c["expected"], "got": got,
                               "as": r.sense.text(r.word) if r else None})
    return {"alone": sum(alone) / len(alone), "alone_n": len(alone), "context": sum(ctx) / max(len(ctx), 1),
            "context_n": len(ctx), "misses": misses}
