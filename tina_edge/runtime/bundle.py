"""Opening a bundle safely: everything is verified before any onnxruntime session exists.

`open_bundle` accepts a directory or one archive (.zip, .tar, .tar.gz/.tgz, .tar.bz2, .tar.xz).
Archives are extracted into a private temp directory, refusing absolute paths, '..' components,
links and special files. Then, in order: the manifest is parsed and validated; every file it
lists must be a regular file (no symlink anywhere on its path) that stays inside the bundle, with
the listed size and sha256; the three ONNX graphs (and the optional CLIP image encoder) must
parse (without external data) and expose the contract inputs/outputs; the template must hold
every generated tensor with its K_max shape.
Each failure is a BundleError naming the file and the problem.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import importlib.resources
import os
import stat
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from .errors import BundleError
from .manifest import MANIFEST_NAME, Manifest, read_manifest
from .samplers import SAMPLERS

MAX_ARCHIVE_BYTES = 8 << 30
MAX_ARCHIVE_MEMBERS = 10_000

if TYPE_CHECKING:  # onnx is imported where a graph is read, so `import tina_edge.runtime` stays light
    import onnx

# onnx.TensorProto element types and data location (stable values of the ONNX spec)
_F, _U8, _I64, _F16, _F64 = 1, 2, 7, 10, 11
_EXTERNAL = 1
CONTRACTS: dict[str, tuple[dict[str, int], dict[str, int]]] = {
    "text_encoder": ({"input_ids": _I64, "attention_mask": _I64}, {"embeddings": _F}),
    "denoiser": ({"x_t": _F, "timestep": _I64, "class_emb": _F, "class_mask": _F}, {"x0": _F}),
    "template": ({"image": _U8}, {"logits": _F, "probabilities": _F}),
    "image_encoder": ({"image": _U8}, {"embeddings": _F}),  # optional: CLIP's image tower
}
_PARAM_TYPES = (_F, _F16, _F64)


@dataclass
class LoadedBundle:
    """A verified bundle: its directory, manifest and the parsed template graph (reused, not reread)."""

    root: Path
    manifest: Manifest
    template_proto: onnx.ModelProto
    source: Path
    _tmp: Any = field(default=None, repr=False)  # TemporaryDirectory of an extracted archive

    def path(self, name: str) -> Path:
        return self.root / name

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def default_bundle_path() -> Path:
    """The bundle shipped inside the package (tina_edge/bundles/default)."""
    p = Path(str(importlib.resources.files("tina_edge.bundles").joinpath("default")))
    if not (p / MANIFEST_NAME).is_file():
        raise BundleError(
            f"the embedded default bundle is missing ({p} has no {MANIFEST_NAME}); "
            "pass a bundle with --bundle PATH or create one with `tina-edge export`"
        )
    return p


# ---------------------------------------------------------------------------- archives


def _member_path(name: str, archive: Path) -> PurePosixPath | None:
    """The safe relative path of an archive member, None for the archive root itself."""
    if "\\" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":") or "\x00" in name:
        raise BundleError(f"archive {archive.name} has an unsafe member path {name!r} (absolute or not POSIX)")
    p = PurePosixPath(name)
    if ".." in p.parts:
        raise BundleError(f"archive {archive.name} has a member that escapes the bundle: {name!r}")
    parts = [x for x in p.parts if x not in (".", "")]
    return PurePosixPath(*parts) if parts else None


def _write_member(dest: Path, rel: PurePosixPath, src, size_left: list[int], archive: Path) -> None:
    out = dest.joinpath(*rel.parts)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        raise BundleError(f"archive {archive.name} holds {str(rel)!r} twice")
    with open(out, "xb") as f:
        while True:
            block = src.read(1 << 20)
            if not block:
                break
            size_left[0] -= len(block)
            if size_left[0] < 0:
                raise BundleError(f"archive {archive.name} unpacks to more than {MAX_ARCHIVE_BYTES >> 30} GiB; refusing it")
            f.write(block)


def _extract(archive: Path, dest: Path) -> None:
    left = [MAX_ARCHIVE_BYTES]
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            infos = z.infolist()
            if len(infos) > MAX_ARCHIVE_MEMBERS:
                raise BundleError(f"archive {archive.name} has too many members ({len(infos)})")
            for info in infos:
                rel = _member_path(info.filename, archive)
                mode = info.external_attr >> 16
                if stat.S_ISLNK(mode) or (mode and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))):
                    raise BundleError(f"archive {archive.name} has a link or special file {info.filename!r}; bundles hold plain files only")
                if rel is None or info.is_dir():
                    if rel is not None:
                        dest.joinpath(*rel.parts).mkdir(parents=True, exist_ok=True)
                    continue
                with z.open(info) as src:
                    _write_member(dest, rel, src, left, archive)
        return
    with tarfile.open(archive) as t:
        n = 0
        for m in t:
            n += 1
            if n > MAX_ARCHIVE_MEMBERS:
                raise BundleError(f"archive {archive.name} has too many members")
            rel = _member_path(m.name, archive)
            if not (m.isreg() or m.isdir()):
                raise BundleError(f"archive {archive.name} has a link or special file {m.name!r}; bundles hold plain files only")
            if m.isdir() or rel is None:
                if rel is not None:
                    dest.joinpath(*rel.parts).mkdir(parents=True, exist_ok=True)
                continue
            src = t.extractfile(m)
            if src is None:
                raise BundleError(f"archive {archive.name}: cannot read member {m.name!r}")
            with src:
                _write_member(dest, rel, src, left, archive)


def _open_archive(path: Path) -> tuple[Path, tempfile.TemporaryDirectory]:
    try:
        is_archive = zipfile.is_zipfile(path) or tarfile.is_tarfile(path)
    except OSError as e:
        raise BundleError(f"cannot read bundle archive {path}: {e.strerror or e}") from None
    if not is_archive:
        raise BundleError(f"{path} is a file but not a bundle archive (.zip or .tar); pass a bundle directory or archive")
    tmp = tempfile.TemporaryDirectory(prefix="tina-edge-bundle-")
    dest = Path(tmp.name)
    try:
        _extract(path, dest)
    except BundleError:
        tmp.cleanup()
        raise
    except (OSError, EOFError, zipfile.BadZipFile, tarfile.TarError, RuntimeError, ValueError) as e:
        tmp.cleanup()
        raise BundleError(f"bundle archive {path} is damaged and cannot be extracted: {e}") from None
    if not (dest / MANIFEST_NAME).exists():  # allow one top-level folder holding the bundle
        subs = [p for p in dest.iterdir()]
        if len(subs) == 1 and subs[0].is_dir() and (subs[0] / MANIFEST_NAME).exists():
            return subs[0], tmp
    return dest, tmp


# ---------------------------------------------------------------------------- checks


def _check_file(root: Path, name: str, entry: dict[str, Any]) -> None:
    """The file exists as a regular file inside root, no symlink on its way, size and sha256 match."""
    cur = root
    for part in PurePosixPath(name).parts:
        cur = cur / part
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            raise BundleError(f"bundle file {name} is missing from {root}") from None
        except (OSError, ValueError) as e:  # ValueError: embedded NUL
            raise BundleError(f"bundle file {name!r} cannot be read: {getattr(e, 'strerror', None) or e}") from None
        if stat.S_ISLNK(st.st_mode):
            raise BundleError(f"bundle file {name} is (or lies under) a symbolic link; bundles must hold plain files")
    if not stat.S_ISREG(st.st_mode):
        raise BundleError(f"bundle file {name} is not a regular file")
    real = Path(os.path.realpath(cur))
    if not real.is_relative_to(Path(os.path.realpath(root))):
        raise BundleError(f"bundle file {name} resolves outside the bundle directory")
    want_size = entry.get("bytes")
    if want_size is not None and want_size != st.st_size:
        raise BundleError(f"bundle file {name} has {st.st_size} bytes but the manifest says {want_size}; the bundle is damaged or was modified")
    h = hashlib.sha256()
    with open(cur, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest() != str(entry.get("sha256", "")).lower():
        raise BundleError(f"bundle file {name} does not match its sha256 in the manifest; the bundle is damaged or was modified")


def _dims(vi: onnx.ValueInfoProto) -> list[int | None]:
    return [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]


def _load_onnx(root: Path, name: str, files: dict[str, Any]) -> onnx.ModelProto:
    try:
        import onnx

        model = onnx.load(str(root / name), load_external_data=False)
    except Exception as e:  # protobuf DecodeError, RuntimeWarning-as-error, ...: all mean "not an ONNX file"
        raise BundleError(f"bundle file {name} is not a readable ONNX model ({type(e).__name__}: {str(e)[:200]})") from None
    if not model.graph.node and not model.graph.output:
        raise BundleError(f"bundle file {name} is not a readable ONNX model (empty or truncated graph)")
    parent = PurePosixPath(name).parent
    for init in model.graph.initializer:
        if init.data_location == _EXTERNAL:
            loc = {e.key: e.value for e in init.external_data}.get("location", "")
            rel = str(parent / loc) if str(parent) != "." else loc
            p = PurePosixPath(loc)
            if not loc or p.is_absolute() or ".." in p.parts or rel not in files:
                raise BundleError(
                    f"bundle file {name} keeps tensor {init.name!r} in external data {loc!r}, "
                    "which is not a file listed in the manifest"
                )
    return model


def _check_contract(model: onnx.ModelProto, name: str, role: str) -> tuple[dict, dict]:
    want_in, want_out = CONTRACTS[role]
    inits = {i.name for i in model.graph.initializer}
    ins = {i.name: i for i in model.graph.input if i.name not in inits}
    outs = {o.name: o for o in model.graph.output}
    for kind, want, have in (("input", want_in, ins), ("output", want_out, outs)):
        for n, et in want.items():
            if n not in have:
                raise BundleError(
                    f"bundle file {name} ({role}) has no {kind} {n!r}; it has {sorted(have)} "
                    f"but the contract needs {sorted(want)}"
                )
            got = have[n].type.tensor_type.elem_type
            if got != et:
                import onnx

                raise BundleError(
                    f"bundle file {name} ({role}) {kind} {n!r} is {onnx.TensorProto.DataType.Name(got)}, "
                    f"the contract needs {onnx.TensorProto.DataType.Name(et)}"
                )
    return ins, outs


def _expect_dim(name: str, what: str, dims: list[int | None], axis: int, want: int) -> None:
    if len(dims) > axis and dims[axis] is not None and dims[axis] != 0 and dims[axis] != want:
        raise BundleError(f"bundle file {name}: {what} has size {dims[axis]} on axis {axis} but the manifest says {want}")


def _check_image_encoder(root: Path, m: Manifest) -> None:
    """image uint8 [N, S, S, 3] at the manifest's image_size -> embeddings float32 [N, D]."""
    te = m.text_encoder
    if not (isinstance(te.image_size, int) and te.image_size >= 1):
        raise BundleError(f"manifest field text_encoder.image_size must be a positive integer when an image encoder is listed, got {te.image_size!r}")
    model = _load_onnx(root, te.image_encoder, m.files)
    ins, outs = _check_contract(model, te.image_encoder, "image_encoder")
    img = _dims(ins["image"])
    if len(img) != 4:
        raise BundleError(f"bundle file {te.image_encoder}: input image must be [N, S, S, 3], it has {len(img)} axes")
    _expect_dim(te.image_encoder, "input image", img, 1, te.image_size)
    _expect_dim(te.image_encoder, "input image", img, 2, te.image_size)
    _expect_dim(te.image_encoder, "input image", img, 3, 3)
    _expect_dim(te.image_encoder, "output embeddings", _dims(outs["embeddings"]), 1, te.embedding_dim)


