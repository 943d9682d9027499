"""Run the Tina-vs-baselines comparison on a work directory (features, classes, zoo, generic, checkpoint).

Reads the photo universe's work dir layout (README.txt there): classes.json (names, WordNet ids,
holdout), features/{train,test}_<res>.f16.npy + .labels.npy, zoo/ (p-model heads), generic.safetensors
(its linear head = "selection"), and optionally a Tina checkpoint. Everything but the checkpoint
is needed by the baselines alone, so they can be measured before Tina is trained.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from tina_edge.train.workdir import WorkDir
from tina_edge.runtime.atomic import atomic_write_json
from tina_edge.runtime.errors import CheckpointError, TinaEdgeError, TrainingError, WorkDirError
from tina_edge.train.evaluation.baselines import DirectConfig
from tina_edge.train.evaluation.compare import compare, fit_baselines, make_eval_tasks
from tina_edge.train.text.phrasings import ClassPhrasings, PhrasingBank, WordNet, build_phrasings, phrasings_from_json
from tina_edge.train.zoo.templates import ParamLayout, TemplateConfig
from tina_edge.train.zoo.pmodels import TaskData


def load_classes(workdir: Path) -> tuple[list[str], list[str], dict[str, str], dict[str, list[str]]]:
    """Names (label order), holdout, WordNet ids of Tiny-ImageNet classes, dataset synonyms."""
    wd = WorkDir(workdir)
    cl = wd.classes()
    if cl is not None:
        names = [c["name"] for c in cl]
        wnids = {c["name"]: c["id"] for c in cl if str(c.get("id", "")).startswith("n")}
        return names, [c["name"] for c in cl if c.get("holdout")], wnids, {c["name"]: c.get("synonyms", []) for c in cl}
    split = wd.read_json(wd.tasks)
    return split["classes"], split["holdout"], {}, {}


def load_features(workdir: Path, split: str, names: list[str]) -> TaskData:
    feats = sorted(WorkDir(workdir).features_dir.glob(f"{split}_*.f16.npy"))
    if not feats:
        raise WorkDirError(f"{workdir}/features has no {split}_*.f16.npy; run the features stage first")
    x = np.load(feats[0], mmap_mode="r")
    y = np.load(str(feats[0]).replace(".f16.npy", ".labels.npy"))
    return TaskData(torch.from_numpy(np.asarray(x, dtype=np.float32)), y, names)


def zoo_rows_from_dir(zoo_dir: Path, names: list[str]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Mean head row per class over every p-model file (NaN where absent), counts, and k_max seen."""
    c2i = {c: i for i, c in enumerate(names)}
    acc, cnt, kmax = None, torch.zeros(len(names)), 0
    for p in sorted((zoo_dir / "pmodels").glob("*.safetensors")):
        with safe_open(str(p), "pt") as f:
            meta = json.loads(f.metadata()["tina_edge"])
        t = load_file(str(p))
        w = next(v for k, v in t.items() if k.endswith("weight"))
        b = next(v for k, v in t.items() if k.endswith("bias"))
        rows = torch.cat([w.float(), b.float()[:, None]], 1).double()
        if acc is None:
            acc = torch.zeros(len(names), rows.shape[1], dtype=torch.float64)
        idx = torch.tensor([c2i[c] for c in meta["classes"]])
        acc.index_add_(0, idx, rows)
        cnt.index_add_(0, idx, torch.ones(len(idx)))
        kmax = max(kmax, len(idx))
    if acc is None:
        raise WorkDirError(f"{zoo_dir} holds no p-models; run `tina-edge train zoo` first")
    out = (acc / cnt.clamp_min(1)[:, None]).float()
    out[cnt == 0] = float("nan")
    return out, cnt, kmax


def generic_rows(workdir: Path) -> tuple[torch.Tensor | None, dict | None]:
    """The generic head as rows [C, F+1] and its state dict (fine-tuning starts from it)."""
    path = WorkDir(workdir).generic
    if not path.is_file():
        return None, None
    t = load_file(str(path))
    w = t.get("fc.weight", t.get("head.weight"))
    b = t.get("fc.bias", t.get("head.bias"))
    if w is None or b is None:
        return None, None
    return torch.cat([w.float(), b.float()[:, None]], 1), {"fc.weight": w.float(), "fc.bias": b.float()}


