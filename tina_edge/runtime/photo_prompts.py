"""Photo prompts on trunk bundles: the user's own photos of a class turn into head rows, no image tower needed.

Why a module of its own (issue 21): a trunk bundle (lite0_head) already maps any photo to the
1,280-d feature its generated head reads. A class's photos therefore say directly where that class
lies in the head's input space, and a closed-form rule fuses that with the rows the diffusion made
from the class name. Two parts, both torch-free:

* `PhotoFeaturizer`: photos (paths, folders, PIL images, uint8 arrays) -> trunk features, with the
  very preprocessing `predict` applies (runtime/preprocess.py `prepare`, the manifest's spec) and the
  bundle's own trunk (runtime/head.py `extract_trunk`), run in small batches so peak memory stays low.
  Each photo goes through the trunk once per `personalize` call.
* `photo_head_rows`: (name rows, photo features per class) -> head rows. The rule and its constants
  were chosen by benchmarks/photo_prompts.py (tables in BENCHMARKS.md §16 and §25): every constant
  is tuned on SEEN classes only:
    - prototype rows: the class's mean feature, centred on the mean of all the task's photos and
      L2-normalised, scaled so its logits are comparable to the name logits (a cosine prototype with
      the centring folded into the bias);
    - a class with a name and photos: z_name / s_name + lam * z_proto / s_proto, where s_* is the
      spread of each part's logits over the task's own photos (a per-task scale, measured here, not
      stored); lam(n) is FUSION_WEIGHTS for a name the bundle knows (its row is exact) and
      FUSION_WEIGHTS_NEW for any other text (a new name, a description: its row is weaker), each tuned
      on seen classes (the second on seen classes described by their glosses);
    - a photos-only class (label only a label): its name part is the mean of the named rows (a neutral
      z-score of 0), so only its photos speak; a task of photos-only classes is a cosine prototype;
    - a named class without photos in a task with photos: its photo part is the mean prototype row.
Photos and features never leave this module's call: the model records only how many photos each
class had (ModelMetadata.image_prompts).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .contracts import FEATURES, IMAGE
from .sessions import run_graph
from .errors import ImageError, PromptError

MAX_PHOTOS_PER_CLASS = 20  # issue 21: 1-20 example photos per class
BATCH = 2  # photos per trunk run: ORT's arena keeps one batch's activations (peak, BENCHMARKS.md §16)

# lam(n), the weight of the photo part for a class with n photos (name part weight 1), chosen by
# `benchmarks/photo_prompts.py --tune` on 10-way tasks of SEEN Tiny-ImageNet classes (tuning half)
# of the default bundle; n between two entries uses the lower entry's weight, beyond 10 the last.
# Two tables: a class named by a name the bundle knows (training vocabulary or synonyms: its row is
# the prior's exact row) and a class named by any other text (a new name, a description, a sense).
# Known names, grid lam in {0.25, 0.5, 0.75, 1, 1.5, 2, 3}, 40 tasks per shot count: 0.5 is best or
# tied at 1, 2, 5 and 10 photos (0.873 / 0.876 / 0.880 / 0.883 against names only 0.873).
FUSION_WEIGHTS: dict[int, float] = {1: 0.5, 2: 0.5, 5: 0.5, 10: 0.5}
# Other texts: the same seen TUNE classes, each given by its WordNet gloss as a description (a text the
# prior holds no key for, nearly as weak as a new name: names only 0.70-0.71 on those tasks, held-out names
# 0.62-0.64), grid {0.5, 1, 1.5, 2, 3, 4, 6}: best 1.5 at 1 and 2 photos, 3 at 5 and 10 (BENCHMARKS.md §25,
# `--tune --tune-new`).
FUSION_WEIGHTS_NEW: dict[int, float] = {1: 1.5, 2: 1.5, 5: 3.0, 10: 3.0}
# Leave-one-out per task over LOO_GRID (no constant tuned on any class; chosen once after seeing
# held-out figures) was the rule before the two tables; on the gloss-described TUNE tasks it loses
# 2.0 / 1.1 / 0.7 points to FUSION_WEIGHTS_NEW at 2 / 5 / 10 photos. Kept as an option (benchmark).
LOO = False
LOO_GRID = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
CENTRE = True  # prototype rows centred on the mean of the task's photos (chosen by the same --tune run)


def fusion_weight(n: int, known: bool = True) -> float:
    """lam(n): the photo part's weight for a class with n photos, named by a known name or not
    (FUSION_WEIGHTS / FUSION_WEIGHTS_NEW, step-wise)."""
    table = FUSION_WEIGHTS if known else FUSION_WEIGHTS_NEW
    keys = sorted(table)
    w = table[keys[0]]
    for k in keys:
        if n >= k:
            w = table[k]
    return float(w)


class PhotoFeaturizer:
    """Photos -> the bundle trunk's features float32 [n, D], exactly as `predict` would see them."""

    def __init__(self, trunk: Any, preprocess: dict | None, *, threads: int | None = None, batch: int = BATCH):
        from .preprocess import PreprocessSpec
        from .sessions import make_session  # noqa: PLC0415 (first use only)

        self.spec = PreprocessSpec.from_dict(preprocess) if preprocess else PreprocessSpec()
        data = bytes(trunk) if isinstance(trunk, (bytes, bytearray)) else trunk.SerializeToString()
        del trunk
        # predict's trunk session settings (classifier.py: level ALL, no disabled optimizers): the same
        # numbers as predict, and ALL's NCHWc convolutions are several times faster than EXTENDED here
        self._session = make_session(data, threads, (), level="all", what="the bundle's trunk")
        self.batch = int(batch)
        self.photos_run = 0  # photos that went through the trunk (tests check: once per photo)

    def prepared(self, items: Any) -> list[np.ndarray]:
        """uint8 [S, S, 3] per photo: files through the runtime's one decoder, then `prepare`."""
        from pathlib import Path

        from .images import expand_items
        from .preprocess import _open, prepare

        out: list[np.ndarray] = []
        for _, src in expand_items(items):
            if isinstance(src, Path):
                out.append(prepare(_open(src), self.spec))
            elif isinstance(src, np.ndarray) and src.ndim == 4:
                out.extend(prepare(x, self.spec) for x in src)
            else:
                out.append(prepare(src, self.spec))
        return out

    def run(self, pixels: Sequence[np.ndarray]) -> np.ndarray:
        """Prepared uint8 photos -> features [n, D], BATCH photos per trunk run."""
        feats = []
        for i in range(0, len(pixels), self.batch):
            x = np.stack(pixels[i:i + self.batch])
            feats.append(np.asarray(run_graph(self._session, [FEATURES], {IMAGE: x}, what="the bundle's trunk")[0],
                                    dtype=np.float32))
            self.photos_run += len(x)
        return np.concatenate(feats) if feats else np.zeros((0, 0), np.float32)

    def features(self, items: Any) -> np.ndarray:
        """Files, folders, PIL images or uint8 arrays -> features float32 [n, D]."""
        pix = self.prepared(items)
        if not pix:
            raise ImageError("no images were given")
        return self.run(pix)


