"""Dataset loaders, on tiny files each test writes itself (plus one real-data test)."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tina_edge.runtime.errors import TinaEdgeError
from tina_edge.train.data.small import (
    DEFAULT_HOLDOUT,
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DEFAULT_DIR,
    DatasetError,
    DatasetNotFoundError,
    ImageDataset,
    extract_archive_safely,
    find_shared_cifar10,
    load_cifar_pickle,
    load_default_universe,
    load_idx,
    load_image_folder,
    union,
)

RNG = np.random.default_rng(0)


def rand_images(n: int, h: int = 32, w: int = 32, c: int = 3) -> np.ndarray:
    return RNG.integers(0, 256, size=(n, h, w, c), dtype=np.uint8)


# ---------------------------------------------------------------------------------------------
# image folders
# ---------------------------------------------------------------------------------------------


def make_folder(root: Path) -> dict[str, np.ndarray]:
    """root/train/{pickup_truck,bird}/...: exact PNGs, a JPEG, a 28x28 grey PNG, an RGBA PNG."""
    exact = rand_images(2)
    truck = root / "train" / "pickup_truck"
    bird = root / "train" / "bird"
    truck.mkdir(parents=True)
    bird.mkdir(parents=True)
    Image.fromarray(exact[0]).save(truck / "a.png")
    Image.fromarray(exact[1]).save(truck / "b.PNG")
    smooth = np.tile(np.linspace(0, 255, 32, dtype=np.uint8)[None, :, None], (32, 1, 3))
    Image.fromarray(smooth).save(truck / "c.jpg", quality=95)
    grey = RNG.integers(0, 256, size=(28, 28), dtype=np.uint8)
    Image.fromarray(grey, mode="L").save(bird / "grey.png")
    rgba = rand_images(1, c=4)[0]
    Image.fromarray(rgba, mode="RGBA").save(bird / "rgba.png")
    (bird / "notes.txt").write_text("not an image")
    return {"exact": exact, "smooth": smooth, "grey": grey, "rgba": rgba}


def test_image_folder_classes_sizes_and_pixels(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "toy")
    ds = load_image_folder(tmp_path / "toy", "train")
    assert ds.name == "toy"
    assert ds.classes == ["bird", "pickup truck"]  # sorted folders, '_' -> ' '
    assert ds.images.shape == (5, 32, 32, 3) and ds.images.dtype == np.uint8
    assert ds.labels.dtype == np.int64
    assert ds.labels.tolist() == [0, 0, 1, 1, 1]  # notes.txt ignored
    # bird: grey.png (28x28 L -> resized 32x32, 3 equal channels), rgba.png (alpha composited on white)
    grey = ds.images[0]
    assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 0], grey[..., 2])
    expected = np.asarray(Image.fromarray(src["grey"]).resize((32, 32), Image.Resampling.BILINEAR))
    assert np.array_equal(grey[..., 0], expected)
    rgba = src["rgba"].astype(np.float64)  # alpha composited on white, as the runtime does for predict
    on_white = rgba[..., :3] * rgba[..., 3:] / 255.0 + 255.0 * (1.0 - rgba[..., 3:] / 255.0)
    assert np.abs(ds.images[1].astype(np.float64) - on_white).max() <= 1.0
    # truck: a.png, b.PNG exact; c.jpg close (lossy)
    assert np.array_equal(ds.images[2], src["exact"][0])
    assert np.array_equal(ds.images[3], src["exact"][1])
    assert np.abs(ds.images[4].astype(int) - src["smooth"]).max() <= 8


def test_image_folder_size_and_name(tmp_path: Path) -> None:
    make_folder(tmp_path / "toy")
    ds = load_image_folder(tmp_path / "toy", "train", name="mine", size=16)
    assert ds.name == "mine" and ds.images.shape == (5, 16, 16, 3)


def test_image_folder_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="test") as e:
        load_image_folder(tmp_path, "test")
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, TinaEdgeError)
    assert str(tmp_path / "test") in str(e.value)

    (tmp_path / "test").mkdir()
    with pytest.raises(DatasetError, match="no class folders"):
        load_image_folder(tmp_path, "test")

    (tmp_path / "test" / "cat").mkdir()
    with pytest.raises(DatasetError, match="holds no .jpg"):
        load_image_folder(tmp_path, "test")

    bad = tmp_path / "test" / "cat" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 definitely not a jpeg")
    with pytest.raises(DatasetError, match="broken.jpg") as e2:
        load_image_folder(tmp_path, "test")
    assert isinstance(e2.value, ValueError)


# ---------------------------------------------------------------------------------------------
# CIFAR pickles
# ---------------------------------------------------------------------------------------------


def to_cifar_rows(images: np.ndarray) -> np.ndarray:
    """NHWC -> [N, 3072] rows of 1024 R, 1024 G, 1024 B, as in the real files."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), -1))


