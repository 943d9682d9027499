"""Write a bundle's name table (runtime/name_table.py reads it): the one writer of its two files.

Vectors are stored int8 with one float32 scale per row, chosen so that int8 x scale has unit length
(the prior reads cosines: a quantised vector keeps its direction to ~0.3 % and its length exactly).
gzip with mtime 0, keys sorted: the same table gives the same bytes, so the bundle id is reproducible.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from ...runtime.atomic import atomic_write_bytes, npy_bytes
from ...runtime.manifest import Manifest, read_manifest, write_manifest
from ...runtime.name_table import FORMAT, VERSION, NameTable
from ...runtime.prompt import class_key

NAME_TABLE = "name_table.json.gz"
NAME_VECTORS = "name_table.npy"


def quantise(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float [N, D] -> (int8 [N, D], float32 scales [N]) with int8 x scale of unit length per row."""
    v = np.asarray(vectors, np.float64)
    peak = np.abs(v).max(1, keepdims=True)
    q = np.clip(np.round(v / np.where(peak > 0, peak, 1.0) * 127.0), -127, 127).astype(np.int8)
    norms = np.linalg.norm(q.astype(np.float64), axis=1)
    if (norms == 0).any():
        raise ValueError("a name table vector is zero")
    return q, (1.0 / norms).astype(np.float32)


def table_bytes(keys: Sequence[str], vectors: np.ndarray, source: dict) -> tuple[bytes, bytes]:
    """(gzip JSON, .npy) of a table: keys (class keys, unique) sorted, their vectors quantised."""
    keys = [class_key(k) for k in keys]
    if len(set(keys)) != len(keys):
        raise ValueError("two names of the table have one class key")
    order = sorted(range(len(keys)), key=keys.__getitem__)
    q, scales = quantise(np.asarray(vectors)[order])
    doc = {"format": FORMAT, "version": VERSION, "source": source, "keys": [keys[i] for i in order],
           "scales": [float(s) for s in scales]}
    js = gzip.compress(json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8"), compresslevel=9, mtime=0)
    return js, npy_bytes(q)


def write_name_table(bundle_dir: str | Path, keys: Sequence[str], vectors: np.ndarray, source: dict) -> Manifest:
    """Put the table into a bundle: both files, the manifest's text_encoder fields, the manifest rewritten
    (write_manifest hashes the files and checks its own round trip). The table is read back first."""
    root = Path(bundle_dir)
    m = read_manifest(root)
    js, npy = table_bytes(keys, vectors, source)
    NameTable.from_bytes(js, npy, m.text_encoder.embedding_dim, NAME_TABLE)  # the reader accepts what we write
    atomic_write_bytes(root / NAME_TABLE, js, overwrite=True)
    atomic_write_bytes(root / NAME_VECTORS, npy, overwrite=True)
    m.text_encoder.name_table, m.text_encoder.name_vectors = NAME_TABLE, NAME_VECTORS
    for name in (NAME_TABLE, NAME_VECTORS):
        m.files[name] = {"sha256": "", "bytes": 0}  # filled in by write_manifest
    return write_manifest(root, m)
