"""`tina-edge convert --prior-only`: the generator as the text prior alone, by zeroing the denoiser's
correction output in the graph (no torch).

Why: on the same tasks the prior alone ties the generator on seen classes and beats it by 0.4 to 2.2
points on held-out names (BENCHMARKS §15, benchmarks/notes/many-classes-bench.md): the learned
correction adds nothing, so a bundle can ship without it. This is the ONNX twin of training's
`prior_only_checkpoint` (train/diffusion/checkpoint.py, RowTokenDenoiser.CORRECTION_OUTPUT): the
initializers the correction head reads (torch.onnx scope "/row_out/": its MatMul weight and bias,
through any storage Cast) become zeros, so x0 = prior at every step. It runs after the prior split
(prior_split.py), on denoiser.onnx, before generate.onnx is built from it, and records
`portable.prior.only = true`; the runtimes then skip the steps (runtime/prior_only.py). Zeroing zeros
changes nothing, so converting twice gives the same bundle.
"""

from __future__ import annotations

from typing import Any

from ...runtime.contracts import CORRECTION_SCOPE
from ...runtime.errors import BundleError

_STORAGE_OPS = ("Cast", "Identity")  # how a weight stored in another dtype reaches the MatMul (fp16 + Cast)


def correction_initializers(graph) -> list[str]:
    """Names of the initializers the correction output reads (directly or through storage Casts)."""
    inits = {t.name for t in graph.initializer}
    made = {o: n for n in graph.node for o in n.output if o}
    found: set[str] = set()
    todo = [v for n in graph.node if n.name.startswith(CORRECTION_SCOPE) for v in n.input if v]
    while todo:
        v = todo.pop()
        if v in inits:
            found.add(v)
        elif v in made and made[v].op_type in _STORAGE_OPS and not made[v].name.startswith(CORRECTION_SCOPE):
            todo.extend(i for i in made[v].input if i)
    return sorted(found)


def is_prior_only(model) -> bool:
    """True when the graph has a correction output and every number it reads is zero."""
    import numpy as np
    from onnx import numpy_helper

    names = set(correction_initializers(model.graph))
    return bool(names) and all(not np.any(numpy_helper.to_array(t)) for t in model.graph.initializer if t.name in names)


def zero_correction(model, what: str) -> list[str]:
    """Zero the correction output's initializers in place (same names, dtypes and shapes); the names.
    A graph without one (no "/row_out/" scope: not a row-token denoiser) is refused."""
    import numpy as np
    from onnx import numpy_helper

    names = set(correction_initializers(model.graph))
    if not names:
        raise BundleError(f"{what} has no correction output ({CORRECTION_SCOPE.strip('/')}) to zero; --prior-only needs "
                          "a row-token denoiser with a text prior (convert without --prior-only)")
    for t in model.graph.initializer:
        if t.name in names:
            t.CopyFrom(numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(t)), t.name))
    return sorted(names)


def apply_prior_only(den: Any, prior: dict[str, Any] | None, manifest, what: str, wanted: bool) -> tuple[Any, bool]:
    """(denoiser, whether the generator is the prior alone): with `wanted`, the correction zeroed
    (refused without a prior graph or with a layout whose rows are not the prior's rows); without,
    True only when it was zeroed before (a converted bundle, or a `train prior-only` checkpoint)."""
    from ...runtime.prior_only import row_segments

    if not wanted:
        return den, prior is not None and is_prior_only(den)
    if prior is None:
        raise BundleError(f"{what} has no text prior split into its own graph (a denoiser without a prior, or a "
                          "float16 one); --prior-only needs one (convert without --prior-only)")
    K, layout = manifest.denoiser.k_max, manifest.template.layout
    row_dim = _prior_row_dim(den) or sum(t.numel // K for t in layout)  # unrecorded R: the layout's own
    row_segments(layout, K, row_dim)  # the runtimes scatter the rows by the layout: refused before any change
    zero_correction(den, what)
    return den, True


def _prior_row_dim(den) -> int | None:
    """R of the denoiser's `prior` input [B, K, R] when the graph records it."""
    from ...runtime.contracts import PRIOR

    for i in den.graph.input:
        if i.name == PRIOR:
            dims = i.type.tensor_type.shape.dim
            if len(dims) == 3 and dims[2].HasField("dim_value"):
                return int(dims[2].dim_value)
    return None
