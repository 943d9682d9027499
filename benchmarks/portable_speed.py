"""Portable runtimes side by side, in one run: Python, node (JS package) and headless Chromium.

Session creation, warm personalize of K_max classes (median), predict one photo (median) and the
bundle's download size, for one portable bundle (default: the embedded bundle after `tina-edge
convert`). The browser figures come from `npm run test:browser`'s driver (js/browser/run.mjs),
which also checks the browser's parameters against Python's conformance vectors.

    python benchmarks/portable_speed.py [--bundle DIR] [--photos DIR] [--json-out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def python_figures(bundle: Path, repeats: int, k: int | None = None) -> dict:
    from tina_edge.runtime.personalizer import Personalizer

    t0 = time.perf_counter()
    p = Personalizer.from_bundle(bundle, threads=1)
    create = (time.perf_counter() - t0) * 1000
    m = p.manifest
    voc = m.vocabulary
    names = [voc[i] if i < len(voc) else f"class number {i}" for i in range(k or m.k_max)]
    runs, fresh = [], []
    cache = getattr(p._text, "_cache", None)  # the runtime's LRU of name embeddings, if it has one
    for i in range(repeats + 1):
        t = time.perf_counter()
        clf = p.personalize(names, seed=i)  # names cached after the first call
        if i:
            runs.append((time.perf_counter() - t) * 1000)
        if cache is not None:
            cache.clear()
        t = time.perf_counter()
        p.personalize(names, seed=i)  # every name through the text encoder
        if i:
            fresh.append((time.perf_counter() - t) * 1000)
    img = np.full((m.template.input.height, m.template.input.width, 3), 127, np.uint8)
    pr = []
    for i in range(21):
        t = time.perf_counter()
        clf.predict(img)
        if i:
            pr.append((time.perf_counter() - t) * 1000)
    return {"runtime": "Python (numpy sampler, onnxruntime)", "session_creation_ms": create, "k": len(names),
            "warm_personalize_ms": statistics.median(runs), "warm_personalize_uncached_ms": statistics.median(fresh),
            "predict_one_ms": statistics.median(pr)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=None, help="a portable bundle (default: convert the embedded one)")
    ap.add_argument("--photos", type=Path, default=None, help="photos for the browser demo's file picker")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--k", type=int, default=None, help="classes per personalize (default: the bundle's K_max)")
    ap.add_argument("--json-out", type=Path, default=None)
    a = ap.parse_args(argv)
    tmp = tempfile.TemporaryDirectory()
    bundle = a.bundle
    if bundle is None:
        bundle = Path(tmp.name) / "bundle"
        subprocess.run([sys.executable, "-m", "tina_edge.cli.main", "convert", "-o", str(bundle)], check=True,
                       stdout=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    manifest = json.loads((bundle / "manifest.json").read_text())
    port = manifest["portable"]
    used = [manifest["text_encoder"]["model"], manifest["text_encoder"]["tokenizer"], port["tokenizer_config"],
            port["generate"]["model"], port["template_inputs"]["model"], manifest["template"]["model"]]
    download = sum(manifest["files"][n]["bytes"] for n in dict.fromkeys(used))  # one template may serve both roles
    rows = [python_figures(bundle, a.repeats, a.k)]
    print("python done", file=sys.stderr)
    node = subprocess.run(["node", str(ROOT / "js/browser/node_speed.mjs"), str(bundle), str(a.repeats)]
                          + ([str(a.k)] if a.k else []),
                          capture_output=True, text=True, check=True)
    rows.append(json.loads(node.stdout))
    print("node done", file=sys.stderr)
    out = Path(tmp.name) / "browser.json"
    env = dict(os.environ, TINA_EDGE_BUNDLE=str(bundle), BROWSER_JSON=str(out), TINA_EDGE_PYTHON=sys.executable,
               PYTHONPATH=str(ROOT))
    if a.k:
        env["BROWSER_K"] = str(a.k)
    if a.photos:
        env["TINA_EDGE_PHOTOS"] = str(a.photos)
    r = subprocess.run(["node", str(ROOT / "js/browser/run.mjs")], env=env, capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stdout[-2000:], r.stderr[-2000:], file=sys.stderr)
        return 1
    b = json.loads(out.read_text())
    rows.append({"runtime": f"onnxruntime-web, wasm 1 thread, headless {b['chromium']}",
                 "session_creation_ms": b["session_creation_ms"], "k": b["k"],
                 "warm_personalize_ms": b["warm_personalize_ms"],
                 "warm_personalize_uncached_ms": b["warm_personalize_uncached_ms"], "predict_one_ms": b["predict_one_photo_ms"],
                 "browser": b})
    print(f"bundle {manifest['bundle_id']}, download {download / 1e6:.1f} MB "
          f"(text encoder {manifest['files'][used[0]]['bytes'] / 1e6:.1f} MB); browser parameters vs Python: "
          f"max abs diff {b['params_max_abs_diff_vs_python']:.1e}\n")
    k = rows[0]["k"]
    print(f"| runtime | session creation | warm personalize, k = {k}, names cached | same, every name encoded | predict one photo |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['runtime']} | {r['session_creation_ms']:.0f} ms | {r['warm_personalize_ms']:.1f} ms | "
              f"{r['warm_personalize_uncached_ms']:.1f} ms | {r['predict_one_ms']:.2f} ms |")
    print(f"\nbrowser: sessions {b['per_session_ms']}, personalize parts (encode, generate) ms "
          f"{b['personalize_uncached_parts_ms']}")
    if a.json_out:
        a.json_out.write_text(json.dumps({"bundle_id": manifest["bundle_id"], "download_bytes": download, "rows": rows},
                                         indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
