"""Write files and directories so that a reader sees either the old content or the complete new one.

A temp sibling (same directory, hence same filesystem) is written and fsynced, then renamed over
the target. Any exception — OSError such as ENOSPC, KeyboardInterrupt — removes the temp and
leaves an existing target untouched.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import ModelFileError


def _umask() -> int:
    """The process umask without changing it (os.umask would race with other threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_NAME_MAX = 255  # bytes of one file name on Linux/macOS filesystems


def _tmp_prefix(name: str) -> str:
    """'.NAME.' for the temp sibling, with NAME cut so that the temp name (prefix + 8 random
    characters + '.tmp' or '.old') still fits NAME_MAX when the target name itself does."""
    raw = os.fsencode(name)
    room = _NAME_MAX - len(b"..") - 8 - len(b".tmp")
    if len(raw) > room:
        raw = raw[:room]
    return "." + os.fsdecode(raw) + "."


def _check_target(path: Path, overwrite: bool, kind: str) -> None:
    if not path.parent.is_dir():
        raise ModelFileError(f"cannot write {path}: the directory {path.parent} does not exist")
    if path.is_symlink() or path.exists():
        if not overwrite:
            raise ModelFileError(f"{path} already exists; choose another path or allow overwriting (--force)")
        if kind == "file" and path.is_dir():
            raise ModelFileError(f"cannot write {path}: it is a directory")
        if kind == "file" and not path.is_symlink() and not path.is_file():  # a rename would replace a device node
            raise ModelFileError(f"cannot write {path}: it is not a regular file (a device, pipe or socket); choose a file path")
        if kind == "dir" and not path.is_dir():
            raise ModelFileError(f"cannot write the directory {path}: a file of that name exists")


def _exists_error(path: Path) -> ModelFileError:
    return ModelFileError(f"{path} already exists; choose another path or allow overwriting (--force)")


def _write_temp(path: Path, data: bytes) -> Path:
    """data in a fsynced temp sibling of path (mode as a new file would get); the temp is removed on any error."""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=_tmp_prefix(path.name), suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        try:
            os.fchmod(fd, 0o666 & ~_umask())
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return tmp


def _link_or_rename(src: Path, dst: Path) -> bool:
    """Make dst name src's file without replacing an existing dst: link() (src stays, True), or on a
    filesystem without hard links a rename after an existence check (src is gone, False)."""
    try:  # link() fails if the target appeared meanwhile: no check-then-replace race
        os.link(src, dst)
        return True
    except FileExistsError:
        raise _exists_error(dst) from None
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS):
            raise
    if dst.exists() or dst.is_symlink():
        raise _exists_error(dst)
    os.replace(src, dst)
    return False


def _some(paths: list[Path], shown: int = 3) -> str:
    """'a, b, c and 7 more' for a message that must stay one readable line."""
    more = f" and {len(paths) - shown} more" if len(paths) > shown else ""
    return ", ".join(map(str, paths[:shown])) + more


class AtomicFiles:
    """Several files that appear as one unit: all of them new, or none (the old ones as they were).

    `add` writes each file to a fsynced temp sibling; `commit` then moves every temp into place,
    keeping a hard-linked backup of each file it replaces. Any failure (ENOSPC, EFBIG, SIGTERM as an
    exception, ...) before or during the commit removes the temps, deletes the files this unit
    created and puts the backups back: the caller may say "nothing was written". Use it as a context
    manager (commit on a clean exit, roll back on any exception) or call commit/discard yourself.
    """

    def __init__(self, *, overwrite: bool = False):
        self.overwrite = overwrite
        self._staged: list[tuple[Path, Path]] = []  # (temp, target)

    def __enter__(self) -> "AtomicFiles":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()

    @property
    def targets(self) -> list[Path]:
        return [t for _, t in self._staged]

    def add(self, path: str | os.PathLike, data: bytes) -> Path:
        """Stage `data` for `path` (checked now, written to a temp sibling now, in place at commit)."""
        path = Path(path)
        if path in self.targets:
            raise ModelFileError(f"{path} is named twice among the outputs; give each output its own path")
        _check_target(path, self.overwrite, "file")
        try:
            tmp = _write_temp(path, data)
        except BaseException as e:
            nothing = self._nothing()
            self.discard()
            if isinstance(e, OSError):
                raise ModelFileError(f"cannot write {path}: {e.strerror or e}; {nothing}") from e
            raise
        self._staged.append((tmp, path))
        return path

    def _nothing(self) -> str:
        if len(self._staged) < 1:
            return "nothing was written"
        return f"nothing was written (the outputs are written together: not {_some(self.targets)} either)"

    def discard(self) -> None:
        """Remove every staged temp (nothing of this unit is in place yet)."""
        for tmp, _ in self._staged:
            with contextlib.suppress(OSError):
                tmp.unlink()
        self._staged.clear()

    def commit(self) -> list[Path]:
        """Move every staged file into place, or none: on failure the unit is rolled back."""
        placed: list[tuple[Path, Path | None]] = []  # (target, backup of the file it replaced)
        targets = self.targets
        try:
            for tmp, path in self._staged:
                if self.overwrite and (path.exists() or path.is_symlink()):
                    backup = Path(tempfile.mktemp(dir=path.parent, prefix=_tmp_prefix(path.name), suffix=".old"))
                    _link_or_rename(path, backup)  # a hard link (the old file stays in place) or, failing that, a rename
                    placed.append((path, backup))
                    os.replace(tmp, path)
                elif self.overwrite:
                    placed.append((path, None))
                    os.replace(tmp, path)
                else:
                    if _link_or_rename(tmp, path):
                        tmp.unlink()
                    placed.append((path, None))
        except BaseException as e:
            left = self._roll_back(placed)
            self.discard()
            if left:
                raise ModelFileError(f"writing {_some(targets)} failed ({getattr(e, 'strerror', None) or e}) "
                                     f"and could not be undone: {'; '.join(left)}") from e
            if isinstance(e, OSError):
                raise ModelFileError(f"cannot write {_some(targets)}: {e.strerror or e}; "
                                     "nothing was written (existing files were left as they were)") from e
            raise
        for _, backup in placed:
            if backup is not None:
                with contextlib.suppress(OSError):
                    backup.unlink()
        for d in {p.parent for p in targets}:
            _fsync_dir(d)
        self._staged.clear()
        return targets

    @staticmethod
    def _roll_back(placed: list[tuple[Path, Path | None]]) -> list[str]:
        """Undo the renames of a failed commit, newest first; returns what could not be undone."""
        left = []
        for path, backup in reversed(placed):
            try:
                if backup is not None:
                    os.replace(backup, path)
                elif path.exists() or path.is_symlink():
                    path.unlink()
            except OSError as e:
                left.append(f"{path} is the new file ({e.strerror})" if backup is None
                            else f"{path} is the new file and the old one is in {backup} ({e.strerror})")
        return left


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, overwrite: bool = False) -> Path:
    """Write `data` to `path` atomically; refuse an existing file unless `overwrite`."""
    with AtomicFiles(overwrite=overwrite) as unit:
        unit.add(path, data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, *, overwrite: bool = True) -> Path:
    """UTF-8 text, atomically (work-directory files, reports, JSON); replaces by default."""
    return atomic_write_bytes(path, text.encode("utf-8"), overwrite=overwrite)


