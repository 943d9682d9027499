"""A bundle directory's files, read once and verified: each listed file is a regular file inside the
bundle with no symlink on its way, of the listed size and sha256. The bytes returned are the bytes
hashed (sessions and protos are built from them, never from the path again); a listed file the
runtime does not use is hashed block by block and never held in memory."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import BundleError
from .manifest import MANIFEST_NAME, MAX_MANIFEST_BYTES


def open_nofollow(cur: Path) -> int:
    return os.open(cur, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))


def read_file(root: Path, name: str, entry: dict[str, Any], *, keep: bool = True) -> bytes:
    """Read a listed file ONCE and return its bytes, after checking them against size and sha256.

    It must be a regular file inside root with no symlink on its way. The bytes returned are the
    bytes hashed: callers build sessions and protos from them, never from the path again.
    keep=False: a file the runtime does not use is hashed block by block and b"" returned (bounded memory).
    """
    cur = root
    for part in PurePosixPath(name).parts:
        cur = cur / part
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            raise BundleError(f"bundle file {name} is missing from {root}") from None
        except (OSError, ValueError) as e:  # ValueError: embedded NUL
            raise BundleError(f"bundle file {name!r} cannot be read: {getattr(e, 'strerror', None) or e}") from None
        if stat.S_ISLNK(st.st_mode):
            raise BundleError(f"bundle file {name} is (or lies under) a symbolic link; bundles must hold plain files")
    if not stat.S_ISREG(st.st_mode):
        raise BundleError(f"bundle file {name} is not a regular file")
    real = Path(os.path.realpath(cur))
    if not real.is_relative_to(Path(os.path.realpath(root))):
        raise BundleError(f"bundle file {name} resolves outside the bundle directory")
    want_size = entry["bytes"]
    try:
        fd = open_nofollow(cur)
    except OSError as e:
        raise BundleError(f"bundle file {name} cannot be read: {e.strerror or e}") from None
    with os.fdopen(fd, "rb") as f:
        fst = os.fstat(f.fileno())
        if not stat.S_ISREG(fst.st_mode):
            raise BundleError(f"bundle file {name} is not a regular file")
        if fst.st_size != want_size:
            raise BundleError(f"bundle file {name} has {fst.st_size} bytes but the manifest says {want_size}; the bundle is damaged or was modified")
        h, n, data = hashlib.sha256(), 0, b""
        for block in iter(lambda: f.read(want_size + 1 if keep else 1 << 20), b""):
            h.update(block)
            n += len(block)
            data = block if keep else b""
            if keep or n > want_size:
                break
    if n != want_size:
        raise BundleError(f"bundle file {name} has {n} bytes but the manifest says {want_size}; the bundle is damaged or was modified")
    if h.hexdigest() != str(entry.get("sha256", "")).lower():
        raise BundleError(f"bundle file {name} does not match its sha256 in the manifest; the bundle is damaged or was modified")
    return data


def read_manifest_bytes(root: Path) -> bytes:
    p = root / MANIFEST_NAME
    if os.path.islink(p):
        raise BundleError(f"{MANIFEST_NAME} of {root} is a symbolic link; bundles must hold plain files")
    try:
        fd = open_nofollow(p)
    except FileNotFoundError:
        raise BundleError(f"{root} is not a tina-edge bundle: it has no {MANIFEST_NAME}") from None
    except OSError as e:
        raise BundleError(f"cannot read {p}: {e.strerror or e}") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise BundleError(f"{MANIFEST_NAME} of {root} is not a regular file")
        return f.read(MAX_MANIFEST_BYTES + 1)


class VerifiedFiles(dict):
    """name -> verified bytes. The files manifest fields name are read up front; any other listed file
    only when a graph keeps external data in it. The rest (e.g. required_operators.config of an ORT
    bundle) is hashed block by block and never held in memory (`hash_unused`)."""

    def __init__(self, root: Path, files: dict[str, Any]):
        super().__init__()
        self._root, self._files = root, files

    def __missing__(self, name: str) -> bytes:
        if name not in self._files:
            raise KeyError(name)
        data = self[name] = read_file(self._root, name, self._files[name])
        return data

    def hash_unused(self) -> dict[str, bytes]:
        """Verify every listed file not read yet without keeping it; the plain dict of the used ones."""
        for name in sorted(set(self._files) - set(self)):
            read_file(self._root, name, self._files[name], keep=False)
        return dict(self)
