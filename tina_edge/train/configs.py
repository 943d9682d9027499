"""The training configurations: the one source of every training and model-size default.

Why a torch-free module: the CLI reads its option defaults from these dataclasses when it is
imported (`tina-edge train diffusion --help` shows them), and the CLI must import without torch.
The values are those of the documented training sequence (BENCHMARKS.md, README): the shipped
bundles were trained with them. denoiser.py, trainer.py and templates.py re-export their class.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace


@dataclass
class TemplateConfig:
    """JSON-serialisable description of a template (saved in checkpoints, used to rebuild it)."""

    name: str  # "tiny_cnn" | "resnet_head" | "lite0_head"
    k_max: int = 10
    image_size: int = 32  # input side in pixels (lite0_head: chosen by measurement, BENCHMARKS.md)
    blocks_per_stage: int = 1  # resnet_head only
    widths: list[int] = field(default_factory=lambda: [16, 32, 64])
    stem_stride: int = 2  # 2 makes the trunk ~4x cheaper on CPU (16x16 feature maps from the start)


@dataclass
class GenericConfig:
    """Training the generic model on the 32-px universe (SGD, one-cycle cosine; train/generic.py)."""

    epochs: int = 4
    batch_size: int = 256
    lr: float = 0.1
    seed: int = 0


# The text prior's map (`train diffusion --prior-map`): "kernel" = ridge on kernel features of the
# embedding, one key per training class; "linear" = ridge on the embedding (BENCHMARKS §12-13).
PRIOR_MAPS = ("kernel", "linear")
DEFAULT_PRIOR_MAP = "kernel"


@dataclass
class DenoiserConfig:
    param_count: int
    chunks: list[tuple[int, int]]  # (start, length) into the flat parameter vector
    k_max: int = 10
    text_dim: int = 384
    hidden: int = 64  # BENCHMARKS.md: hidden 64 x 4 layers trains in 15 min on a CPU and matches fine-tuning
    layers: int = 4
    heads: int = 4
    mlp_ratio: int = 4
    dropout: float = 0.0
    # Improvement over the paper: a parameter chunk that belongs to class slot j (a classifier row)
    # also receives class j's embedding directly, instead of having to find it by attention.
    # None/empty = the paper's conditioning (class tokens only).
    chunk_slots: list[int] | None = None
    # Wide heads (lite0_head: a row is 1280 weights + 1 bias): one token per class row, all rows
    # sharing one in/out projection (rows are exchangeable: class order is shuffled in training).
    # [[offset, per_slot_numel], ...] from ParamLayout.row_segments(); None/empty = chunk tokens.
    row_segments: list[list[int]] | None = None
    # Row tokens only: a calibrated ridge text -> row map (train/text_prior.py) held in buffers; the
    # x0 prediction is the prior plus the network's correction, and each row token also sees its prior.
    text_prior: bool = False
    prior_keys: int = 0  # seen names whose zoo rows the prior returns exactly (kernel term); 0 = ridge only
    prior_input: bool = True  # each row token also sees its prior through a linear (off: smaller graphs)
    # 0: the prior is linear in the text embedding. M > 0: it is linear in M kernel features
    # exp(gamma * (cos(e, key_m) - 1)), one key per training class (train/text_prior.py, BENCHMARKS §13).
    prior_kernel: int = 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["chunks"] = [list(c) for c in self.chunks]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DenoiserConfig":
        d = dict(d)
        d.pop("extra", None)  # an unused field of checkpoints written before 0.2
        d["chunks"] = [tuple(c) for c in d["chunks"]]
        return cls(**d)


@dataclass
class TrainConfig:
    steps: int = 10000
    batch_size: int = 64
    lr: float = 4e-4
    weight_decay: float = 0.1
    warmup: int = 500
    grad_clip: float = 0.1
    ema_decay: float = 0.9999
    emb_noise: float = 0.0  # std of Gaussian noise added to class embeddings (then re-normalised)
    seed: int = 0
    log_every: int = 50



@dataclass
class DiffusionOptions:
    """Everything `train diffusion` decides beyond the work directory: one object from the CLI to the
    stage (train/stages/diffusion.py), so no option is threaded through several signatures."""

    text_encoder: str = "minilm"  # minilm | minilm:DIR | st:DIR | open_clip:ARCH[:TAG_OR_CHECKPOINT]
    hidden: int = DenoiserConfig.hidden
    layers: int = DenoiserConfig.layers
    heads: int = DenoiserConfig.heads
    chunk_size: int = 64  # parameter chunk length (chunk tokens)
    slot_conditioning: bool = True  # chunk tokens: each row's chunks also see their class's embedding
    row_tokens: bool | None = None  # None: row tokens for lite0_head, chunks otherwise
    emb_bank: str | None = None  # .npz phrasing bank: bank [C, V, D], counts [C]
    text_prior: str | None = None  # None | "zoo" | "imagenet"
    extra_rate: float = 0.0  # with "imagenet": share of slots filled by ImageNet classes in training
    prior_keys: bool = True  # the prior returns each seen name's zoo mean row exactly
    prior_map: str = DEFAULT_PRIOR_MAP
    train: TrainConfig = field(default_factory=TrainConfig)
    resume: bool = False
    ckpt_name: str = "tina.safetensors"
    emb_cache: str | None = None  # None: the work directory's emb_cache/
    progress: bool = True


@dataclass
class EvalOptions:
    """`train eval`: sampler settings default per universe (None = the universe's own default)."""

    sampler: str | None = None  # photos: ddim; small: ddpm (the paper's sampler)
    steps: int | None = None  # photos: 5 (the bundle's default); small: 1000
    seed: int = 0
    ckpt: str | None = None  # None: the work directory's tina.safetensors
    out_dir: str | None = None  # None: the work directory's eval/
    image_prompts: tuple[int, ...] = ()  # small universe, CLIP checkpoints: shots per class
    progress: bool = True

    UNIVERSE_DEFAULTS = {"photos": ("ddim", 5), "small": ("ddpm", 1000)}

    def for_universe(self, universe: str) -> "EvalOptions":
        """A copy with the universe's sampler defaults filled in where none was given."""
        sampler, steps = self.UNIVERSE_DEFAULTS[universe]
        return replace(self, sampler=self.sampler or sampler, steps=self.steps or steps)
