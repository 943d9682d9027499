"""The embedded default bundle: it loads, says what it was trained on, and its models work on real photos.

The default bundle is the photo universe of issue 11 (Tiny-ImageNet ∪ CIFAR-10 ∪ Fashion-MNIST, 221
classes, 44 held out; frozen ImageNet-pretrained EfficientNet-Lite0 at 128 px + a generated head;
all-MiniLM-L6-v2). Figures behind the thresholds below: BENCHMARKS.md §10.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tina_edge.runtime import Personalizer
from tina_edge.runtime.bundle import default_bundle_path, open_bundle

ROOT = Path(__file__).resolve().parents[1]
SEEN = ["goldfish", "school bus", "lemon", "pizza", "koala", "teapot", "sandal", "jellyfish", "barn",
        "golden retriever"]  # all in the training vocabulary

pytestmark = pytest.mark.skipif(not (default_bundle_path() / "manifest.json").is_file(),
                                reason="no embedded default bundle in this checkout")


@pytest.fixture(scope="module")
def tina():
    return Personalizer.from_bundle(threads=1)


def test_manifest_records_training_and_evaluation():
    m = open_bundle(None).manifest
    assert m.text_encoder.kind == "minilm" and m.text_encoder.embedding_dim == 384
    assert m.k_max == 20 and m.template.name == "lite0_head"
    seen = [c for c in m.training.classes if c not in m.training.holdout_classes]
    assert len(m.training.classes) == 221 and len(seen) == 177
    # the vocabulary: the 177 seen classes, then the ImageNet names of the text prior (issue 12)
    assert m.vocabulary[:177] == seen and len(m.vocabulary) == 1637
    assert m.training.text_prior["kind"] == "imagenet" and m.training.text_prior["imagenet_classes"] == 796
    assert m.training.text_prior["map"] == "kernel" and m.training.text_prior["kernel_keys"] == 177 + 796
    assert len(m.training.holdout_classes) == 44 and "parking meter" in m.training.holdout_classes
    held = {n.lower() for c in m.training.holdout_classes for n in [c, *m.training.synonyms.get(c, [])]}
    assert not {v.lower() for v in m.vocabulary} & held
    assert set(SEEN) <= set(m.vocabulary)
    assert m.training.datasets == "tiny-imagenet+cifar10+fashion-mnist"
    pre = m.template.input.preprocess
    assert (m.template.input.height, pre["resize"], pre["crop"], pre["alpha"]) == (128, "shorter_side", "center", "white")
    for kind in ("id", "ood"):
        assert set(getattr(m.evaluation, kind)) >= {"generated", "fine-tuned", "selection", "chance"}
    total = sum(f["bytes"] for f in m.files.values())
    assert total <= 60_000_000, f"default bundle is {total / 1e6:.1f} MB (limit 60 MB)"


def test_info_prints_training_facts():
    out = subprocess.run([sys.executable, "-m", "tina_edge.cli.main", "info"], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    for word in ("all-MiniLM-L6-v2", "parking meter", "generated", "tiny-imagenet", "796 ImageNet classes",
                 "text prior  calibrated kernel ridge (one key per class, gamma 6.0)"):
        assert word in out.stdout


def test_novelty_and_every_k(tina):
    nov = tina.novelty(["goldfish", "tabby", "quokka", "Egyptian cat", "zebra"])  # zebra: an ImageNet name
    assert (nov["seen"], nov["new"]) == (["goldfish", "Egyptian cat", "zebra"], ["tabby", "quokka"])
    assert "cat" in [n for n, _ in nov["nearest"]["tabby"]]  # what a held-out name leans on
    names = SEEN + ["bullfrog", "espresso", "baboon", "snail", "volleyball", "brown bear", "organ", "oboe", "maypole",
                    "cliff"]
    photo = np.random.default_rng(0).integers(0, 256, (2, 128, 128, 3), dtype=np.uint8)
    for k in (2, 3, 5, 10, 15, 20):
        clf = tina.personalize(names[:k], seed=k)
        assert clf.labels == names[:k]
        p = clf.predict(photo)
        assert p.probabilities.shape == (2, k)
        np.testing.assert_allclose(p.probabilities.sum(1), 1.0, atol=1e-5)


def _tiny_val_photos(root: Path, names: list[str], per_class: int) -> dict[str, list[Path]]:
    """The first `per_class` val photos of each of `names` (first WordNet name in words.txt) in the
    extracted Tiny-ImageNet folder `root`."""
    first = {w: n.split(",")[0].strip() for w, n in
             (line.split("\t")[:2] for line in (root / "words.txt").read_text().splitlines() if "\t" in line)}
    want = {w: first[w] for w in (root / "wnids.txt").read_text().split() if first.get(w) in names}
    out: dict[str, list[Path]] = {n: [] for n in names}
    for line in (root / "val" / "val_annotations.txt").read_text().splitlines():
        file, wnid = line.split("\t")[:2]
        if wnid in want and len(out[want[wnid]]) < per_class:
            out[want[wnid]].append(root / "val" / "images" / file)
    return out


@pytest.mark.slow  # ~20 s: classifies 300 real photos (and extracts the shared Tiny-ImageNet once per checkout)
@pytest.mark.realdata
def test_generated_models_classify_real_photos(tina, tmp_path, tiny_imagenet):
    pytest.importorskip("PIL")
    photos = _tiny_val_photos(tiny_imagenet, SEEN, per_class=30)
    assert all(len(v) == 30 for v in photos.values()), {k: len(v) for k, v in photos.items()}
    clf = tina.personalize(SEEN, seed=0)
    clf.save(tmp_path / "model.onnx")
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    assert json.loads(sess.get_modelmeta().custom_metadata_map["labels"]) == SEEN
    files = [f for name in SEEN for f in photos[name]]
    truth = np.repeat(np.arange(len(SEEN)), 30)
    pred = clf.predict(files)
    acc = float((pred.indices == truth).mean())
    # measured 0.86 mean over 100 such 10-way tasks of seen classes (BENCHMARKS.md §10); chance 0.10
    assert acc >= 0.75, acc
