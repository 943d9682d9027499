"""Turning a user's class prompt into a clean list of class names.

Rules (each failure is one PromptError sentence):
- Input is one string "dog, cat" or a sequence of strings, each of which may itself hold
  comma-separated names (["dog,cat", "horse"]).
- Each name is NFC-normalised, control characters (Unicode category Cc, e.g. NUL, ESC, DEL) and
  invisible format characters (category Cf: zero-width space, soft hyphen, BOM, word joiner, ...;
  plus the invisible "filler" letters) are dropped, any run of whitespace (tabs, newlines
  included) becomes one space, and the ends are stripped. ZWJ/ZWNJ are kept (emoji sequences and
  Indic/Persian spelling need them). Emoji, accents and any script are kept as written.
- Refused: bidirectional override/embedding/isolate characters (they make a label display as
  something else), and a name that is empty or has nothing visible after cleaning.
- Names longer than MAX_NAME_CHARS characters are truncated (the text encoder only reads a few
  dozen tokens anyway); truncation happens before the duplicate check.
- Refused: an empty prompt, an empty name between commas (the position is named), a name given
  twice after case-folding and whitespace normalisation, and text that is not valid UTF-8
  (undecodable command-line bytes arrive as lone surrogates).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

from .errors import PromptError

MAX_NAME_CHARS = 200
MAX_PROMPT_CHARS = 100_000  # a whole prompt; a bundle allows at most K_max (<= 1000) names anyway
MAX_DESCRIPTION_CHARS = 1000
_KEEP_FORMAT = {"\u200c", "\u200d"}  # ZWNJ, ZWJ: meaningful in Indic/Persian text and emoji sequences
_BIDI_CONTROLS = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_FILLERS = set("\u115f\u1160\u3164\uffa0\u2800\u034f\u180e")  # render as nothing, yet are "letters"
_INVISIBLE_CATEGORIES = {"Cc", "Cf", "Zs", "Zl", "Zp", "Mn", "Me", "Cs", "Co", "Cn"}


def _has_surrogates(s: str) -> bool:
    return any("\ud800" <= ch <= "\udfff" for ch in s)


def _dropped(ch: str) -> bool:
    cat = unicodedata.category(ch)
    return cat == "Cc" or (cat == "Cf" and ch not in _KEEP_FORMAT and ch not in _BIDI_CONTROLS) or ch in _FILLERS


def clean_text(s: str) -> str:
    """NFC, drop control and invisible format characters, collapse whitespace, strip (shared with descriptions)."""
    s = unicodedata.normalize("NFC", s)
    s = "".join(" " if ch.isspace() else ch for ch in s if ch.isspace() or not _dropped(ch))
    return unicodedata.normalize("NFC", " ".join(s.split()))


def is_visible(s: str) -> bool:
    """Whether a cleaned text shows anything (not only joiners, combining marks or spaces)."""
    return any(unicodedata.category(ch) not in _INVISIBLE_CATEGORIES for ch in s)


def check_text(s: str, what: str) -> None:
    """Refuse bidi controls (a label that displays as another) in a cleaned name or description."""
    bad = sorted({f"U+{ord(ch):04X}" for ch in s if ch in _BIDI_CONTROLS})
    if bad:
        raise PromptError(f"{what} contains bidirectional control characters ({', '.join(bad)}) that make text "
                          "display as something else; remove them")


def class_key(name: str) -> str:
    """The identity of a class name: cleaned and case-folded ("Dog " and "dog" are the same class)."""
    return unicodedata.normalize("NFC", clean_text(name).casefold())


def _pieces(prompt: str | Sequence[str]) -> list[str]:
    if isinstance(prompt, (bytes, bytearray)):
        try:
            prompt = bytes(prompt).decode("utf-8")
        except UnicodeDecodeError:
            raise PromptError("the prompt is not valid UTF-8 text; pass class names as text") from None
    if isinstance(prompt, str):
        items = [prompt]
    elif isinstance(prompt, Sequence):
        items = list(prompt)
    else:
        raise PromptError(f"the prompt must be a string or a list of strings, got {type(prompt).__name__}")
    if sum(len(it) for it in items if isinstance(it, str)) > MAX_PROMPT_CHARS:
        raise PromptError(f"the prompt is longer than {MAX_PROMPT_CHARS} characters; name the classes briefly")
    out: list[str] = []
    for it in items:
        if not isinstance(it, str):
            raise PromptError(f"every class name must be a string, got {type(it).__name__} ({it!r:.40})")
        if _has_surrogates(it):
            raise PromptError(
                "the prompt contains bytes that are not valid UTF-8 (check the terminal's encoding); "
                "pass class names as UTF-8 text"
            )
        out.extend(it.split(","))
    return out


def _blank(raw: str) -> bool:
    """Nothing but spaces and control characters: a stray comma, not an invisible name."""
    return all(ch.isspace() or unicodedata.category(ch) == "Cc" for ch in raw)


def _shown(raw: str) -> str:
    """A name as the user typed it, with invisible characters made visible (\\u200b, ...)."""
    raw = " ".join(raw.split())
    return "".join(ch if ch.isprintable() else f"\\u{ord(ch):04x}" for ch in raw[:MAX_NAME_CHARS])


def parse_classes(prompt: str | Sequence[str]) -> list[str]:
    """Split and clean a class prompt; raise PromptError for empty, stray-comma, invisible or duplicate names."""
    pieces = _pieces(prompt)
    names = [clean_text(p) for p in pieces]
    if all(_blank(p) for p in pieces):
        raise PromptError('the prompt is empty; name at least 2 classes separated by commas, e.g. "dog, cat"')
    for i, n in enumerate(names):
        if _blank(pieces[i]):
            raise PromptError(
                f"class name {i + 1} of {len(names)} is empty (a stray comma?); "
                'separate class names with single commas, e.g. "dog, cat"'
            )
        check_text(n, f"class name {i + 1}")
        if not n or not is_visible(n):
            raise PromptError(f'class name {i + 1} of {len(names)} ("{_shown(pieces[i])}") has no visible characters; '
                              "give every class a readable name")
    names = [n[:MAX_NAME_CHARS].rstrip() if len(n) > MAX_NAME_CHARS else n for n in names]
    seen: dict[str, int] = {}
    for i, n in enumerate(names):
        k = class_key(n)
        if k in seen:
            j = seen[k]
            if names[j] != n:
                how = f' (as "{names[j]}" and "{n}"; case and spacing are ignored)'
            else:
                first, again = _shown(pieces[j]), _shown(pieces[i])
                how = "" if first == again else f' (as "{first}" and "{again}"; invisible characters are ignored)'
            raise PromptError(f'the class "{names[j]}" is named twice{how}; name each class once')
        seen[k] = i
    return names


def check_class_count(names: Sequence[str], k_max: int) -> None:
    """A classifier needs 2..k_max classes; say the allowed range otherwise."""
    k = len(names)
    if k < 2:
        got = f'only 1 class ("{names[0]}")' if k == 1 else "no classes"
        raise PromptError(f"a classifier needs at least 2 classes but the prompt has {got}; this bundle allows 2 to {k_max}")
    if k > k_max:
        raise PromptError(f"the prompt has {k} classes but this bundle allows 2 to {k_max}; split the task or use a bigger bundle")
