"""Edge latency, memory and size: what a device pays to personalize with a bundle (torch-free).

  * warm `personalize` median / p90 (ms) for k = 2, 5, 10 at DDIM-20 and DDPM-1000, per thread count,
    split into text encoding, denoiser calls, sampler arithmetic and template fill, and serialisation;
  * cold CLI: wall time of `tina-edge personalize ... -o x.onnx` in a fresh process (median of 5);
  * peak RSS of a fresh process (ru_maxrss of a child): imports only, + from_bundle, + one personalize;
  * bundle size on disk per file; predict throughput of a generated k=10 model.

    python benchmarks/latency.py --bundle tina_edge/bundles/default --threads 1,2 --repeats 30
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import _common as C


class _Timed:
    """Wraps an onnxruntime session (`run`) or the text encoder (`encode`) and adds up its wall time."""

    def __init__(self, inner, method: str):
        self._inner, self._method, self.ms, self.calls = inner, method, 0.0, 0

    def __getattr__(self, name):
        attr = getattr(self._inner, name)
        if name != self._method:
            return attr

        def timed(*a, **kw):
            t0 = time.perf_counter()
            try:
                return attr(*a, **kw)
            finally:
                self.ms += (time.perf_counter() - t0) * 1e3
                self.calls += 1
        return timed

    def reset(self):
        self.ms, self.calls = 0.0, 0


def prompts_for(manifest, ks: list[int]) -> dict[int, list[str]]:
    names = manifest.vocabulary or list(manifest.training.classes or [])
    out = {}
    for k in ks:
        if k > manifest.k_max:
            print(f"note: k={k} is above this bundle's K_max={manifest.k_max}; using k={manifest.k_max}", file=sys.stderr)
            k = manifest.k_max
        out[k] = [names[i] if i < len(names) else f"class {i}" for i in range(k)]
    return out


def warm(bundle: str | None, threads: int, prompts: dict[int, list[str]], settings: list[tuple[str, int, int]]) -> list[dict]:
    """Median/p90 of warm personalize calls with the per-phase breakdown (medians of each phase)."""
    from tina_edge.runtime import Personalizer
    from tina_edge.runtime.template import fill_template

    tina = Personalizer.from_bundle(bundle, threads=threads)
    tina._text = enc = _Timed(tina._text, "encode")  # the timing proxies see every call personalize makes
    tina._denoiser = den = _Timed(tina._denoiser, "run")
    prior = None
    if tina._prior_session() is not None:  # bundles with a prior graph: run once per personalize
        tina._prior = prior = _Timed(tina._prior, "run")
    rows = []
    for sampler, steps, repeats in settings:
        for k, names in prompts.items():
            tina.personalize(names, sampler=sampler, steps=steps, seed=0)  # warm-up
            rec: dict[str, list[float]] = {"total": [], "encode": [], "denoiser": [], "prior": [], "fill": [], "serialise": [],
                                           "calls": []}
            for r in range(repeats):
                enc.reset(), den.reset(), prior and prior.reset()
                t0 = time.perf_counter()
                clf = tina.personalize(names, sampler=sampler, steps=steps, seed=r)
                total = (time.perf_counter() - t0) * 1e3
                t1 = time.perf_counter()
                fill_template(tina._template, clf.params, k, clf.metadata)  # the same fill, timed alone
                t2 = time.perf_counter()
                clf.to_bytes()
                t3 = time.perf_counter()
                for key, v in (("total", total), ("encode", enc.ms), ("denoiser", den.ms), ("prior", prior.ms if prior else 0.0),
                               ("fill", (t2 - t1) * 1e3),
                               ("serialise", (t3 - t2) * 1e3), ("calls", den.calls)):
                    rec[key].append(v)
            med = {key: float(np.median(v)) for key, v in rec.items()}
            s = C.summary(rec["total"])
            rows.append({"threads": threads, "sampler": sampler, "steps": steps, "k": k, "repeats": repeats,
                         "median_ms": s["median"], "p90_ms": s["p90"], "encode_ms": med["encode"],
                         "denoiser_ms": med["denoiser"], "denoiser_calls": int(med["calls"]), "prior_ms": med["prior"],
                         "sampler_math_ms": max(med["total"] - med["encode"] - med["denoiser"] - med["prior"] - med["fill"], 0.0),
                         "fill_ms": med["fill"], "serialise_ms": med["serialise"],
                         "end_to_end_ms": s["median"] + med["serialise"]})
            print(f"  threads={threads} {sampler}-{steps} k={k}: {s['median']:.1f} ms", file=sys.stderr)
    return rows


def cli_path() -> list[str]:
    exe = Path(sys.executable).parent / "tina-edge"
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "tina_edge.cli.main"]


def cold_cli(bundle: str | None, names: list[str], repeats: int) -> dict:
    ms = []
    with tempfile.TemporaryDirectory() as d:
        for i in range(repeats):
            out = Path(d) / f"m{i}.onnx"
            cmd = cli_path() + ["personalize", ", ".join(names), "-o", str(out)] + (["--bundle", str(bundle)] if bundle else [])
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, cwd=C.ROOT)
            ms.append((time.perf_counter() - t0) * 1e3)
    return {"command": " ".join(["tina-edge", "personalize", json.dumps(", ".join(names)), "-o", "tmp.onnx"]
                                + (["--bundle", str(bundle)] if bundle else [])), **C.summary(ms), "runs": ms}


_RSS_CHILD = """
import resource, subprocess, sys
subprocess.run([sys.executable, "-c", sys.argv[1]], check=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def peak_rss(bundle: str | None, names: list[str]) -> list[dict]:
    """ru_maxrss (MiB) of a fresh child per stage; a wrapper process keeps other children out of the figure."""
    b = repr(str(bundle)) if bundle else "None"
    stages = [
        ("python + numpy + onnxruntime imported", "import numpy, onnxruntime, tina_edge.runtime"),
        ("+ Personalizer.from_bundle", f"from tina_edge.runtime import Personalizer; Personalizer.from_bundle({b})"),
        (f"+ one personalize (k={len(names)}, DDIM-20)",
         f"from tina_edge.runtime import Personalizer; p = Personalizer.from_bundle({b}); "
         f"p.personalize({names!r}).to_bytes()"),
    ]
    out = []
    for label, code in stages:
        r = subprocess.run([sys.executable, "-c", _RSS_CHILD, "import sys; sys.path.insert(0, %r); %s" % (str(C.ROOT), code)],
                           check=True, capture_output=True, text=True, cwd=C.ROOT)
        out.append({"stage": label, "peak_rss_mib": int(r.stdout.strip().splitlines()[-1]) / 1024})
    return out


def bundle_files(tina) -> list[dict]:
    rows = [{"file": n, "bytes": int(f["bytes"])} for n, f in sorted(tina.manifest.files.items())]
    man = tina.bundle.root / "manifest.json"
    if man.is_file():
        rows.append({"file": "manifest.json", "bytes": man.stat().st_size})
    return rows


def weight_types(tina) -> dict[str, str]:
    """'int8' for graphs with integer-quantized ops, else 'float32' (fp16 initializers: 'fp16')."""
    import onnx

    out = {}
    for label, name in (("text encoder", tina.manifest.text_encoder.model), ("denoiser", tina.manifest.denoiser.model)):
        m = onnx.load(str(tina.bundle.path(name)), load_external_data=False)
        ops = {n.op_type for n in m.graph.node}
        if ops & {"MatMulInteger", "DynamicQuantizeLinear", "QLinearMatMul", "MatMulNBits", "ConvInteger"}:
            out[label] = "int8"
        elif any(t.data_type == onnx.TensorProto.FLOAT16 for t in m.graph.initializer):
            out[label] = "fp16"
        else:
            out[label] = "float32"
    return out


def throughput(tina, names: list[str], threads: int | None, batches: list[int], seconds: float = 1.0) -> list[dict]:
    from tina_edge.runtime import PersonalizedClassifier

    clf = tina.personalize(names, seed=0)
    clf = PersonalizedClassifier(clf.to_model_proto(), clf.labels, threads=threads)
    h, w = clf.input_size or (32, 32)
    rng = np.random.default_rng(0)
    out = []
    for b in batches:
        x = rng.integers(0, 256, (b, h, w, 3), dtype=np.uint8)
        clf.predict(x)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds or n < 3:
            clf.predict(x)
            n += 1
        dt = time.perf_counter() - t0
        out.append({"threads": threads, "batch": b, "images_per_s": n * b / dt, "ms_per_batch": dt / n * 1e3})
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", default=None, help="Bundle directory or archive (default: the embedded one)")
    p.add_argument("--threads", type=C.int_list, default=[1, 2], help="onnxruntime intra-op threads to try (default: 1,2)")
    p.add_argument("--ks", type=C.int_list, default=[2, 5, 10], help="class counts (default: 2,5,10)")
    p.add_argument("--repeats", type=int, default=30, help="timed DDIM calls per setting (default: 30)")
    p.add_argument("--ddim-steps", default="20", help="DDIM step counts to time, e.g. 5,20 (default: 20)")
    p.add_argument("--ddpm-repeats", type=int, default=3, help="timed DDPM-1000 calls per setting (default: 3; 0 skips)")
    p.add_argument("--cold-repeats", type=int, default=5, help="cold CLI runs (default: 5; 0 skips)")
    p.add_argument("--batches", type=C.int_list, default=[1, 32, 256], help="predict batch sizes (default: 1,32,256)")
    C.add_output_options(p)
    args = p.parse_args(argv)

    from tina_edge.runtime import Personalizer

    tina = Personalizer.from_bundle(args.bundle)
    m = tina.manifest
    prompts = prompts_for(m, args.ks)
    big = prompts[max(prompts)]
    settings = [("ddim", n, args.repeats) for n in C.int_list(args.ddim_steps)] + ([("ddpm", m.diffusion.num_train_timesteps, args.ddpm_repeats)]
                                               if args.ddpm_repeats else [])
    res: dict = {"bundle": str(tina.bundle.source), "bundle_id": m.bundle_id, "machine": C.machine_note(),
                 "weights": weight_types(tina), "k_max": m.k_max, "param_count": m.denoiser.param_count,
                 "prompts": {str(k): v for k, v in prompts.items()}}
    res["warm"] = [r for t in args.threads for r in warm(args.bundle, t, prompts, settings)]
    res["cold_cli"] = cold_cli(args.bundle, big, args.cold_repeats) if args.cold_repeats else None
    res["peak_rss"] = peak_rss(args.bundle, big)
    res["bundle_files"] = bundle_files(tina)
    res["predict"] = [r for t in args.threads for r in throughput(tina, big, t, args.batches)]
    report(res)
    C.write_json(args.json_out, res)
    return res


def report(res: dict) -> None:
    print("## Edge latency\n")
    print(f"Bundle `{res['bundle']}` ({res['bundle_id'][:12]}; K_max {res['k_max']}, {res['param_count']} generated "
          f"parameters; " + ", ".join(f"{k} {v}" for k, v in res["weights"].items()) + f"). {res['machine']}. "
          "Timings on a shared machine are noisy; medians are the figure to quote.\n")
    print("### Warm `personalize` (ms; session already created)\n")
    print(C.md_table(["threads", "sampler", "k", "n", "median", "p90", "text enc.", "denoiser (calls)", "prior graph",
                      "sampler math", "template fill", "serialise"],
                     [[r["threads"], f"{r['sampler'].upper()}-{r['steps']}", r["k"], r["repeats"], r["median_ms"],
                       r["p90_ms"], r["encode_ms"], f"{r['denoiser_ms']:.1f} ({r['denoiser_calls']})", r["prior_ms"],
                       r["sampler_math_ms"], r["fill_ms"], r["serialise_ms"]] for r in res["warm"]]))
    print("\nBreakdown columns are per-phase medians; \"sampler math\" is the rest of the call (numpy sampler "
          "steps, checks, denormalisation); template fill is timed alone on the same parameters.")
    if res["cold_cli"]:
        c = res["cold_cli"]
        print(f"\n### Cold CLI (fresh process: interpreter start, imports, bundle check, sessions, personalize, write)\n")
        print(C.md_table(["command", "runs", "median ms", "min ms", "p90 ms"],
                         [[f"`{c['command']}`", c["n"], c["median"], c["min"], c["p90"]]]))
    print("\n### Peak resident memory of a fresh process\n")
    print(C.md_table(["stage", "peak RSS (MiB)"], [[r["stage"], r["peak_rss_mib"]] for r in res["peak_rss"]]))
    print("\n### Bundle on disk\n")
    files = res["bundle_files"]
    print(C.md_table(["file", "MiB"], [[f["file"], f"{f['bytes'] / 2**20:.3f}"] for f in files]
                     + [["**total**", f"**{sum(f['bytes'] for f in files) / 2**20:.2f}**"]]))
    print(f"\n### Predict throughput of a generated k={len(res['prompts'][max(res['prompts'], key=int)])} model\n")
    print(C.md_table(["threads", "batch", "images/s", "ms per batch"],
                     [[r["threads"], r["batch"], f"{r['images_per_s']:.0f}", f"{r['ms_per_batch']:.2f}"] for r in res["predict"]]))


if __name__ == "__main__":
    main()