def prototype_rows(feats: Sequence[np.ndarray], centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cosine-prototype head (W [k, D], b [k]) for per-class features: rows = L2-normalised centred
    class means, logits (x - centre) . row, divided by the typical centred photo norm (so one row
    gives a cosine-like logit for any photo without normalising the photo inside the head)."""
    mu = np.stack([np.asarray(f, np.float64).mean(0) for f in feats]) - centre
    mu /= np.linalg.norm(mu, axis=1, keepdims=True) + 1e-12
    allf = np.concatenate([np.asarray(f, np.float64) for f in feats])
    r = float(np.linalg.norm(allf - centre, axis=1).mean()) or 1.0
    W = mu / r
    return W, -(W @ centre)


def loo_weight(Wn: np.ndarray, bn: np.ndarray, feats: dict[int, np.ndarray], centre: np.ndarray, sp: float) -> float:
    """The task's photo weight, chosen on its own photos: each photo is scored by the name rows (already
    divided by their spread) plus lam x the prototype rows made WITHOUT it (leave one out; every class
    with photos has >= 2); the lam of LOO_GRID with the most photos right wins (ties: the smallest)."""
    idx = sorted(feats)
    X = np.concatenate([np.asarray(feats[i], np.float64) for i in idx]) - centre
    y = np.concatenate([[j] * len(feats[i]) for j, i in enumerate(idx)])
    sums = np.stack([X[y == j].sum(0) for j in range(len(idx))])
    counts = np.bincount(y, minlength=len(idx)).astype(np.float64)
    r = float(np.linalg.norm(X, axis=1).mean()) or 1.0
    mu = sums / counts[:, None]
    P = (X @ (mu / (np.linalg.norm(mu, axis=1, keepdims=True) + 1e-12)).T) / r
    loo = (sums[y] - X) / (counts[y] - 1)[:, None]  # each photo's own class mean without it
    P[np.arange(len(X)), y] = np.einsum("nd,nd->n", X, loo / (np.linalg.norm(loo, axis=1, keepdims=True) + 1e-12)) / r
    Zn = (X + centre) @ Wn[idx].T + bn[idx]  # name logits among the classes that have photos
    best, best_right = LOO_GRID[0], -1
    for lam in LOO_GRID:
        right = int(((Zn + lam * P / sp).argmax(1) == y).sum())
        if right > best_right:
            best, best_right = lam, right
    return float(best)


def _spread(W: np.ndarray, b: np.ndarray, X: np.ndarray) -> float:
    """Mean over photos of the std over classes of the logits: the scale a z-score divides by."""
    z = X @ W.T + b
    return float(z.std(axis=1).mean()) or 1.0


def photo_head_rows(W_name: np.ndarray | None, b_name: np.ndarray | None, feats: dict[int, np.ndarray],
                    named: Sequence[bool], k: int, *, known: Sequence[bool] | None = None,
                    weight: float | None = None, centred: bool | None = None,
                    loo: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Head rows (W [k, D], b [k]) from the name rows (None: no class is named) and the photo
    features of the classes that have photos ({class index: [n_i, D]}); `named[i]`: class i has a
    name or description the rows should use; `known[i]`: that text is a name the bundle knows (None:
    none is); `weight`, `centred` and `loo` override lam(n), CENTRE and LOO (the benchmark's grid).
    Deterministic, float64 inside, float32 out."""
    if not feats:
        raise PromptError("photo_head_rows needs photos of at least one class")
    idx = sorted(feats)
    X = np.concatenate([np.asarray(feats[i], np.float64) for i in idx])
    centre = X.mean(0) if (CENTRE if centred is None else centred) else np.zeros(X.shape[1])
    Wp_some, bp_some = prototype_rows([feats[i] for i in idx], centre)
    D = X.shape[1]
    Wp, bp = np.zeros((k, D)), np.zeros(k)
    Wp[idx], bp[idx] = Wp_some, bp_some
    others = [i for i in range(k) if i not in feats]
    Wp[others], bp[others] = Wp_some.mean(0), bp_some.mean()  # no photos: a neutral photo part
    has_name = [i for i in range(k) if named[i]]
    if W_name is None or not has_name:
        if others:
            raise PromptError("a class without a name needs photos")
        return Wp.astype(np.float32), bp.astype(np.float32)
    Wn, bn = np.asarray(W_name, np.float64).copy(), np.asarray(b_name, np.float64).copy()
    unnamed = [i for i in range(k) if not named[i]]
    Wn[unnamed], bn[unnamed] = Wn[has_name].mean(0), bn[has_name].mean()  # only its photos speak
    sn, sp = _spread(Wn, bn, X), _spread(Wp, bp, X)
    known = [False] * k if known is None else list(known)
    lam = np.array([(weight if weight is not None else fusion_weight(len(feats[i]), known[i])) if i in feats else 1.0
                    for i in range(k)])
    loo = LOO if loo is None else loo
    if loo and weight is None and all(len(feats[i]) >= 2 for i in feats):
        lam[:] = loo_weight(Wn / sn, bn / sn, feats, centre, sp)
    W = Wn / sn + (lam[:, None] * Wp) / sp
    b = bn / sn + lam * bp / sp
    return W.astype(np.float32), b.astype(np.float32)


