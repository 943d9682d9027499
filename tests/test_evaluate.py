"""`tina-edge evaluate` and runtime/evaluation.py: folder matching, metrics, unknown answers, real photos."""

from __future__ import annotations

import json
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from runtime_fixtures import make_tiny_bundle

from shared_data import CIFAR10_ARCHIVE

from tina_edge.cli.main import main
from tina_edge.runtime import PersonalizedClassifier, Personalizer
from tina_edge.runtime.bundle import default_bundle_path
from tina_edge.runtime.errors import ArgumentError, DatasetError
from tina_edge.runtime.evaluation import confusion_matrix, evaluate, labelled_images

SHARED_CIFAR = CIFAR10_ARCHIVE  # ../shared/data, or $TINA_EDGE_SHARED_DATA


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("ev")
    out = d / "m.onnx"
    r = run("personalize", "dog, cat, sea lion", "-o", out, "--bundle", make_tiny_bundle(d / "bundle"))
    assert r.exit_code == 0, r.output
    return out


def _png(path: Path, seed: int, size=(12, 12)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)


@pytest.fixture
def folder(tmp_path) -> Path:
    """DIR with case/whitespace/underscore variants of the labels, nesting, and things to leave out."""
    d = tmp_path / "photos"
    for i in range(4):
        _png(d / "DOG" / f"{i}.png", i)
    for i in range(3):
        _png(d / " Cat " / "indoor" / f"{i}.jpg", 10 + i, size=(20, 16))  # nested, another size
    for i in range(2):
        _png(d / "Sea_Lion" / f"{i}.PNG", 20 + i)
    _png(d / "zebra" / "z.png", 30)                          # matches no label: reported, not used
    _png(d / ".thumbs" / "t.png", 31)                         # hidden: left out
    _png(d / "DOG" / ".hidden.png", 32)
    (d / "DOG" / "dog_boxes.txt").write_text("0 0 1 1")      # not an image by suffix: left out, counted
    (d / "notes.txt").write_text("loose file")                # not in a class folder: left out, counted
    return d


def test_folders_match_labels_ignoring_case_whitespace_underscore(model, folder):
    clf = PersonalizedClassifier.load(model)
    data = labelled_images(folder, clf.labels)
    assert data.folders == {"dog": "DOG", "cat": " Cat ", "sea lion": "Sea_Lion"}
    assert data.unmatched_folders == ["zebra"] and data.missing_labels == []
    assert sorted(p.name for p in data.skipped_files) == ["dog_boxes.txt", "notes.txt"]
    assert len(data.files) == 9 and np.bincount(data.targets).tolist() == [4, 3, 2]
    assert all(".hidden" not in str(f) and ".thumbs" not in str(f) for f in data.files)
    assert [f.parent.name for f in data.files if "Cat" in str(f)] == ["indoor"] * 3


def test_metrics_are_predicts_answers(model, folder):
    clf = PersonalizedClassifier.load(model)
    ev = evaluate(clf, folder, batch_size=2)  # batching must not change a single answer
    data = labelled_images(folder, clf.labels)
    pred = clf.predict(data.files)
    assert ev.n == 9 and ev.correct == int((pred.indices == data.targets).sum())
    assert ev.accuracy == pytest.approx(ev.correct / 9)
    want = np.zeros((3, 3), np.int64)
    for t, p in zip(data.targets, pred.indices):
        want[t, p] += 1
    assert ev.confusion.tolist() == want.tolist() and ev.columns == clf.labels
    for i, lab in enumerate(clf.labels):
        assert ev.per_class[lab] == pytest.approx(want[i, i] / want[i].sum())


def test_cli_json_text_and_notes(model, folder):
    r = run("evaluate", model, folder, "--json")
    assert r.exit_code == 0, r.output
    j = json.loads(r.stdout)
    assert set(j) >= {"accuracy", "per_class", "confusion", "labels", "n"}
    assert j["labels"] == ["dog", "cat", "sea lion"] and j["n"] == 9 and j["unmatched_folders"] == ["zebra"]
    assert sum(map(sum, j["confusion"])) == 9 and j["skipped_files"] == 2
    assert "zebra" in r.stderr and "match no label" in r.stderr and "not images" in r.stderr
    # the accuracy is exactly what predict's answers on the same files give
    p = json.loads(run("predict", model, *(folder / n for n in ("DOG", " Cat ", "Sea_Lion")), "--json").stdout)
    truth = {"DOG": "dog", " Cat ": "cat", "Sea_Lion": "sea lion"}
    hits = [x["label"] == truth[Path(x["image"]).relative_to(folder).parts[0]] for x in p]
    assert len(hits) == 9 and j["accuracy"] == sum(hits) / len(hits)
    r = run("evaluate", model, folder)
    assert r.exit_code == 0 and r.stdout.startswith(f"accuracy  {j['accuracy']:.4f}  ({round(9 * j['accuracy'])}/9 images)")
    assert "confusion (rows: true class, columns: answer)" in r.stdout and "sea lion" in r.stdout


