"""Tina against every baseline on the same tasks and the same test images, with paired statistics.

Task kinds (each a list of class texts in prompt order, scored on the true classes' test images):
  id        -- seen classes under their names
  ood       -- 1-2 held-out classes (never in training, names included) among seen ones
  gloss     -- an ood task with each held-out class described by its WordNet definition
  phrasing  -- an id task with one seen class named by a synonym kept out of training
Every gloss/phrasing task has a twin (the same classes under their names) so the ratio
"described / named" is measured on identical images. Probe slots (held-out or rephrased classes)
get their own recall: task accuracy hides a held-out class that collapses onto its neighbour.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from tina_edge.runtime.conditioning import pad_to_slots
from tina_edge.train.evaluation.baselines import TextToHead, direct_rows, head_logits, nearest_known, pack_rows

from tina_edge.train.prior.ridge import RidgeMap
from tina_edge.train.text.phrasings import ClassPhrasings, key, phrasing_bank
from tina_edge.train.evaluation.stats import mean_se, paired_difference
from tina_edge.train.zoo.templates import ParamLayout
from tina_edge.train.zoo.pmodels import TaskData, finetune_batch

if TYPE_CHECKING:
    from tina_edge.train.prior.fit import PriorData

METHODS = ("generated", "generated-lookup", "fine-tuned", "selection", "zoo-average", "ridge", "ridge-l2", "nearest-seen", "direct",
           "prior", "nearest-vocab", "chance")


@dataclass
class EvalTask:
    kind: str
    classes: list[str]
    texts: list[str]
    probes: list[int] = field(default_factory=list)
    twin: int | None = None  # index of the same task under class names


def make_eval_tasks(seen: list[str], holdout: list[str], *, n_id: int = 200, n_ood: int = 600, k_min: int = 2,
                    k_max: int = 10, max_holdout: int = 2, phrasings: dict[str, ClassPhrasings] | None = None,
                    n_phrasing: int = 300, seed: int = 0, exclude_sets: set[frozenset] = frozenset()) -> list[EvalTask]:
    """ID, OOD (held-out classes cycled evenly), gloss twins of OOD tasks, phrasing tasks + twins."""
    rng = random.Random(seed)
    ks = list(range(k_min, min(k_max, len(seen) + 1) + 1))
    tasks: list[EvalTask] = []
    while sum(t.kind == "id" for t in tasks) < n_id:
        t = rng.sample(seen, rng.choice(ks))
        if frozenset(t) not in exclude_sets:
            tasks.append(EvalTask("id", t, list(t)))
    order = []
    for i in range(n_ood):
        if not order:
            order = rng.sample(holdout, len(holdout))
        k = rng.choice(ks)
        h = [order.pop()]
        if max_holdout > 1 and k >= 3 and rng.random() < 0.5 and len(holdout) > 1:
            h.append(rng.choice([x for x in holdout if x != h[0]]))
        t = rng.sample(seen, k - len(h))
        for c in h:
            t.insert(rng.randrange(len(t) + 1), c)
        tasks.append(EvalTask("ood", t, list(t), [t.index(c) for c in h]))
    if phrasings:
        for i in [j for j, t in enumerate(tasks) if t.kind == "ood"]:
            t = tasks[i]
            if all(phrasings[t.classes[p]].gloss for p in t.probes):
                texts = [phrasings[c].gloss if j in t.probes else c for j, c in enumerate(t.classes)]
                tasks.append(EvalTask("gloss", t.classes, texts, t.probes, twin=i))
        rephrase = [c for c in seen if phrasings[c].heldout_synonyms]
        for i in range(n_phrasing if rephrase else 0):
            c = rephrase[i % len(rephrase)]
            t = rng.sample([s for s in seen if s != c], rng.choice(ks) - 1)
            t.insert(rng.randrange(len(t) + 1), c)
            p = t.index(c)
            tasks.append(EvalTask("phrasing-names", t, list(t), [p]))
            syn = rng.choice(phrasings[c].heldout_synonyms)
            tasks.append(EvalTask("phrasing", t, [syn if j == p else x for j, x in enumerate(t)], [p],
                                  twin=len(tasks) - 1))
    return tasks


@dataclass
class Baselines:
    """Everything the lookup/regression baselines need, fit on seen classes only."""

    classes: list[str]
    zoo_rows: torch.Tensor  # [C, R], NaN for classes absent from the zoo
    vocab_texts: list[str]  # training vocabulary: names (+ training synonyms) of seen classes
    vocab_class: np.ndarray  # class index of each vocabulary text
    vocab_emb: np.ndarray  # [V, D]
    ridge: RidgeMap | None = None
    ridge_l2: RidgeMap | None = None
    direct: TextToHead | None = None
    generic_rows: torch.Tensor | None = None  # [C, R] the generic head ("selection")
    # A checkpoint trained with the ImageNet text prior has a wider training vocabulary: its ImageNet
    # names and rows (text_prior.PriorData) join the lookups, and "prior" = its text prior alone.
    extra: "PriorData | None" = None
    prior: Callable[[np.ndarray], torch.Tensor] | None = None

    def __post_init__(self):
        self._lookup = {key(t): int(c) for t, c in zip(self.vocab_texts, self.vocab_class)}

    def _vocab(self) -> tuple[np.ndarray, np.ndarray]:
        """Every training-vocabulary name's embedding and owner (class index >= 0, ImageNet row -1-j)."""
        if self.extra is None:
            return self.vocab_emb, self.vocab_class
        names = np.flatnonzero(self.extra.is_name)
        return (np.concatenate([self.vocab_emb, self.extra.emb[names]]),
                np.concatenate([self.vocab_class, -1 - self.extra.owner[names]]))

    def lookup_embs(self, emb: np.ndarray) -> np.ndarray:
        """Each embedding replaced by its nearest vocabulary text's (itself when it is in the vocabulary)."""
        vocab = self._vocab()[0]
        v = vocab / np.maximum(np.linalg.norm(vocab, axis=1, keepdims=True), 1e-12)
        q = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        return vocab[np.argmax(q @ v.T, axis=1)].astype(np.float32)

    def known(self, text: str) -> int | None:
        return self._lookup.get(key(text))

    def rows(self, method: str, task: EvalTask, emb: np.ndarray) -> torch.Tensor | None:
        """[k, R] rows of one lookup/regression method for the task's texts (emb: their embeddings)."""
        c2i = {c: i for i, c in enumerate(self.classes)}
        if method == "selection":
            return None if self.generic_rows is None else self.generic_rows[[c2i[c] for c in task.classes]]
        if method == "direct":
            return None if self.direct is None else direct_rows(self.direct, emb)
        known = [self.known(t) for t in task.texts]
        if method == "zoo-average":
            return None if any(k is None for k in known) else self.zoo_rows[known]
        out, used = [], {k for k in known if k is not None}
        for j, k in enumerate(known):
            if k is not None:
                out.append(self.zoo_rows[k])
            elif method in ("ridge", "ridge-l2"):
                m = self.ridge if method == "ridge" else self.ridge_l2
                if m is None:
                    return None
                out.append(torch.from_numpy(m.predict(emb[j : j + 1])[0]))
            elif method == "nearest-seen":
                c, _ = nearest_known(emb[j], self.vocab_emb, self.vocab_class, used)
                used.add(c)
                out.append(self.zoo_rows[c])
            elif method == "nearest-vocab":
                if self.extra is None:
                    return None
                c, _ = nearest_known(emb[j], *self._vocab(), used)
                used.add(c)
                out.append(self.zoo_rows[c] if c >= 0 else torch.from_numpy(self.extra.rows[-1 - c]))
            elif method == "prior":
                if self.prior is None:
                    return None
                out.append(self.prior(emb[j : j + 1])[0])
            else:
                raise ValueError(method)
        return torch.stack(out)


