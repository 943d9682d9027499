"""Names beyond the vocabulary (issue 22, item 3): the shipped text prior against the same kernel prior
fitted on a large encoder's embeddings (all-mpnet-base-v2), as a lemma table would ship it.

The shipped prior maps a MiniLM embedding to a head row (kernel ridge over 973 training classes,
calibrated to the zoo's scale: train/prior/fit.py). A table of precomputed rows for WordNet's noun
lemmas could carry a larger encoder's reading of a name without shipping the encoder. This measures
what such a table would buy, before any runtime is written for it:

* targets: the training classes' rows as the shipped bundle's prior gives them for their own names
  (the 177 seen classes' rows are exact there: the prior's residual keys) and the pretrained
  ImageNet head's rows of the 796 ImageNet classes training used (norm-matched, as training did),
  with every ImageNet name and definition. No held-out class's row or photo is used anywhere.
* the same fit (fit_kernel_prior: gamma and lambda by leave-one-out on training classes) on MiniLM
  (the control: isolates the encoder from the fit) and on mpnet;
* optionally the mpnet embeddings compressed as a table would store them (PCA to --pca dims over a
  WordNet noun-lemma sample, int8 per dim), to see what compression costs.

Tasks: many_classes.py's held-out tasks (seed 0; mixed tasks, round(k x held/all) held-out classes),
k 2, 10, 20, 20 tasks each; seen classes keep the shipped rows in every variant, held-out names take
the variant's rows. Held-out recall and task accuracy with paired SE over tasks against the shipped
prior.

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/large_encoder_prior.py --encoder st:/tmp/mpnet \\
        --cifar10 /tmp/cifar10x/cifar10 --fashion-mnist /usr/share/datasets/fashion-mnist
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import many_classes as mc  # noqa: E402

from tina_edge.export.name_table import bundle_rows  # noqa: E402


def evaluate(bn, variants: dict[str, np.ndarray], args) -> dict:
    """Held-out recall and task accuracy per variant on many_classes' mixed held-out tasks (k 2, 10, 20); prints the table."""
    rng = np.random.default_rng(args.seed)
    F, L = bn.val["features"], bn.val["labels"]
    held = set(bn.held)
    out_k: dict = {}
    all_rec: dict[str, list] = {}
    for k in (2, 10, 20):
        rows: dict[str, list] = {}
        for cls in mc.held_tasks(rng, bn, k, args.tasks):
            hmask = np.isin(cls, list(held))
            base = bundle_rows(bn.p, bn.emb[cls])
            for m in ["shipped prior", *variants]:
                r = base.copy()
                if m != "shipped prior":
                    r[hmask] = variants[m][np.asarray(cls)[hmask]]
                acc, rec = mc.accuracy(r[:, :-1], r[:, -1], F, L, cls)
                rows.setdefault(m, []).append((acc, float(np.mean(rec[hmask]))))
        out = {}
        for m, v in rows.items():
            a = np.array(v)
            d = a - np.array(rows["shipped prior"])
            out[m] = {"acc": a[:, 0].mean(), "recall": a[:, 1].mean(), "recall_vs_shipped": d[:, 1].mean(),
                      "recall_se": mc.se(d[:, 1]), "acc_vs_shipped": d[:, 0].mean(), "acc_se": mc.se(d[:, 0])}
            all_rec.setdefault(m, []).extend(d[:, 1])
        out_k[str(k)] = out
    print("| variant (held-out names only) | " + " | ".join(f"k={k}: recall; Δ vs shipped" for k in (2, 10, 20)) + " | k 2-20: Δ recall |")
    print("|---" * 5 + "|")
    for m in out_k["2"]:
        cells = [f"{out_k[str(k)][m]['recall']:.1f}; {out_k[str(k)][m]['recall_vs_shipped']:+.1f} ± "
                 f"{out_k[str(k)][m]['recall_se']:.1f}" for k in (2, 10, 20)]
        d = np.array(all_rec[m])
        print(f"| {m} | " + " | ".join(cells) + f" | {d.mean():+.1f} ± {mc.se(d):.1f} |")
    print("task accuracy: " + "; ".join(f"k={k} " + ", ".join(f"{m} {v['acc']:.1f} ({v['acc_vs_shipped']:+.1f} ± {v['acc_se']:.1f})"
                                                             for m, v in out_k[str(k)].items()) for k in (2, 10, 20)))
    return out_k