def dump(obj: object, path: Path, protocol: int) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


@pytest.mark.parametrize("protocol", [2, 5])  # 2 as the real files, 5 as Python 3 re-dumps
def test_cifar10_pickle_layout(tmp_path: Path, protocol: int) -> None:
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer",
             b"dog", b"frog", b"horse", b"ship", b"truck"]
    dump({b"label_names": names, b"num_cases_per_batch": 3, b"num_vis": 3072},
         root / "batches.meta", protocol)
    train_imgs, train_labels = [], []
    for i in range(1, 6):
        imgs = rand_images(3)
        labels = [(i + k) % 10 for k in range(3)]
        dump({b"batch_label": b"training batch %d of 5" % i, b"labels": labels,
              b"data": to_cifar_rows(imgs), b"filenames": [b"x.png"] * 3},
             root / f"data_batch_{i}", protocol)
        train_imgs.append(imgs)
        train_labels += labels
    test_imgs = rand_images(4)
    dump({b"batch_label": b"testing batch 1 of 1", b"labels": [9, 0, 3, 3],
          b"data": to_cifar_rows(test_imgs), b"filenames": [b"y.png"] * 4},
         root / "test_batch", protocol)

    tr = load_cifar_pickle(root, "train")
    assert tr.name == "cifar10" and tr.classes[1] == "automobile" and len(tr.classes) == 10
    assert tr.images.shape == (15, 32, 32, 3) and tr.images.dtype == np.uint8
    assert np.array_equal(tr.images, np.concatenate(train_imgs))  # CHW rows -> HWC exactly
    assert tr.labels.tolist() == train_labels
    te = load_cifar_pickle(tmp_path, "test")  # the parent folder works too
    assert np.array_equal(te.images, test_imgs) and te.labels.tolist() == [9, 0, 3, 3]


def test_cifar100_pickle_layout(tmp_path: Path) -> None:
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    fine = [f"class_{i}".encode() for i in range(100)]
    fine[4] = b"aquarium_fish"
    dump({b"fine_label_names": fine, b"coarse_label_names": [b"c"] * 20}, root / "meta", 2)
    imgs = rand_images(5)
    dump({b"filenames": [b"f"] * 5, b"batch_label": b"training batch 1 of 1",
          b"fine_labels": [4, 99, 0, 4, 50], b"coarse_labels": [1, 2, 3, 1, 0],
          b"data": to_cifar_rows(imgs)}, root / "train", 2)
    ds = load_cifar_pickle(root, "train")
    assert ds.name == "cifar100" and len(ds.classes) == 100
    assert ds.classes[4] == "aquarium fish"
    assert ds.labels.tolist() == [4, 99, 0, 4, 50]  # fine, not coarse, labels
    assert np.array_equal(ds.images, imgs)
    with pytest.raises(DatasetNotFoundError, match="test"):
        load_cifar_pickle(root, "test")


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204 - the classic pickle exploit
        return (os.system, (f"touch {self.marker}",))


def test_crafted_pickle_is_refused_and_not_executed(tmp_path: Path) -> None:
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    marker = tmp_path / "pwned"
    dump({b"label_names": [b"a"]}, root / "batches.meta", 2)
    dump({b"data": _Evil(marker), b"labels": [0]}, root / "test_batch", 2)
    with pytest.raises(DatasetError, match=r"refusing global (posix|os)\.system"):
        load_cifar_pickle(root, "test")
    assert not marker.exists()
    # Control: the payload is real, plain pickle.load runs it.
    with open(root / "test_batch", "rb") as f:
        pickle.load(f)  # noqa: S301
    assert marker.exists()