@torch.no_grad()
def score_rows(rows: torch.Tensor, test: TaskData, class_idx: list[int]) -> tuple[float, list[float]]:
    """Task accuracy (%) and per-slot recall (%) of a linear head on the classes' test features."""
    idx, y = test.eval_set(class_idx)
    pred = head_logits(rows.float(), test.inputs[idx].float()).argmax(-1)
    acc = 100.0 * float((pred == y).float().mean())
    rec = [100.0 * float((pred[y == j] == j).float().mean()) if bool((y == j).any()) else float("nan")
           for j in range(len(class_idx))]
    return acc, rec


BASELINE_METHODS = ("selection", "zoo-average", "ridge", "ridge-l2", "nearest-seen", "direct", "prior", "nearest-vocab")


class _Scores:
    """Every task's result row, and `put`: score one method's rows on one task's test images."""

    def __init__(self, tasks: list[EvalTask], test: TaskData, classes: list[str], layout: ParamLayout):
        self.tasks, self.test, self.layout = tasks, test, layout
        self.c2i = {c: i for i, c in enumerate(classes)}
        self.results = [{"kind": t.kind, "classes": t.classes, "texts": t.texts, "probes": t.probes, "twin": t.twin,
                         "k": len(t.classes), "acc": {}, "recall": {}} for t in tasks]

    def put(self, i: int, method: str, rows) -> None:
        if rows is None:
            return
        task, res = self.tasks[i], self.results[i]
        acc, rec = score_rows(rows, self.test, [self.c2i[c] for c in task.classes])
        res["acc"][method] = acc
        res["slot_recall_" + method] = rec
        if task.probes:
            res["recall"][method] = float(np.mean([rec[p] for p in task.probes]))

    def put_flat(self, part: list[int], method: str, flat) -> list:
        """Score generated flat parameters [B, P] (one row per task of `part`); returns the packed rows."""
        out = []
        for b, i in enumerate(part):
            rows = pack_rows(self.layout, self.layout.unflatten(flat[b], len(self.tasks[i].classes)))
            self.put(i, method, rows)
            out.append(rows)
        return out


