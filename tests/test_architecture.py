"""The import graph of tina_edge matches docs/ARCHITECTURE.md (issue 19): no cycles anywhere, train/
in rooms whose imports only point down, old module paths name their new home."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "tina_edge"
# lower index = lower layer; a module may import its own room and the rooms below it
TRAIN_ROOMS = ["configs", "workdir", "data", "zoo", "text", "diffusion", "prior", "evaluation", "stages"]
TOP_ROOMS = ["runtime", "train", "export", "cli"]


def module_name(p: Path) -> str:
    parts = p.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    mods = {module_name(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, p in mods.items():
        pkg = mod if p.name == "__init__.py" else mod.rsplit(".", 1)[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([node.module] if node.module else []))
                cands = [base] + [f"{base}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                cands = [a.name for a in node.names]
            else:
                continue
            deps |= {c for c in cands if c in mods and c != mod}
        graph[mod] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def room(mod: str, prefix: str, rooms: list[str]) -> int | None:
    if not mod.startswith(prefix):
        return None
    head = mod[len(prefix):].split(".")[0]
    return rooms.index(head) if head in rooms else None


def test_no_import_cycles_anywhere_in_the_package():
    assert cycles(import_graph()) == []


def test_the_cycle_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]


def test_train_is_six_to_eight_rooms_with_no_loose_modules():
    top = sorted(p.name for p in (PKG / "train").iterdir() if not p.name.startswith(("_", ".")))
    rooms = [p for p in top if (PKG / "train" / p).is_dir()]
    assert 6 <= len(rooms) <= 8, rooms
    # torch-free foundations the CLI reads before any training code: defaults, the work directory
    assert [p for p in top if p.endswith(".py")] == ["configs.py", "workdir.py"]


@pytest.mark.parametrize("prefix,rooms", [("tina_edge.train.", TRAIN_ROOMS), ("tina_edge.", TOP_ROOMS)])
def test_imports_only_point_down(prefix, rooms):
    bad = []
    for mod, deps in import_graph().items():
        a = room(mod, prefix, rooms)
        for d in deps:
            b = room(d, prefix, rooms)
            if a is not None and b is not None and b > a:
                bad.append(f"{mod} -> {d}")
    assert bad == []


@pytest.mark.parametrize("old,new", [("trainer", "diffusion.trainer"), ("pipeline", "stages.small"),
                                     ("photo_pipeline", "stages.photos"), ("text_prior", "prior.fit")])
def test_an_old_module_path_names_its_new_home(old, new):
    with pytest.raises(ImportError, match=f"tina_edge.train.{old} moved to tina_edge.train.{new}"):
        importlib.import_module(f"tina_edge.train.{old}")


def test_export_shows_its_torch_free_half():
    with pytest.raises(ImportError, match="tina_edge.export.generate moved to tina_edge.export.portable.generate"):
        importlib.import_module("tina_edge.export.generate")
    for p in (PKG / "export" / "portable").glob("*.py"):  # convert runs these without the [train] extra
        assert "import torch" not in p.read_text() and "require_torch" not in p.read_text(), p.name


def test_every_import_inside_the_package_names_a_module_that_exists():
    """Lazy imports inside functions too: a module moved without its importers is found here, not in a user's run."""
    mods = {module_name(p) for p in PKG.rglob("*.py")}
    bad = []
    for p in PKG.rglob("*.py"):
        mod = module_name(p)
        pkg = mod if p.name == "__init__.py" else mod.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("tina_edge")):
                base = node.module or ""
                if node.level:
                    up = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([node.module] if node.module else []))
                if base not in mods:
                    bad.append(f"{p.relative_to(PKG.parent)}:{node.lineno} imports {base}")
    assert bad == []


def test_errors_are_named_for_what_they_are():
    """Only the CLI's catch-all mapping (cli/errors.py) raises the bare base class; every other error
    a user can cause has a specific type from runtime/errors.py."""
    bare = [f"{p.relative_to(PKG).as_posix()}:{node.lineno}" for p in PKG.rglob("*.py")
            for node in ast.walk(ast.parse(p.read_text()))
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)
            and getattr(node.exc.func, "id", None) == "TinaEdgeError"]
    assert [b for b in bare if not b.startswith("cli/errors.py")] == []