# ----------------------------------------------------------------- Personalizer.personalize(images=...)


def supports_photo_prompts(p: Any) -> bool:
    """Whether `p` (a Personalizer) prompts with photos through its trunk: no image tower, and a
    template whose generated head (fc.weight) reads trunk features."""
    if p.has_image_tower:
        return False
    from .errors import ModelFileError
    from .head import head_input_name

    try:
        head_input_name(p._template)
    except ModelFileError:
        return False
    return True


def photos_only_indices(names: list[str], photos_only: Any, photo_idx: set[int]) -> set[int]:
    """The classes whose label is only a label: `photos_only` True (every class given photos), False,
    or class names (matched like the prompt); each must have photos."""
    from .class_prompts import class_index
    from .prompt import class_key

    if photos_only is None or photos_only is False:
        return set()
    if photos_only is True:
        return set(photo_idx)
    if isinstance(photos_only, str) or not hasattr(photos_only, "__iter__"):
        raise PromptError("photos_only must be True, False or a collection of class names, e.g. photos_only={'Rex'}")
    keys = {class_key(n): i for i, n in enumerate(names)}
    out = set()
    for key in photos_only:
        i = class_index(keys, key, names, "images")
        if i not in photo_idx:
            raise PromptError(f"the class {names[i]!r} is asked to be photos-only but no photos are given for it")
        out.add(i)
    return out


