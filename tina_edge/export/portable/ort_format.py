"""ORT-format (mobile) bundles: every onnxruntime graph converted with onnxruntime's own tool.

`convert_onnx_models_to_ort` (onnxruntime.tools) writes the `.ort` files and
`required_operators.config`, the operator list a minimal onnxruntime build (iOS/Android) is
compiled from. The converted bundle names the `.ort` files in its manifest; `template.onnx` stays
ONNX because writing a standalone model.onnx edits its protobuf. Torch-free.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

from tina_edge.runtime.atomic import atomic_write_text
from ...runtime.errors import ExportError
from ...runtime.manifest import Manifest, read_manifest, write_manifest

REQUIRED_OPERATORS = "required_operators.config"
# "extended" is what the Python runtime's sessions use, so the .ort graphs compute what the
# .onnx ones compute there (tested: identical personalize output); it also keeps the graphs
# free of x86-only layout transforms.
OPTIMIZATION = "extended"


def _graphs(m: Manifest) -> dict[str, str]:
    """{manifest field: .onnx file} of every graph an onnxruntime session loads."""
    g = {"text_encoder.model": m.text_encoder.model, "denoiser.model": m.denoiser.model}
    if m.text_encoder.image_encoder:
        g["text_encoder.image_encoder"] = m.text_encoder.image_encoder
    g.update({what: name for what, name in m.portable.files() if name.endswith(".onnx")})
    return g


def convert_bundle_to_ort(bundle_dir: str | os.PathLike) -> Manifest:
    """Convert a bundle directory in place: .onnx session graphs -> .ort, plus required_operators.config.

    Stages: convert the graphs (onnxruntime's tool, in a temp dir) -> point the manifest at the .ort files."""
    root = Path(bundle_dir)
    m = read_manifest(root)
    graphs = {k: v for k, v in _graphs(m).items() if v.endswith(".onnx")}
    if not graphs:
        raise ExportError(f"bundle {root} has no .onnx session graphs left to convert")
    renamed = _convert_graphs(root, graphs)  # the template's padding is static already (add_portable_files)
    return _rewrite_manifest(root, m, renamed)


def _run_converter(src: Path, out: Path) -> None:
    """onnxruntime's converter at OPTIMIZATION (an environment variable it reads), silenced."""
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    old = os.environ.get("ORT_CONVERT_ONNX_MODELS_TO_ORT_OPTIMIZATION_LEVEL")
    os.environ["ORT_CONVERT_ONNX_MODELS_TO_ORT_OPTIMIZATION_LEVEL"] = OPTIMIZATION
    try:
        with redirect_stdout(StringIO()):  # the tool prints every step
            convert_onnx_models_to_ort(src, output_dir=out, optimization_styles=[OptimizationStyle.Fixed])
    finally:
        if old is None:
            os.environ.pop("ORT_CONVERT_ONNX_MODELS_TO_ORT_OPTIMIZATION_LEVEL", None)
        else:
            os.environ["ORT_CONVERT_ONNX_MODELS_TO_ORT_OPTIMIZATION_LEVEL"] = old


def _convert_graphs(root: Path, graphs: dict[str, str]) -> dict[str, str]:
    """Write each graph's .ort beside it and required_operators.config; returns {onnx name: ort name}."""
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        src, out = Path(tmp) / "src", Path(tmp) / "out"
        src.mkdir()
        for name in graphs.values():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            os.link(root / name, src / name) if hasattr(os, "link") else shutil.copy2(root / name, src / name)
        _run_converter(src, out)
        suffix = f".{OPTIMIZATION}" if OPTIMIZATION != "all" else ""
        renamed: dict[str, str] = {}
        for name in graphs.values():
            produced = out / Path(name).with_suffix(f"{suffix}.ort")
            target = str(Path(name).with_suffix(".ort"))
            if not produced.is_file():
                raise ExportError(f"onnxruntime did not convert {name} to ORT format")
            os.replace(produced, root / target)
            renamed[name] = target
        cfg = next(out.glob("required_operators*.config"), None)
        if cfg is None:
            raise ExportError("onnxruntime wrote no required_operators.config")
        lines = cfg.read_text(encoding="utf-8").splitlines()
        lines = [  # the tool names its temp paths; name the bundle's files instead
            ("# - " + Path(line[4:]).name.replace(suffix + ".ort", ".ort")) if line.startswith("# - ") else line
            for line in lines]
        atomic_write_text(root / REQUIRED_OPERATORS, "\n".join(lines) + "\n")
    return renamed


def _rewrite_manifest(root: Path, m: Manifest, renamed: dict[str, str]) -> Manifest:
    """The manifest names the .ort files (the template stays ONNX); the converted .onnx files go."""
    te = m.text_encoder
    te.model = renamed.get(te.model, te.model)
    if te.image_encoder:
        te.image_encoder = renamed.get(te.image_encoder, te.image_encoder)
    m.denoiser.model = renamed.get(m.denoiser.model, m.denoiser.model)
    for sec in (m.portable.generate, m.portable.template_inputs, m.portable.prior):
        if sec:
            sec["model"] = renamed.get(sec["model"], sec["model"])
    m.portable.ort = {"optimization": OPTIMIZATION, "required_operators": REQUIRED_OPERATORS,
                      "converted": sorted(renamed.values())}
    keep = {m.template.model}  # the template stays ONNX (writing model.onnx edits it) even when it is also
    # the portable template_inputs graph (template.form "inputs"): the .ort copy serves minimal builds
    files = {n: e for n, e in m.files.items() if n not in renamed or n in keep}
    for n in list(renamed.values()) + [REQUIRED_OPERATORS]:
        files[n] = {"sha256": "", "bytes": 0}
    m.files = files
    for name in renamed:
        if name not in keep:
            (root / name).unlink()
    return write_manifest(root, m)
