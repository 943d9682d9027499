"""Evaluation of a Tina checkpoint on held-out tasks, beside the three references.

For every ID task (unseen combination of seen classes) and OOD task (contains a class no p-model
was trained on), accuracy on the test images of the task's classes, labels in prompt order, of:
  generated   -- parameters sampled by Tina (reference torch sampler; DDPM-1000 as the paper)
  fine-tuned  -- the generic model fine-tuned on that task (same recipe as the zoo; upper reference)
  selection   -- the generic model's rows for those classes ("classifier selection")
  chance      -- 100 / k
Writes eval.json, report.md and accuracy_vs_k.png.

With a CLIP text encoder, `evaluate_image_prompts` adds the paper's image-prompt rows: the same
tasks, each class prompted by n example images (n = 1, 5, 10) from the train split instead of its
name (zero-shot with respect to the denoiser, which only saw text embeddings in training).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from tina_edge.runtime.errors import TextEncoderError, TrainingError
from tina_edge.runtime.conditioning import pad_to_slots
from tina_edge.runtime.atomic import atomic_save_figure, atomic_write_json, atomic_write_text
from tina_edge.train.diffusion.process import sample
from tina_edge.train.zoo.templates import ParamLayout
from tina_edge.runtime.template import denormalise_flat
from tina_edge.train.diffusion.checkpoint import Checkpoint
from tina_edge.train.zoo.pmodels import TaskData, finetune_batch, task_accuracy, task_class_recall

METHODS = ("generated", "fine-tuned", "selection", "chance")


def task_conditioning(emb_table: torch.Tensor, tasks_idx: list[list[int]], k_max: int):
    table = emb_table.detach().cpu().numpy()
    emb, mask = pad_to_slots([table[np.asarray(t, dtype=np.int64)] for t in tasks_idx], k_max)
    return torch.from_numpy(emb), torch.from_numpy(mask)


def generate(ck: Checkpoint, class_emb: torch.Tensor, class_mask: torch.Tensor, *, sampler: str = "ddpm",
             steps: int = 1000, seed: int = 0) -> torch.Tensor:
    """Denormalised flat parameters [B, P] for a batch of conditionings (EMA weights)."""
    model, sched, layout = ck.denoiser(ema=True), ck.schedule(), ck.layout()
    rng = np.random.default_rng(seed)
    x = sample(model, sched, class_emb, class_mask, rng, sampler=sampler, steps=None if sampler == "ddpm" else steps)
    return torch.from_numpy(denormalise_flat(x.detach().cpu().numpy(), layout.specs)).to(x.device)


def evaluate(ck: Checkpoint, test: TaskData, train: TaskData, id_tasks: list[list[str]], ood_tasks: list[list[str]],
             holdout: list[str], *, sampler: str = "ddpm", steps: int = 1000, seed: int = 0,
             finetune_steps: int = 100, progress: bool = True, finetune: dict | None = None) -> dict:
    """`finetune` (e.g. the zoo's recipe {"steps", "batch", "lr", "fast_sampling"}) overrides the
    fine-tuned reference's recipe; by default it is the 32x32 zoo's (100 steps, batch 64)."""
    layout: ParamLayout = ck.layout()
    classes = ck.info.classes or []
    c2i = {c: i for i, c in enumerate(classes)}
    generic = ck.prefixed("generic.")
    emb_table = ck.tensors["vocab_emb"]
    tasks = [("id", t) for t in id_tasks] + [("ood", t) for t in ood_tasks]
    tidx = [[c2i[c] for c in t] for _, t in tasks]
    t0 = time.time()
    emb, mask = task_conditioning(emb_table, tidx, layout.k_max)
    flat = generate(ck, emb, mask, sampler=sampler, steps=steps, seed=seed)
    gen_secs = time.time() - t0
    ft = finetune_batch(generic, layout, train, tidx, seed=seed + 7, **(finetune or {"steps": finetune_steps}))
    rows = []
    for b, ((kind, names), idx) in enumerate(zip(tasks, tidx)):
        k = len(idx)
        gen_p = layout.unflatten(flat[b], k)
        ft_p = {s.name: (ft[s.name][b, :k] if s.class_axis is not None else ft[s.name][b]) for s in layout.specs}
        sel_p = {s.name: (generic[s.name][torch.tensor(idx)] if s.class_axis is not None else generic[s.name])
                 for s in layout.specs}
        rows.append({
            "kind": kind, "classes": names, "k": k,
            "holdout_class": next((c for c in names if c in holdout), None),
            "generated": task_accuracy(layout, gen_p, test, idx),
            "fine-tuned": task_accuracy(layout, ft_p, test, idx),
            "selection": task_accuracy(layout, sel_p, test, idx),
            "chance": 100.0 / k,
        })
        h = rows[-1]["holdout_class"]
        if h is not None:  # the held-out class's own images: the honest OOD signal
            slot = names.index(h)
            rows[-1]["holdout_recall"] = {
                "generated": task_class_recall(layout, gen_p, test, idx, slot),
                "fine-tuned": task_class_recall(layout, ft_p, test, idx, slot),
                "selection": task_class_recall(layout, sel_p, test, idx, slot),
                "chance": 100.0 / k,
            }
    return {"sampler": sampler, "steps": steps if sampler != "ddpm" else 1000, "seed": seed,
            "sampling_seconds": gen_secs, "tasks": rows, "summary": summarize(rows, holdout)}


def summarize(rows: list[dict], holdout: list[str]) -> dict:
    def mean(rs, m):
        return float(np.mean([r[m] for r in rs])) if rs else float("nan")

    out = {}
    for kind in ("id", "ood"):
        rs = [r for r in rows if r["kind"] == kind]
        out[kind] = {m: mean(rs, m) for m in METHODS} | {"n": len(rs)}
        out[kind]["per_k"] = {str(k): {m: mean([r for r in rs if r["k"] == k], m) for m in METHODS}
                              for k in sorted({r["k"] for r in rs})}
    out["ood_per_class"] = {h: {m: mean([r for r in rows if r["holdout_class"] == h], m) for m in METHODS}
                            for h in holdout}
    rec = [r["holdout_recall"] for r in rows if "holdout_recall" in r]
    if rec:  # recall on the held-out class's own images (OOD task accuracy also counts the seen classes)
        out["holdout_recall"] = {m: mean(rec, m) for m in METHODS}
        out["holdout_recall_per_class"] = {
            h: {m: mean([r["holdout_recall"] for r in rows if r.get("holdout_class") == h and "holdout_recall" in r], m)
                for m in METHODS} for h in holdout}
    return out


def _write_report_files(out_dir: str | Path, result: dict, json_name: str, lines: list[str], plot_name: str,
                        draw: Callable) -> Path:
    """The report's three files, each atomic: the result as JSON, report.md, and the plot `draw(plt)`
    returns (skipped without matplotlib, which the runtime install leaves out)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / json_name, result, indent=1)
    atomic_write_text(out_dir / "report.md", "\n".join(lines))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return out_dir / "report.md"
    fig = draw(plt)
    fig.tight_layout()
    atomic_save_figure(out_dir / plot_name, fig, dpi=110)
    plt.close(fig)
    return out_dir / "report.md"


