"""Personalizer and PersonalizedClassifier end to end on the tiny real bundle (no torch)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from PIL import Image
from runtime_fixtures import make_tiny_bundle

from tina_edge.runtime import PersonalizedClassifier, Personalizer
from tina_edge.runtime import atomic as atomic_mod
from tina_edge.runtime.atomic import atomic_output_dir, atomic_write_bytes
from tina_edge.runtime.images import image_names, load_images
from tina_edge.runtime.errors import ImageError, ModelFileError, PromptError
from tina_edge.runtime.manifest import TensorSpec
from tina_edge.runtime.personalizer import consensus_index
from tina_edge.runtime.template import denormalise


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("rt") / "bundle")


@pytest.fixture(scope="module")
def pz(bundle) -> Personalizer:
    return Personalizer.from_bundle(bundle, threads=1)


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)


def _reference_forward(template: onnx.ModelProto, params: dict, x: np.ndarray) -> np.ndarray:
    """The template's math in numpy: normalise, frozen trunk, ReLU, mean, head."""
    inits = {i.name: numpy_helper.to_array(i) for i in template.graph.initializer}
    xn = (x.astype(np.float32) / 255.0 - 0.5) / 0.25
    f = np.maximum(xn @ inits["trunk.weight"], 0).mean(axis=(1, 2))
    return f @ params["head.weight"].T + params["head.bias"]


# ------------------------------------------------------------------ determinism


def test_same_seed_same_bytes_different_seed_different(pz):
    a = pz.personalize("dog, cat, horse", seed=5).to_bytes()
    assert pz.personalize("dog, cat, horse", seed=5).to_bytes() == a
    assert pz.personalize(["dog", "cat", "horse"], seed=5).to_bytes() == a  # prompt joined as "dog, cat, horse"
    assert pz.personalize("dog,cat,horse", seed=5).to_bytes() != a  # the raw prompt metadata differs...
    b = pz.personalize("dog, cat, horse", seed=6)
    assert b.to_bytes() != a
    c = pz.personalize("dog, cat, horse", seed=5)
    d = pz.personalize("dog,cat,horse", seed=5)
    for name in c.params:  # ...but the generated weights are the same
        np.testing.assert_array_equal(c.params[name], d.params[name])
        assert not np.array_equal(c.params[name], b.params[name])


def test_threads_match_serial(pz):
    jobs = [(f"dog, cat{', horse' * (i % 2)}", i, "ddim" if i % 2 else "ddpm", 1 + i % 2) for i in range(8)]  # seed i: all distinct
    serial = [pz.personalize(p, seed=s, sampler=sm, steps=20, candidates=c).to_bytes() for p, s, sm, c in jobs]
    with ThreadPoolExecutor(8) as ex:
        par = list(ex.map(lambda j: pz.personalize(j[0], seed=j[1], sampler=j[2], steps=20, candidates=j[3]).to_bytes(), jobs))
    assert par == serial
    assert len(set(serial)) == len(serial)


def test_candidates_consensus(pz):
    one = pz.personalize("dog, cat", seed=1, candidates=1)
    three = pz.personalize("dog, cat", seed=1, candidates=3)
    assert json.loads(three.metadata["sampler"]) == {"sampler": "ddim", "steps": 10, "seed": 1, "candidates": 3}
    assert pz.personalize("dog, cat", seed=1, candidates=3).to_bytes() == three.to_bytes()
    # candidate 0 of a batch uses the first P normals of the same rng, like a single sample
    x = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [9.0, 9.0]])
    assert consensus_index(x) == 2  # mean (3, 3); row 2 is nearest (sqrt 2)
    assert consensus_index(np.ones((4, 3))) == 0
    assert one.labels == three.labels == ["dog", "cat"]


def test_ddpm_default_runs_all_steps(pz):
    c = pz.personalize("dog, cat", sampler="ddpm")
    assert json.loads(c.metadata["sampler"])["steps"] == 1000
    assert np.all(np.isfinite(c.params["head.weight"]))


# ------------------------------------------------------------------ model contents


