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
from .rule_vectors import manifest_vectors, preprocess_rule_vectors, prompt_vectors

FORMAT = 17  # 17: + a novelty prompt of names read as known names (reads_as); 16: photo fusion weights by known or new names; 15: + a case of typed variants of known names (runtime/spellings.py); 14: + a case of name-table names; 13: + classes-file vectors; 12: + the parentheses rule; 9: + prior rows; 10: + qualifier keys and senses (issue 22); 11: both; 2: + preprocess vectors; 3: + prompt and manifest vectors; 4: + novelty reports; 5: + prompt rules
# (rule, message, class keys, skeletons), preprocessing policies and image aspect limits; 6: + a 50-class case
# (grouped generation); 7: + the graph contracts; 8: + photo prompts (issue 21; js/test/prepare.mjs rebuilds older files);
# 9: + the prior rows of a bundle with a prior graph (portable.prior, issue 22)
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
        # names outside the vocabulary that a bundle's name table holds (runtime/name_table.py), beside a known one
        {"prompt": "narwhal, parking meter, walrus, " + names[0], "seed": 4, "descriptions": None},
        # known names as people also type them: a plural, a name run together (runtime/spellings.py)
        {"prompt": f"{names[1]}s, {names[2].replace(' ', '')}es, tshirts, sneakers", "seed": 6, "descriptions": None},
        {"prompt": ", ".join(names[:MANY]), "seed": 7, "descriptions": None},  # last: the grouped case
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


NOVELTY_PROMPTS = ("dog, cat", "red panda, fire truck, dog", "puppy, dog, kitten, cat",
                   "toad, tshirts, salientian, cats, cat")  # read as known names: reads_as, one-row pairs
# ambiguous names (issue 22): what a bundle with a senses table reads them as (runtime/senses.py)
SENSE_PROMPTS = ("mouse, cat", "mouse, keyboard, monitor", "bat, baseball, glove", "crane (machine), truck",
                 "chicken, cow, pig", "seal, walrus", "Mouse(Computer), dog", "crane, heron", "kiwi, banana, mango")


def sense_vectors(p) -> list[dict[str, Any]]:
    """Per SENSE_PROMPTS prompt: the texts Python encodes and each name's sense report (None: not ambiguous)."""
    from ...runtime.prompt import parse_classes

    out = []
    for q in SENSE_PROMPTS:
        names = parse_classes(q)
        texts, res = p._senses(names, list(names), None)
        nov = p.novelty(q)["names"]
        out.append({"prompt": q, "texts": texts, "senses": [r.to_dict() if r else None for r in res],
                    "known": [n["known"] for n in nov], "warnings": [n.get("warning") for n in nov]})
    return out


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


def prior_vectors(p, texts: list[str]) -> dict[str, Any] | None:
    """The prior graph's rows (portable.prior) for `texts` in the first class slots, None without one:
    a port runs prior.onnx on the same embeddings and feeds its rows to generate.onnx."""
    from ...runtime.conditioning import pad_to_slots
    from ...runtime.contracts import PRIOR

    if not p.manifest.portable.prior_model:
        return None
    class_emb, _mask = pad_to_slots([p.encode(texts)], p.manifest.k_max)
    rows = p._prior_rows(class_emb)[PRIOR]
    return {"texts": list(texts), "shape": list(rows.shape), "rows": _floats(rows[0, :len(texts)].reshape(-1))}


def _floats(a: np.ndarray) -> list:
    return np.asarray(a, dtype=np.float32).astype(np.float64).tolist()  # exact float32 values


def write_vectors(bundle: str | os.PathLike, out: str | os.PathLike, *, model_dir: str | os.PathLike | None = None,
                  n_images: int = 4) -> dict[str, Any]:
    """Compute and write the vectors JSON; with model_dir also the Python CLI's model.onnx per case."""
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
        "senses": sense_vectors(p),
        "contracts": {role: [input_names(role), output_names(role)] for role in CONTRACTS},  # graph value names
        "cases": [],
    }
    from ...runtime.photo_prompts import supports_photo_prompts

    if supports_photo_prompts(p):  # photo prompts through the bundle's trunk (issue 21)
        doc["photos"] = photo_vectors(p, [parse_classes(c["prompt"]) for c in _cases(m)][0], images)
    first = _cases(m)[0]
    prior = prior_vectors(p, p.encoded_texts(parse_classes(first["prompt"]), first["descriptions"]))
    if prior is not None:
        doc["prior"] = prior
    for i, c in enumerate(_cases(m)):
        names = parse_classes(c["prompt"])
        texts = p.encoded_texts(names, c["descriptions"])  # descriptions, ambiguous names in their sense
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