def bank_phrasings(path: str | Path) -> dict[str, ClassPhrasings] | None:
    """The phrasings a checkpoint was trained on (stored in its phrasing bank .npz), if recorded."""
    if not Path(path).is_file():
        raise TrainingError(f"the checkpoint's phrasing bank {path} is missing; pass --phrasings FILE.npz")
    return PhrasingBank.load(path).phrasings


def head_layout(feature_dim: int, k_max: int) -> ParamLayout:
    """A linear head layout (fc.weight [K, F], fc.bias [K]) for fine-tuning and row packing."""
    lay = ParamLayout(TemplateConfig("resnet_head", k_max=k_max, widths=[4, 4, feature_dim], stem_stride=2))
    return lay


def checkpoint_prior(ck, workdir: Path, zoo_rows: torch.Tensor, encode):
    """For a checkpoint with a text prior: its ImageNet vocabulary and rows (rebuilt exactly as in
    training, for the nearest-vocabulary lookups) and its prior alone as a row function."""
    from tina_edge.train.prior.fit import imagenet_prior_data

    extra = None
    if (ck.info.text_prior or {}).get("kind") == "imagenet":
        seen_rows = zoo_rows[torch.isfinite(zoo_rows).all(1)].numpy().astype(np.float64)
        extra = imagenet_prior_data(seen_rows, WorkDir(workdir).classes(), encode)
    prior = ck.denoiser().prior

    def rows(emb: np.ndarray) -> torch.Tensor:
        e = torch.from_numpy(np.asarray(emb, np.float32))
        with torch.no_grad():
            return prior.raw_rows(e / e.norm(dim=-1, keepdim=True))

    return extra, rows


def _comparison_phrasings(names: list[str], holdout: list[str], wnids, syn, phrasings: str, ck, seed: int):
    """(evaluation phrasings from WordNet or None, the lookup vocabulary's training phrasings or None).

    Unseen-synonym tasks test only synonyms that training never saw."""
    eval_ph: dict[str, ClassPhrasings] | None = None
    try:
        eval_ph = build_phrasings(names, holdout, wnids=wnids, extra_synonyms=syn, wordnet=WordNet(), seed=seed)
    except TinaEdgeError as e:
        print(f"no gloss/phrasing tasks: {e}")
    train_ph = None
    if phrasings not in ("auto", "names"):
        train_ph = (bank_phrasings(phrasings) if str(phrasings).endswith(".npz")
                    else phrasings_from_json(json.loads(Path(phrasings).read_text())))
    elif phrasings == "auto" and ck is not None and ck.info.encoder.bank:
        train_ph = bank_phrasings(ck.info.encoder.bank)
    if train_ph is not None and eval_ph is not None:
        for c, p in eval_ph.items():
            p.heldout_synonyms = list(train_ph[c].heldout_synonyms) if c in train_ph else p.heldout_synonyms
    return eval_ph, train_ph


def _generators(ck, extra_ckpts: dict[str, str | Path] | None, encoder_name: str, *, sampler: str, steps: int,
                seed: int):
    """Tina's generator (None without a checkpoint) and those of the ablation checkpoints, which
    must share the encoder: each maps (emb [B, K, D], mask [B, K]) to denormalised flat parameters."""
    from tina_edge.train.evaluation.evaluate import generate
    from tina_edge.train.diffusion.checkpoint import read_checkpoint

    def of(c):
        return lambda e, m: generate(c, e, m, sampler=sampler, steps=steps, seed=seed)

    extra = {}
    for name, path in (extra_ckpts or {}).items():  # ablations: other checkpoints, same encoder and tasks
        eck = read_checkpoint(path)
        if eck.info.encoder.name not in (None, encoder_name):
            raise CheckpointError(f"{path} was trained on {eck.info.encoder.name} embeddings, not {encoder_name}")
        extra[name] = of(eck)
    return (of(ck) if ck is not None else None), extra


