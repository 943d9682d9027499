"""Issue 9, items 5-11: images, foreign models, prompts, terminal output, outputs, API types and
embeddings that do not depend on their batch. Crafted inputs, real decoders, real subprocesses."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from tina_edge.cli.main import main
from tina_edge.cli.safe_text import json_text, safe
from tina_edge.runtime import PersonalizedClassifier, Personalizer
from tina_edge.runtime import images as images_mod
from tina_edge.runtime.bundle import default_bundle_path
from tina_edge.runtime.errors import BundleError, ImageError, ModelFileError, PromptError, TinaEdgeError
from tina_edge.runtime.images import load_images

from cli_checks import one_error_line

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pz(base_bundle) -> Personalizer:
    return Personalizer.from_bundle(base_bundle, threads=1)


@pytest.fixture(scope="module")
def model_file(pz, tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("model") / "m.onnx"
    pz.personalize("dog, cat, horse", seed=0).save(p)
    return p


def run(*args):
    return CliRunner().invoke(main, [str(a) if isinstance(a, Path) else a for a in args])


def strict_json(text: str):
    def no_constants(c):
        raise AssertionError(f"non-standard JSON constant {c}")
    return json.loads(text, parse_constant=no_constants)


def _png(size=(20, 20), color=(10, 200, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


EPS = b"""%!PS-Adobe-3.0 EPSF-3.0
%%BoundingBox: 0 0 10 10
newpath 0 0 moveto 10 10 lineto stroke
showpage
%%EOF
"""


# ============================================================================ item 5: images

def _fake_gs(tmp_path: Path) -> tuple[Path, Path]:
    """A `gs` first on PATH that only leaves a marker: proof of whether a program was started."""
    bindir, marker = tmp_path / "bin", tmp_path / "gs-was-run"
    bindir.mkdir()
    gs = bindir / "gs"
    gs.write_text(f"#!/bin/sh\necho started >> {marker}\nexit 1\n")
    gs.chmod(0o755)
    return bindir, marker


def test_eps_renamed_jpg_starts_no_program(model_file, tmp_path):
    bindir, marker = _fake_gs(tmp_path)
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(_png())
    (photos / "holiday.jpg").write_bytes(EPS)
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "tina_edge.cli.main", "predict", str(model_file), str(photos)],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "holiday.jpg is not a readable image" in lines[0] and "JPEG, PNG" in lines[0]
    assert not marker.exists()
    # control: Pillow left to itself would start Ghostscript on the very same file
    ctl = "from PIL import Image; im = Image.open(__import__('sys').argv[1]); im.load()"
    subprocess.run([sys.executable, "-c", ctl, str(photos / "holiday.jpg")], env=env, capture_output=True, timeout=60)
    assert marker.exists()


def test_decoders_outside_the_allow_list_are_refused(tmp_path):
    for fmt, ext in (("ICO", "ico"), ("PPM", "ppm"), ("TGA", "tga"), ("PCX", "pcx")):
        p = tmp_path / f"x.{ext}"
        Image.new("RGB", (16, 16), (1, 2, 3)).save(p, fmt)
        with pytest.raises(ImageError, match=f"x.{ext} is not a readable image .*accepted formats"):
            load_images(p, (8, 8))
    for fmt in images_mod.ALLOWED_FORMATS:  # every allowed format really decodes
        p = tmp_path / f"ok.{fmt.lower()}"
        Image.new("RGB", (16, 16), (1, 2, 3)).save(p, fmt)
        assert load_images(p, (8, 8)).shape == (1, 8, 8, 3)


def test_decode_memory_is_bounded(tmp_path, monkeypatch):
    big = tmp_path / "big.png"
    Image.new("RGB", (300, 200)).save(big)
    monkeypatch.setattr(images_mod, "MAX_PIXELS", 10_000)
    with pytest.raises(ImageError, match="big.png is 300x200 pixels; images of at most"):
        load_images(big, (8, 8))
    # a JPEG of the same size is decoded at 1/8 scale (38x25 <= 10 000 pixels): it works
    jpg = tmp_path / "big.jpg"
    Image.new("RGB", (300, 200), (200, 10, 10)).save(jpg, quality=95)
    x = load_images(jpg, (8, 8))
    assert x.shape == (1, 8, 8, 3) and abs(int(x[0, 4, 4, 0]) - 200) < 8
    # a PNG header that claims 100 000 x 100 000 pixels: refused at open, nothing allocated
    raw = bytearray(_png((1, 1)))
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    raw[16:29] = ihdr
    raw[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    (tmp_path / "bomb.png").write_bytes(bytes(raw))
    with pytest.raises(ImageError, match="bomb.png is not a readable image|bomb.png is 100000x100000"):
        load_images(tmp_path / "bomb.png", (8, 8))


def test_zero_size_images_are_refused():
    for a in (np.zeros((0, 8, 8, 3), np.uint8), np.zeros((8, 0, 3), np.uint8), np.zeros((0, 4), np.uint8)):
        with pytest.raises(ImageError, match="empty"):
            load_images(a, (8, 8))
    with pytest.raises(ImageError, match="empty image"):
        load_images(Image.new("RGB", (0, 5)), (8, 8))


SAMPLES = {}


def _samples() -> dict[str, bytes]:
    if not SAMPLES:
        rng = np.random.default_rng(0)
        img = Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8))
        for fmt in images_mod.ALLOWED_FORMATS:
            buf = io.BytesIO()
            img.save(buf, fmt)
            SAMPLES[fmt] = buf.getvalue()
        SAMPLES["EPS"] = EPS
    return SAMPLES


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(fmt=st.sampled_from(list(images_mod.ALLOWED_FORMATS) + ["EPS"]), data=st.data())
def test_fuzz_image_loader_gives_images_or_image_error(tmp_path, fmt, data):
    raw = bytearray(_samples()[fmt])
    for _ in range(data.draw(st.integers(0, 6))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert", "header"]))
        pos = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "flip" and raw:
            raw[pos] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            del raw[pos:pos + data.draw(st.integers(1, 64))]
        elif op == "insert":
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=16))
        elif op == "header" and len(raw) > 24:  # widths/heights live in the first bytes of most formats
            raw[data.draw(st.integers(0, 24))] = 0xFF
    p = tmp_path / "fuzz.img"
    p.write_bytes(bytes(raw))
    try:
        x = load_images(p, (8, 8))
    except ImageError as e:
        assert str(e).startswith(str(p)) or str(p) in str(e)
        assert "\n" not in str(e)
    else:
        assert x.shape == (1, 8, 8, 3) and x.dtype == np.uint8


def test_batch_size_bounds_what_is_decoded_at_once(model_file, tmp_path, monkeypatch):
    d = tmp_path / "many"
    d.mkdir()
    rng = np.random.default_rng(1)
    for i in range(23):
        Image.fromarray(rng.integers(0, 255, (9, 9, 3), dtype=np.uint8)).save(d / f"{i:03d}.png")
    whole = run("predict", model_file, d, "--json")
    seen = []
    real = PersonalizedClassifier._run

    def spy(self, x):
        seen.append(x.shape[0])
        return real(self, x)

    monkeypatch.setattr(PersonalizedClassifier, "_run", spy)
    batched = run("predict", model_file, d, "--json", "--batch-size", "5")
    assert batched.exit_code == 0, batched.output
    assert strict_json(batched.stdout) == strict_json(whole.stdout)
    assert seen == [5, 5, 5, 5, 3]
    one_error_line(run("predict", model_file, d, "--batch-size", "0"), "batch-size")


# ============================================================================ item 6: foreign models

def _foreign(path: Path, *, in_name="image", in_type=TensorProto.UINT8, in_shape=("N", 8, 8, 3), k_out=3,
             outputs=("logits", "probabilities"), labels='["a", "b", "c"]', nan=False) -> Path:
    """A real model of any contract: image -> mean over pixels -> tiled to k logits -> softmax."""
    nodes = [helper.make_node("Cast", [in_name], ["f"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["f"], ["m"], keepdims=0),
             helper.make_node("Reshape", ["m", "one"], ["m1"]),
             helper.make_node("Mul", ["m1", "w"], ["logits0"])]
    inits = [numpy_helper.from_array(np.array([1, 1], np.int64), "one"),
             numpy_helper.from_array(np.full((1, k_out), np.nan if nan else 0.01, np.float32), "w")]
    nodes += [helper.make_node("Identity", ["logits0"], ["logits"]),
              helper.make_node("Softmax", ["logits0"], ["probabilities"], axis=-1)]
    outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, ["N", k_out]) for o in outputs]
    g = helper.make_graph(nodes, "foreign", [helper.make_tensor_value_info(in_name, in_type, list(in_shape))], outs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    if labels is not None:
        helper.set_model_props(m, {"labels": labels})
    path.write_bytes(m.SerializeToString())
    return path


FOREIGN = [
    ("input name", dict(in_name="pixels"), "takes inputs ['pixels']"),
    ("input dtype", dict(in_type=TensorProto.FLOAT), "must be a uint8 tensor"),
    ("input rank", dict(in_shape=("N", 8, 8)), "must be [N, H, W, 3]"),
    ("input layout NCHW", dict(in_shape=("N", 3, 8, 8)), "must be [N, H, W, 3]"),
    ("output count", dict(k_out=2), "has 2 classes but its labels metadata names 3"),
    ("missing output", dict(outputs=("logits",)), "has no output 'probabilities'"),
    ("labels not a list", dict(labels='{"a": 1}'), "no valid 'labels' list"),
    ("labels nested deeply", dict(labels="[" * 100_000 + "]" * 100_000), "no valid 'labels' list"),
    ("labels huge", dict(labels=json.dumps(["x" * 1000] * 2000)), "'labels' metadata is"),
    ("label too long", dict(labels=json.dumps(["x" * 5000, "y", "z"])), "longer than 1000 characters"),
    ("no labels", dict(labels=None), "no valid 'labels' list"),
]


@pytest.mark.parametrize("name,kw,words", FOREIGN, ids=[f[0] for f in FOREIGN])
def test_foreign_models_get_a_clear_error(tmp_path, name, kw, words):
    p = _foreign(tmp_path / "f.onnx", **kw)
    img = tmp_path / "a.png"
    img.write_bytes(_png())
    with pytest.raises(ModelFileError) as e:
        PersonalizedClassifier.load(p)
    assert words in str(e.value), str(e.value)
    one_error_line(run("predict", p, img), words)


def test_a_conforming_foreign_model_works_and_nan_output_is_an_error(tmp_path):
    img = tmp_path / "a.png"
    img.write_bytes(_png())
    r = run("predict", _foreign(tmp_path / "ok.onnx"), img, "--json")
    assert r.exit_code == 0, r.output
    assert strict_json(r.stdout)[0]["label"] in "abc"
    one_error_line(run("predict", _foreign(tmp_path / "nan.onnx", nan=True), img, "--json"), "non-finite")


def test_foreign_model_with_external_data_is_refused(tmp_path):
    p = _foreign(tmp_path / "f.onnx")
    m = onnx.load(str(p))
    t = TensorProto(name="c", data_type=TensorProto.FLOAT, dims=[2], data_location=TensorProto.EXTERNAL)
    e = t.external_data.add()
    e.key, e.value = "location", "/etc/passwd"
    m.graph.node.insert(0, helper.make_node("Constant", [], ["unused"], value=t))
    p.write_bytes(m.SerializeToString())
    img = tmp_path / "a.png"
    img.write_bytes(_png())
    one_error_line(run("predict", p, img), "external file '/etc/passwd'", "self-contained")


# ============================================================================ item 7: prompts

SAME_TOKENS = [
    ("dog, \u00addog", "named twice"),  # soft hyphen
    ("café, cafe", "read the same to this bundle's text encoder"),  # the tokenizer strips accents
    ("caf\u0065\u0301, cafe", "read the same"),  # combining accent
]


@pytest.mark.parametrize("prompt,words", SAME_TOKENS, ids=[repr(p) for p, _ in SAME_TOKENS])
def test_names_that_become_the_same_tokens_are_duplicates(pz, prompt, words):
    with pytest.raises(PromptError) as e:
        pz.personalize(prompt)
    msg = str(e.value)
    assert words in msg and msg.count('"') >= 4, msg  # both names are shown


INVISIBLE = [
    ("\u200b, dog", "has no visible characters"),
    ("\u3164, dog", "has no visible characters"),  # Hangul filler: a "letter" that renders as nothing
    ("\u200d\u0301, dog", "has no visible characters"),
    ("\u202egod, cat", "bidirectional control"),
    ("dog, c\u2066at\u2069", "bidirectional control"),
    # zero-width space, BOM, word joiner: refused since issue 20 (they were dropped, then found duplicates)
    ("dog, do\u200bg", "zero-width characters"),
    ("\ufeffdog, dog", "zero-width characters"),
    ("dog, d\u2060og", "zero-width characters"),
]


@pytest.mark.parametrize("prompt,words", INVISIBLE, ids=[repr(p) for p, _ in INVISIBLE])
def test_invisible_names_and_bidi_controls_are_refused(pz, base_bundle, tmp_path, prompt, words):
    with pytest.raises(PromptError, match=words):
        pz.personalize(prompt)
    one_error_line(run("personalize", prompt, "-o", tmp_path / "m.onnx", "--bundle", base_bundle), words)


def test_what_is_stored_in_metadata_is_bounded(pz):
    clf = pz.personalize(["x" * 5000 + " dog", "cat"])
    assert max(len(n) for n in clf.labels) <= 200
    with pytest.raises(PromptError, match="longer than 100000 characters"):
        pz.personalize("dog, cat, " + "a" * 200_000)
    with pytest.raises(PromptError, match="at most 1000 are allowed"):
        pz.personalize("dog, cat", descriptions=["d" * 2000, None])


# ============================================================================ item 8: terminal output

def test_labels_and_file_names_are_escaped(pz, tmp_path):
    """A model whose labels hold ESC/CR/bidi, an image whose name holds ESC: nothing raw reaches stdout."""
    p = _foreign(tmp_path / "evil.onnx", labels=json.dumps(["\x1b[31mred\x1b[0m", "cat\r\nok\tfake", "\u202eabc"]))
    d = tmp_path / "imgs"
    d.mkdir()
    (d / "a\x1b]0;pwned\x07.png").write_bytes(_png())
    r = run("predict", p, d, "--top", "3")
    assert r.exit_code == 0, r.output
    assert not any(ch in r.stdout for ch in "\x1b\r\x07\u202e") and r.stdout.count("\n") == 1
    assert "\\x1b[31mred" in r.stdout and "\\u202eabc" in r.stdout
    r = run("predict", p, d, "--json")
    assert not any(ch in r.stdout for ch in "\x1b\r\x07\u202e")
    row = strict_json(r.stdout)[0]
    assert row["image"].endswith("a\x1b]0;pwned\x07.png") and row["label"] in ("\x1b[31mred\x1b[0m", "cat\r\nok\tfake", "\u202eabc")


def test_manifest_strings_are_escaped_in_info(base_bundle, tmp_path):
    from tina_edge.runtime.manifest import EvaluationSummary, read_manifest, write_manifest

    d = tmp_path / "b"
    shutil.copytree(base_bundle, d)
    m = read_manifest(d)
    m.producer = "\x1b]0;owned\x07\x1b[2J"
    m.training.datasets = ["ok\rFAKE LINE"]
    m.evaluation = EvaluationSummary(extra={"note\x1b[31m": float("nan")})  # a figure this version does not know
    write_manifest(d, m)
    for args in (["info", d], ["info", d, "-v"], ["info", d, "--json"]):
        r = run(*args)
        assert r.exit_code == 0, r.output
        assert not any(ch in r.output for ch in "\x1b\r\x07"), r.output
    assert strict_json(run("info", d, "--json").stdout)["evaluation"] == {"note\x1b[31m": None}


def test_error_lines_are_escaped(base_bundle, tmp_path):
    img = tmp_path / "bad\x1b[2J.png"
    img.write_bytes(b"not an image")
    model = tmp_path / "m.onnx"
    Personalizer.from_bundle(base_bundle).personalize("dog, cat").save(model)
    line = one_error_line(run("predict", model, img), "is not a readable image")
    assert "\\x1b[2J" in line


def test_safe_text_and_json_text():
    assert safe("dog 🐶 كلب 👩\u200d🚀") == "dog 🐶 كلب 👩\u200d🚀"
    assert safe("a\nb\x1b\u202e\udcff") == "a\\x0ab\\x1b\\u202e\\udcff"
    text = json_text({"x": [float("inf"), float("nan"), 1.5], "s": "\x1b\u202e\U0001F436\udcff"})
    assert text.isprintable() and strict_json(text) == {"x": [None, None, 1.5], "s": "\x1b\u202e\U0001F436\udcff"}


# ============================================================================ item 9: outputs

def test_output_never_replaces_a_bundle_file(base_bundle, tmp_path):
    d = tmp_path / "b"
    shutil.copytree(base_bundle, d)
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    for name in ("denoiser.onnx", "manifest.json", "template.onnx"):
        one_error_line(run("personalize", "dog, cat", "-o", d / name, "--bundle", d, "--force"),
                       "is a file of the bundle in use")
    os.link(d / "tokenizer.json", tmp_path / "hardlink.json")  # the same file under another name
    one_error_line(run("personalize", "dog, cat", "-o", tmp_path / "hardlink.json", "--bundle", d, "--force"),
                   "tokenizer.json")
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before
    # an archive bundle cannot be overwritten by its own output either
    import tarfile

    arch = tmp_path / "b.tar"
    with tarfile.open(arch, "w") as tf:
        for f in sorted(d.iterdir()):
            tf.add(f, arcname=f.name)
    size = arch.stat().st_size
    one_error_line(run("personalize", "dog, cat", "-o", arch, "--bundle", arch, "--force"), "is a file of the bundle in use")
    assert arch.stat().st_size == size


def test_output_paths_that_name_a_directory_are_errors(base_bundle, tmp_path):
    for out in (f"{tmp_path}/new/", f"{tmp_path}/", str(tmp_path), f"{tmp_path}/.", f"{tmp_path}/.."):
        one_error_line(run("personalize", "dog, cat", "-o", out, "--bundle", base_bundle, "--force"), "directory")
    assert not (tmp_path / "new").exists()


def test_long_valid_file_name_works(base_bundle, tmp_path):
    out = tmp_path / ("m" * 250 + ".onnx")  # 255 bytes: NAME_MAX exactly
    r = run("personalize", "dog, cat", "-o", out, "--bundle", base_bundle)
    assert r.exit_code == 0, r.output
    assert PersonalizedClassifier.load(out).labels == ["dog", "cat"]
    r = run("personalize", "dog, cat", "-o", out, "--bundle", base_bundle, "--force")  # replacing it works too
    assert r.exit_code == 0, r.output
    assert sorted(os.listdir(tmp_path)) == [out.name]
    one_error_line(run("personalize", "dog, cat", "-o", tmp_path / ("m" * 300), "--bundle", base_bundle), "File name too long")


_SLOW_SAVE = r"""
import os, sys, time
import tina_edge.runtime.atomic as atomic
real = os.fsync
def slow_fsync(fd):
    real(fd)
    print("writing", flush=True)
    time.sleep(30)
