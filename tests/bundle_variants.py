"""Variants of the shipped default bundle that tests need and the repository no longer ships.

The default bundle is converted (prior split into prior.onnx, correction zeroed: `portable.prior.only`,
float16 storage). Tests of the conversions need what came before: a bundle whose denoiser still holds
its prior (`unsplit`), one whose correction is not zero (`with_correction`), and one whose runtimes run
the denoiser steps (`with_steps`). Each is built from the shipped bytes by a small, exact graph edit.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from tina_edge.runtime.bundle import default_bundle_path
from tina_edge.runtime.contracts import PRIOR
from tina_edge.runtime.manifest import read_manifest, write_manifest


def _drop_only(dst: Path) -> None:
    m = read_manifest(dst)
    m.portable.prior = {k: v for k, v in m.portable.prior.items() if k != "only"}
    write_manifest(dst, m)


def with_steps(dst: Path, src: Path | None = None) -> Path:
    """The bundle with `portable.prior.only` dropped: the runtimes run every denoiser step (same bits)."""
    shutil.copytree(src or default_bundle_path(), dst)
    _drop_only(dst)
    return dst


def with_correction(dst: Path, src: Path | None = None, seed: int = 0) -> Path:
    """The bundle with seeded non-zero numbers where the denoiser's correction weights are stored (same
    names, dtypes, shapes) and `only` dropped; generate.onnx still holds the zeros until converted."""
    from tina_edge.export.portable.prior_only import correction_initializers

    shutil.copytree(src or default_bundle_path(), dst)
    den = onnx.load(str(dst / "denoiser.onnx"))
    rng = np.random.default_rng(seed)
    names = set(correction_initializers(den.graph))
    for t in den.graph.initializer:
        if t.name in names:
            a = numpy_helper.to_array(t)
            t.CopyFrom(numpy_helper.from_array((0.05 * rng.standard_normal(a.shape)).astype(a.dtype), t.name))
    onnx.save(den, str(dst / "denoiser.onnx"))
    _drop_only(dst)
    return dst


def unsplit(dst: Path, src: Path | None = None) -> Path:
    """The bundle as it was before the prior split: prior.onnx's nodes and weights back inside
    denoiser.onnx (read from class_emb, writing the rows the denoiser read as its `prior` input), no
    prior graph in the manifest, generate.onnx built again around that denoiser (export's own builder)."""
    from tina_edge.export.portable.generate_graph import build_generate
    from tina_edge.runtime.contracts import input_names

    shutil.copytree(src or default_bundle_path(), dst)
    m = read_manifest(dst)
    prior = onnx.load(str(dst / m.portable.prior_model))
    den = onnx.load(str(dst / "denoiser.onnx"))
    assert [o.name for o in prior.graph.output] == [PRIOR]
    kept = [i for i in den.graph.input if i.name != PRIOR]
    del den.graph.input[:]
    den.graph.input.extend(kept)
    nodes = list(prior.graph.node) + list(den.graph.node)
    del den.graph.node[:]
    den.graph.node.extend(nodes)
    den.graph.initializer.extend(prior.graph.initializer)
    onnx.checker.check_model(den)
    onnx.save(den, str(dst / "denoiser.onnx"))
    (dst / m.portable.prior_model).unlink()
    m.files.pop(m.portable.prior_model)
    m.portable.prior = None
    gen, _ = build_generate(den, m, len(m.portable.generate["timesteps"]))
    onnx.save(gen, str(dst / m.portable.generate["model"]))
    m.portable.generate["inputs"] = input_names("generate")
    write_manifest(dst, m)
    return dst
