"""Checking a personalized classifier on labelled photos: DIR/<class>/**/*.jpg -> accuracy, recall, confusion.

Why here and not in train/: a user checks the model they just made on their own photos, on the
device, with the runtime only (numpy + onnxruntime, no torch). The predictions come from
`PersonalizedClassifier.predict` itself, so an evaluation's accuracy is exactly what `predict`'s
answers give on the same files.

Folder rules (shared with `tina-edge predict` on directories):
- A directory is walked recursively, in sorted order; hidden files and folders (".name") are skipped.
- Nothing else disappears silently: an unreadable folder, a broken link, a link loop, a pipe or device
  (even one named .jpg, which is never opened) is listed in `unusable` with the reason, and the CLI
  says so; symbolic links to folders are followed once.
- Inside a walked directory only files with an image suffix (IMAGE_SUFFIXES, any case) are used;
  other files (`*_boxes.txt`, `README`, ...) are skipped and counted, never silently read as images.
  A file named explicitly is always used, whatever its suffix.
- Class folders match the model's labels by class identity (`prompt.class_key`: case, width, whitespace,
  "_" and "-" ignored: "Sea_Lion" = "sea lion"); a model with two labels of one identity is refused; folders that match no label are reported and not used, labels
  without a folder are reported and get no recall.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from .classifier import UNKNOWN, Prediction, check_min_prob
from .errors import DatasetError, ImageError
from .prompt import class_key

if TYPE_CHECKING:
    from .classifier import PersonalizedClassifier

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
"""Suffixes taken from walked directories: the raster formats users keep photos in."""


# ------------------------------------------------------------------------------- image folders


class FolderWalk(NamedTuple):
    """What a walk found: images, other regular files (no image suffix), and entries that could not be
    used at all with the reason (an unreadable folder, a broken link, a link loop, a pipe or device)."""

    images: list[Path]
    other: list[Path]
    unusable: list[tuple[Path, str]]


def _unusable_reason(e: OSError) -> str:
    if e.errno == errno.ELOOP:
        return "a symbolic link loop"
    if e.errno == errno.ENOENT:
        return "a broken symbolic link"
    return f"cannot be read ({e.strerror or e})"


def walk_images(root: str | os.PathLike) -> FolderWalk:
    """Everything under root, recursively, in sorted order (a folder's files, then its sub-folders),
    hidden entries left out. Nothing is dropped silently: entries that cannot be used are listed with
    the reason. Only stat() is called, never open(), so a FIFO named .jpg cannot block the walk; symbolic
    links to folders are followed once (a loop or a second link to a folder already walked is reported)."""
    out = FolderWalk([], [], [])
    root = Path(root)
    try:
        st = os.stat(root)
    except OSError as e:
        out.unusable.append((root, _unusable_reason(e)))
        return out
    visited = {(st.st_dev, st.st_ino)}
    stack: list[tuple[Path, frozenset]] = [(root, frozenset(visited))]
    while stack:
        d, ancestors = stack.pop()
        try:
            names = sorted(os.listdir(d))
        except OSError as e:
            out.unusable.append((d, f"a folder that cannot be listed ({e.strerror or e})"))
            continue
        subdirs: list[tuple[Path, frozenset]] = []
        for name in names:
            if name.startswith("."):
                continue
            p = d / name
            try:
                st = os.stat(p)
            except OSError as e:
                out.unusable.append((p, _unusable_reason(e)))
                continue
            key = (st.st_dev, st.st_ino)
            if stat.S_ISDIR(st.st_mode):
                if key in ancestors:
                    out.unusable.append((p, "a symbolic link loop (it leads back to a folder above it)"))
                elif key in visited:
                    out.unusable.append((p, "a second link to a folder already walked"))
                else:
                    visited.add(key)
                    subdirs.append((p, ancestors | {key}))
            elif stat.S_ISREG(st.st_mode):
                (out.images if p.suffix.lower() in IMAGE_SUFFIXES else out.other).append(p)
            else:
                out.unusable.append((p, "not a regular file (a pipe, socket or device)"))
        stack.extend(reversed(subdirs))
    return out


def expand_paths(paths: Sequence[str | os.PathLike]) -> FolderWalk:
    """Files as given plus the image files of every directory, recursively: (files, other files, unusable).

    A directory with no image file anywhere inside is an ImageError that says what it did hold.
    """
    out = FolderWalk([], [], [])
    for item in paths:
        p = Path(item)
        if not p.is_dir():
            out.images.append(p)  # existence and readability are checked by the image loader, per file
            continue
        found = walk_images(p)
        if found.unusable and found.unusable[0][0] == p:
            raise ImageError(f"directory {p} {found.unusable[0][1]}")
        if not found.images:
            what = f" (only {len(found.other)} other file(s), e.g. {found.other[0].name})" if found.other else ""
            if found.unusable:
                what += f" ({len(found.unusable)} unusable entr{'y' if len(found.unusable) == 1 else 'ies'}, e.g. " \
                        f"{found.unusable[0][0].name}: {found.unusable[0][1]})"
            raise ImageError(
                f"directory {p} holds no image files{what}; images need one of the suffixes "
                + ", ".join(sorted(IMAGE_SUFFIXES))
            )
        out.images.extend(found.images)
        out.other.extend(found.other)
        out.unusable.extend(found.unusable)
    return out


def describe_unusable(unusable: Sequence[tuple[Path, str]], shown: int = 5) -> str:
    """One line naming what was left out and why: 'N entries could not be used: a (why), b (why) ...'."""
    n = len(unusable)
    items = "; ".join(f"{p} ({why})" for p, why in unusable[:shown]) + (" ..." if n > shown else "")
    return f"{n} entr{'y' if n == 1 else 'ies'} could not be used and {'was' if n == 1 else 'were'} left out: {items}"


def folder_key(name: str) -> str:
    """How a class folder's name is compared with a label: class identity (prompt.class_key), the same
    rule that refuses "sea_lion, sea lion" as one class named twice."""
    return class_key(name)


@dataclass
class LabelledImages:
    """The images of DIR's class folders, with the index of each one's true label (prompt order)."""

    root: Path
    labels: list[str]
    files: list[Path]
    targets: np.ndarray
    folders: dict[str, str]  # label -> folder name used for it
    unmatched_folders: list[str] = field(default_factory=list)
    missing_labels: list[str] = field(default_factory=list)
    skipped_files: list[Path] = field(default_factory=list)
    unusable: list[tuple[Path, str]] = field(default_factory=list)  # (entry, why): never dropped silently


def _label_keys(labels: Sequence[str]) -> dict[str, int]:
    """folder_key -> label index; a model made elsewhere may name one class twice, which no folder could tell apart."""
    keys: dict[str, int] = {}
    for i, lab in enumerate(labels):
        j = keys.setdefault(folder_key(lab), i)
        if j != i:
            raise DatasetError(f"the model's labels {labels[j]!r} and {lab!r} are one class name (case, width, "
                               "spacing, '_' and '-' are ignored), so no folder can be matched to one of them; "
                               "evaluate a model whose labels are distinct")
    return keys


def _top_level(root: Path) -> tuple[list[Path], list[Path], list[tuple[Path, str]]]:
    """root's own entries, not recursed: (folders, loose regular files, unusable entries with the reason)."""
    folders: list[Path] = []
    loose: list[Path] = []
    unusable: list[tuple[Path, str]] = []
    try:
        children = sorted(root.iterdir())
    except OSError as e:
        raise DatasetError(f"cannot list {root}: {e.strerror or e}; pass a readable folder") from None
    for child in children:
        if child.name.startswith("."):
            continue
        try:
            mode = os.stat(child).st_mode
        except OSError as e:
            unusable.append((child, _unusable_reason(e)))
            continue
        if stat.S_ISDIR(mode):
            folders.append(child)
        elif stat.S_ISREG(mode):
            loose.append(child)
        else:
            unusable.append((child, "not a regular file (a pipe, socket or device)"))
    return folders, loose, unusable


def labelled_images(root: str | os.PathLike, labels: Sequence[str]) -> LabelledImages:
    """Match root's sub-folders to labels and list each matched folder's images (recursively)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root} is not a directory; pass a folder that holds one folder per class")
    keys = _label_keys(labels)
    matched: dict[int, Path] = {}
    unmatched: list[str] = []
    folders, loose, unusable = _top_level(root)
    for child in folders:
        i = keys.get(folder_key(child.name))
        if i is None:
            unmatched.append(child.name)
        elif i in matched:
            raise DatasetError(
                f"folders {matched[i].name!r} and {child.name!r} of {root} both match the label {labels[i]!r}; keep one"
            )
        else:
            matched[i] = child
    if not matched:
        seen = ", ".join(unmatched[:10]) + (" ..." if len(unmatched) > 10 else "") if unmatched else "none"
        raise DatasetError(
            f"no folder of {root} matches a label of the model ({', '.join(labels)}); folders found: {seen}. "
            "Pass the folder that holds one folder per class (e.g. DIR/test)"
        )
    files: list[Path] = []
    targets: list[int] = []
    skipped = list(loose)
    for i in sorted(matched):
        found = walk_images(matched[i])
        files.extend(found.images)
        targets.extend([i] * len(found.images))
        skipped.extend(found.other)
        unusable.extend(found.unusable)
    if not files:
        raise DatasetError(f"the class folders of {root} hold no image files (suffixes {', '.join(sorted(IMAGE_SUFFIXES))})")
    return LabelledImages(
        root=root, labels=list(labels), files=files, targets=np.asarray(targets, dtype=np.int64),
        folders={labels[i]: p.name for i, p in sorted(matched.items())}, unmatched_folders=unmatched,
        missing_labels=[lab for i, lab in enumerate(labels) if i not in matched], skipped_files=skipped,
        unusable=unusable,
    )


# --------------------------------------------------------------------------------- prediction


def predict_files(
    clf: PersonalizedClassifier,
    files: Sequence[str | os.PathLike],
    *,
    min_prob: float | None = None,
    batch_size: int = 256,
    progress: bool | None = None,
) -> Prediction:
    """`clf.iter_predict` over files in batches of batch_size (bounded memory), with a tqdm bar on a terminal.

    The answers are the classifier's own, batch by batch, concatenated in file order.
    """
    if not files:
        raise ImageError("no images were given")
    if progress is None:
        progress = sys.stderr.isatty()
    from tqdm import tqdm

    parts: list[Prediction] = []
    with tqdm(total=len(files), unit="img", disable=not progress, file=sys.stderr, leave=False) as bar:
        for _names, part in clf.iter_predict(list(files), batch_size=batch_size, min_prob=min_prob):
            parts.append(part)
            bar.update(len(part.labels))
    return Prediction(
        labels=[lab for p in parts for lab in p.labels],
        indices=np.concatenate([p.indices for p in parts]),
        probabilities=np.concatenate([p.probabilities for p in parts]),
    )


# --------------------------------------------------------------------------------- evaluation


@dataclass
class Evaluation:
    """Accuracy, per-class recall and the confusion matrix of one model on one labelled folder.

    confusion[i, j] counts images of labels[i] answered columns[j]; columns are the labels, plus
    UNKNOWN last when a min_prob was given. An "unknown" answer counts as wrong.
    """

    labels: list[str]
    columns: list[str]
    confusion: np.ndarray
    min_prob: float | None
    data: LabelledImages | None = None

    @property
    def n(self) -> int:
        return int(self.confusion.sum())

    @property
    def correct(self) -> int:
        k = len(self.labels)
        return int(np.trace(self.confusion[:, :k]))

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    @property
    def per_class(self) -> dict[str, float | None]:
        """Recall of every label (None for a label with no images)."""
        rows = self.confusion.sum(axis=1)
        return {lab: (float(self.confusion[i, i] / rows[i]) if rows[i] else None) for i, lab in enumerate(self.labels)}

    @property
    def unknown(self) -> int:
        """Images answered UNKNOWN (the extra last column; 0 without min_prob)."""
        return int(self.confusion[:, len(self.labels):].sum())

    def to_dict(self) -> dict[str, Any]:
        """The `--json` form: accuracy, per_class recall, confusion, labels, n (+ what was left out)."""
        d: dict[str, Any] = {
            "accuracy": self.accuracy, "per_class": self.per_class, "confusion": self.confusion.tolist(),
            "labels": list(self.labels), "columns": list(self.columns), "n": self.n,
            "min_prob": self.min_prob, "unknown": self.unknown,
        }
        if self.data is not None:
            d.update({
                "folders": self.data.folders, "unmatched_folders": self.data.unmatched_folders,
                "missing_labels": self.data.missing_labels, "skipped_files": len(self.data.skipped_files),
                "unusable": [{"path": str(p), "reason": why} for p, why in self.data.unusable],
            })
        return d

    def format_text(self) -> str:
        """Accuracy, a per-class recall table and the confusion matrix, for a terminal."""
        w = max(8, *(len(c) for c in self.columns))
        lines = [f"accuracy  {self.accuracy:.4f}  ({self.correct}/{self.n} images)"]
        if self.data is not None and self.data.unusable:
            lines.append(f"left out  {len(self.data.unusable)} entr{'y' if len(self.data.unusable) == 1 else 'ies'} "
                         "that could not be read (see the note above)")
        if self.min_prob is not None:
            lines.append(f"unknown   {self.unknown} image(s) below min_prob {self.min_prob:g} (counted as wrong)")
        lines.append("")
        lines.append(f"{'class':<{w}}  {'recall':>7}  {'images':>7}")
        rows = self.confusion.sum(axis=1)
        for i, lab in enumerate(self.labels):
            r = self.per_class[lab]
            lines.append(f"{lab:<{w}}  {('%.4f' % r) if r is not None else '-':>7}  {int(rows[i]):>7}")
        lines.append("")
        lines.append("confusion (rows: true class, columns: answer)")
        lines.append(f"{'':<{w}}  " + "  ".join(f"{c:>{w}}" for c in self.columns))
        for i, lab in enumerate(self.labels):
            lines.append(f"{lab:<{w}}  " + "  ".join(f"{int(v):>{w}}" for v in self.confusion[i]))
        return "\n".join(lines)


def confusion_matrix(targets: np.ndarray, indices: np.ndarray, k: int, with_unknown: bool) -> np.ndarray:
    """[k, k(+1)] counts of (true, answered) pairs; index -1 (unknown) goes to the extra last column."""
    cols = k + 1 if with_unknown else k
    answered = np.where(indices < 0, k, indices)
    m = np.zeros((k, cols), dtype=np.int64)
    np.add.at(m, (targets, answered), 1)
    return m


def evaluate(
    clf: PersonalizedClassifier,
    data: str | os.PathLike | LabelledImages,
    *,
    min_prob: float | None = None,
    batch_size: int = 256,
    progress: bool | None = None,
) -> Evaluation:
    """Evaluate clf on a folder of class folders (or an already listed LabelledImages)."""
    min_prob = check_min_prob(min_prob)
    if not isinstance(data, LabelledImages):
        data = labelled_images(data, clf.labels)
    pred = predict_files(clf, data.files, min_prob=min_prob, batch_size=batch_size, progress=progress)
    k = clf.k
    cm = confusion_matrix(data.targets, pred.indices, k, with_unknown=min_prob is not None)
    columns = list(clf.labels) + ([UNKNOWN] if min_prob is not None else [])
    return Evaluation(labels=list(clf.labels), columns=columns, confusion=cm, min_prob=min_prob, data=data)
