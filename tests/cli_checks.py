"""What every refused CLI call must look like, shared by the CLI test files."""

from __future__ import annotations


def one_error_line(r, *words: str) -> str:
    """Exit status 2, exactly one `error: ...` line on stderr naming `words`, no traceback, no ANSI escapes."""
    assert r.exit_code == 2, (r.exit_code, r.output)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert "Traceback" not in r.output and "\x1b" not in r.output
    return lines[0]
