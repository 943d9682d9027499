"""The photo-prompt conformance vectors (issue 21, FORMAT 8) that js/test/photos.test.mjs checks node against."""

from __future__ import annotations

import json

import numpy as np

from tina_edge.export.portable.conformance import FORMAT, PHOTO_COUNT, PHOTO_SIZE, fixed_images, photo_vectors
from tina_edge.runtime import Personalizer


def test_photo_vectors_are_what_personalize_computes_and_record_only_counts():
    p = Personalizer.from_bundle(threads=1)
    names = ["Egyptian cat", "reel", "volleyball"]
    H, W = p.manifest.template.input.height, p.manifest.template.input.width
    doc = photo_vectors(p, names, fixed_images(2, H, W))
    assert FORMAT >= 8 and doc["shape"] == [PHOTO_COUNT, *PHOTO_SIZE]
    photos = fixed_images(PHOTO_COUNT, *PHOTO_SIZE)
    c = doc["cases"][0]
    clf = p.personalize(c["prompt"], seed=int(c["seed"]), images={n: [photos[j] for j in idx] for n, idx in c["images"].items()})
    for n, t in c["params"].items():
        np.testing.assert_array_equal(np.asarray(t["data"], np.float32), clf.params[n].reshape(-1))
    only = doc["cases"][1]  # every class photos-only: labels only labels, counts only
    assert json.loads(only["metadata"]["texts"]) == [None, None, None]
    assert json.loads(only["metadata"]["image_prompts"]) == {"Rex": 2, "Bella": 3, "product 7": 2}
    assert json.loads(doc["cases"][2]["metadata"]["image_prompts"]) == {"reel": 1, "Rex": 3}
    errors = [r["error"] for r in doc["refusals"]]
    assert "the class 'Egyptian cat' has 21 photos; give at most 20" in errors
    assert "images for the class 'Egyptian cat' are given twice; give them under one name" in errors
    assert "photos_only needs photos: give images={class: [photos]} for those classes" in errors
    assert "the class 'Egyptian cat' is photos-only and has a description; give one of the two" in errors
    assert len(errors) == 8
