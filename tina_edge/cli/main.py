"""`tina-edge` command line. Runtime commands never import torch; train/export import it lazily."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading

import click

from .. import __version__
from ..runtime.errors import TinaEdgeError
from .safe_text import one_line


class Terminated(BaseException):
    """SIGTERM/SIGHUP as an exception, so every `finally` and temp-file cleanup runs before exit."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _raise_terminated(signum, _frame):
    raise Terminated(signum)


@contextlib.contextmanager
def _terminate_as_exception():
    """While a command runs, SIGTERM and SIGHUP unwind the stack like Ctrl-C (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {}
    for sig in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is not None:
            old[sig] = signal.signal(sig, _raise_terminated)
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


class _Group(click.Group):
    """Click group that turns every user error into one escaped line on stderr and exit status 2.

    TinaEdgeError and click's own usage errors alike: `error: <sentence>`, no traceback, no raw
    control or escape sequence (file names and labels come from strangers).
    """

    def invoke(self, ctx: click.Context):
        try:
            with _terminate_as_exception():
                return super().invoke(ctx)
        except TinaEdgeError as e:
            click.echo(f"error: {one_line(str(e))}", err=True)
            ctx.exit(2)
        except click.ClickException as e:  # a subcommand's usage error: one line too (click adds usage + hint)
            if isinstance(e, getattr(click.exceptions, "NoArgsIsHelpError", ())):
                raise
            click.echo(f"error: {one_line(e.format_message())}", err=True)
            ctx.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted; no partial output was left behind", err=True)
            ctx.exit(130)
        except Terminated as e:
            name = signal.Signals(e.signum).name
            click.echo(f"terminated by {name}; no partial output was left behind", err=True)
            ctx.exit(128 + e.signum)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="tina-edge")
def main() -> None:
    """tina-edge: turn a text prompt naming classes into a standalone ONNX image classifier.

    \b
    Edge (no torch needed):
      tina-edge personalize "dog, cat, horse" -o model.onnx
      tina-edge predict model.onnx photo.jpg
      tina-edge info [BUNDLE]
      tina-edge convert [BUNDLE] -o OUT [--ort]   portable files for JS / mobile
    Server (needs the [train] extra):
      tina-edge train ...      generic model, p-model zoo, diffusion, eval
      tina-edge export --ckpt CKPT -o BUNDLE
    """


def _register() -> None:
    from . import portable_cmds, runtime_cmds

    for cmd in runtime_cmds.COMMANDS + portable_cmds.COMMANDS:
        main.add_command(cmd)
    try:
        from . import train_cmds
    except ImportError:  # the module itself is torch-free; only missing files end here
        return
    for cmd in train_cmds.COMMANDS:
        main.add_command(cmd)


_register()

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
