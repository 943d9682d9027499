"""Choosing the everyday keys' width on the TRAINING words only (prior alone, no diffusion; torch-free).

Two-fold cross-validation inside the training part of benchmarks/data/everyday_words.json: the
words are split by sha1(word) into two folds; keys are added for one fold (export/portable/
everyday_keys.py, the rewrite convert applies) and the other fold's words are scored, then the
other way round. Held-out words and held-out classes are never read. A score is the recall of the
word's slot (its class's photos) in seeded k 2-20 tasks whose other slots are seen class names,
rows taken straight from the prior in the bundle's graph (raw rows, W = row[:-1], b = row[-1]),
as a ratio to the same tasks with the class under its name.

    OMP_NUM_THREADS=1 python benchmarks/everyday_keys_study.py --bundle tina_edge/bundles/default \\
        --tin /tmp/tinyimagenet/tiny-imagenet-200 --cifar /tmp/everyday-words/cifar10 --cache /tmp/everyday-words/cache
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from everyday_words import WORDS, photos  # noqa: E402


def main() -> None:
    import onnx

    from tina_edge.export.portable import everyday_keys as ek
    from tina_edge.runtime import Personalizer

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default=str(ROOT / "tina_edge/bundles/default"))
    ap.add_argument("--tin", type=Path, required=True)
    ap.add_argument("--cifar", type=Path, required=True)
    ap.add_argument("--fashion-mnist", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    ap.add_argument("--cache", type=Path, required=True)
    ap.add_argument("--per-class", type=int, default=50)
    ap.add_argument("--per-word", type=int, default=6)
    ap.add_argument("--taus", default="0.01,0.04,0.1,0.2,0.3")
    ap.add_argument("--name-taus", default="0.01")
    a = ap.parse_args()
    p = Personalizer.from_bundle(a.bundle, threads=1)
    feats, labels, classes = photos(p, a)
    hold = set(p.manifest.training.holdout_classes)
    seen = [c for c in classes if c not in hold]
    train = {c["class"]: [w["word"] for w in c["train"]] for c in json.loads(WORDS.read_text())["classes"]
             if not c["holdout_class"]}
    fold = {w: int(hashlib.sha1(w.encode()).hexdigest(), 16) % 2 for ws in train.values() for w in ws}
    model = onnx.load(str(Path(a.bundle) / p.manifest.denoiser.model))
    encode = lambda texts: p.encode(list(texts))  # noqa: E731
    rng = np.random.default_rng(1)
    tasks = []
    for c, ws in train.items():
        for w in ws:
            for _ in range(a.per_word):
                k = int(rng.integers(2, 21))
                others = [str(o) for o in rng.choice([s for s in seen if s != c], k - 1, replace=False)]
                tasks.append((c, w, others))
    e_names = {c: e for c, e in zip(seen, encode(seen))}
    e_words = {w: e for w, e in zip(fold, encode(list(fold)))}

    def recall(rows_of, c, text, others) -> float:
        R = np.stack([rows_of(text)] + [rows_of(o) for o in others])
        cls = [classes.index(c)] + [classes.index(o) for o in others]
        sel = np.isin(labels, cls)
        pred = (feats[sel] @ R[:, :-1].T + R[:, -1]).argmax(1)
        return float(np.mean(pred[labels[sel] == cls[0]] == 0))

    print("| word tau | name tau | CV ratio word / name (training words, prior alone) |")
    print("|---|---|---|")
    for name_tau, tau in [(float(nt), float(t)) for nt in a.name_taus.split(",") for t in a.taus.split(",")]:
        if True:
            num = den = 0.0
            for f in (0, 1):
                m = copy.deepcopy(model)
                words = {c: [w for w in ws if fold[w] == f] for c, ws in train.items()}
                ek.add_everyday_keys(m, encode, words, seen, tau, name_tau=name_tau)
                prior = ek.prior_function(m, ek.find_prior(m))
                texts = seen + [w for w in fold if fold[w] != f]
                _, raw = prior(np.stack([e_names.get(t, e_words.get(t)) for t in texts]).astype(np.float32))
                rows = dict(zip(texts, raw))
                for c, w, others in tasks:
                    if fold[w] != f:
                        num += recall(rows.get, c, w, others)
                        den += recall(rows.get, c, c, others)
            print(f"| {tau:g} | {name_tau:g} | {num / den:.3f} |", flush=True)


if __name__ == "__main__":
    main()