def match_photos(names: list[str], images: Any, descriptions: Any) -> dict[int, Any]:
    """{class index: its photos} (class_prompts.match_images' rules); unlike CLIP image prompts, a name
    or description may join them, so descriptions are not checked against photos here."""
    from .class_prompts import match_images

    return match_images(names, images, None)


class PhotoPrompts:
    """One personalize call's photos: features read once, before sampling; rows fused after it."""

    def __init__(self, names: list[str], feats: dict[int, np.ndarray], photos_only: set[int]):
        self.names, self.feats, self.photos_only = names, feats, photos_only

    @classmethod
    def read(cls, p: Any, names: list[str], images: Any, descriptions: Any, photos_only: Any) -> "PhotoPrompts":
        """Match, check and featurize the photos (the Personalizer keeps one trunk session)."""
        by_class = match_photos(names, images, descriptions)
        only = photos_only_indices(names, photos_only, set(by_class))
        if only and descriptions is not None:
            from .class_prompts import aligned_descriptions

            descs = aligned_descriptions(names, descriptions)
            for i in sorted(only):
                if descs[i] is not None:
                    raise PromptError(f"the class {names[i]!r} is photos-only and has a description; give one of the two")
        fz = featurizer(p)
        feats: dict[int, np.ndarray] = {}
        for i in sorted(by_class):
            try:
                pix = fz.prepared(by_class[i])
            except ImageError as err:
                raise ImageError(f"class {names[i]!r}: {err}") from None
            if len(pix) > MAX_PHOTOS_PER_CLASS:
                raise PromptError(f"the class {names[i]!r} has {len(pix)} photos; give at most {MAX_PHOTOS_PER_CLASS}")
            feats[i] = fz.run(pix)
        return cls(names, feats, only)

    def params(self, p: Any, smp: Any, emb: np.ndarray, seed: int, C: int) -> dict[str, np.ndarray]:
        """The sampler's tensors for the conditioning rows; skipped (zeros) when every class is photos-only
        and the head is all the template generates: its rows would all be replaced by prototype rows."""
        from .head import HEAD_BIAS, HEAD_WEIGHT

        layout, k = p.manifest.template.layout, len(self.names)
        if len(self.photos_only) == k and {t.name for t in layout} <= {HEAD_WEIGHT, HEAD_BIAS}:
            return {t.name: np.zeros([k if i == t.class_axis else d for i, d in enumerate(t.shape)], np.float32)
                    for t in layout}
        return p._params(smp, emb, seed, C)

    def apply(self, params: dict[str, np.ndarray], texts: list,
              known: Sequence[bool] | None = None) -> tuple[dict[str, np.ndarray], list, dict[str, int]]:
        """(params with the fused head rows, texts with None for photos-only classes, {class: photo count});
        known[i]: class i's text is a name the bundle knows (its fusion weight, FUSION_WEIGHTS)."""
        from .head import HEAD_BIAS, HEAD_WEIGHT

        k = len(self.names)
        named = [i not in self.photos_only for i in range(k)]
        W, b = photo_head_rows(params[HEAD_WEIGHT], params[HEAD_BIAS], self.feats, named, k, known=known)
        out = dict(params)
        out[HEAD_WEIGHT], out[HEAD_BIAS] = W.astype(params[HEAD_WEIGHT].dtype), b.astype(params[HEAD_BIAS].dtype)
        texts = [None if i in self.photos_only else t for i, t in enumerate(texts)]
        return out, texts, {self.names[i]: int(len(f)) for i, f in sorted(self.feats.items())}


