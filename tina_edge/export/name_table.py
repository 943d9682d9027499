"""Build a bundle's name table: a larger encoder's reading of WordNet's visible nouns, in the bundle
encoder's space (runtime/name_table.py reads it; export/portable/name_table.py writes it).

Why and how (BENCHMARKS §24): the same kernel prior fitted on all-mpnet-base-v2 embeddings reads names
it never trained on better than the bundle's MiniLM prior (held-out recall +6.3 ± 1.2 points, k 2-20).
The runtime cannot run mpnet, so for every visible WordNet noun:
1. the mpnet prior's row: fit_kernel_prior on mpnet embeddings, on the pairs the shipped prior was
   fitted on (the seen classes' rows, as the bundle's own prior gives them for their names, and the
   796 ImageNet classes' norm-matched rows with all their names and definitions; no held-out class's
   row or photo anywhere: the manifest's `imagenet_dropped_for_holdout` is honoured);
2. the unit embedding in the bundle encoder's space whose row under the bundle's prior graph is
   closest to that row (Adam from the name's own MiniLM embedding; `ShippedPrior` is prior.onnx's
   arithmetic in torch, checked against onnxruntime before use).
Left out: the vocabulary's names, the training synonyms and the everyday keys (their rows are exact).

    python -m tina_edge.export.name_table BUNDLE_DIR --encoder st:/path/all-mpnet-base-v2   # in place
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from tina_edge.runtime.contracts import ATTENTION_MASK, INPUT_IDS


class ShippedPrior:
    """A bundle's prior graph (prior.onnx: kernel ridge, calibration, residual keys) as a torch function
    of the embedding, read from its initializers, so an embedding can be solved for. Raw rows, in
    parameter units (weight..., bias), as a prior-only personalize returns them."""

    def __init__(self, path: str | Path):
        import onnx
        import torch
        from onnx import numpy_helper

        from tina_edge.export.portable.everyday_keys import find_prior

        m = onnx.load(str(path))
        init = {t.name: numpy_helper.to_array(t).astype(np.float32) for t in m.graph.initializer}
        pt = find_prior(m)  # the residual keys' kernel term, found as convert finds it
        cast_of = {n.output[0]: n.input[0] for n in m.graph.node if n.op_type == "Cast"}  # float16 storage
        weights = [cast_of.get(n.input[1], n.input[1]) for n in m.graph.node if n.op_type == "MatMul"]
        ridge = [w for w in weights if pt is None or w not in (pt.keys, pt.residuals)]
        if pt is None or len(ridge) != 2 or any(w not in init for w in ridge):
            raise ValueError(f"{path} is not a kernel prior with residual keys (convert writes one: prior.onnx)")

        def t(a):
            return torch.from_numpy(np.ascontiguousarray(a))

        self.k1, self.coef = t(init[ridge[0]]), t(init[ridge[1]])  # the ridge's kernel keys [D, M], coefficients [M, R]
        self.k2, self.res = t(init[pt.keys]), t(init[pt.residuals])
        self.gamma = float(init["prior.gamma"].reshape(-1)[0])
        self.weight_norm = float(next(v for k, v in init.items() if k.startswith("onnx::Div")).reshape(-1)[0])
        self.offset, self.center, self.is_weight = t(init["prior.offset"]), t(init["prior.center"]), t(init["prior.is_weight"])
        self.bias_term = t(next(v for k, v in init.items() if k.startswith("onnx::Add")))
        self.tau = t(init["prior.tau"])
        self.norm_mean, self.norm_std = init["prior.norm_mean"], init["prior.norm_std"]

    def raw(self, e):
        """Rows [n, R] for unit embeddings e [n, D] (torch)."""
        import torch

        c = torch.exp(self.gamma * (e @ self.k1 - 1.0)) @ self.coef + self.offset - self.center
        w = c * self.is_weight
        w = w * (self.weight_norm / torch.sqrt((w * w).sum(-1, keepdim=True) + 1e-12))
        return self.is_weight * (w + self.center) + self.bias_term + torch.exp((e @ self.k2 - 1.0) / self.tau) @ self.res

    def rows(self, emb: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.raw(torch.from_numpy(np.asarray(emb, np.float32))).numpy()

    def invert(self, init: np.ndarray, target: np.ndarray, steps: int = 400, lr: float = 0.02,
               chunk: int = 4096, log: Callable[[str], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(unit embeddings [n, D] whose rows come closest to `target` [n, R], relative squared error per row)."""
        import torch

        out, errs = [], []
        for s in range(0, len(init), chunk):
            e = torch.nn.Parameter(torch.from_numpy(np.asarray(init[s:s + chunk], np.float32)).clone())
            y = torch.from_numpy(np.asarray(target[s:s + chunk], np.float32))
            opt = torch.optim.Adam([e], lr=lr)
            for _ in range(steps):
                u = e / e.norm(dim=1, keepdim=True)
                loss = (((self.raw(u) - y) ** 2).sum(1) / (y ** 2).sum(1)).sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
            with torch.no_grad():
                u = e / e.norm(dim=1, keepdim=True)
                errs.append((((self.raw(u) - y) ** 2).sum(1) / (y ** 2).sum(1)).numpy())
            out.append(u.detach().numpy())
            if log:
                log(f"inverted {min(s + chunk, len(init))}/{len(init)}: relative error median {np.median(errs[-1]):.4f}")
        return np.concatenate(out), np.concatenate(errs)


