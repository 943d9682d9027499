"""docs/manifest.schema.json: every bundle we write validates; broken manifests do not."""

import copy
import json
from pathlib import Path

import pytest

from runtime_fixtures import make_tiny_bundle
from tina_edge.export.portable.generate import add_portable_files
from tina_edge.runtime.bundle import default_bundle_path

jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is in the [test] extra")

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "docs" / "manifest.schema.json").read_text())


def _validate(d):
    jsonschema.Draft202012Validator(SCHEMA).validate(d)


def test_schema_is_itself_valid():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_default_tiny_and_portable_bundles_validate(tmp_path):
    _validate(json.loads((default_bundle_path() / "manifest.json").read_text()))
    d = make_tiny_bundle(tmp_path / "b")
    _validate(json.loads((d / "manifest.json").read_text()))
    add_portable_files(d)
    _validate(json.loads((d / "manifest.json").read_text()))


@pytest.mark.parametrize("edit", [
    lambda d: d.pop("files"),
    lambda d: d.__setitem__("schema_version", 2),
    lambda d: d["denoiser"].__setitem__("k_max", 1),
    lambda d: d["template"]["layout"][0].__setitem__("shape", [0, 3]),
    lambda d: d["files"].__setitem__("../escape.onnx", {"sha256": "0" * 64, "bytes": 1}),
    lambda d: d["text_encoder"].__setitem__("model", "/abs/path.onnx"),
    lambda d: d["diffusion"].__setitem__("prediction_type", "epsilon"),
    lambda d: d["portable"]["noise"].__setitem__("generator", "mt19937"),
])
def test_broken_manifests_are_refused(tmp_path, edit):
    d = make_tiny_bundle(tmp_path / "b")
    add_portable_files(d)
    m = json.loads((d / "manifest.json").read_text())
    bad = copy.deepcopy(m)
    edit(bad)
    with pytest.raises(jsonschema.ValidationError):
        _validate(bad)
