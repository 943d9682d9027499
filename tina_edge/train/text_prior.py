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
import torch
import torch.nn as nn


@dataclass
class PriorFit:
    coef: np.ndarray  # [D, R] text -> row
    offset: np.ndarray  # [R]  (intercept)
    center: np.ndarray  # [R]  mean zoo row: calibration is around it
    weight_norm: float  # mean norm of the zoo rows' centred weight part
    bias: float  # mean zoo bias
    lam: float
    pairs: int
    kernel_keys: np.ndarray | None = None  # [M, D] one L2-normalised key per training class (kernel map)
    gamma: float = 0.0  # kernel width: feature m = exp(gamma * (cos(e, key_m) - 1))


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
    from .baselines import fit_ridge

    lam = fit_ridge(x_names, y_names).lam
    x, y = np.asarray(x_all, np.float64), np.asarray(y_all, np.float64)
    xm, ym = x.mean(0), y.mean(0)
    xc = x - xm
    coef = np.linalg.solve(xc.T @ xc + lam * np.eye(x.shape[1]), xc.T @ (y - ym))
    center, weight_norm, bias = zoo_scale(zoo_rows)
    return PriorFit(coef=coef.astype(np.float32), offset=(ym - xm @ coef).astype(np.float32),
                    center=center.astype(np.float32), weight_norm=weight_norm, bias=bias, lam=float(lam), pairs=len(x))


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
    from .baselines import fit_ridge

    keys = class_keys(x_all, owner_all, int(owner_all.max()) + 1)
    best = None
    for g in gammas:
        r = fit_ridge(kernel_features(x_names, keys, g), y_names)
        if best is None or r.loo_mse < best[0]:
            best = (r.loo_mse, float(g), r.lam)
    _, gamma, lam = best
    f, y = kernel_features(x_all, keys, gamma), np.asarray(y_all, np.float64)
    fm, ym = f.mean(0), y.mean(0)
    fc = f - fm
    coef = np.linalg.solve(fc.T @ fc + lam * np.eye(f.shape[1]), fc.T @ (y - ym))
    center, weight_norm, bias = zoo_scale(zoo_rows)
    return PriorFit(coef=coef.astype(np.float32), offset=(ym - fm @ coef).astype(np.float32),
                    center=center.astype(np.float32), weight_norm=weight_norm, bias=bias, lam=float(lam),
                    pairs=len(x_all), kernel_keys=keys.astype(np.float32), gamma=gamma)