def test_pickle_refuses_other_codecs_and_garbage(tmp_path: Path) -> None:
    root = tmp_path / "c"
    root.mkdir()
    dump({b"label_names": [b"a"]}, root / "batches.meta", 2)
    (root / "test_batch").write_bytes(b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x04"
                                      b"\x00\x00\x00zlib\x86R.")
    with pytest.raises(DatasetError, match="zlib"):
        load_cifar_pickle(root, "test")
    (root / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(DatasetError, match="test_batch"):
        load_cifar_pickle(root, "test")


# ---------------------------------------------------------------------------------------------
# idx files
# ---------------------------------------------------------------------------------------------


def write_idx(root: Path, prefix: str, grey: np.ndarray, labels: np.ndarray, gz: bool) -> None:
    root.mkdir(parents=True, exist_ok=True)
    img = struct.pack(">IIII", 2051, *grey.shape) + grey.tobytes()
    lab = struct.pack(">II", 2049, len(labels)) + labels.astype(np.uint8).tobytes()
    for stem, blob in ((f"{prefix}-images-idx3-ubyte", img), (f"{prefix}-labels-idx1-ubyte", lab)):
        if gz:
            (root / (stem + ".gz")).write_bytes(gzip.compress(blob))
        else:
            (root / stem).write_bytes(blob)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_padding_and_channels(tmp_path: Path, gz: bool) -> None:
    grey = RNG.integers(1, 256, size=(6, 28, 28), dtype=np.uint8)  # no zeros: padding shows
    labels = np.array([0, 9, 7, 7, 3, 1])
    write_idx(tmp_path, "t10k", grey, labels, gz)
    ds = load_idx(tmp_path, "test")
    assert ds.name == "fashion-mnist" and ds.classes == FASHION_MNIST_CLASSES
    assert ds.images.shape == (6, 32, 32, 3) and ds.images.dtype == np.uint8
    assert ds.labels.tolist() == labels.tolist()
    border = np.ones((32, 32), bool)
    border[2:30, 2:30] = False
    assert (ds.images[:, border, :] == 0).all()
    assert np.array_equal(ds.images[:, 2:30, 2:30, 0], grey)
    assert (ds.images[..., 0] == ds.images[..., 1]).all()
    assert (ds.images[..., 0] == ds.images[..., 2]).all()
    with pytest.raises(DatasetNotFoundError, match="train-images-idx3-ubyte"):
        load_idx(tmp_path, "train")


def test_idx_validates_magic_size_and_labels(tmp_path: Path) -> None:
    grey = RNG.integers(0, 256, size=(2, 28, 28), dtype=np.uint8)
    write_idx(tmp_path, "train", grey, np.array([0, 1]), gz=False)
    img = tmp_path / "train-images-idx3-ubyte"
    good = img.read_bytes()
    img.write_bytes(struct.pack(">I", 2049) + good[4:])
    with pytest.raises(DatasetError, match="magic number 2049, expected 2051"):
        load_idx(tmp_path, "train")
    img.write_bytes(good[:-10])
    with pytest.raises(DatasetError, match="truncated"):
        load_idx(tmp_path, "train")
    img.write_bytes(good)
    with pytest.raises(DatasetError, match="only 1 class names"):
        load_idx(tmp_path, "train", class_names=["zero"])
    ds = load_idx(tmp_path, "train", class_names=["zero", "one"], name="digits")
    assert ds.name == "digits" and ds.classes == ["zero", "one"]
    with pytest.raises(DatasetError, match="split"):
        load_idx(tmp_path, "val")


# ---------------------------------------------------------------------------------------------
# ImageDataset, subset, union
# ---------------------------------------------------------------------------------------------


def toy(classes: list[str], labels: list[int], name: str) -> ImageDataset:
    imgs = np.zeros((len(labels), 32, 32, 3), np.uint8)
    imgs[:, 0, 0, 0] = np.arange(len(labels))  # identifies each image
    return ImageDataset(imgs, np.array(labels), classes, name)


def test_subset_keeps_given_order() -> None:
    ds = toy(["a", "b", "c", "d"], [0, 1, 2, 3, 2, 0], "t")
    sub = ds.subset(["c", "a"])
    assert sub.classes == ["c", "a"] and len(sub) == 4
    assert sub.labels.tolist() == [1, 0, 0, 1]  # a->1, c->0, sample order kept
    assert sub.images[:, 0, 0, 0].tolist() == [0, 2, 4, 5]
    assert sub.counts() == {"c": 2, "a": 2}
    with pytest.raises(DatasetError, match=r"unknown classes \['z'\]"):
        ds.subset(["a", "z"])
    with pytest.raises(DatasetError, match="repeat"):
        ds.subset(["a", "a"])


def test_union_remaps_labels_and_checks_clashes() -> None:
    a = toy(["cat", "dog"], [1, 0], "A")
    b = toy(["shirt", "cat", "bag"], [0, 2, 1], "B")
    with pytest.raises(DatasetError, match="'cat' is in both 'A' and 'B'"):
        union([a, b])
    u = union([a, b], merge=True, name="U")
    assert u.name == "U" and u.classes == ["cat", "dog", "shirt", "bag"]
    assert u.labels.tolist() == [1, 0, 2, 3, 0]
    c = toy(["shirt", "bag"], [1, 1, 0], "C")
    u2 = union([a, c])
    assert u2.classes == ["cat", "dog", "shirt", "bag"]
    assert u2.labels.tolist() == [1, 0, 3, 3, 2]
    assert u2.images.shape == (5, 32, 32, 3)


def test_dataset_validates_its_arrays() -> None:
    with pytest.raises(DatasetError, match=r"labels must lie in \[0, 2\)"):
        ImageDataset(np.zeros((2, 32, 32, 3), np.uint8), np.array([0, 2]), ["a", "b"], "x")
    with pytest.raises(DatasetError, match="uint8"):
        ImageDataset(np.zeros((2, 32, 32, 3), np.float32), np.array([0, 1]), ["a", "b"], "x")
    assert set(DEFAULT_HOLDOUT) == {"automobile", "cat", "sneaker", "pullover"}


# ---------------------------------------------------------------------------------------------
# archives
# ---------------------------------------------------------------------------------------------


def make_tar(path: Path, members: list[tuple[str, bytes]], links: list[tuple[str, str]] = ()
             ) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in links:
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    return path


@pytest.mark.parametrize("evil", ["../evil", "ok/../../evil", "/ABS/evil"])
def test_archive_refuses_escaping_members(tmp_path: Path, evil: str) -> None:
    evil = evil.replace("/ABS", str(tmp_path))
    arch = make_tar(tmp_path / "a.tar.gz", [("data/good.txt", b"fine"), (evil, b"bad")])
    with tarfile.open(arch) as t:
        assert evil in t.getnames()  # the member really carries the hostile name
    dest = tmp_path / "out" / "dest"
    with pytest.raises(DatasetError, match="evil"):
        extract_archive_safely(arch, dest)
    assert not (tmp_path / "evil").exists() and not (tmp_path / "out" / "evil").exists()
    assert not (dest / "data" / "good.txt").exists()  # checked before anything is written


def test_archive_refuses_symlink_outside(tmp_path: Path) -> None:
    arch = make_tar(tmp_path / "a.tar.gz", [], links=[("data/link", "../../../etc/passwd")])
    with pytest.raises(DatasetError, match="links outside"):
        extract_archive_safely(arch, tmp_path / "dest")


def test_archive_extracts_once(tmp_path: Path) -> None:
    arch = make_tar(tmp_path / "a.tar.gz", [("cifar10/train/cat/0.txt", b"meow")],
                    links=[("cifar10/alias", "train/cat/0.txt")])
    dest = extract_archive_safely(arch, tmp_path / "dest")
    f = dest / "cifar10" / "train" / "cat" / "0.txt"
    assert f.read_bytes() == b"meow" and (dest / "cifar10" / "alias").read_bytes() == b"meow"
    f.write_bytes(b"edited")
    assert extract_archive_safely(arch, tmp_path / "dest") == dest
    assert f.read_bytes() == b"edited"  # second call skipped extraction (marker file)


@pytest.mark.parametrize("links", [
    [("x", "."), ("x/l", "../escaped")],  # written through a link: lexically inside, really outside
    [("x", "."), ("y", "x/../escaped")],  # a target walked through another link
])
def test_archive_refuses_links_chained_to_escape(tmp_path: Path, links) -> None:
    arch = make_tar(tmp_path / "a.tar.gz", [("data/ok.txt", b"fine")], links=links)
    dest = tmp_path / "out" / "dest"
    with pytest.raises(DatasetError, match="inside a link|through another link"):
        extract_archive_safely(arch, dest)
    assert not (tmp_path / "out" / "escaped").exists() and not (dest / "data" / "ok.txt").exists()


def test_archive_hard_links_zip_and_an_interrupted_run(tmp_path: Path) -> None:
    """The shared routine (runtime/archive.py) under the dataset policy: hard links to members,
    zip archives, and a second run over a half-written destination (no marker yet)."""
    arch = tmp_path / "h.tar"
    with tarfile.open(arch, "w") as tar:
        info = tarfile.TarInfo("d/a.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
        hard = tarfile.TarInfo("d/b.txt")
        hard.type, hard.linkname = tarfile.LNKTYPE, "d/a.txt"
        tar.addfile(hard)
        out = tarfile.TarInfo("d/c.txt")
        out.type, out.linkname = tarfile.LNKTYPE, "../outside.txt"
    dest = extract_archive_safely(arch, tmp_path / "dh")
    assert (dest / "d" / "b.txt").read_bytes() == b"hi"
    (dest / ".tina-edge-extracted.json").unlink()
    (dest / "d" / "a.txt").write_bytes(b"half")  # an interrupted earlier run
    assert (extract_archive_safely(arch, dest) / "d" / "a.txt").read_bytes() == b"hi"
    with tarfile.open(tmp_path / "bad.tar", "w") as tar:
        tar.addfile(out)
    with pytest.raises(DatasetError, match="links outside"):
        extract_archive_safely(tmp_path / "bad.tar", tmp_path / "db")
    z = tmp_path / "d.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("cifar10/train/cat/0.txt", b"meow")
    assert (extract_archive_safely(z, tmp_path / "dz") / "cifar10" / "train" / "cat" / "0.txt").read_bytes() == b"meow"


def test_find_shared_cifar10(tmp_path: Path) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    assert find_shared_cifar10(project) is None
    data = tmp_path / "shared" / "data"
    data.mkdir(parents=True)
    (data / "cifar10-jpeg.tar.gz").write_bytes(b"x")
    assert find_shared_cifar10(project) == data / "cifar10-jpeg.tar.gz"


# ---------------------------------------------------------------------------------------------
# default universe + cache
# ---------------------------------------------------------------------------------------------


def test_default_universe_cache_round_trip(tmp_path: Path) -> None:
    cifar = tmp_path / "cifar10"
    for k, cls in enumerate(["airplane", "cat"]):
        d = cifar / "test" / cls
        d.mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rand_images(1)[0]).save(d / f"{i}.png")
    fashion = tmp_path / "fashion"
    write_idx(fashion, "t10k", RNG.integers(0, 256, (3, 28, 28), dtype=np.uint8),
              np.array([9, 0, 7]), gz=True)
    cache = tmp_path / "cache"

    first = load_default_universe(cifar, fashion, "test", cache_dir=cache)
    assert first.classes == ["airplane", "cat"] + FASHION_MNIST_CLASSES
    assert first.labels.tolist() == [0, 0, 1, 1, 11, 2, 9]
    assert first.images.shape == (7, 32, 32, 3)
    files = list(cache.glob("*.npz"))
    assert len(files) == 1 and "test" in files[0].name

    # Break a source image in place (folder mtime unchanged): only the cache can serve it now.
    (cifar / "test" / "cat" / "0.png").write_bytes(b"garbage")
    second = load_default_universe(cifar, fashion, "test", cache_dir=cache)
    assert np.array_equal(second.images, first.images)
    assert np.array_equal(second.labels, first.labels)
    assert second.classes == first.classes and second.name == first.name
    with pytest.raises(DatasetError, match="0.png"):
        load_default_universe(cifar, fashion, "test")


# ---------------------------------------------------------------------------------------------
# real data
# ---------------------------------------------------------------------------------------------


@pytest.mark.realdata
def test_real_fashion_mnist_test_split() -> None:
    if not Path(FASHION_MNIST_DEFAULT_DIR).is_dir():
        pytest.skip(f"{FASHION_MNIST_DEFAULT_DIR} absent: apt-get install dataset-fashion-mnist")
    ds = load_idx(FASHION_MNIST_DEFAULT_DIR, "test")
    assert ds.images.shape == (10000, 32, 32, 3) and len(ds.classes) == 10
    assert set(ds.counts().values()) == {1000}
    assert ds.images[:, :2].max() == 0  # padded rows
