"""Bundle size and what the smaller storage costs (issue 24, "Size"; benchmarks/notes/bundle-size.md).

  sizes BUNDLE...           raw and gzip -9 bytes of every file, and of the browser's first-visit set
  photos A B --tin ROOT     personalized classifiers of bundle A and bundle B (same prompts, same seeds) on
                            Tiny-ImageNet val photos: top-1 agreement, accuracy of each (SE paired over tasks)
  text A B [--words FILE]   text embeddings of bundle B's encoder against A's on real names (the vocabulary,
                            WordNet lemmas): cosine, max |diff|, nearest-vocabulary answers
  text A --variant V        the same for A's encoder stored another way (int8 FFN, 4-bit word table)
  memory GRAPH.onnx         peak RSS growth of creating one session (one process per graph)
  template-int8 A OUT       copy of A with int8 trunk kernels (per output channel): a candidate for `photos`

Run from the repository root: PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/bundle_size.py sizes /tmp/b
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# what js/ fetches before the first personalize is possible (benchmarks/js_browser.mjs, BENCHMARKS §14.1),
# besides the app and onnxruntime-web's wasm: the manifest, the tokenizer and the three session graphs
FIRST_VISIT = ("manifest.json", "tokenizer.json", "text_encoder.onnx", "generate.onnx", "template.onnx")


def sizes(bundle: Path) -> dict:
    """{file: [raw, gzip -9]} and the first-visit totals of one bundle directory."""
    out = {}
    for f in sorted(bundle.iterdir()):
        if f.is_file():
            data = f.read_bytes()
            out[f.name] = [len(data), len(zlib.compress(data, 9))]
    first = [out[n] for n in FIRST_VISIT if n in out]
    return {"files": out, "first_visit_bundle_files": [sum(x[0] for x in first), sum(x[1] for x in first)]}


def _tin(root: Path, names: set[str], per_class: int) -> tuple[list[str], np.ndarray, list[str]]:
    """(files, labels, class names) of Tiny-ImageNet val photos of the classes whose first WordNet name is in `names`."""
    wnids = [w.strip() for w in (root / "wnids.txt").read_text().split() if w.strip()]
    first = {}
    for line in (root / "words.txt").read_text(encoding="utf-8").splitlines():
        w, _, n = line.partition("\t")
        if w in wnids:
            first[w] = n.split(",")[0].strip()
    keep = sorted(w for w in wnids if first[w] in names)
    files, labels, count = [], [], {}
    for line in sorted((root / "val" / "val_annotations.txt").read_text().splitlines()):
        f, w = line.split("\t")[:2]
        if w in keep and count.get(w, 0) < per_class:
            count[w] = count.get(w, 0) + 1
            files.append(str(root / "val" / "images" / f))
            labels.append(keep.index(w))
    return files, np.asarray(labels), [first[w] for w in keep]


def _features(p, files: list[str], batch: int = 128) -> np.ndarray:
    """The bundle's own trunk (cut from its template) on the photos, prepared as `predict` does."""
    import onnxruntime as ort

    from tina_edge.runtime.preprocess import PreprocessSpec, load_prepared

    spec = PreprocessSpec.from_dict(p.manifest.template.input.preprocess)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(p.trunk_model().SerializeToString(), so, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(["features"], {sess.get_inputs()[0].name: load_prepared(files[i: i + batch], spec)})[0]
                           for i in range(0, len(files), batch)]).astype(np.float32)


