"""Accuracy of classifiers generated through the edge runtime (bundle ONNX path) on held-out tasks.

For every ID and OOD task of W/tasks.json: `Personalizer.personalize(classes)` exactly as a user
calls it, then the generated model.onnx classifies the real test images of the task's classes
(labels in prompt order). Beside it, from W/eval/eval.json (same tasks, matched by class list):
the torch-reference generated model (eval's sampler), the fine-tuned p-model, classifier selection
and chance.

    python benchmarks/accuracy.py --bundle tina_edge/bundles/default --workdir /work/runs/default \\
        --cifar10 /work/data/cifar10 --fashion-mnist /usr/share/datasets/fashion-mnist --cache /work/cache --per-k
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import _common as C

REFS = ("eval generated", "fine-tuned", "selection", "chance")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", default=None, help="Bundle directory or archive (default: the embedded one)")
    C.add_task_options(p)
    C.add_data_options(p)
    p.add_argument("--sampler", default="ddim", choices=["ddim", "ddpm"])
    p.add_argument("--steps", type=int, default=None, help="Sampling steps (default: 20 for DDIM, 1000 for DDPM)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    p.add_argument("--per-k", action="store_true", help="Also print the per-k tables")
    p.add_argument("--full-predict", action="store_true",
                   help="Run every test image through the whole generated model (slow) instead of the trunk once")
    C.add_output_options(p)
    args = p.parse_args(argv)
    steps = args.steps or (1000 if args.sampler == "ddpm" else 20)

    from tina_edge.runtime import Personalizer

    tina = Personalizer.from_bundle(args.bundle, threads=args.threads)
    m = tina.manifest
    h = C.held_out_setup(args, tina, full=args.full_predict)
    tasks, split, refs, ev, test, ti, pool, heads = h.tasks, h.split, h.refs, h.eval_json, h.test, h.images, h.pool, h.heads
    print(f"[{len(tasks)} tasks, {len(pool)} test images; trunk features in {heads.feature_seconds:.1f} s]", file=sys.stderr)

    rows, gen_ms = [], []
    for i, (kind, classes) in enumerate(tasks):
        t0 = time.perf_counter()
        clf = tina.personalize(classes, sampler=args.sampler, steps=steps, seed=args.seed)
        gen_ms.append((time.perf_counter() - t0) * 1e3)
        idx, labels = ti.task(classes, pool)
        ref = refs.get((kind, tuple(classes)), {})
        rows.append({"kind": kind, "classes": classes, "k": len(classes), "images": int(len(idx)),
                     "holdout_class": C.holdout_of(classes, split.get("holdout", [])),
                     "runtime": heads.accuracy(clf, idx, labels), "eval generated": ref.get("generated"),
                     "fine-tuned": ref.get("fine-tuned"), "selection": ref.get("selection"), "chance": 100.0 / len(classes)})
        print(f"  {i + 1}/{len(tasks)} {kind} k={len(classes)} runtime {rows[-1]['runtime']:.1f}%", file=sys.stderr)

    result = {"bundle": str(tina.bundle.source), "bundle_id": m.bundle_id, "workdir": str(args.workdir),
              "sampler": args.sampler, "steps": steps, "seed": args.seed,
              "eval_json": ev.get("_path"),
              "eval_sampler": f"{str(ev.get('sampler', '?')).upper()}-{ev.get('steps', '?')}" if ev else None,
              "personalize_ms_median": float(np.median(gen_ms)) if gen_ms else None,
              "max_prob_diff_vs_full_model": heads.max_check_diff, "trunk_cached": not heads.full,
              "machine": C.machine_note(), "tasks": rows}
    print_report(result, args.per_k, split.get("holdout", []))
    C.write_json(args.json_out, result)
    return result


def _group(rows: list[dict], cols: tuple[str, ...]) -> list:
    return [len(rows)] + [C.nanmean(r[c] for r in rows) for c in cols]


def print_report(res: dict, per_k: bool, holdout: list[str]) -> None:
    rows = res["tasks"]
    label = f"runtime {res['sampler'].upper()}-{res['steps']}"
    cols = ("runtime",) + REFS
    head = ["tasks", "n", label, f"eval generated ({res['eval_sampler'] or '–'})", "fine-tuned", "selection", "chance"]
    print(f"## Accuracy of runtime-generated classifiers (test accuracy %, mean over tasks)\n")
    print(f"Bundle `{res['bundle']}` ({res['bundle_id'][:12]}), seed {res['seed']}; personalize median "
          f"{C.fmt(res['personalize_ms_median'])} ms per task. {res['machine']}.\n")
    print(C.md_table(head, [[kind.upper()] + _group([r for r in rows if r["kind"] == kind], cols)
                            for kind in ("id", "ood") if any(r["kind"] == kind for r in rows)]))
    if per_k:
        for kind in ("id", "ood"):
            rs = [r for r in rows if r["kind"] == kind]
            if rs:
                print(f"\n### {kind.upper()} tasks per k\n")
                print(C.md_table(["k"] + head[1:], [[k] + _group([r for r in rs if r["k"] == k], cols)
                                                    for k in sorted({r["k"] for r in rs})]))
    ood = [r for r in rows if r["kind"] == "ood"]
    if ood:
        print("\n### OOD tasks per held-out class\n")
        print(C.md_table(["held-out class"] + head[1:],
                         [[h] + _group([r for r in ood if r["holdout_class"] == h], cols)
                          for h in holdout if any(r["holdout_class"] == h for r in ood)]))
    how = ("the frozen trunk run once, each generated head cut from its model.onnx; largest probability "
           f"difference vs `predict` on checked images {res['max_prob_diff_vs_full_model']:.1e}"
           if res["trunk_cached"] else "every image through the whole generated model (`predict`)")
    print(f"\nAccuracy computed with {how}. Reference columns are the per-task rows of `{res['eval_json']}` "
          "(torch reference sampler, fine-tuned p-model, classifier selection).")


if __name__ == "__main__":
    main()