class TextPrior(nn.Module):
    """emb [..., D] -> calibrated row in the denoiser's normalised space [..., R].

    Buffers only (no trainable weights): coef (and a kernel map's keys) are stored in float16 (half the
    bytes in every exported graph; the torch model uses the same rounded values, so export parity is
    exact). With `kernel` M > 0 the ridge acts on M kernel features of the embedding, not on it.

    With `keys` seen-class names, a kernel term makes the prior exact where training knows the
    answer: row(e) = ridge(e) + sum_s exp((cos(e, key_s) - 1) / tau) * residual_s, residual_s = the
    zoo's mean row of seen class s minus ridge(key_s). Measured (BENCHMARKS §11): the ridge row of a
    seen name is a poor classifier (10-way 55.7 % vs 88.3 % for its zoo row), so without this term
    the denoiser had to learn large per-name corrections, and applied them to new names too (held-out
    recall 68.8 % for the prior alone -> 29.4 % with the correction). At tau 0.01 a key weighs 0.37 at
    cosine 0.99, 0.007 at 0.95 and nothing further away: other words keep the smooth ridge row.
    """

    def __init__(self, text_dim: int, row_dim: int, keys: int = 0, kernel: int = 0):
        super().__init__()
        self.n_keys = int(keys)
        self.n_kernel = int(kernel)
        if self.n_kernel:  # the map is linear in kernel features of the embedding (fit_kernel_prior)
            self.register_buffer("kernel_keys", torch.zeros(self.n_kernel, text_dim, dtype=torch.float16))
            self.register_buffer("gamma", torch.ones(1))
        if self.n_keys:
            self.register_buffer("keys", torch.zeros(self.n_keys, text_dim, dtype=torch.float16))
            self.register_buffer("residuals", torch.zeros(self.n_keys, row_dim, dtype=torch.float16))
            self.register_buffer("tau", torch.tensor([0.01]))
        self.register_buffer("coef", torch.zeros(self.n_kernel or text_dim, row_dim, dtype=torch.float16))
        self.register_buffer("offset", torch.zeros(row_dim))
        self.register_buffer("center", torch.zeros(row_dim))
        self.register_buffer("is_weight", torch.ones(row_dim))  # 1 on weight entries, 0 on the bias
        self.register_buffer("calib", torch.zeros(2))  # [weight_norm, bias]
        self.register_buffer("norm_mean", torch.zeros(row_dim))  # the layout's normalisation per entry
        self.register_buffer("norm_std", torch.ones(row_dim))

    @torch.no_grad()
    def load_fit(self, fit: PriorFit, is_weight: np.ndarray, norm_mean: np.ndarray, norm_std: np.ndarray) -> None:
        if (fit.kernel_keys is not None) != bool(self.n_kernel) or fit.coef.shape != tuple(self.coef.shape):
            raise ValueError(f"a prior fit with coef {fit.coef.shape} does not fit this TextPrior "
                             f"(coef {tuple(self.coef.shape)}, kernel keys {self.n_kernel})")
        if self.n_kernel:
            self.kernel_keys.copy_(torch.from_numpy(fit.kernel_keys).half())
            self.gamma.fill_(fit.gamma)
        self.coef.copy_(torch.from_numpy(fit.coef).half())
        self.offset.copy_(torch.from_numpy(fit.offset))
        self.center.copy_(torch.from_numpy(fit.center))
        self.is_weight.copy_(torch.as_tensor(is_weight, dtype=torch.float32))
        self.calib.copy_(torch.tensor([fit.weight_norm, fit.bias]))
        self.norm_mean.copy_(torch.as_tensor(norm_mean, dtype=torch.float32))
        self.norm_std.copy_(torch.as_tensor(norm_std, dtype=torch.float32))

    @torch.no_grad()
    def load_keys(self, keys: np.ndarray, rows: np.ndarray, tau: float = 0.01) -> None:
        """Seen names' embeddings [S, D] (L2-normalised) and their zoo mean rows [S, R]; call after load_fit."""
        self.keys.copy_(torch.from_numpy(np.asarray(keys, np.float32)).half())
        self.residuals.zero_()
        ridge = self.ridge_rows(self.keys.float())
        self.residuals.copy_((torch.from_numpy(np.asarray(rows, np.float32)) - ridge).half())
        self.tau.fill_(tau)

    def ridge_rows(self, emb: torch.Tensor) -> torch.Tensor:
        """Calibrated ridge rows in parameter units (weight..., bias), without the kernel term."""
        feats = emb
        if self.n_kernel:
            feats = torch.exp(self.gamma * (emb @ self.kernel_keys.float().t() - 1.0))
        c = feats @ self.coef.float() + self.offset - self.center
        w = c * self.is_weight
        scale = self.calib[0] / torch.sqrt((w * w).sum(-1, keepdim=True) + 1e-12)
        return self.is_weight * (w * scale + self.center) + (1.0 - self.is_weight) * self.calib[1]

    def raw_rows(self, emb: torch.Tensor) -> torch.Tensor:
        """Prior rows in parameter units: the ridge row, plus the kernel term when there are keys."""
        rows = self.ridge_rows(emb)
        if self.n_keys:
            w = torch.exp((emb @ self.keys.float().t() - 1.0) / self.tau)
            rows = rows + w @ self.residuals.float()
        return rows

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return (self.raw_rows(emb) - self.norm_mean) / self.norm_std


def row_normalisation(layout) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row entry: is-weight flag, normalisation mean and std (from the layout's TensorSpecs)."""
    flags, means, stds = [], [], []
    by_offset = {s.offset: s for s in layout.specs}
    for i, (offset, per) in enumerate(layout.row_segments()):
        s = by_offset[offset]
        flags += [1.0 if i == 0 else 0.0] * per
        means += [s.mean] * per
        stds += [s.std] * per
    return np.array(flags, np.float32), np.array(means, np.float32), np.array(stds, np.float32)


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
    from .imagenet_rows import imagenet_classes, norm_matched_rows, usable_extras

    kept, dropped = usable_extras(imagenet_classes(), universe)
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


def prior_only_checkpoint(src, dst) -> dict:
    """A copy of checkpoint `src` whose denoiser returns its text prior and nothing else.

    Why: on the photo universe the prior alone beats prior + correction on names never seen in
    training (held-out recall 68.1 vs 66.5 %, BENCHMARKS §12) and ties on seen names. Zeroing the
    correction's output layer (model and EMA) keeps every graph, runtime and the sampler unchanged:
    x0 = prior at every step, so any sampler returns the prior. Returns the new text_prior record.
    """
    from ..runtime.errors import TinaEdgeError
    from .trainer import read_checkpoint, write_checkpoint

    ck = read_checkpoint(src)
    if not ck.meta["denoiser"].get("text_prior"):
        raise TinaEdgeError(f"{src} has no text prior (train it with `train diffusion --text-prior`)")
    tensors = dict(ck.tensors)
    for prefix in ("model.", "ema."):
        for name in ("row_out.weight", "row_out.bias"):
            tensors[prefix + name] = torch.zeros_like(tensors[prefix + name])
    meta = dict(ck.meta)
    meta["text_prior"] = dict(meta.get("text_prior") or {}) | {"prior_only": True}
    write_checkpoint(dst, tensors, meta)
    return meta["text_prior"]