def _check_ort_graph(root: Path, name: str, role: str) -> None:
    """An ORT-format graph (mobile bundles, `tina-edge convert --ort`): onnx cannot parse it, so
    onnxruntime loads it and the contract is checked on the session's inputs and outputs."""
    import onnxruntime as ort

    try:
        s = ort.InferenceSession(str(root / name), providers=["CPUExecutionProvider"])
    except Exception as e:
        raise BundleError(f"bundle file {name} is not a loadable ORT-format model: {str(e)[:200]}") from None
    want_in, want_out = CONTRACTS[role]
    have = {i.name for i in s.get_inputs()} | {o.name for o in s.get_outputs()}
    missing = sorted((set(want_in) | set(want_out)) - have)
    if missing:
        raise BundleError(f"bundle file {name} ({role}) lacks {missing}")


def _check_graphs(root: Path, m: Manifest) -> onnx.ModelProto:
    te, den, tm = m.text_encoder, m.denoiser, m.template
    if te.model.endswith(".ort"):
        _check_ort_graph(root, te.model, "text_encoder")
    else:
        model = _load_onnx(root, te.model, m.files)
        _ins, outs = _check_contract(model, te.model, "text_encoder")
        _expect_dim(te.model, "output embeddings", _dims(outs["embeddings"]), 1, te.embedding_dim)
        del model
    if te.image_encoder and not te.image_encoder.endswith(".ort"):
        _check_image_encoder(root, m)
    if den.model.endswith(".ort"):
        _check_ort_graph(root, den.model, "denoiser")
    else:
        model = _load_onnx(root, den.model, m.files)
        ins, outs = _check_contract(model, den.model, "denoiser")
        _expect_dim(den.model, "input x_t", _dims(ins["x_t"]), 1, den.param_count)
        _expect_dim(den.model, "output x0", _dims(outs["x0"]), 1, den.param_count)
        _expect_dim(den.model, "input class_emb", _dims(ins["class_emb"]), 1, den.k_max)
        _expect_dim(den.model, "input class_emb", _dims(ins["class_emb"]), 2, den.embedding_dim)
        _expect_dim(den.model, "input class_mask", _dims(ins["class_mask"]), 1, den.k_max)
        del model
    if den.embedding_dim != te.embedding_dim:
        raise BundleError(
            f"manifest: the denoiser expects {den.embedding_dim}-d class embeddings but the text encoder makes {te.embedding_dim}-d"
        )
    tpl = _load_onnx(root, tm.model, m.files)
    ins, _outs = _check_contract(tpl, tm.model, "template")
    img = _dims(ins["image"])
    if len(img) != 4:
        raise BundleError(f"bundle file {tm.model}: input image must be [N, H, W, 3], it has {len(img)} axes")
    _expect_dim(tm.model, "input image", img, 1, tm.input.height)
    _expect_dim(tm.model, "input image", img, 2, tm.input.width)
    _expect_dim(tm.model, "input image", img, 3, 3)
    inits = {i.name: i for i in tpl.graph.initializer}
    for spec in tm.layout:
        init = inits.get(spec.name)
        if init is None:
            raise BundleError(f"bundle file {tm.model} has no initializer {spec.name!r} named in template.layout")
        if list(init.dims) != list(spec.shape):
            raise BundleError(f"bundle file {tm.model}: initializer {spec.name!r} has shape {list(init.dims)}, template.layout says {spec.shape}")
        if init.data_type not in _PARAM_TYPES:
            raise BundleError(f"bundle file {tm.model}: initializer {spec.name!r} is not a floating-point tensor")
        if init.data_location == _EXTERNAL:
            raise BundleError(f"bundle file {tm.model}: generated tensor {spec.name!r} must be stored inside the template, not as external data")
    return tpl


