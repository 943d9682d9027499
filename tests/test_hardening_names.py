"""Issue 20, cause 12: class names. Every script's comma separates classes; NFKC; one class identity
(`class_key`) for duplicates, evaluate's folders, descriptions and the CLI; look-alike letters of
another alphabet, zero-width characters and bidi marks are refused."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner
from PIL import Image

from tina_edge.cli.main import main
from tina_edge.runtime import PersonalizedClassifier, Personalizer
from tina_edge.runtime.errors import PromptError
from tina_edge.runtime.prompt import class_key, parse_classes

from cli_checks import one_error_line


def run(*args):
    return CliRunner().invoke(main, [str(a) if isinstance(a, Path) else a for a in args])


@pytest.fixture(scope="module")
def pz(base_bundle) -> Personalizer:
    return Personalizer.from_bundle(base_bundle, threads=1)


COMMAS = [
    ("dog, cat\uff0chorse", ["dog", "cat", "horse"]),  # fullwidth comma
    ("dog\u3001cat\u3001horse", ["dog", "cat", "horse"]),  # ideographic comma
    ("dog\ufe50cat\uff64horse", ["dog", "cat", "horse"]),  # small comma, halfwidth ideographic comma
    ("dog\u060c cat", ["dog", "cat"]),  # Arabic comma
    (["dog\uff0ccat", "horse"], ["dog", "cat", "horse"]),
]


@pytest.mark.parametrize("prompt,names", COMMAS, ids=[repr(p) for p, _ in COMMAS])
def test_every_scripts_comma_separates_classes(prompt, names):
    assert parse_classes(prompt) == names


def test_the_cli_makes_three_classes_of_a_fullwidth_comma(base_bundle, tmp_path):
    r = run("personalize", "dog, cat\uff0chorse", "-o", tmp_path / "m.onnx", "--bundle", base_bundle)
    assert r.exit_code == 0, r.output
    assert PersonalizedClassifier.load(tmp_path / "m.onnx").labels == ["dog", "cat", "horse"]


ONE_CLASS_TWICE = [
    "sea_lion, sea lion, dog",
    "t-shirt, t shirt",
    "T\u2010shirt, t_shirt",  # Unicode hyphen
    "dog, \uff44\uff4f\uff47",  # fullwidth letters
    "\uff24\uff2f\uff27, dog",
    "\uff34\uff0d\uff53\uff48\uff49\uff52\uff54, t shirt",  # fullwidth letters and hyphen
]


@pytest.mark.parametrize("prompt", ONE_CLASS_TWICE, ids=repr)
def test_one_class_written_two_ways_is_named_twice(prompt):
    with pytest.raises(PromptError, match="is named twice"):
        parse_classes(prompt)


def test_names_are_nfkc_normalised():
    assert parse_classes("\uff44\uff4f\uff47, cat") == ["dog", "cat"]
    assert parse_classes("\ufb01sh, dog") == ["fish", "dog"]


def test_class_key_is_the_one_identity():
    same = ["Sea_Lion", "sea lion", "sea-lion", "SEA  LION", "\uff53\uff45\uff41\uff3f\uff4c\uff49\uff4f\uff4e", "sea\u2011lion"]
    assert len({class_key(n) for n in same}) == 1
    assert class_key("sea lion") != class_key("sealion")


LOOKALIKES = [
    ("cat, c\u0430t", "mixes Cyrillic and Latin letters in one word (\u0430 U+0430 is Cyrillic)"),
    ("c\u0430t, dog", "mixes Cyrillic and Latin"),
    ("p\u03bfp, dog", "mixes Greek and Latin"),
    ("\u0440\u043e\u0440, pop", 'the classes "\u0440\u043e\u0440" and "pop" look the same'),  # all-Cyrillic "pop"
    ("\u0421\u0410\u0422, cat", "look the same"),  # capitals fold too
]


@pytest.mark.parametrize("prompt,words", LOOKALIKES, ids=[repr(p) for p, _ in LOOKALIKES])
def test_lookalike_letters_of_another_alphabet_are_refused(prompt, words):
    with pytest.raises(PromptError) as e:
        parse_classes(prompt)
    assert words in str(e.value)


GOOD = ["\u043a\u043e\u0448\u043a\u0430, cat", "\u03b2-carotene, dog", "\u72ac, \U0001f434", "caf\u00e9, tea",
        "T\u30b7\u30e3\u30c4, dog", "\u03b1 particle, \u03b2 particle"]


def test_only_confusable_mixes_and_stray_joiners_are_refused():
    """One alphabet per word still works, and so do joiners inside emoji and Persian words; a joiner
    between Latin letters, which joins nothing, is refused."""
    for prompt in GOOD:
        assert len(parse_classes(prompt)) == 2, prompt
    assert class_key("\u03b2-carotene") == class_key("\u03b2 carotene")
    assert parse_classes("\U0001f469\u200d\U0001f680, dog")[0] == "\U0001f469\u200d\U0001f680"
    assert parse_classes("\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645, dog")[0].count("\u200c") == 1
    with pytest.raises(PromptError, match="zero-width"):
        parse_classes("d\u200dog, cat")


REFUSED = [
    ("dog, do\u200bg", "zero-width characters (U+200B)"),
    ("\ufeffdog, cat", "zero-width characters (U+FEFF)"),
    ("d\u2060og, cat", "zero-width characters (U+2060)"),
    ("d\u200dog, cat", "zero-width characters (U+200D)"),  # a joiner between Latin letters joins nothing
    ("dog\u200c, cat", "zero-width characters (U+200C)"),
    ("dog\u200e, cat", "bidirectional control characters (U+200E)"),  # LRM
    ("dog, ca\u061ct", "bidirectional control characters (U+061C)"),  # Arabic letter mark
]


@pytest.mark.parametrize("prompt,words", REFUSED, ids=[repr(p) for p, _ in REFUSED])
def test_zero_width_characters_and_bidi_marks_are_refused(prompt, words, base_bundle, tmp_path):
    with pytest.raises(PromptError) as e:
        parse_classes(prompt)
    assert words in str(e.value)
    one_error_line(run("personalize", prompt, "-o", tmp_path / "m.onnx", "--bundle", base_bundle), words)
    assert not (tmp_path / "m.onnx").exists()


def test_descriptions_and_describe_match_classes_by_identity(pz, base_bundle, tmp_path):
    a = pz.personalize("sea lion, dog", descriptions={"Sea_Lion": "a large marine mammal"}, seed=0)
    b = pz.personalize("sea lion, dog", descriptions=["a large marine mammal", None], seed=0)
    assert a.to_bytes() == b.to_bytes()
    r = run("personalize", "sea lion, dog", "-o", tmp_path / "m.onnx", "--bundle", base_bundle,
            "--describe", "sea-lion=a large marine mammal")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "m.onnx").read_bytes() == a.to_bytes()


def _photos(root: Path, folders: list[str]) -> Path:
    for i, name in enumerate(folders):
        (root / name).mkdir(parents=True)
        Image.new("RGB", (8, 8), (40 * i, 90, 200)).save(root / name / "a.png")
    return root


def test_evaluate_matches_folders_by_class_identity(pz, tmp_path):
    pz.personalize("sea lion, t shirt", seed=0).save(tmp_path / "m.onnx")
    photos = _photos(tmp_path / "photos", ["Sea-Lion", "T_SHIRT"])
    r = run("evaluate", tmp_path / "m.onnx", photos, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["folders"] == {"sea lion": "Sea-Lion", "t shirt": "T_SHIRT"} and doc["n"] == 2
    assert doc["unmatched_folders"] == []


def test_evaluate_refuses_a_model_whose_labels_are_one_class(pz, tmp_path):
    """A model made elsewhere may carry labels that parse_classes refuses: scoring it would pick one at random."""
    pz.personalize("dog, cat", seed=0).save(tmp_path / "m.onnx")
    m = onnx.load(str(tmp_path / "m.onnx"))
    for p in m.metadata_props:
        if p.key == "labels":
            p.value = json.dumps(["sea_lion", "sea lion"])
    (tmp_path / "m.onnx").write_bytes(m.SerializeToString())
    photos = _photos(tmp_path / "photos", ["sea_lion", "sea lion"])
    one_error_line(run("evaluate", tmp_path / "m.onnx", photos), "'sea_lion' and 'sea lion' are one class name")


def test_prompt_rules_are_data_with_vectors_for_ports():
    from tina_edge.runtime import prompt

    assert "\uff0c" in prompt.SEPARATORS and "\u200b" in prompt.REFUSED_CHARACTERS and "\u202e" in prompt.REFUSED_CHARACTERS
    vectors = {v["prompt"]: v for v in prompt.prompt_vectors()}
    assert vectors["dog, cat\uff0chorse"]["names"] == ["dog", "cat", "horse"]
    assert vectors["sea_lion, dog"]["keys"] == ["sea lion", "dog"]
    assert {vectors[p]["error"] for p in ("sea_lion, sea lion, dog", "cat, c\u0430t", "dog, do\u200bg", "\u202egod, cat",
                                          "\u0440\u043e\u0440, pop")} == {"duplicate", "mixed-script", "zero-width",
                                                                        "bidi", "confusable"}
    json.dumps(prompt.prompt_vectors())  # plain JSON for the vectors file
