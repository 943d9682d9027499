"""Bundle archives (.zip, .tar, .tar.gz/.tgz, .tar.bz2, .tar.xz) extracted safely into a private temp dir.

Two passes: scan every header (refusing absolute paths, '..', links, special files, huge headers)
and read the manifest, then write only the files it lists, size-capped. `runtime/bundle.py` then
verifies the extracted directory like any other bundle.
"""

from __future__ import annotations

import lzma
import stat
import tarfile
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import BundleError
from .manifest import MANIFEST_NAME, MAX_MANIFEST_BYTES, parse_manifest

MAX_ARCHIVE_BYTES = 8 << 30  # unpacked, over all members; the manifest's declared sizes then bound it further
MAX_ARCHIVE_MEMBERS = 10_000
MAX_MEMBER_NAME = 1024  # characters of one member path
MAX_HEADER_BYTES = 64 << 10  # one pax / GNU long-name header


class _HeaderTooBig(Exception):
    pass


class _SafeTarInfo(tarfile.TarInfo):
    """TarInfo that refuses oversized pax / GNU long-name headers before tarfile reads them into memory."""

    def _proc_member(self, tf):
        if self.type in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE,
                         tarfile.SOLARIS_XHDTYPE) and self.size > MAX_HEADER_BYTES:
            raise _HeaderTooBig(self.size)
        return super()._proc_member(tf)


def _member_path(name: str, archive: Path) -> PurePosixPath | None:
    """The safe relative path of an archive member, None for the archive root itself."""
    if len(name) > MAX_MEMBER_NAME:
        raise BundleError(f"archive {archive.name} has a member name of {len(name)} characters; at most {MAX_MEMBER_NAME} are allowed")
    if "\\" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":") or "\x00" in name:
        raise BundleError(f"archive {archive.name} has an unsafe member path {name!r:.120} (absolute or not POSIX)")
    p = PurePosixPath(name)
    if ".." in p.parts:
        raise BundleError(f"archive {archive.name} has a member that escapes the bundle: {name!r:.120}")
    parts = [x for x in p.parts if x not in (".", "")]
    return PurePosixPath(*parts) if parts else None


@dataclass
class _Member:
    rel: PurePosixPath
    size: int
    handle: Any  # ZipInfo or TarInfo


def _scan(archive: Path, entries) -> list[_Member]:
    """Pass 1 over (name, kind, size, handle): paths, types, count and declared sizes, no data read."""
    members: list[_Member] = []
    seen: set[str] = set()
    total = 0
    for n, (name, kind, size, handle) in enumerate(entries, 1):
        if n > MAX_ARCHIVE_MEMBERS:
            raise BundleError(f"archive {archive.name} has too many members (more than {MAX_ARCHIVE_MEMBERS})")
        rel = _member_path(name, archive)
        if kind == "sparse":
            raise BundleError(f"archive {archive.name} has a sparse member {name!r:.120}; bundles hold plain files only")
        if kind not in ("file", "dir"):
            raise BundleError(f"archive {archive.name} has a link or special file {name!r:.120}; bundles hold plain files only")
        if kind == "dir" or rel is None:
            continue
        key = str(rel).casefold()
        if key in seen:
            raise BundleError(f"archive {archive.name} holds {str(rel)!r:.120} twice")
        seen.add(key)
        total += size
        if total > MAX_ARCHIVE_BYTES:
            raise BundleError(f"archive {archive.name} unpacks to more than {MAX_ARCHIVE_BYTES >> 30} GiB; refusing it"
                              if MAX_ARCHIVE_BYTES >= 1 << 30 else
                              f"archive {archive.name} unpacks to more than {MAX_ARCHIVE_BYTES} bytes; refusing it")
        members.append(_Member(rel, size, handle))
    return members


def _plan(archive: Path, members: list[_Member], read) -> tuple[PurePosixPath | None, list[_Member]]:
    """Find the manifest (top level or inside one folder), parse it, keep only the members it lists.

    Every listed member must have exactly the declared size, so what is written is bounded by
    what the manifest declares; unlisted members are never extracted.
    """
    tops = {m.rel.parts[0] for m in members}
    prefix: PurePosixPath | None = None
    man = next((m for m in members if m.rel == PurePosixPath(MANIFEST_NAME)), None)
    if man is None and len(tops) == 1:
        prefix = PurePosixPath(next(iter(tops)))
        man = next((m for m in members if m.rel == prefix / MANIFEST_NAME), None)
    if man is None:
        raise BundleError(f"archive {archive.name} is not a tina-edge bundle: it has no {MANIFEST_NAME}")
    if man.size > MAX_MANIFEST_BYTES:
        raise BundleError(f"archive {archive.name}: its {MANIFEST_NAME} is {man.size} bytes; at most {MAX_MANIFEST_BYTES >> 20} MiB are allowed")
    m, _ident = parse_manifest(read(man), f"{archive.name}:{MANIFEST_NAME}")
    keep = [man]
    declared = 0
    for mem in members:
        rel = mem.rel if prefix is None else (PurePosixPath(*mem.rel.parts[1:]) if len(mem.rel.parts) > 1 else None)
        name = str(rel) if rel is not None else ""
        if mem is man or name not in m.files:
            continue
        want = m.files[name]["bytes"]
        if mem.size != want:
            raise BundleError(f"archive {archive.name}: member {name} has {mem.size} bytes but the manifest says {want}")
        declared += want
        keep.append(mem)
    if declared > MAX_ARCHIVE_BYTES:
        raise BundleError(f"archive {archive.name} declares {declared} bytes of files; at most {MAX_ARCHIVE_BYTES} are allowed")
    return prefix, keep


