"""The edge commands: personalize, predict, info (CliRunner, plus real subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from runtime_fixtures import make_tiny_bundle

from tina_edge.cli.main import main
from tina_edge.runtime import PersonalizedClassifier

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("cli") / "bundle")


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_personalize_json_and_summary(bundle, tmp_path):
    out = tmp_path / "m.onnx"
    r = run("personalize", "dog, cat", "zebra", "-o", out, "--bundle", bundle, "--json", "--seed", 3)
    assert r.exit_code == 0, r.output
    j = json.loads(r.stdout)
    assert j["output"] == str(out) and j["labels"] == ["dog", "cat", "zebra"]
    assert j["seen"] == ["dog", "cat"] and j["new"] == ["zebra"]
    assert (j["sampler"], j["steps"], j["seed"], j["candidates"]) == ("ddim", 10, 3, 1)
    assert len(j["bundle_id"]) == 16 and j["milliseconds"] > 0
    assert PersonalizedClassifier.load(out).labels == ["dog", "cat", "zebra"]

    out2 = tmp_path / "m2.onnx"
    r = run("personalize", "Dog,cat", "-o", out2, "--bundle", bundle, "--sampler", "ddpm", "--steps", 50,
            "--describe", "dog=a loyal pet that barks", "--candidates", 2, "--threads", 1)
    assert r.exit_code == 0, r.output
    assert r.stdout == ""  # the summary goes to stderr
    assert "Dog, cat" in r.stderr and "ddpm 50 steps" in r.stderr and "2 candidate(s)" in r.stderr
    meta = PersonalizedClassifier.load(out2).metadata
    assert json.loads(meta["texts"]) == ["a loyal pet that barks", "cat"]


def test_existing_output_refused_then_forced(bundle, tmp_path):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"keep me")
    r = run("personalize", "dog, cat", "-o", out, "--bundle", bundle)
    assert r.exit_code == 2
    assert "already exists" in r.stderr and "--force" in r.stderr and "Traceback" not in r.output
    assert out.read_bytes() == b"keep me"
    r = run("personalize", "dog, cat", "-o", out, "--bundle", bundle, "--force")
    assert r.exit_code == 0, r.output
    assert PersonalizedClassifier.load(out).labels == ["dog", "cat"]


@pytest.mark.parametrize("args,msg", [
    (["dog,,cat"], "class name 2 of 3 is empty"),
    (["dog"], "at least 2 classes"),
    ([", ".join(f"c{i}" for i in range(1001))], "has 1001 classes but this bundle allows 2 to 1000"),
    (["dog, DOG"], "named twice"),
    (["dog, cat", "--steps", "0"], "steps must be an integer from 1 to 1000"),
    (["dog, cat", "--describe", "horse=big"], "'horse', which is not one of the classes"),
    (["dog, cat", "--describe", "nothing"], "NAME=TEXT"),
    (["dog, cat", "--candidates", "0"], "candidates must be"),
])
def test_personalize_user_errors(bundle, tmp_path, args, msg):
    r = run("personalize", *args, "-o", tmp_path / "m.onnx", "--bundle", bundle)
    assert r.exit_code == 2
    assert r.stderr.startswith("error: ") and msg in r.stderr, r.stderr
    assert "Traceback" not in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)
    assert not (tmp_path / "m.onnx").exists()


def test_bad_bundle_is_exit_2(tmp_path):
    r = run("personalize", "dog, cat", "-o", tmp_path / "m.onnx", "--bundle", tmp_path)
    assert r.exit_code == 2 and "has no manifest.json" in r.stderr
    r = run("info", tmp_path / "nope")
    assert r.exit_code == 2 and "does not exist" in r.stderr


def test_predict(bundle, tmp_path):
    out = tmp_path / "m.onnx"
    assert run("personalize", "dog, cat, frog", "-o", out, "--bundle", bundle).exit_code == 0
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    rng = np.random.default_rng(0)
    for n in ("a.png", "b.jpg"):
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(imgs / n)
    r = run("predict", out, imgs, "--top", 2)
    assert r.exit_code == 0, r.output
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(str(imgs / "a.png") + "\t")
    fields = lines[0].split("\t")[1:]
    assert len(fields) == 2 and all(f.split()[0] in {"dog", "cat", "frog"} for f in fields)
    r = run("predict", out, imgs / "a.png", imgs / "b.jpg", "--json", "--top", 3)
    j = json.loads(r.stdout)
    assert [x["image"] for x in j] == [str(imgs / "a.png"), str(imgs / "b.jpg")]
    for x in j:
        assert sum(t["probability"] for t in x["top"]) == pytest.approx(1.0, abs=1e-5)
        assert x["top"][0]["label"] == x["label"] and x["top"][0]["probability"] == x["probability"]
    (imgs / "readme.txt").write_text("hi")  # in a walked folder, a file without an image suffix is left out, and said so
    r = run("predict", out, imgs)
    assert r.exit_code == 0 and len(r.stdout.strip().splitlines()) == 2
    assert "1 file(s) without an image suffix were not used" in r.stderr and "readme.txt" in r.stderr
    (imgs / "c.jpg").write_text("hi")  # an image suffix on a file that is no image is still an error
    r = run("predict", out, imgs)
    assert r.exit_code == 2 and "c.jpg is not a readable image" in r.stderr
    r = run("predict", imgs / "a.png", imgs / "b.jpg")
    assert r.exit_code == 2 and "not a readable ONNX model" in r.stderr


def test_info(bundle):
    r = run("info", bundle)
    assert r.exit_code == 0, r.output
    for want in ("K_max 4", "28 parameters", "head.weight [4, 6] (class axis 0)", "ddim, 10 steps",
                 "denoiser.onnx", "vocabulary  6 classes: dog, cat", "in_distribution.accuracy: 0.61", "holdout     ship"):
        assert want in r.stdout, want
    j = json.loads(run("info", bundle, "--json").stdout)
    assert j["denoiser"]["k_max"] == 4 and j["template"]["layout"][0]["name"] == "head.weight"


def test_real_subprocess(bundle, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), LC_ALL="C.UTF-8")
    out = tmp_path / "m.onnx"
    cmd = [sys.executable, "-m", "tina_edge.cli.main", "personalize", "dog, cat", "-o", str(out), "--bundle", str(bundle)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert out.is_file() and "wrote" in r.stderr
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)  # exists now
    assert r.returncode == 2 and "already exists" in r.stderr and "Traceback" not in r.stderr
    # undecodable argv bytes arrive as surrogates: a PromptError, not a traceback
    bad = [os.fsencode(sys.executable), b"-m", b"tina_edge.cli.main", b"personalize", b"dog\xff, cat",
           b"-o", os.fsencode(tmp_path / "x.onnx"), b"--bundle", os.fsencode(bundle)]
    r = subprocess.run(bad, capture_output=True, env=env, timeout=120)
    err = r.stderr.decode("utf-8", "replace")
    assert r.returncode == 2 and "not valid UTF-8" in err and "Traceback" not in err


def test_json_output_with_undecodable_path_is_valid_json(bundle, tmp_path):
    out = tmp_path / "m\udcff.onnx"  # a file name with a non-UTF-8 byte, as argv delivers it
    r = run("personalize", "dog, cat", "-o", out, "--bundle", bundle, "--json")
    assert r.exit_code == 0, r.output
    r.stdout_bytes.decode("utf-8")  # strict UTF-8
    assert json.loads(r.stdout)["output"] == str(out)
    assert os.path.exists(os.fsencode(tmp_path) + b"/m\xff.onnx")
