"""Issue 9: one attack of each class through the real CLI in a fresh process with torch, open_clip,
transformers and torchvision unimportable (what a runtime-only install has). Every attack must end
with exit status 2 and exactly one escaped `error:` line on stderr: no traceback, no warning line,
no raw escape sequence, no file changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from runtime_fixtures import make_tiny_bundle

ROOT = Path(__file__).resolve().parents[1]

# runs the CLI with the train-side packages blocked, as on a runtime-only install
LAUNCH = r"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "open_clip", "transformers", "torchvision"}:
            raise ImportError(f"{name} is not installed (runtime-only install)")
        return None
sys.meta_path.insert(0, Block())
from tina_edge.cli.main import main
sys.argv = ["tina-edge", *sys.argv[1:]]
main()
"""


def _model(path: Path, *, labels, nan=False, unused_initializer=True) -> Path:
    nodes = [helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["f"], ["m"], keepdims=0),
             helper.make_node("Reshape", ["m", "one"], ["m1"]),
             helper.make_node("Mul", ["m1", "w"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1)]
    inits = [numpy_helper.from_array(np.array([1, 1], np.int64), "one"),
             numpy_helper.from_array(np.full((1, len(labels)), np.nan if nan else 0.01, np.float32), "w")]
    if unused_initializer:  # onnxruntime prints a coloured warning for it unless told not to
        inits.append(numpy_helper.from_array(np.zeros(3, np.float32), "unused"))
    g = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", 8, 8, 3])],
                          [helper.make_tensor_value_info(o, TensorProto.FLOAT, ["N", len(labels)]) for o in ("logits", "probabilities")],
                          inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    helper.set_model_props(m, {"labels": json.dumps(labels)})
    path.write_bytes(m.SerializeToString())
    return path


def _digest(d: Path) -> dict:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def attacks(tmp_path_factory) -> tuple[Path, list[tuple[str, list[str]]]]:
    t = tmp_path_factory.mktemp("attacks")
    good = make_tiny_bundle(t / "bundle")
    tampered = make_tiny_bundle(t / "tampered")
    d = json.loads((tampered / "manifest.json").read_text())
    d["diffusion"]["default_steps"] = 2
    (tampered / "manifest.json").write_text(json.dumps(d))
    pax = t / "pax.tar"
    with tarfile.open(pax, "w", format=tarfile.PAX_FORMAT) as tf:
        for f in sorted(good.iterdir()):
            tf.add(f, arcname=f.name)
        info = tarfile.TarInfo("x")
        info.pax_headers = {"comment": "x" * (2 << 20)}
        tf.addfile(info)
    imgs = t / "imgs"
    imgs.mkdir()
    Image.new("RGB", (9, 9)).save(imgs / "ok.png")
    eps = t / "eps"
    eps.mkdir()
    (eps / "photo.jpg").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 1 1\nshowpage\n")
    trunc = t / "trunc"
    trunc.mkdir()
    buf = t / "full.jpg"
    Image.new("RGB", (64, 64), (9, 9, 9)).save(buf, quality=90)
    (trunc / "cut\x1b[2J.jpg").write_bytes(buf.read_bytes()[:200])
    nan = _model(t / "nan.onnx", labels=["a", "b"], nan=True)
    evil = _model(t / "evil.onnx", labels=["\x1b[31mred", "b", "c"])
    wrong = _model(t / "wrong.onnx", labels=["a", "b", "c", "d"])
    cases = [
        ("tampered manifest", ["info", str(tampered)]),
        ("pinned id", ["personalize", "dog, cat", "-o", str(t / "o1.onnx"), "--bundle", str(good), "--expect-bundle-id", "0" * 16]),
        ("pax header", ["info", str(pax)]),
        ("eps as jpg", ["predict", str(evil), str(eps)]),
        ("truncated jpeg with ESC name", ["predict", str(evil), str(trunc)]),
        ("nan model", ["predict", str(nan), str(imgs)]),
        ("labels vs outputs", ["predict", str(wrong.with_name("wrong.onnx")), str(imgs)]),
        ("bidi prompt", ["personalize", "\u202edog, cat", "-o", str(t / "o2.onnx"), "--bundle", str(good)]),
        ("invisible prompt", ["personalize", "\u200b, cat", "-o", str(t / "o3.onnx"), "--bundle", str(good)]),
        ("trailing slash", ["personalize", "dog, cat", "-o", f"{t}/new/", "--bundle", str(good)]),
        ("bundle file as output", ["personalize", "dog, cat", "-o", str(good / "denoiser.onnx"), "--bundle", str(good), "--force"]),
        ("usage error", ["predict", str(evil), str(imgs), "--top", "0"]),
    ]
    # the wrong model: 3 outputs declared for 4 labels
    import onnx

    w = onnx.load(str(wrong))
    for o in w.graph.output:
        o.type.tensor_type.shape.dim[1].dim_value = 3
    wrong.write_bytes(w.SerializeToString())
    return t, cases


@pytest.mark.slow  # twelve fresh interpreters: ~30 s idle, more on a loaded machine
def test_every_attack_ends_in_exit_2_and_one_line(attacks):
    t, cases = attacks
    before = _digest(t)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    procs = [(name, subprocess.Popen([sys.executable, "-c", LAUNCH, *args], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)) for name, args in cases]
    for name, p in procs:
        out, err = p.communicate(timeout=120)
        text = err.decode("utf-8", "replace")
        lines = text.strip().splitlines()
        assert p.returncode == 2, (name, p.returncode, text)
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, text)
        assert "Traceback" not in text and b"\x1b" not in err and b"\x1b" not in out, (name, text)
    assert _digest(t) == before  # no file changed, nothing written
