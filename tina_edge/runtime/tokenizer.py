"""Edge tokenizer: a bundle's `tokenizer.json` run by the `tokenizers` library, no torch.

`tokenizers` does the BPE / WordPiece work; the only thing it cannot do is CLIP's text cleaning
(ftfy's fix_text, html unescape, whitespace collapse, lower-case), which open_clip applies in
Python before its BPE. `clean_clip_text` reproduces it line by line so token ids match open_clip
exactly on odd unicode too. Texts longer than `max_tokens` are truncated (the end token is kept),
never rejected: class names that long still identify the class by their first words.
"""

from __future__ import annotations

import html
import json
import os
from typing import Any, Sequence

import numpy as np

from .errors import BundleError

CLEANINGS = ("none", "clip")

# open_clip's SimpleTokenizer pattern (compiled there with re.IGNORECASE); export/text_encoder.py writes it
CLIP_PATTERN = r"""(?i)<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""

# Every regular expression a tokenizer.json may carry (Split pre-tokenizers, Replace normalizers and
# decoders). `tokenizers` runs them with Oniguruma, a backtracking engine: a pattern such as (a+)+$
# takes exponential time on "aaaa...b" and ends in a Rust panic (or does not end), so a bundle may only
# use the patterns of the text encoders tina-edge exports: CLIP's (ours, and Hugging Face's form of it)
# and the whitespace collapses of CLIP's and sentencepiece-converted normalizers; BERT and MPNet
# tokenizers (sentence-transformers) use none. Each is an alternation of single-quantified character
# classes that start differently, which Oniguruma matches in linear time.
KNOWN_REGEXES = frozenset({
    CLIP_PATTERN,
    r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",  # Hugging Face CLIP pre-tokenizer
    r"\s+",  # Hugging Face CLIP normalizer: whitespace runs -> one space
    r" {2,}",  # sentencepiece-converted normalizers (T5, XLM-R based encoders)
})


def _regexes(node: Any) -> list[str]:
    """Every {"Regex": pattern} value inside a parsed tokenizer component."""
    if isinstance(node, dict):
        found = [node["Regex"]] if isinstance(node.get("Regex"), str) else []
        return found + [r for v in node.values() for r in _regexes(v)]
    if isinstance(node, list):
        return [r for v in node for r in _regexes(v)]
    return []


def check_regexes(tokenizer: Any, what: str = "tokenizer.json") -> None:
    """Refuse a tokenizer whose normalizer, pre-tokenizer, post-processor or decoder uses a regular
    expression outside KNOWN_REGEXES (read from the components `tokenizers` itself parsed)."""
    for part in ("normalizer", "pre_tokenizer", "post_processor", "decoder"):
        comp = getattr(tokenizer, part, None)
        if comp is None:
            continue
        for pattern in _regexes(json.loads(comp.__getstate__())):
            if pattern not in KNOWN_REGEXES:
                raise BundleError(f"{what} splits or replaces text with the regular expression {pattern!r:.80}, which is "
                                  "not one a known text encoder's tokenizer uses (a pattern can take exponential "
                                  "time); re-export the bundle with its encoder's own tokenizer")


def is_rust_panic(e: BaseException) -> bool:
    """A panic inside `tokenizers` (pyo3's PanicException derives from BaseException, not Exception)."""
    return type(e).__name__ == "PanicException"


def clean_clip_text(text: str) -> str:
    """open_clip's `_clean_lower`: whitespace_clean(basic_clean(text)).lower()."""
    import ftfy

    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text))
    text = text.strip()
    text = " ".join(text.split()).strip()
    return text.lower()


class Tokenizer:
    """Fixed-length tokenization: every text becomes exactly `max_tokens` ids plus a mask."""

    def __init__(self, tokenizer, *, max_tokens: int, cleaning: str = "none", pad_id: int = 0,
                 what: str = "tokenizer.json"):
        if cleaning not in CLEANINGS:
            raise BundleError(f"unknown tokenizer cleaning {cleaning!r}; this tina-edge knows {CLEANINGS}")
        if max_tokens < 2:
            raise BundleError(f"max_tokens must be at least 2, got {max_tokens}")
        self.max_tokens = int(max_tokens)
        self.cleaning = cleaning
        self.pad_id = int(pad_id)
        self.what = what
        check_regexes(tokenizer, what)
        # the bundle's spec decides length and padding, whatever the file was saved with
        tokenizer.enable_truncation(max_length=self.max_tokens)
        pad_token = tokenizer.id_to_token(self.pad_id) or "[PAD]"
        tokenizer.enable_padding(length=self.max_tokens, pad_id=self.pad_id, pad_token=pad_token)
        self._tok = tokenizer

    @classmethod
    def from_file(cls, path: str | os.PathLike, *, max_tokens: int, cleaning: str = "none",
                  pad_id: int = 0) -> "Tokenizer":
        from tokenizers import Tokenizer as HFTokenizer

        try:
            tok = HFTokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception on a bad file
            raise BundleError(f"cannot read tokenizer file {path}: {e}; re-export the bundle") from None
        return cls(tok, max_tokens=max_tokens, cleaning=cleaning, pad_id=pad_id, what=str(path))

    @classmethod
    def from_bytes(cls, data: bytes, *, max_tokens: int, cleaning: str = "none", pad_id: int = 0,
                   what: str = "tokenizer.json") -> "Tokenizer":
        """From the verified bytes of a bundle's tokenizer.json (never re-opened by path)."""
        from tokenizers import Tokenizer as HFTokenizer

        try:
            tok = HFTokenizer.from_str(data.decode("utf-8"))
        except BaseException as e:  # tokenizers raises a bare Exception on a bad file, or panics
            if not isinstance(e, Exception) and not is_rust_panic(e):
                raise
            raise BundleError(f"cannot read tokenizer file {what}: {str(e)[:200]}; re-export the bundle") from None
        return cls(tok, max_tokens=max_tokens, cleaning=cleaning, pad_id=pad_id, what=what)

    def clean(self, text: str) -> str:
        return clean_clip_text(text) if self.cleaning == "clip" else text

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """input_ids, attention_mask: int64 [n, max_tokens]."""
        if isinstance(texts, str):
            texts = [texts]
        texts = [self.clean(t) for t in texts]
        if not texts:
            z = np.zeros((0, self.max_tokens), np.int64)
            return z, z.copy()
        try:
            enc = self._tok.encode_batch(texts)
        except BaseException as e:  # a panic in `tokenizers` is a BaseException: `except Exception` would miss it
            if not isinstance(e, Exception) and not is_rust_panic(e):
                raise
            raise BundleError(f"{self.what} cannot tokenize the text ({' '.join(str(e).split())[:160]}); "
                              "the tokenizer is broken; re-export the bundle") from None
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        return ids, mask
