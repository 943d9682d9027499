"""The one place that creates onnxruntime sessions: options, threads, optimisation level, bytes.

Every session of the package (bundle graphs, text and image encoders, personalized classifiers,
export parity checks) is made here, so a fix to session options (a crash-avoiding optimizer switch,
quieter logs, thread caps) or to the memory a session holds (the model bytes onnxruntime's wrapper
kept, heap pages freed by its creation) reaches all of them at once.
"""

from __future__ import annotations

import ctypes
import math
import os
import re
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import ArgumentError, BundleError, RunError, TinaEdgeError

# onnxruntime 1.32 segfaults while creating a session for an fp16 CLIP text graph unless one of
# these is off (found by bisection); NCHWc only re-lays out convolutions, which encoders barely use.
SAFE_DISABLED_OPTIMIZERS = ("NchwcTransformer",)

# EXTENDED (not ALL): measured on the int8 MiniLM, session start 244 -> 130 ms and no slower runs;
# ALL adds CPU layout transforms (NCHWc) that the bundle's graphs do not benefit from. Personalized
# classifiers keep onnxruntime's default (ALL), so they run exactly as a plain onnxruntime user runs them.
LEVELS = ("basic", "extended", "all")


def make_session(model: bytes | str | os.PathLike, threads: int | None = None,
                 disabled_optimizers: tuple[str, ...] = SAFE_DISABLED_OPTIMIZERS, *, what: str = "model",
                 level: str = "extended", error: str | None = "cannot load ONNX model {what}: {detail}; re-export the bundle",
                 save_optimized: str | os.PathLike | None = None):
    """One CPU InferenceSession from verified bytes (or a path, for tools); `threads` caps intra-op threads.
    `save_optimized` (tools: export/portable/static_shapes.py) writes the graph as optimised at `level`.

    Bundles pass bytes: the session runs exactly what was hashed, never a file re-opened by path.
    `error` is the BundleError message ({what}, {detail}) a model onnxruntime refuses raises; None lets
    onnxruntime's own exception through (for callers that map it to their own error type).
    """
    import onnxruntime as ort

    _silence_onnxruntime(ort)
    opts = ort.SessionOptions()
    opts.log_severity_level = QUIET  # onnxruntime's own log lines are raw and coloured; its errors reach us as exceptions
    opts.graph_optimization_level = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                                     "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                     "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[level]
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    if save_optimized is not None:
        opts.optimized_model_filepath = str(save_optimized)
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


QUIET = 4  # onnxruntime's FATAL: nothing it logs reaches stderr (its failures become this package's errors)
_silenced = False


def _silence_onnxruntime(ort) -> None:
    """Quiet onnxruntime's process-wide default logger once (session and run loggers are set per object)."""
    global _silenced
    if not _silenced:
        ort.set_default_logger_severity(QUIET)
        _silenced = True


# ------------------------------------------------------------------ running a graph

RUN_TIME_LIMIT_ENV = "TINA_EDGE_RUN_TIME_LIMIT"
RUN_TIME_LIMIT_S = 600.0
"""Seconds one graph run may take (per ITEMS_PER_LIMIT items for batched runs); the environment
variable overrides it ("inf": no limit). Generous on purpose: a real bundle's slowest run (an image
batch through CLIP's tower on a slow CPU) takes seconds; a graph that runs for minutes is broken."""
ITEMS_PER_LIMIT = 64  # a classifier batch of N images may take ceil(N / 64) limits
TERMINATE_GRACE_S = 2.0  # how long a stopped run may take to notice the flag (checked between nodes)
_POLL_S = 0.05  # the waiting thread wakes this often, so a signal's Python handler runs promptly


def run_time_limit() -> float:
    """The limit per graph run in seconds: $TINA_EDGE_RUN_TIME_LIMIT, else RUN_TIME_LIMIT_S."""
    raw = os.environ.get(RUN_TIME_LIMIT_ENV, "").strip()
    if not raw:
        return RUN_TIME_LIMIT_S
    try:
        limit = float(raw)
    except ValueError:
        limit = math.nan
    if not limit > 0:
        raise ArgumentError(f"{RUN_TIME_LIMIT_ENV}={raw!r:.40} is not a number of seconds above 0 (or inf for no limit)")
    return limit


