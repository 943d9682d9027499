"""Stages of the photo universe (pretrained trunk, template ``lite0_head``):
features -> generic head -> zoo -> (stages/diffusion.py) -> eval.

File names: train/workdir.py (`WorkDir`); WORKDIR/README.txt describes the files for people.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from tina_edge.runtime.atomic import atomic_write_json, atomic_write_text
from tina_edge.runtime.preprocess import PreprocessSpec
from tina_edge.train.configs import EvalOptions
from tina_edge.train.workdir import WorkDir
from tina_edge.train.data.universe import UniverseSpec, build_universe, choose_holdout, class_table
from tina_edge.train.zoo.features import extract, load_features
from tina_edge.train.zoo.generic import load_generic, save_generic
from tina_edge.train.zoo.tasks import TaskSplit, make_task_split
from tina_edge.train.zoo.templates import ParamLayout, TemplateConfig, build_model
from tina_edge.train.zoo.pmodels import TaskData, build_zoo, write_index

README = """tina-edge work directory ({template}, {size}px, written by `tina-edge train features|generic|zoo|diffusion|eval`)

universe.json            UniverseSpec (data roots, photos per class, merges, seed) + preprocessing
classes.json             list, label order: {{"name", "synonyms" (WordNet), "id" (wnid or dataset:name), "holdout"}}
                         holdout = 20% of classes by seed; their names/synonyms are never in training
