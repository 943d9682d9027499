"""A personalized model's metadata has one owner (runtime/model_meta.py `ModelMetadata`): the files it
writes are byte-identical to what the string-keyed writer wrote before it, and those files load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from tina_edge import __version__
from tina_edge.runtime import PersonalizedClassifier, Personalizer
from tina_edge.runtime.errors import ModelFileError
from tina_edge.runtime.head import head_model
from tina_edge.runtime.model_meta import ModelMetadata
from tina_edge.runtime.portable import classifier_from_head, head_dict
from tina_edge.runtime.template import fill_template


@pytest.fixture(scope="module")
def pz(base_bundle) -> Personalizer:
    return Personalizer.from_bundle(base_bundle, threads=1)


def _old_props(names, prompt, texts, bundle_id, sampler, params, preprocess=None, image_prompts=None) -> dict[str, str]:
    """The metadata dict exactly as personalizer.py built it before ModelMetadata (the file format)."""
    meta = {
        "labels": json.dumps(names, ensure_ascii=False),
        "prompt": prompt,
        "texts": json.dumps(texts, ensure_ascii=False),
        "bundle_id": bundle_id,
        "sampler": json.dumps(sampler),
        "params": json.dumps(params),
        "producer": f"tina-edge {__version__}",
    }
    if preprocess:
        meta["preprocess"] = json.dumps(preprocess, sort_keys=True)
    if image_prompts:
        meta["image_prompts"] = json.dumps(image_prompts, ensure_ascii=False)
    return meta


def _props(model: onnx.ModelProto) -> list[tuple[str, str]]:
    return [(p.key, p.value) for p in model.metadata_props]


def test_personalize_writes_the_same_props_and_bytes_as_before(pz):
    clf = pz.personalize(" Dög ,cat,  frog", descriptions=[None, "a small domestic feline", None], seed=2, candidates=2)
    old = _old_props(["Dög", "cat", "frog"], " Dög ,cat,  frog", ["Dög", "a small domestic feline", "frog"],
                     pz.manifest.bundle_id, {"sampler": "ddim", "steps": 10, "seed": 2, "candidates": 2},
                     ["head.weight", "head.bias"])
    assert list(clf.metadata.items()) == list(old.items())  # same keys, same order, same strings
    assert _props(onnx.load_from_string(clf.to_bytes())) == list(old.items())
    again = fill_template(pz.bundle.template_proto, clf.params, 3, old)
    assert again.SerializeToString(deterministic=True) == clf.to_bytes()
    assert clf.meta.texts == ["Dög", "a small domestic feline", "frog"] and clf.meta.sampler["candidates"] == 2
    assert clf.meta.preprocess is None and clf.meta.image_prompts is None and not clf.meta.is_head


def test_a_file_written_by_the_old_writer_loads_unchanged(pz, tmp_path: Path):
    """Every key the old writer could emit (photo preprocessing, image prompts) plus a prop of another
    writer: the typed view reads each, and writes the very same strings back, in the file's order."""
    clf = pz.personalize("dog, cat", seed=1)
    pre = {"size": 8, "crop": "center", "resize": "shorter_side", "crop_fraction": 0.875}  # a valid policy (issue 20)
    old = {"note": "kept"} | _old_props(["dog", "cat"], "dog, cat", ["dog", None], "b" * 16,
                                        {"sampler": "ddpm", "steps": 50, "seed": 7, "candidates": 1},
                                        ["head.weight", "head.bias"], preprocess=pre, image_prompts={"cat": 3})
    path = tmp_path / "old.onnx"
    path.write_bytes(fill_template(pz.bundle.template_proto, clf.params, 2, old).SerializeToString())
    back = PersonalizedClassifier.load(path)
    assert list(back.metadata.items()) == list(old.items())
    m = back.meta
    assert m.labels == back.labels == ["dog", "cat"] and m.texts == ["dog", None] and m.bundle_id == "b" * 16
    assert m.sampler == {"sampler": "ddpm", "steps": 50, "seed": 7, "candidates": 1}
    assert m.preprocess == pre and m.image_prompts == {"cat": 3} and m.extra == {"note": "kept"}
    assert set(back.params) == {"head.weight", "head.bias"}
    np.testing.assert_array_equal(back.params["head.weight"], clf.params["head.weight"])
    assert "sampler='ddpm-50 seed 7'" in repr(back) and f"bundle_id='{'b' * 16}'" in repr(back)


def test_head_only_props_are_the_old_ones():
    """head.py used to write dict(metadata) | {trunk_sha256} | {form, params}: same props now."""
    old = _old_props(["a", "b"], "a, b", ["a", "b"], "c" * 16, {"sampler": "ddim", "steps": 10, "seed": 0, "candidates": 1},
                     ["fc.weight", "fc.bias"], preprocess={"size": 8})
    want = dict(old) | {"trunk_sha256": "f" * 64} | {"form": "head", "params": json.dumps(["fc.weight", "fc.bias"])}
    params = {"fc.weight": np.ones((2, 4), np.float32), "fc.bias": np.zeros(2, np.float32)}
    head = head_model(params, ModelMetadata.from_props(old, "x"), "f" * 64)
    assert _props(head) == list(want.items())
    back = ModelMetadata.from_props(dict(_props(head)), "head.onnx")
    assert back.is_head and back.trunk_sha256 == "f" * 64 and back.params == ["fc.weight", "fc.bias"]
    assert back.to_props() == want


def test_malformed_values_read_as_unrecorded_but_bad_preprocessing_is_refused():
    props = {"labels": '["a", "b"]', "sampler": "not json", "texts": '{"a": 1}', "params": "[1, 2"}
    m = ModelMetadata.from_props(props, "m.onnx")
    assert m.labels == ["a", "b"] and m.sampler is None and m.texts is None and m.params is None
    assert m.sampler_summary() == "?"
    assert ModelMetadata(labels=["a", "b"], sampler={"sampler": "ddim"}).sampler_summary() == "?"
    with pytest.raises(ModelFileError, match="no valid 'labels' list"):
        ModelMetadata.from_props({"labels": '["only one"]'}, "m.onnx")
    with pytest.raises(ModelFileError, match="m.onnx: its 'preprocess' metadata is not a JSON object"):
        ModelMetadata.from_props(props | {"preprocess": "[1]"}, "m.onnx")


def test_the_head_json_carries_the_same_fields_both_ways(pz):
    clf = pz.personalize("dog, cat, horse", descriptions={"cat": "a small domestic feline"}, seed=3)
    h = head_dict(clf)
    assert (h["prompt"], h["texts"], h["sampler"], h["bundle_id"], h["producer"]) == (
        clf.meta.prompt, clf.meta.texts, clf.meta.sampler, clf.meta.bundle_id, clf.meta.producer)
    again = classifier_from_head(h, pz.bundle)
    assert again.to_bytes() == clf.to_bytes()  # same props (no photo preprocessing here), same tensors
