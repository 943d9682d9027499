"""Sanity check of a `convert --prior-only` bundle against what many_classes.py measured (BENCHMARKS §15).

Replays many_classes.py's task draws (seed 0, 20 tasks per k <= 20, 10 at k = 50 and 100) and scores
only the k = 10 tasks: seen accuracy and held-out recall of `generated/group` on --bundle (the
prior-only bundle, whose personalize runs no denoiser step) and, for reference, `generated/group`
and `prior alone` (the correction zeroed in memory, _many_refs.prior_only) on --reference (the
bundle many_classes measured). The prior-only bundle should give the reference's `prior alone`.
Same photos and cached trunk features as many_classes.py: the reference bundle's trunk (a converted
bundle's static-padding template computes the same features), the --bundle's generated rows on them.

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/prior_only_check.py --bundle /tmp/prior-only/po-keep \\
        --cifar10 /tmp/cifar10x/cifar10 --fashion-mnist /usr/share/datasets/fashion-mnist
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _many_refs as refs  # noqa: E402
import many_classes as mc  # noqa: E402


def replay(rng, bn, n: dict) -> tuple[list, list]:
    """(seen k=10 tasks, held-out k=10 tasks) drawn exactly as many_classes.run_accuracy draws them."""
    seen10 = held10 = None
    for k in list(mc.KS) + ["all seen", "100 TIN"]:
        pool = bn.tin_seen if k == "100 TIN" else bn.seen
        tasks = ([bn.seen] if k == "all seen" else
                 [list(rng.choice(pool, int(str(k).split()[0]), replace=False)) for _ in range(n[100 if k == "100 TIN" else k])])
        seen10 = tasks if k == 10 else seen10
    for k in [2] + list(mc.KS[1:]) + ["all"]:
        tasks = mc.held_tasks(rng, bn, k, n.get(k, 1))
        held10 = tasks if k == 10 else held10
    return seen10, held10


def score(p, bn, seen, held) -> dict:
    F, L = bn.val["features"], bn.val["labels"]
    hs = set(bn.held)
    acc = [mc.accuracy(*refs.generated(p, bn.emb[c])["group"], F, L, c)[0] for c in seen]
    rec, task = [], []
    for c in held:
        a, r = mc.accuracy(*refs.generated(p, bn.emb[c])["group"], F, L, c)
        rec.append(float(np.mean(r[np.isin(c, list(hs))])))
        task.append(a)
    return {"seen_acc": round(float(np.mean(acc)), 2), "heldout_recall": round(float(np.mean(rec)), 2),
            "heldout_task_acc": round(float(np.mean(task)), 2), "per_task_seen": acc, "per_task_recall": rec}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path, required=True, help="the prior-only bundle")
    ap.add_argument("--reference", type=Path, default=None, help="the bundle many_classes measured (default: embedded)")
    mc.add_photo_arguments(ap)
    ap.add_argument("--tasks", type=int, default=20)
    a = ap.parse_args()
    from tina_edge.runtime import Personalizer

    bn = mc.reference_bench(a, a.reference)
    n = {2: a.tasks, 10: a.tasks, 20: a.tasks, 50: max(2, a.tasks // 2), 100: max(2, a.tasks // 2)}
    seen, held = replay(np.random.default_rng(0), bn, n)
    po = Personalizer.from_bundle(a.bundle, threads=1)
    assert po.manifest.portable.prior_only, f"{a.bundle} is not a prior-only bundle"
    out = {"tasks": len(seen), "prior-only bundle": score(po, bn, seen, held),
           "reference generated/group": score(bn.p, bn, seen, held), "reference prior alone": score(bn.prior, bn, seen, held)}
    po_, pa = out["prior-only bundle"], out["reference prior alone"]
    out["identical_to_prior_alone"] = po_["per_task_seen"] == pa["per_task_seen"] and po_["per_task_recall"] == pa["per_task_recall"]
    for v in out.values():
        if isinstance(v, dict):
            v.pop("per_task_seen"), v.pop("per_task_recall")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
