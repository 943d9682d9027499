"""EXIF orientation: a phone photo stored sideways with an Orientation tag is classified as it is shown.

Issue 20: disabling `ImageOps.exif_transpose` passed every other test, because the tiny bundle's
template pools over pixels (rotation cannot change its answer). These tests use a real JPEG with an
Orientation tag and a real classifier that looks at *where* the bright pixels are.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from tina_edge.cli.main import main
from tina_edge.runtime import PersonalizedClassifier
from tina_edge.runtime.images import load_images
from tina_edge.runtime.preprocess import PreprocessSpec, load_prepared

ORIENTATION = 0x0112
LABELS = ["bright top", "bright bottom"]


def _sideways_jpeg(path: Path, orientation: int) -> np.ndarray:
    """A 32x32 JPEG whose stored pixels are white on the left half, black on the right, tagged with
    `orientation`; returns the stored pixels as decoded (EXIF ignored)."""
    a = np.zeros((32, 32, 3), np.uint8)
    a[:, :16] = 255
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    Image.fromarray(a).save(path, quality=95, exif=exif.tobytes())
    with Image.open(path) as im:  # Image.open never applies the tag itself
        assert im.getexif()[ORIENTATION] == orientation
        return np.asarray(im.convert("RGB"))


def _top_vs_bottom_model(path: Path, preprocess: dict | None) -> Path:
    """A real classifier of uint8 [N, 8, 8, 3]: logits = (mean of the top 4 rows, mean of the bottom 4) / 16."""
    nodes = [helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Slice", ["f", "s0", "s4", "ax"], ["top"]),
             helper.make_node("Slice", ["f", "s4", "s8", "ax"], ["bottom"]),
             helper.make_node("ReduceMean", ["top"], ["t"], axes=[1, 2, 3], keepdims=0),
             helper.make_node("ReduceMean", ["bottom"], ["b"], axes=[1, 2, 3], keepdims=0),
             helper.make_node("Unsqueeze", ["t", "ax"], ["t1"]),
             helper.make_node("Unsqueeze", ["b", "ax"], ["b1"]),
             helper.make_node("Concat", ["t1", "b1"], ["raw"], axis=1),
             helper.make_node("Div", ["raw", "scale"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1)]
    inits = [numpy_helper.from_array(np.array([v], np.int64), n) for n, v in (("s0", 0), ("s4", 4), ("s8", 8), ("ax", 1))]
    inits.append(numpy_helper.from_array(np.array(16.0, np.float32), "scale"))
    g = helper.make_graph(nodes, "top_vs_bottom", [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", 8, 8, 3])],
                          [helper.make_tensor_value_info(o, TensorProto.FLOAT, ["N", 2]) for o in ("logits", "probabilities")],
                          inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    props = {"labels": json.dumps(LABELS)}
    if preprocess is not None:
        props["preprocess"] = json.dumps(preprocess)
    helper.set_model_props(m, props)
    path.write_bytes(m.SerializeToString())
    return path


# orientation -> how the stored pixels are turned for display (EXIF 2.3, tag 274)
SHOWN = {1: lambda a: a, 3: lambda a: np.rot90(a, 2), 6: lambda a: np.rot90(a, -1), 8: lambda a: np.rot90(a, 1),
         2: lambda a: a[:, ::-1]}


@pytest.mark.parametrize("orientation", sorted(SHOWN))
def test_decoded_pixels_are_turned_as_the_tag_says(tmp_path, orientation):
    """Both decoders (images.load_images for plain models, preprocess.load_prepared for photo bundles)."""
    p = tmp_path / f"o{orientation}.jpg"
    stored = _sideways_jpeg(p, orientation)
    shown = np.ascontiguousarray(SHOWN[orientation](stored))
    np.testing.assert_array_equal(load_images([p], size=None)[0], shown)
    np.testing.assert_array_equal(load_prepared([p], PreprocessSpec(size=32))[0], shown)


@pytest.mark.parametrize("photo_bundle", [False, True], ids=["plain-model", "preprocess-metadata"])
def test_prediction_follows_the_orientation_tag(tmp_path, photo_bundle):
    """Stored white-left; tag 6 shows it white-top, tag 8 white-bottom. Ignoring the tag would give
    a tie (both halves alike), so the answer proves the tag was applied, by the API and the CLI."""
    pre = PreprocessSpec(size=8).to_dict() if photo_bundle else None
    model = _top_vs_bottom_model(tmp_path / "m.onnx", pre)
    clf = PersonalizedClassifier.load(model)
    for orientation, want in ((6, "bright top"), (8, "bright bottom")):
        p = tmp_path / f"o{orientation}.jpg"
        stored = _sideways_jpeg(p, orientation)
        pred = clf.predict([p])
        assert pred.labels == [want] and pred.probabilities.max() > 0.99, pred.probabilities
        untagged = clf.predict([stored]).probabilities[0]  # the same pixels without the tag: a tie
        assert abs(untagged[0] - untagged[1]) < 0.05, untagged
        r = CliRunner().invoke(main, ["predict", str(model), str(p)])
        assert r.exit_code == 0, r.output
        assert r.stdout.startswith(f"{p}\t{want} 1.000"), r.stdout