def write_report(result: dict, out_dir: str | Path, title: str = "Tina evaluation") -> Path:
    """eval.json + report.md (tables) + accuracy_vs_k.png (matplotlib)."""
    s = result["summary"]
    lines = [f"# {title}", "", f"Sampler: {result['sampler']} ({result['steps']} steps), seed {result['seed']}; "
             f"sampling all tasks took {result['sampling_seconds']:.1f} s.", "",
             "| tasks | n | generated | fine-tuned | selection | chance |", "|---|---|---|---|---|---|"]
    for kind in ("id", "ood"):
        r = s[kind]
        lines.append(f"| {kind.upper()} | {r['n']} | " + " | ".join(f"{r[m]:.1f}" for m in METHODS) + " |")
    lines += ["", "Per k (ID):", "", "| k | generated | fine-tuned | selection | chance |", "|---|---|---|---|---|"]
    for k, r in s["id"]["per_k"].items():
        lines.append(f"| {k} | " + " | ".join(f"{r[m]:.1f}" for m in METHODS) + " |")
    lines += ["", "Per k (OOD):", "", "| k | generated | fine-tuned | selection | chance |", "|---|---|---|---|---|"]
    for k, r in s["ood"]["per_k"].items():
        lines.append(f"| {k} | " + " | ".join(f"{r[m]:.1f}" for m in METHODS) + " |")
    lines += ["", "OOD per held-out class:", "", "| class | generated | fine-tuned | selection | chance |",
              "|---|---|---|---|---|"]
    for h, r in s["ood_per_class"].items():
        lines.append(f"| {h} | " + " | ".join(f"{r[m]:.1f}" for m in METHODS) + " |")
    if "image_prompts" in result:
        lines += image_prompt_report_lines(result["image_prompts"], s)
    if "holdout_recall" in s:
        lines += ["", "Recall on the held-out class's own test images (OOD tasks; the task accuracy above also "
                  "counts the seen classes in each task):", "",
                  "| class | generated | fine-tuned | selection | chance |", "|---|---|---|---|---|"]
        for h, r in list(s["holdout_recall_per_class"].items()) + [("all held-out", s["holdout_recall"])]:
            lines.append(f"| {h} | " + " | ".join(f"{r[m]:.1f}" for m in METHODS) + " |")
    lines += ["", "![accuracy vs k](accuracy_vs_k.png)", ""]

    def draw(plt):
        fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
        for ax, kind in zip(axes, ("id", "ood")):
            per_k = s[kind]["per_k"]
            ks = [int(k) for k in per_k]
            for m, style in zip(METHODS, ("o-", "s--", "^-.", ":")):
                ax.plot(ks, [per_k[str(k)][m] for k in ks], style, label=m)
            ax.set_title(f"{kind.upper()} tasks")
            ax.set_xlabel("classes in the prompt (k)")
            ax.grid(alpha=0.3)
        axes[0].set_ylabel("test accuracy (%)")
        axes[1].legend()
        return fig

    return _write_report_files(out_dir, result, "eval.json", lines, "accuracy_vs_k.png", draw)


