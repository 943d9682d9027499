"""Helpers shared by the benchmark scripts: options, held-out tasks, fast exact accuracy, tables, timing.

Benchmarks are scripts, not tests: each prints Markdown tables on stdout and can write JSON
(--json-out) and a PNG (--plot). Run them from the repository root (see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from dataclasses import dataclass
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python benchmarks/x.py` from anywhere without installing
    sys.path.insert(0, str(ROOT))


# ------------------------------------------------------------------------------------- options


def add_output_options(p: argparse.ArgumentParser, plot: bool = False) -> None:
    p.add_argument("--json-out", type=Path, default=None, help="Also write the results as JSON here.")
    if plot:
        p.add_argument("--plot", type=Path, default=None, help="Also write a matplotlib PNG here.")


def add_data_options(p: argparse.ArgumentParser) -> None:
    """The training CLI's data options: the test split of the same class universe."""
    g = p.add_argument_group("test data (same options as `tina-edge train eval`)")
    g.add_argument("--cifar10", default=None, help="CIFAR-10 as DIR/<split>/<class>/*.jpg")
    g.add_argument("--fashion-mnist", default=None, help="Fashion-MNIST idx files directory")
    g.add_argument("--image-folder", action="append", default=[], help="Any DIR/<split>/<class>/*.jpg (repeatable)")
    g.add_argument("--cifar-pickle", action="append", default=[], help="CIFAR-10/100 python layout (repeatable)")
    g.add_argument("--cache", default=None, help="Cache directory for the decoded default universe (npz)")
    g.add_argument("--max-per-class", type=int, default=None,
                   help="Use at most N test images per class (default: all, as eval.json does)")


def add_task_options(p: argparse.ArgumentParser, default_max: int | None = None) -> None:
    p.add_argument("--workdir", type=Path, required=True, help="Training work dir (tasks.json, eval/eval.json)")
    p.add_argument("--max-tasks", type=int, default=default_max,
                   help="At most N tasks per kind (ID, OOD), spread over k and held-out classes (default: %(default)s = all)")
    p.add_argument("--kinds", default="id,ood", help="Which task kinds: id, ood or id,ood (default: %(default)s)")
    p.add_argument("--eval-json", type=Path, default=None,
                   help="eval.json with the reference rows (default: WORKDIR/eval/eval.json)")


def int_list(text: str) -> list[int]:
    return [int(x) for x in str(text).split(",") if x.strip()]


# ------------------------------------------------------------------------------------- data + tasks


def load_test_data(args: argparse.Namespace):
    """The test split (ImageDataset) of the universe named by the data options."""
    from tina_edge.train.stages.small import load_universe

    if not (args.cifar10 or args.fashion_mnist or args.image_folder or args.cifar_pickle):
        sys.exit("no test data given: pass --cifar10 DIR --fashion-mnist DIR (and --cache DIR), or --image-folder DIR")
    return load_universe(cifar10=args.cifar10, fashion_mnist=args.fashion_mnist, image_folders=tuple(args.image_folder),
                         cifar_pickles=tuple(args.cifar_pickle), split="test", cache_dir=args.cache)


def pick_balanced(tasks: Sequence[Sequence[str]], n: int | None, holdout: Sequence[str] = ()) -> list[list[str]]:
    """n tasks spread over k first, then over held-out classes, earliest first (deterministic).

    Greedy: each pick is the task whose k, then whose held-out class, has been picked least so far.
    With n = 9 and k = 2..10 every k appears once; OOD picks also rotate through the held-out classes.
    """
    tasks = [list(t) for t in tasks]
    if n is None or n >= len(tasks):
        return tasks
    k_count: dict[int, int] = {}
    h_count: dict[str | None, int] = {}
    left, out = list(range(len(tasks))), []
    for _ in range(max(n, 0)):
        def key(i):
            t = tasks[i]
            return k_count.get(len(t), 0), h_count.get(holdout_of(t, holdout), 0), i
        best = min(left, key=key)
        left.remove(best)
        t = tasks[best]
        k_count[len(t)] = k_count.get(len(t), 0) + 1
        h_count[holdout_of(t, holdout)] = h_count.get(holdout_of(t, holdout), 0) + 1
        out.append(best)
    return [tasks[i] for i in sorted(out)]


def load_tasks(workdir: Path, max_tasks: int | None = None, kinds: str = "id,ood") -> tuple[list[tuple[str, list[str]]], dict]:
    """[(kind, classes)] from W/tasks.json (ID then OOD) and the whole split dict."""
    path = Path(workdir) / "tasks.json"
    if not path.is_file():
        sys.exit(f"{path} does not exist; run `tina-edge train zoo --workdir {workdir} ...` first")
    split = json.loads(path.read_text())
    want = {k.strip().lower() for k in kinds.split(",") if k.strip()}
    out: list[tuple[str, list[str]]] = []
    for kind, key in (("id", "id_test"), ("ood", "ood_test")):
        if kind in want:
            out += [(kind, t) for t in pick_balanced(split.get(key, []), max_tasks, split.get("holdout", []))]
    return out, split


