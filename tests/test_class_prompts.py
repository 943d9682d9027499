"""Descriptions by class name: matched to the classes once (runtime/class_prompts.py), for the API and
the CLI's --describe alike; the CLI only reads its option's NAME=TEXT syntax and words the error."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from tina_edge.cli.main import main
from tina_edge.runtime import PersonalizedClassifier, Personalizer
from tina_edge.runtime.errors import PromptError, UnknownClassError


@pytest.fixture(scope="module")
def pz(base_bundle) -> Personalizer:
    return Personalizer.from_bundle(base_bundle, threads=1)


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_descriptions_by_name_equal_descriptions_by_position(pz):
    by_name = pz.personalize("dog, cat, frog", descriptions={" CAT ": "a small domestic feline"}, seed=4)
    by_pos = pz.personalize("dog, cat, frog", descriptions=[None, "a small domestic feline", None], seed=4)
    assert by_name.to_bytes() == by_pos.to_bytes()
    assert by_name.meta.texts == ["dog", "a small domestic feline", "frog"]


def test_an_unknown_class_says_which_and_among_what(pz):
    with pytest.raises(UnknownClassError) as e:
        pz.personalize("dog, cat", descriptions={"cat": "a feline", "horse": "big"})
    assert (e.value.source, e.value.name, e.value.classes) == ("descriptions", "horse", ["dog", "cat"])
    assert str(e.value) == "descriptions names 'horse', which is not one of the classes (dog, cat)"
    assert isinstance(e.value, PromptError)  # callers catching PromptError still do
    with pytest.raises(PromptError, match="the class 'cat' has two descriptions"):
        pz.personalize("dog, cat", descriptions={"cat": "a feline", "Cat": "a pet"})


def test_cli_describe_matches_like_the_api(pz, base_bundle, tmp_path):
    """Repeats of --describe for one class keep the last text; the model is the API's, byte for byte."""
    out = tmp_path / "m.onnx"
    r = run("personalize", "dog, cat, frog", "-o", out, "--bundle", base_bundle, "--seed", 4,
            "--describe", "cat=a pet", "--describe", "Cat=a small domestic feline")
    assert r.exit_code == 0, r.output
    api = pz.personalize(["dog", "cat", "frog"], descriptions={"cat": "a small domestic feline"}, seed=4)
    assert PersonalizedClassifier.load(out).to_bytes() == api.to_bytes()
    r = run("personalize", "dog, cat", "-o", tmp_path / "x.onnx", "--bundle", base_bundle, "--describe", " horse =big")
    assert r.exit_code == 2
    assert "error: --describe names 'horse', which is not one of the classes (dog, cat)" in r.stderr
    assert not (tmp_path / "x.onnx").exists()