atomic.os.fsync = slow_fsync
from tina_edge.cli.main import main
sys.argv = ["tina-edge", "personalize", "dog, cat", "-o", sys.argv[1], "--bundle", sys.argv[2], "--force"]
main()
"""


@pytest.mark.parametrize("existing", [False, True], ids=["new", "replace"])
def test_sigterm_during_a_write_leaves_no_temp_file(base_bundle, tmp_path, existing):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "m.onnx"
    if existing:
        out.write_bytes(b"old model")
    p = subprocess.Popen([sys.executable, "-c", _SLOW_SAVE, str(out), str(base_bundle)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert p.stdout.readline().strip() == "writing"
    assert len(os.listdir(out_dir)) == (2 if existing else 1)  # the temp sibling is there now
    p.send_signal(signal.SIGTERM)
    _out, err = p.communicate(timeout=30)
    assert p.returncode == 128 + signal.SIGTERM
    assert err.strip().splitlines() == ["terminated by SIGTERM; no partial output was left behind"]
    assert os.listdir(out_dir) == (["m.onnx"] if existing else [])
    if existing:
        assert out.read_bytes() == b"old model"


# ============================================================================ item 10: API types

def test_descriptions_accept_a_list_or_a_mapping_only(pz):
    a = pz.personalize("dog, cat", descriptions=["a loyal pet", None], seed=2)
    b = pz.personalize("dog, cat", descriptions={"Dog": "a loyal pet"}, seed=2)
    assert a.to_bytes() == b.to_bytes()
    bad = [({"a loyal pet", "x"}, "got a set"), ((d for d in ["x", "y"]), "got a generator"), (["x"], "1 entries but there are 2"),
           ("a loyal pet", "got a str"), ({"horse": "x"}, "not one of the classes"), (5, "got a int")]
    for desc, words in bad:
        with pytest.raises(PromptError, match=words):
            pz.personalize("dog, cat", descriptions=desc)


@pytest.mark.parametrize("value", [None, 5, 3.5, object(), b"a.png", {"a.png"}, (x for x in ["a.png"])],
                         ids=["None", "int", "float", "object", "bytes", "set", "generator"])
def test_predict_refuses_non_image_objects(model_file, value):
    clf = PersonalizedClassifier.load(model_file)
    with pytest.raises(ImageError, match="cannot read images? from a"):
        clf.predict(value)


def test_api_refuses_wrong_types_with_tina_edge_errors(model_file, tmp_path):
    for bad in (5, object()):
        with pytest.raises(TinaEdgeError):
            Personalizer.from_bundle(bad)
        with pytest.raises(ModelFileError):
            PersonalizedClassifier.load(bad)
    with pytest.raises(ImageError, match="a\x00b.png"):
        PersonalizedClassifier.load(model_file).predict("a\x00b.png")
    with pytest.raises(ImageError, match="batch_size"):
        PersonalizedClassifier.load(model_file).predict(np.zeros((8, 8, 3), np.uint8), batch_size=0)


# ============================================================================ item 11: batch-independent embeddings

NAMES = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=NAMES, others=st.lists(NAMES, min_size=1, max_size=4))
def test_tiny_embedding_does_not_depend_on_company(pz, name, others):
    alone = pz.encode([name])[0]
    assert np.abs(pz.encode([name, *others])[0] - alone).max() <= 1e-5
    assert np.abs(pz.encode([*others, name])[-1] - alone).max() <= 1e-5


@pytest.fixture(scope="module")
def default_pz():
    if not (default_bundle_path() / "manifest.json").is_file():
        pytest.skip("the embedded default bundle is absent")
    return Personalizer.from_bundle(None, threads=1)


COMPANY = ["x", "a much longer name that pads every other row of the batch", "golden retriever", "🐶", "Straße"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(name=NAMES)
def test_default_int8_embedding_does_not_depend_on_company(default_pz, name):
    """The int8 MiniLM: encode(["x"]) equals the first row of encode(["x", anything]) within 1e-5."""
    alone = default_pz.encode([name])[0]
    for other in COMPANY:
        assert np.abs(default_pz.encode([name, other])[0] - alone).max() <= 1e-5
    assert np.abs(default_pz.encode([name, *COMPANY])[0] - alone).max() <= 1e-5


def test_fifos_as_model_or_batch_file_are_refused_without_blocking(base_bundle, tmp_path):
    fifo = tmp_path / "fifo.onnx"
    os.mkfifo(fifo)
    img = tmp_path / "a.png"
    img.write_bytes(_png())
    with pytest.raises(ModelFileError, match="not a regular file"):
        PersonalizedClassifier.load(fifo)
    one_error_line(run("predict", fifo, img), "not a regular file")
    batch = tmp_path / "prompts.txt"
    os.mkfifo(batch)
    one_error_line(run("personalize", "--batch", batch, "-o", tmp_path / "out", "--bundle", base_bundle), "not a regular file")


def test_embedding_cache_is_exact_and_bounded(base_bundle):
    """Embeddings are pure functions of the text now, so the runtime caches them (bounded LRU)."""
    pz = Personalizer.from_bundle(base_bundle)
    enc = pz._text
    enc.cache_size = 3
    names = ["dog", "cat", "horse", "bird", "frog"]
    first = pz.encode(names)
    assert list(enc._cache) == ["horse", "bird", "frog"]  # only the 3 most recent are kept
    enc.cache_size = 0
    enc._cache.clear()
    np.testing.assert_array_equal(pz.encode(names), first)  # uncached runs give the same bits
    enc.cache_size = 3
    again = pz.encode(["frog", "frog"])
    np.testing.assert_array_equal(again, first[[4, 4]])
    again[0, 0] = 123.0  # the returned array is the caller's: the cache is untouched
    assert pz.encode(["frog"])[0, 0] == first[4, 0]


def test_head_output_is_checked_like_the_model_output(base_bundle, tmp_path):
    d = tmp_path / "b"
    shutil.copytree(base_bundle, d)
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    one_error_line(run("personalize", "dog, cat", "-o", tmp_path / "m.onnx", "--head", d / "template.onnx",
                       "--bundle", d, "--force"), "is a file of the bundle in use")
    (tmp_path / "h.json").write_text("old")
    one_error_line(run("personalize", "dog, cat", "-o", tmp_path / "m.onnx", "--head", tmp_path / "h.json",
                       "--bundle", d), "already exists")
    assert not (tmp_path / "m.onnx").exists()  # refused before anything was written
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before


def test_photo_preprocessing_opens_files_through_the_allow_list(tmp_path, monkeypatch):
    """Photo models (manifest preprocessing) decode files through the same hardened opener: a renamed
    EPS starts no program there either (fake `gs` on PATH records any start)."""
    from tina_edge.runtime.errors import ImageError
    from tina_edge.runtime.preprocess import PreprocessSpec, load_prepared

    marker = tmp_path / "gs-started"
    gs = tmp_path / "bin" / "gs"
    gs.parent.mkdir()
    gs.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    gs.chmod(0o755)
    monkeypatch.setenv("PATH", f"{gs.parent}:{os.environ.get('PATH', '')}")
    evil = tmp_path / "photo.jpg"
    evil.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    with pytest.raises(ImageError, match="photo.jpg is not a readable image .*accepted formats"):
        load_prepared([evil], PreprocessSpec(size=16))
    assert not marker.exists()