def atomic_write_json(path: str | os.PathLike, obj: Any, *, overwrite: bool = True, **dumps: Any) -> Path:
    """`json.dumps(obj, **dumps)` + newline, atomically."""
    return atomic_write_text(path, json.dumps(obj, **dumps) + "\n", overwrite=overwrite)


def npy_bytes(array: Any) -> bytes:
    """One numpy array as .npy bytes (no pickles): what atomic_save_npy writes, for writers that hash first."""
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return buf.getvalue()


def atomic_save_npy(path: str | os.PathLike, array: Any, *, overwrite: bool = True) -> Path:
    """One numpy array in .npy format (no pickles), atomically."""
    return atomic_write_bytes(path, npy_bytes(array), overwrite=overwrite)


def atomic_save_npz(path: str | os.PathLike, *, overwrite: bool = True, compressed: bool = False, **arrays: Any) -> Path:
    """Named numpy arrays in one .npz (no pickles), atomically; `path` is used as given (no suffix added)."""
    import numpy as np

    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return atomic_write_bytes(path, buf.getvalue(), overwrite=overwrite)


def atomic_save_figure(path: str | os.PathLike, fig: Any, *, overwrite: bool = True, **savefig: Any) -> Path:
    """A matplotlib figure, rendered in memory (format from the suffix), then written atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lstrip(".") or "png", **savefig)
    return atomic_write_bytes(path, buf.getvalue(), overwrite=overwrite)


def atomic_save_onnx(path: str | os.PathLike, model: Any, *, overwrite: bool = True) -> Path:
    """An onnx.ModelProto (weights inside, no external data), atomically: what `onnx.save` writes."""
    return atomic_write_bytes(path, model.SerializeToString(), overwrite=overwrite)


@contextlib.contextmanager
def atomic_output_dir(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temp sibling directory to fill; on success it becomes `path` in one rename.

    With `overwrite`, an existing directory is moved aside first and deleted after the swap (the
    only moment `path` is absent is between those two renames). On error the temp is deleted.
    """
    path = Path(path)
    _check_target(path, overwrite, "dir")
    try:
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=_tmp_prefix(path.name), suffix=".tmp"))
    except OSError as e:
        raise ModelFileError(f"cannot create {path}: {e.strerror or e}") from e
    try:
        yield tmp
    except BaseException:  # the caller's own error: clean up, re-raise unchanged
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        for root, _dirs, files in os.walk(tmp):
            for name in files:
                with contextlib.suppress(OSError):
                    fd = os.open(os.path.join(root, name), os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
        os.chmod(tmp, 0o777 & ~_umask())
        old = None
        if path.exists() or path.is_symlink():
            if not overwrite:
                raise ModelFileError(f"{path} already exists; choose another path or allow overwriting (--force)")
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=_tmp_prefix(path.name), suffix=".old"))
            os.rmdir(old)
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except BaseException:
            if old is not None:
                os.replace(old, path)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        _fsync_dir(path.parent)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise ModelFileError(f"cannot write {path}: {e.strerror or e}; nothing was written") from e
        raise
