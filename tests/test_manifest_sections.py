"""The manifest's typed `training` and `evaluation` sections: one class writes and reads each, the
rules run on write and on read, and bundles written before them (or by a newer exporter) still load."""

from __future__ import annotations

import json
import math

import pytest

from tina_edge.runtime.bundle import default_bundle_path
from tina_edge.runtime.errors import BundleError
from tina_edge.runtime.manifest import EvaluationSummary, TrainingInfo, read_manifest, write_manifest


def _raw(d):
    return json.loads((d / "manifest.json").read_text())


def test_tiny_bundle_sections_are_typed_and_keep_unknown_keys(base_bundle):
    m = read_manifest(base_bundle)
    assert isinstance(m.training, TrainingInfo) and isinstance(m.evaluation, EvaluationSummary)
    # the fixture writes an older shape: datasets as a list, "holdout" and "in_distribution" (keys no field has)
    assert m.training.datasets == ["tiny-test"] and m.training.extra == {"holdout": ["ship"]}
    assert m.evaluation.steps == _raw(base_bundle)["evaluation"]["steps"] and m.evaluation.id is None
    assert m.evaluation.extra == {"in_distribution": {"accuracy": 0.61, "p_model_accuracy": 0.7}}
    assert m.to_dict()["evaluation"] == _raw(base_bundle)["evaluation"]  # measured figures only, no nulls
    assert m.to_dict()["training"] == _raw(base_bundle)["training"]  # every field, null when unknown


def test_a_manifest_without_the_null_fields_reads_the_same(bundle):
    raw = _raw(bundle)
    raw["training"] = {k: v for k, v in raw["training"].items() if v is not None}
    assert "zoo" not in raw["training"]
    (bundle / "manifest.json").write_text(json.dumps(raw))
    m = read_manifest(bundle)
    assert m.training.zoo is None and m.training.vocabulary == raw["training"]["vocabulary"]


@pytest.mark.skipif(not (default_bundle_path() / "manifest.json").is_file(), reason="no embedded default bundle")
def test_default_bundle_sections_round_trip_exactly():
    raw = _raw(default_bundle_path())
    m = read_manifest(default_bundle_path())
    assert m.to_dict() == raw  # what it reads, it would write back, key for key
    assert m.training.extra == {} and m.evaluation.extra == {}
    assert m.evaluation.sampler == "ddim" and set(m.evaluation.ood_per_class) == set(m.training.holdout_classes)


def test_sections_are_checked_on_write_and_on_read(bundle):
    m = read_manifest(bundle)
    m.evaluation = EvaluationSummary(id={"generated": "high"})
    with pytest.raises(BundleError, match=r"evaluation.id.generated must be a number"):
        write_manifest(bundle, m)
    good = read_manifest(bundle)
    good.training.vocabulary = ["cat", "x" * 201]
    with pytest.raises(BundleError, match="training.vocabulary must be a list of class names"):
        write_manifest(bundle, good)
    raw = _raw(bundle)  # a hand-edited manifest is refused on read with the field's name
    for section, key, value, match in (("training", "synonyms", {"cat": "feline"}, r"training.synonyms\['cat'\]"),
                                       ("training", "diffusion_steps_trained", 1.5, "must be an integer"),
                                       ("evaluation", "ood", {"per_k": {"2": {"generated": [1]}}}, "ood.per_k.2.generated"),
                                       ("evaluation", "sampler", 3, "evaluation.sampler")):
        bad = json.loads(json.dumps(raw))
        bad[section][key] = value
        (bundle / "manifest.json").write_text(json.dumps(bad))
        with pytest.raises(BundleError, match=match):
            read_manifest(bundle)


def test_unmeasured_figures_and_new_keys_survive_a_write(bundle):
    m = read_manifest(bundle)
    m.evaluation = EvaluationSummary(ood={"generated": float("nan"), "n": 0, "per_k": {}}, sampler="ddim", steps=5,
                                     extra={"baselines": {"ridge": 41.0}})
    m.training.text_encoder = {"kind": "minilm", "dim": 384}
    write_manifest(bundle, m)
    back = read_manifest(bundle)
    assert math.isnan(back.evaluation.ood["generated"]) and back.evaluation.extra == {"baselines": {"ridge": 41.0}}
    assert back.training.text_encoder == {"kind": "minilm", "dim": 384} and back.vocabulary == m.vocabulary
    assert not EvaluationSummary() and EvaluationSummary(steps=5) and not TrainingInfo()


def test_one_builder_from_eval_json():
    ev = {"sampler": "ddpm", "steps": 1000, "seed": 0, "tasks": [{"k": 2}],
          "summary": {"id": {"generated": 80.0, "n": 3}, "image_prompts": {"1": {"id": 50.0}}}}
    s = EvaluationSummary.from_eval_json(ev)
    assert (s.sampler, s.steps, s.id, s.extra) == ("ddpm", 1000, {"generated": 80.0, "n": 3},
                                                    {"image_prompts": {"1": {"id": 50.0}}})
    assert "tasks" not in s.to_dict() and "seed" not in s.to_dict()  # the summary, not every task row
    with pytest.raises(BundleError, match="summary"):
        EvaluationSummary.from_eval_json({"tasks": []})


def test_the_portable_section_is_typed_and_checked():
    from tina_edge.runtime.errors import BundleError
    from tina_edge.runtime.manifest_sections import PortableInfo

    good = {"generate": {"model": "generate.onnx", "sampler": "ddim", "eta": 0.0, "steps": 2, "timesteps": [999, 0],
                         "inputs": ["class_emb", "class_mask", "noise"], "outputs": ["x0", "params"]},
            "template_inputs": {"model": "template.onnx", "inputs": ["fc.weight"]}, "tokenizer_config": "tokenizer_config.json",
            "future": {"kept": True}}
    p = PortableInfo.from_dict(good, "portable")
    assert p.generate_model == "generate.onnx" and p.generate_timesteps == [999, 0] and p.to_dict() == good
    assert p.files() == [("portable.generate.model", "generate.onnx"), ("portable.template_inputs.model", "template.onnx"),
                         ("portable.tokenizer_config", "tokenizer_config.json")]
    assert not PortableInfo.from_dict({}, "portable") and PortableInfo().files() == []
    for bad, words in [({"generate": {"model": "g.onnx", "timesteps": [0, 999]}}, "distinct and descending"),
                       ({"generate": {"model": "g.onnx", "timesteps": [999, 0], "steps": 3}}, "equal the number"),
                       ({"generate": {"timesteps": [1]}}, "portable.generate.model"),
                       ({"generate": "generate.onnx"}, "portable.generate must be a JSON object")]:
        with pytest.raises(BundleError, match=words):
            PortableInfo.from_dict(bad, "portable")