def photos(a: Path, b: Path, tin: Path, per_class: int, classes: int) -> dict:
    """Top-1 agreement and accuracy of A's and B's personalized classifiers on the same tasks."""
    from tina_edge.runtime import Personalizer

    pa, pb = Personalizer.from_bundle(a, threads=1), Personalizer.from_bundle(b, threads=1)
    seen = {c for c in pa.manifest.training.classes if isinstance(c, str)}
    files, labels, names = _tin(tin, seen, per_class)
    pick = sorted(random.Random(0).sample(range(len(names)), min(classes, len(names))))
    sel = np.isin(labels, pick)
    files, labels = [f for f, s in zip(files, sel) if s], labels[sel]
    fa, fb = _features(pa, files), _features(pb, files)
    order = random.Random(1).sample(pick, len(pick))
    tasks = [order[i: i + k] for k in (10, 20) for i in range(0, len(order) - k + 1, k)] + [order]
    rows, agree, total = [], 0, 0
    for t, task in enumerate(tasks):
        m = np.isin(labels, task)
        y = np.searchsorted(np.sort(task), labels[m])  # label -> its position in the (sorted) prompt
        task_sorted = sorted(task)
        prompt = ", ".join(names[c] for c in task_sorted)
        preds = []
        for p, f in ((pa, fa), (pb, fb)):
            prm = p.personalize(prompt, seed=t).params
            preds.append((f[m] @ prm["fc.weight"].T + prm["fc.bias"]).argmax(1))
        agree += int((preds[0] == preds[1]).sum())
        total += int(m.sum())
        rows.append({"k": len(task), "photos": int(m.sum()), "acc_a": float((preds[0] == y).mean()),
                     "acc_b": float((preds[1] == y).mean()), "agree": float((preds[0] == preds[1]).mean())})
    out = {"photos": len(files), "classes": len(pick), "predictions": total, "top1_agreement": agree / total, "tasks": []}
    for k in sorted({r["k"] for r in rows}):
        rs = [r for r in rows if r["k"] == k]
        d = np.array([r["acc_b"] - r["acc_a"] for r in rs])
        out["tasks"].append({"k": k, "tasks": len(rs), "acc_a": float(np.mean([r["acc_a"] for r in rs])),
                             "acc_b": float(np.mean([r["acc_b"] for r in rs])), "diff": float(d.mean()),
                             "se_diff": float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else None,
                             "agree": float(np.mean([r["agree"] for r in rs]))})
    ca, cb = pa.personalize(", ".join(names[c] for c in sorted(order[:10])), seed=0), pb.personalize(
        ", ".join(names[c] for c in sorted(order[:10])), seed=0)
    out["params_max_abs_diff_k10"] = float(max(np.abs(ca.params[n] - cb.params[n]).max() for n in ca.params))
    return out


def _fp16_matmul_weights_as(model, quantize) -> None:
    """Replace each Cast(W_fp16) MatMul weight by float32 values `quantize(W)` (what the folded int8 form computes)."""
    from onnx import numpy_helper

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    for c in [n for n in g.node if n.op_type == "Cast" and n.input[0].endswith("_fp16")]:
        w = numpy_helper.to_array(inits[c.input[0]]).astype(np.float32)
        g.initializer.append(numpy_helper.from_array(quantize(w).astype(np.float32), c.output[0]))
        g.initializer.remove(inits[c.input[0]])
        g.node.remove(c)