# ------------------------------------------------------------------------------ image prompts

IMAGE_SHOTS = (1, 5, 10)


def image_prompt_encoder(ck: Checkpoint, spec: str | None = None):
    """The checkpoint's CLIP encoder, whose image tower embeds the example images.

    Refuses checkpoints trained on an encoder without an image tower (MiniLM), and weights that
    do not reproduce the checkpoint's class-name embeddings (image and text must share one space).
    """
    from tina_edge.train.text.encoders import OpenCLIPEncoder, build_text_encoder

    rec = ck.info.encoder
    spec = spec or str(rec.spec or "")
    if rec.kind != "open_clip" or not spec.startswith("open_clip"):
        raise TextEncoderError(
            f"image prompts need a CLIP text encoder with an image tower; this checkpoint was trained on "
            f"{rec.label()} embeddings, which have none. "
            "Train the diffusion stage with --text-encoder open_clip:ARCH[:weights] to evaluate image prompts"
        )
    enc = build_text_encoder(spec)
    if not isinstance(enc, OpenCLIPEncoder):
        raise TextEncoderError(f"text encoder {spec!r} has no image tower")
    names = list(ck.info.classes or [])
    diff = float(np.abs(enc.encode(names) - ck.tensors["vocab_emb"].float().numpy()).max())
    if not diff <= 1e-3:
        raise TextEncoderError(
            f"the CLIP weights of {spec!r} embed the class names {diff:.2e} away from the checkpoint's embeddings; "
            "use the weights the checkpoint was trained with"
        )
    return enc


def image_class_embeddings(encoder, images: np.ndarray, labels: np.ndarray, class_ids: list[int],
                           shots: tuple[int, ...] = IMAGE_SHOTS, seed: int = 0) -> dict[int, np.ndarray]:
    """{n: [C, D]} rows of the classes in class_ids (others stay zero), C = max(class_ids) + 1.

    Row = mean of n L2-normalised CLIP image embeddings of the class, re-normalised (the
    runtime's own `mean_embedding`). The draws are nested (the 1 image is among the 5, the 5 among the 10) and
    seeded, so every n sees the same pictures plus more.
    """
    from tina_edge.runtime.image_encoder import mean_embedding

    rng = np.random.default_rng(seed)
    n_max, C = max(shots), max(class_ids) + 1
    out = {n: np.zeros((C, encoder.dim), np.float32) for n in shots}
    for c in sorted(set(class_ids)):
        idx = np.flatnonzero(labels == c)
        if len(idx) < n_max:
            raise TrainingError(f"class {c} has {len(idx)} training images, fewer than the {n_max} example images asked for")
        e = encoder.encode_images(list(images[rng.choice(idx, n_max, replace=False)]))
        for n in shots:
            out[n][c] = mean_embedding(e[:n], f"class {c}")
    return out