class Int8Pca:
    """What a compressed table would store per name: PCA coordinates, int8 with one scale per dim."""

    def __init__(self, sample: np.ndarray, dims: int):
        self.mean = sample.mean(0)
        _, _, vt = np.linalg.svd(sample - self.mean, full_matrices=False)
        self.basis = vt[:dims]
        self.scale = np.abs((sample - self.mean) @ self.basis.T).max(0) / 127.0

    def __call__(self, emb: np.ndarray) -> np.ndarray:
        z = (emb - self.mean) @ self.basis.T
        return np.clip(np.round(z / self.scale), -127, 127) * self.scale @ self.basis + self.mean


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mc.add_photo_arguments(ap)
    ap.add_argument("--encoder", default="st:/tmp/mpnet", help="the large encoder (build_text_encoder spec)")
    ap.add_argument("--reference", type=Path, default=None,
                    help="the bundle without a name table that the variants are fitted to (default: the embedded one)")
    ap.add_argument("--table-bundle", type=Path, default=None,
                    help="a bundle with a name table (export/name_table.py): its rows, end to end, as a variant")
    ap.add_argument("--tasks", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pca", default="128,64", help="PCA dims of the compressed-table variants (empty: none)")
    ap.add_argument("--pca-sample", type=int, default=4000, help="WordNet noun lemmas the PCA basis is fitted on")
    ap.add_argument("--embedding-cache", type=Path, default=Path("/tmp/large-encoder-prior-cache"))
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args()

    from tina_edge.train.text.encoders import build_text_encoder
    from tina_edge.export.name_table import (ShippedPrior, encode_short, fit_encoder_prior, kernel_prior_rows,
                                                 training_imagenet_classes, visible_nouns)

    bn = mc.reference_bench(args, args.reference)
    p = bn.p
    if p.manifest.text_encoder.name_table:
        raise SystemExit("--reference must be a bundle without a name table (the variants replace what the encoder reads)")
    tr = p.manifest.training
    seen_names = [n for n in tr.classes if n not in set(tr.holdout_classes)]
    mini = build_text_encoder("minilm")
    big = build_text_encoder(args.encoder)

    def enc(e, texts):
        return encode_short(e, list(texts), cache=args.embedding_cache)

    t = time.time()
    zoo_rows = bundle_rows(p, p.class_embeddings(seen_names))
    kept = training_imagenet_classes(p.manifest)
    fits = {}
    for tag, e in (("MiniLM (control)", mini), ("mpnet", big)):
        fits[tag] = fit_encoder_prior(lambda texts, e=e: enc(e, texts), seen_names, zoo_rows, kept)
        print(f"{tag}: {fits[tag][1]} ({time.time() - t:.0f} s)", file=sys.stderr)

    names = bn.names
    texts = p.encoded_texts(names)  # what the runtime encodes per class (an ambiguous name in its sense)
    variants: dict[str, np.ndarray] = {}  # rows of every universe name under each variant
    variants["MiniLM (control)"] = kernel_prior_rows(fits["MiniLM (control)"][0], enc(mini, texts))
    big_names = enc(big, texts)
    variants["mpnet"] = kernel_prior_rows(fits["mpnet"][0], big_names)
    sp = ShippedPrior(p.bundle.path(p.manifest.portable.prior_model))
    print(f"ShippedPrior vs the bundle's rows: max |diff| "
          f"{np.abs(sp.rows(bn.emb[:20]) - bundle_rows(p, bn.emb[:20])).max():.2e}", file=sys.stderr)
    inv, _ = sp.invert(np.asarray(bn.emb, np.float32), variants["mpnet"])
    variants["mpnet, as a MiniLM-space embedding (inverted)"] = sp.rows(inv).astype(np.float64)
    dims = [int(d) for d in args.pca.split(",") if d]
    if dims:
        rng = np.random.default_rng(args.seed)
        nouns = visible_nouns()
        sample = enc(big, [nouns[i] for i in rng.choice(len(nouns), min(args.pca_sample, len(nouns)), replace=False)])
        for d in dims:
            variants[f"mpnet, table PCA {d} int8"] = kernel_prior_rows(fits["mpnet"][0], Int8Pca(sample, d)(big_names))
    if args.table_bundle:
        from tina_edge.runtime import Personalizer

        q = Personalizer.from_bundle(args.table_bundle, threads=1)
        variants["name table bundle (end to end)"] = bundle_rows(q, q.class_embeddings(names))
    res: dict = {"imagenet_classes": len(kept), "fits": {k: v[1] for k, v in fits.items()}}
    res["heldout"] = evaluate(bn, variants, args)
    if args.json_out:
        from tina_edge.runtime.atomic import atomic_write_json

        atomic_write_json(args.json_out, res, indent=1, default=float)


if __name__ == "__main__":
    main()
