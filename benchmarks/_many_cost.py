"""The cost of many classes (benchmarks/many_classes.py --cost): personalize time and peak memory at
k = 100, the model and head-only sizes, predict time against k. Any bundle (`--bundle DIR`); no photos.

Personalize: warm (names already encoded, so the text encoder's cache answers), one thread, median of
`repeats` calls. Peak RSS: VmHWM of a fresh process that imports the runtime only, opens the bundle and
personalizes once (variants: then serialises model.onnx; then predicts 8 photos).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

_RSS_CHILD = r"""
import sys, json
import numpy as np
from tina_edge.runtime import Personalizer
bundle, names, then = json.loads(sys.argv[1])
p = Personalizer.from_bundle(bundle, threads=1)
c = p.personalize(names)
if then in ("model", "predict"):
    c.model_bytes()
if then == "predict":
    c.predict(np.zeros((8, 128, 128, 3), np.uint8))
assert "torch" not in sys.modules
print(int([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]) / 1024)
"""


def distinct_names(p, n: int) -> list[str]:
    """n names of the bundle's vocabulary (training classes first) that read differently to its encoder."""
    from tina_edge.runtime.prompt import class_key, skeleton

    keys: set[str] = set()
    out = []
    for v in list(p.manifest.training.classes) + list(p.manifest.vocabulary):
        ks = {class_key(v), skeleton(v)}
        if not ks & keys:
            keys |= ks
            out.append(v)
        if len(out) == n:
            break
    return out


def median_ms(fn, repeats: int) -> tuple[float, list[float], float]:
    """(median wall ms, the wall ms of every call, median process CPU ms): on a loaded machine the wall
    time includes waiting for a core; the process's CPU time (all its threads) does not."""
    fn()  # warm: names encoded, sessions built
    ts, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        ts.append(1000 * (time.perf_counter() - t))
        cpu.append(1000 * (time.process_time() - c))
    return float(np.median(ts)), [round(t, 1) for t in ts], float(np.median(cpu))


def peak_rss_mb(bundle: Path | None, names: list[str], then: str) -> float:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    arg = json.dumps([str(bundle) if bundle else None, names, then])
    out = subprocess.run([sys.executable, "-c", _RSS_CHILD, arg], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def run_cost(bundle: Path | None, repeats: int = 11) -> dict:
    from tina_edge.runtime import Personalizer

    p = Personalizer.from_bundle(bundle, threads=1)
    names = distinct_names(p, 221)
    res: dict = {"bundle": str(bundle or "default (embedded)"), "bundle_id": p.manifest.bundle_id, "repeats": repeats,
                 "load_avg_start": os.getloadavg()}
    for k in (2, 20, 100, len(names)):
        med, ts, cpu = median_ms(lambda: p.personalize(names[:k]), repeats)
        res[f"personalize_ms_k{k}"] = round(med, 1)
        res[f"personalize_cpu_ms_k{k}"] = round(cpu, 1)
        res[f"personalize_min_ms_k{k}"] = min(ts)
        res[f"personalize_ms_k{k}_all"] = ts
    c = p.personalize(names[:100])
    res["model_onnx_bytes_k100"] = len(c.model_bytes())
    res["head_onnx_bytes_k100"] = len(c.model_bytes(head_only=True))
    res["head_numbers_k100"] = int(c.params["fc.weight"].size + c.params["fc.bias"].size)
    x = np.zeros((64, 128, 128, 3), np.uint8)
    for k in (2, 20, 100):
        ck = p.personalize(names[:k])
        med, _, cpu = median_ms(lambda: ck.predict(x), max(5, repeats // 2))
        res[f"predict_ms_64photos_k{k}"], res[f"predict_cpu_ms_64photos_k{k}"] = round(med, 1), round(cpu, 1)
    for k in (20, 100):
        for then in ("personalize", "model", "predict"):
            res[f"peak_rss_mb_k{k}_{then}"] = round(peak_rss_mb(bundle, names[:k], then), 1)
    res["load_avg_end"] = os.getloadavg()
    return res
