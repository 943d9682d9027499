"""Modules that moved keep a clear error at their old path (`import old` names the new home)."""

from __future__ import annotations

import importlib.abc
import sys


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    """`import tina_edge.train.trainer` -> ModuleNotFoundError "... moved to tina_edge.train.diffusion.trainer"."""

    def __init__(self, package: str, moved: dict[str, str]):
        self.prefix, self.moved = package + ".", moved

    def find_spec(self, fullname, path=None, target=None):
        old = fullname[len(self.prefix):] if fullname.startswith(self.prefix) else None
        if old in self.moved:
            new = self.prefix + self.moved[old]
            # name=new: `from pkg import old` re-raises this message rather than a bare "cannot import name"
            raise ModuleNotFoundError(f"{fullname} moved to {new}; import it from there", name=new)
        return None


def register_moved(package: str, moved: dict[str, str]) -> None:
    """Install the finder for `package` once (re-imports of the package do not stack finders)."""
    if not any(isinstance(f, MovedModuleFinder) and f.prefix == package + "." for f in sys.meta_path):
        sys.meta_path.insert(0, MovedModuleFinder(package, moved))
