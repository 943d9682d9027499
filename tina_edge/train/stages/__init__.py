"""The pipeline's stages, one list per universe, in the order the CLI runs them.

The work directory records its universe (train/workdir.py); `tina-edge train <stage>` runs that
universe's function for the stage: photos.py (pretrained trunk, real photos), small.py (32-px
templates trained from scratch); the diffusion stage (diffusion.py) is shared.
"""

PIPELINES: dict[str, tuple[str, ...]] = {
    "photos": ("features", "generic", "zoo", "diffusion", "eval"),
    "small": ("generic", "zoo", "diffusion", "eval"),
}