def _type_ok(value: Any, ann: str) -> bool:
    """Check a value against a manifest dataclass annotation (they are simple: int, float, str, lists)."""
    ann = ann.replace(" ", "")
    if ann.endswith("|None"):
        return value is None or _type_ok(value, ann[: -len("|None")])
    if ann.startswith("list[") and ann.endswith("]"):
        return isinstance(value, list) and all(_type_ok(v, ann[5:-1]) for v in value)
    if ann == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if ann == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ann == "str":
        return isinstance(value, str)
    return True  # dicts and nested specs are checked elsewhere


def _check_types(m: Manifest) -> None:
    """Every scalar field has the type its dataclass declares (read_manifest does not check this)."""
    specs = [("text_encoder", m.text_encoder), ("diffusion", m.diffusion), ("denoiser", m.denoiser),
             ("template", m.template), ("template.input", m.template.input)]
    specs += [(f"template.layout[{i}]", t) for i, t in enumerate(m.template.layout)]
    for where, obj in specs:
        for f in dataclasses.fields(obj):
            if not _type_ok(getattr(obj, f.name), str(f.type)):
                raise BundleError(f"manifest field {where}.{f.name} must be {f.type}, got {getattr(obj, f.name)!r}")
    d = m.diffusion
    if not (0.0 < d.beta_start <= d.beta_end < 1.0) or d.num_train_timesteps < 1:
        raise BundleError("manifest diffusion schedule is invalid: need 0 < beta_start <= beta_end < 1 and at least 1 timestep")
    if d.default_sampler not in SAMPLERS or not (1 <= d.default_steps <= d.num_train_timesteps):
        raise BundleError(
            f"manifest diffusion defaults are invalid: sampler must be one of {SAMPLERS} and default_steps 1..{d.num_train_timesteps}"
        )
    te = m.text_encoder
    if te.embedding_dim < 1 or te.max_tokens < 2:
        raise BundleError("manifest text_encoder needs embedding_dim >= 1 and max_tokens >= 2")
    if not isinstance(m.training.get("vocabulary", []), list):
        raise BundleError("manifest field training.vocabulary must be a list of class names")