def _conditioning(part: list[int], embs: dict[int, np.ndarray], k_max: int, dim: int):
    """Class embeddings [B, K, D] and mask [B, K] of a batch of tasks, padded to K_max."""
    e, m = pad_to_slots([np.asarray(embs[i]).reshape(-1, dim) for i in part], k_max)
    return torch.from_numpy(e), torch.from_numpy(m)


def _score_generated(sc: _Scores, part: list[int], embs: dict, generator: Callable, baselines: Baselines,
                     dim: int) -> None:
    """Tina, and "generated-lookup": the same prompt with every unknown text replaced by its nearest
    training-vocabulary text (what a lookup table in front of Tina would do)."""
    K = sc.layout.k_max
    rows = sc.put_flat(part, "generated", generator(*_conditioning(part, embs, K, dim)))
    looked = {i: baselines.lookup_embs(embs[i]) for i in part}
    if all(np.array_equal(looked[i], embs[i]) for i in part):  # nothing to look up: the same models
        for b, i in enumerate(part):
            sc.put(i, "generated-lookup", rows[b])
        return
    sc.put_flat(part, "generated-lookup", generator(*_conditioning(part, looked, K, dim)))


def _score_finetuned(sc: _Scores, part: list[int], train: TaskData, generic_sd: dict, recipe: dict, seed: int) -> None:
    """The real fine-tuned p-model of each task (the upper reference)."""
    tidx = [[sc.c2i[c] for c in sc.tasks[i].classes] for i in part]
    ft = finetune_batch(generic_sd, sc.layout, train, tidx, seed=seed, **recipe)
    for b, i in enumerate(part):
        k = len(tidx[b])
        sc.put(i, "fine-tuned", torch.cat([ft[sp.name][b, :k].reshape(k, -1) for sp in sc.layout.specs], 1))


def _score_lookups(sc: _Scores, part: list[int], embs: dict, baselines: Baselines) -> None:
    """The lookup baselines and chance."""
    for i in part:
        for meth in BASELINE_METHODS:
            sc.put(i, meth, baselines.rows(meth, sc.tasks[i], embs[i]))
        k = len(sc.tasks[i].classes)
        sc.results[i]["acc"]["chance"] = 100.0 / k
        if sc.tasks[i].probes:
            sc.results[i]["recall"]["chance"] = 100.0 / k


