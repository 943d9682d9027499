"""Text from strangers (labels, file names, manifest strings) made safe for a terminal or a pipe.

A label or file name may hold ESC sequences (which recolour, retitle or rewrite a terminal),
carriage returns, newlines that fake extra output lines, or bidi overrides that make text display
as something else. Everything the CLI prints passes through `safe`: printable characters stay as
they are (any script, emoji), everything else becomes a visible escape such as \\x1b or \\u202e.
JSON output uses `json_text`: always valid JSON (no NaN/Infinity) with the same escaping.
"""

from __future__ import annotations

import json
import math
from typing import Any

_KEEP = {"\u200c", "\u200d"}  # ZWNJ/ZWJ: part of emoji sequences and Indic/Persian words, harmless


def _escape(ch: str) -> str:
    o = ord(ch)
    if o < 0x100:
        return f"\\x{o:02x}"
    if o < 0x10000:
        return f"\\u{o:04x}"
    return f"\\U{o:08x}"


def safe(text: Any) -> str:
    """`text` as one printable line: control, format, separator and surrogate characters escaped."""
    s = text if isinstance(text, str) else str(text)
    if s.isprintable():
        return s
    return "".join(ch if ch.isprintable() or ch in _KEEP else _escape(ch) for ch in s)


def one_line(text: str) -> str:
    """An error message as exactly one safe line."""
    return safe(text)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def json_text(obj: Any, **kw: Any) -> str:
    """Valid, strict JSON (non-finite numbers become null), non-printable characters \\u-escaped."""
    text = json.dumps(_finite(obj), ensure_ascii=False, allow_nan=False, **kw)
    if text.isprintable():
        return text
    # outside strings JSON is printable ASCII, so every non-printable character sits inside a
    # string, where a \u escape (a surrogate pair above U+FFFF) means the same character
    out = []
    for ch in text:
        if ch.isprintable() or ch == "\n" and kw.get("indent") is not None:
            out.append(ch)
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            v = ord(ch) - 0x10000
            out.append(f"\\u{0xD800 + (v >> 10):04x}\\u{0xDC00 + (v & 0x3FF):04x}")
    return "".join(out)