def run_graph(session: Any, outputs: Sequence[str], feeds: Mapping[str, Any], *, what: str,
              error: type[TinaEdgeError] = BundleError, hint: str = "the bundle is broken; re-export it",
              items: int = 1) -> list:
    """`session.run`, interruptible and bounded in time; every failure is one of this package's errors.

    Why a thread: onnxruntime holds the calling thread until the graph ends, and Python runs signal
    handlers only between bytecodes, so SIGTERM or Ctrl-C waited for the run (a runaway graph: for
    ever). The run goes to a worker thread while the caller waits in short slices; when the wait is
    interrupted (KeyboardInterrupt, the CLI's Terminated) or the limit passes, `RunOptions.terminate`
    stops the graph at its next node. onnxruntime's failure becomes `error` ("{what} failed ...; {hint}"),
    the time limit a RunError.
    """
    import onnxruntime as ort

    limit = run_time_limit() * max(1, math.ceil(int(items) / ITEMS_PER_LIMIT))
    ro = ort.RunOptions()
    ro.log_severity_level = QUIET
    box: dict[str, Any] = {}
    done = threading.Event()

    def work() -> None:
        try:
            box["out"] = session.run(list(outputs), dict(feeds), ro)
        except BaseException as e:  # noqa: BLE001 - handed to the waiting thread, which maps it
            box["err"] = e
        finally:
            done.set()

    deadline = time.monotonic() + limit
    try:
        _worker().put(work)
        while not done.wait(_POLL_S) and time.monotonic() < deadline:
            pass
    except BaseException:  # Ctrl-C, SIGTERM (the CLI raises Terminated): stop the graph, then unwind
        _stop(ro, done)
        raise
    if not done.is_set():
        _stop(ro, done)
        raise RunError(f"{what} ran longer than the limit of {limit:g} s per run and was stopped; {hint} "
                       f"(or raise the limit with {RUN_TIME_LIMIT_ENV}=SECONDS)")
    err = box.get("err")
    if err is not None:
        raise error(f"{what} failed while running ({_ort_detail(err)}); {hint}") from None
    return box["out"]


def _ort_detail(err: BaseException) -> str:
    """onnxruntime's message on one line, without its status-code boilerplate (what failed, and why)."""
    text = " ".join(str(err).split())
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    text = re.sub(r"Non-zero status code returned while running (\w+) node\. Name:'([^']*)' Status Message: ",
                  lambda m: f"{m.group(1)} node {m.group(2)!r}: " if m.group(2) else f"{m.group(1)} node: ", text)
    text = re.sub(r"/onnxruntime_src/\S+:\d+ [^)]*\)\s*", "", text)  # the C++ source line and signature
    text = f"{type(err).__name__}: {text}"
    return text if len(text) <= 240 else text[:240].rsplit(" ", 1)[0] + " ..."


def _stop(ro: Any, done: threading.Event) -> None:
    """Ask onnxruntime to end the run at its next node, and give it a moment to do so; a worker still
    busy after that is left to finish alone (the calling thread gets a new one)."""
    if not done.is_set():
        ro.terminate = True
        if not done.wait(TERMINATE_GRACE_S):
            _local.worker = None


_local = threading.local()


def _worker() -> Any:
    """The calling thread's run worker: one daemon thread kept for the thread's runs (a thread started
    per run cost ~0.3 ms, i.e. ~2 ms of a warm 5-step personalize); each calling thread has its own,
    so concurrent personalize calls never queue behind each other."""
    q = getattr(_local, "worker", None)
    if q is None:
        import queue

        q = queue.SimpleQueue()

        def serve() -> None:
            while True:
                q.get()()

        threading.Thread(target=serve, name="tina-edge-run", daemon=True).start()
        _local.worker = q
    return q


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