def run_comparison(workdir: str | Path, out_dir: str | Path, *, ckpt: str | Path | None = None,
                   text_encoder: str | None = None, n_id: int = 200, n_ood: int = 600, n_phrasing: int = 300,
                   k_max: int | None = None, sampler: str = "ddim", steps: int = 5, seed: int = 0,
                   finetune: bool = True, direct_cfg: DirectConfig | None = None, phrasings: str = "auto",
                   emb_cache: str | Path | None = None, progress: bool = True,
                   extra_ckpts: dict[str, str | Path] | None = None) -> dict:
    """Fit the baselines on seen classes, score all methods on shared tasks, write report + JSON.

    `phrasings`: "auto" (the checkpoint's training phrasings if it has them, else names only for the
    lookup vocabulary), "names", or a phrasings.json path. Gloss and unseen-synonym tasks are built
    from WordNet whenever it is installed.
    """
    from tina_edge.train.evaluation.evaluate import write_compare_report
    from tina_edge.train.text.encoders import build_text_encoder, cached_encode
    from tina_edge.train.diffusion.checkpoint import read_checkpoint

    workdir, out_dir = Path(workdir), Path(out_dir)
    t0 = time.time()
    names, holdout, wnids, syn = load_classes(workdir)
    seen = [c for c in names if c not in holdout]
    ck = read_checkpoint(ckpt) if ckpt else None
    spec = text_encoder or (ck.info.encoder.spec if ck else None) or "minilm"
    enc = build_text_encoder(spec)
    cache = emb_cache or WorkDir(workdir).emb_cache
    encode = lambda texts: cached_encode(enc, list(texts), cache)  # noqa: E731
    train, test = load_features(workdir, "train", names), load_features(workdir, "test", names)
    zoo_rows, counts, zoo_k = zoo_rows_from_dir(WorkDir(workdir).zoo, names)
    layout = ck.layout() if ck else head_layout(train.inputs.shape[1], k_max or zoo_k)
    K = min(k_max or layout.k_max, layout.k_max)
    grows, gsd = generic_rows(workdir)
    eval_ph, train_ph = _comparison_phrasings(names, holdout, wnids, syn, phrasings, ck, seed)
    tasks = make_eval_tasks(seen, holdout, n_id=n_id, n_ood=n_ood, k_max=K, phrasings=eval_ph,
                            n_phrasing=n_phrasing, seed=seed + 1)
    direct_cfg = direct_cfg or DirectConfig(seed=seed)
    direct_cfg.k_max = K
    b = fit_baselines(layout=layout, classes=names, seen=seen, zoo_rows=zoo_rows, encode=encode, phrasings=train_ph,
                      train=train, generic_rows=grows, direct_cfg=direct_cfg,
                      progress=progress)
    if ck is not None and ck.info.text_prior:
        b.extra, b.prior = checkpoint_prior(ck, workdir, zoo_rows, encode)
    gen, extra = _generators(ck, extra_ckpts, enc.name, sampler=sampler, steps=steps, seed=seed)
    recipe_path = WorkDir(workdir).recipe  # the fine-tuned reference uses the zoo's own recipe
    recipe = json.loads(recipe_path.read_text()) if recipe_path.is_file() else None
    res = compare(tasks, layout=layout, classes=names, test=test, encode=encode, baselines=b, generator=gen,
                  train=train if finetune else None, generic_sd=gsd, finetune=recipe, seed=seed, progress=progress,
                  extra_generators=extra)
    res["setup"] = {"workdir": str(workdir), "checkpoint": str(ckpt) if ckpt else None, "text_encoder": enc.name,
                    "classes": len(names), "seen": len(seen), "holdout": len(holdout), "k_max": K,
                    "extra_checkpoints": {k: str(v) for k, v in (extra_ckpts or {}).items()}, "sampler": sampler, "steps": steps, "seed": seed, "zoo_pmodels_per_seen_class": float(counts[counts > 0].mean()),
                    "lookup_vocabulary": len(b.vocab_texts), "ridge_lambda": b.ridge.lam, "ridge_l2_lambda": b.ridge_l2.lam,
                    "train_phrasings": train_ph is not None, "finetune_recipe": recipe, "seconds": time.time() - t0}
    res["notes"] = ["", f"Setup: {json.dumps(res['setup'])}"]
    write_compare_report(res, out_dir, title="Tina vs baselines on shared tasks")
    if eval_ph is not None:
        atomic_write_json(Path(out_dir) / "eval_phrasings.json", {c: p.__dict__ for c, p in eval_ph.items()}, indent=0)
    return res
