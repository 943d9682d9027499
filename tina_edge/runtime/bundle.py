"""Opening a bundle safely: everything is verified before any onnxruntime session exists.

`open_bundle` accepts a directory or one archive (.zip, .tar, .tar.gz/.tgz, .tar.bz2, .tar.xz).
Archives are extracted (`runtime/archive.py`) into a private temp directory, refusing absolute paths, '..' components,
links and special files; their manifest and id (and a pinned id) are checked before any member is
extracted. Then, in order: the manifest is parsed and validated (JSON depth and size bounded); its
recorded id must be its content's and the pinned one; every file it lists must be a regular file
(no symlink anywhere on its path) that stays inside the bundle, with the listed size and sha256
(`runtime/verified_files.py`; a file nothing uses is hashed, never held); the ONNX graphs (and the
optional CLIP image encoder) must parse (without external data, with no control flow that could run
unbounded) and expose the contract inputs/outputs; the template must hold every generated tensor
with its K_max shape.
Each failure is a BundleError naming the file and the problem.
"""

from __future__ import annotations

import importlib.resources
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from .contracts import CLASS_EMB, CLASS_MASK, CONTRACTS, DOUBLE, EMBEDDINGS, FLOAT, FLOAT16, IMAGE, X0, X_T
from .errors import BundleError
from .manifest import MANIFEST_NAME, Manifest, bundle_files, check_bundle_id, parse_manifest
from .onnx_checks import external_tensors, inline_external, ort_skeleton, parse_model, unbounded_control_flow
from .sessions import make_session
from .verified_files import VerifiedFiles, read_manifest_bytes


if TYPE_CHECKING:  # onnx is imported where a graph is read, so `import tina_edge.runtime` stays light
    import onnx

# graph contracts: runtime/contracts.py (shared with the exporter)
_F, _F16, _F64 = FLOAT, FLOAT16, DOUBLE
_PARAM_TYPES = (_F, _F16, _F64)
_ITEMSIZE = {_F: 4, _F16: 2, _F64: 8}


@dataclass
class LoadedBundle:
    """A verified bundle: its manifest, the parsed template and the verified bytes of every file.

    Sessions and protos are built from `data(name)`, the very bytes that were hashed: a file
    swapped on disk after the check is never used. `path` is kept for display only.
    """

    root: Path
    manifest: Manifest
    template_proto: onnx.ModelProto
    source: Path
    blobs: dict[str, bytes] = field(default_factory=dict, repr=False)
    _tmp: Any = field(default=None, repr=False)  # TemporaryDirectory of an extracted archive

    @property
    def bundle_id(self) -> str:
        """The id recomputed from the manifest's content (which holds every file's sha256)."""
        return self.manifest.bundle_id

    def path(self, name: str) -> Path:
        return self.root / name

    def data(self, name: str) -> bytes:
        """The verified bytes of a listed file (ONNX graphs with any listed external data inlined)."""
        try:
            return self.blobs[name]
        except KeyError:
            raise BundleError(f"bundle file {name!r} is not listed in the manifest of {self.source}") from None

    def release(self, *names: str) -> None:
        """Drop the kept bytes of files whose sessions exist (memory); `data(name)` then refuses them."""
        for name in names:
            self.blobs.pop(name, None)

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


# ---------------------------------------------------------------------------- checks


def _dims(vi: onnx.ValueInfoProto) -> list[int | None]:
    return [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]


def _load_onnx(name: str, blobs: dict[str, bytes], files: dict[str, Any]) -> onnx.ModelProto:
    """Parse a graph from its verified bytes; external data is refused unless it names a listed,
    hashed file, whose bytes are then inlined (onnxruntime never opens a path of the graph's choosing)."""
    try:
        model = parse_model(blobs[name])
    except Exception as e:  # protobuf DecodeError, RuntimeWarning-as-error, ...: all mean "not an ONNX file"
        raise BundleError(f"bundle file {name} is not a readable ONNX model ({type(e).__name__}: {str(e)[:200]})") from None
    if not model.graph.node and not model.graph.output:
        raise BundleError(f"bundle file {name} is not a readable ONNX model (empty or truncated graph)")
    why = unbounded_control_flow(model)
    if why:
        raise BundleError(f"bundle file {name} could run unbounded: {why}; bundle graphs hold no such control flow")
    parent = PurePosixPath(name).parent
    inlined = False
    for where, t, loc in list(external_tensors(model)):
        rel = str(parent / loc) if str(parent) != "." else loc
        p = PurePosixPath(loc)
        if not loc or p.is_absolute() or ".." in p.parts or rel not in files or rel == name:
            raise BundleError(
                f"bundle file {name} keeps tensor {t.name!r:.80} ({where}) in external data {loc!r:.120}, "
                "which is not a file listed in the manifest"
            )
        try:
            inline_external(t, blobs[rel])
        except ValueError as e:
            raise BundleError(f"bundle file {name}: tensor {t.name!r:.80} cannot be read from {rel}: {e}") from None
        inlined = True
    if inlined:  # sessions are built from these bytes, which now hold every tensor
        blobs[name] = model.SerializeToString()
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


