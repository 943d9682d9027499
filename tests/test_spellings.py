"""Other spellings of known names (runtime/spellings.py): the rules, their order, and what the
conditioning reads on the tiny bundle (a typed variant reads exactly as the known name; a known
name, a qualified name or an unrelated word reads exactly as before)."""

import numpy as np
import pytest

from tina_edge.runtime.manifest import read_manifest, write_manifest
from tina_edge.runtime.spellings import Spellings, joined, singulars


@pytest.mark.parametrize("key, want", [
    ("sneakers", ["sneaker"]),
    ("buses", ["bus", "buse"]),  # "-ses" -> "-s" before "-s" -> ""
    ("boxes", ["box", "boxe"]),
    ("benches", ["bench", "benche"]),
    ("women", ["woman"]),
    ("puppies", ["puppy", "puppie"]),
    ("mashed potatoes", ["mashed potatoe", "mashed potato"]),  # only the last word changes
    ("s", []),  # a suffix alone is not a plural
    ("ies", ["y", "ie"]),
    ("men", ["man"]),
    ("cat", []),
])
def test_singulars_follow_wordnet_detachments_in_order(key, want):
    assert singulars(key) == want


def test_find_rules_order_and_what_is_never_respelled():
    sp = Spellings(["sneaker", "lawn mower", "pay phone", "t shirt", "bus", "glass", "glasses"])
    assert sp.find("sneakers") == "sneaker"
    assert sp.find("lawnmower") == "lawn mower"
    assert sp.find("lawnmowers") == "lawn mower"  # joined, after the singular
    assert sp.find("payphone") == "pay phone"
    assert sp.find("tshirts") == "t shirt"
    assert sp.find("buses") == "bus"
    assert sp.find("glasses") is None  # a known name is never re-spelled (not "glass")
    assert sp.find("sneakers (shoe)") is None  # a qualified name keeps its sense
    assert sp.find("sneak") is None and sp.find("cats") is None
    # the first known name to claim a space-free form keeps it
    assert Spellings(["ice cream", "icecream x", "i cecream"]).find("icecreams") == "ice cream"
    assert joined("lawn mower") == "lawnmower"


def test_conditioning_reads_a_typed_variant_as_the_known_name(bundle):
    from tina_edge.runtime import Personalizer

    m = read_manifest(bundle)
    m.training.synonyms = {"horse": ["sea horse"]}
    write_manifest(bundle, m)
    p = Personalizer.from_bundle(bundle, threads=1)
    got = p.conditioning_texts(["Cats", "seahorses", "dogs (pet)", "ship", "catfish", "frogs"])
    want = p.encode(["cat", "sea horse", "dogs (pet)", "ship", "catfish", "frog"])
    assert np.array_equal(got, want)
    assert not np.array_equal(p.encode(["Cats"]), p.encode(["cat"]))  # the rule changed what is read
    # the classifier keeps the user's label; novelty still compares the text as typed
    clf = p.personalize("cats, dogs", steps=2)
    assert clf.labels == ["cats", "dogs"]
    assert np.array_equal(p.class_embeddings("cats, dogs"), p.class_embeddings("cat, dog"))
    assert p.novelty("cats, dog")["new"] == ["cats"]


def test_novelty_says_what_a_typed_variant_is_read_as(bundle):
    """`reads_as` names the known name the conditioning reads; two names read as one known name are
    reported as confusable at cosine 1 (they get one row); nothing else in the report changes."""
    from tina_edge.runtime import Personalizer

    p = Personalizer.from_bundle(bundle, threads=1)
    nov = p.novelty("cats, cat, dogs (pet), horse")
    by = {n["name"]: n for n in nov["names"]}
    assert by["cats"]["reads_as"] == "cat" and "warning" not in by["cats"]
    assert "reads_as" not in by["cat"] and "reads_as" not in by["dogs (pet)"] and "reads_as" not in by["horse"]
    assert ["cats", "cat", 1.0] in nov["confusable"]
    assert nov["new"] == ["cats", "dogs (pet)"]  # still not a vocabulary name: the report says both
    from tina_edge.runtime.novelty import novelty_report, reads_as_line

    assert reads_as_line("cats", "cat") in novelty_report(
        ["cats"], p.encode(["cats"]), p.manifest.vocabulary, None, reads_as=["cat"]).lines()
