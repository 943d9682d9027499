"""`tina-edge convert --ort`: ORT-format bundles personalize exactly like the .onnx bundle."""

import json

import numpy as np
from click.testing import CliRunner

from runtime_fixtures import make_tiny_bundle
from tina_edge.cli.main import main
from tina_edge.runtime.bundle import open_bundle
from tina_edge.runtime.personalizer import Personalizer


def test_ort_bundle_personalizes_identically(tmp_path):
    src = make_tiny_bundle(tmp_path / "src", k_max=4)
    r = CliRunner().invoke(main, ["convert", str(src), "-o", str(tmp_path / "onnx")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["convert", str(src), "-o", str(tmp_path / "ort"), "--ort"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output.strip().splitlines()[-1])
    ort_dir = tmp_path / "ort"
    m = open_bundle(ort_dir).manifest
    assert m.text_encoder.model == "text_encoder.ort" and m.denoiser.model == "denoiser.ort"
    assert m.portable.generate_model == "generate.ort"
    assert not list(ort_dir.glob("denoiser.onnx")) and "required_operators.config" in summary["files"]
    ops = (ort_dir / "required_operators.config").read_text()
    assert "ai.onnx;" in ops and "Gemm" in ops or "MatMul" in ops
    a = Personalizer.from_bundle(tmp_path / "onnx", threads=1)
    b = Personalizer.from_bundle(ort_dir, threads=1)
    imgs = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    for prompt, seed in (("dog, cat", 0), ("ship, dog, bird, cat", 9)):
        x, y = a.personalize(prompt, seed=seed), b.personalize(prompt, seed=seed)
        for n in x.params:
            np.testing.assert_array_equal(x.params[n], y.params[n])
        np.testing.assert_array_equal(x.predict(imgs).probabilities, y.predict(imgs).probabilities)
    assert (tmp_path / "src" / "denoiser.onnx").is_file()  # the source is never modified
    info = CliRunner().invoke(main, ["info", str(ort_dir)])
    assert info.exit_code == 0 and "generate.ort (ddim" in info.output and "ORT format" in info.output


def test_convert_refuses_an_existing_output(tmp_path):
    src = make_tiny_bundle(tmp_path / "src")
    (tmp_path / "out").mkdir()
    r = CliRunner().invoke(main, ["convert", str(src), "-o", str(tmp_path / "out")])
    assert r.exit_code == 2 and "exists" in r.output


def test_cli_head_is_readable_and_refills_the_same_classifier(tmp_path):
    from tina_edge.runtime.portable import classifier_from_head, read_head

    src = make_tiny_bundle(tmp_path / "src")
    r = CliRunner().invoke(main, ["personalize", "dog, cat", "-o", str(tmp_path / "m.onnx"), "--bundle", str(src),
                                  "--head", str(tmp_path / "h.json"), "--seed", "3"])
    assert r.exit_code == 0, r.output
    labels, params, head = read_head(tmp_path / "h.json")
    assert labels == ["dog", "cat"] and head["sampler"]["seed"] == 3
    from tina_edge.runtime.classifier import PersonalizedClassifier

    saved = PersonalizedClassifier.load(tmp_path / "m.onnx")
    again = classifier_from_head(tmp_path / "h.json", open_bundle(src))
    imgs = np.random.default_rng(2).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    np.testing.assert_array_equal(again.predict(imgs).probabilities, saved.predict(imgs).probabilities)


def test_ort_bundle_keeps_one_onnx_template_and_sessions_wait_for_verification(tmp_path, monkeypatch):
    """The template stays ONNX (model.onnx is written from it) beside its .ort copy; an .ort graph
    gets an onnxruntime session only once every hash AND the manifest's identity are verified."""
    import tina_edge.runtime.bundle as bundle_mod
    from tina_edge.runtime.errors import BundleError

    src = make_tiny_bundle(tmp_path / "src", k_max=4)
    r = CliRunner().invoke(main, ["convert", str(src), "-o", str(tmp_path / "ort"), "--ort"])
    assert r.exit_code == 0, r.output
    d = tmp_path / "ort"
    m = open_bundle(d).manifest
    assert m.template.model == "template.onnx" and m.template.form == "inputs"
    assert m.portable.template_inputs_model == "template.ort" and {"template.onnx", "template.ort"} <= set(m.files)
    made = []
    real = bundle_mod.make_session
    monkeypatch.setattr(bundle_mod, "make_session", lambda *a, **k: made.append(k.get("what")) or real(*a, **k))
    doc = json.loads((d / "manifest.json").read_text())
    doc["producer"] = "edited after export"  # hashes still match; the id no longer does
    (d / "manifest.json").write_text(json.dumps(doc))
    try:
        open_bundle(d)
    except BundleError as e:
        assert "records bundle_id" in str(e)
    else:
        raise AssertionError("an edited manifest was accepted")
    assert made == []  # refused before any onnxruntime session existed