features/train_{size}.f16.npy   float16 [N_train, 1280] EfficientNet-Lite0 features (np.load(..., mmap_mode="r"))
features/train_{size}.labels.npy int64 [N_train], index into classes.json
features/test_{size}.*          same for the test split (Tiny-ImageNet val, CIFAR-10 test, Fashion-MNIST test)
features/*.json          count, preprocessing, images/s (present only when complete)
generic.safetensors      trunk + linear head fc.weight [C, 1280], fc.bias [C] on all C classes (safetensors; JSON metadata)
tasks.json               TaskSplit: classes, holdout, k_min, k_max, zoo (class-name lists), id_test, ood_test
zoo/pmodels/NNNNN.safetensors   one p-model: fc.weight [k, 1280], fc.bias [k]; row i = zoo task's i-th class
zoo/index.json           [{{"id", "classes", "k", "accuracy", "seed", "file"}}]
tina.safetensors         Tina checkpoint (denoiser, EMA, generic head, vocab embeddings, metadata)
eval/                    eval.json, report.md, accuracy_vs_k.png
"""


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def feature_prefix(workdir: Path, split: str, size: int) -> Path:
    return WorkDir(workdir).photo_features(split, size)


def stage_features(workdir: str | Path, spec: UniverseSpec, *, size: int = 128, holdout_fraction: float = 0.2,
                   holdout_seed: int = 0, batch: int = 64, weights: str | None = None, progress: bool = True) -> dict:
    """Write universe.json, classes.json (with the seeded holdout) and both feature caches."""
    from tina_edge.train.zoo.trunk import pretrained_trunk

    wd = WorkDir(workdir)
    rank, _ = _rank_world()
    pre = PreprocessSpec(size=size)
    train, test = build_universe(spec, "train"), build_universe(spec, "test")
    if train.classes != test.classes:
        raise ValueError("train and test splits have different classes; check the dataset folders")
    if rank == 0:
        wd.record_universe("photos")
        old = wd.classes()
        if old is not None:  # keep the recorded holdout: later stages depend on it
            holdout = [c["name"] for c in old if c["holdout"]]
        else:
            holdout = choose_holdout(train.classes, holdout_fraction, holdout_seed)
        atomic_write_json(wd.classes_json, class_table(train, holdout), indent=1)
        atomic_write_json(wd.universe_json, {"universe": spec.to_dict(), "preprocess": pre.to_dict(),
                                             "holdout_fraction": holdout_fraction, "holdout_seed": holdout_seed}, indent=1)
        atomic_write_text(wd.readme, README.format(template="lite0_head", size=size))
    trunk = pretrained_trunk(weights)
    out = {}
    for split, ps in (("train", train), ("test", test)):
        out[split] = extract(trunk, ps, wd.photo_features(split, size), pre, batch=batch, progress=progress)
    return out


def read_classes(workdir: str | Path) -> tuple[list[str], list[str], list[dict]]:
    table = WorkDir(workdir).read_json(WorkDir(workdir).classes_json)
    return [c["name"] for c in table], [c["name"] for c in table if c["holdout"]], table


def _size(workdir: Path) -> int:
    return int(WorkDir(workdir).universe_info()["preprocess"]["size"])


def cached_task_data(workdir: str | Path, split: str) -> TaskData:
    """TaskData over cached features (float32 in memory) for `split`."""
    workdir = Path(workdir)
    classes, _, _ = read_classes(workdir)
    feats, labels, _ = load_features(feature_prefix(workdir, split, _size(workdir)))
    return TaskData(torch.from_numpy(np.asarray(feats, dtype=np.float32)), labels, classes)


def train_linear_head(x: torch.Tensor, y: torch.Tensor, num_classes: int, *, epochs: int = 30, batch: int = 512,
                      lr: float = 2e-3, weight_decay: float = 1e-4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A linear probe on cached features (AdamW, cosine, label smoothing 0.1): (weight [C, D], bias [C])."""
    gen = torch.Generator().manual_seed(seed)
    fc = torch.nn.Linear(x.shape[1], num_classes)
    torch.nn.init.zeros_(fc.weight)
    torch.nn.init.zeros_(fc.bias)
    steps = epochs * max(1, len(x) // batch)
    opt = torch.optim.AdamW(fc.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x) - batch + 1, batch):
            idx = perm[i : i + batch]
            loss = F.cross_entropy(fc(x[idx]), y[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return fc.weight.detach().clone(), fc.bias.detach().clone()


def train_set_name(workdir: Path) -> str:
    """e.g. "tiny-imagenet+cifar10+fashion-mnist" (the sources, not their local paths)."""
    from tina_edge.train.data.universe import universe_label

    return universe_label(WorkDir(workdir).universe_info()["universe"])


def stage_generic_head(workdir: str | Path, *, k_max: int = 20, epochs: int = 30, seed: int = 0,
                       weights: str | None = None) -> dict:
    """generic.safetensors = pretrained trunk + a linear probe on all classes (cached features)."""
    from tina_edge.train.zoo.trunk import pretrained_trunk

    workdir = Path(workdir)
    classes, _, _ = read_classes(workdir)
    tr, te = cached_task_data(workdir, "train"), cached_task_data(workdir, "test")
    ytr = torch.cat([torch.full((len(ix),), c) for c, ix in enumerate(tr.by_class)])
    xtr = tr.inputs[torch.cat(tr.by_class)]
    t0 = time.time()
    w, b = train_linear_head(xtr, ytr, len(classes), epochs=epochs, seed=seed)
    secs = time.time() - t0
    yte = torch.cat([torch.full((len(ix),), c) for c, ix in enumerate(te.by_class)])
    pred = (te.inputs[torch.cat(te.by_class)] @ w.T + b).argmax(1)
    per_class = {c: float((pred[yte == j] == j).float().mean() * 100) for j, c in enumerate(classes)}
    cfg = TemplateConfig(name="lite0_head", k_max=k_max, image_size=_size(workdir))
    model = build_model(cfg, len(classes))
    model.trunk = pretrained_trunk(weights)
    model.fc.weight.data.copy_(w)
    model.fc.bias.data.copy_(b)
    info = {"test_accuracy": float((pred == yte).float().mean() * 100), "per_class": per_class, "seconds": secs,
            "epochs": epochs, "train_images": len(xtr), "datasets": train_set_name(workdir),
            "universe": WorkDir(workdir).universe_info()["universe"]}
    save_generic(WorkDir(workdir).generic, model, cfg, classes, info)
    return info


ZOO_RECIPE = {"steps": 50, "batch": 32, "lr": 1e-3, "fast_sampling": True}


def stage_zoo_head(workdir: str | Path, *, n_tasks: int = 3000, n_id: int = 95, n_ood_per_class: int = 2,
                   k_min: int = 2, k_max: int | None = None, group: int = 200, steps: int | None = None,
                   seed: int = 0, progress: bool = True) -> dict:
    """Fine-tune the zoo on cached features; under torchrun rank r builds ids with id % world == r.

    Recipe (ZOO_RECIPE, recorded in zoo/recipe.json and reused for the evaluation's fine-tuned
    reference): each head starts from the generic head's rows for its classes, Adam lr 1e-3,
    50 steps of 32 photos per task, all heads of a group in one batched matmul."""
    wd = WorkDir(workdir)
    rank, world = _rank_world()
    generic, cfg, classes, _ = load_generic(wd.generic)
    _, holdout, _ = read_classes(workdir)
    tasks_path = wd.tasks
    if rank == 0 and not tasks_path.is_file():
        make_task_split(classes, holdout, n_zoo=n_tasks, n_id=n_id, n_ood_per_class=n_ood_per_class, k_min=k_min,
                        k_max=min(k_max or cfg.k_max, cfg.k_max), seed=seed).save(tasks_path)
    if world > 1:
        dist.barrier()
    split = TaskSplit.load(tasks_path)
    layout = ParamLayout(cfg)
    tr, te = cached_task_data(workdir, "train"), cached_task_data(workdir, "test")
    gsd = {k: v for k, v in generic.state_dict().items() if k.startswith("fc.")}
    recipe = dict(ZOO_RECIPE) | ({"steps": steps} if steps else {})
    if rank == 0:
        wd.zoo.mkdir(parents=True, exist_ok=True)
        atomic_write_json(wd.recipe, recipe)
    stats = build_zoo(wd.zoo, gsd, layout, tr, te, split.zoo, shard=(rank, world), group=group,
                      seed=seed, eval_per_class=50, progress=progress and rank == 0, **recipe)
    if world > 1:
        dist.barrier()
        if rank == 0:
            write_index(wd.zoo)
        dist.barrier()
    stats["world_size"] = world
    return stats


def calibration_photos(workdir: str | Path, per_class: int = 2, seed: int = 1) -> np.ndarray:
    """uint8 [N, S, S, 3]: `per_class` train photos of every class, preprocessed (int8 trunk calibration)."""
    from tina_edge.train.data.photos import take_per_class
    from tina_edge.runtime.preprocess import prepare

    u = WorkDir(workdir).universe_info()
    ps = take_per_class(build_universe(UniverseSpec(**u["universe"]), "train"), per_class, seed=seed)
    pre = PreprocessSpec(**u["preprocess"])
    return np.stack([prepare(ps.load(i), pre) for i in range(len(ps))])


def stage_eval_head(workdir: str | Path, opts: EvalOptions | None = None) -> dict:
    """Generated vs fine-tuned vs selection vs chance on the held-out tasks, test-split features
    (sampler defaults: the photo universe's, EvalOptions.UNIVERSE_DEFAULTS)."""
    from tina_edge.train.evaluation.evaluate import evaluate, write_report
    from tina_edge.train.diffusion.checkpoint import read_checkpoint

    o = (opts or EvalOptions()).for_universe("photos")
    wd = WorkDir(workdir)
    ck = read_checkpoint(o.ckpt or wd.checkpoint())
    split = TaskSplit.load(wd.tasks)
    tr, te = cached_task_data(workdir, "train"), cached_task_data(workdir, "test")
    recipe = wd.read_json(wd.recipe) if wd.recipe.is_file() else dict(ZOO_RECIPE)
    result = evaluate(ck, te, tr, split.id_test, split.ood_test, split.holdout, sampler=o.sampler, steps=o.steps,
                      seed=o.seed, progress=o.progress, finetune=recipe)
    result["zoo"] = ck.info.zoo or {}
    result["generic"] = {k: v for k, v in (ck.info.generic_info or {}).items() if k != "per_class"}
    write_report(result, o.out_dir or wd.eval_dir)
    return result