def test_metadata_and_filled_weights(pz, bundle):
    clf = pz.personalize(" Dog ,cat,  frog", descriptions=[None, "a small domestic feline", None], seed=2)
    m = onnx.load_from_string(clf.to_bytes())
    meta = {p.key: p.value for p in m.metadata_props}
    assert json.loads(meta["labels"]) == ["Dog", "cat", "frog"]
    assert json.loads(meta["texts"]) == ["Dog", "a small domestic feline", "frog"]
    assert meta["prompt"] == " Dog ,cat,  frog"
    assert meta["bundle_id"] == pz.manifest.bundle_id
    assert meta["producer"] == "tina-edge 0.1.0"
    assert json.loads(meta["sampler"]) == {"sampler": "ddim", "steps": 10, "seed": 2, "candidates": 1}
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    assert inits["head.weight"].shape == (3, 6) and inits["head.bias"].shape == (3,)
    np.testing.assert_array_equal(inits["head.weight"], clf.params["head.weight"])
    tpl = onnx.load(str(bundle / "template.onnx"))
    np.testing.assert_array_equal(inits["trunk.weight"], numpy_helper.to_array(next(i for i in tpl.graph.initializer if i.name == "trunk.weight")))
    # the description changes what is encoded, hence the weights
    plain = pz.personalize(" Dog ,cat,  frog", seed=2)
    assert not np.array_equal(plain.params["head.weight"], clf.params["head.weight"])
    # outputs declare [N, k]
    assert [d.dim_value for d in m.graph.output[1].type.tensor_type.shape.dim][1] == 3
    x = _images(5)
    np.testing.assert_allclose(clf.predict(x).probabilities.sum(1), 1.0, atol=1e-6)
    logits = _reference_forward(tpl, clf.params, x)
    sess_logits = clf._sess().run(["logits"], {"image": x})[0]
    np.testing.assert_allclose(sess_logits, logits, rtol=1e-5, atol=1e-5)


def test_denormalise_by_hand():
    layout = [TensorSpec("w", [3, 2], 0, class_axis=0, mean=1.0, std=2.0), TensorSpec("b", [3], 6, class_axis=0, mean=0.0, std=0.5),
              TensorSpec("s", [2], 9, class_axis=None, mean=-1.0, std=1.0)]
    x = np.arange(11, dtype=np.float32)
    out = denormalise(x, layout, 2)
    np.testing.assert_array_equal(out["w"], np.array([[1, 3], [5, 7]], np.float32))
    np.testing.assert_array_equal(out["b"], np.array([3.0, 3.5], np.float32))
    np.testing.assert_array_equal(out["s"], np.array([8.0, 9.0], np.float32))


def test_encode_and_novelty(pz):
    e = pz.encode(["dog", "cat", "dog"])
    assert e.shape == (3, 8) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(e[0], e[2])
    assert not np.allclose(e[0], e[1])
    nov = pz.novelty("DOG, zebra, Frog")
    assert (nov["seen"], nov["new"]) == (["DOG", "Frog"], ["zebra"])
    near = nov["nearest"]["zebra"]  # nearest training-vocabulary names, most similar first
    assert list(near) and [c for _, c in near] == sorted((c for _, c in near), reverse=True)
    assert {m for m, _ in near} <= set(pz.manifest.vocabulary)


@pytest.mark.parametrize("kwargs,msg", [
    ({"classes": "dog"}, "at least 2 classes"),
    ({"classes": ", ".join(f"c{i}" for i in range(1001))}, "has 1001 classes but this bundle allows 2 to 1000"),
    ({"classes": "dog, cat", "steps": 0}, "steps must be an integer from 1 to 1000"),
    ({"classes": "dog, cat", "steps": 1001}, "from 1 to 1000"),
    ({"classes": "dog, cat", "sampler": "euler"}, "unknown sampler 'euler'"),
    ({"classes": "dog, cat", "candidates": 0}, "candidates must be an integer from 1 to 64"),
    ({"classes": "dog, cat", "seed": -1}, "seed must be an integer"),
    ({"classes": "dog, cat", "seed": 1.5}, "seed must be an integer"),
    ({"classes": "dog, cat", "descriptions": ["x"]}, "one entry (or None) per class"),
    ({"classes": "dog, cat", "descriptions": ["  ", None]}, "description of 'dog' is empty"),
])
def test_personalize_errors(pz, kwargs, msg):
    classes = kwargs.pop("classes")
    with pytest.raises(PromptError) as e:
        pz.personalize(classes, **kwargs)
    assert msg in str(e.value)


# ------------------------------------------------------------------ saved model, plain onnxruntime

PLAIN = r"""
import json, sys
import numpy as np, onnxruntime as ort
assert not any(m.startswith("tina_edge") for m in sys.modules)
out = {}
x = np.random.default_rng(0).integers(0, 256, (8, 8, 8, 3), dtype=np.uint8)
for path in sys.argv[1:]:
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    logits, probs = s.run(["logits", "probabilities"], {"image": x})
    labels = json.loads(s.get_modelmeta().custom_metadata_map["labels"])
    out[path] = {"labels": labels, "shape": list(probs.shape), "sums": probs.sum(1).tolist(), "probs": probs.tolist()}
assert not any(m.startswith("tina_edge") for m in sys.modules)
print(json.dumps(out))
"""


