"""Bundle verification: every refusal names the file and the problem, before any session exists."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import zipfile
from pathlib import Path

import onnx
import pytest

from tina_edge.runtime import Personalizer, open_bundle
from tina_edge.runtime.bundle import default_bundle_path
from tina_edge.runtime.errors import BundleError
from tina_edge.runtime.manifest import compute_bundle_id, read_manifest, write_manifest


def _edit_manifest(d: Path, fn) -> None:
    """Edit the manifest and re-hash its id consistently: the id is checked first, so only the rule can refuse."""
    p = d / "manifest.json"
    m = json.loads(p.read_text())
    fn(m)
    m["bundle_id"] = compute_bundle_id(m)
    p.write_text(json.dumps(m))


def _rehash(d: Path) -> None:
    write_manifest(d, read_manifest(d))


def _truncate(d: Path) -> None:
    p = d / "denoiser.onnx"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    _rehash(d)


def _flip_byte(d: Path) -> None:
    p = d / "template.onnx"
    b = bytearray(p.read_bytes())
    b[len(b) // 2] ^= 0xFF
    p.write_bytes(bytes(b))


def _symlink_outside(d: Path) -> None:
    outside = d.parent / "outside_tokenizer.json"
    shutil.copy(d / "tokenizer.json", outside)  # same bytes: only the link itself is wrong
    (d / "tokenizer.json").unlink()
    os.symlink(outside, d / "tokenizer.json")


def _rename_denoiser_input(d: Path) -> None:
    m = onnx.load(str(d / "denoiser.onnx"))
    for node in m.graph.node:
        node.input[:] = ["x_noisy" if i == "x_t" else i for i in node.input]
    m.graph.input[0].name = "x_noisy"
    onnx.save(m, str(d / "denoiser.onnx"))
    _rehash(d)


def _external_data(d: Path) -> None:
    m = onnx.load(str(d / "denoiser.onnx"))
    onnx.save(m, str(d / "denoiser.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="denoiser.onnx.data", size_threshold=0)
    _rehash(d)  # the .data file is not listed in the manifest


def _wrong_param_count(d: Path) -> None:
    def f(m):
        m["denoiser"]["param_count"] += 2
        m["template"]["layout"][-1].update(shape=[m["denoiser"]["k_max"] + 2], class_axis=None)
    _edit_manifest(d, f)


def _template_shape(d: Path) -> None:
    m = onnx.load(str(d / "template.onnx"))
    for init in m.graph.initializer:
        if init.name == "head.weight":
            init.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(init)[:, :1].repeat(7, 1), "head.weight"))
    onnx.save(m, str(d / "template.onnx"))
    _rehash(d)


CASES = [
    ("missing file", lambda d: (d / "denoiser.onnx").unlink(), ["denoiser.onnx", "missing"]),
    ("sha mismatch", _flip_byte, ["template.onnx", "sha256"]),
    ("size mismatch", lambda d: open(d / "tokenizer.json", "ab").write(b" "), ["tokenizer.json", "bytes"]),
    ("unknown schema", lambda d: _edit_manifest(d, lambda m: m.update(schema_version=99)), ["schema version 99"]),
    ("missing field", lambda d: _edit_manifest(d, lambda m: m.pop("denoiser")), ["missing required fields: denoiser"]),
    ("missing files", lambda d: _edit_manifest(d, lambda m: m.pop("files")), ["missing required fields: files"]),
    ("unlisted model", lambda d: _edit_manifest(d, lambda m: m["files"].pop("template.onnx")), ["template.onnx", "not listed"]),
    ("dotdot path", lambda d: _edit_manifest(d, lambda m: m["text_encoder"].update(model="../text_encoder.onnx")),
     ["text_encoder.model", "outside the bundle"]),
    ("absolute path", lambda d: _edit_manifest(d, lambda m: m["denoiser"].update(model="/etc/passwd")),
     ["denoiser.model", "outside the bundle"]),
    ("symlink outside", _symlink_outside, ["tokenizer.json", "symbolic link"]),
    ("truncated onnx", _truncate, ["denoiser.onnx", "not a readable ONNX model"]),
    ("not json", lambda d: (d / "manifest.json").write_text("{not json"), ["manifest.json", "not valid JSON"]),
    ("no manifest", lambda d: (d / "manifest.json").unlink(), ["no manifest.json"]),
    ("contract input", _rename_denoiser_input, ["denoiser.onnx", "no input 'x_t'"]),
    ("external data", _external_data, ["denoiser.onnx", "external data", "not a file listed"]),
    ("layout name", lambda d: _edit_manifest(d, lambda m: m["template"]["layout"][0].update(name="fc.weight")),
     ["template.onnx", "no initializer 'fc.weight'"]),
    ("param count", _wrong_param_count, ["denoiser.onnx", "x_t", "manifest says 30"]),
    ("template shape", _template_shape, ["template.onnx", "'head.weight' has shape [4, 7]", "says [4, 6]"]),
    ("bad type", lambda d: _edit_manifest(d, lambda m: m["denoiser"].update(k_max="four")), ["denoiser.k_max", "must be int"]),
    ("dim mismatch", lambda d: _edit_manifest(d, lambda m: (m["text_encoder"].update(embedding_dim=9), m["denoiser"].update(embedding_dim=9))),
     ["text_encoder.onnx", "embeddings", "manifest says 9"]),
]


@pytest.mark.parametrize("name,mutate,words", CASES, ids=[c[0] for c in CASES])
def test_refusals(bundle, sessions, name, mutate, words):
    mutate(bundle)
    with pytest.raises(BundleError) as e:
        open_bundle(bundle)
    for w in words:
        assert w in str(e.value), (w, str(e.value))
    with pytest.raises(BundleError) as e2:
        Personalizer.from_bundle(bundle)
    assert str(e2.value) == str(e.value)
    assert sessions["n"] == 0


def test_valid_bundle_creates_sessions(bundle, sessions):
    p = Personalizer.from_bundle(bundle)
    assert sessions["n"] == 2  # text encoder + denoiser; the template is not run here
    assert p.manifest.k_max == 4 and p.manifest.denoiser.param_count == 28
    assert len(p.manifest.bundle_id) == 16


def _zip_dir(d: Path, out: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(out, "w") as z:
        for f in sorted(d.iterdir()):
            z.write(f, prefix + f.name)
    return out


def test_archives_open_and_give_same_model(bundle, tmp_path):
    z = _zip_dir(bundle, tmp_path / "b.zip")
    t = tmp_path / "b.tar.gz"
    with tarfile.open(t, "w:gz") as tf:
        tf.add(bundle, arcname="mybundle")  # one top-level folder is fine
    ref = Personalizer.from_bundle(bundle).personalize("dog, cat", seed=3).to_bytes()
    for arch in (z, t):
        b = open_bundle(arch)
        assert b.root != bundle and (b.root / "manifest.json").is_file()
        assert Personalizer.from_bundle(arch).personalize("dog, cat", seed=3).to_bytes() == ref


def _tar_with(out: Path, bundle: Path, member: tarfile.TarInfo, data: bytes = b"") -> Path:
    with tarfile.open(out, "w") as tf:
        for f in sorted(bundle.iterdir()):
            tf.add(f, arcname=f.name)
        tf.addfile(member, io.BytesIO(data) if data else None)
    return out


def test_archive_refusals(bundle, tmp_path, sessions):
    z = tmp_path / "evil.zip"
    _zip_dir(bundle, z)
    with zipfile.ZipFile(z, "a") as zf:
        zf.writestr("../evil.txt", b"x")
    with pytest.raises(BundleError, match=r"evil.zip has a member that escapes the bundle: '../evil.txt'"):
        open_bundle(z)
    assert not (tmp_path.parent / "evil.txt").exists()

    za = tmp_path / "abs.zip"
    with zipfile.ZipFile(za, "w") as zf:
        zf.writestr("/etc/evil", b"x")
    with pytest.raises(BundleError, match="unsafe member path '/etc/evil'"):
        open_bundle(za)

    link = tarfile.TarInfo("tokenizer2.json")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    with pytest.raises(BundleError, match="link or special file 'tokenizer2.json'"):
        open_bundle(_tar_with(tmp_path / "link.tar", bundle, link))

    up = tarfile.TarInfo("sub/../../up.txt")
    up.size = 1
    with pytest.raises(BundleError, match="escapes the bundle"):
        open_bundle(_tar_with(tmp_path / "up.tar", bundle, up, b"x"))

    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(BundleError, match="not a bundle archive|damaged"):
        open_bundle(junk)
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    with pytest.raises(BundleError, match="notes.txt is a file but not a bundle archive"):
        open_bundle(txt)
    with pytest.raises(BundleError, match="does not exist"):
        open_bundle(tmp_path / "nope")
    assert sessions["n"] == 0


def test_symlinked_manifest_refused(bundle, tmp_path):
    real = tmp_path / "m.json"
    shutil.move(bundle / "manifest.json", real)
    os.symlink(real, bundle / "manifest.json")
    with pytest.raises(BundleError, match="manifest.json .* symbolic link"):
        open_bundle(bundle)


def test_default_bundle_missing_is_clear(monkeypatch, tmp_path):
    import importlib.resources

    monkeypatch.setattr(importlib.resources, "files", lambda pkg: tmp_path)
    (tmp_path / "default").mkdir()
    with pytest.raises(BundleError, match="embedded default bundle is missing .*--bundle PATH"):
        default_bundle_path()
    with pytest.raises(BundleError, match="embedded default bundle is missing"):
        Personalizer.from_bundle()


@pytest.mark.parametrize("field, value, words", [
    ("default_sampler", "euler", "diffusion defaults are invalid"),
    ("default_steps", 0, "default_steps"),
    ("beta_end", 1.5, "diffusion schedule is invalid"),
])
def test_write_manifest_refuses_what_the_runtime_would_refuse(bundle, field, value, words):
    """The schedule and sampler checks run on write as on read: no exporter writes an unopenable bundle."""
    before = (bundle / "manifest.json").read_bytes()
    m = read_manifest(bundle)
    setattr(m.diffusion, field, value)
    with pytest.raises(BundleError, match=words):
        write_manifest(bundle, m)
    assert (bundle / "manifest.json").read_bytes() == before  # nothing written
    open_bundle(bundle).close()
