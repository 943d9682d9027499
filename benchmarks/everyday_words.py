"""Everyday words vs class names, with bundles as users run them (torch-free).

The words are benchmarks/data/everyday_words.json (benchmarks/everyday_words_build.py). For each
seen class with held-out everyday words, `--per-word` seeded tasks of k 2-20 classes (the class and
k-1 other seen classes, all under their names) are personalized twice: once with the class under
its name, once under the everyday word, same seed. Recall = the class's own test photos predicted
as its slot; the figure is mean recall (word) / mean recall (name), SE by the delta method over
pairs. The guards use the same machinery: held-out recall (k 2-20, 1-2 held-out classes among seen
ones, names never trained on) and 10-way accuracy of seen classes. `--compare-bundle` scores the
same tasks with a second bundle; differences are paired per task (mean ± SE).

Photos (50 per class, features through the bundle's trunk, cached): Tiny-ImageNet val, CIFAR-10
test JPEGs, Fashion-MNIST t10k. A classifier's predictions are argmax(features @ W.T + b).

    OMP_NUM_THREADS=1 python benchmarks/everyday_words.py --bundle tina_edge/bundles/default \\
        --compare-bundle /tmp/everyday-words/converted --tin /tmp/tinyimagenet/tiny-imagenet-200 \\
        --cifar /tmp/everyday-words/cifar10 --cache /tmp/everyday-words/cache
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _tin_features import cached  # noqa: E402

WORDS = ROOT / "benchmarks" / "data" / "everyday_words.json"
FMNIST = ["T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]


def small_features(p, cifar: Path, fmnist: Path, cache: Path, per_class: int) -> tuple[np.ndarray, list[str]]:
    """Trunk features of CIFAR-10 test JPEGs and Fashion-MNIST t10k photos (first per_class each)."""
    path = cache / f"small_{per_class}.npz"
    if not path.is_file():
        import onnxruntime as ort
        from PIL import Image

        from tina_edge.runtime.atomic import atomic_save_npz
        from tina_edge.runtime.preprocess import PreprocessSpec, prepare

        spec = PreprocessSpec.from_dict(p.manifest.template.input.preprocess)
        images, names = [], []
        for d in sorted(cifar.glob("test/*")):
            for f in sorted(d.iterdir())[:per_class]:
                images.append(Image.open(f).convert("RGB"))
                names.append(d.name)
        raw = gzip.open(fmnist / "t10k-images-idx3-ubyte.gz").read()
        x = np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)
        y = np.frombuffer(gzip.open(fmnist / "t10k-labels-idx1-ubyte.gz").read(), np.uint8, offset=8)
        for c, n in enumerate(FMNIST):
            for i in np.flatnonzero(y == c)[:per_class]:
                images.append(np.repeat(x[i][:, :, None], 3, 2))
                names.append(n)
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        sess = ort.InferenceSession(p.trunk_model().SerializeToString(), so, providers=["CPUExecutionProvider"])
        feats = [sess.run(["features"], {sess.get_inputs()[0].name: np.stack([prepare(im, spec) for im in images[i : i + 64]])})[0]
                 for i in range(0, len(images), 64)]
        cache.mkdir(parents=True, exist_ok=True)
        atomic_save_npz(path, features=np.concatenate(feats).astype(np.float32), names=np.asarray(names))
    z = np.load(path)
    return z["features"], [str(n) for n in z["names"]]


def photos(p, a) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Features and labels (indices into the manifest's classes) of every class with photos."""
    classes = list(p.manifest.training.classes)
    tin = cached(p, a.tin, a.cache, "val", a.per_class)
    f_small, n_small = small_features(p, a.cifar, a.fashion_mnist, a.cache, a.per_class)
    names = [str(n) for n in tin["names"][tin["labels"]]] + n_small
    keep = np.array([n in classes for n in names])
    feats = np.concatenate([tin["features"], f_small])[keep]
    labels = np.array([classes.index(n) for n, k in zip(names, keep) if k])
    return feats, labels, classes


