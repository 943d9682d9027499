"""Dataset archives (.tar, .tar.gz, .zip) extracted through the one safe-extraction routine
(`runtime/archive.py`) under the dataset policy: the whole archive is written, links are allowed
when they stay inside the destination (never through another link), and it is skipped once extracted."""

from __future__ import annotations

import json
import lzma
import os
import tarfile
import zipfile
import zlib
from pathlib import Path

from tina_edge.runtime.atomic import atomic_write_json
from tina_edge.runtime.archive import ExtractPolicy, extract_safely
from tina_edge.train.data.image_dataset import DatasetError, DatasetNotFoundError

_EXTRACT_MARKER = ".tina-edge-extracted.json"
# Tiny-ImageNet is ~120 000 files and 250 MB: the limits bound a hostile archive, not a real dataset
DATASET_POLICY = ExtractPolicy("dataset", DatasetError, max_bytes=256 << 30, max_members=5_000_000, links=True,
                               casefold=False, overwrite=True)


def extract_archive_safely(archive: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Extract a .tar(.gz) or .zip into dest after checking every member; skip if already done."""
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
    dest.mkdir(parents=True, exist_ok=True)
    try:
        extract_safely(archive, dest, DATASET_POLICY)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError) as e:
        raise DatasetError(f"cannot extract {archive}: {e}") from e
    atomic_write_json(marker, stamp)
    return dest
