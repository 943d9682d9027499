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


def test_shipped_vocabulary_embeddings_are_used_and_checked(bundle):
    """A bundle that ships its vocabulary's embeddings (export writes them) is read, not re-encoded;
    a file of the wrong shape is refused with a BundleError naming it."""
    import pytest

    from tina_edge.runtime import Personalizer
    from tina_edge.runtime.errors import BundleError
    from tina_edge.runtime.manifest import read_manifest, write_manifest

    m = read_manifest(bundle)
    vocab = m.vocabulary
    assert len(vocab) >= 2, "the fixture bundle lists a training vocabulary"
    D = m.text_encoder.embedding_dim
    fake = np.zeros((len(vocab), D), np.float16)
    fake[:, 0] = 1.0  # every known name points one way ...
    fake[1] = 0.0
    fake[1, 1] = 1.0  # ... except vocab[1]
    np.save(bundle / "vocabulary_embeddings.npy", fake, allow_pickle=False)
    m.text_encoder.vocabulary_embeddings = "vocabulary_embeddings.npy"
    write_manifest(bundle, m)
    p = Personalizer.from_bundle(bundle, threads=1)
    p._text.encode_many = None  # would fail if the runtime encoded the vocabulary itself
    got = p._vocabulary_embeddings()
    assert got.dtype == np.float32 and got.shape == (len(vocab), D) and got[1, 1] == 1.0
    report = p.novelty(["zzz unseen name", vocab[0]])
    assert report["names"][0]["known"] is False and len(report["names"][0]["nearest"]) >= 1

    np.save(bundle / "vocabulary_embeddings.npy", fake[:1], allow_pickle=False)
    write_manifest(bundle, m)  # consistently re-hashed, but the wrong shape: refused when the bundle loads
    with pytest.raises(BundleError, match=r"vocabulary_embeddings.npy holds float16\[1, 8\]; the manifest promises float \[6, 8\]"):
        Personalizer.from_bundle(bundle, threads=1)
