"""Server-side CLI input checks: bad options end in one error line and exit status 2, before any work."""

import pytest
from click.testing import CliRunner

from tina_edge.cli.main import main

pytest.importorskip("torch")


@pytest.mark.parametrize("shard", ["3/2", "-1/2", "0/0", "a/b", "1", "1/2/3", "2/2"])
def test_bad_shard_is_one_error_line(shard, tmp_path):
    r = CliRunner().invoke(main, ["train", "zoo", "--workdir", str(tmp_path / "wd"), "--shard", shard])
    assert r.exit_code == 2, r.output
    assert f"--shard must look like i/n with 0 <= i < n, got {shard!r}" in r.stderr
    assert "Traceback" not in r.output
    assert not (tmp_path / "wd").exists()  # refused before any work


def test_good_shard_passes_the_check(tmp_path):
    """1/2 is accepted: the command goes on to look for training data (and says it finds none)."""
    r = CliRunner().invoke(main, ["train", "zoo", "--workdir", str(tmp_path / "wd"), "--shard", "1/2"])
    assert "--shard" not in r.output
    assert r.exit_code == 2 and "error: " in r.stderr


def _defaults(command: str) -> dict:
    from tina_edge.cli.train_cmds import train

    return {p.name: p.default for p in train.commands[command].params}


def test_option_defaults_come_from_the_config_dataclasses():
    """train/configs.py is the one source: click shows and uses the dataclass defaults, which are the
    documented training sequence's values (BENCHMARKS.md: hidden 64 x 4 layers, 10000 steps at batch 64;
    generic model 4 epochs, stem stride 2)."""
    from tina_edge.train.configs import DenoiserConfig, GenericConfig, TemplateConfig, TrainConfig

    d = _defaults("diffusion")
    assert (d["hidden"], d["layers"], d["heads"]) == (DenoiserConfig.hidden, DenoiserConfig.layers, DenoiserConfig.heads) == (64, 4, 4)
    t = TrainConfig()
    assert (d["steps"], d["batch_size"], d["lr"], d["emb_noise"], d["seed"]) == (t.steps, t.batch_size, t.lr, t.emb_noise, t.seed)
    assert (t.steps, t.batch_size, t.lr) == (10000, 64, 4e-4)
    g = _defaults("generic")
    tc, gc = TemplateConfig("resnet_head"), GenericConfig()
    assert (g["blocks"], g["widths"], g["stem_stride"]) == (tc.blocks_per_stage, "16,32,64", tc.stem_stride) == (1, "16,32,64", 2)
    assert (g["batch_size"], g["lr"], g["seed"], gc.epochs) == (gc.batch_size, gc.lr, gc.seed, 4)
    r = CliRunner().invoke(main, ["train", "diffusion", "--help"])
    assert "[default: 64]" in r.output and "[default: 10000]" in r.output


def test_library_defaults_are_the_same_values():
    """The pipeline's own keyword defaults read the same dataclasses (no third copy)."""
    import inspect

    from tina_edge.train.configs import DenoiserConfig, GenericConfig
    from tina_edge.train.denoiser import DenoiserConfig as FromDenoiser
    from tina_edge.train.pipeline import stage_diffusion, stage_generic
    from tina_edge.train.trainer import TrainConfig as FromTrainer

    sd, sg = inspect.signature(stage_diffusion).parameters, inspect.signature(stage_generic).parameters
    assert (sd["hidden"].default, sd["layers"].default, sd["heads"].default) == (64, 4, 4)
    assert sg["epochs"].default == GenericConfig.epochs == 4
    assert FromDenoiser is DenoiserConfig and FromTrainer().steps == 10000
