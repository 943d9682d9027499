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
