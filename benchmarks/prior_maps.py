"""The text prior alone, linear vs kernel map, on a photo universe's cached test features.

No diffusion and no checkpoint training: each map is fitted exactly as `train diffusion --text-prior
imagenet --prior-map …` fits it (seen zoo rows + ImageNet rows, names and definitions, held-out names
excluded), and its rows are scored on seeded tasks of the universe's test photos. Held-out recall =
a held-out class's own photos predicted as its slot in k-way tasks (k 2-20, 1-2 held-out classes
among seen ones whose rows are the zoo's means); unseen synonyms = a seen class named by a WordNet
synonym kept out of training, recall relative to the same tasks under its name. The kernel rows for
fixed gammas are a sensitivity check (lambda still by leave-one-out); the shipped choice is the LOO one.

    OMP_NUM_THREADS=1 python benchmarks/prior_maps.py --workdir /work/runs/tiny --ckpt /work/runs/kern/tina.safetensors
    (add --text-encoder st:/work/data/mpnet for all-mpnet-base-v2)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from tina_edge.train.evaluation.compare_stage import load_classes, zoo_rows_from_dir
from tina_edge.train.text.phrasings import WordNet, build_phrasings
from tina_edge.train.text.encoders import build_text_encoder, cached_encode
from tina_edge.train.prior.fit import build_text_prior, fit_kernel_prior, imagenet_prior_data
from tina_edge.train.diffusion.text_prior import TextPrior, row_normalisation
from tina_edge.train.diffusion.checkpoint import read_checkpoint


def unit(e: np.ndarray) -> np.ndarray:
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True, help="photo universe (classes.json, zoo/, features/)")
    ap.add_argument("--ckpt", required=True, help="any checkpoint of this universe with row tokens (for its layout)")
    ap.add_argument("--tasks", type=int, default=400)
    ap.add_argument("--synonym-tasks", type=int, default=300)
    ap.add_argument("--gammas", default="3,6,10", help="fixed kernel widths to show beside the LOO choice")
    ap.add_argument("--size", type=int, default=128, help="feature resolution (features/test_SIZE.f16.npy)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--text-encoder", default="minilm", help="minilm | st:DIR (e.g. all-mpnet-base-v2)")
    a = ap.parse_args()
    w = Path(a.workdir)
    names, holdout, wnids, syn = load_classes(w)
    universe = json.loads((w / "classes.json").read_text())
    hold = np.array([c["holdout"] for c in universe])
    seen, held = np.flatnonzero(~hold), np.flatnonzero(hold)
    zoo = zoo_rows_from_dir(w / "zoo", names)[0].numpy().astype(np.float64)
    enc = build_text_encoder(a.text_encoder)

    def encode(texts):
        return cached_encode(enc, list(texts), w / "emb_cache")

    extra = imagenet_prior_data(zoo[seen], universe, encode)
    layout = read_checkpoint(a.ckpt).layout()
    feats = np.load(w / f"features/test_{a.size}.f16.npy").astype(np.float32)
    labels = np.load(w / f"features/test_{a.size}.labels.npy")
    feats = np.concatenate([feats, np.ones((len(feats), 1), np.float32)], 1)
    by_class = [feats[labels == c] for c in range(len(names))]
    ph = build_phrasings(names, holdout, wnids=wnids, extra_synonyms=syn, wordnet=WordNet(), seed=0)
    synonyms = [(names.index(c), s) for c, p in ph.items() if not hold[names.index(c)] for s in p.heldout_synonyms]
    rng = np.random.default_rng(a.seed)
    tasks = []
    for _ in range(a.tasks):
        k = int(rng.integers(2, 21))
        nh = 1 if k < 3 else int(rng.integers(1, 3))
        tasks.append(list(rng.choice(held, nh, replace=False)) + list(rng.choice(seen, k - nh, replace=False)))
    syn_tasks = []
    for i in range(a.synonym_tasks):
        j = i % len(synonyms)
        c = synonyms[j][0]
        others = [o for o in rng.choice(seen, int(rng.integers(2, 21)), replace=False) if o != c]
        syn_tasks.append((j, [c, *others[: max(1, len(others) - 1)]]))
    e_names = unit(encode(names))
    e_syn = unit(encode([s for _, s in synonyms]))

    def score(fit):
        prior = TextPrior(e_names.shape[1], zoo.shape[1], keys=len(seen),
                          kernel=0 if fit.kernel_keys is None else len(fit.kernel_keys))
        prior.load_fit(fit, *row_normalisation(layout))
        prior.load_keys(e_names[seen], zoo[seen])
        with torch.no_grad():
            rows = prior.raw_rows(torch.from_numpy(e_names).float()).numpy()
            rows_syn = prior.raw_rows(torch.from_numpy(e_syn).float()).numpy()
        recall = [((by_class[c] @ rows[t].T).argmax(1) == j).mean() for t in tasks for j, c in enumerate(t) if hold[c]]
        acc = [np.mean(np.concatenate([(by_class[c] @ rows[t].T).argmax(1) == j for j, c in enumerate(t)])) for t in tasks]
        named = [((by_class[t[0]] @ rows[t].T).argmax(1) == 0).mean() for _, t in syn_tasks]
        other = [((by_class[t[0]] @ np.concatenate([rows_syn[j : j + 1], rows[t[1:]]]).T).argmax(1) == 0).mean()
                 for j, t in syn_tasks]
        return 100 * np.mean(recall), 100 * np.mean(acc), np.mean(other) / np.mean(named)

    print(f"{len(seen)} seen + {len(extra.rows)} ImageNet classes, {len(extra.texts)} ImageNet texts; "
          f"{a.tasks} tasks, {len(held)} held-out classes, {a.synonym_tasks} synonym tasks ({len(synonyms)} synonyms)\n")
    print("| map | gamma | lambda | held-out recall | OOD task acc. | unseen synonyms ÷ names | fit s |")
    print("|---|---|---|---|---|---|---|")
    x_names = np.concatenate([e_names[seen], extra.emb[extra.first]])
    y_names = np.concatenate([zoo[seen], extra.rows])
    x_all = np.concatenate([e_names[seen], extra.emb])
    y_all = np.concatenate([zoo[seen], extra.rows[extra.owner]])
    owner = np.concatenate([np.arange(len(seen)), len(seen) + extra.owner])
    runs = [("linear (LOO λ)", lambda: build_text_prior(zoo_rows=zoo[seen], seen_emb=e_names[seen], extra=extra)[0]),
            ("kernel (LOO γ, λ: shipped)",
             lambda: build_text_prior(zoo_rows=zoo[seen], seen_emb=e_names[seen], extra=extra, kernel=True)[0])]
    for g in [float(x) for x in a.gammas.split(",") if x.strip()]:
        runs.append(("kernel, γ fixed", lambda g=g: fit_kernel_prior(x_names, y_names, x_all, y_all, owner, zoo[seen],
                                                                      gammas=(g,))))
    for label, make in runs:
        t0 = time.time()
        fit = make()
        secs = time.time() - t0
        recall, acc, ratio = score(fit)
        gamma = "—" if fit.kernel_keys is None else f"{fit.gamma:g}"
        print(f"| {label} | {gamma} | {fit.lam:.2f} | {recall:.1f} | {acc:.1f} | {ratio:.2f} | {secs:.1f} |", flush=True)


if __name__ == "__main__":
    main()