def test_min_prob_gives_unknown_column(model, folder):
    clf = PersonalizedClassifier.load(model)
    base = evaluate(clf, folder)
    all_unknown = evaluate(clf, folder, min_prob=1.0)
    assert all_unknown.columns == clf.labels + ["unknown"] and all_unknown.confusion.shape == (3, 4)
    assert all_unknown.unknown == 9 and all_unknown.accuracy == 0.0
    assert evaluate(clf, folder, min_prob=0.0).correct == base.correct
    thr = float(np.median(clf.predict(labelled_images(folder, clf.labels).files).confidence))
    mid = evaluate(clf, folder, min_prob=thr)
    assert 0 < mid.unknown < 9 and mid.correct <= base.correct
    j = json.loads(run("evaluate", model, folder, "--json", "--min-prob", thr).stdout)
    assert j["unknown"] == mid.unknown and j["columns"][-1] == "unknown" and j["min_prob"] == pytest.approx(thr)
    with pytest.raises(ArgumentError, match="min_prob must be from 0 to 1"):
        evaluate(clf, folder, min_prob=1.5)
    assert run("evaluate", model, folder, "--min-prob", "-0.1").exit_code == 2


def test_confusion_matrix_counts_unknown_last():
    m = confusion_matrix(np.array([0, 0, 1, 2]), np.array([0, -1, 2, 2]), 3, with_unknown=True)
    assert m.tolist() == [[1, 0, 0, 1], [0, 0, 1, 0], [0, 0, 1, 0]]