def training_imagenet_classes(manifest) -> list:
    """The ImageNet classes the bundle's prior was fitted on: not dropped for the holdout (the manifest
    records those wnids), not a universe class, named in the training vocabulary."""
    from tina_edge.train.prior.imagenet_rows import imagenet_classes

    tr = manifest.training
    held = {n.lower() for n in tr.holdout_classes or []}
    dropped = set(tr.text_prior["imagenet_dropped_for_holdout"])
    vocab = set(tr.vocabulary or [])
    universe = {n.lower() for n in tr.classes or []}
    kept = [c for c in imagenet_classes() if c.wnid not in dropped and c.names[0].lower() not in universe
            and c.names[0] in vocab and not any(n.lower() in held for n in c.names)]
    if len(kept) != int(tr.text_prior["imagenet_classes"]):
        raise ValueError(f"rebuilt {len(kept)} ImageNet training classes; the manifest records {tr.text_prior['imagenet_classes']}")
    return kept


def fit_encoder_prior(encode: Callable[[list[str]], np.ndarray], seen_names: Sequence[str], zoo_rows: np.ndarray, kept: list):
    """fit_kernel_prior on another encoder's embeddings of the pairs the shipped prior was fitted on."""
    from tina_edge.train.prior.fit import build_text_prior, prior_data_of

    extra = prior_data_of(kept, [], zoo_rows, encode)
    seen = encode(list(seen_names))
    seen = seen / np.linalg.norm(seen, axis=1, keepdims=True)
    return build_text_prior(zoo_rows=zoo_rows, seen_emb=seen, extra=extra, kernel=True)


def kernel_prior_rows(fit, emb: np.ndarray) -> np.ndarray:
    """TextPrior.ridge_rows in numpy (keys and coef rounded to float16, as bundles store them)."""
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    keys = fit.kernel_keys.astype(np.float16).astype(np.float64)
    coef = fit.coef.astype(np.float16).astype(np.float64)
    c = np.exp(fit.gamma * (e @ keys.T - 1.0)) @ coef + fit.offset - fit.center
    isw = np.ones(c.shape[1])
    isw[-1] = 0.0
    w = c * isw
    scale = fit.weight_norm / np.sqrt((w * w).sum(-1, keepdims=True) + 1e-12)
    return isw * (w * scale + fit.center) + (1.0 - isw) * fit.bias


def encode_short(enc, texts: Sequence[str], batch: int = 512, cache: str | Path | None = None) -> np.ndarray:
    """A sentence-transformers encoder over many short texts: batches of similar length, padded to the
    batch's longest text (mean pooling over the mask: the same embedding as padding to max_tokens, to
    float rounding; 10x faster for WordNet's nouns). `cache`: an EmbeddingCache directory (encoders.py)."""
    import torch

    texts = list(texts)
    if cache is not None:
        from tina_edge.train.text.encoders import EmbeddingCache

        store = EmbeddingCache(cache, enc.cache_key)
        _, missing = store.get(texts)
        if missing:
            store.add(missing, encode_short(enc, missing, batch))
        return store.get(texts)[0]
    mod = enc.torch_module()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), enc.dim), np.float32)
    with torch.inference_mode():
        for s in range(0, len(order), batch):
            idx = order[s:s + batch]
            tok = enc.hf_tokenizer([texts[i] for i in idx], padding="longest", truncation=True,
                                   max_length=enc.max_tokens, return_tensors="pt")
            out[idx] = mod(tok[INPUT_IDS], tok[ATTENTION_MASK]).float().numpy()
    return out


def visible_nouns(wordnet: str | Path | None = None) -> list[str]:
    """WordNet nouns with a visible sense (senses.visible) in which they are a common noun, no digits."""
    from tina_edge.export.portable.senses import _common, visible
    from tina_edge.export.portable.wordnet import WordNet, find_wordnet

    root = find_wordnet(wordnet)
    if root is None:
        raise FileNotFoundError("WordNet 3.0 is not installed: apt-get install wordnet-base, or pass --wordnet DIR")
    wn = WordNet(str(root))
    words = set()
    for lemma, offsets in wn.index.items():
        if any(ch.isdigit() for ch in lemma):
            continue
        vis = [s for s in (wn.synset(o) for o in offsets) if visible(wn, s)]
        if vis and any(_common(wn, lemma, s.wnid) for s in vis):
            words.add(lemma.replace("_", " "))
    return sorted(words)


