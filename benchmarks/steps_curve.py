"""Accuracy against sampling steps: DDIM at n steps (and DDPM-1000) through the edge runtime.

Every held-out task (ID and OOD, or --max-tasks of each) is personalized with each sampler setting
and each seed; the generated model classifies the test images of the task's classes (prompt
order). Accuracy is averaged over tasks per seed, then reported as mean ± std over seeds, beside
the median `personalize` latency of the setting and the eval.json references of the same tasks.

    python benchmarks/steps_curve.py --bundle tina_edge/bundles/default --workdir /work/runs/default \\
        --cifar10 /work/data/cifar10 --fashion-mnist /usr/share/datasets/fashion-mnist --cache /work/cache \\
        --steps 1,2,5,10,20,50,100,1000 --seeds 3 --plot steps_curve.png
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import _common as C


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", default=None, help="Bundle directory or archive (default: the embedded one)")
    C.add_task_options(p)
    C.add_data_options(p)
    p.add_argument("--steps", type=C.int_list, default=[1, 2, 5, 10, 20, 50, 100, 1000],
                   help="DDIM step counts (default: 1,2,5,10,20,50,100,1000)")
    p.add_argument("--ddpm-steps", type=C.int_list, default=[1000],
                   help="DDPM step counts (1000 = the paper's sampler; fewer = respaced DDPM; default: 1000)")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per task and setting (default: 3)")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    C.add_output_options(p, plot=True)
    args = p.parse_args(argv)

    from tina_edge.runtime import Personalizer
    from tina_edge.runtime.samplers import spaced_timesteps

    tina = Personalizer.from_bundle(args.bundle, threads=args.threads)
    m = tina.manifest
    h = C.held_out_setup(args, tina)
    tasks, split, refs, ev, test, ti, pool, heads = h.tasks, h.split, h.refs, h.eval_json, h.test, h.images, h.pool, h.heads
    task_imgs = [ti.task(classes, pool) for _, classes in tasks]
    T = m.diffusion.num_train_timesteps
    settings = [("ddim", n) for n in args.steps] + [("ddpm", n) for n in args.ddpm_steps]

    curve = []
    for sampler, n in settings:
        acc = np.full((args.seeds, len(tasks)), np.nan)
        ms = []
        t_set = time.perf_counter()
        for s in range(args.seeds):
            for j, (kind, classes) in enumerate(tasks):
                t0 = time.perf_counter()
                clf = tina.personalize(classes, sampler=sampler, steps=n, seed=s)
                ms.append((time.perf_counter() - t0) * 1e3)
                acc[s, j] = heads.accuracy(clf, *task_imgs[j])
        calls = len(spaced_timesteps(T, n)) if sampler == "ddim" or n < T else T
        row = {"sampler": sampler, "steps": n, "denoiser_calls": calls, "personalize_ms": C.summary(ms),
               "per_seed_task": acc.tolist()}
        for kind in ("id", "ood"):
            cols = [j for j, (kd, _) in enumerate(tasks) if kd == kind]
            if cols:
                per_seed = acc[:, cols].mean(axis=1)
                row[kind] = {"mean": float(per_seed.mean()), "std": float(per_seed.std(ddof=1)) if args.seeds > 1 else 0.0,
                             "per_seed": per_seed.tolist(), "n_tasks": len(cols)}
        curve.append(row)
        print(f"  {sampler.upper()}-{n}: " + ", ".join(f"{k.upper()} {row[k]['mean']:.1f}" for k in ("id", "ood") if k in row)
              + f"  ({time.perf_counter() - t_set:.0f} s)", file=sys.stderr)

    refs_mean = {}
    for kind in ("id", "ood"):
        rs = [refs.get((kd, tuple(c)), {}) for kd, c in tasks if kd == kind]
        if rs:
            refs_mean[kind] = {c: C.nanmean(r.get(c) for r in rs) for c in ("generated", "fine-tuned", "selection")}
            refs_mean[kind]["chance"] = float(np.mean([100.0 / len(c) for kd, c in tasks if kd == kind]))
    res = {"bundle": str(tina.bundle.source), "bundle_id": m.bundle_id, "workdir": str(args.workdir), "seeds": args.seeds,
           "tasks": tasks, "eval_sampler": f"{str(ev.get('sampler', '?')).upper()}-{ev.get('steps', '?')}" if ev else None,
           "references": refs_mean, "eval_json": ev.get("_path"), "curve": curve,
           "max_prob_diff_vs_full_model": heads.max_check_diff,
           "machine": C.machine_note()}
    report(res)
    C.write_json(args.json_out, res)
    if args.plot:
        plot(res, args.plot)
    return res


def report(res: dict) -> None:
    kinds = [k for k in ("id", "ood") if k in res["curve"][0]]
    n_tasks = {k: res["curve"][0][k]["n_tasks"] for k in kinds}
    print("## Accuracy vs sampling steps (runtime, test accuracy %, mean ± std over seeds)\n")
    print(f"Bundle `{res['bundle']}` ({res['bundle_id'][:12]}); " + ", ".join(f"{n_tasks[k]} {k.upper()} tasks" for k in kinds)
          + f", {res['seeds']} seeds (the std is over seeds of the task-mean). {res['machine']}. "
          "Latency is the median `personalize` call on a shared, loaded machine (noisy).\n")
    rows = []
    for r in res["curve"]:
        a = np.asarray(r["per_seed_task"], dtype=np.float64)  # [seeds, tasks]
        spread = float(np.mean(a.max(axis=0) - a.min(axis=0)))
        rows.append([f"{r['sampler'].upper()}-{r['steps']}", r["denoiser_calls"]]
                    + [C.fmt_pm(r[k]["mean"], r[k]["std"], 2) for k in kinds]
                    + [f"{spread:.2f}", r["personalize_ms"]["median"]])
    print(C.md_table(["sampler", "denoiser calls"] + [f"{k.upper()} acc." for k in kinds]
                     + ["seed spread per task (pts)", "personalize ms (median)"], rows))
    print("\nSeed spread: max − min accuracy over the seeds for one task, averaged over tasks (how much the sample "
          "drawn changes the model).")
    if res["references"]:
        print(f"\nReferences on the same tasks (`{res['eval_json']}`):\n")
        print(C.md_table(["tasks", f"torch generated ({res['eval_sampler']})", "fine-tuned", "selection", "chance"],
                         [[k.upper()] + [res["references"][k][c] for c in ("generated", "fine-tuned", "selection", "chance")]
                          for k in kinds if k in res["references"]]))


def plot(res: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = [k for k in ("id", "ood") if k in res["curve"][0]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ax, lat = axes
    colours = {"id": "tab:blue", "ood": "tab:orange"}
    for k in kinds:
        ddim = [r for r in res["curve"] if r["sampler"] == "ddim"]
        ax.errorbar([r["steps"] for r in ddim], [r[k]["mean"] for r in ddim], yerr=[r[k]["std"] for r in ddim],
                    fmt="o-", capsize=3, color=colours[k], label=f"{k.upper()} DDIM")
        for r in res["curve"]:
            if r["sampler"] == "ddpm":
                ax.errorbar([r["steps"]], [r[k]["mean"]], yerr=[r[k]["std"]], fmt="*", ms=12, capsize=3,
                            color=colours[k], label=f"{k.upper()} DDPM-{r['steps']}")
        ref = res["references"].get(k)
        if ref:
            for c, style in (("fine-tuned", "--"), ("selection", "-."), ("chance", ":")):
                if ref[c] == ref[c]:
                    ax.axhline(ref[c], ls=style, lw=1, color=colours[k], alpha=0.6)
    ax.set_xscale("log")
    ax.set_xlabel("sampling steps (denoiser calls)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("accuracy vs steps (dashed: fine-tuned, dash-dot: selection, dotted: chance)", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    for sampler, style in (("ddim", "o-"), ("ddpm", "*")):
        rs = [r for r in res["curve"] if r["sampler"] == sampler]
        if rs:
            lat.plot([r["steps"] for r in rs], [r["personalize_ms"]["median"] for r in rs], style, label=sampler.upper())
    lat.set_xscale("log")
    lat.set_yscale("log")
    lat.set_xlabel("sampling steps")
    lat.set_ylabel("personalize median (ms)")
    lat.set_title("latency per personalize call", fontsize=9)
    lat.grid(alpha=0.3, which="both")
    lat.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
