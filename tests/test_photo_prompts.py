"""Photo prompts on the default (trunk) bundle, issue 21: photos through the bundle's own trunk fused
with the name's rows (runtime/photo_prompts.py), the Python API, the CLI, and what the model records."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from PIL import Image

from tina_edge.cli.main import main
from tina_edge.runtime import Personalizer
from tina_edge.runtime.errors import ImageError, PromptError
from tina_edge.runtime.photo_prompts import (LOO_GRID, MAX_PHOTOS_PER_CLASS, PhotoFeaturizer, built_from,
                                             fusion_weight, loo_weight, photo_head_rows)

from cli_checks import one_error_line


def _photos(seed: int, n: int, size: int = 48) -> list[np.ndarray]:
    """n small, distinct RGB photos: a coloured gradient per seed plus noise (real pixels, no files)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, 3)
    yy, xx = np.mgrid[0:size, 0:size]
    out = []
    for _ in range(n):
        img = (base[None, None, :] + (xx[..., None] * (seed + 1) * 3 + yy[..., None] * 2) % 97
               + rng.integers(0, 40, (size, size, 3)))
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return out


def _folder(path, seed: int, n: int):
    path.mkdir(parents=True)
    for j, img in enumerate(_photos(seed, n)):
        Image.fromarray(img).save(path / f"{j}.png")
    return path


@pytest.fixture(scope="module")
def pz():
    return Personalizer.from_bundle(threads=1)


def test_photos_change_the_rows_and_metadata_has_only_counts(pz, tmp_path):
    plain = pz.personalize("goldfish, lemon", steps=5)
    clf = pz.personalize("goldfish, lemon", steps=5, images={"lemon": _photos(1, 3)})
    assert not np.allclose(plain.params["fc.weight"], clf.params["fc.weight"])
    assert clf.params["fc.weight"].shape == plain.params["fc.weight"].shape
    assert clf.meta.image_prompts == {"lemon": 3} and clf.meta.texts == ["goldfish", "lemon"]
    path = clf.save(tmp_path / "m.onnx")
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert set(props) - {p.key for p in onnx.load_from_string(plain.to_bytes()).metadata_props} == {"image_prompts"}
    assert json.loads(props["image_prompts"]) == {"lemon": 3}
    assert len(path.read_bytes()) - len(plain.to_bytes()) < 200  # no photo, no feature stored


def test_photos_only_labels_that_mean_nothing(pz):
    rex, bella = _photos(2, 4), _photos(3, 4)
    clf = pz.personalize("Rex, product 7", steps=5, images={"rex": rex, "Product 7": bella}, photos_only=True)
    assert clf.labels == ["Rex", "product 7"] and clf.meta.texts == [None, None]
    pred = clf.predict(np.stack(rex[:2] + bella[:2]))
    assert [int(i) for i in pred.indices] == [0, 0, 1, 1]
    f = PhotoFeaturizer(pz.trunk_model(), pz.manifest.template.input.preprocess, threads=1)
    W, b = photo_head_rows(None, None, {0: f.features(rex), 1: f.features(bella)}, [False, False], 2)
    np.testing.assert_allclose(clf.params["fc.weight"], W, atol=1e-6)  # photos alone: the prototype rows
    np.testing.assert_allclose(clf.params["fc.bias"], b, atol=1e-6)
    mixed = pz.personalize("goldfish, Rex", steps=5, images={"Rex": rex}, photos_only={"Rex"})
    assert mixed.meta.texts == ["goldfish", None] and mixed.meta.image_prompts == {"Rex": 4}
    assert built_from(mixed.labels, mixed.meta.texts, mixed.meta.image_prompts) == {"goldfish": "name", "Rex": "4 photos"}
    nov = pz.novelty(mixed.labels, model=mixed)  # the label 'Rex' is not a name: not in seen / new
    assert nov["seen"] == ["goldfish"] and nov["new"] == [] and nov["built_from"]["Rex"] == "4 photos"
    described = pz.personalize("goldfish, Rex", steps=3, descriptions={"goldfish": "an orange pet fish"},
                               images={"goldfish": rex[:2], "Rex": bella}, photos_only={"Rex"})
    assert pz.novelty(described.labels, descriptions={"goldfish": "an orange pet fish"}, model=described)[
        "built_from"] == {"goldfish": "description 'an orange pet fish' + 2 photos", "Rex": "4 photos"}


