"""Conformance vectors of the input rules: what Python's prompt parsing, descriptions, preprocessing
policies and manifest checks make of tricky inputs, so every port refuses and accepts alike
(written into the vectors by conformance.py `write_vectors`; js/test/rules.test.mjs checks them)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

# Prompts every port must parse as runtime/prompt.py does (names, or refused). NEW_RULES marks the
# issue-20 rules (NFKC, Unicode commas, refused zero-width characters, look-alike letters): a port
# checks them only against a Python that has them (prompt_vectors records which).
PROMPTS: tuple = (
    "dog, cat", "  Dog ,cat  ,  horse ", ["dog,cat", "horse"], "Crème brûlée, E\u0301CLAIR", "dog\tbig, cat\nsmall",
    "dog\x00, cat\x1b[31m", "dog\x1ccat, bird", "Dog, dog", "dog, , cat", "", " , ", "dog,", "\u202edog, cat",
    "dog, c\u2066at", "Straße, STRASSE", "🐶, 🐱", "👨\u200d👩\u200d👧, cat", "a" * 250 + ", " + "a" * 240 + "b",
    "\u0301, cat", "\u3164, cat", "кот, собака",
)
NEW_RULE_PROMPTS: tuple = (
    "dog, cat，horse", "dog、cat", "dog﹐cat", "dog､cat", "dog, ｄｏｇ", "cat, c\u0430t", "ﬁsh, fish",
    "dog\u200b, cat", "d\u200bog, cat", "\ufeffdog, cat", "dog\u00adgie, cat", "dog, cat\u2060",
    "ΑΒΓ, abc", "\u0441\u0430\u0442, cat",
)


# More prompts, so that every rule of runtime/prompt.py is met both ways (accepted and refused):
# separators, NFKC, dropped format characters and fillers, joiners, look-alike capitals, truncation.
EXTRA_PROMPTS: tuple = (
    "\u0441\u0430\u0442, cat", "\u0422\u0430\u0442, Tat", "\u0442\u043e\u0442, tot", "\u0421\u0410\u0422, CAT",
    "\u039a\u039f\u039b\u0391, KOLA", "\u03ba\u03bf\u03bb\u03b1, kola", "c\u0430\u0430\u0430t, dog", "\u043a\u043eт\u0430, cat",
    "abc\u03b1\u03b2, dog", "d\u00f6g, dog", "\u00ebжж, e", "dog\u060ccat\u055dbird", "a\u1363b\u07f8c\u2e41d",
    "x\ua4fey\ua60dz\u1802w\u1808v", "cat\ufe10dog\ufe11bird", "\U0001f101, b", "dog\u115fgie, cat",
    "dog\u3164, cat", "\u3164, cat", "\u2800\u2800, cat", "do\u034fg, cat", "dog\u180e, cat", "d\u00adog, dog",
    "\u200c, cat", "\u0915\u094d\u200d\u0937, dog", "\u200ddog, cat", "dog\u200c, cat", "\u0915 \u200d\u0937, dog",
    "\U0001f468\u200d\U0001f469\u200d\U0001f467, \U0001f468\U0001f469\U0001f467", "Sea_Lion, sea\u2011lion",
    "sea\u2212lion, sea lion", "t\u2013shirt, tshirt", "x_, x", "_x_, x -", "STRASSE, stra\u00dfe",
    "\u03c3\u03bf\u03c6\u03bf\u03c2, \u03a3\u039f\u03a6\u039f\u03a3", "\u13a0\u13a1, \uab70\uab71",
    "Dog, dog\u200b", "dog, do\u200b\u200bg", "d\u200bog, cat\u200b", "\u202a\u202bdog, cat",
    "dog,\t,cat", "\x00, dog", "dog, \x00cat", "  ,  ,  ", "\u0301\u0301, dog", "x" * 201 + ", " + "x" * 200,
    "y" * 199 + " z, " + "y" * 199, ["dog", 3], ["dog", "cat\ud800"], "a," * 50_001, b"dog, cat", b"dog, \xff",
    "\u0391lpha, alpha", "\u0391\u039b\u03a6\u0391, alpha", "\u0445\u0443\u0439, xyi", "\u0458\u0430\u0455, jas",
    "\u0440\u043e\u0440, \u03c1\u03bf\u03c1", "caf\u00e9, cafe", "i\u0307, I",
    # qualifiers (issue 22): one class however spaced and cased; two senses are two classes
    "mouse (rodent), Mouse(Rodent)", "mouse (rodent), mouse (computer)", "mouse_( rodent ), mouse", "(x), x",
    "crane\uff08bird\uff09, crane", "a (b) (c), a (b)",
    # parentheses that do not pair up: a comma inside a qualifier splits it
    "mouse (rodent, small), cat", "dog, cat)", ")dog(, cat", "smile :), frown", "a ((b), c", "crane\uff08bird, dog",
)
# Names whose class key and skeleton a port must reproduce exactly (case folding, widths, separators).
KEY_NAMES: tuple = (
    "Sea_Lion", "sea-lion", "\uff53\uff45\uff41 \uff4c\uff49\uff4f\uff4e", "Stra\u00dfe", "\u1e9e", "\u039f\u0394\u039f\u03a3",
    "\u03bf\u03b4\u03bf\u03c2", "\u0130stanbul", "\u01c5", "\ufb00", "t\u2011shirt", "a\u200db", "  x__y  ", "_lead",
    "\u13a0\u13f8\uab70", "\u1f88", "Mouse(Rodent)", "mouse ( rodent )", "mouse_-_(computer)", "(x)", "x ()", "a ((b))",
    "a (b) (c)", "x( y  z )", "crane\uff08bird\uff09", "b(\u0430)", "z (\u200by)", "\u0422\u0430\u0442", "\u0442\u0430\u0442", "\u03a4\u03b1\u03c4",
    "\u0421\u0410\u0422", "\u0451\u0457", "\u2126", "\u212a", "\u00b5", "\u1c80\u1c84", "e\u0301", "dog\u00ad", "\u0345",
)

# (class names, descriptions): what class_prompts.description_texts makes of them, or its message.
DESCRIPTION_CASES: tuple = (
    (["dog", "cat"], ["a \uff46\uff4c\uff55\uff46\uff46\uff59  dog\u00ad", None]),
    (["dog", "cat"], {"Dog": "good boy", "CAT": "meow"}), (["sea lion", "cat"], {"Sea_Lion": "big"}),
    (["dog", "cat"], {"horse": "x"}), (["dog", "it's"], {"dog": "a", "DOG": "b"}),
    (["dog", "cat"], ["x\u202ey", None]), (["dog", "cat"], ["x\u200by", None]), (["dog", "cat"], ["   ", None]),
    (["dog", "cat"], ["a" * 1001, None]), (["it's", 'say "hi"'], ["\u200b", None]),
    (["dog", "cat"], ["\ufb01ne \uff57\uff49\uff44\uff45", "caf\u0065\u0301"]), (["dog", "cat"], ["\U0001f468\u200d\U0001f469", None]),
)


def _prompt_outcome(prompt) -> dict[str, Any]:
    from ...runtime.errors import PromptError
    from ...runtime.prompt import class_key, parse_classes, skeleton

    try:
        names = parse_classes(prompt)
    except PromptError as e:
        return {"error": "PromptError", "rule": getattr(e, "rule", "other"), "message": str(e)}
    return {"names": names, "keys": [class_key(n) for n in names], "skeletons": [skeleton(n) for n in names]}


def prompt_vectors() -> dict[str, Any]:
    """Python's outcome per prompt (names, class keys and skeletons; or the rule and message that refused it),
    and class_key / skeleton per name. `new_rules`: this Python implements the issue-20 rules (always, now).
    Byte prompts are written as {"bytes": base64}."""
    import base64

    from ...runtime.errors import PromptError
    from ...runtime.prompt import CONFORMANCE_PROMPTS, class_key, parse_classes, skeleton

    try:
        new_rules = len(parse_classes("dog\uff0ccat")) == 2
    except PromptError:
        new_rules = False

    def case(p, **extra) -> dict[str, Any]:
        shown = {"bytes": base64.b64encode(p).decode("ascii")} if isinstance(p, bytes) else {"prompt": p}
        return {**shown, **extra, **_prompt_outcome(p)}

    cases = [case(p) for p in PROMPTS]
    cases += [case(p, new_rule=True) for p in NEW_RULE_PROMPTS + CONFORMANCE_PROMPTS + EXTRA_PROMPTS]
    from ...runtime.prompt import split_qualifier

    keys = [{"name": n, "key": class_key(n), "skeleton": skeleton(n), "split": list(split_qualifier(n))}
            for n in KEY_NAMES]
    return {"new_rules": new_rules, "cases": cases, "keys": keys, "descriptions": _description_vectors(),
            "classes_files": _classes_file_vectors()}


# Texts of `personalize --classes-file` files: line breaks as str.splitlines reads them, comments, blank lines,
# commas inside a line, and a bad line reported by its number.
CLASSES_FILES: tuple = (
    "dog\ncat\n", "# pets\n\ndog\r\ncat\r\n  \n#x, y\nhorse", "dog, cat\nhorse", "dog\rcat\u2028bird\x0bfish\x85ant",
    "  # only a comment\n\n", "", "dog\ncat\ndog", "dog\n\u202ecat\n", "dog\nmouse (rodent, small)\ncat",
    "\ufeffdog\ncat", "dog\n\n\n", "  dog  \n\tcat",
)


def _classes_file_vectors() -> list[dict[str, Any]]:
    from ...runtime.errors import PromptError
    from ...runtime.prompt import classes_from_lines

    out = []
    for text in CLASSES_FILES:
        try:
            out.append({"text": text, "names": classes_from_lines(text)})
        except PromptError as e:
            out.append({"text": text, "error": "PromptError", "rule": getattr(e, "rule", "other"), "message": str(e)})
    return out


def _description_vectors() -> list[dict[str, Any]]:
    from ...runtime.class_prompts import description_texts
    from ...runtime.errors import TinaEdgeError

    out = []
    for names, descs in DESCRIPTION_CASES:
        try:
            out.append({"names": names, "descriptions": descs, "texts": description_texts(names, descs)})
        except TinaEdgeError as e:
            out.append({"names": names, "descriptions": descs, "error": str(e)})
    return out


# Preprocessing policies (a manifest's template.input.preprocess, a model's `preprocess` metadata):
# JSON texts, since some are not JSON a port's parser reads (NaN). Each: Python's PreprocessSpec.from_dict
# accepts (the normalised dict) or refuses (ValueError).
PREPROCESS_POLICIES: tuple = (
    '{"size": 128}', '{"size": 8}', '{"size": 1024}', '{"size": 7}', '{"size": 1025}', '{"size": 0}', '{"size": -8}',
    '{"size": 128.0}', '{"size": "128"}', '{"size": true}', '{"size": null}', '{}', '[]', '128', 'null', '"size"',
    '{"size": 64, "crop_fraction": 0.875}', '{"size": 64, "crop_fraction": 0.5}', '{"size": 64, "crop_fraction": 1}',
    '{"size": 64, "crop_fraction": 0.49}', '{"size": 64, "crop_fraction": 1.01}', '{"size": 64, "crop_fraction": 0}',
    '{"size": 64, "crop_fraction": NaN}', '{"size": 64, "crop_fraction": Infinity}', '{"size": 64, "crop_fraction": true}',
    '{"size": 64, "crop_fraction": "0.9"}', '{"size": 64, "crop_fraction": null}', '{"size": NaN}',
    '{"size": 64, "interpolation": "bicubic"}', '{"size": 64, "interpolation": "nearest"}',
    '{"size": 64, "interpolation": "lanczos"}', '{"size": 64, "interpolation": "BILINEAR"}', '{"size": 64, "interpolation": 2}',
    '{"size": 64, "resize": "shorter_side", "crop": "center", "alpha": "white", "grey": "replicate"}',
    '{"size": 64, "resize": "stretch"}', '{"size": 64, "crop": "top"}', '{"size": 64, "alpha": "black"}',
    '{"size": 64, "grey": "luma"}', '{"size": 64, "mean": [0.5, 0.5, 0.5]}', '{"size": 64, "Size": 64}',
    '{"size": 1e2}', '{"size": 64, "crop_fraction": 7e-1}',
)
# Image sizes (width, height) the runtime accepts or refuses before preparing them (images.check_size on an
# in-memory image: empty, or a strip longer than MAX_ASPECT:1).
IMAGE_SIZES: tuple = ((50, 1), (51, 1), (1, 50), (1, 51), (100, 2), (101, 2), (3, 150), (3, 151), (1, 1), (0, 4),
                      (4, 0), (1000, 20), (1001, 20))


def preprocess_rule_vectors() -> dict[str, Any]:
    """Which preprocessing policies and image sizes Python accepts (and what it makes of a policy)."""
    from ...runtime.errors import ImageError
    from ...runtime.images import check_size
    from ...runtime.preprocess import PreprocessSpec

    policies = []
    for text in PREPROCESS_POLICIES:
        try:
            policies.append({"json": text, "spec": PreprocessSpec.from_dict(json.loads(text)).to_dict()})
        except (ValueError, TypeError) as e:
            policies.append({"json": text, "error": "ValueError", "message": str(e)})
    sizes = []
    for w, h in IMAGE_SIZES:
        try:
            check_size(w, h, "the image", decoded=False)
            sizes.append({"width": w, "height": h, "ok": True})
        except ImageError as e:
            sizes.append({"width": w, "height": h, "ok": False, "message": str(e)})
    return {"policies": policies, "sizes": sizes}


def manifest_vectors(bundle: str | os.PathLike) -> dict[str, Any]:
    """Manifest bytes and what Python makes of them: the id a content hashes to (compute_bundle_id,
    on tricky JSON: floats, big integers, escapes, non-ASCII keys) and accept/refuse of the id check."""
    import base64

    from ...runtime.errors import BundleError
    from ...runtime.manifest import compute_bundle_id, parse_manifest

    raw = (Path(bundle) / "manifest.json").read_bytes()
    d = json.loads(raw)
    b64 = lambda b: base64.b64encode(b).decode("ascii")  # noqa: E731
    ids = []
    tricky = [r'{"a": 1.0, "b": 1e-05, "c": 1E16, "d": -0.0, "e": 100, "f": 1.50, "g": 123456789012345678901234567890}',
              r'{"z": "\u00fcn\u00efcode \ud83d\ude00 \u2028", "\u00e9": [1, 2.5e-7, true, null, false], "A": {"y": 1, "x": "\\\"/\b\f\n\r\t\u0001\u007f"}}',
              r'{"k": 1, "k": 2, "bundle_id": "x", "\ud83d\ude00": 0, "\uffff": 1, "n": 1e400, "m": 5e-324}',
              r'{"big": 1.7976931348623157e308, "small": 0.1, "int": -0, "e": 2E+3}']
    for text in tricky:
        ids.append({"json": b64(text.encode("utf-8")), "id": compute_bundle_id(json.loads(text))})
    ids.append({"json": b64(raw), "id": compute_bundle_id(d)})

    def outcome(data: bytes) -> dict[str, Any]:
        try:
            m, ident = parse_manifest(data)
        except BundleError:
            return {"error": "BundleError"}
        return {"id": ident} if m.bundle_id == ident else {"error": "BundleError", "stale_id": True}

    edited = dict(d, producer=str(d.get("producer", "")) + " (edited)")
    fixed = dict(edited, bundle_id=compute_bundle_id(edited))
    checks = [raw, json.dumps(edited).encode(), json.dumps(fixed).encode(), json.dumps(fixed, ensure_ascii=False, indent=1).encode(),
              b"\xef\xbb\xbf" + raw, raw[:-20], b"\xff" + raw[1:], b"[" * 2000 + b"]" * 2000]
    return {"ids": ids, "checks": [{"data": b64(c), **outcome(c)} for c in checks]}
