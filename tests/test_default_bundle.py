"""The embedded default bundle: it loads, says what it was trained on, and its models work on real images."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tina_edge.runtime import Personalizer
from tina_edge.runtime.bundle import default_bundle_path, open_bundle

ROOT = Path(__file__).resolve().parents[1]
SHARED_CIFAR = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
FASHION = Path("/usr/share/datasets/fashion-mnist")

pytestmark = pytest.mark.skipif(not (default_bundle_path() / "manifest.json").is_file(),
                                reason="no embedded default bundle in this checkout")


@pytest.fixture(scope="module")
def tina():
    return Personalizer.from_bundle(threads=1)


def test_manifest_records_training_and_evaluation():
    m = open_bundle(None).manifest
    assert m.text_encoder.kind == "minilm" and m.text_encoder.embedding_dim == 384
    assert m.k_max == 10
    assert sorted(m.training["holdout_classes"]) == ["automobile", "cat", "pullover", "sneaker"]
    assert len(m.training["classes"]) == 20 and len(m.vocabulary) == 16
    assert not set(m.vocabulary) & set(m.training["holdout_classes"])
    assert "cifar10" in m.training["datasets"] and "fashion" in m.training["datasets"]
    for kind in ("id", "ood"):
        assert set(m.evaluation[kind]) >= {"generated", "fine-tuned", "selection", "chance"}
    total = sum(f["bytes"] for f in m.files.values())
    assert total <= 40 * 1024 * 1024, f"default bundle is {total / 1e6:.1f} MB (limit 40 MB)"


def test_info_prints_training_facts():
    out = subprocess.run([sys.executable, "-m", "tina_edge.cli.main", "info"], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    for word in ("all-MiniLM-L6-v2", "automobile", "sneaker", "generated"):
        assert word in out.stdout


def test_novelty_and_every_k(tina):
    nov = tina.novelty(["dog", "cat", "sneaker", "zebra"])
    assert (nov["seen"], nov["new"]) == (["dog"], ["cat", "sneaker", "zebra"])
    assert nov["nearest"]["cat"][0][0] == "dog"  # what a held-out name leans on
    assert ["cat", "dog"] in [sorted(p[:2]) for p in nov["confusable"]]
    names = ["airplane", "bird", "deer", "dog", "frog", "horse", "ship", "truck", "trouser", "bag"]
    for k in range(2, 11):
        clf = tina.personalize(names[:k], seed=k)
        assert clf.labels == names[:k]
        p = clf.predict(np.zeros((3, 32, 32, 3), np.uint8))
        assert p.probabilities.shape == (3, k)


def _real_test_images(tmp_path_factory):
    sys.path.insert(0, str(ROOT))
    from tina_edge.train.data import extract_archive_safely, load_idx, load_image_folder

    dest = tmp_path_factory.mktemp("cifar")
    extract_archive_safely(SHARED_CIFAR, dest)
    cifar = load_image_folder(dest / "cifar10", "test")
    fashion = load_idx(FASHION, "test")
    return cifar, fashion


@pytest.mark.slow  # ~1 min: unpacks CIFAR-10 test JPEGs and reads 20 000 real test images
@pytest.mark.realdata
@pytest.mark.skipif(not SHARED_CIFAR.is_file() or not FASHION.is_dir(),
                    reason="needs ../shared/data/cifar10-jpeg.tar.gz and apt's dataset-fashion-mnist")
def test_generated_models_classify_real_test_images(tina, tmp_path_factory, tmp_path):
    pytest.importorskip("PIL")
    cifar, fashion = _real_test_images(tmp_path_factory)
    prompt = ["dog", "cat", "sneaker", "ship", "bag"]  # cat and sneaker were held out of training
    clf = tina.personalize(prompt, seed=0)
    clf.save(tmp_path / "model.onnx")
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert json.loads(sess.get_modelmeta().custom_metadata_map["labels"]) == prompt
    correct = total = 0
    for j, name in enumerate(prompt):
        ds = cifar if name in cifar.classes else fashion
        imgs = ds.images[ds.labels == ds.classes.index(name)][:300]
        probs = sess.run(["probabilities"], {"image": imgs})[0]
        correct += int((probs.argmax(1) == j).sum())
        total += len(imgs)
    acc = 100.0 * correct / total
    assert acc > 100.0 / len(prompt) + 40, acc  # chance is 20%
