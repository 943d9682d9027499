"""PyTorch side of tina-edge, in rooms that follow the pipeline (docs/ARCHITECTURE.md):

    data/        both dataset universes (32-px sets, real photos) behind one loader interface
    zoo/         classifier templates, the frozen trunk, the generic model, tasks, the p-model zoo
    text/        text encoders and the phrasings of class names
    diffusion/   the denoiser, the noise process, the trainer and the checkpoint
    prior/       the text -> row prior (ridge fits, ImageNet's rows)
    evaluation/  evaluation, comparison with the baselines, paired statistics
    stages/      the pipeline's stages, one list per universe

Modules that lived at the top of train/ before these rooms raise an ImportError naming their new home.
"""

from __future__ import annotations

from tina_edge._moved import register_moved

MOVED = {  # old module -> its home since the train/ rooms (issue 19)
    "image_dataset": "data.image_dataset", "idx": "data.idx", "cifar_pickle": "data.cifar_pickle",
    "archives": "data.archives", "datasets": "data", "datasets.photos": "data.photos",
    "datasets.tinyimagenet": "data.tinyimagenet", "datasets.folders": "data.folders", "datasets.universe": "data.universe",
    "templates": "zoo.templates", "trunk": "zoo.trunk", "generic": "zoo.generic", "tasks": "zoo.tasks",
    "zoo_heads": "zoo.heads", "features": "zoo.features",
    "text_encoder_base": "text.base", "text_encoders": "text.encoders", "clip_encoder": "text.clip",
    "phrasings": "text.phrasings", "text_prior": "prior.fit", "imagenet_rows": "prior.imagenet_rows",
    "denoiser": "diffusion.denoiser", "trainer": "diffusion.trainer", "checkpoint": "diffusion.checkpoint",
    "evaluate": "evaluation.evaluate", "compare": "evaluation.compare", "compare_stage": "evaluation.compare_stage",
    "baselines": "evaluation.baselines", "stats": "evaluation.stats",
    "pipeline": "stages.small", "photo_pipeline": "stages.photos",
}


register_moved(__name__, MOVED)
