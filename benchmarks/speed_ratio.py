"""Runtime default sampler (DDIM, numpy + onnxruntime) vs the paper's sampler (torch DDPM-1000), one run.

Same checkpoint, same prompts, same conditioning (the runtime's text embeddings feed both), same
template path: torch-sampled parameters are denormalised and filled into the bundle's template
exactly as the runtime fills its own, so only the sampler (and engine) differ.

  * speed: batch 1, k = 10 (or K_max), median of several calls: the runtime's whole `personalize`
    (text encoding + sampling + template fill) against torch sampling alone, and the ratio;
    the other two corners (torch DDIM at the same steps, runtime DDPM-1000) separate sampler from engine;
  * accuracy of each on held-out tasks (test images of the task's classes, prompt order).

    python benchmarks/speed_ratio.py --bundle tina_edge/bundles/default --ckpt /work/runs/default/tina.safetensors \\
        --workdir /work/runs/default --cifar10 /work/data/cifar10 \\
        --fashion-mnist /usr/share/datasets/fashion-mnist --cache /work/cache --max-tasks 9
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

import _common as C


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", default=None, help="Bundle exported from --ckpt (default: the embedded one)")
    p.add_argument("--ckpt", required=True, help="The Tina checkpoint (tina.safetensors) the bundle came from")
    C.add_task_options(p)
    C.add_data_options(p)
    p.add_argument("--threads", type=int, default=1, help="threads for both onnxruntime and torch (default: 1)")
    p.add_argument("--k", type=int, default=10, help="classes in the timed prompt (default: 10, capped at K_max)")
    p.add_argument("--repeats", type=int, default=20, help="timed DDIM calls (default: 20)")
    p.add_argument("--steps", type=int, default=None, help="runtime/torch DDIM steps (default: the bundle's default)")
    p.add_argument("--ddpm-repeats", type=int, default=3, help="timed DDPM-1000 calls (default: 3)")
    p.add_argument("--seed", type=int, default=0)
    C.add_output_options(p)
    args = p.parse_args(argv)

    import torch

    from tina_edge.runtime import PersonalizedClassifier, Personalizer
    from tina_edge.runtime.template import denormalise, fill_template
    from tina_edge.train.diffusion.process import sample
    from tina_edge.train.diffusion.checkpoint import read_checkpoint

    torch.set_num_threads(args.threads)
    tina = Personalizer.from_bundle(args.bundle, threads=args.threads)
    m = tina.manifest
    global STEPS, RT, TT
    STEPS = args.steps or m.diffusion.default_steps
    RT, TT = f"runtime DDIM-{STEPS}", f"torch DDIM-{STEPS}"
    ck = read_checkpoint(args.ckpt)
    model, sched, specs = ck.denoiser(ema=True), ck.schedule(), ck.layout().specs
    T = sched.num_train_timesteps
    same = [(s.name, s.shape, s.offset) for s in specs] == [(s.name, s.shape, s.offset) for s in m.template.layout] and \
        np.allclose([s.std for s in specs], [s.std for s in m.template.layout])
    if not same:
        print("WARNING: the bundle's parameter layout differs from the checkpoint's; was it exported from --ckpt?",
              file=sys.stderr)

    def torch_sample(sampler: str, emb: np.ndarray, mask: np.ndarray, seed: int) -> np.ndarray:
        e, mk = torch.from_numpy(emb), torch.from_numpy(mask)
        rng = np.random.default_rng(seed)
        x = sample(model, sched, e, mk, rng, sampler=sampler, steps=None if sampler == "ddpm" else STEPS)
        return x.numpy()

    def conditioning(batch: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
        emb = np.zeros((len(batch), m.k_max, m.text_encoder.embedding_dim), np.float32)
        mask = np.zeros((len(batch), m.k_max), np.float32)
        for b, names in enumerate(batch):
            emb[b, :len(names)] = tina.class_embeddings(names)
            mask[b, :len(names)] = 1.0
        return emb, mask

    def torch_classifier(x: np.ndarray, names: list[str]) -> PersonalizedClassifier:
        params = denormalise(x, specs, len(names))
        return PersonalizedClassifier(fill_template(tina.bundle.template_proto, params, len(names), {}), names, params,
                                      threads=args.threads)

    # ------------------------------------------------------------------ speed (batch 1)
    k = min(args.k, m.k_max)
    vocab = m.vocabulary or list(m.training.classes or [])
    names = [vocab[i % len(vocab)] if i < len(vocab) else f"class {i}" for i in range(k)]
    emb1, mask1 = conditioning([names])
    timing = {}
    timing[RT] = C.time_calls(lambda: tina.personalize(names, sampler="ddim", steps=STEPS), args.repeats)
    timing[TT] = C.time_calls(lambda: torch_sample("ddim", emb1, mask1, 0), args.repeats)
    timing["runtime DDPM-1000"] = C.time_calls(lambda: tina.personalize(names, sampler="ddpm", steps=T), args.ddpm_repeats)
    timing["torch DDPM-1000"] = C.time_calls(lambda: torch_sample("ddpm", emb1, mask1, 0), args.ddpm_repeats)
    speed = {name: C.summary(ms) for name, ms in timing.items()}
    for name, s in speed.items():
        print(f"  {name}: {s['median']:.1f} ms", file=sys.stderr)

    # ------------------------------------------------------------------ accuracy on held-out tasks
    h = C.held_out_setup(args, tina)
    tasks, split, refs, ev, test, ti, pool, heads = h.tasks, h.split, h.refs, h.eval_json, h.test, h.images, h.pool, h.heads
    emb, mask = conditioning([t for _, t in tasks])
    x_ddpm = torch_sample("ddpm", emb, mask, args.seed)  # batched over tasks: 1000 steps once, not once per task
    rows, param_diff = [], 0.0
    for b, (kind, classes) in enumerate(tasks):
        idx, labels = ti.task(classes, pool)
        ref = refs.get((kind, tuple(classes)), {})
        clf = tina.personalize(classes, sampler="ddim", steps=STEPS, seed=args.seed)
        # torch DDIM-20 per task from the runtime's seed: same noise, so it isolates the engine (parity check)
        t_ddim = torch_classifier(torch_sample("ddim", emb[b:b + 1], mask[b:b + 1], args.seed)[0], classes)
        param_diff = max(param_diff, max(float(np.abs(clf.params[n] - t_ddim.params[n]).max()) for n in clf.params))
        rows.append({"kind": kind, "classes": classes, "k": len(classes),
                     RT: heads.accuracy(clf, idx, labels),
                     "torch DDPM-1000": heads.accuracy(torch_classifier(x_ddpm[b], classes), idx, labels),
                     TT: heads.accuracy(t_ddim, idx, labels),
                     "fine-tuned": ref.get("fine-tuned"), "selection": ref.get("selection"), "chance": 100.0 / len(classes)})
    res = {"bundle": str(tina.bundle.source), "bundle_id": m.bundle_id, "ckpt": str(args.ckpt), "layout_matches": same,
           "eval_json": ev.get("_path"),
           "threads": args.threads, "k": k, "prompt": names, "machine": C.machine_note(), "torch": torch.__version__,
           "speed": speed, "ratio_torch_ddpm1000_over_runtime_ddim":
               speed["torch DDPM-1000"]["median"] / speed[RT]["median"],
           "max_prob_diff_vs_full_model": heads.max_check_diff, "ddim_runtime_vs_torch_max_param_diff": param_diff,
           "seed": args.seed, "tasks": rows}
    report(res)
    C.write_json(args.json_out, res)
    return res


STEPS, RT, TT = 20, "runtime DDIM-20", "torch DDIM-20"  # set from --steps / the bundle in main()


def acc_cols() -> tuple[str, ...]:
    return (RT, "torch DDPM-1000", TT, "fine-tuned", "selection", "chance")


def report(res: dict) -> None:
    sp = res["speed"]
    base = sp[RT]["median"]
    print(f"## Runtime DDIM-{STEPS} (the bundle's default) vs the paper's torch DDPM-1000\n")
    print(f"Checkpoint `{res['ckpt']}`, bundle `{res['bundle']}` ({res['bundle_id'][:12]}); batch 1, k={res['k']}, "
          f"{res['threads']} thread(s) for onnxruntime and torch {res['torch']}. {res['machine']}. "
          "Timings on a shared machine are noisy.\n")
    what = {RT: "whole `personalize` (encode + sample + fill)", "runtime DDPM-1000": "whole `personalize`",
            TT: "sampling only", "torch DDPM-1000": "sampling only (the paper's sampler)"}
    print(C.md_table(["sampler", "timed", "n", "median ms", "p90 ms", f"× {RT}"],
                     [[name, what[name], s["n"], s["median"], s["p90"], f"{s['median'] / base:.1f}×"] for name, s in sp.items()]))
    print(f"\n**Speed ratio: torch DDPM-1000 / {RT} = {res['ratio_torch_ddpm1000_over_runtime_ddim']:.0f}×** "
          "(the runtime's figure includes text encoding and template fill, torch's does not).\n")
    rows = res["tasks"]
    print(f"### Accuracy on held-out tasks (test accuracy %, seed {res['seed']})\n")
    print(C.md_table(["tasks", "n"] + list(acc_cols()),
                     [[kind.upper(), len(rs)] + [C.nanmean(r[c] for r in rs) for c in acc_cols()]
                      for kind in ("id", "ood") for rs in [[r for r in rows if r["kind"] == kind]] if rs]))
    print("\nAll generated models go through the bundle's template (torch parameters denormalised and filled the way "
          f"the runtime fills its own); fine-tuned / selection from `{res['eval_json']}`. {TT} starts from the "
          "runtime's seed per task (same noise: largest parameter difference runtime vs torch "
          f"{res['ddim_runtime_vs_torch_max_param_diff']:.1e}); torch DDPM-1000 samples all tasks in one batch "
          f"(seed {res['seed']}, other noise). Largest probability difference of the "
          f"cached-trunk evaluation vs `predict`: {res['max_prob_diff_vs_full_model']:.1e}."
          + ("" if res["layout_matches"] else " WARNING: bundle layout differs from the checkpoint's."))


if __name__ == "__main__":
    main()
