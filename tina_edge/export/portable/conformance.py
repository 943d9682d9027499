"""Conformance vectors: what the Python runtime computes for fixed inputs, for other ports to match.

`npm test` (js/) reads them; a Kotlin or Swift port would too. For a bundle with portable files:
the noise stream for a few seeds, then per case (prompt, seed, optional descriptions) the token
ids, text embeddings, the starting noise, the generated tensors and the logits/probabilities on
fixed images. The images come from the portable generator too (byte = top 8 bits of
word(IMAGE_SEED, i)), so no image file is needed. Torch-free.

    python -m tina_edge.export.portable.conformance --bundle DIR -o vectors.json [--model-dir DIR]
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from tina_edge.runtime.contracts import CONTRACTS, IMAGE, LOGITS, input_names, output_names
from tina_edge.runtime.atomic import atomic_write_text
from ...runtime.noise import portable_normal, splitmix64_words

FORMAT = 8  # 2: + preprocess vectors; 3: + prompt and manifest vectors; 4: + novelty reports; 5: + prompt rules
# (rule, message, class keys, skeletons), preprocessing policies and image aspect limits; 6: + a 50-class case
# (grouped generation); 7: + the graph contracts; 8: + photo prompts (issue 21; js/test/prepare.mjs rebuilds older files)
IMAGE_SEED = 20240522
NOISE_SEEDS = (0, 1, 42, 2**63 - 1, 2**64 - 1)
MANY = 50  # classes of the grouped case (K_max < 50)


def fixed_images(n: int, height: int, width: int) -> np.ndarray:
    """uint8 [n, H, W, 3]: byte i = word(IMAGE_SEED, i) >> 56 (the JS tests rebuild them alike)."""
    w = splitmix64_words(IMAGE_SEED, 0, n * height * width * 3)
    return (w >> np.uint64(56)).astype(np.uint8).reshape(n, height, width, 3)


def _cases(manifest) -> list[dict[str, Any]]:
    """Prompts for this bundle: seen names, all K_max slots, unseen names, a description, and 50
    classes (more than K_max: generated in groups, runtime/groups.py)."""
    from ...runtime.groups import max_classes
    from ...runtime.prompt import class_key, parse_classes

    keys: set[str] = set()
    vocab = [v for v in manifest.vocabulary if isinstance(v, str) and not (class_key(v) in keys or keys.add(class_key(v)))]
    K = manifest.k_max
    want = max(K, MANY)
    names = vocab if len(vocab) >= want else vocab + [f"class number {i}" for i in range(want - len(vocab))]

    cases = [
        {"prompt": ", ".join(names[:3]), "seed": 3, "descriptions": None},
        {"prompt": ", ".join(names[:K]), "seed": 0, "descriptions": None},
        {"prompt": "red panda, fire truck", "seed": 2**63 - 1, "descriptions": None},
        {"prompt": ", ".join(names[:2]), "seed": 11, "descriptions": [None, "a photo of something small and furry"]},
        # accents, case, NFC, punctuation, a name longer than max_tokens (truncation keeps the end token)
        {"prompt": "Crème brûlée, E\u0301CLAIR, t-shirt/top, " + " ".join(["very"] * 30) + " long name", "seed": 5,
         "descriptions": None},
        {"prompt": ", ".join(names[:MANY]), "seed": 7, "descriptions": None},
    ]
    return [c for c in cases if len(parse_classes(c["prompt"])) <= max_classes(K)]


# (mode, width, height, preprocess spec): odd sizes, up- and downscaling, alpha, grey, both filters
PREPROCESS_CASES = (
    ("RGB", 37, 23, {"size": 16}),
    ("RGBA", 50, 31, {"size": 24, "crop_fraction": 0.875}),
    ("L", 19, 40, {"size": 16}),
    ("LA", 45, 45, {"size": 32}),
    ("RGB", 9, 13, {"size": 20}),  # upscaling
    ("RGBA", 61, 47, {"size": 24, "interpolation": "bicubic"}),
    ("RGB", 301, 200, {"size": 128}),  # a photo-like downscale to the photo bundles' size
    ("RGB", 37, 23, {"size": 16, "interpolation": "nearest"}),
    ("RGBA", 61, 47, {"size": 24, "crop_fraction": 0.6, "interpolation": "nearest"}),
    ("L", 9, 13, {"size": 20, "interpolation": "nearest"}),  # nearest upscaling
    # beyond MAX_INTERMEDIATE only the crop's region is resized (Pillow's resize(box=...)): each filter
    ("RGB", 600, 12, {"size": 256, "crop_fraction": 0.5}),
    ("RGBA", 500, 10, {"size": 256, "crop_fraction": 0.8, "interpolation": "bicubic"}),
    ("RGB", 20, 1000, {"size": 256, "crop_fraction": 0.5, "interpolation": "nearest"}),  # a 50:1 strip
    # tall photos shrunk: Pillow 13 runs the vertical pass first (the uint8 rounding between passes shows it)
    ("RGB", 45, 311, {"size": 16, "crop_fraction": 0.875, "interpolation": "bicubic"}),
    ("LA", 58, 801, {"size": 16, "crop_fraction": 0.875}),
    ("RGB", 16, 433, {"size": 256, "crop_fraction": 0.6}),  # and through the box path
)


def preprocess_vectors(bundle_spec: dict | None = None) -> list[dict[str, Any]]:
    """Fixed photos (random bytes; alpha includes 0 and 255) and what runtime.preprocess.prepare makes of them.

    Ports implement the manifest's template.input.preprocess and must reproduce these bytes."""
    import base64

    from PIL import Image

    from ...runtime.preprocess import PreprocessSpec, prepare

    cases = list(PREPROCESS_CASES)
    if bundle_spec:
        cases.append(("RGBA", 257, 190, dict(bundle_spec)))
    out = []
    rng = np.random.default_rng(IMAGE_SEED)
    for mode, w, h, spec in cases:
        c = len(mode)
        px = rng.integers(0, 256, (h, w, c), dtype=np.uint8)
        if "A" in mode:  # fully transparent and fully opaque pixels too
            px[::5, :, -1] = 0
            px[1::5, :, -1] = 255
        img = Image.frombytes(mode, (w, h), px.tobytes())
        sp = PreprocessSpec.from_dict(spec)
        got = prepare(img, sp)
        out.append({"mode": mode, "width": w, "height": h, "channels": c, "spec": sp.to_dict(),
                    "data": base64.b64encode(px.tobytes()).decode("ascii"),
                    "expected": base64.b64encode(got.tobytes()).decode("ascii"), "expected_shape": list(got.shape)})
    return out


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