def _write_member(dest: Path, mem: _Member, src, archive: Path) -> None:
    out = dest.joinpath(*mem.rel.parts)
    out.parent.mkdir(parents=True, exist_ok=True)
    left = mem.size
    with open(out, "xb") as f:
        while True:
            block = src.read(min(1 << 20, left + 1))
            if not block:
                break
            left -= len(block)
            if left < 0:
                raise BundleError(f"archive {archive.name}: member {str(mem.rel)!r} unpacks to more than its declared {mem.size} bytes")
            f.write(block)
    if left:
        raise BundleError(f"archive {archive.name}: member {str(mem.rel)!r} is shorter than its declared {mem.size} bytes")


def _zip_kind(info: zipfile.ZipInfo) -> str:
    mode = info.external_attr >> 16
    if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):  # links, devices, FIFOs
        return "special"
    return "dir" if info.is_dir() else "file"


def _tar_kind(m: tarfile.TarInfo) -> str:
    if m.issparse():
        return "sparse"
    return "file" if m.isreg() else "dir" if m.isdir() else "special"


def _extract(archive: Path, dest: Path) -> None:
    """Two passes: scan headers and the manifest, then write only the listed files, size-capped."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            infos = z.infolist()
            if len(infos) > MAX_ARCHIVE_MEMBERS:
                raise BundleError(f"archive {archive.name} has too many members ({len(infos)})")
            members = _scan(archive, ((i.filename, _zip_kind(i), i.file_size, i) for i in infos))

            def read(mem: _Member) -> bytes:
                with z.open(mem.handle) as f:
                    return f.read(MAX_MANIFEST_BYTES + 1)

            _prefix, keep = _plan(archive, members, read)
            for mem in keep:
                with z.open(mem.handle) as src:
                    _write_member(dest, mem, src, archive)
        return
    with tarfile.open(archive, tarinfo=_SafeTarInfo) as t:
        members = _scan(archive, ((m.name, _tar_kind(m), m.size, m) for m in _tar_members(t)))

        def read_tar(mem: _Member) -> bytes:
            f = t.extractfile(mem.handle)
            if f is None:
                raise BundleError(f"archive {archive.name}: cannot read member {mem.handle.name!r}")
            with f:
                return f.read(MAX_MANIFEST_BYTES + 1)

        _prefix, keep = _plan(archive, members, read_tar)
        for mem in keep:
            src = t.extractfile(mem.handle)
            if src is None:
                raise BundleError(f"archive {archive.name}: cannot read member {mem.handle.name!r}")
            with src:
                _write_member(dest, mem, src, archive)


def _tar_members(t: tarfile.TarFile):
    """Iterate headers lazily (tarfile's own list would grow without the member cap)."""
    while True:
        m = t.next()
        if m is None:
            return
        yield m


def open_archive(path: Path) -> tuple[Path, tempfile.TemporaryDirectory]:
    try:
        is_archive = zipfile.is_zipfile(path) or _is_tar(path)
    except OSError as e:
        raise BundleError(f"cannot read bundle archive {path}: {e.strerror or e}") from None
    except _HeaderTooBig:
        is_archive = True  # reported below, while extracting
    if not is_archive:
        raise BundleError(f"{path} is a file but not a bundle archive (.zip or .tar); pass a bundle directory or archive")
    tmp = tempfile.TemporaryDirectory(prefix="tina-edge-bundle-")
    dest = Path(tmp.name)
    try:
        _extract(path, dest)
    except BundleError:
        tmp.cleanup()
        raise
    except _HeaderTooBig as e:
        tmp.cleanup()
        raise BundleError(f"bundle archive {path} has a {e.args[0]}-byte extended header; at most {MAX_HEADER_BYTES} are allowed") from None
    except (OSError, EOFError, zipfile.BadZipFile, tarfile.TarError, RuntimeError, ValueError, NotImplementedError,
            zlib.error, lzma.LZMAError) as e:
        tmp.cleanup()
        raise BundleError(f"bundle archive {path} is damaged and cannot be extracted: {str(e)[:160]}") from None
    except BaseException:  # Ctrl-C, SIGTERM turned into an exception by the CLI: no extracted copy left
        tmp.cleanup()
        raise
    if not (dest / MANIFEST_NAME).exists():  # allow one top-level folder holding the bundle
        subs = [p for p in dest.iterdir()]
        if len(subs) == 1 and subs[0].is_dir() and (subs[0] / MANIFEST_NAME).exists():
            return subs[0], tmp
    return dest, tmp


def _is_tar(path: Path) -> bool:
    try:
        with tarfile.open(path, tarinfo=_SafeTarInfo):
            return True
    except tarfile.TarError:
        return False
