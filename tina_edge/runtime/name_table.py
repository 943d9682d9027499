"""Names beyond the vocabulary: a larger encoder's reading of WordNet's visible nouns, precomputed.

Why: the prior reads a name only through its embedding, and the bundle's MiniLM reads names it never
trained on less well than all-mpnet-base-v2: with the same kernel prior, held-out recall (k 2-20)
is 6.3 points higher with mpnet (BENCHMARKS §24). mpnet itself is 420 MB and slow to start, so the
bundle carries its answer instead: for each visible WordNet noun, the embedding in the bundle
encoder's space whose prior row is the mpnet prior's row (solved when the table is built,
export/name_table.py). A text whose class key is in the table skips the text encoder; every
other text (descriptions, qualified senses, unknown words) is encoded as before. The vocabulary's
names, the training synonyms and the everyday keys are never in it: their rows are exact already.

Two bundle files, both listed and hashed by the manifest: `text_encoder.name_table` (gzip JSON:
format, the class keys, one float32 scale per key) and `text_encoder.name_vectors` (.npy int8
[N, D]). A vector is int8 x its scale, in float32 (bit-identical in every port: js/src/name-table.mjs).

`source.prior_sha256`, when the builder recorded it: the sha256 of the prior graph the vectors were
solved against (export/name_table.py inverts that graph). A bundle whose prior graph is another one
(converted again, say) refuses the table instead of reading rows it was never solved for.

Optional `aliases` in the JSON: {class key: vocabulary name} for nouns whose WordNet synset is a
vocabulary name's own ("salientian" is the frog, "gym shoe" the sneaker). Such a noun reads as that
name (its exact prior row), not as the larger encoder's reading (BENCHMARKS §25.4). Readers that do
not know the field read the vector, as before.
"""

from __future__ import annotations

import io
import json
import math

import numpy as np

from .errors import BundleError
from .prompt import class_key
from .senses import inflate_bounded

FORMAT, VERSION = "tina-edge-name-table", 1
MAX_JSON_BYTES = 16 << 20  # the keys and scales once inflated (35 000 WordNet nouns: ~1 MB)
MAX_NAMES = 200_000  # WordNet 3.0 has 117 798 nouns