def _check_image_encoder(blobs: dict[str, bytes], m: Manifest) -> None:
    """image uint8 [N, S, S, 3] at the manifest's image_size -> embeddings float32 [N, D]."""
    te = m.text_encoder
    if not (isinstance(te.image_size, int) and te.image_size >= 1):
        raise BundleError(f"manifest field text_encoder.image_size must be a positive integer when an image encoder is listed, got {te.image_size!r}")
    model = _load_onnx(te.image_encoder, blobs, m.files)
    ins, outs = _check_contract(model, te.image_encoder, "image_encoder")
    img = _dims(ins[IMAGE])
    if len(img) != 4:
        raise BundleError(f"bundle file {te.image_encoder}: input image must be [N, S, S, 3], it has {len(img)} axes")
    _expect_dim(te.image_encoder, "input image", img, 1, te.image_size)
    _expect_dim(te.image_encoder, "input image", img, 2, te.image_size)
    _expect_dim(te.image_encoder, "input image", img, 3, 3)
    _expect_dim(te.image_encoder, "output embeddings", _dims(outs[EMBEDDINGS]), 1, te.embedding_dim)


def _check_ort_control_flow(blobs: dict[str, bytes], name: str) -> None:
    """An ORT-format graph's control flow, read from the flatbuffer (onnx cannot parse it)."""
    try:
        why = unbounded_control_flow(ort_skeleton(blobs[name]))
    except ValueError as e:
        raise BundleError(f"bundle file {name} is not a loadable ORT-format model: {e}") from None
    if why:
        raise BundleError(f"bundle file {name} could run unbounded: {why}; bundle graphs hold no such control flow")


def _check_ort_graph(blobs: dict[str, bytes], name: str, role: str) -> None:
    """An ORT-format graph (mobile bundles, `tina-edge convert --ort`): onnx cannot parse it, so
    onnxruntime loads it and the contract is checked on the session's inputs and outputs. Its control
    flow is checked first, on the flatbuffer itself, like an ONNX graph's."""
    _check_ort_control_flow(blobs, name)
    s = make_session(blobs[name], None, (), level="all", what=name,
                     error="bundle file {what} is not a loadable ORT-format model: {detail}")
    want_in, want_out = CONTRACTS[role]
    have = {i.name for i in s.get_inputs()} | {o.name for o in s.get_outputs()}
    missing = sorted((set(want_in) | set(want_out)) - have)
    if missing:
        raise BundleError(f"bundle file {name} ({role}) lacks {missing}")


def _check_prior(blobs: dict[str, bytes], m: Manifest, ort_graphs: list[tuple[str, str]]) -> None:
    """The prior graph a split bundle names (portable.prior): class_emb [B, K, D] -> prior [B, K, R]."""
    name = m.portable.prior_model
    if not name:
        return
    if name.endswith(".ort"):
        ort_graphs.append((name, "prior"))
        return
    ins, _outs = _check_contract(_load_onnx(name, blobs, m.files), name, "prior")
    _expect_dim(name, "input class_emb", _dims(ins[CLASS_EMB]), 1, m.denoiser.k_max)
    _expect_dim(name, "input class_emb", _dims(ins[CLASS_EMB]), 2, m.denoiser.embedding_dim)


