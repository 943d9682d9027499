"""The one place that creates onnxruntime sessions: options, threads, optimisation level, bytes.

Every session of the package (bundle graphs, text and image encoders, personalized classifiers,
export parity checks) is made here, so a fix to session options (a crash-avoiding optimizer switch,
quieter logs, thread caps) or to the memory a session holds (the model bytes onnxruntime's wrapper
kept, heap pages freed by its creation) reaches all of them at once.
"""

from __future__ import annotations

import ctypes
import os

from .errors import BundleError

# onnxruntime 1.32 segfaults while creating a session for an fp16 CLIP text graph unless one of
# these is off (found by bisection); NCHWc only re-lays out convolutions, which encoders barely use.
SAFE_DISABLED_OPTIMIZERS = ("NchwcTransformer",)

# EXTENDED (not ALL): measured on the int8 MiniLM, session start 244 -> 130 ms and no slower runs;
# ALL adds CPU layout transforms (NCHWc) that the bundle's graphs do not benefit from. Personalized
# classifiers keep onnxruntime's default (ALL), so they run exactly as a plain onnxruntime user runs them.
LEVELS = ("basic", "extended", "all")


def make_session(model: bytes | str | os.PathLike, threads: int | None = None,
                 disabled_optimizers: tuple[str, ...] = SAFE_DISABLED_OPTIMIZERS, *, what: str = "model",
                 level: str = "extended", error: str | None = "cannot load ONNX model {what}: {detail}; re-export the bundle"):
    """One CPU InferenceSession from verified bytes (or a path, for tools); `threads` caps intra-op threads.

    Bundles pass bytes: the session runs exactly what was hashed, never a file re-opened by path.
    `error` is the BundleError message ({what}, {detail}) a model onnxruntime refuses raises; None lets
    onnxruntime's own exception through (for callers that map it to their own error type).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # errors only: onnxruntime's warnings would add raw, coloured lines to stderr
    opts.graph_optimization_level = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                                     "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                     "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[level]
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    is_bytes = isinstance(model, (bytes, bytearray, memoryview))
    src = bytes(model) if is_bytes else str(model)
    if not is_bytes:
        what = str(model)
    return_freed_memory()  # what parsing the bundle freed, so the session's own peak starts lower
    try:
        sess = ort.InferenceSession(src, sess_options=opts, providers=["CPUExecutionProvider"],
                                    disabled_optimizers=list(disabled_optimizers))
    except Exception as e:  # onnxruntime raises its own Fail/InvalidProtobuf types
        if error is None:
            raise
        raise BundleError(error.format(what=what, detail=str(e)[:300])) from None
    del src, model
    _drop_model_bytes(sess)
    return_freed_memory()
    return sess


def _drop_model_bytes(sess) -> None:
    """Let go of the serialized model onnxruntime's Python wrapper keeps for the session's lifetime.

    `InferenceSession` stores the bytes it was given (its own code says "TODO: This is bad as we're
    holding the memory indefinitely") only to re-create the session if `set_providers` is called;
    the C++ session never reads them again. Holding them cost the text encoder's 33 MB for as long
    as a Personalizer lived, although the bundle had released its copy.
    """
    if isinstance(getattr(sess, "_model_bytes", None), (bytes, bytearray)):
        sess._model_bytes = None


_malloc_trim = None  # glibc's malloc_trim, looked up once; False where the C library has none


def return_freed_memory() -> None:
    """Hand the heap pages freed so far back to the OS (glibc `malloc_trim`; a no-op elsewhere).

    Creating a session parses and constant-folds tens of MB and frees most of it at once; glibc
    keeps such memory for reuse, scattered between live blocks, so the process's resident size
    stays at its peak and the next large step stacks on top. Trimming around session creation cost
    0.02-2 ms here and cut the worst peak of from_bundle + one personalize from 237 to 226 MiB
    (8 fresh processes each; BENCHMARKS.md §10.4).
    """
    global _malloc_trim
    if _malloc_trim is None:
        try:
            _malloc_trim = ctypes.CDLL(None).malloc_trim
            _malloc_trim.argtypes, _malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
        except (OSError, AttributeError, TypeError):  # no glibc: macOS, Windows, musl
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)
