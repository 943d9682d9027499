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


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, overwrite: bool = False) -> Path:
    """Write `data` to `path` atomically; refuse an existing file unless `overwrite`."""
    path = Path(path)
    _check_target(path, overwrite, "file")
    try:
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=_tmp_prefix(path.name), suffix=".tmp")
    except OSError as e:
        raise ModelFileError(f"cannot write {path}: {e.strerror or e}") from e
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
        if overwrite:
            os.replace(tmp, path)
        else:
            try:  # link() fails if the target appeared meanwhile: no check-then-replace race
                os.link(tmp, path)
            except FileExistsError:
                raise ModelFileError(f"{path} already exists; choose another path or allow overwriting (--force)") from None
            except OSError as e:
                if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS):
                    raise
                if path.exists():  # filesystem without hard links
                    raise ModelFileError(f"{path} already exists; choose another path or allow overwriting (--force)") from None
                os.replace(tmp, path)
            else:
                tmp.unlink()
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, OSError):
            raise ModelFileError(f"cannot write {path}: {e.strerror or e}; nothing was written") from e
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str, *, overwrite: bool = True) -> Path:
    """UTF-8 text, atomically (work-directory files, reports, JSON); replaces by default."""
    return atomic_write_bytes(path, text.encode("utf-8"), overwrite=overwrite)


def atomic_write_json(path: str | os.PathLike, obj: Any, *, overwrite: bool = True, **dumps: Any) -> Path:
    """`json.dumps(obj, **dumps)` + newline, atomically."""
    return atomic_write_text(path, json.dumps(obj, **dumps) + "\n", overwrite=overwrite)


def atomic_save_npy(path: str | os.PathLike, array: Any, *, overwrite: bool = True) -> Path:
    """One numpy array in .npy format (no pickles), atomically."""
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    return atomic_write_bytes(path, buf.getvalue(), overwrite=overwrite)


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
