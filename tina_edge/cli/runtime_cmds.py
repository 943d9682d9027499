"""Edge commands: personalize, predict, info. Torch-free (imports tina_edge.runtime only)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from ..runtime.errors import ModelFileError, PromptError
from ..runtime.samplers import SAMPLERS


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _echo_json(obj) -> None:
    """JSON on stdout: readable UTF-8, or \\u escapes when a path holds undecodable bytes (surrogates)."""
    text = json.dumps(obj, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(obj, ensure_ascii=True)
    click.echo(text)


def _descriptions(names: list[str], describe: tuple[str, ...]) -> list[str | None] | None:
    """--describe "cat=a small domestic feline" -> one text (or None) per class, in prompt order."""
    if not describe:
        return None
    from ..runtime.prompt import class_key

    keys = {class_key(n): i for i, n in enumerate(names)}
    out: list[str | None] = [None] * len(names)
    for item in describe:
        name, sep, text = item.partition("=")
        if not sep or not name.strip():
            raise PromptError(f'--describe takes NAME=TEXT, e.g. --describe "cat=a small domestic feline"; got {item!r}')
        i = keys.get(class_key(name))
        if i is None:
            raise PromptError(f"--describe names {name.strip()!r}, which is not one of the classes ({', '.join(names)})")
        out[i] = text
    return out


def _image_prompts(names: list[str], images: tuple[str, ...]) -> dict[str, list[str]] | None:
    """--images "cat=a.jpg,b.jpg" (repeatable; repeats add images) -> {class name: [files]}.

    Every class named in --images must also be in CLASSES: the class list alone fixes the labels
    and their order, --images only says how a class is prompted. A directory counts all its images.
    """
    if not images:
        return None
    from ..runtime.prompt import class_key

    keys = {class_key(n): n for n in names}
    out: dict[str, list[str]] = {}
    for item in images:
        name, sep, files = item.partition("=")
        paths = [f.strip() for f in files.split(",") if f.strip()]
        if not sep or not name.strip() or not paths:
            raise PromptError(f"--images takes NAME=IMAGE[,IMAGE...], e.g. --images cat=cat1.jpg,cat2.jpg; got {item!r}")
        n = keys.get(class_key(name))
        if n is None:
            raise PromptError(
                f"--images names {name.strip()!r}, which is not one of the classes ({', '.join(names)}); "
                "name it in CLASSES too, where the label order is set"
            )
        out.setdefault(n, []).extend(paths)
    return out


@click.command("personalize")
@click.argument("classes", nargs=-1, required=True)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Where to write model.onnx.")
@click.option("--bundle", type=click.Path(path_type=Path), default=None, help="Bundle directory or archive (default: the embedded one).")
@click.option("--steps", type=int, default=None, help="Sampling steps (default: the bundle's; DDPM: all T).")
@click.option("--sampler", type=click.Choice(SAMPLERS, case_sensitive=False), default=None, help="Sampler (default: the bundle's).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed; same seed, same model bytes.")
@click.option("--candidates", type=int, default=1, show_default=True, help="Sample C models at once, keep the consensus one.")
@click.option("--describe", multiple=True, metavar="NAME=TEXT", help="Encode TEXT instead of NAME for that class (repeatable).")
@click.option("--images", multiple=True, metavar="NAME=IMG[,IMG...]",
              help="Prompt class NAME (also listed in CLASSES) with example image files or directories instead of "
                   "its name; their CLIP image embeddings are averaged (repeatable; needs a CLIP bundle).")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
@click.option("--threads", type=click.IntRange(1, 1024), default=None, help="onnxruntime intra-op threads.")
@click.option("--head-only", is_flag=True,
              help="Write only the k x (D+1) head (features -> logits, labels) and, if absent, the shared "
                   "trunk.onnx beside it (trunk bundles only); predict finds the trunk there.")
def personalize(classes, output, bundle, steps, sampler, seed, candidates, describe, images, force, as_json, threads,
                head_only):
    """Generate a classifier for CLASSES ("dog, cat, horse" or dog cat horse) and write it to -o.

    Each class is prompted by its name, by --describe text, or by --images example pictures
    (CLIP bundles only), in any mix; the labels follow CLASSES.
    """
    from ..runtime.personalizer import Personalizer
    from ..runtime.prompt import check_class_count, parse_classes

    t0 = time.perf_counter()
    names = parse_classes(list(classes))
    descriptions = _descriptions(names, describe)
    image_prompts = _image_prompts(names, images)
    if (output.exists() or output.is_symlink()) and not force:
        raise ModelFileError(f"{output} already exists; choose another path or pass --force to overwrite it")
    if not output.parent.is_dir():
        raise ModelFileError(f"cannot write {output}: the directory {output.parent} does not exist")
    p = Personalizer.from_bundle(bundle, threads=threads)
    check_class_count(names, p.manifest.k_max)
    t1 = time.perf_counter()
    clf = p.personalize(names, descriptions=descriptions, steps=steps, sampler=sampler,
                        seed=seed, candidates=candidates, images=image_prompts)
    t2 = time.perf_counter()
    clf.save(output, overwrite=force, head_only=head_only)
    if head_only and not (output.parent / "trunk.onnx").exists():
        clf.save_trunk(output.parent / "trunk.onnx")
    nov = p.novelty(names, descriptions=descriptions)
    s = json.loads(clf.metadata["sampler"])
    by_images = json.loads(clf.metadata.get("image_prompts", "{}"))
    ms_total, ms_gen = (time.perf_counter() - t0) * 1000, (t2 - t1) * 1000
    if as_json:
        _echo_json({
            "output": str(output), "labels": clf.labels, "seen": nov["seen"], "new": nov["new"],
            "nearest_known": nov["nearest"], "confusable": nov["confusable"],
            "sampler": s["sampler"], "steps": s["steps"], "seed": s["seed"], "candidates": s["candidates"],
            "image_prompts": by_images,
            "bundle_id": p.manifest.bundle_id, "milliseconds": round(ms_total, 1),
            "generate_milliseconds": round(ms_gen, 1),
        })
        return
    click.echo(f"wrote {output}: {len(clf.labels)} classes, labels in this order: {', '.join(clf.labels)}", err=True)
    if by_images:
        click.echo("  prompted by images: " + ", ".join(f"{n} ({c})" for n, c in by_images.items()), err=True)
    if nov["seen"]:
        click.echo(f"  seen in training:  {', '.join(nov['seen'])}", err=True)
    if nov["new"]:
        click.echo(f"  new (not in training vocabulary, expect lower accuracy): {', '.join(nov['new'])}", err=True)
    for n, near in nov["nearest"].items():  # runtime/novelty.py: what the generator will lean on
        click.echo(f"  '{n}' is new; nearest known names: " + ", ".join(f"{m} ({c:.2f})" for m, c in near), err=True)
    for a, b, c in nov["confusable"]:
        click.echo(f"  warning: '{a}' and '{b}' are close in meaning (cosine {c:.2f}); their classes may be confused",
                   err=True)
    click.echo(
        f"  {s['sampler']} {s['steps']} steps, seed {s['seed']}, {s['candidates']} candidate(s), "
        f"bundle {p.manifest.bundle_id}; generated in {ms_gen:.0f} ms ({ms_total:.0f} ms in all)",
        err=True,
    )


@click.command("predict")
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--top", type=click.IntRange(1, None), default=1, show_default=True, help="Show the K most probable labels.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
@click.option("--trunk", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Trunk for a head-only MODEL (default: trunk.onnx beside it).")
def predict(model, images, top, as_json, trunk):
    """Classify IMAGES (files or directories) with a personalized MODEL (.onnx, standalone or head-only)."""
    from ..runtime.classifier import PersonalizedClassifier
    from ..runtime.images import image_names

    clf = PersonalizedClassifier.load(model, trunk=trunk)
    names = image_names(list(images))
    pred = clf.predict(list(images))
    tops = clf.top(pred, top)
    if as_json:
        _echo_json([
            {"image": n, "label": pred.labels[i], "probability": float(pred.probabilities[i, pred.indices[i]]),
             "top": [{"label": lab, "probability": pr} for lab, pr in tops[i]]}
            for i, n in enumerate(names)
        ])
        return
    for n, row in zip(names, tops):
        click.echo(f"{n}\t" + "\t".join(f"{lab} {pr:.3f}" for lab, pr in row))


def _flat(d, prefix=""):
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _flat(v, f"{prefix}{k}." if not isinstance(v, dict) or v else f"{prefix}{k}")
    else:
        yield prefix.rstrip("."), d


@click.command("info")
@click.argument("bundle", required=False, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the verified manifest as JSON.")
@click.option("--verbose", "-v", is_flag=True, help="Print every evaluation figure (per k too).")
def info(bundle, as_json, verbose):
    """Verify a bundle (default: the embedded one) and summarise its manifest."""
    from ..runtime.bundle import open_bundle

    b = open_bundle(bundle)
    m = b.manifest
    if as_json:
        click.echo(json.dumps(m.to_dict(), indent=2, ensure_ascii=False))
        return
    te, dif, den, tm = m.text_encoder, m.diffusion, m.denoiser, m.template
    i = tm.input
    out = [
        f"bundle      {b.source}  (id {m.bundle_id}, schema {m.schema_version}, producer {m.producer or '?'})",
        f"encoder     {te.kind} {te.name}: {te.embedding_dim}-d, max {te.max_tokens} tokens, cleaning {te.cleaning}",
        f"classes     2 to {den.k_max} (K_max {den.k_max})",
        f"generated   {den.param_count:,} parameters",
        f"template    {tm.name}: image {i.dtype} [N, {i.height}, {i.width}, {i.channels}] {i.layout}, mean {i.mean}, std {i.std}",
    ]
    out += [f"              {t.name} {t.shape}" + (f" (class axis {t.class_axis})" if t.class_axis is not None else "") for t in tm.layout]
    out.append(
        f"sampler     {dif.default_sampler}, {dif.default_steps} steps by default; T={dif.num_train_timesteps}, "
        f"{dif.beta_schedule} betas {dif.beta_start:g}..{dif.beta_end:g}, predicts x0"
    )
    out.append("files")
    out += [f"              {n:<24} {_fmt_bytes(int(e.get('bytes', 0))):>10}  sha256 {str(e.get('sha256'))[:12]}" for n, e in sorted(m.files.items())]
    tr = m.training
    for key, label in (("datasets", "datasets"), ("holdout_classes", "holdout"), ("holdout", "holdout")):
        if key in tr:
            v = tr[key]
            out.append(f"{label:<11} {', '.join(map(str, v)) if isinstance(v, list) else v}")
    zoo = tr.get("zoo")
    if isinstance(zoo, dict) and "count" in zoo:
        acc = zoo.get("mean_accuracy")
        out.append(f"zoo         {zoo['count']} fine-tuned p-models" + (f", mean accuracy {acc:.1f}%" if isinstance(acc, (int, float)) else ""))
    voc = m.vocabulary
    if voc:
        more = f" ... (+{len(voc) - 30})" if len(voc) > 30 else ""
        out.append(f"vocabulary  {len(voc)} classes: {', '.join(map(str, voc[:30]))}{more}")
    if m.evaluation and not verbose and _eval_table(m.evaluation):
        out.append("evaluation  test accuracy % on held-out tasks (mean); --verbose prints every figure")
        out += _eval_table(m.evaluation)
    elif m.evaluation:
        out.append("evaluation")
        out += [f"              {k}: {v}" for k, v in _flat(m.evaluation)]
    else:
        out.append("evaluation  (none recorded)")
    click.echo("\n".join(out))


def _eval_table(ev: dict) -> list[str]:
    """ID / OOD / OOD-per-class rows of generated vs fine-tuned vs selection vs chance."""
    methods = ("generated", "fine-tuned", "selection", "chance")
    rows = [("ID tasks", ev.get("id")), ("OOD tasks", ev.get("ood"))]
    rows.append(("held-out recall", ev.get("holdout_recall")))  # on the held-out classes' own images
    per_class = ev.get("holdout_recall_per_class")
    if isinstance(per_class, dict) and per_class:  # each held-out class's recall on its own photos
        rows += [(f"  recall {c}"[:30], r) for c, r in sorted(per_class.items(), key=lambda cr: -cr[1].get("generated", 0))]
    else:
        rows += [(f"OOD {c}", r) for c, r in (ev.get("ood_per_class") or {}).items()]
    rows = [(n, r) for n, r in rows if isinstance(r, dict) and all(isinstance(r.get(k), (int, float)) for k in methods)]
    if not rows:
        return []
    wd = max(18, *(len(n) for n, _ in rows))
    lines = [f"              {'':<{wd}}" + "".join(f"{k:>12}" for k in methods)]
    for name, r in rows:
        lines.append(f"              {name:<{wd}}" + "".join(f"{r[k]:>12.1f}" for k in methods))
    return lines


COMMANDS = [personalize, predict, info]
