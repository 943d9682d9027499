"""Warm personalize with the text prior inside every denoiser step vs once per personalize (issue 22).

Two bundles in one process, timed in alternation (so load changes hit both alike): the default
bundle's layout (the prior inside denoiser.onnx / generate.onnx) and the same bundle after
`tina-edge convert` (prior.onnx, the denoiser and generate.onnx reading its rows). 10 classes with
cached names (the text encoder's cache holds them after the warm-up), one thread, default DDIM steps;
both the per-step denoiser path (Python's default) and generate.onnx (use_generate). Medians.

    tina-edge convert tina_edge/bundles/default -o /tmp/prior-once/conv
    python benchmarks/prior_once.py --old tina_edge/bundles/default --new /tmp/prior-once/conv --repeats 200
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def _names(p, k: int) -> list[str]:
    vocab = [v for v in p.manifest.vocabulary if isinstance(v, str)]
    return vocab[:k]


def measure(bundles: dict[str, str], k: int, repeats: int, threads: int) -> dict:
    """{label: {path: median ms}} of warm personalize, the bundles timed in alternation."""
    from tina_edge.runtime import Personalizer

    ps = {(label, gen): Personalizer.from_bundle(path, threads=threads, use_generate=gen)
          for label, path in bundles.items() for gen in (False, True)}
    names = _names(next(iter(ps.values())), k)
    times: dict = {key: [] for key in ps}
    for p in ps.values():
        for _ in range(3):
            p.personalize(names, seed=0)  # warm-up: sessions, the names' embeddings cached
    for r in range(repeats):
        for key, p in ps.items():
            t0 = time.perf_counter()
            p.personalize(names, seed=r)
            times[key].append((time.perf_counter() - t0) * 1e3)
    out: dict = {}
    for (label, gen), ms in times.items():
        out.setdefault(label, {})["generate.onnx" if gen else "denoiser steps"] = {
            "median_ms": round(float(np.median(ms)), 2), "min_ms": round(float(np.min(ms)), 2),
            "p10_ms": round(float(np.percentile(ms, 10)), 2),
            "p90_ms": round(float(np.percentile(ms, 90)), 2)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", required=True, help="bundle with the prior inside the denoiser")
    ap.add_argument("--new", required=True, help="the same bundle converted (prior.onnx)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None, help="also write the figures here")
    a = ap.parse_args()
    res = {"load_average_before": [round(x, 2) for x in os.getloadavg()], "k": a.k, "threads": a.threads,
           "repeats": a.repeats, "figures": measure({"old": a.old, "new": a.new}, a.k, a.repeats, a.threads)}
    res["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(res, indent=2)
    print(text)
    if a.json:
        from tina_edge.runtime.atomic import atomic_write_text

        atomic_write_text(a.json, text + "\n")


if __name__ == "__main__":
    main()
