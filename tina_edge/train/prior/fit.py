"""The text prior: a calibrated ridge map from a name's embedding to a head row, inside the denoiser.

Why: the diffusion alone learned the zoo's mean row per seen class and almost nothing about names it
never saw (held-out recall 32.6 %, a tie with "nearest seen class's row"). A linear map fitted on
many (text, row) pairs — the zoo's seen classes plus ~800 ImageNet classes with their synonyms and
definitions (train/imagenet_rows.py) — generalises far better, but only once its rows are put on the
zoo's scale: ridge shrinks predictions towards the mean row, and a shrunk row loses every photo to
the full-scale rows beside it in a prompt. So the prior's row is centred, its weight part rescaled
to the zoo's mean row norm, and its bias set to the zoo's mean bias.

The map is ridge regression either on the embedding itself ("linear") or, the default, on kernel
features exp(gamma (cos(e, key_m) - 1)) with one key per training class ("kernel", fit_kernel_prior):
a linear map cannot bend, and names close to a training class should take more of its row.

The denoiser adds the prior (in its normalised parameter space) to its x0 prediction and sees it as
an input, so it learns corrections for the seen classes while new names start from the prior. The
map lives in the denoiser's buffers: it is exported inside denoiser.onnx / generate.onnx and every
runtime (Python, node, browser) gets it without a new file or a line of runtime code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tina_edge.train.diffusion.text_prior import PriorFit
from tina_edge.train.prior.ridge import fit_ridge, ridge_solve


def zoo_scale(zoo_rows: np.ndarray) -> tuple[np.ndarray, float, float]:
    """What "the zoo's scale" means, once: the mean row [R], the mean norm of the rows' centred weight
    part, and the mean bias. The prior's calibration and the ImageNet rows' norm-matching both use it."""
    center = zoo_rows.mean(0)
    return center, float(np.linalg.norm((zoo_rows - center)[:, :-1], axis=1).mean()), float(zoo_rows[:, -1].mean())


def fit_text_prior(x_names: np.ndarray, y_names: np.ndarray, x_all: np.ndarray, y_all: np.ndarray,
                   zoo_rows: np.ndarray) -> PriorFit:
    """Ridge text -> row. The penalty is chosen by closed-form leave-one-out on one text per class
    (`x_names`, `y_names`: several phrasings of one class would leak into each other's LOO), then the
    map is refitted with that penalty on every (text, row) pair (`x_all`, `y_all`)."""
    lam = fit_ridge(x_names, y_names).lam
    coef, offset = ridge_solve(x_all, y_all, lam)
    return _calibrated(coef, offset, zoo_rows, lam, len(x_all))


def _calibrated(coef: np.ndarray, offset: np.ndarray, zoo_rows: np.ndarray, lam: float, pairs: int,
                keys: np.ndarray | None = None, gamma: float = 0.0) -> PriorFit:
    """A fitted map with the zoo's scale it is calibrated to (both maps end here)."""
    center, weight_norm, bias = zoo_scale(zoo_rows)
    return PriorFit(coef=coef.astype(np.float32), offset=offset.astype(np.float32), center=center.astype(np.float32),
                    weight_norm=weight_norm, bias=bias, lam=float(lam), pairs=pairs,
                    kernel_keys=None if keys is None else keys.astype(np.float32), gamma=gamma)


def kernel_features(x: np.ndarray, keys: np.ndarray, gamma: float) -> np.ndarray:
    """exp(gamma * (cos - 1)) of L2-normalised rows x [n, D] against keys [M, D] -> [n, M]."""
    return np.exp(gamma * (np.asarray(x, np.float64) @ np.asarray(keys, np.float64).T - 1.0))


def class_keys(x_all: np.ndarray, owner: np.ndarray, n: int) -> np.ndarray:
    """One key per class: the L2-normalised mean embedding of all its texts [n, D]."""
    k = np.zeros((n, x_all.shape[1]))
    np.add.at(k, owner, np.asarray(x_all, np.float64))
    return k / np.maximum(np.linalg.norm(k, axis=1, keepdims=True), 1e-12)


KERNEL_GAMMAS = (2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0)


def fit_kernel_prior(x_names: np.ndarray, y_names: np.ndarray, x_all: np.ndarray, y_all: np.ndarray,
                     owner_all: np.ndarray, zoo_rows: np.ndarray, gammas=KERNEL_GAMMAS) -> PriorFit:
    """Ridge on kernel features: row(e) = sum_m exp(gamma (cos(e, key_m) - 1)) coef_m + offset.

    Why: a linear map cannot bend; names near a training class should take more of that class's row
    than a linear map gives them. On the photo universe's held-out names (study, 400 tasks) the
    kernel map scores 73.8 % held-out recall against 67.3 % for the linear one, at the same task
    accuracy, and unseen synonyms 0.86 vs 0.76 of their names (BENCHMARKS §13).

    Keys: one per training class (the mean of its texts' embeddings: `owner_all` [n_all] gives each
    pair's class, 0..M-1), so the map costs M x R numbers, not one row per text. gamma and lambda
    are chosen together by closed-form leave-one-out on one text per class (`x_names`, `y_names`),
    never on held-out classes; the map is then refitted on every pair.
    """
    keys = class_keys(x_all, owner_all, int(owner_all.max()) + 1)
    best = None
    for g in gammas:
        r = fit_ridge(kernel_features(x_names, keys, g), y_names)
        if best is None or r.loo_mse < best[0]:
            best = (r.loo_mse, float(g), r.lam)
    _, gamma, lam = best
    coef, offset = ridge_solve(kernel_features(x_all, keys, gamma), y_all, lam)
    return _calibrated(coef, offset, zoo_rows, lam, len(x_all), keys, gamma)


@dataclass
class PriorData:
    """The (text, row) pairs a prior is fitted on, beyond the seen classes' names."""

    texts: list[str]  # every ImageNet text (names and definitions)
    emb: np.ndarray  # [T, D] L2-normalised
    owner: np.ndarray  # [T] index into rows
    rows: np.ndarray  # [n, R] norm-matched ImageNet rows
    first: np.ndarray  # [n] index of each class's first name in texts
    info: dict
    vocabulary: list[str]  # every ImageNet name kept (the manifest's extra training vocabulary)
    is_name: np.ndarray  # [T] bool: a name (True) or a definition (False)


def imagenet_prior_data(zoo_rows: np.ndarray, universe: list[dict], encode) -> PriorData:
    """ImageNet classes usable next to this universe (held-out names excluded), their rows moved to
    the scale of `zoo_rows` [n_seen, R], and the embeddings of their names and definitions."""
    from tina_edge.train.prior.imagenet_rows import imagenet_classes, usable_extras

    kept, dropped = usable_extras(imagenet_classes(), universe)
    return prior_data_of(kept, dropped, zoo_rows, encode)


def prior_data_of(kept: list, dropped: list[str], zoo_rows: np.ndarray, encode) -> PriorData:
    """PriorData of ImageNet classes already chosen (`kept`; `dropped`: the wnids the holdout excluded):
    what imagenet_prior_data builds, and what a name table's builder rebuilds from a manifest."""
    from tina_edge.train.prior.imagenet_rows import norm_matched_rows

    rows = norm_matched_rows(np.stack([c.row for c in kept]), *zoo_scale(zoo_rows))
    texts, owner, is_name = [], [], []
    for j, c in enumerate(kept):
        for t in c.names + ([c.definition] if c.definition else []):
            texts.append(t)
            owner.append(j)
            is_name.append(t != c.definition)
    e = np.asarray(encode(texts), np.float32)
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    owner_a = np.array(owner)
    first = np.array([int(np.flatnonzero(owner_a == j)[0]) for j in range(len(kept))])
    info = {"imagenet_classes": len(kept), "imagenet_dropped_for_holdout": dropped, "imagenet_texts": len(texts)}
    return PriorData(texts, e, owner_a, rows, first, info, sorted({n for c in kept for n in c.names}),
                     np.array(is_name))


def build_text_prior(*, zoo_rows: np.ndarray, seen_emb: np.ndarray, extra: PriorData | None,
                     kernel: bool = False) -> tuple[PriorFit, dict]:
    """Fit the prior on the seen classes (zoo mean rows [n, R], name embeddings [n, D], L2-normalised)
    and, when given, ImageNet's rows under all their names and definitions; `kernel` fits the
    kernel-feature map (fit_kernel_prior) instead of the linear one."""
    x_names, y_names = seen_emb, zoo_rows
    x_all, y_all = [x_names], [y_names]
    owner = [np.arange(len(zoo_rows))]
    info: dict = {"seen_classes": len(zoo_rows), "imagenet": extra is not None}
    if extra is not None:
        x_names = np.concatenate([x_names, extra.emb[extra.first]])
        y_names = np.concatenate([y_names, extra.rows])
        x_all.append(extra.emb)
        y_all.append(extra.rows[extra.owner])
        owner.append(len(zoo_rows) + extra.owner)
        info |= extra.info
    if kernel:
        fit = fit_kernel_prior(x_names, y_names, np.concatenate(x_all), np.concatenate(y_all),
                               np.concatenate(owner), zoo_rows)
        info |= {"map": "kernel", "kernel_keys": len(fit.kernel_keys), "gamma": fit.gamma}
    else:
        fit = fit_text_prior(x_names, y_names, np.concatenate(x_all), np.concatenate(y_all), zoo_rows)
        info |= {"map": "linear"}
    info |= {"lambda": fit.lam, "pairs": fit.pairs, "weight_norm": fit.weight_norm, "bias": fit.bias}
    return fit, info
