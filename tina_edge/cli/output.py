"""Output for the edge commands: JSON on stdout, escaped human lines on stderr, byte sizes, and the
one policy for every path a command writes (`check_outputs`).

Shared by personalize, predict, info, evaluate, convert and export so every command prints, and
refuses an output path, the same way.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import click

from ..runtime.errors import ModelFileError
from .safe_text import json_text, safe


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _echo_json(obj, **kw) -> None:
    """Strict JSON on stdout: readable UTF-8; control, format and undecodable characters \\u-escaped;
    non-finite numbers as null."""
    click.echo(json_text(obj, **kw))


def _echo(*lines: str) -> None:
    """Human-readable lines on stderr, each escaped (labels and paths come from strangers)."""
    for line in lines:
        click.echo(safe(line), err=True)


# ------------------------------------------------------------------ the one output policy (issue 20)


@dataclass(frozen=True)
class Output:
    """One path a command will write: `what` names it for the user ("-o", "--plot", "the trunk.onnx beside -o")."""

    raw: str | os.PathLike  # as the user typed it ("out/" keeps its slash)
    what: str
    kind: str = "file"  # "file": replaced as a whole; "dir": a directory made (or, with --force, replaced)
    may_exist: bool = False  # an existing file here is the command's to judge (a shared trunk reused when identical)

    @property
    def path(self) -> Path:
        return Path(self.raw)


def _real(p: Path) -> Path:
    """The path with every symlink resolved (the final component too when it exists)."""
    try:
        return Path(os.path.realpath(p))
    except (OSError, ValueError) as e:  # ValueError: an embedded NUL
        raise ModelFileError(f"cannot use the path {str(p)!r:.200}: {getattr(e, 'strerror', None) or e}") from None


def _inside(p: Path, d: Path) -> bool:
    return p == d or d in p.parents


def _same_file(a: Path, b: Path) -> bool:
    """Both exist and are one file (a hard link, a symlink, another spelling)."""
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def _twins(target: Path, roots: Sequence[Path], limit: int = 100_000) -> Path | None:
    """A file under roots that is the same inode as target (only looked for when target has other hard links)."""
    try:
        st = os.stat(target)
    except OSError:
        return None
    if st.st_nlink < 2:
        return None
    seen = 0
    for root in roots:
        if not root.is_dir():
            continue
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                seen += 1
                if seen > limit:
                    return None
                p = Path(dirpath) / name
                if _same_file(p, target):
                    return p
    return None


def _check_shape(o: Output, force: bool) -> None:
    """A file output names a file (not a directory), in an existing directory; an existing one only with --force."""
    text = os.fspath(o.raw)
    if o.kind == "file" and (not text or text.endswith(("/", os.sep)) or o.path.name in ("", ".", "..")):
        raise ModelFileError(f"{o.what} {text!r} names a directory; give a file path such as model.onnx")
    try:
        exists = o.path.exists() or o.path.is_symlink()
        is_dir = o.path.is_dir()
        parent_ok = o.path.parent.is_dir()
    except (OSError, ValueError) as e:
        raise ModelFileError(f"cannot write {text!r}: {getattr(e, 'strerror', None) or e}") from None
    if o.kind == "file" and is_dir:
        raise ModelFileError(f"cannot write {o.path}: it is a directory; give a file path such as {o.path / 'model.onnx'}")
    if o.kind == "dir" and exists and not is_dir:
        raise ModelFileError(f"cannot write the directory {o.path}: a file of that name exists")
    if exists and not (force or o.may_exist):
        raise ModelFileError(f"{o.path} already exists; choose another path or pass --force to overwrite it")
    if not parent_ok:
        raise ModelFileError(f"cannot write {o.path}: the directory {o.path.parent} does not exist")


def _package_dir() -> Path:
    from .. import __file__ as pkg_init

    return _real(Path(pkg_init).parent)


def check_outputs(outputs: Sequence[Output], *, force: bool, reads: Sequence[tuple] = ()) -> None:
    """The output policy of every command that writes, before any work: raise ModelFileError unless

    - each path has the right shape (a file path, its directory exists; an existing file only with --force);
    - no path is inside the installed tina-edge package (its embedded bundle, its code) or holds it;
    - no path is, or is inside, anything the command reads (`reads`: (path, what[, whole_tree]) e.g. the
      model, the photo folder): --force replaces outputs, never inputs (hard links and symlinks too); with
      whole_tree False (a bundle directory) only its existing files are refused, a new file beside them is not;
    - no two outputs are one file.
    The writes themselves go through runtime/atomic.py (AtomicFiles for several files at once).
    """
    protected = [(_package_dir(), "the installed tina-edge package", True)]
    protected += [(_real(Path(r[0])), r[1], r[2] if len(r) > 2 else True) for r in reads]
    for o in outputs:
        _check_shape(o, force)
        real = _real(o.path)
        exists = o.path.exists() or o.path.is_symlink()
        for src, what, whole in protected:
            if (_inside(real, src) and (whole or exists)) or _same_file(o.path, src):
                if not src.is_dir():
                    where = what
                elif exists:
                    where = f"a file of {what}"
                else:
                    where = f"inside {what}"
                raise ModelFileError(f"{o.what} {o.path} is {where} ({src}); --force replaces outputs, never what "
                                     "the command reads or installs: choose another path")
            if o.kind == "dir" and _inside(src, real):  # replacing it (--force) would delete the input
                raise ModelFileError(f"{o.what} {o.path} holds {what} ({src}); choose a directory that holds nothing "
                                     "the command reads")
        twin = _twins(o.path, [src for src, _, _ in protected if src.is_dir()])
        if twin is not None:
            raise ModelFileError(f"{o.what} {o.path} is a hard link to {twin}, which this command reads or installs; "
                                 "choose another path")
    for i, a in enumerate(outputs):
        for b in outputs[i + 1:]:
            if _real(a.path) == _real(b.path) or _same_file(a.path, b.path):
                raise ModelFileError(f"{a.what} and {b.what} both name {b.path}; give each output its own file")


def bundle_reads(bundle: str | os.PathLike | None) -> list[tuple[Path, str]]:
    """The bundle a command reads, as a `reads` entry of check_outputs (the embedded one lies inside the
    package, which check_outputs always protects)."""
    if bundle is None:
        return []
    b = Path(bundle)
    return [(b, "the bundle in use", False) if b.is_dir() else (b, "a file of the bundle in use")]