def _int8(w: np.ndarray, block: int | None) -> np.ndarray:
    """Symmetric int8 of W [K, N], one scale per column (block None) or per block of `block` rows x column."""
    K, N = w.shape
    b = w.reshape(K // (block or K), block or K, N)
    s = np.abs(b).max(1, keepdims=True) / 127
    s[s == 0] = 1
    return (np.clip(np.rint(b / s), -127, 127) * s).reshape(K, N)


def _word_table_4bit(model, group: int | None) -> None:
    """The uint8 word table (Gather -> DequantizeLinear) as per-row (or per-group) asymmetric 4-bit values."""
    from onnx import helper, numpy_helper

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    gat = next(n for n in g.node if n.op_type == "Gather" and "word_embeddings" in n.input[0])
    dql = next(n for n in g.node if n.op_type == "DequantizeLinear" and n.input[0] == gat.output[0])
    q = numpy_helper.to_array(inits[gat.input[0]]).astype(np.float32)
    s, z = numpy_helper.to_array(inits[dql.input[1]]), numpy_helper.to_array(inits[dql.input[2]]).astype(np.float32)
    t = (q - z) * s
    V, D = t.shape
    tb = t.reshape(V, D // (group or D), group or D)
    lo, hi = tb.min(2, keepdims=True), tb.max(2, keepdims=True)
    sc = (hi - lo) / 15
    sc[sc == 0] = 1
    g.initializer.append(numpy_helper.from_array((np.rint((tb - lo) / sc) * sc + lo).reshape(V, D).astype(np.float32), "word_table_4bit"))
    at = list(g.node).index(gat)
    g.node.remove(gat)
    g.node.remove(dql)
    g.node.insert(at, helper.make_node("Gather", ["word_table_4bit", gat.input[1]], [dql.output[0]]))


VARIANTS = {"ffn-int8-column": lambda m: _fp16_matmul_weights_as(m, lambda w: _int8(w, None)),
            "ffn-int8-block32": lambda m: _fp16_matmul_weights_as(m, lambda w: _int8(w, 32)),
            "word-table-4bit-row": lambda m: _word_table_4bit(m, None),
            "word-table-4bit-group32": lambda m: _word_table_4bit(m, 32)}


# per output channel: the axis of W that indexes outputs, for each weight slot int8 storage takes
_OUTPUT_AXIS = {("Conv", 1): 0, ("MatMul", 1): -1}


def float_weights_to_int8(model, min_elements: int = 1024, exclude: frozenset[str] | set[str] = frozenset()) -> int:
    """(Measured and refused for bundles, notes/bundle-size.md.) Store each float32 initializer of >= min_elements read only as a Conv kernel or a MatMul's right
    operand as symmetric int8 with one float32 scale per output channel, `Cast(W_int8) * scale` (folded
    into a float tensor when the session is created); returns the bytes saved."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from tina_edge.export.portable.small_storage import consumers

    g = model.graph
    uses = consumers(g)
    keep, nodes, saved = [], [], 0
    for init in g.initializer:
        slots = set(uses.get(init.name, []))
        axis = _OUTPUT_AXIS.get(next(iter(slots))) if len(slots) == 1 else None
        if init.data_type != TensorProto.FLOAT or axis is None or init.name in exclude:
            keep.append(init)
            continue
        w = numpy_helper.to_array(init)
        if w.size < min_elements or w.ndim < 2 or not np.isfinite(w).all():
            keep.append(init)
            continue
        red = tuple(i for i in range(w.ndim) if i != axis % w.ndim)
        scale = (np.abs(w).max(axis=red, keepdims=True) / 127.0).astype(np.float32)
        scale[scale == 0] = 1.0
        q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
        keep += [numpy_helper.from_array(q, init.name + "_int8"), numpy_helper.from_array(scale, init.name + "_scale")]
        nodes += [helper.make_node("Cast", [init.name + "_int8"], [init.name + "_int8_float"], to=TensorProto.FLOAT,
                                   name=init.name + "_cast_int8"),
                  helper.make_node("Mul", [init.name + "_int8_float", init.name + "_scale"], [init.name],
                                   name=init.name + "_scale_int8")]
        saved += w.nbytes - q.nbytes - scale.nbytes
    if nodes:
        del g.initializer[:]
        g.initializer.extend(keep)
        rest = nodes + list(g.node)
        del g.node[:]
        g.node.extend(rest)
    return saved


def template_int8(a: Path, out: Path) -> dict:
    """A copy of bundle A (converted with --keep-float32) whose trunk kernels are int8 per output channel:
    the candidate `photos` refused."""
    import shutil

    import onnx

    from tina_edge.runtime.manifest import read_manifest, write_manifest

    shutil.copytree(a, out)
    m = read_manifest(out)
    model = onnx.load(str(out / m.template.model))
    saved = float_weights_to_int8(model, exclude={t.name for t in m.template.layout})
    onnx.checker.check_model(model)
    onnx.save(model, str(out / m.template.model))
    write_manifest(out, m)
    return {"bundle": str(out), "saved_bytes": saved, "template_bytes": (out / m.template.model).stat().st_size}


def text(a: Path, b: Path, words_file: Path | None, n_words: int = 500, variant: str | None = None) -> dict:
    """B's text encoder against A's on the vocabulary (nearest OTHER name) and on WordNet lemmas outside it;
    `variant`: B is A's encoder stored another way (VARIANTS: the values the smaller form would compute)."""
    import onnx

    from tina_edge.runtime.manifest import read_manifest
    from tina_edge.runtime.text_encoder import TextEncoderSession
    from tina_edge.runtime.tokenizer import Tokenizer

    m = read_manifest(a)
    te = m.text_encoder
    tok = Tokenizer.from_file(a / te.tokenizer, max_tokens=te.max_tokens, cleaning=te.cleaning, pad_id=te.pad_id)
    vocab = [v for v in m.vocabulary if isinstance(v, str)]
    sets = {"vocabulary": vocab}
    if words_file is not None:
        low = {v.lower() for v in vocab}
        lem = sorted({w for line in words_file.read_text(encoding="utf-8").splitlines() if "\t" in line
                      for w in line.split("\t")[1].split(", ") if w and w.lower() not in low})
        sets["wordnet"] = sorted(random.Random(0).sample(lem, n_words))
    vemb = np.load(a / te.vocabulary_embeddings).astype(np.float32)
    ea = TextEncoderSession(a / te.model, tok, threads=1, cache_size=0)
    if variant:
        cand = onnx.load(str(a / te.model))
        VARIANTS[variant](cand)
        eb = TextEncoderSession(cand.SerializeToString(), tok, threads=1, cache_size=0)
    else:
        eb = TextEncoderSession(b / read_manifest(b).text_encoder.model, tok, threads=1, cache_size=0)
    out = {}
    for key, names in sets.items():
        x, y = ea.encode(names), eb.encode(names)
        cos = (x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)
        sx, sy = x @ vemb.T, y @ vemb.T
        if key == "vocabulary":  # a vocabulary name is its own nearest: compare the nearest other name
            i = np.arange(len(names))
            sx[i, i] = sy[i, i] = -np.inf
        out[key] = {"names": len(names), "cos_min": float(cos.min()), "cos_mean": float(cos.mean()),
                    "max_abs_diff": float(np.abs(x - y).max()), "nearest_changed": int((sx.argmax(1) != sy.argmax(1)).sum())}
    return out


def memory(graph: Path) -> dict:
    """Peak RSS (ru_maxrss) of this process before and after creating one session of `graph`, 1 thread
    (run it in a fresh process per graph: the peak never goes down)."""
    import resource

    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ort.InferenceSession(str(graph), so, providers=["CPUExecutionProvider"])
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"graph": str(graph), "before_mib": round(before, 1), "after_mib": round(after, 1), "grew_mib": round(after - before, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["sizes", "photos", "text", "memory", "template-int8"])
    ap.add_argument("bundles", nargs="+", type=Path)
    ap.add_argument("--tin", type=Path, help="tiny-imagenet-200 directory (photos)")
    ap.add_argument("--per-class", type=int, default=30)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--words", type=Path, help="WordNet words.txt (text; tiny-imagenet-200/words.txt)")
    ap.add_argument("--variant", choices=sorted(VARIANTS), help="text: compare A's encoder with A's stored this way")
    a = ap.parse_args()
    if a.what == "sizes":
        res = {str(b): sizes(b) for b in a.bundles}
    elif a.what == "photos":
        res = photos(a.bundles[0], a.bundles[1], a.tin, a.per_class, a.classes)
    elif a.what == "text":
        res = text(a.bundles[0], a.bundles[-1], a.words, variant=a.variant)
    elif a.what == "template-int8":
        res = template_int8(a.bundles[0], a.bundles[1])
    else:
        res = memory(a.bundles[0])
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
