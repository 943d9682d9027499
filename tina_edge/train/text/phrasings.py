"""Many phrasings per class: WordNet synonyms, the WordNet definition (gloss), prompt templates.

Users type other words for a class ("sneaker" / "gym shoe") or describe it ("a canvas shoe with
a pliable rubber sole"). Training every class under several texts teaches the generator the
meaning rather than one string. Some synonyms of seen classes are kept out of training (seeded)
to measure unseen phrasings; held-out classes contribute nothing at all.

WordNet 3.0 is read from its own files (`apt-get install wordnet-base` -> /usr/share/wordnet;
format in wndb(5)): data.noun for synonyms and glosses, index.noun for sense order.
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass, field
from collections.abc import Callable
from typing import Any
from pathlib import Path

from tina_edge.train.workdir import WorkDir
from tina_edge.runtime.atomic import atomic_save_npz
from tina_edge.runtime.errors import InstallError

WORDNET_DIRS = ("/usr/share/wordnet", "/usr/share/wordnet/dict", "/usr/local/share/wordnet")

TEMPLATES = ("a photo of a {}", "a picture of a {}", "a close-up photo of the {}", "{}, a kind of object",
             "an image showing a {}")

# CIFAR-10 and Fashion-MNIST names have no ids of their own; their WordNet noun synsets
FALLBACK_WNIDS = {
    "airplane": "n02691156", "automobile": "n02958343", "bird": "n01503061", "cat": "n02121620",
    "deer": "n02430045", "dog": "n02084071", "frog": "n01639765", "horse": "n02374451", "ship": "n04194289",
    "truck": "n04490091", "t-shirt/top": "n03595614", "t-shirt": "n03595614", "trouser": "n04489008",
    "trousers": "n04489008", "pullover": "n04021028", "dress": "n03236735", "coat": "n03057021",
    "sandal": "n04133789", "shirt": "n04197391", "sneaker": "n03472535", "bag": "n02774152",
    "ankle boot": "n02872752",
}


def key(text: str) -> str:
    """How names are compared: case-folded, whitespace collapsed, underscores as spaces."""
    return " ".join(text.replace("_", " ").casefold().split())


@dataclass
class Synset:
    wnid: str
    words: list[str]
    gloss: str


class WordNet:
    """Noun synsets by offset, parsed lazily from data.noun; sense order from index.noun."""

    def __init__(self, root: str | Path | None = None):
        cands = [Path(root)] if root else [Path(d) for d in WORDNET_DIRS]
        for d in cands:
            if (d / "data.noun").is_file():
                self.root = d
                break
        else:
            raise InstallError("WordNet 3.0 not found: apt-get install wordnet-base (or pass its folder, "
                                f"the one holding data.noun); looked in {', '.join(map(str, cands))}")
        self._syn: dict[str, Synset] | None = None
        self._first: dict[str, str] | None = None

    def _load(self) -> None:
        syn = {}
        with open(self.root / "data.noun", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  "):  # licence header
                    continue
                head, _, gloss = line.partition(" | ")
                parts = head.split()
                n = int(parts[3], 16)
                words = [re.sub(r"\(.*\)$", "", w).replace("_", " ") for w in parts[4 : 4 + 2 * n : 2]]
                syn["n" + parts[0]] = Synset("n" + parts[0], words, clean_gloss(gloss))
        first = {}
        with open(self.root / "index.noun", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  "):
                    continue
                parts = line.split()
                p_cnt = int(parts[3])
                offsets = parts[4 + p_cnt + 2 :]
                if offsets:
                    first[key(parts[0])] = "n" + offsets[0]
        self._syn, self._first = syn, first
        self._genera = {key(w)[6:] for s in syn.values() for w in s.words if key(w).startswith("genus ")}

    def synset(self, wnid: str) -> Synset | None:
        if self._syn is None:
            self._load()
        return self._syn.get(wnid)

    def is_binomial(self, word: str) -> bool:
        """A Latin species name ("Rana catesbeiana"): its first word names a genus in WordNet.
        Kept for training, never a test phrasing (users do not type them)."""
        parts = word.split()
        if len(parts) != 2 or not parts[0][:1].isupper():
            return False
        if self._first is None:
            self._load()
        return key(parts[0]) in self._genera

    def is_primary_sense(self, word: str, wnid: str) -> bool:
        """Is this synset the word's most frequent noun sense (a fair synonym to test on)?"""
        if self._first is None:
            self._load()
        return self._first.get(key(word)) == wnid


