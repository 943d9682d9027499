"""Write a bundle's name table (runtime/name_table.py reads it): the one writer of its two files.

Vectors are stored int8 with one float32 scale per row, chosen so that int8 x scale has unit length
(the prior reads cosines: a quantised vector keeps its direction to ~0.3 % and its length exactly).
gzip with mtime 0, keys sorted: the same table gives the same bytes, so the bundle id is reproducible.

Aliases (`name_aliases`, `add_aliases`): a table noun whose first visible WordNet sense is a vocabulary
name's own synset ("salientian": the frog; "gym shoe": the sneaker) is another name of a class the
bundle was trained on; the runtime reads it as that name. `python -m tina_edge.export.portable.name_table
BUNDLE` adds them to a bundle's table (vectors unchanged, byte for byte); `--record-prior` also records the
sha256 of the prior graph the table was solved against (`record_prior`; the builder records it itself),
which the runtime checks.
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


def table_bytes(keys: Sequence[str], vectors: np.ndarray, source: dict,
                aliases: dict[str, str] | None = None) -> tuple[bytes, bytes]:
    """(gzip JSON, .npy) of a table: keys (class keys, unique) sorted, their vectors quantised; aliases
    {key: vocabulary name} sorted (omitted when empty: a table without them keeps its bytes)."""
    keys = [class_key(k) for k in keys]
    if len(set(keys)) != len(keys):
        raise ValueError("two names of the table have one class key")
    order = sorted(range(len(keys)), key=keys.__getitem__)
    q, scales = quantise(np.asarray(vectors)[order])
    doc = {"format": FORMAT, "version": VERSION, "source": source, "keys": [keys[i] for i in order],
           "scales": [float(s) for s in scales]}
    if aliases:
        doc["aliases"] = dict(sorted((class_key(noun), name) for noun, name in aliases.items()))
    js = gzip.compress(json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8"), compresslevel=9, mtime=0)
    return js, npy_bytes(q)


def write_name_table(bundle_dir: str | Path, keys: Sequence[str], vectors: np.ndarray, source: dict,
                     aliases: dict[str, str] | None = None) -> Manifest:
    """Put the table into a bundle: both files, the manifest's text_encoder fields, the manifest rewritten
    (write_manifest hashes the files and checks its own round trip). The table is read back first."""
    root = Path(bundle_dir)
    m = read_manifest(root)
    vocab = {class_key(v) for v in m.vocabulary if isinstance(v, str)}
    if aliases and (odd := sorted(a for a in aliases.values() if class_key(a) not in vocab)):
        raise ValueError(f"aliases must name vocabulary names; {odd[0]!r} is not one")
    js, npy = table_bytes(keys, vectors, source, aliases)
    NameTable.from_bytes(js, npy, m.text_encoder.embedding_dim, NAME_TABLE)  # the reader accepts what we write
    atomic_write_bytes(root / NAME_TABLE, js, overwrite=True)
    atomic_write_bytes(root / NAME_VECTORS, npy, overwrite=True)
    m.text_encoder.name_table, m.text_encoder.name_vectors = NAME_TABLE, NAME_VECTORS
    for name in (NAME_TABLE, NAME_VECTORS):
        m.files[name] = {"sha256": "", "bytes": 0}  # filled in by write_manifest
    return write_manifest(root, m)


def name_aliases(wn, keys: Sequence[str], vocabulary: Sequence[str]) -> dict[str, str]:
    """{table key: vocabulary name} for the keys whose first visible WordNet sense (WordNet's order) is the
    synset of a vocabulary name (export/portable/senses.vocabulary_synsets: ImageNet's synsets, else the
    name's first visible sense). Only the same synset: a hyponym ("stag" under deer) keeps its own reading
    (BENCHMARKS §25.4: mapping hyponyms onto their vocabulary parents cost held-out classes' words)."""
    from .senses import imagenet_wnids, visible, vocabulary_synsets

    names = [v for v in vocabulary if isinstance(v, str)]
    synsets = vocabulary_synsets(wn, names, imagenet_wnids())
    name_of: dict[str, str] = {}
    for n in names:
        name_of.setdefault(class_key(n), n)
    by_wnid: dict[str, str] = {}
    for k, wnid in synsets.items():
        by_wnid.setdefault(wnid, name_of[k])
    out = {}
    for key in keys:
        first = next((s for s in wn.senses(key) if visible(wn, s)), None)
        if first is not None and first.wnid in by_wnid:
            out[key] = by_wnid[first.wnid]
    return out


def _rewrite(bundle_dir: str | Path, change) -> None:
    """Read a bundle's table, let `change(table, manifest)` return (source, aliases), write it back; its
    vectors re-quantise to the same bytes (checked)."""
    from ...runtime.bundle import open_bundle
    from ...runtime.name_table import load_name_table

    b = open_bundle(bundle_dir)
    table = load_name_table(b, b.manifest)
    if table is None:
        raise ValueError(f"{bundle_dir} has no name table (python -m tina_edge.export.name_table builds one)")
    keys = sorted(table.index, key=table.index.__getitem__)
    vectors = table.vectors.astype(np.float64) * table.scales[:, None].astype(np.float64)
    source, aliases = change(table, b.manifest)
    before = bytes(b.data(b.manifest.text_encoder.name_vectors))
    write_name_table(bundle_dir, keys, vectors, source, aliases)
    if (Path(bundle_dir) / NAME_VECTORS).read_bytes() != before:
        raise AssertionError("re-quantising the table's own vectors changed them")


def add_aliases(bundle_dir: str | Path, wordnet: str | Path | None = None) -> dict[str, str]:
    """Add `name_aliases` to a bundle's name table in place (its vectors unchanged)."""
    from .wordnet import WordNet, find_wordnet

    root = find_wordnet(wordnet)
    if root is None:
        raise ValueError("WordNet 3.0 is needed (apt install wordnet-base, or --wordnet DIR)")
    found: dict[str, str] = {}

    def change(table, m):
        found.update(name_aliases(WordNet(str(root)), sorted(table.index, key=table.index.__getitem__), m.vocabulary))
        return table.source, found

    _rewrite(bundle_dir, change)
    return found


def record_prior(bundle_dir: str | Path) -> str:
    """Record the bundle's prior graph's sha256 in its table's source (runtime/name_table.py checks it).
    Only for a table solved against this very graph: the builder records it itself."""
    sha: list[str] = []

    def change(table, m):
        if not m.portable.prior_model:
            raise ValueError("the bundle has no prior graph (portable.prior)")
        sha.append(m.files[m.portable.prior_model]["sha256"])
        return {**table.source, "prior_sha256": sha[0]}, table.aliases

    _rewrite(bundle_dir, change)
    return sha[0]


def main(argv: Sequence[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description="Add aliases (WordNet synonyms of vocabulary names) to a bundle's name table")
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--wordnet", default=None, help="WordNet 3.0 dict directory (default: the installed one)")
    ap.add_argument("--record-prior", action="store_true",
                    help="also record the bundle's prior graph's sha256 (only if the table was solved against it)")
    a = ap.parse_args(argv)
    aliases = add_aliases(a.bundle, a.wordnet)
    print(f"{len(aliases)} aliases: " + ", ".join(f"{k} -> {v}" for k, v in sorted(aliases.items())))
    if a.record_prior:
        print(f"prior graph sha256 {record_prior(a.bundle)} recorded")


if __name__ == "__main__":
    main()
