"""Prompt parsing: every bad input of the issue list, and the ones that must work."""

from __future__ import annotations

import pytest

from tina_edge.runtime.errors import PromptError
from tina_edge.runtime.prompt import MAX_NAME_CHARS, check_class_count, class_key, parse_classes

GOOD = [
    ("dog, cat", ["dog", "cat"]),
    (["dog", "cat"], ["dog", "cat"]),
    (["dog,cat", "horse"], ["dog", "cat", "horse"]),
    ("  golden   retriever ,\tcat\n", ["golden retriever", "cat"]),
    ("do\x00g, c\x1bat\x7f", ["dog", "cat"]),  # control characters dropped
    ("line\nbreak, tab\there", ["line break", "tab here"]),  # whitespace controls become spaces
    ("cafe\u0301, tea", ["caf\u00e9", "tea"]),  # NFC
    ("犬, кошка, 🐴, chat 🐈", ["犬", "кошка", "🐴", "chat 🐈"]),  # mixed scripts and emoji work
    ("👩\u200d🚀, dog", ["👩\u200d🚀", "dog"]),  # ZWJ emoji sequences are kept (category Cf, not Cc)
    ("Dog, CAT", ["Dog", "CAT"]),  # case is kept in labels
    ("mouse (rodent), a ((b)), crane\uff08bird\uff09", ["mouse (rodent)", "a ((b))", "crane(bird)"]),  # parentheses pair up
]


@pytest.mark.parametrize("prompt,want", GOOD)
def test_good_prompts(prompt, want):
    assert parse_classes(prompt) == want


def test_very_long_names_are_truncated():
    names = parse_classes("a" * 1000 + ", cat")
    assert names == ["a" * MAX_NAME_CHARS, "cat"]
    names = parse_classes(["x" * 150 + " " + "y" * 100, "dog"])
    assert len(names[0]) == MAX_NAME_CHARS and names[0].startswith("x" * 150 + " y")


BAD = [
    ("", "the prompt is empty"),
    ("   \t\n ", "the prompt is empty"),
    (" , ,", "the prompt is empty"),
    ([], "the prompt is empty"),
    ("\x00\x01", "the prompt is empty"),
    ("dog,,cat", "class name 2 of 3 is empty"),
    ("dog, cat,", "class name 3 of 3 is empty"),
    (", dog, cat", "class name 1 of 3 is empty"),
    (["dog", ""], "class name 2 of 2 is empty"),
    ("dog, cat, dog", 'the class "dog" is named twice; name each class once'),
    ("dog, Dog", 'the class "dog" is named twice (as "dog" and "Dog"; case and spacing are ignored)'),
    ("golden retriever, Golden  Retriever", '"golden retriever" and "Golden Retriever"'),
    ("DOG, dog\t", '"DOG" and "dog"'),
    ("Straße, strasse", '"Straße" and "strasse"'),  # casefold
    ("caf\u00e9, cafe\u0301", "named twice"),  # NFC equal
    ("a" * 300 + "x, " + "a" * 300 + "y", "named twice"),  # equal after truncation
    ("dog\udcff, cat", "not valid UTF-8"),  # undecodable argv bytes (surrogateescape)
    (["dog", "c\udc80t"], "not valid UTF-8"),
    (b"dog, \xffcat", "not valid UTF-8"),
    (["dog", 3], "must be a string, got int"),
    (42, "must be a string or a list of strings"),
    # a comma inside a qualifier splits it: refused, not two odd classes "mouse (rodent" and "small)"
    ("mouse (rodent, small), cat", 'class name 1 of 3 ("mouse (rodent") has unbalanced parentheses; a comma always separates'),
    ("dog, cat)", 'class name 2 of 2 ("cat)") has unbalanced parentheses'),
    (")dog(, cat", "unbalanced parentheses"),
]


@pytest.mark.parametrize("prompt,msg", BAD)
def test_bad_prompts(prompt, msg):
    with pytest.raises(PromptError) as e:
        parse_classes(prompt)
    assert msg in str(e.value)
    assert "\n" not in str(e.value)


def test_class_count():
    check_class_count(["a", "b"], 4)
    check_class_count(["a", "b", "c", "d"], 4)
    with pytest.raises(PromptError, match=r'only 1 class \("dog"\); this bundle allows 2 to 4'):
        check_class_count(parse_classes("dog"), 4)
    with pytest.raises(PromptError, match="has 5 classes but this bundle allows 2 to 4"):
        check_class_count(parse_classes("a, b, c, d, e"), 4)
    with pytest.raises(PromptError, match="no classes"):
        check_class_count([], 10)


def test_class_key():
    assert class_key(" Golden\tRetriever ") == class_key("golden retriever")
    assert class_key("Straße") == class_key("STRASSE")
    assert class_key("dog") != class_key("dogs")
