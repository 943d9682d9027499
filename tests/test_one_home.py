"""Concepts live once (issue 19): graph value names, file writes and the DDIM formula are not restated.

A grep-level check over the package's source (AST, so comments and docstrings do not count); each
rule names the one owner and the few documented exceptions (docs/ARCHITECTURE.md, rule 5)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "tina_edge"


def sources():
    for p in sorted(PKG.rglob("*.py")):
        yield p.relative_to(PKG).as_posix(), ast.parse(p.read_text())


def call_name(node: ast.Call) -> str:
    f = node.func
    parts = []
    while isinstance(f, ast.Attribute):
        parts.append(f.attr)
        f = f.value
    if isinstance(f, ast.Name):
        parts.append(f.id)
    return ".".join(reversed(parts))


# ---------------------------------------------------------------- graph value names: runtime/contracts.py
UNIQUE_GRAPH_NAMES = {"x_t", "timestep", "class_emb", "class_mask", "x0", "input_ids", "attention_mask"}
SHARED_GRAPH_NAMES = {"image", "features", "logits", "probabilities", "embeddings", "noise", "params"}
GRAPH_CALLS = ("run", "run_graph", "make_tensor_value_info", "make_node", "export")


def graph_name_literals(tree: ast.AST) -> list[tuple[int, str]]:
    """String literals naming graph values: the unique names anywhere outside docstrings, the shared
    ones where a graph is run or built (session.run feeds/outputs, onnx.helper, torch.onnx.export)."""
    found = []
    doc_nodes = {id(n.body[0].value) for n in ast.walk(tree)
                 if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)) and n.body
                 and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in doc_nodes \
                and node.value in UNIQUE_GRAPH_NAMES:
            found.append((node.lineno, node.value))
        if isinstance(node, ast.Call) and call_name(node).split(".")[-1] in GRAPH_CALLS:
            for arg in list(node.args) + [k.value for k in node.keywords]:
                for sub in ast.walk(arg):
                    if isinstance(sub, ast.Constant) and sub.value in SHARED_GRAPH_NAMES:
                        found.append((sub.lineno, sub.value))
    return sorted(set(found))


def test_graph_value_names_are_declared_once_in_contracts():
    bad = [f"{path}:{line} {name!r}" for path, tree in sources() if path != "runtime/contracts.py"
           for line, name in graph_name_literals(tree)]
    assert bad == [], "use the constants of runtime/contracts.py:\n" + "\n".join(bad)


def test_the_graph_name_check_finds_a_restated_name():
    tree = ast.parse('sess.run(["logits"], {"image": x})\nfeeds = {"class_emb": e}\n')
    assert graph_name_literals(tree) == [(1, "image"), (1, "logits"), (2, "class_emb")]


# ---------------------------------------------------------------- file writes: runtime/atomic.py
WRITE_EXCEPTIONS = {
    "runtime/atomic.py": "the owner",
    "runtime/archive_write.py": "extraction streams members into a fresh temporary directory, size-capped",
    "train/zoo/features.py": "resumable memmaps: rows count only once their done flag is set",
    "export/bundle.py": "renames a quantizer's output file inside the directory atomic_output_dir commits whole",
    "export/portable/ort_format.py": "onnxruntime's ORT converter writes by path inside the bundle being built",
}


def write_calls(tree: ast.AST) -> list[tuple[int, str]]:
    """Calls that write or move a file by hand: Path.write_text/write_bytes, numpy's save*, onnx.save,
    safetensors' save_file, torch.save to a path, savefig to a path, os.replace/rename, a one-argument
    `.replace(target)` (Path.replace), shutil's copies, open(..., "w"/"a"/"x")."""
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = call_name(node)
        head, _, last = name.rpartition(".")
        first = node.args[0] if node.args else None
        to_memory = isinstance(first, ast.Name) and first.id in ("buf", "io_buf")
        hit = (last in ("write_text", "write_bytes")
               or (head in ("np", "numpy") and last.startswith("save"))
               or name in ("onnx.save", "onnx.save_model", "save_file", "os.replace", "os.rename")
               or (name == "torch.save" and not (len(node.args) > 1 and isinstance(node.args[1], ast.Name)
                                                 and node.args[1].id == "buf"))
               or (last == "savefig" and not to_memory)
               or (head == "shutil" and last.startswith("copy"))
               or (last == "replace" and head not in ("", "dataclasses") and len(node.args) == 1 and not node.keywords)
               or (name == "open" and any(isinstance(a, ast.Constant) and isinstance(a.value, str) and set(a.value) & set("wax")
                                          for a in node.args[1:2] + [k.value for k in node.keywords if k.arg == "mode"])))
        if hit:
            out.append((node.lineno, name))
    return out


def test_every_file_write_goes_through_atomic():
    bad = [f"{path}:{line} {name}" for path, tree in sources() if path not in WRITE_EXCEPTIONS
           for line, name in write_calls(tree)]
    assert bad == [], "write through runtime/atomic.py:\n" + "\n".join(bad)


def test_the_write_check_finds_a_hand_written_write():
    tree = ast.parse('p.write_text("x")\nnp.save(p, a)\nos.replace(t, p)\nopen(p, "wb")\ntmp.replace(p)\n'
                     '"ab".replace("a", "b")\nreplace(cfg, k=1)\nfig.savefig(buf, format="png")\nopen(p)\n')
    assert [n for _, n in write_calls(tree)] == ["p.write_text", "np.save", "os.replace", "open", "tmp.replace"]


# ---------------------------------------------------------------- the DDIM / DDPM step formula: runtime/samplers.py
@pytest.mark.parametrize("word", ["alphas_cumprod", "abar"])
def test_the_step_formula_reads_the_schedule_in_one_place(word):
    owners = {"runtime/samplers.py", "runtime/schedule.py", "train/diffusion/process.py"}
    bad = [path for path, tree in sources() if path not in owners
           for node in ast.walk(tree) if isinstance(node, (ast.Attribute, ast.Name))
           and (getattr(node, "attr", None) or getattr(node, "id", None)) == word]
    assert bad == [], f"{word} outside the sampler/schedule: {sorted(set(bad))}"
