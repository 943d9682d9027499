"""What a user reaches for after the first model: predict on class folders, --top, --min-prob,
repr, python -m tina_edge, info --bundle, personalize --batch, the README and .gitignore."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from runtime_fixtures import make_tiny_bundle

from tina_edge.cli.main import main
from tina_edge.runtime import PersonalizedClassifier, Personalizer
from tina_edge.runtime.classifier import UNKNOWN
from tina_edge.runtime.errors import ArgumentError

ROOT = Path(__file__).resolve().parents[1]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("every") / "bundle")


@pytest.fixture(scope="module")
def model(bundle, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("m") / "m.onnx"
    assert run("personalize", "dog, cat, frog", "-o", out, "--bundle", bundle, "--seed", 1).exit_code == 0
    return out


@pytest.fixture
def classes_dir(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    for c, n in (("dog", 2), ("cat", 3)):
        (tmp_path / "photos" / c / "deeper").mkdir(parents=True)
        for i in range(n):
            sub = "deeper/" if i == 0 else ""
            Image.fromarray(rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)).save(tmp_path / "photos" / c / f"{sub}{i}.jpg")
    return tmp_path / "photos"


# ------------------------------------------------------------------------------------ predict


def test_predict_recurses_into_class_folders_and_names_each_file(model, classes_dir):
    r = run("predict", model, classes_dir, "--json", "--top", 2)
    assert r.exit_code == 0, r.output
    j = json.loads(r.stdout)
    want = sorted(str(p) for p in classes_dir.rglob("*.jpg"))
    assert sorted(x["image"] for x in j) == want and len(j) == 5
    assert all(len(x["top"]) == 2 and x["top"][0]["label"] == x["label"] for x in j)
    clf = PersonalizedClassifier.load(model)
    pred = clf.predict([Path(x["image"]) for x in j])
    assert [x["label"] for x in j] == pred.labels  # same answers as the API on the same files
    r = run("predict", model, classes_dir, "--top", 3)
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 5 and all(len(line.split("\t")) == 4 for line in lines)
    assert {line.split("\t")[0] for line in lines} == set(want)


def test_predict_top_k_is_sorted_and_capped(model, classes_dir):
    j = json.loads(run("predict", model, classes_dir / "cat", "--json", "--top", 10).stdout)
    for x in j:
        probs = [t["probability"] for t in x["top"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True)  # k = 3 caps --top 10
    assert run("predict", model, classes_dir, "--top", 0).exit_code == 2


def test_predict_min_prob_answers_unknown(model, classes_dir):
    clf = PersonalizedClassifier.load(model)
    files = sorted(classes_dir.rglob("*.jpg"))
    base = clf.predict(files)
    thr = float(np.sort(base.confidence)[2])  # between the confidences: some kept, some unknown
    pred = clf.predict(files, min_prob=thr)
    keep = base.confidence >= np.float32(thr)
    assert 0 < keep.sum() < len(files)
    assert [lab for lab, k in zip(pred.labels, keep) if not k] == [UNKNOWN] * int((~keep).sum())
    assert (pred.indices[~keep] == -1).all() and (pred.indices[keep] == base.indices[keep]).all()
    assert clf.predict(files, min_prob=0.0).labels == base.labels
    for bad in (-0.1, 1.01, float("nan"), "high"):
        with pytest.raises(ArgumentError, match="min_prob must be"):
            clf.predict(files, min_prob=bad)
    j = json.loads(run("predict", model, *files, "--json", "--min-prob", thr).stdout)
    assert [x["label"] for x in j] == pred.labels
    r = run("predict", model, *files, "--min-prob", 1.0)
    assert all(line.split("\t")[1] == "unknown" for line in r.stdout.strip().splitlines())
    assert run("predict", model, *files, "--min-prob", 2).exit_code == 2


def test_repr_shows_labels_bundle_and_sampler(model, bundle):
    clf = PersonalizedClassifier.load(model)
    r = repr(clf)
    bid = Personalizer.from_bundle(bundle).manifest.bundle_id
    assert r.startswith("PersonalizedClassifier(k=3, labels=['dog', 'cat', 'frog']")
    assert f"bundle_id={bid!r}" in r and "sampler='ddim-10 seed 1'" in r and "input=" in r


# --------------------------------------------------------------------- python -m, info --bundle


def test_python_dash_m_runs_the_cli(bundle):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "tina_edge", "info", "--bundle", str(bundle)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "K_max 4" in r.stdout
    r = subprocess.run([sys.executable, "-m", "tina_edge", "--help"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0 and "Usage: tina-edge" in r.stdout and "evaluate" in r.stdout


def test_info_takes_bundle_option_and_keeps_positional(bundle, tmp_path):
    a, b = run("info", "--bundle", bundle), run("info", bundle)
    assert a.exit_code == 0 and a.stdout == b.stdout and "K_max 4" in a.stdout
    assert run("info", bundle, "--bundle", bundle).exit_code == 0  # the same bundle twice is fine
    other = shutil.copytree(bundle, tmp_path / "other")
    r = run("info", bundle, "--bundle", other)
    assert r.exit_code == 2 and "two bundles given" in r.output


# ------------------------------------------------------------------------- personalize --batch


def _prompts(path: Path) -> Path:
    path.write_text("# my models\ndog, cat\n\n  Frog, dog, horse  \nbird, ship\n", encoding="utf-8")
    return path


def test_batch_makes_one_model_per_line_with_one_set_of_sessions(bundle, tmp_path, sessions):
    out = tmp_path / "models"
    r = run("personalize", "--batch", _prompts(tmp_path / "p.txt"), "-o", out, "--bundle", bundle, "--seed", 4)
    assert r.exit_code == 0, r.output
    j = json.loads(r.stdout)
    assert j["count"] == 3 and j["seed"] == 4 and len(j["bundle_id"]) == 16
    assert [m["labels"] for m in j["models"]] == [["dog", "cat"], ["Frog", "dog", "horse"], ["bird", "ship"]]
    assert [m["line"] for m in j["models"]] == [2, 4, 5]
    assert [Path(m["output"]).name for m in j["models"]] == ["001-dog-cat.onnx", "002-frog-dog-horse.onnx", "003-bird-ship.onnx"]
    for m in j["models"]:
        assert PersonalizedClassifier.load(m["output"]).labels == m["labels"]
    batch_sessions = sessions["n"]
    # the same bytes as one personalize per prompt with that seed
    single = tmp_path / "single.onnx"
    assert run("personalize", "Frog, dog, horse", "-o", single, "--bundle", bundle, "--seed", 4).exit_code == 0
    assert single.read_bytes() == Path(j["models"][1]["output"]).read_bytes()
    # sessions are made once: three prompts cost the sessions of one
    sessions["n"] = 0
    one = tmp_path / "one.txt"
    one.write_text("dog, cat\n")
    assert run("personalize", "--batch", one, "-o", tmp_path / "m1", "--bundle", bundle).exit_code == 0
    assert batch_sessions == sessions["n"] > 0


def test_batch_refusals_leave_nothing_behind(bundle, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("dog, cat\ndog,,cat\n")
    out = tmp_path / "models"
    r = run("personalize", "--batch", bad, "-o", out, "--bundle", bundle)
    assert r.exit_code == 2 and "bad.txt line 2: class name 2 of 3 is empty" in r.stderr and not out.exists()
    bad.write_text("dog, cat, frog, bird, ship\n")  # K_max of the tiny bundle is 4
    r = run("personalize", "--batch", bad, "-o", out, "--bundle", bundle)
    assert r.exit_code == 2 and "line 1" in r.stderr and not out.exists()
    r = run("personalize", "dog, cat", "--batch", _prompts(tmp_path / "p.txt"), "-o", out, "--bundle", bundle)
    assert r.exit_code == 2 and "leave out CLASSES" in r.stderr
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    r = run("personalize", "--batch", tmp_path / "empty.txt", "-o", out, "--bundle", bundle)
    assert r.exit_code == 2 and "holds no prompt" in r.stderr
    assert run("personalize", "--batch", tmp_path / "p.txt", "-o", out, "--bundle", bundle).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    r = run("personalize", "--batch", tmp_path / "p.txt", "-o", out, "--bundle", bundle, "--seed", 9)
    assert r.exit_code == 2 and "already exists" in r.stderr and "--force" in r.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert run("personalize", "--batch", tmp_path / "p.txt", "-o", out, "--bundle", bundle, "--seed", 9, "--force").exit_code == 0
    assert {p.name: p.read_bytes() for p in out.iterdir()} != before
    r = run("personalize", "dog, cat", "-o", out, "--bundle", bundle)  # without --batch, -o is a file
    assert r.exit_code == 2 and "is a directory" in r.stderr


# ------------------------------------------------------------------------ README and .gitignore


def test_readme_install_hints_and_dataset_sources():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert 'pip install "tina-edge[train]"' in text and 'pip install ".[train]"' in text
    for source in ("cs.toronto.edu/~kriz/cifar", "github.com/zalandoresearch/fashion-mnist", "cs231n", "wordnet"):
        assert source in text.lower(), source
    assert "tina-edge evaluate model.onnx" in text and "accuracy  0." in text  # evaluate with its real output


def test_training_install_hint_names_both_forms(monkeypatch):
    from tina_edge.cli import train_cmds
    from tina_edge.runtime.errors import TinaEdgeError

    monkeypatch.setitem(sys.modules, "torch", None)  # what a runtime-only install looks like
    with pytest.raises(TinaEdgeError) as e:
        train_cmds._need_torch()
    assert 'pip install "tina-edge[train]"' in str(e.value) and 'pip install ".[train]"' in str(e.value)


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs a git checkout")
def test_gitignore_covers_what_the_readme_commands_write():
    written = ["data/cifar10/test/cat/0000.jpg", "runs/default/tina.safetensors", "my-bundle/manifest.json",
               "model.onnx", "confusion.png", "models/001-dog-cat.onnx", "data/cache/u.npz"]
    r = subprocess.run(["git", "check-ignore", "--no-index", *written], cwd=ROOT, capture_output=True, text=True)
    assert sorted(r.stdout.split()) == sorted(written)
    kept = ["tina_edge/bundles/default/denoiser.onnx", "docs/img/unknown_threshold.png", "tests/test_evaluate.py"]
    r = subprocess.run(["git", "check-ignore", "--no-index", *kept], cwd=ROOT, capture_output=True, text=True)
    assert r.stdout.strip() == ""