def test_features_computed_once_per_photo(pz):
    pz.personalize("goldfish, lemon", steps=3, images={"lemon": _photos(1, 2)})  # the featurizer exists now
    fz = pz._photo_featurizer
    before = fz.photos_run
    pz.personalize("goldfish, lemon, Rex", steps=3, candidates=3,
                   images={"lemon": _photos(1, 3), "goldfish": _photos(4, 2), "Rex": _photos(5, 5)}, photos_only={"Rex"})
    assert fz.photos_run - before == 10


def test_same_pixels_same_model_bytes(pz):
    imgs = {"lemon": _photos(6, 3), "Rex": _photos(7, 2)}
    a = pz.personalize("lemon, Rex", steps=5, images=imgs, photos_only={"Rex"}).to_bytes()
    b = Personalizer.from_bundle(threads=1).personalize("lemon, Rex", steps=5, images=imgs, photos_only={"Rex"}).to_bytes()
    assert a == b
    f1 = PhotoFeaturizer(pz.trunk_model(), pz.manifest.template.input.preprocess, threads=1, batch=2)
    f2 = PhotoFeaturizer(pz.trunk_model(), pz.manifest.template.input.preprocess, threads=1, batch=8)
    x = _photos(8, 5)
    assert f1.features(x).tobytes() == f1.features(x).tobytes()
    np.testing.assert_allclose(f1.features(x), f2.features(x), atol=1e-5)  # batching does not change a feature


def test_features_are_what_predict_sees(pz):
    """The featurizer's features through the generated head give exactly predict's logits."""
    imgs = _photos(9, 3, size=77)  # not the trunk's size: the preprocessing must be predict's
    clf = pz.personalize("goldfish, lemon", steps=3)
    f = PhotoFeaturizer(pz.trunk_model(), pz.manifest.template.input.preprocess, threads=1).features(imgs)
    z = f @ clf.params["fc.weight"].T + clf.params["fc.bias"]
    probs = np.exp(z - z.max(1, keepdims=True))
    np.testing.assert_allclose(probs / probs.sum(1, keepdims=True), clf.predict(imgs).probabilities, atol=1e-5)


def test_head_rows_rule():
    rng = np.random.default_rng(0)
    feats = {0: rng.normal(size=(3, 16)) + 2, 1: rng.normal(size=(2, 16)) - 2}
    W, b = photo_head_rows(None, None, feats, [False, False], 2)  # photos only: a centred cosine prototype
    X = np.concatenate([feats[0], feats[1]])
    assert ((X @ W.T + b).argmax(1) == [0, 0, 0, 1, 1]).all()
    Wn, bn = rng.normal(size=(2, 16)), np.zeros(2)
    W2, _ = photo_head_rows(Wn, bn, {1: feats[1]}, [True, True], 2)  # class 0 named only
    assert W2.shape == (2, 16) and np.isfinite(W2).all()
    with pytest.raises(PromptError, match="needs photos"):
        photo_head_rows(None, None, {1: feats[1]}, [False, False], 2)
    # leave-one-out picks the photo weight per task: photos win over a name that points the wrong way
    feats3 = {0: rng.normal(size=(4, 16)) + 3 * np.eye(16)[0], 1: rng.normal(size=(4, 16)) + 3 * np.eye(16)[1]}
    wrong = np.stack([np.eye(16)[1], np.eye(16)[0]]) * 1.0  # each name row points at the other class
    right = wrong[::-1].copy()
    centre = np.concatenate(list(feats3.values())).mean(0)
    assert loo_weight(wrong, np.zeros(2), feats3, centre, 1.0) >= 4.0
    assert loo_weight(right, np.zeros(2), feats3, centre, 1.0) == LOO_GRID[0]
    assert fusion_weight(1) > 0 and fusion_weight(3) == fusion_weight(2) and fusion_weight(50) == fusion_weight(10)


