"""A personalized classifier writes its model.onnx on first use (issue 22: a warm personalize in a
few ms; copying the 13 MB template was ~2.4 ms of it). The model it writes is the one an eager fill
would write, and concurrent first uses build it once."""

import threading

import numpy as np

from tina_edge.runtime import Personalizer
from tina_edge.runtime.classifier import PersonalizedClassifier
from tina_edge.runtime.template import fill_template


def test_the_model_is_written_on_first_use_and_is_the_eager_fill():
    p = Personalizer.from_bundle(threads=1)
    clf = p.personalize("goldfish, lemon, pizza", seed=3)
    assert clf._model_proto is None  # nothing written yet: params, labels and metadata are there
    assert clf.params["fc.weight"].shape == (3, 1280) and clf.labels == ["goldfish", "lemon", "pizza"]
    assert clf.input_size == (128, 128) and clf.meta.labels == clf.labels
    eager = fill_template(p._template, clf.params, 3, clf.metadata)
    assert clf.to_bytes() == eager.SerializeToString(deterministic=True)
    assert PersonalizedClassifier(eager, clf.labels).meta == clf.meta  # the same metadata either way


def test_concurrent_first_uses_build_the_model_once():
    p = Personalizer.from_bundle(threads=1)
    calls = []
    params = p.personalize("goldfish, lemon", seed=0).params

    def make():
        calls.append(1)
        return fill_template(p._template, params, 2, {})

    clf = PersonalizedClassifier(make, ["goldfish", "lemon"], params, {}, threads=1, like=p._template)
    x = np.zeros((1, 128, 128, 3), np.uint8)
    out = []
    threads = [threading.Thread(target=lambda: out.append(clf.predict(x).probabilities)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(out) == 4 and all(np.array_equal(o, out[0]) for o in out)