def compare(tasks: list[EvalTask], *, layout: ParamLayout, classes: list[str], test: TaskData, encode: Callable,
            baselines: Baselines, generator: Callable | None = None, train: TaskData | None = None,
            generic_sd: dict | None = None, finetune_steps: int = 100, finetune: dict | None = None,
            batch: int = 128, seed: int = 0, progress: bool = True,
            extra_generators: dict[str, Callable] | None = None) -> dict:
    """Score every method on every task; returns {"tasks": [...], "summary": {...}}.

    `encode(texts) -> [n, D]` embeds prompt texts; `generator(emb [B, K, D], mask [B, K]) -> [B, P]`
    samples Tina's denormalised flat parameters; fine-tuning needs `train` and `generic_sd`, and
    `finetune` (the zoo's recipe: steps, batch, lr, fast_sampling) overrides `finetune_steps`.
    `extra_generators` {method name: generator} score other checkpoints on the same tasks (ablations).
    Per batch of tasks: Tina (+ lookup) -> other checkpoints -> fine-tuned -> lookup baselines, chance.
    """
    from tqdm.auto import tqdm

    texts = sorted({t for task in tasks for t in task.texts})
    table = dict(zip(texts, np.asarray(encode(texts), dtype=np.float32)))
    dim = next(iter(table.values())).shape[0] if table else 0
    sc = _Scores(tasks, test, classes, layout)
    bar = tqdm(total=len(tasks), desc="compare", disable=not progress)
    for s in range(0, len(tasks), batch):
        part = list(range(s, min(s + batch, len(tasks))))
        embs = {i: np.stack([table[t] for t in tasks[i].texts]) for i in part}
        if generator is not None:
            _score_generated(sc, part, embs, generator, baselines, dim)
        for meth, g in (extra_generators or {}).items():
            sc.put_flat(part, meth, g(*_conditioning(part, embs, layout.k_max, dim)))
        if train is not None and generic_sd is not None:
            _score_finetuned(sc, part, train, generic_sd, finetune or {"steps": finetune_steps}, seed + s)
        _score_lookups(sc, part, embs, baselines)
        bar.update(len(part))
    bar.close()
    return {"tasks": sc.results, "summary": summarize(sc.results, classes)}


