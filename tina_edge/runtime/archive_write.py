"""Pass 2 of a safe extraction (runtime/archive.py): writing the members pass 1 checked and selected.

Pass 1 (archive.py) refused every bad header and decided what is written; this module only writes:
folders, then files streamed and capped at their declared size (and hashed against the manifest when
the bundle plan knows their sha256), then links whose targets exist by then. Nothing here reads a
header or decides; `mem` is archive.py's `_Member`, `policy` its `ExtractPolicy` (only `overwrite`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

from .errors import BundleError


def _write_member(dest: Path, mem: Any, src, archive: Path, overwrite: bool = False) -> None:
    """One file member, streamed and capped at its declared size; its sha256 checked when the plan holds one."""
    out = dest.joinpath(*mem.rel.parts)
    out.parent.mkdir(parents=True, exist_ok=True)
    if overwrite and (out.is_symlink() or out.is_file()):
        out.unlink()  # never write through what a previous run left there
    left = mem.size
    h = hashlib.sha256() if mem.sha256 is not None else None
    with open(out, "xb") as f:
        while True:
            block = src.read(min(1 << 20, left + 1))
            if not block:
                break
            left -= len(block)
            if left < 0:
                raise BundleError(f"archive {archive.name}: member {str(mem.rel)!r} unpacks to more than its declared {mem.size} bytes")
            if h is not None:
                h.update(block)
            f.write(block)
    if left:
        raise BundleError(f"archive {archive.name}: member {str(mem.rel)!r} is shorter than its declared {mem.size} bytes")
    if h is not None and h.hexdigest() != mem.sha256.lower():
        raise BundleError(f"archive {archive.name}: member {str(mem.rel)!r} does not match its sha256 in the manifest; "
                          "the archive is damaged or was modified")


def _write_link(dest: Path, mem: Any, overwrite: bool) -> None:
    """A link member whose target pass 1 checked stays inside dest (a hard link, else a copy)."""
    out = dest.joinpath(*mem.rel.parts)
    out.parent.mkdir(parents=True, exist_ok=True)
    if overwrite and (out.is_symlink() or out.is_file()):
        out.unlink()
    if mem.kind == "symlink":
        os.symlink(str(mem.link), out)
        return
    src = dest.joinpath(*mem.link.parts)  # type: ignore[union-attr]  # checked: a file of the archive
    try:
        os.link(src, out)
    except OSError:  # a filesystem without hard links: a copy reads the same
        shutil.copyfile(src, out)


def write_all(archive: Path, dest: Path, keep: list[Any], open_member, policy: Any) -> None:
    """Pass 2: folders, then files (size-capped), then links (their targets exist by then)."""
    for mem in keep:
        if mem.kind == "dir":
            dest.joinpath(*mem.rel.parts).mkdir(parents=True, exist_ok=True)
    for mem in keep:
        if mem.kind == "file":
            with open_member(mem) as src:
                _write_member(dest, mem, src, archive, policy.overwrite)
    for mem in keep:
        if mem.kind in ("symlink", "hardlink"):
            _write_link(dest, mem, policy.overwrite)