def verify_bundle_dir(root: Path) -> tuple[Manifest, onnx.ModelProto]:
    """All checks on an (extracted) bundle directory; returns the manifest and the parsed template."""
    if os.path.islink(root / MANIFEST_NAME):
        raise BundleError(f"{MANIFEST_NAME} of {root} is a symbolic link; bundles must hold plain files")
    try:
        m = read_manifest(root)
        _check_types(m)
        for name, entry in m.files.items():
            _check_file(root, name, entry)
        return m, _check_graphs(root, m)
    except BundleError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, IndexError, OverflowError) as e:
        # validation assumes well-typed fields; a wrongly typed one must still end as a BundleError
        raise BundleError(f"manifest.json has a malformed field ({type(e).__name__}: {str(e)[:160]})") from None


def open_bundle(path: str | os.PathLike | None = None) -> LoadedBundle:
    """Verify a bundle directory or archive (None: the embedded default) and return it; no sessions."""
    src = default_bundle_path() if path is None else Path(os.fsdecode(path)).expanduser()
    if not src.exists():
        raise BundleError(f"bundle {src} does not exist; pass a bundle directory or archive")
    tmp = None
    if src.is_dir():
        root = Path(os.path.realpath(src))
    elif not src.is_file():  # a FIFO or device would block or stream forever
        raise BundleError(f"bundle {src} is neither a directory nor a regular archive file")
    else:
        root, tmp = _open_archive(src)
    try:
        manifest, tpl = verify_bundle_dir(root)
    except BaseException:
        if tmp is not None:
            tmp.cleanup()
        raise
    return LoadedBundle(root=root, manifest=manifest, template_proto=tpl, source=src, _tmp=tmp)