NOVELTY_PROMPTS = ("dog, cat", "red panda, fire truck, dog", "puppy, dog, kitten, cat")


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
)
# Names whose class key and skeleton a port must reproduce exactly (case folding, widths, separators).
KEY_NAMES: tuple = (
    "Sea_Lion", "sea-lion", "\uff53\uff45\uff41 \uff4c\uff49\uff4f\uff4e", "Stra\u00dfe", "\u1e9e", "\u039f\u0394\u039f\u03a3",
    "\u03bf\u03b4\u03bf\u03c2", "\u0130stanbul", "\u01c5", "\ufb00", "t\u2011shirt", "a\u200db", "  x__y  ", "_lead",
    "\u13a0\u13f8\uab70", "\u1f88", "\u0422\u0430\u0442", "\u0442\u0430\u0442", "\u03a4\u03b1\u03c4",
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
    keys = [{"name": n, "key": class_key(n), "skeleton": skeleton(n)} for n in KEY_NAMES]
    return {"new_rules": new_rules, "cases": cases, "keys": keys, "descriptions": _description_vectors()}


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


PHOTO_SIZE = (60, 90)  # height, width of the fixed photos: another size than the input, so prepare resizes
PHOTO_COUNT = 8  # fixed photos (fixed_images, IMAGE_SEED); cases name them by index, a photo may repeat


def _photo_cases(names: list[str]) -> list[dict[str, Any]]:
    """Photo prompts (issue 21) on a trunk bundle: photos by index into the fixed photos."""
    a, b, c = names[:3]
    return [
        {"prompt": f"{a}, {b}, {c}", "seed": 3, "images": {a: [0, 1], b: [2, 3], c: [4, 5]}, "photos_only": False},
        {"prompt": "Rex, Bella, product 7", "seed": 0, "images": {"Rex": [0, 1], "Bella": [2, 3, 6], "product 7": [4, 5]},
         "photos_only": True},  # every class photos-only: the sampler is skipped, a cosine prototype
        {"prompt": f"{a}, {b}, {c}, Rex", "seed": 11, "images": {b: [7], "Rex": [1, 2, 3]}, "photos_only": ["Rex"],
         "descriptions": {a: "a photo of something small and furry"}},  # 1 photo: lam(n), no leave-one-out
    ]


def _photo_refusals(names: list[str]) -> list[dict[str, Any]]:
    """Bad photo requests and Python's message for each (images given as photo indices)."""
    a, b = names[:2]
    return [
        {"prompt": f"{a}, {b}", "images": {a: [0] * 21}, "photos_only": False},
        {"prompt": f"{a}, {b}", "images": {a: [0], a.upper(): [1]}, "photos_only": False},
        {"prompt": f"{a}, {b}", "images": {}, "photos_only": True},
        {"prompt": f"{a}, {b}", "images": {a: [0, 1], b: [2]}, "photos_only": [a], "descriptions": {a: "a small pet"}},
        {"prompt": f"{a}, {b}", "images": {"nothing like it": [0]}, "photos_only": False},
        {"prompt": f"{a}, {b}", "images": {a: [0]}, "photos_only": [b]},
        {"prompt": f"{a}, {b}", "images": {a: []}, "photos_only": False},
        {"prompt": f"{a}, {b}", "images": {a: [0]}, "photos_only": "yes"},
    ]


def photo_vectors(p, names: list[str], images: np.ndarray) -> dict[str, Any]:
    """Per photo case: the fused params, probabilities on `images` and metadata; per refusal its message."""
    from ...runtime.errors import TinaEdgeError

    photos = fixed_images(PHOTO_COUNT, *PHOTO_SIZE)
    pick = lambda spec: {n: [photos[j] for j in idx] for n, idx in spec.items()}  # noqa: E731
    cases = []
    for c in _photo_cases(names):
        clf = p.personalize(c["prompt"], seed=c["seed"], images=pick(c["images"]), photos_only=c["photos_only"],
                            descriptions=c.get("descriptions"))
        cases.append({**c, "seed": str(c["seed"]), "labels": clf.labels, "metadata": clf.meta.to_props(),
                      "params": {n: {"shape": list(a.shape), "data": _floats(a.reshape(-1))} for n, a in clf.params.items()},
                      "probabilities": _floats(clf.predict(images).probabilities)})
    refusals = []
    for c in _photo_refusals(names):
        try:
            p.personalize(c["prompt"], images=pick(c["images"]), photos_only=c["photos_only"], descriptions=c.get("descriptions"))
        except TinaEdgeError as e:
            refusals.append({**c, "error": str(e)})
        else:  # pragma: no cover - a refusal that stopped refusing is a bug to see
            raise AssertionError(f"photo request {c} was not refused")
    return {"seed": IMAGE_SEED, "shape": [PHOTO_COUNT, *PHOTO_SIZE], "cases": cases, "refusals": refusals}


def _floats(a: np.ndarray) -> list:
    return np.asarray(a, dtype=np.float32).astype(np.float64).tolist()  # exact float32 values


def write_vectors(bundle: str | os.PathLike, out: str | os.PathLike, *, model_dir: str | os.PathLike | None = None,
                  n_images: int = 4) -> dict[str, Any]:
    """Compute and write the vectors JSON; with model_dir also the Python CLI's model.onnx per case."""
    from ...runtime.class_prompts import description_texts
    from ...runtime.personalizer import Personalizer
    from ...runtime.portable import head_dict
    from ...runtime.prompt import parse_classes

    p = Personalizer.from_bundle(bundle, threads=1)
    m = p.manifest
    if not m.portable.generate_model:
        raise SystemExit(f"bundle {bundle} has no generate.onnx; run `tina-edge convert {bundle} -o OUT` first")
    H, W = m.template.input.height, m.template.input.width
    images = fixed_images(n_images, H, W)
    doc: dict[str, Any] = {
        "format": FORMAT, "bundle": str(Path(bundle).resolve()), "bundle_id": m.bundle_id,
        "noise": [{"seed": str(s), "values": _floats(portable_normal(s, 33))} for s in NOISE_SEEDS],
        "splitmix64_seed0": [str(int(x)) for x in splitmix64_words(0, 0, 3)],
        "images": {"seed": IMAGE_SEED, "shape": list(images.shape)},
        "preprocess": preprocess_vectors(m.template.input.preprocess),
        "prompts": prompt_vectors(),
        "preprocess_rules": preprocess_rule_vectors(),
        "manifests": manifest_vectors(bundle),
        "novelty": [{"prompt": q, "report": p.novelty(q)} for q in NOVELTY_PROMPTS],
        "contracts": {role: [input_names(role), output_names(role)] for role in CONTRACTS},  # graph value names
        "cases": [],
    }
    from ...runtime.photo_prompts import supports_photo_prompts

    if supports_photo_prompts(p):  # photo prompts through the bundle's trunk (issue 21)
        doc["photos"] = photo_vectors(p, [parse_classes(c["prompt"]) for c in _cases(m)][0], images)
    for i, c in enumerate(_cases(m)):
        names = parse_classes(c["prompt"])
        texts = description_texts(names, c["descriptions"])
        ids, _mask = p._text.tokenizer(texts)
        clf = p.personalize(c["prompt"], seed=c["seed"], descriptions=c["descriptions"])
        pred = clf.predict(images)
        logits = clf._sess().run([LOGITS], {IMAGE: images})[0]
        case = dict(c)
        case.update({
            "seed": str(c["seed"]), "labels": clf.labels, "texts": texts,
            "token_ids": [_strip_pad(row.tolist(), m.text_encoder.pad_id) for row in ids],  # without padding
            "embeddings": _floats(p.encode(texts)),
            "noise_head": _floats(portable_normal(c["seed"], m.denoiser.param_count)[:64]),
            "params": {n: {"shape": list(a.shape), "data": _floats(a.reshape(-1))} for n, a in clf.params.items()},
            "logits": _floats(logits), "probabilities": _floats(pred.probabilities),
        })
        if i == 0 and m.template.input.preprocess:  # a photo of another size through the bundle's own policy
            import base64

            ph = doc["preprocess"][-1]
            raw = np.frombuffer(base64.b64decode(ph["data"]), np.uint8).reshape(ph["height"], ph["width"], ph["channels"])
            case["photo_probabilities"] = _floats(clf.predict(raw).probabilities)
        if model_dir is not None:
            d = Path(model_dir)
            d.mkdir(parents=True, exist_ok=True)
            clf.save(d / f"case{i}.onnx", overwrite=True)
            atomic_write_text(d / f"case{i}.head.json", json.dumps(head_dict(clf)) + "\n")
            case["model"] = f"case{i}.onnx"
        doc["cases"].append(case)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(doc) + "\n")
    return doc


def _strip_pad(row: list[int], pad: int) -> list[int]:
    while len(row) > 1 and row[-1] == pad:
        row.pop()
    return row


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--model-dir", default=None, help="also write the Python models (case<i>.onnx, .head.json)")
    a = ap.parse_args(argv)
    doc = write_vectors(a.bundle, a.output, model_dir=a.model_dir)
    print(json.dumps({"output": a.output, "bundle_id": doc["bundle_id"], "cases": len(doc["cases"])}))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
