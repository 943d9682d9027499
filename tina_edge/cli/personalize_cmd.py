"""Edge commands, personalize family: `personalize` (one model or a --batch FILE of prompts).

Torch-free (imports tina_edge.runtime only); registered in `runtime_cmds.COMMANDS`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import click

from ..runtime.errors import ModelFileError, PromptError, UnknownClassError
from ..runtime.samplers import SAMPLERS
from .output import _echo, _echo_json


MAX_BATCH_FILE_BYTES = 16 << 20  # personalize --batch FILE

def _output_path(output: str, force: bool) -> Path:
    """-o must name a file: no trailing slash, not a directory; an existing file only with --force."""
    if not output or output.endswith(("/", os.sep)) or Path(output).name in ("", ".", ".."):
        raise ModelFileError(f"-o {output!r} names a directory; give a file path such as model.onnx")
    p = Path(output)
    try:
        exists = p.exists() or p.is_symlink()
        if p.is_dir():
            raise ModelFileError(f"cannot write {p}: it is a directory; give a file path such as {p / 'model.onnx'}")
        parent_ok = p.parent.is_dir()
    except (OSError, ValueError) as e:
        raise ModelFileError(f"cannot write {output!r}: {getattr(e, 'strerror', None) or e}") from None
    if exists and not force:
        raise ModelFileError(f"{p} already exists; choose another path or pass --force to overwrite it")
    if not parent_ok:
        raise ModelFileError(f"cannot write {p}: the directory {p.parent} does not exist")
    return p


def _refuse_bundle_files(output: Path, bundle) -> None:
    """Even with --force, -o may not replace a file of the bundle in use (its manifest, a graph, the archive)."""
    try:
        st = os.lstat(output)
    except OSError:
        return  # nothing there yet: nothing of the bundle can be replaced
    mine = (st.st_dev, st.st_ino)
    names = [*bundle.manifest.files, "manifest.json"]
    candidates = [(n, bundle.root / n) for n in names] + [(str(bundle.source), bundle.source)]
    for name, path in candidates:
        try:
            other = os.lstat(path)
        except OSError:
            continue
        if (other.st_dev, other.st_ino) == mine:
            raise ModelFileError(f"{output} is a file of the bundle in use ({name}); choose another output path "
                                 "(--force never replaces a bundle's own files)")


def _describe_option(describe: tuple[str, ...]) -> dict[str, str] | None:
    """--describe "cat=a small domestic feline" (repeatable) -> {name: text}, for Personalizer.personalize.

    Only the option's syntax is checked here; the personalizer matches the names to the classes.
    Repeats for one class (case and spacing ignored, as everywhere) keep the last text.
    """
    if not describe:
        return None
    from ..runtime.prompt import class_key

    out: dict[str, tuple[str, str]] = {}
    for item in describe:
        name, sep, text = item.partition("=")
        if not sep or not name.strip():
            raise PromptError(f'--describe takes NAME=TEXT, e.g. --describe "cat=a small domestic feline"; got {item!r}')
        out[class_key(name)] = (name.strip(), text)
    return dict(out.values())


def _images_option(images: tuple[str, ...]) -> dict[str, list[str]] | None:
    """--images "cat=a.jpg,b.jpg" (repeatable; repeats for one class add images) -> {name: [files]}.

    Every class named in --images must also be in CLASSES (the personalizer checks it): the class
    list alone fixes the labels and their order. A directory counts all its images.
    """
    if not images:
        return None
    from ..runtime.prompt import class_key

    out: dict[str, tuple[str, list[str]]] = {}
    for item in images:
        name, sep, files = item.partition("=")
        paths = [f.strip() for f in files.split(",") if f.strip()]
        if not sep or not name.strip() or not paths:
            raise PromptError(f"--images takes NAME=IMAGE[,IMAGE...], e.g. --images cat=cat1.jpg,cat2.jpg; got {item!r}")
        out.setdefault(class_key(name), (name.strip(), []))[1].extend(paths)
    return dict(out.values())


def _in_option_words(e: UnknownClassError) -> PromptError:
    """The personalizer's unknown-class error, worded for the option that named the class."""
    listed = ", ".join(e.classes)
    if e.source == "images":
        return PromptError(f"--images names {str(e.name).strip()!r}, which is not one of the classes ({listed}); "
                           "name it in CLASSES too, where the label order is set")
    return PromptError(f"--describe names {str(e.name).strip()!r}, which is not one of the classes ({listed})")


@click.command("personalize")
@click.argument("classes", nargs=-1, required=False)
@click.option("-o", "--output", required=True, type=str,
              help="Where to write model.onnx (with --batch: the directory for the models).")
