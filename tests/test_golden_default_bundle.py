"""The default bundle's outputs are bit-identical to the saved vectors: embeddings, generated
parameters on every sampler path, model bytes, predictions and the novelty report. Saved before the
train/ and runtime refactors (issue 19) and again with the default bundle of issue 22 (prior graph,
prior alone, float16 storage, static padding, everyday keys, senses). Regenerate only when a new
default bundle is committed."""

import hashlib
import json

import numpy as np
import pytest

from tests.golden.make_default_bundle_vectors import OUT, compute


@pytest.fixture(scope="module")
def saved():
    with np.load(OUT, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def now():
    return compute()


def test_the_same_vectors_are_computed(saved, now):
    assert sorted(saved) == sorted(now)


@pytest.mark.parametrize("key", sorted(np.load(OUT, allow_pickle=False).files))
def test_each_vector_is_bit_identical(saved, now, key):
    a, b = saved[key], now[key]
    assert a.dtype == b.dtype and a.shape == b.shape, key
    assert a.tobytes() == b.tobytes(), f"{key}: max |diff| {np.max(np.abs(a.astype(np.float64) - b)) if a.size else 0}"


def test_model_bytes_hash_matches_a_fresh_hash(now):
    # the sha256 vectors are real hashes of the bytes (a guard against a vector that cannot fail)
    from tina_edge.runtime import Personalizer

    clf = Personalizer.from_bundle(threads=1).personalize("goldfish, school bus, sneaker", seed=0)
    assert hashlib.sha256(clf.to_bytes()).digest() == now["ddim_default/model_sha256"].tobytes()
    assert json.loads(now["novelty_json"].tobytes())