def summarize(rows: list[dict], classes: list[str]) -> dict:
    """Per kind: means ± SE per method, paired Tina − method differences, per-probe-class recall,
    and for gloss/phrasing kinds the ratio to their twins under names."""
    out = {}
    for kind in dict.fromkeys(r["kind"] for r in rows):
        rs = [r for r in rows if r["kind"] == kind]
        extra = sorted({m for r in rs for m in r["acc"]} - set(METHODS))
        methods = [m for m in METHODS[:2] + tuple(extra) + METHODS[2:] if any(m in r["acc"] for r in rs)]
        probe_class = [r["classes"][r["probes"][0]] if r["probes"] else None for r in rs]
        s = {"n": len(rs), "methods": methods, "acc": {}, "recall": {}, "diff_acc": {}, "diff_recall": {}}
        for m in methods:
            s["acc"][m] = dict(zip(("mean", "se", "n"), mean_se([r["acc"].get(m, np.nan) for r in rs])))
            if any(r["probes"] for r in rs):
                s["recall"][m] = dict(zip(("mean", "se", "n"), mean_se([r["recall"].get(m, np.nan) for r in rs])))
            if m != "generated" and "generated" in methods:
                s["diff_acc"][m] = paired_difference([r["acc"].get("generated", np.nan) for r in rs],
                                                     [r["acc"].get(m, np.nan) for r in rs],
                                                     clusters=probe_class if any(probe_class) else None)
                if any(r["probes"] for r in rs):
                    s["diff_recall"][m] = paired_difference([r["recall"].get("generated", np.nan) for r in rs],
                                                            [r["recall"].get(m, np.nan) for r in rs], clusters=probe_class)
        if any(r["probes"] for r in rs):  # recall per probe class (every probe of every task counts)
            per: dict[str, dict[str, list[float]]] = {}
            for r in rs:
                for p in r["probes"]:
                    for m in methods:
                        rec = r.get("slot_recall_" + m)
                        if rec is not None:
                            per.setdefault(r["classes"][p], {}).setdefault(m, []).append(rec[p])
            s["recall_per_class"] = {c: {m: float(np.mean(v)) for m, v in d.items()} for c, d in sorted(per.items())}
        per_k = {}
        for k in sorted({r["k"] for r in rs}):
            per_k[str(k)] = {m: float(np.nanmean([r["acc"].get(m, np.nan) for r in rs if r["k"] == k])) for m in methods
                             if any(m in r["acc"] for r in rs if r["k"] == k)}
        s["per_k"] = per_k
        if any(r["probes"] for r in rs):  # probe recall by prompt size (bands of k): chance moves with k
            bands = [(2, 5), (6, 10), (11, 15), (16, 20), (21, 10**6)]
            s["recall_per_k"] = {f"{lo}-{hi}" if hi < 10**6 else f"{lo}+": {
                m: float(np.nanmean([r["recall"].get(m, np.nan) for r in rs if lo <= r["k"] <= hi])) for m in methods}
                | {"n": sum(lo <= r["k"] <= hi for r in rs)} for lo, hi in bands if any(lo <= r["k"] <= hi for r in rs)}
        twins = [(r, rows[r["twin"]]) for r in rs if r.get("twin") is not None]
        if twins:
            s["vs_names"] = {}
            for m in methods:
                a = [r["recall"].get(m, np.nan) for r, _ in twins]
                b = [t["recall"].get(m, np.nan) for _, t in twins]
                if np.isfinite(a).any() and np.isfinite(b).any():
                    s["vs_names"][m] = {"described": float(np.nanmean(a)), "named": float(np.nanmean(b)),
                                        "ratio": float(np.nanmean(a) / max(np.nanmean(b), 1e-9))}
        out[kind] = s
    return out


def task_list_to_json(tasks: list[EvalTask]) -> list[dict]:
    return [asdict(t) for t in tasks]


def fit_baselines(*, layout: ParamLayout, classes: list[str], seen: list[str], zoo_rows: torch.Tensor,
                  encode: Callable, phrasings: dict[str, ClassPhrasings] | None = None,
                  train: TaskData | None = None, generic_rows: torch.Tensor | None = None,
                  direct_cfg=None, progress: bool = True) -> Baselines:
    """Fit ridge (raw and unit-norm rows) and the direct text->head network on seen classes only.

    The lookup vocabulary is each seen class's name plus its training synonyms (what a table
    keyed by every training name would hold); glosses and templates train the direct network.
    """
    from tina_edge.train.evaluation.baselines import DirectConfig, train_direct
    from tina_edge.train.prior.ridge import fit_ridge

    c2i = {c: i for i, c in enumerate(classes)}
    vocab, vclass = [], []
    for c in seen:
        words = [c] + (phrasings[c].synonyms if phrasings else [])
        vocab += words
        vclass += [c2i[c]] * len(words)
    vemb = np.asarray(encode(vocab), dtype=np.float32)
    vclass = np.asarray(vclass)
    y = zoo_rows[vclass].numpy()
    ok = np.isfinite(y).all(1)
    b = Baselines(classes, zoo_rows, vocab, vclass, vemb, generic_rows=generic_rows)
    b.ridge = fit_ridge(vemb[ok], y[ok])
    b.ridge_l2 = fit_ridge(vemb[ok], y[ok], unit_rows=True)
    if train is not None:
        cfg = direct_cfg or DirectConfig(k_max=layout.k_max)
        texts = [phrasings[c].training_texts() if phrasings else [c] for c in seen]
        bank, counts = phrasing_bank(texts, encode)
        full = torch.zeros(len(classes), bank.shape[1], bank.shape[2])
        fc = torch.zeros(len(classes), dtype=torch.long)
        idx = torch.tensor([c2i[c] for c in seen])
        full[idx], fc[idx] = bank, counts
        b.direct, _ = train_direct(full, fc, train.inputs, train.by_class, idx.tolist(), cfg, progress=progress)
    return b
