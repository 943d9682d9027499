"""The methods benchmarks/many_classes.py compares, each as rows (W [k, F], b [k]) on trunk features.

- generated: the runtime's `personalize` path (groups above K_max, runtime/groups.py), any calibration;
- prior alone: the same path with the denoiser's correction output (`row_out`) zeroed, so x0 = the text
  prior at every step: what the prior-only checkpoint (train/diffusion/checkpoint.py) gives;
- probe: a logistic regression fitted on the train photos of all classes, restricted to the task;
- fine-tuned: the same regression fitted on the task's classes only (the issue's fine-tuned head);
- nearest vocabulary: each held-out name is replaced by its nearest known name (the bundle's training
  vocabulary, by text embedding, not a name of the task), whose generated row it takes;
- nearest seen: each held-out name takes the probe row of the nearest seen class (not in the task).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

CORRECTION = "/row_out/"  # the denoiser's correction head (train/diffusion/denoiser.py CORRECTION_OUTPUT)


def fit_probe(x: np.ndarray, y: np.ndarray, C: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression on standardised features, returned as rows on raw features."""
    from sklearn.linear_model import LogisticRegression

    mu, sd = x.mean(0), x.std(0) + 1e-6
    lr = LogisticRegression(C=C, max_iter=300).fit((x - mu) / sd, y)
    w = lr.coef_ / sd
    b = lr.intercept_ - w @ mu
    if w.shape[0] == 1:  # sklearn's binary form: one row
        w, b = np.concatenate([-w / 2, w / 2]), np.concatenate([-b / 2, b / 2])
    return w.astype(np.float32), b.astype(np.float32)


def cached_probe(path: Path, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The all-class probe, fitted once into `path`."""
    if not path.is_file():
        from tina_edge.runtime.atomic import atomic_save_npz

        t = time.time()
        w, b = fit_probe(x, y)
        print(f"probe on {int(y.max()) + 1} classes fitted in {time.time() - t:.0f} s", file=sys.stderr)
        atomic_save_npz(path, w=w, b=b)
    with np.load(path) as z:
        return z["w"], z["b"]


def prior_only(p, bundle: Path | None):
    """A Personalizer like p whose denoiser returns the text prior alone, or None (with the reason) when
    the bundle's denoiser has no correction head to zero (then there is no separate prior to measure).
    The zeroing is `convert --prior-only`'s own (export/portable/prior_only.py: the weights the
    correction reads, through any storage Cast); a bundle converted so is returned as it is."""
    import onnx

    from tina_edge.export.portable.prior_only import correction_initializers, zero_correction
    from tina_edge.runtime.bundle import open_bundle
    from tina_edge.runtime.personalizer import Personalizer, _session

    if p.manifest.portable.prior_only:
        return p, "the bundle is prior-only already (portable.prior.only)"
    name = p.manifest.denoiser.model
    model = onnx.load_from_string(open_bundle(bundle).data(name))
    if not correction_initializers(model.graph):
        return None, f"{name} has no {CORRECTION} correction head"
    zeroed = zero_correction(model, name)
    q = Personalizer(p.bundle, p._text, _session(model.SerializeToString(), name, 1), threads=1)
    q._prior = p._prior_session()  # a split bundle's prior graph, shared (its bytes are released once loaded)
    return q, f"zeroed {', '.join(zeroed)}"


def generated(p, emb: np.ndarray, modes=("group",), group: int | None = None, seed: int = 0) -> dict:
    """{calibration: (W, b)} for conditioning rows emb [k, D], sampled once (DDIM at the manifest's steps)."""
    from tina_edge.runtime.groups import calibrate, group_sizes

    smp = p._settings(None, None, seed, 1)[0]
    raw = p._params(smp, emb, seed, 1, calibration="none", group=group)
    lay = p.manifest.template.layout
    sizes = group_sizes(len(emb), min(group or p.manifest.k_max, p.manifest.k_max))
    out = {}
    for m in modes:
        q = calibrate(raw, lay, sizes, m) if len(sizes) > 1 else raw
        out[m] = (q["fc.weight"], q["fc.bias"])
    return out


class Vocabulary:
    """The bundle's training vocabulary (names, unit embeddings) for the nearest-vocabulary lookup."""

    def __init__(self, p):
        self.p = p
        self.names = list(p.manifest.vocabulary)
        e = p._vocabulary_embeddings()
        self.unit = e / np.linalg.norm(e, axis=1, keepdims=True)

    def substitute(self, names: list[str], held: set[str], emb: np.ndarray) -> tuple[np.ndarray, dict[str, str]]:
        """emb with each held-out name's row replaced by the conditioning row of its nearest vocabulary name
        that is not a name of the task (nor taken by another held-out name)."""
        taken = {n.lower() for n in names}
        out, chosen = emb.copy(), {}
        for i, n in enumerate(names):
            if n not in held:
                continue
            e = emb[i] / np.linalg.norm(emb[i])
            for j in np.argsort(-(self.unit @ e)):
                if self.names[j].lower() not in taken:
                    break
            taken.add(self.names[j].lower())
            chosen[n] = self.names[j]
        if chosen:
            rows = self.p.class_embeddings(list(chosen.values()))
            for r, n in zip(rows, chosen):
                out[names.index(n)] = r
        return out, chosen


def nearest_seen(W: np.ndarray, B: np.ndarray, unit: np.ndarray, cls: list[int], seen: list[int],
                 held: set[int]) -> tuple[np.ndarray, np.ndarray]:
    """Probe rows; each held-out class takes the row of its nearest seen class name (not in the task)."""
    used = set(cls)
    rows = []
    for c in cls:
        if c in held:
            cand = [s for s in seen if s not in used] or seen
            s = cand[int(np.argmax(unit[cand] @ unit[c]))]
            used.add(s)
            rows.append(s)
        else:
            rows.append(c)
    return W[rows], B[rows]
