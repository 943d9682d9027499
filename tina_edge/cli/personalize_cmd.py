"""Edge commands, personalize family: `personalize` (one model or a --batch FILE of prompts).

Torch-free (imports tina_edge.runtime only); registered in `runtime_cmds.COMMANDS`.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import click

from ..runtime.errors import ModelFileError, PromptError, UnknownClassError
from ..runtime.novelty import reads_as_line
from ..runtime.samplers import SAMPLERS
from .output import Output, _echo, _echo_json, bundle_reads, check_outputs


MAX_BATCH_FILE_BYTES = 16 << 20  # personalize --batch FILE

def _reads(bundle, batch_file=None, images: dict[str, list[str]] | None = None, folders=None,
           classes_file: Path | None = None) -> list[tuple[Path, str]]:
    """What personalize reads, which no output may replace: the bundle (the embedded one is inside the
    package, which check_outputs always protects), the --batch file, the --images files and folders."""
    out = bundle_reads(bundle)
    if batch_file is not None:
        out.append((Path(batch_file), "the --batch prompt file"))
    if classes_file is not None:
        out.append((Path(classes_file), "the --classes-file"))
    for files in (images or {}).values():
        out += [(Path(f), "an --images example") for f in files]
    if folders is not None:
        out.append((Path(folders), "the --from-folders folder"))
    return out


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
@click.option("--classes-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="FILE with one class name per line ('#' lines and blank lines ignored) instead of CLASSES: "
                   "long class lists (up to 1000 classes).")
@click.option("--bundle", type=click.Path(path_type=Path), default=None, help="Bundle directory or archive (default: the embedded one).")
@click.option("--expect-bundle-id", default=None, metavar="ID",
              help="Refuse any bundle whose content id (see `tina-edge info`) is not ID: pin the bundle you shipped.")
@click.option("--steps", type=int, default=None, help="Sampling steps (default: the bundle's; DDPM: all T).")
@click.option("--sampler", type=click.Choice(SAMPLERS, case_sensitive=False), default=None, help="Sampler (default: the bundle's).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed; same seed, same model bytes.")
@click.option("--candidates", type=int, default=1, show_default=True, help="Sample C models at once, keep the consensus one.")
@click.option("--describe", multiple=True, metavar="NAME=TEXT", help="Encode TEXT instead of NAME for that class (repeatable).")
@click.option("--images", multiple=True, metavar="NAME=IMG[,IMG...]",
              help="Example photos (files or folders) of class NAME, also listed in CLASSES (repeatable). Trunk "
                   "bundles (the default): 1-20 photos fused with the name; CLIP bundles: they replace the name.")
@click.option("--from-folders", "from_folders", type=click.Path(path_type=Path), default=None, metavar="DIR",
              help="Classes and photos from DIR's sub-folders (one per class, named by its label: the layout "
                   "`evaluate` reads); trunk bundles only.")
@click.option("--photos-only", is_flag=True,
              help="Labels of classes given photos are only labels ('Rex', 'product 7'): build them from photos alone.")
@click.option("--force", is_flag=True, help="Overwrite existing output files (never an input or a bundle file).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
@click.option("--threads", type=click.IntRange(1, 1024), default=None, help="onnxruntime intra-op threads.")
@click.option("--head", "head_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the portable head JSON (labels + generated tensors + bundle id; docs/PORTABLE.md).")
@click.option("--head-only", is_flag=True,
              help="Write only the k x (D+1) head (features -> logits, labels) and the shared trunk.onnx beside "
                   "it (reused when it is this bundle's; trunk bundles only); predict finds the trunk there.")
def personalize(classes, output, batch_file, classes_file, bundle, expect_bundle_id, steps, sampler, seed, candidates,
                describe, images, force, as_json, threads, head_file=None, head_only=False, from_folders=None,
                photos_only=False):
    """Generate a classifier for CLASSES ("dog, cat, horse" or dog cat horse) and write it to -o.

    Each class is prompted by its name, by --describe text, or by --images example photos, in any
    mix; the labels follow CLASSES. On trunk bundles (the default) photos join the name (or, with
    --photos-only, stand alone); --from-folders DIR takes classes and photos from DIR's sub-folders.
    --batch FILE makes one model per line of FILE with the same bundle sessions.
    """
    from ..runtime.personalizer import Personalizer
    from ..runtime.prompt import parse_classes

    if batch_file is not None:
        if classes or describe or images or from_folders:
            raise PromptError("--batch takes its prompts from FILE; leave out CLASSES, --describe, --images and --from-folders")
        if classes_file is not None:
            raise PromptError("--batch and --classes-file both name classes; use one of them")
        _personalize_batch(batch_file, Path(output), bundle=bundle, steps=steps, sampler=sampler, seed=seed,
                           candidates=candidates, force=force, threads=threads, expected_id=expect_bundle_id)
        return
    t0 = time.perf_counter()
    if classes_file is not None:
        if classes:
            raise PromptError("--classes-file names the classes; leave out CLASSES (or drop --classes-file)")
        from ..runtime.prompt import classes_from_lines

        text = _read_prompt_file(classes_file, "one class name per line, e.g. 'dog'")
        try:
            classes = tuple(classes_from_lines(text))
        except PromptError as e:
            raise PromptError(f"{classes_file} {e}" if str(e).startswith("line ") else f"{classes_file}: {e}") from None
    if from_folders is not None:  # classes and photos from DIR (cli/photo_options.py)
        from .photo_options import folder_classes

        classes, image_prompts = folder_classes(from_folders, classes, _images_option(images))
    else:
        image_prompts = _images_option(images)
    if not classes:
        raise PromptError('name the classes, e.g. tina-edge personalize "dog, cat, horse" -o model.onnx (or use --batch FILE)')
    names = parse_classes(list(classes))  # CLASSES as one prompt: the labels, in order
    descriptions = _describe_option(describe)
    outs = [Output(output, "-o")]
    output = Path(output)
    if head_file is not None:
        outs.append(Output(Path(head_file), "--head"))
    if head_only:  # reused when it is already this bundle's trunk (checked once the trunk is known)
        outs.append(Output(output.parent / "trunk.onnx", "the trunk.onnx that --head-only writes beside -o", may_exist=True))
    check_outputs(outs, force=force, reads=_reads(bundle, images=image_prompts, folders=from_folders,
                                                  classes_file=classes_file))  # before any work
    p = Personalizer.from_bundle(bundle, threads=threads, expected_id=expect_bundle_id)
    t1 = time.perf_counter()
    try:
        clf = p.personalize(names, descriptions=descriptions, steps=steps, sampler=sampler,
                            seed=seed, candidates=candidates, images=image_prompts, photos_only=photos_only)
    except UnknownClassError as e:
        raise _in_option_words(e) from None
    t2 = time.perf_counter()
    written = _save_outputs(clf, output, head_file, force=force, head_only=head_only)
    nov = p.novelty(names, descriptions=descriptions, model=clf)  # photos-only labels are not names: left out
    timings = {"milliseconds": (time.perf_counter() - t0) * 1000, "generate_milliseconds": (t2 - t1) * 1000}
    if as_json:
        _echo_json({"output": str(output), "written": [str(w) for w in written], "labels": clf.labels,
                    "seen": nov["seen"], "new": nov["new"],
                    "nearest_known": nov["nearest"], "confusable": nov["confusable"], **clf.meta.sampler,
                    "image_prompts": clf.meta.image_prompts or {}, "built_from": nov["built_from"],
                    "names": nov.get("names", []),  # per name: the sense it was read in, its warning (issue 22)
                    "prior_only": p.manifest.portable.prior_only,  # no denoiser step ran: seed and steps changed nothing
                    "bundle_id": p.manifest.bundle_id,
                    **{k: round(v, 1) for k, v in timings.items()}})
    else:
        _report(output, clf, nov, p.manifest.bundle_id, timings, written, p.manifest.portable.prior_only)


def _save_outputs(clf, output: Path, head_file: Path | None, *, force: bool, head_only: bool) -> list[Path]:
    """model.onnx (or its head-only form, plus the trunk.onnx beside it) and the optional head JSON,
    committed as one unit: all of them, or none (runtime/atomic.py AtomicFiles)."""
    from ..runtime.atomic import AtomicFiles

    with AtomicFiles(overwrite=force) as unit:
        unit.add(output, clf.model_bytes(head_only=head_only))
        if head_only:
            trunk, data = output.parent / "trunk.onnx", clf.trunk_bytes()
            if not _same_bytes(trunk, data):
                if (trunk.exists() or trunk.is_symlink()) and not force:
                    raise ModelFileError(f"{trunk} is not the trunk of this bundle (another bundle's, or changed); "
                                         "pass --force to replace it, or write the head into another directory")
                unit.add(trunk, data)
        if head_file is not None:
            from ..runtime.portable import head_bytes

            unit.add(head_file, head_bytes(clf))
        targets = unit.targets
    return targets


def _same_bytes(path: Path, data: bytes) -> bool:
    """Whether path is a regular file holding exactly data (read only when the sizes agree)."""
    import stat

    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size != len(data):
            return False
        return path.read_bytes() == data
    except OSError:
        return False


def _report(output: Path, clf, nov: dict, bundle_id: str, timings: dict[str, float], written: list[Path],
            prior_only: bool = False) -> None:
    """The human summary on stderr: labels, image prompts, novelty, sampler and timings."""
    by_images = clf.meta.image_prompts or {}
    s = clf.meta.sampler
    _echo(f"wrote {output}: {len(clf.labels)} classes, labels in this order: {', '.join(clf.labels)}")
    if len(written) > 1:
        _echo("  also wrote " + ", ".join(str(w) for w in written[1:]))
    if by_images:
        _echo("  prompted by images: " + ", ".join(f"{n} ({c})" for n, c in by_images.items()))
        _echo("  built from: " + "; ".join(f"{n}: {how}" for n, how in nov["built_from"].items()))
    if nov["seen"]:
        _echo(f"  seen in training:  {', '.join(nov['seen'])}")
    if nov["new"]:
        _echo(f"  new (not in training vocabulary, expect lower accuracy): {', '.join(nov['new'])}")
    for n, near in nov["nearest"].items():  # runtime/novelty.py: what the generator will lean on
        _echo(f"  '{n}' is new; nearest known names: " + ", ".join(f"{m} ({c:.2f})" for m, c in near))
    for item in nov.get("names", []):  # runtime/senses.py: the sense an ambiguous name was read in (issue 22)
        if item.get("sense"):
            sense = item["sense"]
            _echo(f"  '{item['name']}' is read as {sense['sense']} ({sense['how']}); {sense['choose']}")
        if item.get("reads_as"):
            _echo(f"  {reads_as_line(item['name'], item['reads_as'])}")
        if item.get("warning"):
            _echo(f"  warning: '{item['name']}': {item['warning']}")
    for a, b, c in nov["confusable"]:
        _echo(f"  warning: '{a}' and '{b}' are close in meaning (cosine {c:.2f}); their classes may be confused")
    how = ("the text prior alone (no denoiser step; seed and candidates change nothing)" if prior_only  # portable.prior.only
           else f"{s['sampler']} {s['steps']} steps, seed {s['seed']}, {s['candidates']} candidate(s)")
    _echo(
        f"  {how}, "
        f"bundle {bundle_id}; generated in {timings['generate_milliseconds']:.0f} ms ({timings['milliseconds']:.0f} ms in all)"
    )


# ----------------------------------------------------------------- personalize --batch (issue 14)


def _slug(names: list[str]) -> str:
    """A file-name-safe, short form of a class list ("Sea lion, cat" -> "sea_lion-cat")."""
    import re

    from ..runtime.prompt import class_key

    text = "-".join(re.sub(r"[^a-z0-9]+", "_", class_key(n)).strip("_") or "x" for n in names)
    return text[:60].rstrip("-_") or "model"


def _read_prompt_file(path: Path, layout: str) -> str:
    """The UTF-8 text of a --batch or --classes-file FILE (a regular file of at most 16 MiB)."""
    try:
        if not path.is_file():  # a FIFO or device would block or stream forever
            raise PromptError(f"{path} is not a regular file; write {layout} in a text file")
        if path.stat().st_size > MAX_BATCH_FILE_BYTES:
            raise PromptError(f"{path} is larger than {MAX_BATCH_FILE_BYTES >> 20} MiB; split it into several files")
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise PromptError(f"{path} is not UTF-8 text; write {layout}") from None
    except OSError as e:
        raise PromptError(f"cannot read {path}: {e.strerror}") from None


def read_batch_prompts(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line number, prompt text, class names) of every prompt line; blank and '#' lines skipped.

    All lines are checked before any model is made, so a bad line 40 costs nothing.
    """
    from ..runtime.prompt import parse_classes

    text = _read_prompt_file(path, "one prompt per line, e.g. 'dog, cat, horse'")
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
    from ..runtime.atomic import AtomicFiles
    from ..runtime.personalizer import Personalizer
    from ..runtime.prompt import check_class_count

    t0 = time.perf_counter()
    prompts = read_batch_prompts(batch_file)
    if out_dir.exists() and not out_dir.is_dir():
        raise ModelFileError(f"with --batch, -o names a directory for the models; {out_dir} is a file")
    if not out_dir.parent.is_dir():
        raise ModelFileError(f"cannot write into {out_dir}: the directory {out_dir.parent} does not exist")
    targets = [out_dir / f"{i:03d}-{_slug(names)}.onnx" for i, (_, _, names) in enumerate(prompts, 1)]
    made_dir = not out_dir.exists()  # a new directory is checked as a whole; in an existing one, each model
    outs = ([Output(out_dir, "with --batch, -o", kind="dir")] if made_dir
            else [Output(t, f"the model of line {no}") for t, (no, _, _) in zip(targets, prompts)])
    check_outputs(outs, force=force, reads=_reads(bundle, batch_file=batch_file))
    p = Personalizer.from_bundle(bundle, threads=threads, expected_id=expected_id)
    for no, _, names in prompts:
        try:
            check_class_count(names, p.manifest.k_max)
        except PromptError as e:
            raise PromptError(f"{batch_file} line {no}: {e}") from None
    out_dir.mkdir(exist_ok=True)
    models = []
    try:  # all the models appear together at the end, or none (an interruption leaves nothing behind)
        with AtomicFiles(overwrite=force) as unit:
            for (no, prompt, names), target in zip(prompts, targets):
                t1 = time.perf_counter()
                clf = p.personalize(names, steps=steps, sampler=sampler, seed=seed, candidates=candidates)
                unit.add(target, clf.to_bytes())
                nov = p.novelty(names)
                models.append({"line": no, "prompt": prompt, "output": str(target), "labels": clf.labels,
                               "seen": nov["seen"], "new": nov["new"],
                               "milliseconds": round((time.perf_counter() - t1) * 1000, 1)})
    except BaseException:
        if made_dir:
            with contextlib.suppress(OSError):
                out_dir.rmdir()  # only if still empty
        raise
    for m in models:
        _echo(f"wrote {m['output']}: {', '.join(m['labels'])}")
    s = clf.meta.sampler
    _echo_json({
        "count": len(models), "output_dir": str(out_dir), "bundle_id": p.manifest.bundle_id,
        "sampler": s["sampler"], "steps": s["steps"], "seed": s["seed"], "candidates": s["candidates"],
        "milliseconds": round((time.perf_counter() - t0) * 1000, 1), "models": models,
    })