def test_saved_models_run_in_plain_onnxruntime(pz, tmp_path):
    prompts = {2: "zebra, dog", 3: "horse, bird, cat", 4: "ship, frog, 犬, dog"}
    paths, clfs = [], {}
    for k, prompt in prompts.items():
        clf = pz.personalize(prompt, seed=k)
        p = clf.save(tmp_path / f"k{k}.onnx")
        paths.append(str(p))
        clfs[str(p)] = clf
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-c", PLAIN, *paths], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    x = np.random.default_rng(0).integers(0, 256, (8, 8, 8, 3), dtype=np.uint8)
    for k, prompt in prompts.items():
        p = str(tmp_path / f"k{k}.onnx")
        assert res[p]["labels"] == [s.strip() for s in prompt.split(",")]
        assert res[p]["shape"] == [8, k]
        np.testing.assert_allclose(res[p]["sums"], 1.0, atol=1e-5)
        np.testing.assert_allclose(res[p]["probs"], clfs[p].predict(x).probabilities, rtol=1e-6, atol=1e-7)


def test_load_roundtrip(pz, tmp_path):
    clf = pz.personalize("dog, cat, bird", seed=9)
    p = clf.save(tmp_path / "m.onnx")
    back = PersonalizedClassifier.load(p)
    assert back.labels == ["dog", "cat", "bird"] and back.input_size == (8, 8)
    assert back.to_bytes() == clf.to_bytes()
    for k, v in clf.params.items():
        np.testing.assert_array_equal(back.params[k], v)
    x = _images(3)
    np.testing.assert_array_equal(back.predict(x).probabilities, clf.predict(x).probabilities)
    (tmp_path / "junk.onnx").write_bytes(b"\x00\x01garbage")
    with pytest.raises(ModelFileError, match="junk.onnx is not a readable ONNX model"):
        PersonalizedClassifier.load(tmp_path / "junk.onnx")
    m = onnx.load(str(p))
    del m.metadata_props[:]
    onnx.save(m, str(tmp_path / "nolabels.onnx"))
    with pytest.raises(ModelFileError, match="no valid 'labels'"):
        PersonalizedClassifier.load(tmp_path / "nolabels.onnx")
    with pytest.raises(ModelFileError, match="does not exist"):
        PersonalizedClassifier.load(tmp_path / "missing.onnx")


# ------------------------------------------------------------------ atomic save


def test_save_refuses_existing_then_overwrites(pz, tmp_path):
    a, b = pz.personalize("dog, cat", seed=1), pz.personalize("dog, cat", seed=2)
    p = a.save(tmp_path / "m.onnx")
    assert oct(p.stat().st_mode & 0o777) == oct(0o666 & ~atomic_mod._umask())
    with pytest.raises(ModelFileError, match="m.onnx already exists"):
        b.save(p)
    assert p.read_bytes() == a.to_bytes()
    b.save(p, overwrite=True)
    assert p.read_bytes() == b.to_bytes()
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]
    with pytest.raises(ModelFileError, match="does not exist"):
        a.save(tmp_path / "nodir" / "m.onnx")


@pytest.mark.parametrize("exc", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()])
@pytest.mark.parametrize("existing", [False, True])
def test_save_interrupted_leaves_nothing(pz, tmp_path, monkeypatch, exc, existing):
    old = b"old model bytes"
    target = tmp_path / "m.onnx"
    if existing:
        target.write_bytes(old)
    clf = pz.personalize("dog, cat", seed=4)
    real_write = os.write
    calls = {"n": 0}

    def failing_write(fd, data):
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, bytes(data[:100]))  # a partial write lands on disk...
        raise exc  # ...then the disk fills up / the user hits Ctrl-C

    monkeypatch.setattr(atomic_mod.os, "write", failing_write)
    expected = ModelFileError if isinstance(exc, OSError) else KeyboardInterrupt
    with pytest.raises(expected) as e:
        clf.save(target, overwrite=True)
    monkeypatch.undo()
    assert calls["n"] == 2
    if isinstance(exc, OSError):
        assert "No space left on device" in str(e.value) and "nothing was written" in str(e.value)
    assert sorted(os.listdir(tmp_path)) == (["m.onnx"] if existing else [])
    if existing:
        assert target.read_bytes() == old


