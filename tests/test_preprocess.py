"""The photo preprocessing policy: shorter side + centre crop, alpha on white, grey replicated."""

import numpy as np
import pytest
from PIL import Image

from tina_edge.runtime.errors import ImageError
from tina_edge.runtime.preprocess import PreprocessSpec, load_prepared, prepare


def test_shorter_side_then_centre_crop_keeps_the_middle():
    img = np.zeros((40, 80, 3), np.uint8)  # wide: left quarter red, right quarter blue, middle green
    img[:, :20] = (255, 0, 0)
    img[:, 20:60] = (0, 255, 0)
    img[:, 60:] = (0, 0, 255)
    out = prepare(img, PreprocessSpec(size=20))
    assert out.shape == (20, 20, 3) and out.dtype == np.uint8
    assert (out[:, 2:-2, 1] > 200).all()  # only the green middle survives the crop
    tall = prepare(np.zeros((100, 30), np.uint8), PreprocessSpec(size=16))
    assert tall.shape == (16, 16, 3)


def test_alpha_is_composited_on_white_and_grey_replicated():
    rgba = np.zeros((8, 8, 4), np.uint8)  # fully transparent black
    out = prepare(rgba, PreprocessSpec(size=8))
    assert (out == 255).all()
    grey = np.tile(np.arange(8, dtype=np.uint8)[None] * 30, (8, 1))
    g = prepare(grey, PreprocessSpec(size=8))
    assert (g[..., 0] == g[..., 1]).all() and (g[..., 1] == g[..., 2]).all() and (g[..., 0] == grey).all()


def test_upsamples_small_photos_and_reads_files(tmp_path):
    Image.fromarray(np.full((28, 28), 90, np.uint8), "L").save(tmp_path / "a.png")
    Image.fromarray(np.full((64, 96, 3), 10, np.uint8)).save(tmp_path / "b.jpg")
    x = load_prepared([tmp_path / "a.png", tmp_path / "b.jpg", np.zeros((2, 5, 7, 3), np.uint8)], PreprocessSpec(size=32))
    assert x.shape == (4, 32, 32, 3) and x[0].min() == 90 == x[0].max()


def test_spec_round_trips_and_rejects_unknown_policies():
    s = PreprocessSpec(size=128, crop_fraction=0.875)
    assert PreprocessSpec.from_dict(s.to_dict()) == s
    with pytest.raises(ValueError, match="unsupported"):
        PreprocessSpec(resize="stretch")
    with pytest.raises(ValueError, match="size"):
        PreprocessSpec(size=2)
    with pytest.raises(ImageError, match="dtype"):
        prepare(np.zeros((4, 4, 3), np.float32), PreprocessSpec(size=8))