def make_tasks(classes, hold, words, rng, a) -> dict[str, list]:
    seen = [i for i, c in enumerate(classes) if c not in hold]
    held = [i for i, c in enumerate(classes) if c in hold]
    tasks: dict[str, list] = {"everyday": [], "train_words": [], "holdout": [], "id10": []}
    for part, kind in (("heldout", "everyday"), ("train", "train_words")):
        for entry in words:
            c = classes.index(entry["class"])
            if entry["holdout_class"]:
                continue
            for w in entry[part]:
                for _ in range(a.per_word):
                    k = int(rng.integers(2, 21))
                    others = [int(o) for o in rng.choice([s for s in seen if s != c], k - 1, replace=False)]
                    j = int(rng.integers(0, k))
                    tasks[kind].append((others[:j] + [c] + others[j:], j, w["word"]))
    for _ in range(a.holdout_tasks):
        k = int(rng.integers(2, 21))
        nh = 1 if k < 3 else int(rng.integers(1, 3))
        t = [int(x) for x in rng.choice(held, nh, replace=False)] + [int(x) for x in rng.choice(seen, k - nh, replace=False)]
        tasks["holdout"].append([t[i] for i in rng.permutation(k)])
    tasks["id10"] = [[int(x) for x in rng.choice(seen, 10, replace=False)] for _ in range(a.id_tasks)]
    # drawn last, so the tasks above stay those of earlier runs: the held-out classes' words (all held out)
    tasks["holdout_words"] = []
    for entry in words:
        if not entry["holdout_class"]:
            continue
        c = classes.index(entry["class"])
        for w in entry["train"] + entry["heldout"]:
            for _ in range(a.per_word):
                k = int(rng.integers(2, 21))
                others = [int(o) for o in rng.choice([s for s in seen if s != c], k - 1, replace=False)]
                j = int(rng.integers(0, k))
                tasks["holdout_words"].append((others[:j] + [c] + others[j:], j, w["word"]))
    # typed variants of every seen class's own name, made by rule, not picked: its plural, and a
    # two-word name written as one word ("school bus" -> "school buses", "schoolbus")
    tasks["variants"] = []
    for c in seen:
        for v in variants(classes[c]):
            for _ in range(a.per_variant):
                k = int(rng.integers(2, 21))
                others = [int(o) for o in rng.choice([s for s in seen if s != c], k - 1, replace=False)]
                j = int(rng.integers(0, k))
                tasks["variants"].append((others[:j] + [c] + others[j:], j, v))
    return tasks


def variants(name: str) -> list[str]:
    """A name as people also type it: English plural of its last word; a multi-word name run together."""
    if not name.isascii() or "/" in name:
        return []
    low = name.lower()
    if low.endswith(("s", "x", "z", "ch", "sh")):
        plural = name + "es"
    elif low.endswith("y") and low[-2:-1] not in "aeiou":
        plural = name[:-1] + "ies"
    else:
        plural = name + "s"
    out = [plural]
    if " " in name or "-" in name:
        out.append(name.replace(" ", "").replace("-", ""))
    return out


def head_pred(p, names, seed, feats, labels, cls, descriptions=None):
    clf = p.personalize(names, seed=seed, descriptions=descriptions)
    W, b = clf.params["fc.weight"], clf.params["fc.bias"]
    sel = np.isin(labels, cls)
    pos = {c: j for j, c in enumerate(cls)}
    y = np.array([pos[int(l)] for l in labels[sel]])
    return (feats[sel] @ W.T + b).argmax(1), y


def score(p, tasks, feats, labels, classes, hold) -> dict[str, np.ndarray]:
    """Per task: recall under the name and under the word (word tasks), held-out recall, ID accuracy."""
    out: dict[str, list] = {}
    for kind in ("everyday", "train_words", "holdout_words", "variants"):
        for i, (t, j, word) in enumerate(tasks[kind]):
            names = [classes[c] for c in t]
            pred, y = head_pred(p, names, 1000 + i, feats, labels, t)
            out.setdefault(f"{kind}_name", []).append(np.mean(pred[y == j] == j))
            pred, y = head_pred(p, names, 1000 + i, feats, labels, t, {names[j]: word})
            out.setdefault(f"{kind}_word", []).append(np.mean(pred[y == j] == j))
            out.setdefault(f"{kind}_word_taskacc", []).append(np.mean(pred[y != j] == y[y != j]))
    for i, t in enumerate(tasks["holdout"]):
        pred, y = head_pred(p, [classes[c] for c in t], 5000 + i, feats, labels, t)
        out.setdefault("holdout", []).append(np.mean([np.mean(pred[y == j] == j) for j, c in enumerate(t) if classes[c] in hold]))
        others = np.isin(y, [j for j, c in enumerate(t) if classes[c] not in hold])
        out.setdefault("holdout_seen_acc", []).append(np.mean(pred[others] == y[others]))
    for i, t in enumerate(tasks["id10"]):
        pred, y = head_pred(p, [classes[c] for c in t], 9000 + i, feats, labels, t)
        out.setdefault("id10", []).append(np.mean(pred == y))
    return {k: 100 * np.asarray(v, np.float64) for k, v in out.items()}


def ratio(word: np.ndarray, name: np.ndarray) -> tuple[float, float]:
    r = word.mean() / name.mean()
    return r, float(np.std(word - r * name, ddof=1) / np.sqrt(len(word)) / name.mean())


