"""Stages of the 32-px universe (templates trained from scratch): generic -> zoo ->
(stages/diffusion.py) -> eval. File names: train/workdir.py (`WorkDir`).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from tina_edge.runtime.atomic import atomic_save_npy
from tina_edge.train.configs import EvalOptions, GenericConfig
from tina_edge.train.workdir import WorkDir
from tina_edge.train.data.small import ImageDataset, load_cifar_pickle, load_idx, load_image_folder, union
from tina_edge.train.zoo.generic import accuracy, extract_features, load_generic, predict_logits, save_generic, train_generic
from tina_edge.train.zoo.tasks import TaskSplit, check_classes, make_task_split
from tina_edge.train.zoo.templates import ParamLayout, TemplateConfig
from tina_edge.train.zoo.pmodels import TaskData, build_zoo


def load_universe(*, cifar10: str | None = None, fashion_mnist: str | None = None, image_folders=(),
                  cifar_pickles=(), split: str = "train", cache_dir: str | None = None) -> ImageDataset:
    """Union of the given sources in a fixed order (CIFAR-10 folder, Fashion-MNIST, others)."""
    if cifar10 and fashion_mnist and not image_folders and not cifar_pickles:
        from tina_edge.train.data.small import load_default_universe

        return load_default_universe(cifar10, fashion_mnist, split, cache_dir=cache_dir)
    parts = []
    if cifar10:
        parts.append(load_image_folder(cifar10, split, name="cifar10"))
    if fashion_mnist:
        parts.append(load_idx(fashion_mnist, split))
    parts += [load_image_folder(p, split) for p in image_folders]
    parts += [load_cifar_pickle(p, split) for p in cifar_pickles]
    if not parts:
        raise ValueError("no dataset given: pass --cifar10, --fashion-mnist, --image-folder or --cifar-pickle")
    return parts[0] if len(parts) == 1 else union(parts)


def _inputs(workdir: Path, cfg: TemplateConfig, model, ds: ImageDataset, split: str) -> torch.Tensor:
    """What the generated part sees: cached trunk features (head template) or raw images (tiny CNN)."""
    if cfg.name != "resnet_head":
        return torch.from_numpy(ds.images)
    path = WorkDir(workdir).small_features(split)
    if path.is_file():
        f = np.load(path, allow_pickle=False)
        if len(f) == len(ds):
            return torch.from_numpy(f)
    f = extract_features(model, ds.images).numpy()
    atomic_save_npy(path, f)
    return torch.from_numpy(f)


def stage_generic(workdir: str | Path, train: ImageDataset, test: ImageDataset, cfg: TemplateConfig, *,
                  epochs: int = GenericConfig.epochs, batch_size: int = GenericConfig.batch_size,
                  lr: float = GenericConfig.lr, seed: int = GenericConfig.seed, progress: bool = True) -> dict:
    wd = WorkDir(workdir)
    wd.record_universe("small")
    t0 = time.time()
    model = train_generic(train.images, train.labels, train.classes, cfg, epochs=epochs, batch_size=batch_size,
                          lr=lr, seed=seed, progress=progress)
    secs = time.time() - t0
    acc = accuracy(predict_logits(model, test.images), test.labels)
    per_class = {}
    logits = predict_logits(model, test.images)
    for j, c in enumerate(test.classes):
        sel = test.labels == j
        per_class[c] = accuracy(logits[torch.from_numpy(sel)], test.labels[sel])
    info = {"test_accuracy": acc, "per_class": per_class, "seconds": secs, "epochs": epochs,
            "train_images": len(train), "datasets": train.name}
    save_generic(wd.generic, model, cfg, train.classes, info)
    for split in ("train", "test"):  # features of the previous generic model
        wd.small_features(split).unlink(missing_ok=True)
    return info


def stage_zoo(workdir: str | Path, train: ImageDataset, test: ImageDataset, *, holdout: list[str],
              n_tasks: int = 1000, n_id: int = 45, n_ood_per_class: int = 9, k_max: int = 10,
              shard: tuple[int, int] = (0, 1), group: int = 100, steps: int = 100, seed: int = 0,
              progress: bool = True) -> dict:
    wd = WorkDir(workdir)
    model, cfg, classes, _ = load_generic(wd.generic)
    if classes != train.classes:
        raise ValueError("the dataset's classes differ from the generic model's; use the same data options")
    check_classes(holdout, classes)
    tasks_path = wd.tasks
    if tasks_path.is_file():
        split = TaskSplit.load(tasks_path)
    else:
        split = make_task_split(classes, holdout, n_zoo=n_tasks, n_id=n_id, n_ood_per_class=n_ood_per_class,
                                k_max=min(k_max, cfg.k_max), seed=seed)
        split.save(tasks_path)
    layout = ParamLayout(cfg)
    tr = TaskData(_inputs(workdir, cfg, model, train, "train"), train.labels, classes)
    te = TaskData(_inputs(workdir, cfg, model, test, "test"), test.labels, classes)
    stats = build_zoo(wd.zoo, model.state_dict(), layout, tr, te, split.zoo, shard=shard, group=group,
                      steps=steps, seed=seed, progress=progress)
    return stats


def stage_eval(workdir: str | Path, train: ImageDataset, test: ImageDataset, opts: EvalOptions | None = None) -> dict:
    """Evaluate a checkpoint on the held-out ID/OOD tasks; writes eval/{eval.json,report.md,png}
    (sampler defaults: the small universe's, EvalOptions.UNIVERSE_DEFAULTS).

    `image_prompts` (e.g. (1, 5, 10); CLIP checkpoints only) adds rows where each class is prompted
    by that many example images from the train split instead of its name.
    """
    from tina_edge.train.evaluation.evaluate import evaluate, evaluate_image_prompts, image_prompt_encoder, write_report
    from tina_edge.train.diffusion.checkpoint import read_checkpoint

    o = (opts or EvalOptions()).for_universe("small")
    sampler, steps, seed, image_prompts = o.sampler, o.steps, o.seed, o.image_prompts
    wd = WorkDir(workdir)
    ck = read_checkpoint(o.ckpt or wd.checkpoint())
    clip = image_prompt_encoder(ck) if image_prompts else None  # refuse non-CLIP before the long text eval
    generic, cfg, classes, _ = load_generic(wd.generic)
    split = TaskSplit.load(wd.tasks)
    tr = TaskData(_inputs(workdir, cfg, generic, train, "train"), train.labels, classes)
    te = TaskData(_inputs(workdir, cfg, generic, test, "test"), test.labels, classes)
    result = evaluate(ck, te, tr, split.id_test, split.ood_test, split.holdout, sampler=sampler, steps=steps,
                      seed=seed, progress=o.progress)
    if clip is not None:
        c2i = {c: i for i, c in enumerate(classes)}
        labels = np.array([c2i[train.classes[j]] for j in train.labels], dtype=np.int64)
        result["image_prompts"] = evaluate_image_prompts(
            ck, te, train.images, labels, split.id_test, split.ood_test, shots=tuple(image_prompts),
            sampler=sampler, steps=steps, seed=seed, encoder=clip)
        result["summary"]["image_prompts"] = result["image_prompts"]["summary"]
    result["zoo"] = ck.info.zoo or {}
    result["generic"] = {k: v for k, v in (ck.info.generic_info or {}).items() if k != "per_class"}
    write_report(result, o.out_dir or wd.eval_dir)
    return result
