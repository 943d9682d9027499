"""`tina-edge` command line. Runtime commands never import torch; train/export import it lazily."""

from __future__ import annotations

import sys

import click

from .. import __version__
from ..runtime.errors import TinaEdgeError


class _Group(click.Group):
    """Click group that turns TinaEdgeError into one clear line on stderr and exit status 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except TinaEdgeError as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted; no partial output was left behind", err=True)
            ctx.exit(130)


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