def _check_graphs(blobs: dict[str, bytes], m: Manifest, ort_graphs: list[tuple[str, str]]) -> onnx.ModelProto:
    """Parse and check every ONNX graph; append (file, role) of each .ort graph to `ort_graphs`, whose
    session-based check the caller runs once the bundle's identity is verified too."""
    te, den, tm = m.text_encoder, m.denoiser, m.template
    if te.model.endswith(".ort"):
        ort_graphs.append((te.model, "text_encoder"))
    else:
        model = _load_onnx(te.model, blobs, m.files)
        _ins, outs = _check_contract(model, te.model, "text_encoder")
        _expect_dim(te.model, "output embeddings", _dims(outs[EMBEDDINGS]), 1, te.embedding_dim)
        del model
    if te.image_encoder and not te.image_encoder.endswith(".ort"):
        _check_image_encoder(blobs, m)
    den_role = "denoiser_on_prior" if m.portable.prior_model else "denoiser"  # its prior cut out, or inside
    if den.model.endswith(".ort"):
        ort_graphs.append((den.model, den_role))
    else:
        model = _load_onnx(den.model, blobs, m.files)
        ins, outs = _check_contract(model, den.model, den_role)
        _expect_dim(den.model, "input x_t", _dims(ins[X_T]), 1, den.param_count)
        _expect_dim(den.model, "output x0", _dims(outs[X0]), 1, den.param_count)
        _expect_dim(den.model, "input class_emb", _dims(ins[CLASS_EMB]), 1, den.k_max)
        _expect_dim(den.model, "input class_emb", _dims(ins[CLASS_EMB]), 2, den.embedding_dim)
        _expect_dim(den.model, "input class_mask", _dims(ins[CLASS_MASK]), 1, den.k_max)
        del model
    if den.embedding_dim != te.embedding_dim:
        raise BundleError(
            f"manifest: the denoiser expects {den.embedding_dim}-d class embeddings but the text encoder makes {te.embedding_dim}-d"
        )
    _check_prior(blobs, m, ort_graphs)
    roles = {te.model, den.model, tm.model, te.image_encoder, m.portable.prior_model}
    for other in sorted(n for n in m.files if n.endswith(".onnx") and n not in roles):
        _load_onnx(other, blobs, m.files)  # any further graph (generate.onnx, ...): parses, no unlisted external data
    for other in sorted(n for n in m.files if n.endswith(".ort") and n not in roles):
        _check_ort_control_flow(blobs, other)  # generate.ort: its Loop, like generate.onnx's
    tpl = _load_onnx(tm.model, blobs, m.files)
    ins, _outs = _check_contract(tpl, tm.model, "template")
    img = _dims(ins[IMAGE])
    if len(img) != 4:
        raise BundleError(f"bundle file {tm.model}: input image must be [N, H, W, 3], it has {len(img)} axes")
    _expect_dim(tm.model, "input image", img, 1, tm.input.height)
    _expect_dim(tm.model, "input image", img, 2, tm.input.width)
    _expect_dim(tm.model, "input image", img, 3, 3)
    if tm.form == "inputs":  # one template for every runtime: check its weight inputs, then make the filled form
        tpl = _template_from_inputs(tpl, m)
    inits = {i.name: i for i in tpl.graph.initializer}
    for spec in tm.layout:
        init = inits.get(spec.name)
        if init is None:
            raise BundleError(f"bundle file {tm.model} has no initializer {spec.name!r} named in template.layout")
        if list(init.dims) != list(spec.shape):
            raise BundleError(f"bundle file {tm.model}: initializer {spec.name!r} has shape {list(init.dims)}, template.layout says {spec.shape}")
        if init.data_type not in _PARAM_TYPES:
            raise BundleError(f"bundle file {tm.model}: initializer {spec.name!r} is not a floating-point tensor")
        if _stored_elements(init) != spec.numel:
            raise BundleError(f"bundle file {tm.model}: initializer {spec.name!r} stores {_stored_elements(init)} values "
                              f"but its shape {spec.shape} needs {spec.numel}")
    return tpl


def _template_from_inputs(tpl: onnx.ModelProto, m: Manifest) -> onnx.ModelProto:
    """template.form "inputs": every layout tensor is a float graph input of its K_max shape (the class
    axis may be symbolic); return the initializer form the runtime fills (runtime/template.py)."""
    from .template import inputs_to_initializers

    tm = m.template
    inits = {i.name for i in tpl.graph.initializer}
    ins = {i.name: i for i in tpl.graph.input if i.name not in inits}
    for spec in tm.layout:
        vi = ins.get(spec.name)
        if vi is None:
            raise BundleError(f"bundle file {tm.model} has no graph input {spec.name!r} named in template.layout "
                              "(its manifest says template.form is 'inputs')")
        if vi.type.tensor_type.elem_type not in _PARAM_TYPES:
            raise BundleError(f"bundle file {tm.model}: input {spec.name!r} is not a floating-point tensor")
        dims = _dims(vi)
        if len(dims) != len(spec.shape):
            raise BundleError(f"bundle file {tm.model}: input {spec.name!r} has {len(dims)} axes, template.layout says {spec.shape}")
        for axis, want in enumerate(spec.shape):
            if axis != spec.class_axis or dims[axis] is not None:
                _expect_dim(tm.model, f"input {spec.name!r}", dims, axis, want)
    return inputs_to_initializers(tpl, tm.layout)