def read_photos(p: Any, names: list[str], images: Any, descriptions: Any, photos_only: Any) -> PhotoPrompts | None:
    """The call's PhotoPrompts when it gives photos to a trunk bundle; None when the bundle's CLIP
    image tower (or nothing) handles `images`. photos_only without trunk photo prompts: PromptError."""
    from .class_prompts import wants_images

    if not wants_images(images) and not photos_only:
        return None
    if not supports_photo_prompts(p):
        if photos_only:
            raise PromptError("photos_only needs a trunk bundle without an image tower (such as the default one); "
                              "with this bundle, images already replace the class name")
        return None
    if not wants_images(images):
        raise PromptError("photos_only needs photos: give images={class: [photos]} for those classes")
    return PhotoPrompts.read(p, names, images, descriptions, photos_only)


def featurizer(p: Any) -> PhotoFeaturizer:
    """The Personalizer's one PhotoFeaturizer (its trunk session made on first use)."""
    def build() -> PhotoFeaturizer:
        trunk = p._trunk  # never cached here: 13.5 MB of ModelProto less at the peak
        if trunk is None:
            from .head import extract_trunk

            trunk = extract_trunk(p._template)
        data = trunk.SerializeToString()
        del trunk
        return PhotoFeaturizer(data, p.manifest.template.input.preprocess, threads=p.threads)

    return p._lazy("_photo_featurizer", build)


def built_from(labels: Sequence[str], texts: Sequence[str | None] | None, photos: dict[str, int] | None) -> dict[str, str]:
    """Per class, what its rows were built from: 'name', 'description "..."', 'N photos', or a mix."""
    photos = photos or {}
    out = {}
    for i, n in enumerate(labels):
        t = texts[i] if texts is not None and i < len(texts) else n
        parts = [] if t is None else ["name" if t == n else f"description {t!r}"]
        if n in photos:
            parts.append(f"{photos[n]} photo{'s' if photos[n] != 1 else ''}")
        out[n] = " + ".join(parts) or "name"
    return out


def class_folders(root: Any) -> dict[str, Any]:
    """{label: its folder} for DIR's sub-folders, sorted by name (the layout `evaluate` reads, labels
    are the folder names); each folder's photos are the image files directly inside it."""
    from pathlib import Path

    from .evaluation import _top_level

    root = Path(root)
    if not root.is_dir():
        raise ImageError(f"{root} is not a directory; pass a folder that holds one folder of photos per class")
    folders = _top_level(root)[0]
    if not folders:
        raise ImageError(f"{root} holds no class folders; make one sub-folder of photos per class")
    return {f.name: f for f in folders}


def model_novelty(p: Any, clf: Any, descriptions: Any) -> dict:
    """Novelty of the classes of `clf` that have a name or description (a photos-only label is only a
    label), plus `built_from`: {label: 'name' | "description '...'" | 'N photos' | a mix}."""
    texts = clf.meta.texts or list(clf.labels)
    names = [n for n, t in zip(clf.labels, texts) if t is not None]
    report = {"seen": [], "new": [], "nearest": {}, "confusable": []}
    if names:
        if descriptions is not None:
            from .class_prompts import aligned_descriptions

            keep = set(names)
            descriptions = [d for n, d in zip(clf.labels, aligned_descriptions(list(clf.labels), descriptions))
                            if n in keep]
        report = p.novelty(names, descriptions=descriptions)
    return {**report, "built_from": built_from(clf.labels, clf.meta.texts, clf.meta.image_prompts)}