def excluded_keys(manifest) -> set[str]:
    """Class keys whose rows are exact in the bundle's prior: the vocabulary, training synonyms, everyday keys."""
    from tina_edge.runtime.prompt import class_key

    tr = manifest.training
    out = {class_key(n) for n in tr.vocabulary or []}
    out |= {class_key(s) for syns in (tr.synonyms or {}).values() for s in syns}
    if (tr.text_prior or {}).get("everyday_keys"):
        from tina_edge.export.portable.everyday_keys import load_words

        out |= {class_key(w) for words in load_words().values() for w in words}
    return out


def build(bundle_dir: Path, encoder: str, wordnet: str | None, steps: int, log=print, cache: str | None = None) -> dict:
    """Compute and write the table into the bundle (in place); the numbers it was built with."""
    from tina_edge.export.portable.name_table import write_name_table
    from tina_edge.runtime import Personalizer
    from tina_edge.runtime.prompt import class_key
    from tina_edge.train.text.encoders import build_text_encoder

    p = Personalizer.from_bundle(bundle_dir, threads=1)
    m = p.manifest
    if not m.portable.prior_model:
        raise ValueError("the bundle has no prior graph (portable.prior): convert it first (tina-edge convert)")
    sp = ShippedPrior(bundle_dir / m.portable.prior_model)
    tr = m.training
    seen = [n for n in tr.classes if n not in set(tr.holdout_classes or [])]
    zoo_rows = sp.rows(p.encode(seen)).astype(np.float64)
    check = np.abs(sp.rows(p.encode(seen[:20])) - bundle_rows(p, p.encode(seen[:20]))).max()
    if check > 1e-4:
        raise ValueError(f"the torch reading of the prior graph differs from onnxruntime's by {check:.2e}")
    big = build_text_encoder(encoder)
    t = time.time()
    fit, info = fit_encoder_prior(lambda texts: encode_short(big, texts, cache=cache), seen, zoo_rows, training_imagenet_classes(m))
    log(f"{encoder} prior: gamma {info['gamma']}, lambda {info['lambda']:.3f} ({time.time() - t:.0f} s)")
    skip = excluded_keys(m)
    words = [w for w in visible_nouns(wordnet) if class_key(w) not in skip]
    keys, seen_key = [], set()
    for w in words:
        k = class_key(w)
        if k not in seen_key:
            seen_key.add(k)
            keys.append(w)
    log(f"{len(keys)} visible WordNet nouns ({len(skip)} exact keys left out)")
    target = kernel_prior_rows(fit, encode_short(big, keys, cache=cache))
    log(f"encoded and read by the {encoder} prior ({time.time() - t:.0f} s)")
    vec, err = sp.invert(p.encode(keys), target, steps=steps, log=log)
    source = {"encoder": getattr(big, "name", encoder), "method": "prior-row inversion into this encoder's space",
              "prior_gamma": info["gamma"], "prior_lambda": round(float(info["lambda"]), 6), "steps": steps,
              "relative_error_median": round(float(np.median(err)), 5), "wordnet": "3.0",
              "prior_sha256": m.files[m.portable.prior_model]["sha256"]}  # the graph inverted: the runtime checks it
    write_name_table(bundle_dir, keys, vec, source)
    from tina_edge.export.portable.name_table import add_aliases

    aliases = add_aliases(bundle_dir, wordnet)  # WordNet synonyms of vocabulary names read as those names
    log(f"wrote the name table: {len(keys)} names ({len(aliases)} aliases), median relative row error "
        f"{np.median(err):.4f} ({time.time() - t:.0f} s)")
    return source


def bundle_rows(p, emb: np.ndarray) -> np.ndarray:
    """A bundle's own rows [n, R] (weight..., bias) for conditioning rows emb [n, D], through onnxruntime,
    K_max at a time (the prior is per class): ShippedPrior's check, and the benchmark's baseline."""
    smp = p._settings(None, None, 0, 1)[0]
    out = []
    for i in range(0, len(emb), p.manifest.k_max):
        q = p._params(smp, np.asarray(emb[i:i + p.manifest.k_max], np.float32), 0, 1, calibration="none")
        out.append(np.concatenate([q["fc.weight"], q["fc.bias"][:, None]], 1))
    return np.concatenate(out)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle", type=Path, help="a converted bundle directory (with prior.onnx); the table is added in place")
    ap.add_argument("--encoder", required=True, help="the larger encoder, e.g. st:/data/all-mpnet-base-v2")
    ap.add_argument("--wordnet", default=None, help="WordNet 3.0 dict directory (default: the installed one)")
    ap.add_argument("--steps", type=int, default=400, help="Adam steps of the inversion")
    ap.add_argument("--cache", default=None, help="a directory caching the larger encoder's embeddings")
    args = ap.parse_args(argv)
    build(args.bundle, args.encoder, args.wordnet, args.steps, log=lambda s: print(s, file=sys.stderr, flush=True),
          cache=args.cache)


if __name__ == "__main__":
    main()
