"""Output for the edge commands: JSON on stdout, escaped human lines on stderr, byte sizes.

Shared by personalize, predict, info and evaluate so every command prints the same way.
"""

from __future__ import annotations

import click

from .safe_text import json_text, safe


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _echo_json(obj, **kw) -> None:
    """Strict JSON on stdout: readable UTF-8; control, format and undecodable characters \\u-escaped;
    non-finite numbers as null."""
    click.echo(json_text(obj, **kw))


def _echo(*lines: str) -> None:
    """Human-readable lines on stderr, each escaped (labels and paths come from strangers)."""
    for line in lines:
        click.echo(safe(line), err=True)
