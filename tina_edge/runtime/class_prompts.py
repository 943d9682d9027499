"""How each class is prompted: its name, a description, or example images, matched to the classes.

Why a module of its own: descriptions and images are given by class name ({"cat": ...}), and every
front end (the Python API, the CLI's --describe and --images) must match those names to the prompt
the same way, case and spacing ignored. This is the one place that matching happens; an unknown
name is an `UnknownClassError`, which a front end may word for its own option.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .errors import PromptError, UnknownClassError
from .prompt import MAX_DESCRIPTION_CHARS, check_text, class_key, clean_text, is_visible

Descriptions = Sequence[str | None] | Mapping[str, str] | None


def class_index(keys: dict[str, int], key: object, names: list[str], source: str) -> int:
    """The index of the class `key` names (`keys`: class_key -> index), else UnknownClassError."""
    i = keys.get(class_key(key)) if isinstance(key, str) else None
    if i is not None:
        return i
    listed = ", ".join(names)
    if source == "images":
        msg = (f"images are given for {str(key).strip()!r}, which is not one of the classes ({listed}); "
               "name every class in the prompt, in the order the labels should have")
    else:
        msg = f"descriptions names {key!r:.60}, which is not one of the classes ({listed})"
    raise UnknownClassError(msg, source=source, name=key, classes=names)


def aligned_descriptions(names: list[str], descriptions: Descriptions) -> list[str | None] | None:
    """Descriptions as one entry (text or None) per class, in prompt order.

    Accepted: None; a list/tuple aligned with the classes; or a mapping {class name: description}
    (names matched like the prompt: case and spacing ignored; unnamed classes use their name).
    Anything else (a set, a generator, a string, a wrong length, an unknown name) is a PromptError.
    """
    if descriptions is None:
        return None
    if isinstance(descriptions, Mapping):
        keys = {class_key(n): i for i, n in enumerate(names)}
        out: list[str | None] = [None] * len(names)
        for key, text in descriptions.items():
            i = class_index(keys, key, names, "descriptions")
            if out[i] is not None:
                raise PromptError(f"the class {names[i]!r} has two descriptions; give one")
            out[i] = text
        return out
    if isinstance(descriptions, (list, tuple)):
        if len(descriptions) != len(names):
            raise PromptError(f"descriptions has {len(descriptions)} entries but there are {len(names)} classes; give one "
                              "entry (or None) per class, or a mapping {class: description}")
        return list(descriptions)
    raise PromptError(f"descriptions must be a list with one entry (or None) per class, or a mapping "
                      f"{{class: description}}; got a {type(descriptions).__name__}")


def description_texts(names: list[str], descriptions: Descriptions) -> list[str]:
    """The text encoded for each class: its cleaned description, else its name (PromptError if unusable)."""
    return resolve_descriptions(names, descriptions)[0]


def resolve_descriptions(names: list[str], descriptions: Descriptions) -> tuple[list[str], list[str | None] | None]:
    """(the text encoded for each class, the descriptions aligned with the classes or None), matched once.

    The aligned list is what `match_images` takes to refuse a class given both a description and
    images, so a caller matches the description names to the classes a single time."""
    descs = aligned_descriptions(names, descriptions)
    if descs is None:
        return list(names), None
    texts = []
    for n, d in zip(names, descs):
        if d is None:
            texts.append(n)
            continue
        if not isinstance(d, str) or any("\ud800" <= ch <= "\udfff" for ch in d):
            raise PromptError(f"the description of {n!r} must be UTF-8 text")
        if len(d) > MAX_DESCRIPTION_CHARS:
            raise PromptError(f"the description of {n!r} has {len(d)} characters; at most {MAX_DESCRIPTION_CHARS} are allowed")
        d = clean_text(d)
        check_text(d, f"the description of {n!r}")
        if not d or not is_visible(d):
            raise PromptError(f"the description of {n!r} is empty; leave it out to use the class name")
        texts.append(d)
    return texts, descs


def wants_images(images: Any) -> bool:
    """Whether `images` asks for any image prompt (a non-empty mapping): only then is an image tower needed."""
    return isinstance(images, Mapping) and bool(images)


def match_images(names: list[str], images: Mapping[str, Any] | None, descriptions: Descriptions) -> dict[int, Any]:
    """{class index: its images} from the user's {class name: images}; one source per class.

    `descriptions` as the user gave them, or already aligned (`resolve_descriptions`), which is not matched again."""
    if images is None:
        return {}
    if not isinstance(images, Mapping):
        raise PromptError("images must map class names to example images, e.g. {'cat': ['cat1.jpg', 'cat2.jpg']}")
    keys = {class_key(n): i for i, n in enumerate(names)}
    descs = aligned_descriptions(names, descriptions) if images else None
    out: dict[int, Any] = {}
    for key, items in images.items():
        if not isinstance(key, str):
            raise PromptError(f"images must be keyed by class name, got {type(key).__name__} {key!r:.40}")
        i = class_index(keys, key, names, "images")
        if i in out:
            raise PromptError(f"images for the class {names[i]!r} are given twice; give them under one name")
        if descs is not None and descs[i] is not None:
            raise PromptError(f"the class {names[i]!r} has both a description and images; give one of the two")
        if items is None or (isinstance(items, (list, tuple)) and len(items) == 0):
            raise PromptError(f"no images are given for the class {names[i]!r}; give at least one or leave it out")
        out[i] = items
    return out
