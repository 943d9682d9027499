"""Text encoders compared: exported size, edge encode latency, and held-out recall of text->head maps.

For each encoder spec (e.g. `minilm`, `st:/work/data/mpnet`): export text_encoder.onnx (+ int8)
exactly as a bundle would, time `TextEncoderSession.encode` on 10 class names at 1 thread
(median of --repeats, the part of personalize the encoder decides), and, with --workdir, fit the
encoder-dependent baselines (ridge-l2, nearest seen, direct text->head network) on the seen classes
and score held-out recall on the same OOD tasks (`benchmarks/baselines.py` machinery).

    python benchmarks/encoders.py --encoders minilm,st:/work/data/mpnet --workdir /work/runs/tiny \\
        --out /work/runs/h12/encoders
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NAMES = ["goldfish", "Egyptian cat", "school bus", "sneaker", "pizza", "tabby cat", "golden retriever",
         "sports car", "coat", "mushroom"]


def export_and_time(spec: str, out: Path, quantize: str | None, repeats: int) -> dict:
    from tina_edge.export.text_encoder import export_text_encoder
    from tina_edge.runtime.text_encoder import TextEncoderSession
    from tina_edge.runtime.tokenizer import Tokenizer
    from tina_edge.train.text.encoders import build_text_encoder

    enc = build_text_encoder(spec)
    d = out / (spec.replace(":", "_").replace("/", "_") + f"_{quantize or 'fp32'}")
    t0 = time.time()
    es, report = export_text_encoder(enc, d, quantize=quantize)
    secs = time.time() - t0
    tok = Tokenizer.from_file(d / es.tokenizer, max_tokens=es.max_tokens, cleaning=es.cleaning, pad_id=es.pad_id)
    sess = TextEncoderSession(d / es.model, tok, threads=1)
    sess.encode(NAMES)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        sess.encode(NAMES)
        times.append((time.perf_counter() - t) * 1000)
    size = sum(p.stat().st_size for p in d.iterdir())
    return {"spec": spec, "name": enc.name, "dim": enc.dim, "quantize": quantize, "export_seconds": secs,
            "files_bytes": size, "model_bytes": (d / es.model).stat().st_size,
            "encode10_ms_median": statistics.median(times), "cosine_min_vs_fp32": report.get("cosine_min", 1.0)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--encoders", default="minilm,st:/work/data/mpnet")
    p.add_argument("--quantize", default="int8", help="int8 | fp16 | none")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--n-ood", type=int, default=600)
    p.add_argument("--direct-steps", type=int, default=2000)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    q = None if a.quantize == "none" else a.quantize
    rows = []
    for spec in [s for s in a.encoders.split(",") if s]:
        r = export_and_time(spec, a.out, q, a.repeats)
        if a.workdir:
            from tina_edge.train.evaluation.baselines import DirectConfig
            from tina_edge.train.evaluation.compare_stage import run_comparison

            res = run_comparison(a.workdir, a.out / ("compare_" + spec.replace(":", "_").replace("/", "_")),
                                 text_encoder=spec, n_id=50, n_ood=a.n_ood, n_phrasing=200, finetune=False,
                                 direct_cfg=DirectConfig(steps=a.direct_steps), progress=False)
            s = res["summary"]
            r["ood_recall"] = {m: v["mean"] for m, v in s["ood"]["recall"].items()}
            r["ood_recall_se"] = {m: v["se"] for m, v in s["ood"]["recall"].items()}
            if "gloss" in s:
                r["gloss_recall"] = {m: v["mean"] for m, v in s["gloss"]["recall"].items()}
            if "phrasing" in s:
                r["phrasing_recall"] = {m: v["mean"] for m, v in s["phrasing"]["recall"].items()}
        rows.append(r)
        print(json.dumps(r), flush=True)
    print("\n| encoder | dim | text_encoder.onnx | encode 10 names (1 thread) | held-out recall: ridge-l2 / nearest / direct |")
    print("|---|---|---|---|---|")
    for r in rows:
        rec = r.get("ood_recall", {})
        recs = " / ".join(f"{rec[m]:.1f}" for m in ("ridge-l2", "nearest-seen", "direct") if m in rec) or "—"
        print(f"| {r['name']} ({r['quantize'] or 'fp32'}) | {r['dim']} | {r['model_bytes'] / 2**20:.1f} MiB | "
              f"{r['encode10_ms_median']:.1f} ms | {recs} |")
    (a.out / "encoders.json").write_text(json.dumps(rows, indent=1))
    return {"rows": rows}


if __name__ == "__main__":
    main()
