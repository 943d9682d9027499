"""Image prompts through CLIP's shared image-text space, end to end.

One tiny CLIP run per module: seeded-random tiny open_clip weights saved to a local file (the
code path real pretrained weights take: `open_clip:ARCH:/path/weights`), a toy Tina trained on
their text embeddings, exported to a bundle that carries the CLIP image encoder. The figures are
meaningless (random CLIP weights put images and names in unrelated places); what is tested is the
plumbing: parity with open_clip, prompt order, mixing, refusals, the eval rows.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
import torch
from click.testing import CliRunner
from PIL import Image
from runtime_fixtures import make_tiny_bundle
from train_fixtures import synthetic_universe, tiny_workdir

from tina_edge.cli.main import main
from tina_edge.runtime import Personalizer
from tina_edge.runtime.errors import BundleError, ImageError, PromptError, TinaEdgeError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory):
    from tina_edge.export.bundle import export_bundle
    from tina_edge.train.text.encoders import TINY_CLIP_ARCH, OpenCLIPEncoder

    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("clip")
    weights = OpenCLIPEncoder(TINY_CLIP_ARCH, seed=3).save_checkpoint(root / "clip.safetensors")
    spec = f"open_clip:{TINY_CLIP_ARCH}:{weights}"
    wd = tiny_workdir(root / "wd", text_encoder=spec)
    summary = export_bundle(wd / "tina.safetensors", root / "bundle", log=lambda m: None)
    return {"workdir": wd, "bundle": root / "bundle", "summary": summary,
            "clip": OpenCLIPEncoder(TINY_CLIP_ARCH, weights)}


@pytest.fixture(scope="module")
def pz(clip_run) -> Personalizer:
    return Personalizer.from_bundle(clip_run["bundle"], threads=1)


def _pictures(seed: int, sizes=((32, 32), (50, 70), (70, 41))) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]


def _unit_mean(e: np.ndarray) -> np.ndarray:
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    m = e.mean(0)
    return m / np.linalg.norm(m)


# ------------------------------------------------------------------ export + parity


@pytest.mark.slow  # module fixture trains and exports a CLIP bundle (~1 min)
def test_image_encoder_export_and_parity(clip_run):
    from tina_edge.runtime.bundle import open_bundle
    from tina_edge.runtime.image_encoder import ImageEncoderSession

    s, clip = clip_run["summary"], clip_run["clip"]
    assert "image_encoder.onnx" in s["files"]
    assert s["image_encoder"]["max_abs_diff_fp32"] <= 1e-4
    assert s["image_encoder"]["runtime_max_abs_diff_vs_open_clip"] <= 1e-4
    te = open_bundle(clip_run["bundle"]).manifest.text_encoder
    assert (te.kind, te.image_encoder, te.image_size, te.embedding_dim) == ("open_clip", "image_encoder.onnx", 32, 64)
    g = onnx.load(str(clip_run["bundle"] / "image_encoder.onnx")).graph
    assert [i.name for i in g.input] == ["image"] and g.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_value for d in g.input[0].type.tensor_type.shape.dim][1:] == [32, 32, 3]

    # batch 8 of varied sizes: runtime (Pillow resize/crop + ONNX) vs open_clip (its transform + torch)
    imgs = _pictures(1, [(32, 32), (50, 70), (70, 50), (17, 23), (33, 32), (32, 99), (200, 64), (5, 7)])
    sess = ImageEncoderSession(clip_run["bundle"] / "image_encoder.onnx", 32, threads=1)
    got = sess.encode(imgs)
    assert got.shape == (8, 64)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert np.abs(got - clip.encode_images(imgs)).max() <= 1e-4
    # the preprocessing alone is bit-exact: undo open_clip's Normalize and compare pixels
    mean, std = np.array(clip.image_mean)[:, None, None], np.array(clip.image_std)[:, None, None]
    for img, ours in zip(imgs, sess.preprocess(imgs)):
        ref = clip.preprocess(Image.fromarray(img)).numpy() * std + mean
        np.testing.assert_array_equal(np.rint(ref * 255).astype(np.uint8).transpose(1, 2, 0), ours)


@pytest.mark.slow  # module fixture trains and exports a CLIP bundle (~1 min)
def test_bundle_checks_image_encoder_contract(clip_run, tmp_path):
    from tina_edge.runtime.bundle import open_bundle
    from tina_edge.runtime.manifest import read_manifest, write_manifest

    bad = tmp_path / "bundle"
    shutil.copytree(clip_run["bundle"], bad)
    m = read_manifest(bad)
    m.text_encoder.image_size = 48
    write_manifest(bad, m)
    with pytest.raises(BundleError, match=r"image_encoder\.onnx: input image has size 32 on axis 1 but the manifest says 48"):
        open_bundle(bad)
    m.text_encoder.image_size = None
    write_manifest(bad, m)
    with pytest.raises(BundleError, match="image_size must be a positive integer"):
        open_bundle(bad)


# ------------------------------------------------------------------ Python API


@pytest.mark.slow  # module fixture trains and exports a CLIP bundle (~1 min)
def test_mixed_prompt_follows_prompt_order(pz, clip_run, tmp_path):
    import onnxruntime as ort

    clip = clip_run["clip"]
    cat_imgs = _pictures(2)
    paths = []
    for i, im in enumerate(cat_imgs[:2]):
        paths.append(tmp_path / f"c{i}.png")
        Image.fromarray(im).save(paths[-1])
    items = [str(paths[0]), paths[1], cat_imgs[2]]  # a path string, a Path, an array: three images
    names = ["blue dot", "my thing", "red square"]
    descr = [None, "a green stripe pattern", None]
    images = {"Red Square": items}  # matched like prompt names (case, spaces)

    emb = pz.class_embeddings(names, descriptions=descr, images=images)
    assert emb.shape == (3, 64)
    np.testing.assert_allclose(emb[0], pz.encode(["blue dot"])[0], atol=1e-6)
    np.testing.assert_allclose(emb[1], pz.encode(["a green stripe pattern"])[0], atol=1e-6)
    np.testing.assert_allclose(emb[2], _unit_mean(clip.encode_images(cat_imgs)), atol=1e-4)  # vs open_clip
    # order follows the prompt, wherever the images are
    emb2 = pz.class_embeddings(["red square", "blue dot"], images={"red square": items})
    np.testing.assert_allclose(emb2, emb[[2, 0]], atol=1e-6)

    clf = pz.personalize(names, descriptions=descr, images=images, seed=4, steps=5)
    assert clf.labels == names
    meta = clf.metadata
    assert json.loads(meta["labels"]) == names
    assert json.loads(meta["image_prompts"]) == {"red square": 3}
    assert json.loads(meta["texts"]) == ["blue dot", "a green stripe pattern", None]
    # same request, same bytes; the images change the model (vs prompting "red square" by name)
    assert pz.personalize(names, descriptions=descr, images=images, seed=4, steps=5).to_bytes() == clf.to_bytes()
    by_name = pz.personalize(names, descriptions=descr, seed=4, steps=5)
    assert "image_prompts" not in by_name.metadata
    assert not np.allclose(by_name.params["fc.weight"], clf.params["fc.weight"])
    # the written model runs in plain onnxruntime, outputs [N, 3] in prompt order
    out = tmp_path / "m.onnx"
    clf.save(out)
    x = synthetic_universe()[1].images[:6]
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    logits, probs = sess.run(["logits", "probabilities"], {"image": x})
    assert probs.shape == (6, 3)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(probs, clf.predict(x).probabilities, atol=1e-6)
    assert logits.shape == (6, 3)
    assert {p.key: p.value for p in onnx.load(str(out)).metadata_props}["labels"] == json.dumps(names)


@pytest.mark.slow  # module fixture trains and exports a CLIP bundle (~1 min)
def test_image_prompt_errors(pz, tmp_path):
    imgs = _pictures(5)
    with pytest.raises(PromptError, match=r"images are given for 'zebra', which is not one of the classes \(blue dot, red square\)"):
        pz.personalize("blue dot, red square", images={"zebra": imgs})
    with pytest.raises(PromptError, match="'red square' has both a description and images"):
        pz.personalize("blue dot, red square", descriptions=[None, "x"], images={"red square": imgs})
    with pytest.raises(PromptError, match="no images are given for the class 'red square'"):
        pz.personalize("blue dot, red square", images={"red square": []})
    with pytest.raises(PromptError, match="given twice"):
        pz.personalize("blue dot, red square", images={"red square": imgs, "Red  square": imgs})
    with pytest.raises(PromptError, match="images must map class names"):
        pz.personalize("blue dot, red square", images=[imgs])
    (tmp_path / "not.png").write_bytes(b"no image here")
    with pytest.raises(ImageError, match=r"class 'red square': .*not\.png is not a readable image"):
        pz.personalize("blue dot, red square", images={"red square": [tmp_path / "not.png"]})


def test_refusal_without_image_tower(tmp_path):
    b = make_tiny_bundle(tmp_path / "tiny")  # text-only encoder, like MiniLM bundles
    p = Personalizer.from_bundle(b, threads=1)
    assert not p.has_image_tower
    with pytest.raises(BundleError, match=r"this bundle's text encoder \(tiny\) has no image tower; prompt with class names or descriptions"):
        p.personalize("dog, cat", images={"cat": _pictures(0)})
    assert p.personalize("dog, cat", images={}).labels == ["dog", "cat"]  # no images: text as before
    Image.fromarray(_pictures(0)[0]).save(tmp_path / "cat.png")
    r = CliRunner().invoke(main, ["personalize", "dog, cat", "-o", str(tmp_path / "m.onnx"), "--bundle", str(b),
                                  "--images", f"cat={tmp_path / 'cat.png'}"])
    assert r.exit_code == 2
    assert "has no image tower; prompt with class names or descriptions" in r.stderr and "Traceback" not in r.output
    assert not (tmp_path / "m.onnx").exists()


# ------------------------------------------------------------------ CLI


@pytest.mark.slow  # module fixture trains and exports a CLIP bundle (~1 min)
def test_cli_mixed_prompt(clip_run, tmp_path):
    import onnxruntime as ort

    d = tmp_path / "dots"
    d.mkdir()
    for i, im in enumerate(_pictures(7)):
        Image.fromarray(im).save(d / f"{i}.png")
    extra = tmp_path / "extra.jpg"
    Image.fromarray(_pictures(8)[1]).save(extra)
    out = tmp_path / "m.onnx"
    args = ["personalize", "red square", "my thing, blue dot", "-o", str(out), "--bundle", str(clip_run["bundle"]),
            "--describe", "my thing=a green stripe pattern", "--images", f"blue dot={d / '0.png'},{d / '1.png'}",
            "--images", f"Blue Dot={extra}", "--steps", "5", "--json"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    j = json.loads(r.stdout)
    assert j["labels"] == ["red square", "my thing", "blue dot"]
    assert j["image_prompts"] == {"blue dot": 3}
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    assert json.loads(meta["labels"]) == j["labels"] and json.loads(meta["image_prompts"]) == {"blue dot": 3}
    assert sess.run(["probabilities"], {"image": synthetic_universe()[1].images[:4]})[0].shape == (4, 3)
    # the CLI and the API agree: same prompt, same seed, same bytes
    pz = Personalizer.from_bundle(clip_run["bundle"], threads=1)
    api = pz.personalize(["red square", "my thing", "blue dot"], descriptions=[None, "a green stripe pattern", None],
                         images={"blue dot": [d / "0.png", d / "1.png", extra]}, steps=5)
    saved = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(out)).graph.initializer}
    np.testing.assert_array_equal(saved["fc.weight"], api.params["fc.weight"])
    # a directory stands for all its images; the text summary names the image-prompted class
    r = CliRunner().invoke(main, ["personalize", "red square, blue dot", "-o", str(tmp_path / "d.onnx"), "--bundle",
                                  str(clip_run["bundle"]), "--images", f"blue dot={d}", "--steps", "3"])
    assert r.exit_code == 0, r.output
    assert "prompted by images: blue dot (3)" in r.stderr
    # a class only in --images is refused: CLASSES fixes the labels and their order
    r = CliRunner().invoke(main, ["personalize", "red square, blue dot", "-o", str(tmp_path / "x.onnx"), "--bundle",
                                  str(clip_run["bundle"]), "--images", f"zebra={extra}"])
    assert r.exit_code == 2 and "--images names 'zebra', which is not one of the classes" in r.stderr
    r = CliRunner().invoke(main, ["personalize", "red square, blue dot", "-o", str(tmp_path / "x.onnx"), "--bundle",
                                  str(clip_run["bundle"]), "--images", "blue dot"])
    assert r.exit_code == 2 and "--images takes NAME=IMAGE[,IMAGE...]" in r.stderr
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.slow  # module fixture trains and exports a CLIP bundle (~1 min)
def test_image_prompts_without_torch(clip_run, tmp_path):
    """The runtime image path imports neither torch nor open_clip."""
    script = r"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "open_clip", "transformers", "torchvision"}:
            raise ImportError(name)
sys.meta_path.insert(0, Block())
import numpy as np
from tina_edge.runtime import Personalizer
p = Personalizer.from_bundle(sys.argv[1], threads=1)
imgs = np.random.default_rng(0).integers(0, 256, (2, 40, 30, 3), dtype=np.uint8)
clf = p.personalize("red square, blue dot", images={"blue dot": imgs}, steps=3)
assert clf.labels == ["red square", "blue dot"] and "torch" not in sys.modules
print("ok")
"""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", script, str(clip_run["bundle"])], capture_output=True, text=True,
                       env=env, cwd=tmp_path, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