def _stored_elements(init: onnx.TensorProto) -> int:
    """How many values the file really holds for a tensor: the manifest's sizes must be backed by bytes."""
    if init.raw_data:
        return len(init.raw_data) // _ITEMSIZE.get(init.data_type, 4)
    return len(init.float_data) + len(init.double_data) + len(init.int32_data)


def _check_vocabulary_embeddings(blobs: dict[str, bytes], m: Manifest) -> None:
    """The .npy header says float [len(vocabulary), embedding_dim], no pickles (the data is read on first use)."""
    import io

    import numpy as np

    name, want = m.text_encoder.vocabulary_embeddings, (len(m.vocabulary), m.text_encoder.embedding_dim)
    f = io.BytesIO(blobs[name])
    try:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _fortran, dtype = read(f, max_header_size=10_000)
    except (ValueError, OSError, SyntaxError) as e:
        raise BundleError(f"bundle file {name} is not a numpy array: {str(e)[:160]}") from None
    if shape != want or dtype.kind != "f" or len(blobs[name]) < f.tell() + dtype.itemsize * want[0] * want[1]:
        raise BundleError(f"bundle file {name} holds {dtype}{list(shape)}; the manifest promises float {list(want)} "
                          "(training.vocabulary x text_encoder.embedding_dim)")


def verify_bundle_dir(root: Path, expected_id: str | None = None,
                      where: str | os.PathLike | None = None) -> tuple[Manifest, onnx.ModelProto, dict[str, bytes]]:
    """All checks on an (extracted) bundle directory: the manifest, the parsed template, verified bytes.

    The manifest's id (and the pinned one) is checked before any listed file is read."""
    m, ident = parse_manifest(read_manifest_bytes(root), root / MANIFEST_NAME)
    check_bundle_id(m, ident, where or root, expected_id)
    blobs = VerifiedFiles(root, m.files)
    for _what, name in bundle_files(m):
        blobs[name]  # noqa: B018  (read and verified now: size, sha256)
    ort_graphs: list[tuple[str, str]] = []
    tpl = _check_graphs(blobs, m, ort_graphs)
    if m.text_encoder.vocabulary_embeddings:
        _check_vocabulary_embeddings(blobs, m)
    verified = blobs.hash_unused()
    # .ort graphs are checked through an onnxruntime session (onnx cannot parse them): only now,
    # when every file's size and sha256 AND the manifest's identity are verified (issue 9's contract)
    for name, role in ort_graphs:
        _check_ort_graph(verified, name, role)
    return m, tpl, verified


def open_bundle(path: str | os.PathLike | None = None, *, expected_id: str | None = None) -> LoadedBundle:
    """Verify a bundle directory or archive (None: the embedded default) and return it; no sessions.

    `expected_id` pins the bundle an app shipped: any other content (even a consistent,
    re-hashed manifest) is refused.
    """
    if expected_id is not None and not (isinstance(expected_id, str) and expected_id.strip()):
        raise BundleError(f"expected bundle id must be a non-empty string, got {expected_id!r:.40}")
    src = default_bundle_path() if path is None else Path(os.fsdecode(path)).expanduser()
    if not src.exists():
        raise BundleError(f"bundle {src} does not exist; pass a bundle directory or archive")
    tmp = None
    if src.is_dir():
        root = Path(os.path.realpath(src))
    elif not src.is_file():  # a FIFO or device would block or stream forever
        raise BundleError(f"bundle {src} is neither a directory nor a regular archive file")
    else:
        from .archive import open_archive  # archives only: directory bundles never import tarfile, zipfile, lzma

        root, tmp = open_archive(src, expected_id)  # the id and the pin are checked before anything is extracted
    try:
        manifest, tpl, blobs = verify_bundle_dir(root, expected_id, src)
    except BaseException:
        if tmp is not None:
            tmp.cleanup()
        raise
    return LoadedBundle(root=root, manifest=manifest, template_proto=tpl, source=src, blobs=blobs, _tmp=tmp)
