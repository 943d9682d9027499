"""The checkpoint's metadata has one builder (what Trainer.save writes) and one typed reader."""

from __future__ import annotations

import json

import pytest

from test_diffusion_training import tiny_setup
from tina_edge.runtime.errors import TinaEdgeError
from tina_edge.train.diffusion.checkpoint import CHECKPOINT_FORMAT, TRUNK_INT8, Checkpoint, CheckpointMeta, read_checkpoint
from tina_edge.train.diffusion.trainer import TrainConfig, Trainer

ENC = {"kind": "minilm", "name": "all-MiniLM-L6-v2", "spec": "minilm", "dim": 8, "phrasings_max": 3}


def _saved(tmp_path, extra_meta=None):
    layout, data, dcfg = tiny_setup()
    t = Trainer(dcfg, layout, data, TrainConfig(steps=2, batch_size=4, warmup=1, seed=0), extra_meta=extra_meta)
    t.train_step()
    t.save(tmp_path / "ck.safetensors")
    return t, read_checkpoint(tmp_path / "ck.safetensors")


def test_what_save_writes_reads_back_typed(tmp_path):
    meta = {"text_encoder": ENC, "classes": ["a", "b", "c"], "holdout": ["c"], "seen": ["a", "b"],
            "generic_info": {"datasets": {"tiny_imagenet": "/data/x.tar.gz", "cifar10": "/d"}, "test_accuracy": 51.5},
            "zoo": {"count": 7, "mean_accuracy": 90.0}, "future_key": [1, 2]}
    t, ck = _saved(tmp_path, meta)
    info = ck.info
    assert ck.meta["format"] == CHECKPOINT_FORMAT and info.step == 1 == t.step
    assert info.to_dict() == ck.meta  # the reader keeps every key the builder wrote
    assert info.extra == {"future_key": [1, 2]} and info.layout == ck.meta["layout"]
    assert (info.encoder.dim, info.encoder.spec, info.encoder.bank) == (8, "minilm", None)
    assert info.seen_classes == ["a", "b"] and ck.layout().size == t.layout.size
    tr = info.training_info("int8")
    assert (tr.datasets, tr.vocabulary, tr.holdout_classes) == ("tiny-imagenet+cifar10", ["a", "b"], ["c"])
    assert tr.generic_test_accuracy == 51.5 and tr.diffusion_steps_trained == 1 and tr.trunk_quantization == TRUNK_INT8
    assert "chunks" not in tr.denoiser and tr.denoiser["text_dim"] == 8 and tr.text_encoder == ENC
    assert info.training_info().trunk_quantization is None


def test_a_checkpoint_without_pipeline_facts_says_what_is_missing(tmp_path):
    _, ck = _saved(tmp_path)
    assert ck.info.encoder.dim is None and ck.info.classes is None and "classes" not in ck.meta
    with pytest.raises(TinaEdgeError, match="does not record its text encoder"):
        ck.info.require_encoder(tmp_path / "ck.safetensors")
    with pytest.raises(TinaEdgeError, match="records no class names"):
        ck.info.seen_classes
    other = Checkpoint(ck.tensors, ck.meta | {"text_encoder": {"kind": "open_clip", "spec": "open_clip:x"}})
    assert other.info.encoder.label() == "open_clip" and other.info.encoder.name is None


def test_the_typed_metadata_is_built_once_per_checkpoint(tmp_path):
    _, ck = _saved(tmp_path)
    assert ck.info is ck.info  # not rebuilt by every read
    assert ck.layout().specs == ck.layout().specs and ck.layout() is not ck.layout()  # callers may edit theirs


def test_damaged_metadata_is_refused_in_one_sentence():
    with pytest.raises(TinaEdgeError, match="not a tina-edge checkpoint"):
        CheckpointMeta.from_dict({"format": "something-else/1"}, "x.safetensors")
    good = {"format": CHECKPOINT_FORMAT, "denoiser": {}, "schedule": {}, "template": {}, "layout": []}
    assert CheckpointMeta.from_dict(json.loads(json.dumps(good))).to_dict() == good | {"step": 0}
    with pytest.raises(TinaEdgeError, match="lacks schedule, layout"):
        CheckpointMeta.from_dict(good | {"schedule": None, "layout": {}}, "x.safetensors")
