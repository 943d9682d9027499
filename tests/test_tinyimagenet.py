"""Tiny-ImageNet layout, class folders without a split, the union with merges, the seeded holdout."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tina_edge.train.data.small import DatasetError, DatasetNotFoundError
from tina_edge.train.data import (concat_photosets, load_class_folders, load_tiny_imagenet, take_per_class)
from tina_edge.train.data.universe import DEFAULT_MERGE, UniverseSpec, build_universe, choose_holdout, class_table

WORDS = {"n01443537": "goldfish, Carassius auratus", "n04133789": "sandal",
         "n02480855": "gorilla, Gorilla gorilla", "n09999999": "unused, not listed"}


def _jpeg(path: Path, colour) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((64, 64, 3), colour, np.uint8)).save(path)


def make_tiny(root: Path, n_train: int = 4) -> Path:
    wnids = ["n01443537", "n04133789", "n02480855"]
    (root / "wnids.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "wnids.txt").write_text("\n".join(wnids))  # no trailing newline, like our copy
    (root / "words.txt").write_text("".join(f"{w}\t{n}\n" for w, n in WORDS.items()))
    ann = []
    for c, w in enumerate(wnids):
        for i in range(n_train):
            _jpeg(root / "train" / w / "images" / f"{w}_{i}.JPEG", (40 * c, 10 * i, 0))
        for i in range(2):
            f = f"val_{c * 2 + i}.JPEG"
            _jpeg(root / "val" / "images" / f, (40 * c, 0, 200))
            ann.append(f"{f}\t{w}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(ann) + "\n")
    return root


def test_tiny_imagenet_names_synonyms_and_splits(tmp_path):
    root = make_tiny(tmp_path / "tiny")
    tr = load_tiny_imagenet(root, "train")
    va = load_tiny_imagenet(root, "val")
    assert tr.classes == ["goldfish", "sandal", "gorilla"] == va.classes
    assert tr.synonyms["goldfish"] == ["Carassius auratus"] and tr.ids["sandal"] == "n04133789"
    assert len(tr) == 12 and np.bincount(tr.labels).tolist() == [4, 4, 4]
    assert len(va) == 6 and np.bincount(va.labels).tolist() == [2, 2, 2]
    assert tr.load(0).size == (64, 64)
    assert load_tiny_imagenet(root, "train", extra=False).classes == ["goldfish", "sandal"]


def test_tiny_imagenet_missing_layout_says_what_to_do(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="wnids.txt"):
        load_tiny_imagenet(tmp_path, "train")
    with pytest.raises(DatasetError, match="split"):
        load_tiny_imagenet(make_tiny(tmp_path / "t"), "test")


def test_class_folders_without_split_are_split_deterministically(tmp_path):
    for c in ("cat", "dog"):
        for i in range(10):
            _jpeg(tmp_path / "pets" / c / f"{i}.jpg", (i, 0, 0))
    tr = load_class_folders(tmp_path / "pets", "train", seed=3)
    te = load_class_folders(tmp_path / "pets", "test", seed=3)
    assert tr.classes == ["cat", "dog"] and len(tr) == 16 and len(te) == 4
    assert not set(tr.items) & set(te.items)  # disjoint
    assert load_class_folders(tmp_path / "pets", "test", seed=3).items == te.items  # same seed, same split
    assert load_class_folders(tmp_path / "pets", "test", seed=4).items != te.items


def test_union_merges_declared_duplicates_and_refuses_others(tmp_path):
    tiny = load_tiny_imagenet(make_tiny(tmp_path / "tiny"), "train")
    for i in range(3):
        _jpeg(tmp_path / "fm" / "train" / "sandal" / f"{i}.jpg", (0, 0, 0))
        _jpeg(tmp_path / "fm" / "train" / "bag" / f"{i}.jpg", (0, 0, 0))
    fm = load_class_folders(tmp_path / "fm", "train", name="fashion-mnist")
    u = concat_photosets([tiny, fm], DEFAULT_MERGE)
    assert u.classes == ["goldfish", "sandal", "gorilla", "bag"]
    assert np.bincount(u.labels).tolist() == [4, 7, 4, 3]
    with pytest.raises(DatasetError, match="sandal"):
        concat_photosets([tiny, fm], {})
    capped = take_per_class(u, 2, seed=0)
    assert np.bincount(capped.labels).tolist() == [2, 2, 2, 2]


def test_holdout_is_seeded_and_recorded_with_synonyms(tmp_path):
    root = make_tiny(tmp_path / "tiny")
    spec = UniverseSpec(tiny_imagenet=str(root), train_per_class=3, test_per_class=None)
    tr = build_universe(spec, "train")
    assert np.bincount(tr.labels).tolist() == [3, 3, 3]
    names = [f"c{i}" for i in range(50)]
    h = choose_holdout(names, 0.2, seed=1)
    assert len(h) == 10 and h == choose_holdout(names, 0.2, seed=1) != choose_holdout(names, 0.2, seed=2)
    table = class_table(tr, ["goldfish"])
    assert table[0] == {"name": "goldfish", "synonyms": ["Carassius auratus"], "id": "n01443537", "holdout": True}


@pytest.mark.realdata
def test_real_tiny_imagenet_has_202_classes_500_and_50_per_class(tiny_imagenet):
    """The shared copy (conftest's `tiny_imagenet`: ../shared/data's archive, extracted once)."""
    REAL = tiny_imagenet
    tr = load_tiny_imagenet(REAL, "train")
    va = load_tiny_imagenet(REAL, "val")
    assert len(tr.classes) == 202 and np.bincount(tr.labels).min() == 500
    assert np.bincount(va.labels).min() == 50 and len(va) == 10100