def evaluate_image_prompts(ck: Checkpoint, test: TaskData, train_images: np.ndarray, train_labels: np.ndarray,
                           id_tasks: list[list[str]], ood_tasks: list[list[str]], *,
                           shots: tuple[int, ...] = IMAGE_SHOTS, sampler: str = "ddpm", steps: int = 1000,
                           seed: int = 0, encoder=None) -> dict:
    """Accuracy of models generated from image prompts, per n, on the same tasks as the text rows.

    `train_images`/`train_labels` are the raw train split (labels index ck.info.classes): the
    example images come from there, never from the test images the accuracy is measured on. The
    sampler, steps and seed are those of the text rows, so only the conditioning differs.
    """
    shots = tuple(sorted({int(n) for n in shots}))
    if not shots or shots[0] < 1:
        raise ValueError(f"image-prompt shots must be positive integers, got {shots}")
    enc = encoder or image_prompt_encoder(ck)
    layout: ParamLayout = ck.layout()
    c2i = {c: i for i, c in enumerate(ck.info.classes or [])}
    tasks = [("id", t) for t in id_tasks] + [("ood", t) for t in ood_tasks]
    tidx = [[c2i[c] for c in t] for _, t in tasks]
    used = sorted({i for t in tidx for i in t})
    t0 = time.time()
    tables = image_class_embeddings(enc, train_images, np.asarray(train_labels), used, shots, seed=seed)
    embed_secs = time.time() - t0
    text = ck.tensors["vocab_emb"].float().numpy()
    rows, summary = [], {}
    for n in shots:
        emb, mask = task_conditioning(torch.from_numpy(tables[n]), tidx, layout.k_max)
        flat = generate(ck, emb, mask, sampler=sampler, steps=steps, seed=seed)
        for b, ((kind, names), idx) in enumerate(zip(tasks, tidx)):
            rows.append({"kind": kind, "classes": names, "k": len(idx), "shots": n,
                         "generated": task_accuracy(layout, layout.unflatten(flat[b], len(idx)), test, idx),
                         "chance": 100.0 / len(idx)})
        cos = float(np.mean([tables[n][i] @ text[i] / np.linalg.norm(text[i]) for i in used]))
        summary[str(n)] = {kind: float(np.mean([r["generated"] for r in rows if r["shots"] == n and r["kind"] == kind]))
                           if any(r["shots"] == n and r["kind"] == kind for r in rows) else float("nan")
                           for kind in ("id", "ood")} | {"cosine_to_text": cos}
    return {"shots": list(shots), "encoder": enc.name, "random_weights": enc.pretrained is None,
            "examples_from": "train split", "embed_seconds": embed_secs, "tasks": rows, "summary": summary}


def image_prompt_report_lines(ip: dict, text_summary: dict) -> list[str]:
    """The report.md table: text-prompt rows beside image-prompt rows, per n."""
    lines = ["", "Image prompts: each class prompted by n example images from the train split (CLIP image "
             "embeddings, L2-normalised, averaged, re-normalised) instead of its name; same tasks, sampler "
             f"and seed as the text rows. Encoder {ip['encoder']}.", ""]
    if ip.get("random_weights"):
        lines += ["Note: these CLIP weights are random, so image and text embeddings share no meaning and the "
                  "image rows should sit near chance; real figures need pretrained CLIP weights.", ""]
    lines += ["| prompt | ID generated | OOD generated | cos(image, text) |", "|---|---|---|---|",
              f"| text (class names) | {text_summary['id']['generated']:.1f} | {text_summary['ood']['generated']:.1f} | 1.000 |"]
    for n, r in ip["summary"].items():
        lines.append(f"| images, n={n} | {r['id']:.1f} | {r['ood']:.1f} | {r['cosine_to_text']:.3f} |")
    return lines


# ------------------------------------------------------------------------------ baselines report