def clean_gloss(gloss: str) -> str:
    """The definition alone: examples ("...") and text after ';' or ':' dropped."""
    g = re.sub(r"^\([^)]*\)\s*", "", gloss.strip())
    g = re.split(r';|\s"|:', g, maxsplit=1)[0]
    return g.strip().rstrip(",.; ")


@dataclass
class ClassPhrasings:
    name: str  # the label (what the zoo knows the class by)
    wnid: str | None = None
    synonyms: list[str] = field(default_factory=list)  # used in training
    heldout_synonyms: list[str] = field(default_factory=list)  # never in training: unseen phrasings
    gloss: str | None = None

    def training_texts(self, templates: tuple[str, ...] = TEMPLATES, use_gloss: bool = True) -> list[str]:
        """Name first, then synonyms, the gloss and templated names (deduplicated, order kept)."""
        texts = [self.name, *self.synonyms]
        if use_gloss and self.gloss:
            texts.append(self.gloss)
        texts += [t.format(w) for t in templates for w in (self.name, *self.synonyms[:1])]
        return list(dict.fromkeys(texts))


def build_phrasings(classes: list[str], holdout: list[str], *, wnids: dict[str, str] | None = None,
                    extra_synonyms: dict[str, list[str]] | None = None, wordnet: WordNet | None = None,
                    heldout_per_class: int = 1, seed: int = 0) -> dict[str, ClassPhrasings]:
    """Phrasings for every class; synonyms of seen classes partly held out (seeded).

    A synonym is dropped when it names another class or any phrasing of a held-out class
    (held-out names must never reach training), or when two seen classes share it. Only a
    synonym whose most frequent WordNet sense is this class may be held out for testing, so
    "machine" for car is never a test phrasing. Held-out classes keep their synonyms and gloss
    for evaluation only.
    """
    wn = wordnet or WordNet()
    wnids = {key(k): v for k, v in (wnids or {}).items()}
    extra = {k: list(v) for k, v in (extra_synonyms or {}).items()}
    out: dict[str, ClassPhrasings] = {}
    for c in classes:
        wnid = wnids.get(key(c)) or FALLBACK_WNIDS.get(key(c))
        s = wn.synset(wnid) if wnid else None
        words = list(extra.get(c, [])) + (s.words if s else [])
        syn = [w for w in dict.fromkeys(words) if key(w) != key(c)]
        out[c] = ClassPhrasings(c, wnid, syn, [], s.gloss if s else None)
    hold = set(holdout)
    banned = {key(c) for c in classes}
    hold_words = {key(h) for h in hold} | {key(w) for h in hold for w in out[h].synonyms}
    banned |= hold_words
    seen_count: dict[str, int] = {}
    for c in classes:
        if c not in hold:
            for w in out[c].synonyms:
                seen_count[key(w)] = seen_count.get(key(w), 0) + 1
    rng = random.Random(seed)
    for c in classes:
        p = out[c]
        if c in hold:
            continue
        p.synonyms = [w for w in p.synonyms if key(w) not in banned and seen_count[key(w)] == 1]
        if p.gloss and any(re.search(rf"\b{re.escape(b)}\b", key(p.gloss)) for b in hold_words):
            p.gloss = None  # a definition naming a held-out class (or a synonym of one) would leak it
        testable = [w for w in p.synonyms if p.wnid and wn.is_primary_sense(w, p.wnid) and not wn.is_binomial(w)]
        for w in rng.sample(testable, min(heldout_per_class, len(testable))):
            p.synonyms.remove(w)
            p.heldout_synonyms.append(w)
    return out


def phrasings_to_json(ph: dict[str, ClassPhrasings]) -> dict:
    return {c: asdict(p) for c, p in ph.items()}


def phrasings_from_json(d: dict) -> dict[str, ClassPhrasings]:
    return {c: ClassPhrasings(**p) for c, p in d.items()}