def test_atomic_output_dir(tmp_path):
    out = tmp_path / "bundle"
    with atomic_output_dir(out) as d:
        (d / "a.txt").write_text("1")
        assert not out.exists()
    assert (out / "a.txt").read_text() == "1"
    with pytest.raises(ModelFileError, match="already exists"):
        with atomic_output_dir(out):
            pass
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_output_dir(out, overwrite=True) as d:
            (d / "b.txt").write_text("2")
            raise RuntimeError("boom")
    assert sorted(os.listdir(tmp_path)) == ["bundle"] and sorted(os.listdir(out)) == ["a.txt"]
    with atomic_output_dir(out, overwrite=True) as d:
        (d / "c.txt").write_text("3")
    assert sorted(os.listdir(out)) == ["c.txt"] and sorted(os.listdir(tmp_path)) == ["bundle"]
    atomic_write_bytes(tmp_path / "f.bin", b"xyz")
    assert (tmp_path / "f.bin").read_bytes() == b"xyz"


# ------------------------------------------------------------------ predict on files


@pytest.fixture(scope="module")
def clf(pz):
    return pz.personalize("dog, cat, frog", seed=0)


def test_predict_file_formats(clf, tmp_path):
    rgb = _images(1, seed=3)[0]
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(rgb).save(tmp_path / "b.jpg", quality=95)
    Image.fromarray(rgb).convert("L").save(tmp_path / "c_grey.png")
    rgba = np.concatenate([rgb, np.full((8, 8, 1), 128, np.uint8)], axis=2)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "d_rgba.png")
    Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE, colors=16).save(tmp_path / "e_pal.png")
    big = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(big).save(tmp_path / "f_big.png")
    pred = clf.predict(tmp_path)  # a directory: its files in name order
    assert pred.probabilities.shape == (6, 3)
    np.testing.assert_allclose(pred.probabilities.sum(1), 1.0, atol=1e-6)
    assert set(pred.labels) <= {"dog", "cat", "frog"}
    assert image_names([tmp_path]) == [str(tmp_path / n) for n in
                                        ["a.png", "b.jpg", "c_grey.png", "d_rgba.png", "e_pal.png", "f_big.png"]]
    px = load_images(tmp_path, (8, 8))
    assert px.shape == (6, 8, 8, 3) and px.dtype == np.uint8
    np.testing.assert_array_equal(px[0], rgb)  # PNG is lossless
    np.testing.assert_array_equal(px[1], np.asarray(Image.open(tmp_path / "b.jpg").convert("RGB")))  # JPEG decoded by PIL
    grey = np.asarray(Image.fromarray(rgb).convert("L"))
    np.testing.assert_array_equal(px[2], np.repeat(grey[:, :, None], 3, axis=2))
    on_white = np.asarray(Image.alpha_composite(Image.new("RGBA", (8, 8), (255,) * 4), Image.fromarray(rgba, "RGBA")))[..., :3]
    np.testing.assert_array_equal(px[3], on_white)  # alpha composited on white (the one RGB converter)
    pal = np.asarray(Image.open(tmp_path / "e_pal.png").convert("RGB"))
    np.testing.assert_array_equal(px[4], pal)
    np.testing.assert_array_equal(px[5], np.asarray(Image.fromarray(big).resize((8, 8), Image.BILINEAR)))
    # the classifier sees exactly these pixels
    np.testing.assert_allclose(pred.probabilities, clf.predict(px).probabilities, rtol=1e-6, atol=1e-7)
    # arrays: [H,W], [H,W,1], [H,W,4], batches, PIL images
    np.testing.assert_array_equal(load_images(grey, (8, 8))[0], px[2])
    np.testing.assert_array_equal(load_images(grey[:, :, None], (8, 8))[0], px[2])
    np.testing.assert_array_equal(load_images(rgba, (8, 8))[0], on_white)
    assert clf.predict(_images(8)).probabilities.shape == (8, 3)
    assert clf.predict([Image.fromarray(rgb), tmp_path / "a.png"]).probabilities.shape == (2, 3)


def test_predict_errors(clf, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    with pytest.raises(ImageError, match="broken.png is not a readable image"):
        clf.predict(bad)
    d = tmp_path / "dir"
    d.mkdir()
    Image.fromarray(_images(1)[0]).save(d / "ok.png")
    (d / "notes.txt").write_text("not an image")
    with pytest.raises(ImageError, match="notes.txt is not a readable image"):
        clf.predict(d)
    with pytest.raises(ImageError, match="does not exist"):
        clf.predict(tmp_path / "missing.jpg")
    with pytest.raises(ImageError, match="dtype float32"):
        clf.predict(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ImageError, match=r"shape \(8, 8, 2\)"):
        clf.predict(np.zeros((8, 8, 2), np.uint8))
    with pytest.raises(ImageError, match="shape"):
        clf.predict(np.zeros((2, 2, 8, 8, 3), np.uint8))
    with pytest.raises(ImageError, match="cannot read an image from a int"):
        clf.predict([3])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ImageError, match="holds no image files"):
        clf.predict(empty)
