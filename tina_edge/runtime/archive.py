"""Archives (.zip, .tar, .tar.gz/.tgz, .tar.bz2, .tar.xz) extracted safely: the one routine, for bundles and datasets.

Two passes: scan every header (refusing absolute paths, '..', special files, huge headers, too many
members or bytes), then write what the policy selects, each member size-capped. An `ExtractPolicy`
says what differs: a bundle (`open_archive`, into a private temp dir) holds plain files only and only
those its manifest lists are written, then `runtime/bundle.py` verifies the directory like any
other bundle; a dataset (`train/archives.py`) is written whole and may hold links that stay inside it.
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
from typing import Any, Callable

from .archive_write import write_all as _write_all
from .errors import BundleError, TinaEdgeError
from .manifest import LIMITS, MANIFEST_NAME, MAX_MANIFEST_BYTES, check_bundle_id, parse_manifest

# a real bundle: at most LIMITS["bundle.bytes"] of listed files plus its manifest, and files.count (64)
# files in a few folders; every member header counts, listed or not
MAX_ARCHIVE_BYTES = int(LIMITS["bundle.bytes"][1]) + MAX_MANIFEST_BYTES
MAX_ARCHIVE_MEMBERS = 1_000
MAX_MEMBER_NAME = 1024  # characters of one member path
MAX_HEADER_BYTES = 64 << 10  # one pax / GNU long-name header


class _HeaderTooBig(Exception):
    pass


@dataclass(frozen=True)
class ExtractPolicy:
    """What an archive may hold and what of it is written (the rest of extraction is shared)."""

    noun: str  # "bundle" | "dataset": named in refusals
    error: type[TinaEdgeError]  # raised for every refusal
    max_bytes: int  # unpacked, over all members
    max_members: int
    links: bool = False  # symbolic and hard links allowed when they resolve inside the destination
    casefold: bool = True  # two members equal up to case are one file on some filesystems: refuse
    overwrite: bool = False  # files already in the destination are replaced (a re-run after an interruption)
    # the members to write, from the scanned ones and a reader of one member's bytes (default: all)
    select: Callable[[Path, list["_Member"], Callable[["_Member"], bytes]], list["_Member"]] | None = None
    max_member_bytes: int | None = None  # one member, from its header (bundles: LIMITS["file.bytes"])
    # a top-level manifest met while a tar's headers are scanned, checked at once (bundles: its id and the pin),
    # so an archive is refused before the members after it are even decompressed
    early_manifest: Callable[[Path, bytes], None] | None = None


class _SafeTarInfo(tarfile.TarInfo):
    """TarInfo that refuses oversized pax / GNU long-name headers before tarfile reads them into memory."""

    def _proc_member(self, tf):
        if self.type in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE,
                         tarfile.SOLARIS_XHDTYPE) and self.size > MAX_HEADER_BYTES:
            raise _HeaderTooBig(self.size)
        return super()._proc_member(tf)


def _member_path(name: str, archive: Path, policy: ExtractPolicy) -> PurePosixPath | None:
    """The safe relative path of an archive member, None for the archive root itself."""
    err = policy.error
    if len(name) > MAX_MEMBER_NAME:
        raise err(f"archive {archive.name} has a member name of {len(name)} characters; at most {MAX_MEMBER_NAME} are allowed")
    if "\\" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":") or "\x00" in name:
        raise err(f"archive {archive.name} has an unsafe member path {name!r:.120} (absolute or not POSIX)")
    p = PurePosixPath(name)
    if ".." in p.parts:
        raise err(f"archive {archive.name} has a member that escapes the {policy.noun}: {name!r:.120}")
    parts = [x for x in p.parts if x not in (".", "")]
    return PurePosixPath(*parts) if parts else None


@dataclass
class _Member:
    rel: PurePosixPath
    size: int
    handle: Any  # ZipInfo or TarInfo
    kind: str = "file"  # "file" | "dir" | "symlink" | "hardlink"
    link: PurePosixPath | None = None  # a link's target, relative to the destination
    sha256: str | None = None  # bundles: the manifest's hash, checked while the member streams to disk


def _link_target(rel: PurePosixPath, kind: str, linkname: str, links: set[PurePosixPath]) -> PurePosixPath | None:
    """Where a link points, relative to the destination, walked one part at a time (None: outside).

    A walk through another link of the archive is refused too (None), so the lexical walk is the
    real one: nothing can be made to escape by chaining links."""
    if linkname.startswith("/") or "\\" in linkname or (len(linkname) > 1 and linkname[1] == ":"):
        return None
    here = list(rel.parent.parts) if kind == "symlink" else []  # hard links name a member path
    for part in PurePosixPath(linkname).parts:
        if part == "..":
            if not here:
                return None
            here.pop()
        elif part != ".":
            here.append(part)
            if PurePosixPath(*here) in links and PurePosixPath(*here) != rel:
                return None
    return PurePosixPath(*here) if here else None


def _too_big(archive: Path, limit: int) -> str:
    return (f"archive {archive.name} unpacks to more than {limit >> 30} GiB; refusing it" if limit >= 1 << 30 else
            f"archive {archive.name} unpacks to more than {limit} bytes; refusing it")


def _scan(archive: Path, entries, policy: ExtractPolicy) -> list[_Member]:
    """Pass 1 over (name, kind, size, handle, linkname): paths, types, links, count and declared
    sizes, no data read. Refuses before anything is written."""
    err, noun = policy.error, policy.noun
    members: list[_Member] = []
    seen: set[str] = set()
    total = 0
    for n, (name, kind, size, handle, linkname) in enumerate(entries, 1):
        if n > policy.max_members:
            raise err(f"archive {archive.name} has too many members (more than {policy.max_members})")
        rel = _member_path(name, archive, policy)
        if kind == "sparse":
            raise err(f"archive {archive.name} has a sparse member {name!r:.120}; {noun}s hold plain files only")
        allowed = ("file", "dir", "symlink", "hardlink") if policy.links else ("file", "dir")
        if kind not in allowed:
            raise err(f"archive {archive.name} has a link or special file {name!r:.120}; {noun}s hold "
                      + ("plain files, folders and links inside themselves only" if policy.links else "plain files only"))
        if rel is None:
            continue
        key = str(rel).casefold() if policy.casefold else str(rel)
        if key in seen and kind != "dir":
            raise err(f"archive {archive.name} holds {str(rel)!r:.120} twice")
        seen.add(key)
        if kind == "file" and policy.max_member_bytes is not None and size > policy.max_member_bytes:
            raise err(f"archive {archive.name} has a member {name!r:.120} of {size} bytes; a {noun} file may hold at "
                      f"most {policy.max_member_bytes}")
        total += size if kind == "file" else 0
        if total > policy.max_bytes:
            raise err(_too_big(archive, policy.max_bytes))
        members.append(_Member(rel, size, handle, kind, PurePosixPath(linkname) if linkname else None))
    _check_links(archive, members, policy)
    return members


def _check_links(archive: Path, members: list[_Member], policy: ExtractPolicy) -> None:
    """Links point inside the destination, never through another link; nothing is written through a link."""
    links = {m.rel for m in members if m.kind in ("symlink", "hardlink")}
    if not links:
        return
    files = {m.rel for m in members if m.kind == "file"}
    for m in members:
        if any(parent in links for parent in m.rel.parents):
            raise policy.error(f"archive {archive.name}: member {str(m.rel)!r:.120} lies inside a link; the archive is unsafe")
        if m.kind not in ("symlink", "hardlink"):
            continue
        target = _link_target(m.rel, m.kind, str(m.link or ""), links)
        if target is None:
            raise policy.error(f"archive {archive.name}: member {str(m.rel)!r:.120} links outside the destination "
                               f"({str(m.link)!r:.120}) or through another link; the archive is unsafe")
        if m.kind == "hardlink" and target not in files:
            raise policy.error(f"archive {archive.name}: hard link {str(m.rel)!r:.120} names {str(target)!r:.120}, "
                               "which is not a file of the archive")
        m.link = target if m.kind == "hardlink" else m.link


def _plan(archive: Path, members: list[_Member], read, expected_id: str | None = None) -> tuple[PurePosixPath | None, list[_Member]]:
    """Find the manifest (top level or inside one folder), parse it, check its id (and the pinned
    one) before anything is extracted, keep only the members it lists.

    Every listed member must have exactly the declared size, so what is written is bounded by
    what the manifest declares, and is hashed as it streams; unlisted members are never extracted.
    """
    members = [m for m in members if m.kind == "file"]  # the bundle policy lets only files and folders through
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
    m, ident = parse_manifest(read(man), f"{archive.name}:{MANIFEST_NAME}")
    check_bundle_id(m, ident, archive, expected_id)
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
        mem.sha256 = str(m.files[name]["sha256"])
        keep.append(mem)
    if declared > MAX_ARCHIVE_BYTES:
        raise BundleError(f"archive {archive.name} declares {declared} bytes of files; at most {MAX_ARCHIVE_BYTES} are allowed")
    return prefix, keep


def bundle_policy(expected_id: str | None = None) -> ExtractPolicy:
    """Bundles: plain files only, only those the manifest lists, at most MAX_ARCHIVE_* (read now);
    `expected_id`: the pinned bundle id, refused before any listed member is extracted."""
    def select(archive: Path, members: list[_Member], read) -> list[_Member]:
        return _plan(archive, members, read, expected_id)[1]

    def early(archive: Path, data: bytes) -> None:
        m, ident = parse_manifest(data, f"{archive.name}:{MANIFEST_NAME}")
        check_bundle_id(m, ident, archive, expected_id)

    return ExtractPolicy("bundle", BundleError, MAX_ARCHIVE_BYTES, MAX_ARCHIVE_MEMBERS, select=select,
                         max_member_bytes=int(LIMITS["file.bytes"][1]), early_manifest=early)


def _zip_kind(info: zipfile.ZipInfo) -> str:
    mode = info.external_attr >> 16
    if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):  # links, devices, FIFOs
        return "special"
    return "dir" if info.is_dir() else "file"


def _tar_kind(m: tarfile.TarInfo) -> str:
    if m.issparse():
        return "sparse"
    return ("file" if m.isreg() else "dir" if m.isdir() else "symlink" if m.issym() else
            "hardlink" if m.islnk() else "special")


def extract_safely(archive: Path, dest: Path, policy: ExtractPolicy) -> None:
    """Two passes: scan every header (and what `policy.select` reads), then write the selected
    members, size-capped. Refusals raise `policy.error` before anything is written."""
    try:
        _extract_safely(archive, dest, policy)
    except _HeaderTooBig as e:
        raise policy.error(f"archive {archive.name} has a {e.args[0]}-byte extended header; at most "
                           f"{MAX_HEADER_BYTES} are allowed") from None


def _extract_safely(archive: Path, dest: Path, policy: ExtractPolicy) -> None:
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            infos = z.infolist()
            if len(infos) > policy.max_members:
                raise policy.error(f"archive {archive.name} has too many members ({len(infos)})")
            members = _scan(archive, ((i.filename, _zip_kind(i), i.file_size, i, "") for i in infos), policy)
            open_zip = lambda mem: z.open(mem.handle)  # noqa: E731
            keep = policy.select(archive, members, _reader(open_zip)) if policy.select else members
            _write_all(archive, dest, keep, open_zip, policy)
        return
    with tarfile.open(archive, tarinfo=_SafeTarInfo) as t:
        def open_tar(mem: _Member):
            f = t.extractfile(mem.handle)
            if f is None:
                raise policy.error(f"archive {archive.name}: cannot read member {mem.handle.name!r}")
            return f

        read = _reader(open_tar, archive, policy.early_manifest)
        headers = _tar_members(t, read if policy.select else None)  # bundles: the manifest is kept on the way
        members = _scan(archive, ((m.name, _tar_kind(m), m.size, m, m.linkname) for m in headers), policy)
        keep = policy.select(archive, members, read) if policy.select else members
        _write_all(archive, dest, keep, open_tar, policy)


class _reader:
    """Bytes of one member (at most a manifest's worth): what a policy's `select` may read. A tar's
    manifest is kept as the scan passes it (`keep`), so a compressed stream is not decompressed again."""

    def __init__(self, open_member, archive: Path | None = None, early: Callable[[Path, bytes], None] | None = None):
        self._open, self._kept, self._depths = open_member, {}, set()
        self._archive, self._early = archive, early

    def __call__(self, mem: _Member) -> bytes:
        if id(mem.handle) in self._kept:
            return self._kept[id(mem.handle)][1]
        with self._open(mem) as f:
            return f.read(MAX_MANIFEST_BYTES + 1)

    def keep(self, info: tarfile.TarInfo) -> None:
        """Keep the first top-level and the first one-folder-deep manifest.json (the only ones a bundle
        may use), so memory stays at two manifests' worth whatever the archive holds."""
        name = PurePosixPath(info.name)
        depth = len([p for p in name.parts if p not in (".", "")])
        if (info.isreg() and info.size <= MAX_MANIFEST_BYTES and name.name == MANIFEST_NAME and depth in (1, 2)
                and depth not in self._depths):
            self._depths.add(depth)
            with self._open(_Member(name, info.size, info)) as f:
                self._kept[id(info)] = (info, f.read(MAX_MANIFEST_BYTES + 1))  # the TarInfo is kept alive with it
            if depth == 1 and self._early is not None and self._archive is not None:  # a top-level one is THE manifest
                self._early(self._archive, self._kept[id(info)][1])


def _tar_members(t: tarfile.TarFile, read: _reader | None = None):
    """Iterate headers lazily (tarfile's own list would grow without the member cap)."""
    while True:
        m = t.next()
        if m is None:
            return
        if read is not None:
            read.keep(m)
        yield m


def open_archive(path: Path, expected_id: str | None = None) -> tuple[Path, tempfile.TemporaryDirectory]:
    """Extract a bundle archive into a private temp dir: its manifest is read and its id (and the
    pinned `expected_id`) checked first; then only listed members, size-capped and hashed as they stream."""
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
        extract_safely(path, dest, bundle_policy(expected_id))
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
