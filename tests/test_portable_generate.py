"""generate.onnx, template_inputs.onnx, tokenizer_config.json and the head format against the runtime."""

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from runtime_fixtures import make_tiny_bundle
from tina_edge.export.portable.generate import add_portable_files
from tina_edge.runtime.bundle import default_bundle_path, open_bundle
from tina_edge.runtime.errors import ModelFileError
from tina_edge.runtime.noise import portable_normal
from tina_edge.runtime.personalizer import Personalizer
from tina_edge.runtime.portable import classifier_from_head, head_dict, read_head, save_head
from tina_edge.runtime.template import denormalise


def _sess(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = make_tiny_bundle(tmp_path_factory.mktemp("portable") / "b", k_max=5, default_steps=4)
    add_portable_files(d)
    return d


def _generate(p, path, names, seed, C=1):
    m = p.manifest
    emb = p.encode(p.encoded_texts(names))  # what personalize encodes (ambiguous names in their sense, issue 22)
    K, k = m.k_max, len(names)
    ce = np.zeros((C, K, emb.shape[1]), np.float32)
    ce[:, :k] = emb
    mask = np.zeros((C, K), np.float32)
    mask[:, :k] = 1
    noise = portable_normal(seed, (C, m.denoiser.param_count))
    feeds = {"class_emb": ce, "class_mask": mask, "noise": noise} | p._prior_rows(ce)  # + prior rows: split bundles
    return _sess(path).run(["x0", "params"], feeds)


@pytest.mark.parametrize("steps", [1, 2, 4, 25])
def test_generate_onnx_agrees_with_the_numpy_ddim_sampler(tiny, tmp_path, steps):
    d = tmp_path / "b"
    shutil.copytree(tiny, d)
    m = add_portable_files(d, steps=steps)
    assert m.portable.generate["steps"] == steps and len(m.portable.generate["timesteps"]) == steps
    p = Personalizer.from_bundle(d, threads=1)
    for names, seed in ((["dog", "cat"], 0), (["ship", "dog", "bird", "cat", "frog"], 2**63 - 1)):
        x0, params = _generate(p, d / "generate.onnx", names, seed)
        clf = p.personalize(names, sampler="ddim", steps=steps, seed=seed)
        want = denormalise(x0[0], m.template.layout, len(names))
        for t in m.template.layout:
            np.testing.assert_allclose(clf.params[t.name], want[t.name], atol=1e-5, rtol=0)
            got = params[0, t.offset:t.offset + t.numel].reshape(t.shape)[: len(names)]
            np.testing.assert_allclose(clf.params[t.name], got, atol=1e-5, rtol=0)


def test_generate_onnx_takes_a_batch_of_candidates(tiny):
    p = Personalizer.from_bundle(tiny, threads=1)
    x0, _ = _generate(p, tiny / "generate.onnx", ["dog", "cat", "bird"], 5, C=3)
    one, _ = _generate(p, tiny / "generate.onnx", ["dog", "cat", "bird"], 5, C=1)
    np.testing.assert_allclose(x0[0], one[0], atol=1e-6)  # candidate 0 = the single draw
    assert not np.allclose(x0[0], x0[1])


def test_template_inputs_serves_every_classifier_like_the_filled_template(tiny):
    p = Personalizer.from_bundle(tiny, threads=1)
    m = p.manifest
    assert m.template.form == "inputs" and m.portable.template_inputs_model == m.template.model
    assert not (tiny / "template_inputs.onnx").exists()  # the trunk is stored once
    model = onnx.load(str(tiny / m.template.model))
    inits = {i.name for i in model.graph.initializer}
    assert not inits & {t.name for t in m.template.layout}  # weights are inputs, not initializers
    sess = _sess(tiny / m.template.model)
    imgs = np.random.default_rng(0).integers(0, 256, (3, m.template.input.height, m.template.input.width, 3), dtype=np.uint8)
    for names in (["dog", "cat"], ["dog", "cat", "bird", "ship", "frog"]):
        clf = p.personalize(names, seed=1)
        logits, probs = sess.run(["logits", "probabilities"], {"image": imgs, **clf.params})
        np.testing.assert_allclose(probs, clf.predict(imgs).probabilities, atol=1e-6)
        assert logits.shape == (3, len(names))


def test_manifest_lists_and_hashes_the_portable_files(tiny):
    b = open_bundle(tiny)
    port = b.manifest.portable
    for name in (port.generate_model, port.template_inputs_model, port.tokenizer_config):
        assert name in b.manifest.files and b.manifest.files[name]["bytes"] > 0
    assert port.noise == {"generator": "splitmix64-boxmuller", "version": 1, "dtype": "float32", "spec": "docs/PORTABLE.md"}
    cfg = json.loads((tiny / "tokenizer_config.json").read_text())
    assert cfg["model_max_length"] == b.manifest.text_encoder.max_tokens
    assert cfg["tina_edge"]["pad_id"] == b.manifest.text_encoder.pad_id


def test_head_round_trip_and_refusals(tiny, tmp_path):
    p = Personalizer.from_bundle(tiny, threads=1)
    clf = p.personalize("dog, cat, bird", seed=4)
    path = save_head(clf, tmp_path / "h.json")
    labels, params, h = read_head(path)
    assert labels == ["dog", "cat", "bird"] and h["bundle_id"] == p.manifest.bundle_id
    for n, a in clf.params.items():
        np.testing.assert_array_equal(params[n], a)
    again = classifier_from_head(path, p.bundle)
    imgs = np.random.default_rng(1).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    np.testing.assert_array_equal(again.predict(imgs).probabilities, clf.predict(imgs).probabilities)
    bad = head_dict(clf)
    bad["bundle_id"] = "0" * 16
    with pytest.raises(ModelFileError, match="generated with bundle"):
        classifier_from_head(bad, p.bundle)
    with pytest.raises(ModelFileError, match="not a tina-edge head"):
        read_head({"format": "other"})
    with pytest.raises(ModelFileError):
        save_head(clf, path)  # no silent overwrite


@pytest.mark.slow
def test_default_bundle_generate_is_bit_identical_to_the_runtime(tmp_path):
    d = tmp_path / "default"
    shutil.copytree(default_bundle_path(), d)
    m = add_portable_files(d)
    p = Personalizer.from_bundle(d, threads=1)
    names = m.vocabulary[: m.k_max] or ["dog", "cat"]
    x0, _ = _generate(p, d / "generate.onnx", names, 3)
    clf = p.personalize(names, seed=3)
    want = denormalise(x0[0], m.template.layout, len(names))
    for n in clf.params:
        np.testing.assert_allclose(clf.params[n], want[n], atol=1e-6, rtol=0)


def test_personalizer_can_run_generate_onnx_with_the_same_result(tiny):
    plain = Personalizer.from_bundle(tiny, threads=1)
    fast = Personalizer.from_bundle(tiny, threads=1, use_generate=True)
    for names, kw in ((["dog", "cat"], {}), (["dog", "cat", "bird"], {"candidates": 3})):
        a, b = plain.personalize(names, seed=6, **kw), fast.personalize(names, seed=6, **kw)
        assert a.labels == b.labels
        for n in a.params:
            np.testing.assert_allclose(a.params[n], b.params[n], atol=1e-6, rtol=0)
    assert fast._gen is not None
    other = fast.personalize(["dog", "cat"], seed=6, steps=7)  # other steps: the numpy sampler
    np.testing.assert_array_equal(other.params["head.bias"], plain.personalize(["dog", "cat"], seed=6, steps=7).params["head.bias"])


def test_conformance_vectors_hold_what_the_runtime_computes(tiny, tmp_path):
    from tina_edge.runtime.groups import max_classes
    from tina_edge.export.portable.conformance import fixed_images, write_vectors

    doc = write_vectors(tiny, tmp_path / "v.json", model_dir=tmp_path / "models")
    assert json.loads((tmp_path / "v.json").read_text())["bundle_id"] == doc["bundle_id"]
    p = Personalizer.from_bundle(tiny, threads=1)
    assert len(doc["cases"]) >= 3 and all(len(c["labels"]) <= max_classes(p.manifest.k_max) for c in doc["cases"])
    assert len(doc["cases"][-1]["labels"]) == 50 > p.manifest.k_max  # a grouped case (issue 23)
    for c in (doc["cases"][-1], doc["cases"][0]):
        clf = p.personalize(c["prompt"], seed=int(c["seed"]))
        for n, t in c["params"].items():
            np.testing.assert_array_equal(np.asarray(t["data"], np.float32), clf.params[n].reshape(-1))
    imgs = fixed_images(*doc["images"]["shape"][:3])
    np.testing.assert_array_equal(np.asarray(c["probabilities"], np.float32), clf.predict(imgs).probabilities)
    assert (tmp_path / "models" / c["model"]).is_file()


def test_one_template_bundle_writes_the_same_standalone_model_as_a_two_template_bundle(tmp_path):
    """Old bundles (initializer template, or both files) and one-template bundles: same classifiers."""
    old = make_tiny_bundle(tmp_path / "old", k_max=5, default_steps=4)
    new = tmp_path / "new"
    shutil.copytree(old, new)
    add_portable_files(new, keep_float32=True)  # the template form alone (float16 storage: test_small_storage.py)
    again = tmp_path / "again"
    shutil.copytree(new, again)
    m2 = add_portable_files(again, keep_float32=True)  # converting twice keeps one template and the same bytes
    assert (again / "template.onnx").read_bytes() == (new / "template.onnx").read_bytes()
    assert m2.template.form == "inputs" and "template_inputs.onnx" not in m2.files
    po, pn = Personalizer.from_bundle(old, threads=1), Personalizer.from_bundle(new, threads=1)
    assert po.manifest.template.form == "initializers"
    imgs = np.random.default_rng(3).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    for names, seed in ((["dog", "cat"], 0), (["ship", "dog", "bird", "cat", "frog"], 7)):
        a, b = po.personalize(names, seed=seed), pn.personalize(names, seed=seed)
        for t in po.manifest.template.layout:
            np.testing.assert_array_equal(a.params[t.name], b.params[t.name])
        ma, mb = onnx.load_from_string(a.to_bytes()), onnx.load_from_string(b.to_bytes())
        assert [i.name for i in ma.graph.input] == [i.name for i in mb.graph.input] == ["image"]
        assert sorted(i.name for i in ma.graph.initializer) == sorted(i.name for i in mb.graph.initializer)
        assert b.to_bytes() == pn.personalize(names, seed=seed).to_bytes()  # same bytes every run
        np.testing.assert_allclose(a.predict(imgs).probabilities, b.predict(imgs).probabilities, atol=1e-6)
        p2 = tmp_path / f"m{seed}.onnx"
        b.save(p2)
        from tina_edge.runtime.classifier import PersonalizedClassifier
        back = PersonalizedClassifier.load(p2)
        assert back.labels == names
        np.testing.assert_allclose(back.predict(imgs).probabilities, b.predict(imgs).probabilities, atol=1e-6)


def test_one_template_bundle_refuses_a_template_without_the_weight_inputs(tmp_path):
    from tina_edge.runtime.errors import BundleError
    from tina_edge.runtime.manifest import read_manifest, write_manifest

    d = make_tiny_bundle(tmp_path / "b", k_max=5, default_steps=4)
    m = read_manifest(d)
    m.template.form = "inputs"  # claims input form, but the file still holds initializers
    write_manifest(d, m)
    with pytest.raises(BundleError, match="has no graph input"):
        open_bundle(d)


def test_older_two_template_bundles_still_open_and_convert_to_one_template(tmp_path):
    """A bundle written before template.form: initializer template.onnx + a second template_inputs.onnx."""
    from tina_edge.export.portable.generate import build_template_inputs
    from tina_edge.runtime.manifest import PortableInfo, read_manifest, write_manifest

    old = make_tiny_bundle(tmp_path / "old", k_max=5, default_steps=4)
    m = read_manifest(old)
    onnx.save(build_template_inputs(onnx.load(str(old / "template.onnx")), m), str(old / "template_inputs.onnx"))
    m.portable = PortableInfo(template_inputs={"model": "template_inputs.onnx", "inputs": [t.name for t in m.template.layout]})
    m.files["template_inputs.onnx"] = {"sha256": "", "bytes": 0}
    write_manifest(old, m)
    b = open_bundle(old)
    assert b.manifest.template.form == "initializers" and "template_inputs.onnx" in b.manifest.files
    new = tmp_path / "new"
    shutil.copytree(old, new)
    m2 = add_portable_files(new, keep_float32=True)  # the template form alone (float16 storage: test_small_storage.py)
    assert m2.template.form == "inputs" and "template_inputs.onnx" not in m2.files and not (new / "template_inputs.onnx").exists()
    assert sum(e["bytes"] for e in m2.files.values()) < sum(e["bytes"] for e in b.manifest.files.values()) + \
        m2.files["generate.onnx"]["bytes"] + m2.files["tokenizer_config.json"]["bytes"] + \
        m2.files.get("senses.json.gz", {}).get("bytes", 0)  # the word-sense table, where WordNet is installed
    po, pn = Personalizer.from_bundle(old, threads=1), Personalizer.from_bundle(new, threads=1)
    imgs = np.random.default_rng(5).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    a, c = po.personalize("dog, cat, bird", seed=2), pn.personalize("dog, cat, bird", seed=2)
    np.testing.assert_allclose(a.predict(imgs).probabilities, c.predict(imgs).probabilities, atol=1e-6)
    sess = _sess(old / "template_inputs.onnx")  # the old second file still serves as the weights-as-inputs graph
    probs = sess.run(["probabilities"], {"image": imgs, **a.params})[0]
    np.testing.assert_allclose(probs, a.predict(imgs).probabilities, atol=1e-6)