class NameTable:
    """class key -> embedding float32 [D] (unit length up to float rounding)."""

    def __init__(self, keys: list[str], vectors: np.ndarray, scales: np.ndarray, aliases: dict[str, str] | None = None,
                 source: dict | None = None):
        self.index = {k: i for i, k in enumerate(keys)}
        self.vectors = vectors  # int8 [N, D]
        self.scales = scales  # float32 [N]
        self.aliases = dict(aliases or {})  # class key -> the vocabulary name it reads as
        self.source = dict(source or {})  # how it was built (encoder, prior graph's sha256, ...)

    def __len__(self) -> int:
        return len(self.index)

    @classmethod
    def from_bytes(cls, table: bytes, vectors: bytes, dim: int, what: str = "name table") -> "NameTable":
        """Parse and check both files (the bundle verified their sizes and sha256); BundleError if malformed."""
        try:
            d = json.loads(inflate_bounded(table, what, MAX_JSON_BYTES, "name table").decode("utf-8"))
            if not isinstance(d, dict) or d.get("format") != FORMAT or d.get("version") != VERSION:
                got = (d.get("format"), d.get("version")) if isinstance(d, dict) else (type(d).__name__, None)
                raise ValueError(f"format {got[0]!r} version {got[1]!r}, expected {FORMAT!r} {VERSION}")
            keys, scales = d["keys"], d["scales"]
            if not isinstance(keys, list) or not isinstance(scales, list) or len(keys) != len(scales):
                raise ValueError("keys and scales must be two lists of one length")
            if len(keys) > MAX_NAMES:
                raise ValueError(f"{len(keys)} keys; at most {MAX_NAMES}")
            # keys are class keys as the writer makes them (a key that is not one is simply never matched:
            # re-deriving 33,000 of them costs 140 ms per load), and never qualified
            if any(not isinstance(k, str) or not k or "(" in k for k in keys):
                raise ValueError("every key must be a non-empty class key without a qualifier (runtime/prompt.class_key)")
            if len(set(keys)) != len(keys):
                raise ValueError("a key is listed twice")
            if any(isinstance(s, bool) or not isinstance(s, (int, float)) or not (math.isfinite(s) and s > 0) for s in scales):
                raise ValueError("every scale must be a finite positive number")
            aliases = d.get("aliases", {})
            if not isinstance(aliases, dict) or len(aliases) > MAX_NAMES or any(
                    not isinstance(k, str) or not k or "(" in k or not isinstance(v, str) or not v for k, v in aliases.items()):
                raise ValueError("aliases must map class keys without a qualifier to vocabulary names")
            source = d.get("source", {})
            if not isinstance(source, dict):
                raise ValueError("source must be an object")
            vec = _int8_npy(vectors)
        except BundleError:
            raise
        except (ValueError, KeyError, TypeError, UnicodeDecodeError, OSError, EOFError) as e:
            raise BundleError(f"bundle file {what} is not a usable name table: {str(e)[:200]}") from None
        if vec.dtype != np.int8 or vec.shape != (len(keys), dim):
            raise BundleError(f"the name table's vectors are {vec.dtype}{list(vec.shape)}; its keys and the text "
                              f"encoder promise int8[{len(keys)}, {dim}]: re-export the bundle")
        return cls(keys, vec, np.asarray(scales, np.float32), aliases, source)

    @staticmethod
    def may_hold(key: str) -> bool:
        """Whether a class key can be in a table at all: a qualified name ("mouse (rodent)") never is."""
        return "(" not in key

    def alias(self, text: str) -> str | None:
        """The vocabulary name `text` reads as (its WordNet synset is that name's), or None."""
        return self.aliases.get(class_key(text))

    def get(self, text: str) -> np.ndarray | None:
        """The table's embedding of `text` (by its class key), or None when the table does not hold it."""
        i = self.index.get(class_key(text))
        if i is None:
            return None
        return self.vectors[i].astype(np.float32) * self.scales[i]


def _int8_npy(data: bytes) -> np.ndarray:
    """An int8 .npy read in place (no copy of the 13 MB table; read-only): the header by numpy's own parser."""
    f = io.BytesIO(data)
    version = np.lib.format.read_magic(f)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read_header(f)
    if dtype != np.int8 or fortran or len(shape) != 2:
        raise ValueError(f"the vectors are {dtype}{list(shape)}{' (Fortran order)' if fortran else ''}, not int8 [N, D]")
    n = int(np.prod(shape))
    if f.tell() + n > len(data):
        raise ValueError("the vectors file is truncated")
    return np.frombuffer(data, np.int8, n, offset=f.tell()).reshape(shape)


def load_name_table(bundle, manifest) -> NameTable | None:
    """The bundle's name table, or None for a bundle without one (every text is encoded)."""
    te = manifest.text_encoder
    if not te.name_table:
        return None
    if not te.name_vectors:
        raise BundleError("the manifest names text_encoder.name_table without text_encoder.name_vectors; re-export the bundle")
    table = NameTable.from_bytes(bundle.data(te.name_table), bundle.data(te.name_vectors), te.embedding_dim, te.name_table)
    built_for = table.source.get("prior_sha256")
    if built_for is not None:
        prior = manifest.portable.prior_model
        have = (manifest.files.get(prior) or {}).get("sha256") if prior else None
        if have != built_for:
            raise BundleError(f"the name table {te.name_table} was solved against a prior graph with sha256 {str(built_for)[:12]}..., "
                              f"this bundle's is {str(have)[:12] + '...' if have else 'absent'}: rebuild the table "
                              "(python -m tina_edge.export.name_table BUNDLE --encoder ...) or drop it from the manifest")
    vocab = {class_key(v) for v in manifest.vocabulary if isinstance(v, str)}
    odd = sorted(v for v in table.aliases.values() if class_key(v) not in vocab)
    if odd:
        raise BundleError(f"the name table's aliases name {len(odd)} names outside training.vocabulary (first: {odd[0]!r:.60}); "
                          "re-export the bundle")
    return table