def table(res: dict[str, dict[str, np.ndarray]]) -> str:
    lines = ["| bundle | held-out everyday words: recall word / name (ratio ± SE) | training-part words (ratio) "
             "| held-out classes' words: word / name (ratio) | typed variants of seen names (ratio) "
             "| other slots' accuracy, word tasks | held-out class recall (k 2-20) | seen slots' accuracy in those tasks "
             "| 10-way seen accuracy |", "|---|---|---|---|---|---|---|---|---|"]
    for b, r in res.items():
        e, t = ratio(r["everyday_word"], r["everyday_name"]), ratio(r["train_words_word"], r["train_words_name"])
        h = ratio(r["holdout_words_word"], r["holdout_words_name"]) if "holdout_words_word" in r else (float("nan"),) * 2
        hw = (f"{r['holdout_words_word'].mean():.1f} / {r['holdout_words_name'].mean():.1f} ({h[0]:.3f} ± {h[1]:.3f})"
              if "holdout_words_word" in r else "-")
        tv = ("{:.3f} ± {:.3f}".format(*ratio(r["variants_word"], r["variants_name"])) if "variants_word" in r else "-")
        lines.append(f"| {b} | {r['everyday_word'].mean():.1f} / {r['everyday_name'].mean():.1f} (**{e[0]:.3f} ± {e[1]:.3f}**) "
                     f"| {t[0]:.3f} ± {t[1]:.3f} | {hw} | {tv} | {r['everyday_word_taskacc'].mean():.1f} | {r['holdout'].mean():.1f} "
                     f"| {r['holdout_seen_acc'].mean():.1f} | {r['id10'].mean():.1f} |")
    if len(res) == 2:
        (na, a), (nb, b) = res.items()
        lines.append("")
        lines.append(f"Paired differences, {nb} − {na} (mean ± SE over tasks):")
        for k in ("everyday_word", "everyday_name", "everyday_word_taskacc", "train_words_word", "holdout_words_word",
                  "holdout_words_name", "variants_word", "variants_name", "holdout", "holdout_seen_acc", "id10"):
            if k not in a or k not in b:
                continue
            d = b[k] - a[k]
            lines.append(f"- {k}: {d.mean():+.2f} ± {d.std(ddof=1) / np.sqrt(len(d)):.2f} ({len(d)} tasks)")
    return "\n".join(lines)


def main() -> None:
    from tina_edge.runtime import Personalizer

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default=str(ROOT / "tina_edge/bundles/default"))
    ap.add_argument("--compare-bundle", default=None)
    ap.add_argument("--tin", type=Path, required=True, help="tiny-imagenet-200 folder")
    ap.add_argument("--cifar", type=Path, required=True, help="CIFAR-10 JPEG folder (test/<class>/*.jpg)")
    ap.add_argument("--fashion-mnist", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    ap.add_argument("--cache", type=Path, required=True, help="feature cache folder")
    ap.add_argument("--words", type=Path, default=WORDS)
    ap.add_argument("--per-class", type=int, default=50)
    ap.add_argument("--per-word", type=int, default=4)
    ap.add_argument("--per-variant", type=int, default=2, help="tasks per typed variant of a seen class's name")
    ap.add_argument("--holdout-tasks", type=int, default=300)
    ap.add_argument("--id-tasks", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json-out", type=Path, default=None)
    ap.add_argument("--paired-with", type=Path, default=None,
                    help="a --json-out of an earlier run with the same options (other code): differences paired per task")
    a = ap.parse_args()
    words = json.loads(a.words.read_text())["classes"]
    res = {}
    tasks = None
    for bundle in [a.bundle] + ([a.compare_bundle] if a.compare_bundle else []):
        p = Personalizer.from_bundle(bundle, threads=1)
        feats, labels, classes = photos(p, a)
        hold = set(p.manifest.training.holdout_classes)
        if tasks is None:
            tasks = make_tasks(classes, hold, words, np.random.default_rng(a.seed), a)
        t0 = time.time()
        res[bundle] = score(p, tasks, feats, labels, classes, hold)
        print(f"{bundle}: {time.time() - t0:.0f} s", file=sys.stderr)
    print(f"\n{len(tasks['everyday'])} held-out-word task pairs ({a.per_word} per word), {len(tasks['train_words'])} "
          f"training-word pairs, {len(tasks['holdout_words'])} held-out classes' word pairs, {len(tasks['variants'])} "
          f"typed-variant pairs, {len(tasks['holdout'])} held-out-class tasks, {len(tasks['id10'])} 10-way ID tasks\n")
    if a.paired_with:
        earlier = {k: np.asarray(v, np.float64) for k, v in next(iter(json.loads(a.paired_with.read_text()).values())).items()}
        res = {str(a.paired_with): earlier, **res}
    print(table(res))
    if a.json_out:
        from tina_edge.runtime.atomic import atomic_write_json

        atomic_write_json(a.json_out, {b: {k: v.tolist() for k, v in r.items()} for b, r in res.items()})


if __name__ == "__main__":
    main()