@dataclass
class PhrasingBank:
    """Several embedded phrasings per class, the file `train diffusion --emb-bank` reads: one writer
    (`save`) and one reader (`load`) of the .npz (numpy only, no pickles).

    bank [C, V, D] float32 (classes in the work directory's order, zero-padded), counts [C] int64,
    and the phrasings themselves (so evaluation knows which synonyms training never saw).
    """

    bank: Any  # np.ndarray [C, V, D]
    counts: Any  # np.ndarray [C]
    phrasings: dict[str, ClassPhrasings] | None = None

    @classmethod
    def encode(cls, texts_per_class: list[list[str]], encode: Callable,
               phrasings: dict[str, ClassPhrasings] | None = None) -> "PhrasingBank":
        """Embed each class's texts; V = the most texts of any class."""
        import numpy as np

        flat = [t for ts in texts_per_class for t in ts]
        emb = np.asarray(encode(flat), dtype=np.float32)
        bank = np.zeros((len(texts_per_class), max(len(ts) for ts in texts_per_class), emb.shape[1]), np.float32)
        at = 0
        for c, ts in enumerate(texts_per_class):
            bank[c, : len(ts)] = emb[at : at + len(ts)]
            at += len(ts)
        return cls(bank, np.array([len(ts) for ts in texts_per_class], dtype=np.int64), phrasings)

    def save(self, path: str | Path) -> Path:
        import json

        import numpy as np

        extra = {} if self.phrasings is None else {"phrasings": np.array(json.dumps(phrasings_to_json(self.phrasings)))}
        return atomic_save_npz(path, bank=np.asarray(self.bank, np.float32), counts=np.asarray(self.counts, np.int64), **extra)

    @classmethod
    def load(cls, path: str | Path, classes: int | None = None, dim: int | None = None) -> "PhrasingBank":
        """Read and check a bank (shapes against `classes` and `dim` when given); ValueError names the file."""
        import json

        import numpy as np

        with np.load(path, allow_pickle=False) as z:
            if not {"bank", "counts"} <= set(z.files):
                raise ValueError(f"{path} is not a phrasing bank (it needs arrays bank and counts)")
            bank, counts = z["bank"].astype(np.float32), z["counts"].astype(np.int64)
            ph = phrasings_from_json(json.loads(str(z["phrasings"]))) if "phrasings" in z.files else None
        C = classes if classes is not None else len(bank)
        if bank.ndim != 3 or bank.shape[0] != C or (dim is not None and bank.shape[2] != dim) or counts.shape != (C,):
            raise ValueError(f"{path}: bank must be [{C}, V, {dim if dim is not None else 'D'}] with counts [{C}]")
        return cls(bank, counts, ph)


def phrasing_bank(texts_per_class: list[list[str]], encode: Callable) -> tuple[Any, Any]:
    """[C, V, D] embeddings of each class's texts (zero-padded) and counts [C] as torch tensors."""
    import torch

    b = PhrasingBank.encode(texts_per_class, encode)
    return torch.from_numpy(b.bank), torch.from_numpy(b.counts)


def write_phrasing_bank(workdir: str | Path, text_encoder: str, out: str | Path | None = None, *,
                        use_gloss: bool = True, templates: tuple[str, ...] = TEMPLATES, seed: int = 0,
                        emb_cache: str | Path | None = None) -> Path:
    """Encode every seen class's training phrasings into the bank `train diffusion --emb-bank` reads.

    The .npz holds `bank` [C, V, D] (classes in classes.json order; held-out classes get their
    name only, never used since no p-model contains them), `counts` [C], and `phrasings` (this
    module's JSON, so evaluation knows which synonyms training never saw).
    """
    from tina_edge.train.text.encoders import build_text_encoder, cached_encode

    workdir = Path(workdir)
    table = WorkDir(workdir).read_json(WorkDir(workdir).classes_json)
    names = [c["name"] for c in table]
    holdout = [c["name"] for c in table if c.get("holdout")]
    wnids = {c["name"]: c["id"] for c in table if str(c.get("id", "")).startswith("n")}
    ph = build_phrasings(names, holdout, wnids=wnids, extra_synonyms={c["name"]: c.get("synonyms", []) for c in table},
                         seed=seed)
    enc = build_text_encoder(text_encoder)
    cache = emb_cache or WorkDir(workdir).emb_cache
    texts = [[c] if c in holdout else ph[c].training_texts(templates, use_gloss) for c in names]
    bank = PhrasingBank.encode(texts, lambda t: cached_encode(enc, list(t), cache), phrasings=ph)
    return bank.save(Path(out or WorkDir(workdir).phrasing_bank(enc.kind)))


def main(argv: list[str] | None = None) -> None:
    """python -m tina_edge.train.text.phrasings --workdir W --text-encoder minilm [-o bank.npz]"""
    import argparse

    p = argparse.ArgumentParser(description="Write the phrasing bank (synonyms, gloss, templates per seen class) "
                                            "for `tina-edge train diffusion --emb-bank`.")
    p.add_argument("--workdir", required=True)
    p.add_argument("--text-encoder", default="minilm")
    p.add_argument("-o", "--out", default=None)
    p.add_argument("--no-gloss", action="store_true")
    p.add_argument("--no-templates", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    out = write_phrasing_bank(a.workdir, a.text_encoder, a.out, use_gloss=not a.no_gloss,
                              templates=() if a.no_templates else TEMPLATES, seed=a.seed)
    print(out)


if __name__ == "__main__":
    main()