# ------------------------------------------------------------------ eval


@pytest.mark.slow  # module fixture trains and exports a CLIP bundle (~1 min)
def test_eval_image_prompt_rows(clip_run, tmp_path):
    from tina_edge.train.evaluation.evaluate import image_class_embeddings, image_prompt_encoder
    from tina_edge.train.configs import EvalOptions
    from tina_edge.train.stages.small import stage_eval
    from tina_edge.train.diffusion.checkpoint import Checkpoint, read_checkpoint

    train, test = synthetic_universe()
    res = stage_eval(clip_run["workdir"], train, test, EvalOptions(sampler="ddim", steps=5, out_dir=tmp_path / "eval",
                                                                   image_prompts=(10, 1, 5), progress=False))
    ip = res["image_prompts"]
    assert ip["shots"] == [1, 5, 10] and ip["examples_from"] == "train split" and not ip["random_weights"]
    n_tasks = len(res["tasks"])
    assert len(ip["tasks"]) == 3 * n_tasks
    for n in (1, 5, 10):
        rows = [r for r in ip["tasks"] if r["shots"] == n]
        assert [r["classes"] for r in rows] == [r["classes"] for r in res["tasks"]]  # the same tasks as the text rows
        assert all(0.0 <= r["generated"] <= 100.0 for r in rows)
        s = ip["summary"][str(n)]
        assert s["id"] == pytest.approx(np.mean([r["generated"] for r in rows if r["kind"] == "id"]))
        assert -1.0 <= s["cosine_to_text"] <= 1.0
    saved = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert set(saved["summary"]["image_prompts"]) == {"1", "5", "10"}
    report = (tmp_path / "eval" / "report.md").read_text()
    for row in ("| text (class names) |", "| images, n=1 |", "| images, n=5 |", "| images, n=10 |"):
        assert row in report

    ck = read_checkpoint(clip_run["workdir"] / "tina.safetensors")
    enc = clip_run["clip"]
    tables = image_class_embeddings(enc, train.images, train.labels, [0, 2], (1, 5), seed=0)
    assert tables[1].shape == (3, 64) and not tables[1][1].any()  # classes not asked for stay zero
    np.testing.assert_allclose(np.linalg.norm(tables[5][[0, 2]], axis=1), 1.0, atol=1e-5)
    with pytest.raises(TinaEdgeError, match="fewer than the 500 example images"):
        image_class_embeddings(enc, train.images, train.labels, [0], (500,))
    # refusals: a text-only encoder, and CLIP weights other than the checkpoint's
    minilm = {"kind": "minilm", "name": "all-MiniLM-L6-v2", "spec": "minilm", "dim": 384}
    with pytest.raises(TinaEdgeError, match="image prompts need a CLIP text encoder.*all-MiniLM-L6-v2"):
        image_prompt_encoder(Checkpoint(ck.tensors, ck.meta | {"text_encoder": minilm}))
    random_clip = {"kind": "open_clip", "spec": "open_clip:tina-tiny-clip"}  # seed-0 random weights
    with pytest.raises(TinaEdgeError, match="use the weights the checkpoint was trained with"):
        image_prompt_encoder(Checkpoint(ck.tensors, ck.meta | {"text_encoder": random_clip}))
    r = CliRunner().invoke(main, ["train", "eval", "--workdir", str(clip_run["workdir"]), "--image-prompts", "0,5"])
    assert r.exit_code == 2 and "--image-prompts takes positive image counts" in r.stderr