def eval_rows(workdir: Path, path: Path | None = None) -> tuple[dict[tuple[str, tuple[str, ...]], dict], dict]:
    """eval.json (default W/eval/eval.json) per-task rows keyed by (kind, classes in prompt order), and the file."""
    path = Path(path) if path else Path(workdir) / "eval" / "eval.json"
    if not path.is_file():
        print(f"note: {path} does not exist; the reference columns stay empty (pass --eval-json FILE)", file=sys.stderr)
        return {}, {}
    ev = json.loads(path.read_text())
    ev["_path"] = str(path)
    return {(r["kind"], tuple(r["classes"])): r for r in ev.get("tasks", [])}, ev


def holdout_of(classes: Sequence[str], holdout: Sequence[str]) -> str | None:
    return next((c for c in classes if c in holdout), None)


# ------------------------------------------------------------------------------------- accuracy


def _generated_consumers(model, names: set[str]) -> list:
    return [n for n in model.graph.node if any(i in names for i in n.input)]


def subgraph(model, inputs: list[str], outputs: list[str]):
    """The part of `model` computing `outputs` from `inputs` (float tensors of any shape).

    onnx.utils.Extractor needs inferred shapes for every cut tensor, which templates with a free
    class axis do not all have; walking the nodes backwards from the outputs needs none.
    """
    import onnx
    from onnx import helper

    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    known = {i.name: i for i in g.input} | {o.name: o for o in g.output}
    need, keep, stack = set(outputs), [], list(outputs)
    while stack:
        name = stack.pop()
        if name in inputs or name not in producer:
            continue
        node = producer.pop(name)
        keep.append(node)
        for i in node.input:
            if i and i not in need:
                need.add(i)
                stack.append(i)
    keep_ids = {id(n) for n in keep}
    nodes = [n for n in g.node if id(n) in keep_ids]  # original (topological) order
    inits = [t for t in g.initializer if t.name in need]
    def vi(name):
        return known.get(name) or helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, g.name + "_part", [vi(i) for i in inputs], [vi(o) for o in outputs], inits)
    out = helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)
    return out


class HeadEvaluator:
    """Exact accuracy of many generated classifiers on one test set, with the frozen trunk run once.

    The template's fixed part (every node the generated tensors do not reach: normalisation and, for
    `resnet_head`, the ResNet trunk) is cut out with onnx.utils.Extractor and run once over all test
    images; each generated model.onnx is then cut at the same tensor and only its head is run. The
    same ONNX nodes run in the same order, so predictions match `PersonalizedClassifier.predict`;
    `check` compares the two on a sample of images for every model and the largest probability
    difference is reported. `full=True` skips the cut and runs every image through `predict`.
    """

    def __init__(self, template, param_names: Iterable[str], images: np.ndarray, *, threads: int | None = None,
                 full: bool = False, batch: int = 1024, check_images: int = 64):
        self.param_names = set(param_names)
        self.threads = threads
        self.full = full
        self.images = images
        self.check_images = check_images
        self.max_check_diff = 0.0
        self.feature_seconds = 0.0
        self.feature_name: str | None = None
        if full:
            return
        consumers = _generated_consumers(template, self.param_names)
        inits = {i.name for i in template.graph.initializer}
        feats = {i for n in consumers for i in n.input if i not in inits}
        if len(feats) != 1:  # the generated part reads more than one activation: no single cut point
            self.full = True
            return
        self.feature_name = feats.pop()
        self.input_name = template.graph.input[0].name
        trunk = subgraph(template, [self.input_name], [self.feature_name])
        sess = self._session(trunk)
        t0 = time.perf_counter()
        self.features = np.concatenate([sess.run(None, {self.input_name: images[i:i + batch]})[0]
                                        for i in range(0, len(images), batch)]) if len(images) else None
        self.feature_seconds = time.perf_counter() - t0

    def _session(self, model):
        import onnxruntime as ort

        so = ort.SessionOptions()
        if self.threads:
            so.intra_op_num_threads = int(self.threads)
        return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])

    def probabilities(self, clf, idx: np.ndarray) -> np.ndarray:
        """probabilities [len(idx), k] of a PersonalizedClassifier on images[idx]."""
        if self.full:
            return np.concatenate([clf.predict(self.images[idx[i:i + 1024]]).probabilities for i in range(0, len(idx), 1024)])
        head = subgraph(clf.to_model_proto(), [self.feature_name], ["probabilities"])
        probs = self._session(head).run(None, {self.feature_name: self.features[idx]})[0]
        n = min(self.check_images, len(idx))
        if n:
            ref = clf.predict(self.images[idx[:n]]).probabilities
            self.max_check_diff = max(self.max_check_diff, float(np.abs(ref - probs[:n]).max()))
        return probs

    def accuracy(self, clf, idx: np.ndarray, labels: np.ndarray) -> float:
        """Top-1 accuracy (%) of `clf` on images[idx] whose true prompt positions are `labels`."""
        return 100.0 * float(np.mean(self.probabilities(clf, idx).argmax(axis=1) == labels))


