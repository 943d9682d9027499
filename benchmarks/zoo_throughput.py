"""Zoo throughput and p-model quality: this checkout's `build_zoo` vs the one at an older commit.

Both build the same tasks (the first --n of the work dir's tasks.json) with the work dir's recipe
(zoo/recipe.json or ZOO_RECIPE), the same --group and seed, into --out/{old,new}; printed: p-models
per minute (wall and per CPU-minute of this process, which a shared machine's load moves less),
load average, mean and per-k accuracy of each and the largest weight difference. The old module is
read with `git show REV:tina_edge/train/zoo/pmodels.py`, so nothing old needs to stay in the package.

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/zoo_throughput.py --workdir W --out /tmp/zb --n 3000 \\
        --group 250 --old-rev 2c00cb0
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import torch
from _common import ROOT, add_output_options
from safetensors.torch import load_file

from tina_edge.train.zoo import pmodels as zoo_new
from tina_edge.train.zoo.generic import load_generic
from tina_edge.train.stages.photos import ZOO_RECIPE, cached_task_data
from tina_edge.train.zoo.tasks import TaskSplit
from tina_edge.train.zoo.templates import ParamLayout


def old_module(rev: str, tmp: Path):
    """`tina_edge/train/zoo/pmodels.py` at `rev`, imported as a submodule of the current package (relative imports work)."""
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:tina_edge/train/zoo/pmodels.py"], check=True,
                         capture_output=True, text=True).stdout
    path = tmp / "zoo_at_rev.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("tina_edge.train._zoo_at_rev", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run(mod, out: Path, args, data) -> dict:
    gsd, layout, tr, te, tasks, recipe = data
    shutil.rmtree(out, ignore_errors=True)
    load0, c0 = os.getloadavg()[0], time.process_time()
    s = mod.build_zoo(out, gsd, layout, tr, te, tasks, group=args.group, seed=args.seed, eval_per_class=50,
                      progress=False, **recipe)
    cpu = time.process_time() - c0  # build + index, this process only
    index = json.loads((out / "index.json").read_text())
    acc = np.array([e["accuracy"] for e in index])
    ks = np.array([e["k"] for e in index])
    return {"per_minute": s["per_minute"], "seconds": s["seconds"], "cpu_seconds": cpu,
            "per_cpu_minute": len(index) / cpu * 60.0, "load": [load0, os.getloadavg()[0]],
            "mean_accuracy": float(acc.mean()), "per_k": {int(k): float(acc[ks == k].mean()) for k in np.unique(ks)}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", type=Path, required=True, help="photo work dir with features, generic, tasks.json")
    p.add_argument("--out", type=Path, required=True, help="scratch directory for the two zoos")
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--group", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--old-rev", default=None, help="git revision of the old zoo.py; omit to time only this checkout")
    add_output_options(p)
    args = p.parse_args()

    generic, cfg, _, _ = load_generic(args.workdir / "generic.safetensors")
    recipe_path = args.workdir / "zoo" / "recipe.json"
    recipe = json.loads(recipe_path.read_text()) if recipe_path.is_file() else dict(ZOO_RECIPE)
    tasks = TaskSplit.load(args.workdir / "tasks.json").zoo[: args.n]
    data = ({k: v for k, v in generic.state_dict().items() if k.startswith("fc.")}, ParamLayout(cfg),
            cached_task_data(args.workdir, "train"), cached_task_data(args.workdir, "test"), tasks, recipe)
    args.out.mkdir(parents=True, exist_ok=True)
    mods = {"new": zoo_new} | ({"old": old_module(args.old_rev, args.out)} if args.old_rev else {})
    res = {name: run(mod, args.out / name, args, data) for name, mod in mods.items()}

    print(f"{len(tasks)} tasks, recipe {recipe}, group {args.group}, {torch.get_num_threads()} thread(s)\n")
    print("| zoo | p-models/min (wall) | per CPU-minute | wall s | load avg (start→end) | mean acc. % |")
    print("|---|---|---|---|---|---|")
    for name, r in res.items():
        print(f"| {name} | {r['per_minute']:,.0f} | {r['per_cpu_minute']:,.0f} | {r['seconds']:.1f} | "
              f"{r['load'][0]:.1f}→{r['load'][1]:.1f} | {r['mean_accuracy']:.2f} |")
    if "old" in res:
        ks = sorted(res["new"]["per_k"])
        print("\n| k | " + " | ".join(map(str, ks)) + " |\n|---|" + "---|" * len(ks))
        for name in ("old", "new"):
            print(f"| {name} | " + " | ".join(f"{res[name]['per_k'][k]:.2f}" for k in ks) + " |")
        diff = max(float((load_file(str(a))[n] - load_file(str(b))[n]).abs().max())
                   for a, b in zip(sorted((args.out / "old" / "pmodels").glob("*.safetensors")),
                                   sorted((args.out / "new" / "pmodels").glob("*.safetensors")))
                   for n in ("fc.weight", "fc.bias"))
        res["max_weight_diff"] = diff
        print(f"\nlargest |weight difference| old vs new, all p-models: {diff:.2e}")
    if args.json_out:
        args.json_out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