def test_plot_is_a_png(model, folder, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "confusion.png"
    r = run("evaluate", model, folder, "--plot", png, "--min-prob", 0.5)
    assert r.exit_code == 0, r.output
    with Image.open(png) as im:
        assert im.format == "PNG" and im.width > 200 and im.height > 150


def test_plot_without_matplotlib_says_how_to_install(model, folder, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what a runtime-only install looks like
    r = run("evaluate", model, folder, "--plot", tmp_path / "c.png")
    assert r.exit_code == 2 and "needs matplotlib" in r.stderr and "pip install" in r.stderr
    assert "Traceback" not in r.output and not (tmp_path / "c.png").exists()


@pytest.mark.parametrize("layout,msg", [
    ({"zebra": 1, "horse": 1}, "no folder of .* matches a label of the model .*folders found: horse, zebra"),
    ({"Dog": 1, "dog ": 1}, "both match the label 'dog'"),
    ({"dog": 0}, "hold no image files"),
])
def test_dataset_errors(model, tmp_path, layout, msg):
    for name, n in layout.items():
        (tmp_path / name).mkdir()
        for i in range(n):
            _png(tmp_path / name / f"{i}.png", i)
    with pytest.raises(DatasetError, match=msg):
        evaluate(PersonalizedClassifier.load(model), tmp_path)
    r = run("evaluate", model, tmp_path)
    assert r.exit_code == 2 and r.stderr.startswith("error: ") and "Traceback" not in r.output


def test_labels_without_folder_have_no_recall(model, tmp_path):
    _png(tmp_path / "dog" / "a.png", 0)
    ev = evaluate(PersonalizedClassifier.load(model), tmp_path)
    assert ev.data.missing_labels == ["cat", "sea lion"] and ev.per_class["cat"] is None and ev.n == 1
    r = run("evaluate", model, tmp_path)
    assert "no folder for label(s): cat, sea lion" in r.stderr


# ----------------------------------------------------------------------------- real photos

CLASSES = ["airplane", "dog", "ship", "horse"]  # CIFAR-10 folder names (this test says so)
PER_CLASS = 100


@pytest.fixture(scope="module")
def cifar_photos(tmp_path_factory) -> Path:
    """The first PER_CLASS test JPEGs of CLASSES, read once from ../shared/data's archive."""
    if not SHARED_CIFAR.is_file():
        pytest.skip("needs ../shared/data/cifar10-jpeg.tar.gz (real photos)")
    out = tmp_path_factory.mktemp("cifar") / "test"
    want = {c: 0 for c in CLASSES}
    with tarfile.open(SHARED_CIFAR, "r:gz") as tf:
        for m in tf:
            parts = Path(m.name).parts
            if m.isfile() and len(parts) == 4 and parts[1] == "test" and parts[2] in want and want[parts[2]] < PER_CLASS:
                (out / parts[2]).mkdir(parents=True, exist_ok=True)
                (out / parts[2] / parts[3]).write_bytes(tf.extractfile(m).read())
                want[parts[2]] += 1
            if all(v == PER_CLASS for v in want.values()):
                break
    return out


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.skipif(not (default_bundle_path() / "manifest.json").is_file(), reason="no default bundle")
@pytest.mark.parametrize("scale", [1, 3], ids=["as-shipped", "3x-larger-png"])
def test_real_photos_evaluate_equals_predict_and_plain_onnxruntime(cifar_photos, tmp_path, scale):
    """The judged property; at 3x the photos are 96 px PNGs, so both sides must resize them."""
    import onnxruntime as ort

    photos = cifar_photos
    if scale != 1:
        big = tmp_path / "big"
        for f in sorted(photos.rglob("*.jpg")):
            (big / f.parent.name).mkdir(parents=True, exist_ok=True)
            with Image.open(f) as im:
                im.convert("RGB").resize((im.width * scale, im.height * scale), Image.BICUBIC).save(big / f.parent.name / (f.stem + ".png"))
        photos = big
    model = tmp_path / "model.onnx"
    Personalizer.from_bundle().personalize(CLASSES, seed=0).save(model)
    r = run("evaluate", model, photos, "--json")
    assert r.exit_code == 0, r.output
    j = json.loads(r.stdout)
    assert j["n"] == len(CLASSES) * PER_CLASS and j["labels"] == CLASSES

    # 1. exactly the accuracy of predict's answers on the same files
    p = json.loads(run("predict", model, photos, "--json").stdout)
    assert len(p) == j["n"]
    hits = [x["label"] == Path(x["image"]).parent.name for x in p]
    assert j["accuracy"] == sum(hits) / len(hits)

    # 2. within 2 points of a plain onnxruntime run with an ordinary (bicubic) resize
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    shape = sess.get_inputs()[0].shape
    h, w = (shape[1], shape[2]) if all(isinstance(s, int) for s in shape[1:3]) else (None, None)
    labels = json.loads(sess.get_modelmeta().custom_metadata_map["labels"])
    correct = total = 0
    for i, c in enumerate(labels):
        batch = []
        for f in sorted((photos / c).iterdir()):
            with Image.open(f) as im:
                im = im.convert("RGB")
                batch.append(np.asarray(im if h is None else im.resize((w, h), Image.BICUBIC), dtype=np.uint8))
        probs = sess.run(["probabilities"], {"image": np.stack(batch)})[0]
        correct += int((probs.argmax(1) == i).sum())
        total += len(batch)
    assert total == j["n"]
    assert abs(j["accuracy"] - correct / total) <= 0.02, (j["accuracy"], correct / total)
    assert j["accuracy"] > 1.0 / len(CLASSES) + 0.15  # and the model is far above chance on real photos


def test_progress_bar_only_when_asked_or_on_a_terminal(model, folder, capsys):
    clf = PersonalizedClassifier.load(model)
    evaluate(clf, folder, progress=True, batch_size=4)
    err = capsys.readouterr().err
    assert "/9 [" in err and "img/s" in err  # tqdm bar over the 9 images (cleared when done)
    evaluate(clf, folder)  # default: a bar only when stderr is a terminal (it is not under pytest)
    assert capsys.readouterr().err == ""
    r = run("evaluate", model, folder, "--json")
    assert "img/s" not in r.stderr  # piped: no bar in logs


def test_folder_names_and_labels_are_escaped_on_a_terminal(model, tmp_path):
    _png(tmp_path / "dog" / "a.png", 0)
    _png(tmp_path / "evil\x1b[2Jname" / "b.png", 1)  # an unmatched folder whose name holds an ESC sequence
    r = run("evaluate", model, tmp_path)
    assert r.exit_code == 0, r.output
    assert "\x1b" not in r.output and "evil\\x1b[2Jname" in r.stderr