def test_a_new_name_gives_its_photos_more_weight_than_a_known_name():
    """known[i] picks the fusion table: a known name's row is the prior's exact row (lam 0.5 at one photo),
    any other text's is weaker (FUSION_WEIGHTS_NEW, 1.5): the rows are name / s_n + lam * prototype / s_p."""
    from tina_edge.runtime.photo_prompts import CENTRE, FUSION_WEIGHTS, FUSION_WEIGHTS_NEW, _spread, prototype_rows

    rng = np.random.default_rng(1)
    feats = {0: rng.normal(size=(1, 16)), 1: rng.normal(size=(1, 16))}
    Wn, bn = rng.normal(size=(2, 16)), rng.normal(size=2)
    X = np.concatenate([feats[0], feats[1]])
    Wp, bp = prototype_rows([feats[0], feats[1]], X.mean(0) if CENTRE else np.zeros(16))
    sn, sp = _spread(Wn, bn, X), _spread(Wp, bp, X)
    lam = np.array([FUSION_WEIGHTS[1], FUSION_WEIGHTS_NEW[1]])
    W, b = photo_head_rows(Wn, bn, feats, [True, True], 2, known=[True, False])
    np.testing.assert_allclose(W, Wn / sn + lam[:, None] * Wp / sp, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(b, bn / sn + lam * bp / sp, rtol=1e-6, atol=1e-6)
    assert fusion_weight(1, known=False) == FUSION_WEIGHTS_NEW[1] > fusion_weight(1) == FUSION_WEIGHTS[1]
    W_all_new, _ = photo_head_rows(Wn, bn, feats, [True, True], 2)  # known=None: no name is known
    np.testing.assert_allclose(W_all_new[1], W[1], rtol=1e-6)
    assert not np.allclose(W_all_new[0], W[0])


def test_personalize_weighs_photos_by_whether_the_name_is_known(pz):
    """The rows personalize writes are photo_head_rows of its own name rows with known[i] = the class's
    text is a name the bundle knows: "goldfish" is, a description of it is not."""
    photo, other_photo = _photos(3, 1, size=64), _photos(4, 1, size=64)
    fz = PhotoFeaturizer(pz.trunk_model(), pz.manifest.template.input.preprocess, threads=1)
    feats = {0: fz.features(photo), 1: fz.features(other_photo)}
    # "toad" is a name-table alias of the vocabulary's "frog" (read as it: known); "narwhal" a table noun (new)
    for first, desc, known in (("goldfish", None, [True, True]), ("goldfish", {"goldfish": "a small orange pet fish"}, [False, True]),
                               ("toad", None, [True, True]), ("narwhal", None, [False, True])):
        rows = pz.personalize(f"{first}, lemon", steps=2, seed=1, descriptions=desc).params  # the same name rows
        W, b = photo_head_rows(rows["fc.weight"], rows["fc.bias"], feats, [True, True], 2, known=known)
        clf = pz.personalize(f"{first}, lemon", images={first: photo, "lemon": other_photo}, steps=2, seed=1,
                             descriptions=desc)
        np.testing.assert_allclose(clf.params["fc.weight"], W, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(clf.params["fc.bias"], b, rtol=1e-6, atol=1e-7)
        other, _ = photo_head_rows(rows["fc.weight"], rows["fc.bias"], feats, [True, True], 2, known=[not known[0], True])
        assert not np.allclose(clf.params["fc.weight"][0], other[0], atol=1e-5)  # the flag mattered


def test_bad_photo_input_python(pz, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match=r"class 'lemon': directory .*empty holds no image files"):
        pz.personalize("goldfish, lemon", images={"lemon": tmp_path / "empty"})
    with pytest.raises(PromptError, match=f"has {MAX_PHOTOS_PER_CLASS + 1} photos; give at most {MAX_PHOTOS_PER_CLASS}"):
        pz.personalize("goldfish, lemon", images={"lemon": _photos(1, MAX_PHOTOS_PER_CLASS + 1, size=8)})
    with pytest.raises(PromptError, match="given twice"):
        pz.personalize("goldfish, lemon", images={"lemon": _photos(1, 1), "Lemon": _photos(1, 1)})
    with pytest.raises(PromptError, match="asked to be photos-only but no photos are given"):
        pz.personalize("goldfish, Rex", images={"Rex": _photos(1, 1)}, photos_only={"goldfish"})
    with pytest.raises(PromptError, match="photos-only and has a description"):
        pz.personalize("goldfish, Rex", images={"Rex": _photos(1, 1)}, photos_only=True, descriptions={"Rex": "a dog"})


def test_cli_images_and_from_folders(tmp_path):
    rex, bella = _folder(tmp_path / "photos" / "rex", 2, 3), _folder(tmp_path / "photos" / "bella", 3, 2)
    r = CliRunner().invoke(main, ["personalize", "rex, bella", "--images", f"rex={rex}", "--images", f"bella={bella}",
                                  "-o", str(tmp_path / "m.onnx"), "--steps", "3", "--photos-only"])
    assert r.exit_code == 0, r.output
    assert "built from: rex: 3 photos; bella: 2 photos" in r.stderr and "new (not in training" not in r.stderr
    r = CliRunner().invoke(main, ["personalize", "--from-folders", str(tmp_path / "photos"), "-o", str(tmp_path / "f.onnx"),
                                  "--steps", "3", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["labels"] == ["bella", "rex"] and out["built_from"] == {"bella": "name + 2 photos", "rex": "name + 3 photos"}
    assert out["image_prompts"] == {"bella": 2, "rex": 3}


def test_cli_bad_photo_input_exits_2(tmp_path):
    photos = tmp_path / "photos"
    _folder(photos / "rex", 2, 2)
    (photos / "bella").mkdir()
    one_error_line(CliRunner().invoke(main, ["personalize", "--from-folders", str(photos), "-o", str(tmp_path / "a.onnx")]),
                   "bella", "holds no image files")
    _folder(tmp_path / "many", 1, MAX_PHOTOS_PER_CLASS + 1)
    one_error_line(CliRunner().invoke(main, ["personalize", "rex, bella", "--images", f"rex={tmp_path / 'many'}",
                                             "-o", str(tmp_path / "b.onnx")]), "give at most 20")
    _folder(photos / "bella2", 3, 1)
    one_error_line(CliRunner().invoke(main, ["personalize", "--from-folders", str(photos), "--images",
                                             f"REX={tmp_path / 'many' / '0.png'}", "-o", str(tmp_path / "c.onnx")]),
                   "given twice")
    one_error_line(CliRunner().invoke(main, ["personalize", "rex", "--from-folders", str(photos), "-o",
                                             str(tmp_path / "d.onnx")]), "leave out CLASSES")
    assert not any((tmp_path / f"{c}.onnx").exists() for c in "abcd")


def test_photos_only_needs_a_trunk_bundle(tmp_path):
    """A bundle whose template has no fc head on a trunk (and no image tower) cannot take photo prompts."""
    from runtime_fixtures import make_tiny_bundle

    p = Personalizer.from_bundle(make_tiny_bundle(tmp_path / "tiny"), threads=1)
    with pytest.raises(PromptError, match="photos_only needs a trunk bundle without an image tower"):
        p.personalize("dog, Rex", images={"Rex": _photos(1, 2)}, photos_only=True)
    r = CliRunner().invoke(main, ["personalize", "--from-folders", str(_folder(tmp_path / "p" / "rex", 1, 2).parent),
                                  "--images", f"cat={tmp_path / 'p' / 'rex' / '0.png'}", "--photos-only",
                                  "--bundle", str(tmp_path / "tiny"), "-o", str(tmp_path / "m.onnx")])
    one_error_line(r, "photos_only needs a trunk bundle")


_RSS_CHILD = """
import numpy as np
from tina_edge.runtime import Personalizer
p = Personalizer.from_bundle(threads=1)
rng = np.random.default_rng(0)
names = list(p.manifest.vocabulary[:10])
imgs = {n: [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(5)] for n in names}
p.personalize(names, images=imgs).to_bytes()
print([int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")][0])
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM is read from /proc")
def test_ten_classes_five_photos_within_300mb():
    """Issue 21: peak RSS <= 300e6 bytes for 10 classes x 5 photos, trunk passes included (fresh process,
    VmHWM: see test_memory.py for why not ru_maxrss)."""
    r = subprocess.run([sys.executable, "-c", _RSS_CHILD], capture_output=True, text=True, check=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    peak = int(r.stdout.strip().splitlines()[-1]) * 1024
    assert peak <= 300e6, peak
