"""Edge tokenizer: a bundle's `tokenizer.json` run by the `tokenizers` library, no torch.

`tokenizers` does the BPE / WordPiece work; the only thing it cannot do is CLIP's text cleaning
(ftfy's fix_text, html unescape, whitespace collapse, lower-case), which open_clip applies in
Python before its BPE. `clean_clip_text` reproduces it line by line so token ids match open_clip
exactly on odd unicode too. Texts longer than `max_tokens` are truncated (the end token is kept),
never rejected: class names that long still identify the class by their first words.
"""

from __future__ import annotations

import html
import os
from typing import Sequence

import numpy as np

from .errors import BundleError

CLEANINGS = ("none", "clip")


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

    def __init__(self, tokenizer, *, max_tokens: int, cleaning: str = "none", pad_id: int = 0):
        if cleaning not in CLEANINGS:
            raise BundleError(f"unknown tokenizer cleaning {cleaning!r}; this tina-edge knows {CLEANINGS}")
        if max_tokens < 2:
            raise BundleError(f"max_tokens must be at least 2, got {max_tokens}")
        self.max_tokens = int(max_tokens)
        self.cleaning = cleaning
        self.pad_id = int(pad_id)
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
        return cls(tok, max_tokens=max_tokens, cleaning=cleaning, pad_id=pad_id)

    @classmethod
    def from_bytes(cls, data: bytes, *, max_tokens: int, cleaning: str = "none", pad_id: int = 0,
                   what: str = "tokenizer.json") -> "Tokenizer":
        """From the verified bytes of a bundle's tokenizer.json (never re-opened by path)."""
        from tokenizers import Tokenizer as HFTokenizer

        try:
            tok = HFTokenizer.from_str(data.decode("utf-8"))
        except Exception as e:  # tokenizers raises a bare Exception on a bad file
            raise BundleError(f"cannot read tokenizer file {what}: {str(e)[:200]}; re-export the bundle") from None
        return cls(tok, max_tokens=max_tokens, cleaning=cleaning, pad_id=pad_id)

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
        enc = self._tok.encode_batch(texts)
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        return ids, mask
