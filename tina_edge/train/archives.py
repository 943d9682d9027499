"""Dataset archives (.tar, .tar.gz) extracted with every member checked first.

Unlike bundle archives (runtime/archive.py: only listed plain files, no links), a dataset tarball is
extracted whole and may hold links that stay inside the destination; it is skipped once extracted."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path


from .image_dataset import DatasetError, DatasetNotFoundError

_EXTRACT_MARKER = ".tina-edge-extracted.json"


def _inside(dest: Path, target: Path) -> bool:
    return os.path.commonpath([dest, target]) == str(dest)


def _check_member(m: tarfile.TarInfo, dest: Path, archive: Path) -> None:
    def refuse(why: str) -> None:
        raise DatasetError(f"refusing to extract {archive}: member {m.name!r} {why}; the "
                           f"archive is unsafe, get it from a trusted source")

    name = m.name
    if name.startswith(("/", "\\")) or os.path.isabs(name) or (len(name) > 1 and name[1] == ":"):
        refuse("has an absolute path")
    if ".." in Path(name.replace("\\", "/")).parts:
        refuse("contains '..'")
    target = Path(os.path.normpath(dest / name))
    if not _inside(dest, target):
        refuse("lands outside the destination")
    if m.isdev() or m.isfifo():
        refuse("is a device or fifo")
    if m.issym() or m.islnk():
        link = m.linkname
        if os.path.isabs(link):
            refuse(f"links to the absolute path {link!r}")
        base = target.parent if m.issym() else dest
        if not _inside(dest, Path(os.path.normpath(base / link))):
            refuse(f"links outside the destination ({link!r})")
    elif not (m.isfile() or m.isdir()):
        refuse("is not a regular file or folder")


def extract_archive_safely(archive: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Extract a .tar(.gz) into dest after checking every member; skip if already done."""
    archive, dest = Path(archive), Path(dest).resolve()
    if not archive.is_file():
        raise DatasetNotFoundError(f"no archive at {archive}")
    st = archive.stat()
    stamp = {"archive": str(archive.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    marker = dest / _EXTRACT_MARKER
    if marker.is_file():
        try:
            if json.loads(marker.read_text()) == stamp:
                return dest
        except (OSError, ValueError):
            pass
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for m in members:  # check all before writing anything
                _check_member(m, dest, archive)
            dest.mkdir(parents=True, exist_ok=True)
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, members=members, filter="data")
            else:  # Python < 3.11.4: our own checks above are the guard
                tar.extractall(dest, members=members)
    except (tarfile.TarError, EOFError) as e:  # includes tarfile.FilterError
        raise DatasetError(f"cannot extract {archive}: {e}") from e
    marker.write_text(json.dumps(stamp))
    return dest