class TaskImages:
    """Test images of a task's classes with labels in prompt order (position in the class list)."""

    def __init__(self, test, max_per_class: int | None = None, seed: int = 0):
        self.test = test
        self.c2i = {c: i for i, c in enumerate(test.classes)}
        keep = np.arange(len(test.labels))
        if max_per_class:
            rng = np.random.default_rng(seed)
            keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(test.labels == c))[:max_per_class]
                                           for c in range(len(test.classes))]))
        self.keep = keep

    def used(self, tasks: Iterable[Sequence[str]]) -> np.ndarray:
        """Indices of every kept test image whose class occurs in some task."""
        cls = {self.c2i[c] for t in tasks for c in t}
        return self.keep[np.isin(self.test.labels[self.keep], sorted(cls))]

    def task(self, classes: Sequence[str], pool: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions into `pool`, labels in prompt order) of the task's images."""
        missing = [c for c in classes if c not in self.c2i]
        if missing:
            sys.exit(f"the test data has no class {missing}; use the data options the work dir was trained with")
        lab = self.test.labels[pool]
        pos, labels = [], []
        for j, c in enumerate(classes):
            sel = np.flatnonzero(lab == self.c2i[c])
            pos.append(sel)
            labels.append(np.full(len(sel), j, dtype=np.int64))
        return np.concatenate(pos), np.concatenate(labels)


# ------------------------------------------------------------------------------------- timing


def time_calls(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> list[float]:
    """Wall times in ms of `repeats` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def summary(ms: Sequence[float]) -> dict[str, float]:
    a = np.asarray(ms, dtype=np.float64)
    if a.size == 0:
        return {"n": 0, "median": float("nan"), "p90": float("nan"), "min": float("nan")}
    return {"n": int(a.size), "median": float(np.median(a)), "p90": float(np.percentile(a, 90)), "min": float(a.min())}


def mean_std(xs: Sequence[float]) -> tuple[float, float]:
    xs = [float(x) for x in xs if x == x]
    if not xs:
        return float("nan"), float("nan")
    return float(np.mean(xs)), (float(statistics.stdev(xs)) if len(xs) > 1 else 0.0)


def machine_note() -> str:
    """One line on where the numbers came from (timings on a loaded machine are noisy)."""
    import platform

    try:
        load = ", load avg %.1f" % os.getloadavg()[0]
    except OSError:
        load = ""
    import onnxruntime as ort

    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs{load}; "
            f"Python {platform.python_version()}, numpy {np.__version__}, onnxruntime {ort.__version__}")


# ------------------------------------------------------------------------------------- output


def fmt(x: Any, nd: int = 1) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return "–" if x != x else f"{x:.{nd}f}"
    return str(x)


def fmt_pm(mean: float, std: float, nd: int = 1) -> str:
    return "–" if mean != mean else f"{mean:.{nd}f} ± {std:.{nd}f}"


def md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def write_json(path: Path | None, obj: Any) -> None:
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
    print(f"\nwrote {path}", file=sys.stderr)


def nanmean(xs: Iterable[float]) -> float:
    a = np.asarray([x for x in xs if x is not None], dtype=np.float64)
    return float(np.nanmean(a)) if a.size and not np.all(np.isnan(a)) else float("nan")


@dataclass
class HeldOutSetup:
    """What every accuracy benchmark needs: the held-out tasks, eval.json's reference rows, the test
    images those tasks use, and the head evaluator (frozen trunk run once over them)."""

    tasks: list
    split: Any
    refs: Any
    eval_json: Any
    test: Any
    images: "TaskImages"
    pool: Any
    heads: "HeadEvaluator"


def held_out_setup(args, tina, *, full: bool = False) -> HeldOutSetup:
    tasks, split = load_tasks(args.workdir, args.max_tasks, args.kinds)
    refs, ev = eval_rows(args.workdir, args.eval_json)
    test = load_test_data(args)
    ti = TaskImages(test, args.max_per_class)
    pool = ti.used([t for _, t in tasks])
    heads = HeadEvaluator(tina.bundle.template_proto, [t.name for t in tina.manifest.template.layout],
                          test.images[pool], threads=args.threads, full=full)
    return HeldOutSetup(tasks, split, refs, ev, test, ti, pool, heads)
