"""Choose the trunk's input resolution: accuracy vs latency of EfficientNet-Lite0 at several sizes.

For each size S: cache features of a seeded Tiny-ImageNet subset (C classes, n train + m val photos
per class, through the runtime's preprocessing), train a C-way linear probe on the cached features,
and score (a) C-way val top-1 and (b) 10-way heads taken from the probe (mean over random 10-class
subsets, val photos of those classes). Latency: the trunk exported to ONNX, onnxruntime, one thread,
batch 1 (median of repeated runs), and torch throughput at batch 64 on one thread.

    OMP_NUM_THREADS=1 python benchmarks/resolution.py --tiny-imagenet /work/data/tiny-imagenet-200 \
        --sizes 96,128,160,224 --classes 60 --train 50 --val 25 --cache /work/runs/resolution
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def ort_latency_ms(trunk, size: int, path: Path, repeats: int = 30) -> float:
    import onnxruntime as ort
    import torch

    ex = torch.randint(0, 256, (2, size, size, 3), dtype=torch.uint8)
    with torch.no_grad():
        torch.onnx.export(trunk, (ex,), str(path), input_names=["image"], output_names=["features"],
                          dynamic_axes={"image": {0: "N"}, "features": {0: "N"}}, opset_version=17, dynamo=False)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).integers(0, 256, (1, size, size, 3), dtype=np.uint8)
    for _ in range(3):
        sess.run(None, {"image": x})
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        sess.run(None, {"image": x})
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def latency_only(cache: Path, sizes: list[int], rounds: int = 15, per_round: int = 5) -> None:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = {s: ort.InferenceSession(str(cache / f"trunk_{s}.onnx"), so, providers=["CPUExecutionProvider"]) for s in sizes}
    x = {s: np.random.default_rng(0).integers(0, 256, (1, s, s, 3), dtype=np.uint8) for s in sizes}
    times = {s: [] for s in sizes}
    for s in sizes:
        sess[s].run(None, {"image": x[s]})
    for _ in range(rounds):
        for s in sizes:
            for _ in range(per_round):
                t = time.perf_counter()
                sess[s].run(None, {"image": x[s]})
                times[s].append((time.perf_counter() - t) * 1000)
    print("| input | trunk ORT batch 1, 1 thread, median ms | p10 ms |")
    print("|---|---|---|")
    for s in sizes:
        print(f"| {s} px | {statistics.median(times[s]):.1f} | {np.percentile(times[s], 10):.1f} |")


def main() -> None:
    import torch

    from tina_edge.runtime.preprocess import PreprocessSpec
    from tina_edge.train.data import load_tiny_imagenet, take_per_class
    from tina_edge.train.data.photos import PhotoSet
    from tina_edge.train.zoo.features import extract, load_features
    from tina_edge.train.stages.photos import train_linear_head
    from tina_edge.train.zoo.trunk import pretrained_trunk

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny-imagenet", required=True)
    p.add_argument("--sizes", default="96,128,160,224")
    p.add_argument("--classes", type=int, default=60)
    p.add_argument("--train", type=int, default=50)
    p.add_argument("--val", type=int, default=25)
    p.add_argument("--tasks", type=int, default=200, help="random 10-way tasks scored per size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache", type=Path, required=True)
    p.add_argument("--json-out", type=Path, default=None)
    p.add_argument("--latency-only", action="store_true",
                   help="only time the trunk_S.onnx files already in --cache, sizes interleaved round by round "
                        "(so a busy machine's load drift hits every size alike)")
    a = p.parse_args()
    if a.latency_only:
        latency_only(a.cache, [int(s) for s in a.sizes.split(",")])
        return
    torch.set_num_threads(1)
    rng = np.random.default_rng(a.seed)

    def subset(split: str, n: int) -> PhotoSet:
        ps = load_tiny_imagenet(a.tiny_imagenet, split)
        keep = sorted(np.random.default_rng(a.seed).choice(len(ps.classes), a.classes, replace=False).tolist())
        remap = {c: j for j, c in enumerate(keep)}
        rows = [i for i in range(len(ps)) if int(ps.labels[i]) in remap]
        sub = PhotoSet([ps.items[i] for i in rows], [remap[int(ps.labels[i])] for i in rows],
                       [ps.classes[c] for c in keep], "tiny-imagenet-subset")
        return take_per_class(sub, n, seed=a.seed)

    tr, va = subset("train", a.train), subset("val", a.val)
    trunk = pretrained_trunk()
    tasks = [rng.choice(a.classes, 10, replace=False) for _ in range(a.tasks)]
    rows = []
    for size in [int(s) for s in a.sizes.split(",")]:
        spec = PreprocessSpec(size=size)
        t0 = time.time()
        extract(trunk, tr, a.cache / f"train_{size}", spec, progress=True)
        extract(trunk, va, a.cache / f"val_{size}", spec, progress=True)
        ext = time.time() - t0
        xtr, ytr, _ = load_features(a.cache / f"train_{size}")
        xva, yva, _ = load_features(a.cache / f"val_{size}")
        xtr, xva = torch.from_numpy(np.asarray(xtr, np.float32)), torch.from_numpy(np.asarray(xva, np.float32))
        w, b = train_linear_head(xtr, torch.from_numpy(ytr), a.classes, epochs=60, batch=256, seed=a.seed)
        logits = (xva @ w.T + b).numpy()
        top1 = float((logits.argmax(1) == yva).mean())
        accs = []
        for t in tasks:
            sel = np.isin(yva, t)
            sub = logits[sel][:, t]
            accs.append(float((t[sub.argmax(1)] == yva[sel]).mean()))
        img = torch.randint(0, 256, (64, size, size, 3), dtype=torch.uint8)
        with torch.no_grad():
            trunk(img)
            t1 = time.perf_counter()
            trunk(img)
            ips = 64 / (time.perf_counter() - t1)
        lat = ort_latency_ms(trunk, size, a.cache / f"trunk_{size}.onnx")
        rows.append({"size": size, "probe_top1": top1, "tenway": float(np.mean(accs)), "ort_batch1_ms": lat,
                     "torch_img_per_s_b64": ips, "extract_seconds": ext})
        print(json.dumps(rows[-1]), file=sys.stderr)
    print(f"\n{a.classes} Tiny-ImageNet classes (seed {a.seed}), {a.train} train / {a.val} val photos per class\n")
    print(f"| input | {a.classes}-way probe top-1 | 10-way head acc. | trunk ORT batch 1, 1 thread (ms) | torch img/s (batch 64, 1 thread) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']} px | {r['probe_top1']:.3f} | {r['tenway']:.3f} | {r['ort_batch1_ms']:.1f} | {r['torch_img_per_s_b64']:.0f} |")
    if a.json_out:
        a.json_out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
