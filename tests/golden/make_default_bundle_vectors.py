"""Write the default bundle's reference outputs (issue 19: "bit-identical before and after").

Run once, before a refactor moves anything, and commit the .npz it writes:

    PYTHONPATH=$PWD python tests/golden/make_default_bundle_vectors.py

`tests/test_golden_default_bundle.py` recomputes every vector through the public API and compares
bytes: text embeddings, generated parameters for each sampler path, model bytes (sha256) and the
probabilities of fixed synthetic photos. Torch-free.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "default_bundle_outputs.npz"

# (name, classes, keyword arguments of personalize, use_generate)
CASES = [
    ("ddim_default", "goldfish, school bus, sneaker", {"seed": 0}, False),
    ("ddim_generate", "goldfish, school bus, sneaker", {"seed": 0}, True),
    ("ddim_7_steps", ["tabby cat", "golden retriever", "lemon", "pizza"], {"seed": 3, "steps": 7}, False),
    ("ddpm_12_steps", "dog, cat", {"seed": 11, "sampler": "ddpm", "steps": 12}, False),
    ("candidates_3", "dog, cat, horse", {"seed": 5, "candidates": 3}, False),
    ("descriptions", "goldfish, school bus",
     {"seed": 1, "descriptions": {"school bus": "a yellow bus for children"}}, False),
    ("new_names_20", ", ".join(f"thing{i}" for i in range(18)) + ", zebra, oboe", {"seed": 2**40}, False),
    ("name_table", "narwhal, parking meter, goldfish", {"seed": 1}, False),  # two names the bundle's name table holds
]
TEXTS = ["goldfish", "a small domestic feline", "ÉCOLE bus", "mouse", ""]


def photos() -> np.ndarray:
    """Six fixed uint8 photos of mixed sizes, resized by the classifier's own preprocessing."""
    rng = np.random.default_rng(1234)
    return [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for h, w in
            [(128, 128), (64, 64), (300, 200), (97, 311), (128, 128), (40, 500)]]


def compute(bundle: str | Path | None = None) -> dict[str, np.ndarray]:
    """The vectors of `bundle` (None: the embedded default bundle)."""
    from tina_edge.runtime import Personalizer

    out: dict[str, np.ndarray] = {}
    plain = Personalizer.from_bundle(bundle, threads=1)
    gen = Personalizer.from_bundle(bundle, threads=1, use_generate=True)
    out["texts/embeddings"] = plain.encode(TEXTS)
    for name, classes, kw, use_gen in CASES:
        clf = (gen if use_gen else plain).personalize(classes, **kw)
        for tname, arr in clf.params.items():
            out[f"{name}/params/{tname}"] = np.asarray(arr)
        out[f"{name}/model_sha256"] = np.frombuffer(hashlib.sha256(clf.to_bytes()).digest(), np.uint8)
        out[f"{name}/probabilities"] = clf.predict(photos()).probabilities
    nov = plain.novelty("goldfish, mouse, thing0, dog, puppy")
    out["novelty_json"] = np.frombuffer(json.dumps(nov, sort_keys=True).encode(), np.uint8)
    return out


if __name__ == "__main__":
    vectors = compute()
    np.savez_compressed(OUT, **vectors)
    print(f"wrote {OUT} ({len(vectors)} arrays)", file=sys.stderr)