KIND_TITLES = {"id": "ID tasks (seen classes, unseen combinations)",
               "ood": "OOD tasks (1-2 held-out classes; recall = the held-out classes' own images)",
               "gloss": "Held-out classes described by their WordNet definition (gloss)",
               "phrasing": "Seen classes named by a synonym kept out of training (recall = that class)",
               "phrasing-names": "The same tasks as 'phrasing' under the class names"}


def compare_report_lines(summary: dict) -> list[str]:
    """Markdown tables: per kind, accuracy and probe recall per method with SE, and the paired
    difference Tina − method (± paired SE [cluster SE by probe class])."""
    from tina_edge.train.evaluation.stats import format_diff

    def ms(d):
        return f"{d['mean']:.1f} ± {d['se']:.1f}" if d and np.isfinite(d.get("se", np.nan)) else (
            f"{d['mean']:.1f}" if d else "—")

    lines = []
    for kind, s in summary.items():
        has_rec = bool(s["recall"])
        lines += ["", f"### {KIND_TITLES.get(kind, kind)} — {s['n']} tasks", ""]
        head = "| method | accuracy | Tina − method (acc) |" + (" probe recall | Tina − method (recall) |" if has_rec else "")
        lines += [head, "|---" * (head.count("|") - 1) + "|"]
        for m in s["methods"]:
            row = f"| {m} | {ms(s['acc'].get(m))} | {format_diff(s['diff_acc'].get(m, {}))} |"
            if has_rec:
                row += f" {ms(s['recall'].get(m))} | {format_diff(s['diff_recall'].get(m, {}))} |"
            lines.append(row)
        if "vs_names" in s:
            lines += ["", "Described / named (same tasks, same images): " + "; ".join(
                f"{m} {v['described']:.1f}/{v['named']:.1f} = {v['ratio']:.2f}" for m, v in s["vs_names"].items()
                if m != "chance")]
    for kind in ("ood", "gloss", "phrasing"):
        if kind in summary and "recall_per_k" in summary[kind]:
            s = summary[kind]
            ms_ = [m for m in s["methods"]]
            lines += ["", f"### Probe recall by prompt size k ({kind})", "", "| k | tasks | " + " | ".join(ms_) + " |",
                      "|---" * (len(ms_) + 2) + "|"]
            for band, d in s["recall_per_k"].items():
                lines.append(f"| {band} | {d['n']} | " + " | ".join(f"{d[m]:.1f}" if m in d else "—" for m in ms_) + " |")
    if "ood" in summary and "recall_per_class" in summary["ood"]:
        s = summary["ood"]
        ms_ = [m for m in s["methods"] if m != "chance"]
        lines += ["", "### Held-out recall per class (OOD tasks)", "", "| class | " + " | ".join(ms_) + " |",
                  "|---" * (len(ms_) + 1) + "|"]
        for c, d in s["recall_per_class"].items():
            lines.append(f"| {c} | " + " | ".join(f"{d[m]:.0f}" if m in d else "—" for m in ms_) + " |")
    return lines


def write_compare_report(result: dict, out_dir: str | Path, title: str = "Tina vs baselines") -> Path:
    """compare.json + report.md + baselines.png (held-out recall and ID accuracy per method, ± SE)."""
    s = result["summary"]
    lines = [f"# {title}", "", "Differences are paired per task (same tasks, same images): mean ± paired SE "
             "[SE over held-out classes]; positive = Tina better.", *result.get("notes", [])]
    lines += compare_report_lines(s) + ["", "![baselines](baselines.png)", ""]

    def draw(plt):
        panels = [(k, "recall" if s[k]["recall"] else "acc") for k in ("ood", "id", "gloss", "phrasing") if k in s]
        fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4), squeeze=False)
        for ax, (kind, metric) in zip(axes[0], panels):
            d = s[kind][metric]
            ms_ = [m for m in s[kind]["methods"] if m in d]
            ax.bar(range(len(ms_)), [d[m]["mean"] for m in ms_], yerr=[np.nan_to_num(d[m]["se"]) for m in ms_],
                   color=["C3" if m == "generated" else "C0" for m in ms_])
            ax.set_xticks(range(len(ms_)), ms_, rotation=60, ha="right")
            ax.set_title(f"{kind}: {'probe recall' if metric == 'recall' else 'accuracy'} (%)")
            ax.grid(axis="y", alpha=0.3)
        return fig

    return _write_report_files(out_dir, result, "compare.json", lines, "baselines.png", draw)