@click.option("--batch", "batch_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="FILE with one prompt per line: one model each, into the -o directory; prints a JSON summary.")
@click.option("--bundle", type=click.Path(path_type=Path), default=None, help="Bundle directory or archive (default: the embedded one).")
@click.option("--expect-bundle-id", default=None, metavar="ID",
              help="Refuse any bundle whose content id (see `tina-edge info`) is not ID: pin the bundle you shipped.")
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
@click.option("--head", "head_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the portable head JSON (labels + generated tensors + bundle id; docs/PORTABLE.md).")
@click.option("--head-only", is_flag=True,
              help="Write only the k x (D+1) head (features -> logits, labels) and, if absent, the shared "
                   "trunk.onnx beside it (trunk bundles only); predict finds the trunk there.")
def personalize(classes, output, batch_file, bundle, expect_bundle_id, steps, sampler, seed, candidates, describe, images,
                force, as_json, threads, head_file=None, head_only=False):
    """Generate a classifier for CLASSES ("dog, cat, horse" or dog cat horse) and write it to -o.

    Each class is prompted by its name, by --describe text, or by --images example pictures
    (CLIP bundles only), in any mix; the labels follow CLASSES. --batch FILE makes one model per
    line of FILE with the same bundle sessions.
    """
    from ..runtime.personalizer import Personalizer
    from ..runtime.prompt import parse_classes

    if batch_file is not None:
        if classes or describe or images:
            raise PromptError("--batch takes its prompts from FILE; leave out CLASSES, --describe and --images")
        _personalize_batch(batch_file, Path(output), bundle=bundle, steps=steps, sampler=sampler, seed=seed,
                           candidates=candidates, force=force, threads=threads, expected_id=expect_bundle_id)
        return
    if not classes:
        raise PromptError('name the classes, e.g. tina-edge personalize "dog, cat, horse" -o model.onnx (or use --batch FILE)')
    t0 = time.perf_counter()
    names = parse_classes(list(classes))  # CLASSES as one prompt: the labels, in order
    descriptions, image_prompts = _describe_option(describe), _images_option(images)
    output = _output_path(output, force)
    head_file = _output_path(str(head_file), force) if head_file is not None else None  # checked before any work
    p = Personalizer.from_bundle(bundle, threads=threads, expected_id=expect_bundle_id)
    for target in (output, head_file):
        if target is not None:
            _refuse_bundle_files(target, p.bundle)
    t1 = time.perf_counter()
    try:
        clf = p.personalize(names, descriptions=descriptions, steps=steps, sampler=sampler,
                            seed=seed, candidates=candidates, images=image_prompts)
    except UnknownClassError as e:
        raise _in_option_words(e) from None
    t2 = time.perf_counter()
    _save_outputs(clf, output, head_file, force=force, head_only=head_only)
    nov = p.novelty(names, descriptions=descriptions)
    timings = {"milliseconds": (time.perf_counter() - t0) * 1000, "generate_milliseconds": (t2 - t1) * 1000}
    if as_json:
        _echo_json({"output": str(output), "labels": clf.labels, "seen": nov["seen"], "new": nov["new"],
                    "nearest_known": nov["nearest"], "confusable": nov["confusable"], **clf.meta.sampler,
                    "image_prompts": clf.meta.image_prompts or {}, "bundle_id": p.manifest.bundle_id,
                    **{k: round(v, 1) for k, v in timings.items()}})
    else:
        _report(output, clf, nov, p.manifest.bundle_id, timings)


def _save_outputs(clf, output: Path, head_file: Path | None, *, force: bool, head_only: bool) -> None:
    """model.onnx (or its head-only form, plus trunk.onnx beside it if absent) and the optional head JSON."""
    clf.save(output, overwrite=force, head_only=head_only)
    if head_only and not (output.parent / "trunk.onnx").exists():
        clf.save_trunk(output.parent / "trunk.onnx")
    if head_file is not None:
        from ..runtime.portable import save_head

        save_head(clf, head_file, overwrite=force)


def _report(output: Path, clf, nov: dict, bundle_id: str, timings: dict[str, float]) -> None:
    """The human summary on stderr: labels, image prompts, novelty, sampler and timings."""
    by_images = clf.meta.image_prompts or {}
    s = clf.meta.sampler
    _echo(f"wrote {output}: {len(clf.labels)} classes, labels in this order: {', '.join(clf.labels)}")
    if by_images:
        _echo("  prompted by images: " + ", ".join(f"{n} ({c})" for n, c in by_images.items()))
    if nov["seen"]:
        _echo(f"  seen in training:  {', '.join(nov['seen'])}")
    if nov["new"]:
        _echo(f"  new (not in training vocabulary, expect lower accuracy): {', '.join(nov['new'])}")
    for n, near in nov["nearest"].items():  # runtime/novelty.py: what the generator will lean on
        _echo(f"  '{n}' is new; nearest known names: " + ", ".join(f"{m} ({c:.2f})" for m, c in near))
    for a, b, c in nov["confusable"]:
        _echo(f"  warning: '{a}' and '{b}' are close in meaning (cosine {c:.2f}); their classes may be confused")
    _echo(
        f"  {s['sampler']} {s['steps']} steps, seed {s['seed']}, {s['candidates']} candidate(s), "
        f"bundle {bundle_id}; generated in {timings['generate_milliseconds']:.0f} ms ({timings['milliseconds']:.0f} ms in all)"
    )


# ----------------------------------------------------------------- personalize --batch (issue 14)


def _slug(names: list[str]) -> str:
    """A file-name-safe, short form of a class list ("Sea lion, cat" -> "sea_lion-cat")."""
    import re

    from ..runtime.prompt import class_key

    text = "-".join(re.sub(r"[^a-z0-9]+", "_", class_key(n)).strip("_") or "x" for n in names)
    return text[:60].rstrip("-_") or "model"


def read_batch_prompts(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line number, prompt text, class names) of every prompt line; blank and '#' lines skipped.

    All lines are checked before any model is made, so a bad line 40 costs nothing.
    """
    from ..runtime.prompt import parse_classes

    try:
        if not path.is_file():  # a FIFO or device would block or stream forever
            raise PromptError(f"{path} is not a regular file; write one prompt per line in a text file")
        if path.stat().st_size > MAX_BATCH_FILE_BYTES:
            raise PromptError(f"{path} is larger than {MAX_BATCH_FILE_BYTES >> 20} MiB; split the prompts into several files")
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise PromptError(f"{path} is not UTF-8 text; write one prompt per line, e.g. 'dog, cat, horse'") from None
    except OSError as e:
        raise PromptError(f"cannot read {path}: {e.strerror}") from None
    out = []
    for no, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            out.append((no, line.strip(), parse_classes(line)))
        except PromptError as e:
            raise PromptError(f"{path} line {no}: {e}") from None
    if not out:
        raise PromptError(f"{path} holds no prompt; write one per line, e.g. 'dog, cat, horse'")
    return out


def _personalize_batch(batch_file: Path, out_dir: Path, *, bundle, steps, sampler, seed, candidates, force, threads,
                       expected_id: str | None = None) -> None:
    """One model per prompt line, all from one Personalizer (sessions made once), JSON summary on stdout."""
    from ..runtime.personalizer import Personalizer
    from ..runtime.prompt import check_class_count

    t0 = time.perf_counter()
    prompts = read_batch_prompts(batch_file)
    if out_dir.exists() and not out_dir.is_dir():
        raise ModelFileError(f"with --batch, -o names a directory for the models; {out_dir} is a file")
    if not out_dir.parent.is_dir():
        raise ModelFileError(f"cannot write into {out_dir}: the directory {out_dir.parent} does not exist")
    p = Personalizer.from_bundle(bundle, threads=threads, expected_id=expected_id)
    targets = []
    for i, (no, _, names) in enumerate(prompts, 1):
        try:
            check_class_count(names, p.manifest.k_max)
        except PromptError as e:
            raise PromptError(f"{batch_file} line {no}: {e}") from None
        targets.append(out_dir / f"{i:03d}-{_slug(names)}.onnx")
    for t in targets:
        _refuse_bundle_files(t, p.bundle)
    clash = [t for t in targets if t.exists() or t.is_symlink()]
    if clash and not force:
        raise ModelFileError(f"{clash[0]} already exists ({len(clash)} of the outputs do); pass --force to overwrite them")
    out_dir.mkdir(exist_ok=True)
    models = []
    for (no, prompt, names), target in zip(prompts, targets):
        t1 = time.perf_counter()
        clf = p.personalize(names, steps=steps, sampler=sampler, seed=seed, candidates=candidates)
        clf.save(target, overwrite=force)
        nov = p.novelty(names)
        models.append({"line": no, "prompt": prompt, "output": str(target), "labels": clf.labels,
                       "seen": nov["seen"], "new": nov["new"], "milliseconds": round((time.perf_counter() - t1) * 1000, 1)})
        _echo(f"wrote {target}: {', '.join(clf.labels)}")
    s = clf.meta.sampler
    _echo_json({
        "count": len(models), "output_dir": str(out_dir), "bundle_id": p.manifest.bundle_id,
        "sampler": s["sampler"], "steps": s["steps"], "seed": s["seed"], "candidates": s["candidates"],
        "milliseconds": round((time.perf_counter() - t0) * 1000, 1), "models": models,
    })
