"""Phrasings from WordNet: synonyms, glosses, templates; held-out names never leak into training."""

import pytest

from tina_edge.train.phrasings import WordNet, build_phrasings, clean_gloss, key

try:
    WN = WordNet()
except Exception:  # TinaEdgeError: WordNet files absent (CI without apt wordnet-base)
    WN = None
needs_wordnet = pytest.mark.skipif(WN is None, reason="WordNet 3.0 not installed (apt-get install wordnet-base)")

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck", "T-shirt/top",
         "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
HOLD = ["automobile", "cat", "Sneaker", "Pullover"]


def test_clean_gloss_keeps_the_definition_only():
    assert clean_gloss('feline mammal usually having thick soft fur and no ability to roar: domestic cats; wildcats  ') \
        == "feline mammal usually having thick soft fur and no ability to roar"
    assert clean_gloss('(usually in the plural) a garment extending from the waist; "he wore trousers"') \
        == "a garment extending from the waist"


@needs_wordnet
def test_wordnet_synonyms_glosses_and_sense_order():
    s = WN.synset("n03472535")
    assert s.words == ["gym shoe", "sneaker", "tennis shoe"]
    assert s.gloss == "a canvas shoe with a pliable rubber sole"
    assert WN.is_primary_sense("car", "n02958343") and not WN.is_primary_sense("machine", "n02958343")


@needs_wordnet
def test_held_out_names_never_reach_training_texts():
    ph = build_phrasings(NAMES, HOLD, wordnet=WN, seed=0)
    banned = {key(h) for h in HOLD} | {key(w) for h in HOLD for w in ph[h].synonyms}
    for c in NAMES:
        if c in HOLD:
            continue
        for t in ph[c].training_texts():
            assert not any(b == key(t) or f" {b} " in f" {key(t)} " for b in banned), (c, t)
        assert not set(ph[c].heldout_synonyms) & set(ph[c].synonyms)
    # the T-shirt's WordNet gloss says "pullover shirt": it names a held-out class, so it is dropped
    assert ph["T-shirt/top"].gloss is None
    assert ph["Sneaker"].gloss == "a canvas shoe with a pliable rubber sole"  # held-out classes keep theirs for tests
    assert ph["dog"].training_texts()[0] == "dog"
    held = [w for c in NAMES for w in ph[c].heldout_synonyms]
    assert held and all(WN.is_primary_sense(w, ph[c].wnid) for c in NAMES for w in ph[c].heldout_synonyms)
    assert build_phrasings(NAMES, HOLD, wordnet=WN, seed=0)["dog"] == ph["dog"]  # seeded
