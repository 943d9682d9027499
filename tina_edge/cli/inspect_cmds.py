"""Edge commands, inspect family: `predict` (run a personalized model) and `info` (a bundle's manifest).

Torch-free (imports tina_edge.runtime only); registered in `runtime_cmds.COMMANDS`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .output import _echo, _echo_json, _fmt_bytes
from .safe_text import safe


@click.command("predict")
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--top", type=click.IntRange(1, None), default=1, show_default=True, help="Show the K most probable labels.")
@click.option("--min-prob", type=click.FloatRange(0, 1), default=None,
              help="Answer 'unknown' when the top probability is below P (an image of none of the classes).")
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=256, show_default=True,
              help="Decode and classify this many images at a time (bounds memory for big folders).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
@click.option("--trunk", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Trunk for a head-only MODEL (default: trunk.onnx beside it).")
def predict(model, images, top, min_prob, batch_size, as_json, trunk):
    """Classify IMAGES (files or directories, walked recursively) with a personalized MODEL (.onnx,
    standalone or head-only).

    One line per file: its path, then the answer (with --min-prob) and the --top labels.
    """
    from ..runtime.classifier import PersonalizedClassifier
    from ..runtime.evaluation import describe_unusable, expand_paths

    clf = PersonalizedClassifier.load(model, trunk=trunk)
    files, skipped, unusable = expand_paths(list(images))  # class folders included; only image suffixes in folders
    if skipped:
        _echo(f"note: {len(skipped)} file(s) without an image suffix were not used, e.g. {skipped[0]}")
    if unusable:
        _echo("note: " + describe_unusable(unusable))
    rows = _predict_rows(clf, files, top, batch_size, min_prob)
    if as_json:
        _echo_json(list(rows))  # printed only when every image succeeded: always one valid JSON document
        return
    for row in rows:
        click.echo(_predict_line(row, min_prob is not None))


def _predict_rows(clf, images: list, top: int, batch_size: int, min_prob: float | None):
    """One dict per image, batch by batch (only one batch of decoded images in memory)."""
    from tqdm import tqdm

    with tqdm(total=len(images), unit="img", disable=not sys.stderr.isatty(), file=sys.stderr, leave=False) as bar:
        for names, pred in clf.iter_predict(images, batch_size=batch_size, min_prob=min_prob):
            bar.update(len(names))
            yield from _rows(clf, names, pred, top)


def _rows(clf, names: list[str], pred, top: int):
    """The rows of one batch: answer, its probability and the top-K labels of every image."""
    tops = clf.top(pred, top)
    conf = pred.confidence
    for i, n in enumerate(names):
        yield {"image": n, "label": pred.labels[i], "probability": float(conf[i]),
               "top": [{"label": lab, "probability": pr} for lab, pr in tops[i]]}


def _predict_line(row: dict, with_answer: bool) -> str:
    """IMAGE<TAB>[ANSWER<TAB>]LABEL PROB..., names and labels escaped (one line per image, always)."""
    answer = f"{safe(row['label'])}\t" if with_answer else ""
    return f"{safe(row['image'])}\t{answer}" + "\t".join(f"{safe(t['label'])} {t['probability']:.3f}" for t in row["top"])


def _flat(d, prefix=""):
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _flat(v, f"{prefix}{k}." if not isinstance(v, dict) or v else f"{prefix}{k}")
    else:
        yield prefix.rstrip("."), d


@click.command("info")
@click.argument("bundle_arg", metavar="[BUNDLE]", required=False, type=click.Path(path_type=Path))
@click.option("--bundle", "bundle_opt", type=click.Path(path_type=Path), default=None,
              help="Bundle directory or archive (default: the embedded one); BUNDLE alone is the same.")
@click.option("--json", "as_json", is_flag=True, help="Print the verified manifest as JSON.")
@click.option("--verbose", "-v", is_flag=True, help="Print every evaluation figure (per k too).")
@click.option("--expect-bundle-id", default=None, metavar="ID", help="Fail unless the bundle's content id is ID.")
def info(bundle_arg, bundle_opt, as_json, verbose, expect_bundle_id):
    """Verify a bundle (default: the embedded one) and summarise its manifest."""
    from ..runtime.bundle import open_bundle

    if bundle_arg is not None and bundle_opt is not None and bundle_arg != bundle_opt:
        raise click.UsageError(f"two bundles given ({bundle_arg} and --bundle {bundle_opt}); pass one")
    bundle = bundle_opt if bundle_opt is not None else bundle_arg
    b = open_bundle(bundle, expected_id=expect_bundle_id)
    m = b.manifest
    table = _name_table_summary(b, m)
    b.close()
    if as_json:
        _echo_json(m.to_dict(), indent=2)
        return
    from ..runtime.groups import max_classes

    te, dif, den, tm = m.text_encoder, m.diffusion, m.denoiser, m.template
    i = tm.input
    out = [
        f"bundle      {b.source}  (id {m.bundle_id}, schema {m.schema_version}, producer {m.producer or '?'})",
        f"encoder     {te.kind} {te.name}: {te.embedding_dim}-d, max {te.max_tokens} tokens, cleaning {te.cleaning}",
        f"classes     2 to {max_classes(den.k_max)} (K_max {den.k_max}; more in groups of at most {den.k_max})",
        f"generated   {den.param_count:,} parameters",
        f"template    {tm.name}: image {i.dtype} [N, {i.height}, {i.width}, {i.channels}] {i.layout}, mean {i.mean}, std {i.std}",
    ]
    out += [f"              {t.name} {t.shape}" + (f" (class axis {t.class_axis})" if t.class_axis is not None else "") for t in tm.layout]
    out.append(
        f"sampler     {dif.default_sampler}, {dif.default_steps} steps by default; T={dif.num_train_timesteps}, "
        f"{dif.beta_schedule} betas {dif.beta_start:g}..{dif.beta_end:g}, predicts x0"
    )
    port = m.portable
    if port.generate_model:  # docs/PORTABLE.md: what JS and mobile ports use
        nz = port.noise or {}
        out.append(f"portable    {port.generate_model} (ddim {len(port.generate_timesteps)} steps), {port.template_inputs_model}, "
                   f"{port.tokenizer_config}; noise {nz.get('generator')} v{nz.get('version')}"
                   + ("; ORT format" if port.ort else ""))
        if port.prior_model:  # the text prior's own graph, run once per personalize (export/portable/prior_split.py)
            out.append(f"prior       {port.prior_model}: the text prior, once per personalize ({m.denoiser.model} reads its rows)")
        if port.prior_only:  # convert --prior-only (export/portable/prior_only.py): the correction is zero
            out.append("generator   the text prior alone (no denoiser step; seed and noise change nothing)")
    out.append("files")
    out += [f"              {n:<24} {_fmt_bytes(int(e.get('bytes', 0))):>10}  sha256 {str(e.get('sha256'))[:12]}" for n, e in sorted(m.files.items())]
    tr, ev = m.training.to_dict(), m.evaluation.to_dict()  # every key, those this version does not know too
    for key, label in (("datasets", "datasets"), ("holdout_classes", "holdout"), ("holdout", "holdout")):
        if tr.get(key) is not None:
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
    out += _text_prior_lines(tr.get("text_prior"))
    if te.senses:  # runtime/senses.py (issue 22)
        out.append(f"senses      {te.senses}: ambiguous names read in their most frequent visible WordNet sense or the "
                   "one the other names point to; choose one with a qualifier, e.g. \"mouse (rodent)\"")
    if te.name_table:  # runtime/name_table.py (issue 22 item 3)
        out.append(f"name table  {te.name_table}: names outside the vocabulary that WordNet lists as visible nouns are read "
                   "as a larger text encoder reads them (precomputed); other words go through the text encoder")
        out.append(f"              {table}")
    if ev and not verbose and _eval_table(ev):
        out.append("evaluation  test accuracy % on held-out tasks (mean); --verbose prints every figure")
        out += _eval_table(ev)
    elif ev:
        out.append("evaluation")
        out += [f"              {k}: {v}" for k, v in _flat(ev)]
    else:
        out.append("evaluation  (none recorded)")
    if ev and port.prior_only:  # the record is training's, of the generator before its correction was zeroed
        out.append("            (measured at training, with the denoiser's correction; this bundle runs the text prior "
                   "alone, which BENCHMARKS.md §15 and §21 measured on the same tasks)")
    click.echo("\n".join(safe(line) for line in out))  # manifest strings may hold escape sequences


def _name_table_summary(b, m) -> str | None:
    """One line on the bundle's name table (runtime/name_table.py): its size, its aliases, whether it names
    the prior graph it was solved against; or why the runtime refuses it."""
    if not m.text_encoder.name_table:
        return None
    from ..runtime.errors import BundleError
    from ..runtime.name_table import load_name_table

    try:
        t = load_name_table(b, m)
    except BundleError as e:
        return f"refused by the runtime: {e}"
    solved = ("solved against this bundle's prior graph (sha256 checked)" if t.source.get("prior_sha256")
              else "the prior graph it was solved against is not recorded")
    return f"{len(t):,} nouns, {len(t.aliases)} read as vocabulary names (WordNet synonyms); {solved}"


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


def _text_prior_lines(tp) -> list[str]:
    """What the generator leans on for names it never saw (BENCHMARKS.md §12), when it has a text prior."""
    if not isinstance(tp, dict) or not tp.get("kind"):
        return []
    src = f"{tp.get('seen_classes', '?')} seen classes"
    if tp.get("imagenet"):
        src += f" + {tp.get('imagenet_classes', '?')} ImageNet classes ({tp.get('imagenet_texts', '?')} names and definitions; " \
               f"{len(tp.get('imagenet_dropped_for_holdout') or [])} dropped for the holdout)"
    lam = tp.get("lambda")
    lam = f", lambda {lam:.1f}" if isinstance(lam, (int, float)) else ""
    how = "ridge"
    if tp.get("map") == "kernel":  # BENCHMARKS.md §13; priors written before the kernel map have no "map"
        how = f"kernel ridge (one key per class, gamma {tp.get('gamma', '?')})"
    return [f"text prior  calibrated {how} text->row over {src}{lam}"
            + ("; the generator returns the prior alone" if tp.get("prior_only") else "")]
