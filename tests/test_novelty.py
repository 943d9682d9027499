"""The novelty report: vocabulary membership, nearest known names, confusable prompt names."""

import numpy as np

from tina_edge.runtime.novelty import novelty_report


def unit(*rows):
    a = np.array(rows, dtype=np.float32)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_known_names_nearest_for_new_ones_and_confusable_pairs():
    vocab = ["dog", "truck", "sandal"]
    V = unit([1, 0, 0], [0, 1, 0], [0, 0, 1])
    calls = []

    def vocab_emb():
        calls.append(1)
        return V

    emb = unit([1, 0, 0], [0.9, 0.3, 0], [0, 0, 1])  # "Dog", "puppy" (new, close to dog), "sandal"
    r = novelty_report(["Dog", "puppy", "sandal"], emb, vocab, vocab_emb, threshold=0.9, nearest=2)
    assert r.seen == ["Dog", "sandal"] and r.new == ["puppy"]
    (near1, c1), (near2, c2) = r.names[1].nearest
    assert (near1, near2) == ("dog", "truck") and c1 > 0.9 > c2
    assert [(a, b) for a, b, _ in r.confusable] == [("Dog", "puppy")]
    d = r.to_dict()
    assert d["nearest"] == {"puppy": [["dog", round(c1, 3)], ["truck", round(c2, 3)]]}
    assert any("puppy" in line and "nearest known names: dog" in line for line in r.lines())
    assert any("may be confused" in line for line in r.lines())
    assert calls == [1]


def test_vocabulary_is_not_encoded_when_every_name_is_known():
    def boom():
        raise AssertionError("vocabulary embeddings are not needed")

    r = novelty_report(["dog", "sandal"], unit([1, 0], [0, 1]), ["dog", "sandal"], boom)
    assert r.new == [] and r.confusable == []


def test_vocabulary_is_encoded_in_batches_close_to_one_by_one_and_keeps_the_cache(base_bundle):
    """A bundle with a wide training vocabulary (ImageNet names of the text prior: ~1,600) must not
    encode it name by name, nor evict the user's cached class names doing so."""
    from tina_edge.runtime import Personalizer

    p = Personalizer.from_bundle(base_bundle, threads=1)
    enc = p._text
    names = ["cat", "a small domestic feline", "dog", "school bus", "x", "sea-coast with rocks and a light house"]
    enc.batch_size = 4  # two batches, the second shorter: padding trimmed per batch
    before = dict(enc._cache)
    many = enc.encode_many(names)
    assert dict(enc._cache).keys() == before.keys()  # bypasses the cache
    one = np.stack([enc._encode_one(t) for t in names])
    assert many.shape == one.shape and float(np.abs(many - one).max()) < 1e-4
    assert enc.encode_many([]).shape[0] == 0
