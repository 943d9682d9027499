"""Issue 23: prompts of more classes than the bundle's K_max, generated in groups and calibrated.

The default bundle (K_max 20) makes 50- and 128-class classifiers in prompt order; k <= K_max is
untouched (tests/test_golden_default_bundle.py); rows from different groups share one norm and one
bias; over 1000 classes is refused; `personalize --classes-file` reads one name per line.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bundle_variants import with_steps
from cli_checks import one_error_line
from runtime_fixtures import make_tiny_bundle
from tina_edge.cli.main import main
from tina_edge.runtime import Personalizer, PersonalizedClassifier
from tina_edge.runtime.errors import PromptError
from tina_edge.runtime.groups import MAX_CLASSES, calibrate, group_sizes, split_rows
from tina_edge.runtime.manifest import TensorSpec
from tina_edge.runtime.prompt import classes_from_lines

DEFAULT = json.loads((Path(__file__).resolve().parents[1] / "tina_edge/bundles/default/manifest.json").read_text())
NAMES = DEFAULT["training"]["classes"]


@pytest.fixture(scope="module")
def pz() -> Personalizer:
    return Personalizer.from_bundle(threads=1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("many") / "bundle")  # K_max 4


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def unit(w: np.ndarray) -> np.ndarray:
    return w / np.linalg.norm(w, axis=1, keepdims=True)


# ------------------------------------------------------------------ groups


def test_group_sizes_are_balanced_and_keep_every_class():
    assert group_sizes(20, 20) == [20] and group_sizes(2, 20) == [2]
    assert group_sizes(21, 20) == [11, 10]
    assert group_sizes(50, 20) == [17, 17, 16]
    assert group_sizes(128, 20) == [19, 19, 18, 18, 18, 18, 18]
    assert group_sizes(1000, 20) == [20] * 50
    emb = np.arange(50 * 3, dtype=np.float32).reshape(50, 3)
    parts = split_rows(emb, 20)
    np.testing.assert_array_equal(np.concatenate(parts), emb)  # contiguous runs, prompt order


@pytest.mark.parametrize("k", [50, 128])
def test_many_classes_in_prompt_order(pz, k, tmp_path):
    names = NAMES[:k]
    clf = pz.personalize(names)
    assert clf.labels == names and clf.k == k
    w, b = clf.params["fc.weight"], clf.params["fc.bias"]
    assert w.shape == (k, 1280) and b.shape == (k,)
    probs = clf.predict(np.random.default_rng(0).integers(0, 256, (3, 128, 128, 3), dtype=np.uint8)).probabilities
    assert probs.shape == (3, k)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    # each group's rows point where the same classes, personalized alone, point (the same noise):
    # row j of the big classifier is class j's
    start = 0
    for n in group_sizes(k, 20):
        alone = pz.personalize(names[start : start + n]).params["fc.weight"]
        cos = np.sum(unit(alone) * unit(w[start : start + n]), axis=1)
        assert cos.min() > 0.9999, (start, cos.min())
        start += n
    # the model file and the head-only form hold the k classes (head: k x 1281 numbers)
    again = PersonalizedClassifier.load(clf.save(tmp_path / "m.onnx"))
    assert again.labels == names and again.predict(np.zeros((1, 128, 128, 3), np.uint8)).probabilities.shape == (1, k)
    head = clf.model_bytes(head_only=True)
    assert k * 1281 * 4 < len(head) < k * 1281 * 4 + 20_000


def test_same_request_same_bytes_and_candidates_in_chunks(tiny):
    p = Personalizer.from_bundle(tiny, threads=1)
    names = [f"class {i}" for i in range(11)]  # K_max 4: groups of 4, 4, 3
    a = p.personalize(names, seed=5, candidates=30)  # 90 rows: two denoiser batches (BATCH_ROWS 64)
    b = p.personalize(names, seed=5, candidates=30)
    assert a.labels == names and a.to_bytes() == b.to_bytes()
    assert p.personalize(names, seed=6).to_bytes() != p.personalize(names, seed=5).to_bytes()


# ------------------------------------------------------------------ calibration

LAYOUT = [TensorSpec("fc.weight", [6, 3], 0, 0, 0.0, 1.0), TensorSpec("fc.bias", [6], 18, 0, 0.0, 1.0)]


def test_row_calibration_gives_every_row_the_mean_norm_and_the_mean_bias():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(6, 3)).astype(np.float32) * np.array([[1], [2], [3], [4], [5], [6]], np.float32)
    b = rng.normal(size=6).astype(np.float32)
    out = calibrate({"fc.weight": w, "fc.bias": b}, LAYOUT, [3, 3], "row")
    norms = np.linalg.norm(w, axis=1)
    np.testing.assert_allclose(np.linalg.norm(out["fc.weight"], axis=1), norms.mean(), rtol=1e-6)
    np.testing.assert_allclose(unit(out["fc.weight"]), unit(w), atol=1e-6)  # directions kept
    np.testing.assert_allclose(out["fc.bias"], b.mean(), rtol=1e-6)
    assert not np.shares_memory(out["fc.weight"], w)  # a copy: the input is left alone
    grp = calibrate({"fc.weight": w, "fc.bias": b}, LAYOUT, [3, 3], "group")
    gn = np.linalg.norm(grp["fc.weight"], axis=1)
    np.testing.assert_allclose([gn[:3].mean(), gn[3:].mean()], norms.mean(), rtol=1e-6)  # group means aligned
    np.testing.assert_allclose([grp["fc.bias"][:3].mean(), grp["fc.bias"][3:].mean()], b.mean(), atol=1e-6)
    assert calibrate({"fc.weight": w, "fc.bias": b}, LAYOUT, [3, 3], "none")["fc.weight"].tobytes() == w.tobytes()


def test_a_grouped_classifier_has_its_groups_on_one_scale(pz):
    # the runtime's calibration ("group"): every group of 17, 17, 16 classes has the mean row norm and
    # the mean bias of all 50 classes; within a group the rows keep their generated spread
    clf = pz.personalize(NAMES[:50])
    norms = np.linalg.norm(clf.params["fc.weight"].astype(np.float64), axis=1)
    bias = clf.params["fc.bias"].astype(np.float64)
    for a, e in ((0, 17), (17, 34), (34, 50)):
        assert abs(norms[a:e].mean() - norms.mean()) < 1e-5 * norms.mean()
        assert abs(bias[a:e].mean() - bias.mean()) < 1e-6
        assert np.ptp(norms[a:e]) > 0.01
    raw = pz._params(pz._settings(None, None, 0, 1)[0], pz.class_embeddings(NAMES[:50]), 0, 1, calibration="none")
    raw_norms = np.linalg.norm(raw["fc.weight"].astype(np.float64), axis=1)
    group_means = [raw_norms[a:e].mean() for a, e in ((0, 17), (17, 34), (34, 50))]
    assert np.ptp(group_means) > 1e-4 * raw_norms.mean()  # the calibration had something to do


# ------------------------------------------------------------------ limits


def test_over_the_limit_is_refused(tiny):
    p = Personalizer.from_bundle(tiny, threads=1)
    names = [f"c{i}" for i in range(MAX_CLASSES + 1)]
    with pytest.raises(PromptError) as e:
        p.personalize(names)
    assert str(e.value) == (f"the prompt has {MAX_CLASSES + 1} classes but this bundle allows 2 to {MAX_CLASSES}; "
                            f"split the task into prompts of at most {MAX_CLASSES} classes")


def test_cli_over_the_limit_exit_2_one_line(tiny, tmp_path):
    f = tmp_path / "classes.txt"
    f.write_text("\n".join(f"c{i}" for i in range(MAX_CLASSES + 1)))
    r = run("personalize", "--classes-file", f, "-o", tmp_path / "m.onnx", "--bundle", tiny)
    one_error_line(r, f"has {MAX_CLASSES + 1} classes", f"allows 2 to {MAX_CLASSES}")
    assert not (tmp_path / "m.onnx").exists()


# ------------------------------------------------------------------ --classes-file


def test_classes_from_lines():
    text = "# my shop\n\ndog\n  Golden  retriever \n# not a class\ncat, horse\nbird\n"
    assert classes_from_lines(text) == ["dog", "Golden retriever", "cat", "horse", "bird"]
    with pytest.raises(PromptError, match="^line 3: class name 2 of 2 is empty"):
        classes_from_lines("dog\ncat\nhorse,\n")
    with pytest.raises(PromptError, match="names no class"):
        classes_from_lines("# only a comment\n\n")


def test_classes_from_lines_duplicate_across_lines():
    with pytest.raises(PromptError, match='the class "dog" is named twice'):
        classes_from_lines("dog\ncat\nDOG\n")


def test_cli_classes_file(tiny, tmp_path):
    names = [f"thing {i}" for i in range(10)]  # K_max 4: three groups
    f = tmp_path / "classes.txt"
    f.write_text("# ten things\n" + "\n".join(names) + "\n\n")
    out = tmp_path / "m.onnx"
    r = run("personalize", "--classes-file", f, "-o", out, "--bundle", tiny, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["labels"] == names
    assert PersonalizedClassifier.load(out).labels == names
    # errors: one line, exit 2
    one_error_line(run("personalize", "dog", "--classes-file", f, "-o", tmp_path / "x.onnx", "--bundle", tiny),
                   "leave out CLASSES")
    bad = tmp_path / "bad.txt"
    bad.write_text("dog\ncat\nd\u200bog\n")
    one_error_line(run("personalize", "--classes-file", bad, "-o", tmp_path / "x.onnx", "--bundle", tiny),
                   str(bad), "line 3:", "zero-width")
    bad.write_bytes(b"dog\n\xff\n")
    one_error_line(run("personalize", "--classes-file", bad, "-o", tmp_path / "x.onnx", "--bundle", tiny),
                   "is not UTF-8 text")
    one_error_line(run("personalize", "--classes-file", f, "-o", f, "--bundle", tiny, "--force"), "--classes-file")


def test_generate_onnx_gives_the_same_grouped_classifier(tmp_path):
    # generate.onnx (what JS runs) batches the groups like the denoiser loop does; the shipped default
    # is prior-only (no step runs), so the default with its steps run (`only` dropped)
    steps = with_steps(tmp_path / "steps")
    loop = Personalizer.from_bundle(steps, threads=1).personalize(NAMES[:50], seed=3)
    gen = Personalizer.from_bundle(steps, threads=1, use_generate=True)
    clf = gen.personalize(NAMES[:50], seed=3)
    assert gen._gen is not None  # the graph ran
    for n in loop.params:
        np.testing.assert_allclose(clf.params[n], loop.params[n], atol=1e-5)
