"""`tina-edge evaluate MODEL DIR`: accuracy, per-class recall and confusion on labelled photos.

Torch-free like the other edge commands. matplotlib (for --plot only) is not a runtime
dependency: a runtime install stays numpy + onnxruntime; --plot says how to get it.
"""

from __future__ import annotations

import io
from pathlib import Path

import click

from ..runtime.errors import InstallError


def _note(msg: str) -> None:
    from .safe_text import safe

    click.echo(safe(msg), err=True)  # folder and file names come from strangers (issue 9)


def _report_left_out(data) -> None:
    """Tell the user what in DIR was not used, so nothing is silently ignored."""
    if data.unmatched_folders:
        _note(f"note: {len(data.unmatched_folders)} folder(s) match no label and were not used: "
              + ", ".join(data.unmatched_folders[:20]) + (" ..." if len(data.unmatched_folders) > 20 else ""))
    if data.missing_labels:
        _note("note: no folder for label(s): " + ", ".join(data.missing_labels))
    if data.skipped_files:
        _note(f"note: {len(data.skipped_files)} file(s) are not images in class folders (by suffix) and were "
              f"not used, e.g. {data.skipped_files[0]}")
    if data.unusable:
        from ..runtime.evaluation import describe_unusable

        _note("note: " + describe_unusable(data.unusable) + "; the accuracy counts only the images that were read")


def _pyplot():
    """matplotlib.pyplot on the file-only Agg backend, or one line saying how to install it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InstallError(
            '--plot needs matplotlib, which the runtime install leaves out: pip install matplotlib '
            '(or pip install "tina-edge[plot]")'
        ) from None
    return plt


def plot_confusion(ev, path: Path, *, overwrite: bool = False) -> Path:
    """Write the row-normalised confusion matrix (counts in the cells) as a PNG, atomically."""
    from ..runtime.atomic import atomic_write_bytes

    plt = _pyplot()

    cm = ev.confusion
    rows = cm.sum(axis=1, keepdims=True).clip(min=1)
    k, c = cm.shape
    fig, ax = plt.subplots(figsize=(1.2 + 0.55 * c, 1.0 + 0.5 * k), dpi=120)
    ax.imshow(cm / rows, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(c):
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=8,
                    color="white" if cm[i, j] / rows[i, 0] > 0.5 else "black")
    ax.set_xticks(range(c), ev.columns, rotation=45, ha="right")
    ax.set_yticks(range(k), ev.labels)
    ax.set_xlabel("answer")
    ax.set_ylabel("true class")
    ax.set_title(f"accuracy {ev.accuracy:.3f} on {ev.n} images")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue(), overwrite=overwrite)


@click.command("evaluate")
@click.argument("model", type=click.Path(path_type=Path))
@click.argument("directory", metavar="DIR", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print {accuracy, per_class, confusion, labels, n, ...} as JSON.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the confusion matrix as a PNG (needs matplotlib).")
@click.option("--min-prob", type=click.FloatRange(0, 1), default=None,
              help="Answer 'unknown' below this top probability (counted as wrong; an extra confusion column).")
@click.option("--batch-size", type=click.IntRange(1, None), default=256, show_default=True,
              help="Images decoded and classified at once (bounds memory).")
@click.option("--threads", type=click.IntRange(1, 1024), default=None, help="onnxruntime intra-op threads.")
@click.option("--force", is_flag=True, help="Overwrite an existing --plot file.")
def evaluate(model, directory, as_json, plot, min_prob, batch_size, threads, force=False):
    """Check MODEL on DIR, which holds one folder of photos per class.

    Folders match the model's labels as class names do (case, width, whitespace, '_' and '-' are
    ignored); folders that match no label, and entries that cannot be read, are reported and not
    used. Prints accuracy, per-class recall and the confusion matrix (a progress bar on a terminal).
    --plot never replaces the model, a photo or an existing file (that one only with --force).
    """
    from ..runtime.classifier import PersonalizedClassifier
    from ..runtime.evaluation import evaluate as run_evaluation
    from ..runtime.evaluation import labelled_images

    from .output import Output, _echo_json, check_outputs

    if plot is not None:
        _pyplot()  # fail before the work, not after it
    clf = PersonalizedClassifier.load(model, threads=threads)
    if plot is not None:  # never over the model, its trunk, a photo, or the installation
        reads = [(Path(model), "the model"), (Path(directory), "the photo folder")]
        if clf.is_head:
            reads.append((Path(model).parent / "trunk.onnx", "the model's trunk"))
        check_outputs([Output(plot, "--plot")], force=force, reads=reads)
    data = labelled_images(directory, clf.labels)
    _report_left_out(data)
    ev = run_evaluation(clf, data, min_prob=min_prob, batch_size=batch_size)
    if plot is not None:
        plot_confusion(ev, plot, overwrite=force)
        _note(f"wrote {plot}")
    if as_json:
        _echo_json(ev.to_dict())
    else:
        from .safe_text import safe

        click.echo("\n".join(safe(line) for line in ev.format_text().splitlines()))  # labels escaped (issue 9)
