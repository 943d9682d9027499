"""Held-out low-resolution classes (issue 22): the universe's held-out CIFAR-10 / Fashion-MNIST classes
on their own test photos, in 10-way tasks beside nine seen classes.

For each held-out class whose photos are not Tiny-ImageNet's (bird, horse, coat in the default
universe), --tasks 10-way tasks (the class + 9 seen classes drawn at random, seed 0); the class's recall
on its own test photos per method, the mean over tasks, and the paired difference of --bundle against
the reference bundle's generator with its SE over tasks. Same photos and cached trunk features as
many_classes.py (the reference bundle's trunk). --bundle is scored as personalize builds it (its own
conditioning, senses in the task's context); the reference methods use many_classes.py's rows.

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/lowres_heldout.py --bundle tina_edge/bundles/default \\
        --reference /tmp/old_default --cifar10 /tmp/cifar10x/cifar10 --fashion-mnist /usr/share/datasets/fashion-mnist
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path, default=None, help="the bundle to measure (default: embedded)")
    ap.add_argument("--reference", type=Path, required=True, help="the bundle many_classes measured (its features cache)")
    mc.add_photo_arguments(ap, required=True)
    ap.add_argument("--tasks", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    from tina_edge.runtime import Personalizer

    bn = mc.reference_bench(a, a.reference)
    new = Personalizer.from_bundle(a.bundle, threads=1)
    F, L = bn.val["features"], bn.val["labels"]
    lowres = [i for i in bn.held if i >= bn.val["n_tin"]]  # held-out classes whose photos are not Tiny-ImageNet's
    rng = np.random.default_rng(a.seed)
    rows: dict[str, dict[str, list[float]]] = {}
    for c in lowres:
        for _ in range(a.tasks):
            cls = list(rng.permutation([c] + list(rng.choice(bn.seen, 9, replace=False))))
            at = cls.index(c)
            methods = {k: v for k, v in bn.methods(cls, True, False).items()
                       if k in ("generated/group", "prior alone", "nearest vocabulary", "nearest seen (probe row)")}
            emb = new.class_embeddings([bn.names[i] for i in cls])  # what personalize conditions on (senses in context)
            methods = {"this bundle": refs.generated(new, emb)["group"], **methods}
            for m, (w, b) in methods.items():
                rows.setdefault(m, {}).setdefault(bn.names[c], []).append(float(mc.accuracy(w, b, F, L, cls)[1][at]))
    out: dict = {"bundle": new.manifest.bundle_id, "reference": bn.p.manifest.bundle_id, "tasks_per_class": a.tasks,
                 "classes": [bn.names[c] for c in lowres], "recall": {}}
    for m, per in rows.items():
        out["recall"][m] = {n: round(float(np.mean(v)), 1) for n, v in per.items()}
        out["recall"][m]["mean"] = round(float(np.mean([x for v in per.values() for x in v])), 1)
    base = [x for v in rows["generated/group"].values() for x in v]
    for m in rows:
        d = np.array([x for v in rows[m].values() for x in v]) - np.array(base)
        out.setdefault("paired_vs_reference_generator", {})[m] = [round(float(d.mean()), 1), round(float(d.std(ddof=1) / np.sqrt(len(d))), 1)]
    print("| method | " + " | ".join(out["classes"]) + " | mean | paired vs reference generator (± SE) |")
    print("|---|" + "---|" * (len(out["classes"]) + 2))
    for m, r in out["recall"].items():
        d, se = out["paired_vs_reference_generator"][m]
        print(f"| {m} | " + " | ".join(str(r[n]) for n in out["classes"]) + f" | {r['mean']} | {d:+.1f} ± {se:.1f} |")
    print(json.dumps(out, indent=1), file=sys.stderr)


if __name__ == "__main__":
    main()
