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
    from tina_edge.train.diffusion.denoiser import DenoiserConfig as FromDenoiser
    from tina_edge.train.configs import DiffusionOptions
    from tina_edge.train.stages.small import stage_generic
    from tina_edge.train.diffusion.trainer import TrainConfig as FromTrainer

    sg = inspect.signature(stage_generic).parameters
    o = DiffusionOptions()
    assert (o.hidden, o.layers, o.heads) == (DenoiserConfig.hidden, DenoiserConfig.layers, DenoiserConfig.heads) == (64, 4, 4)
    assert sg["epochs"].default == GenericConfig.epochs == 4
    assert FromDenoiser is DenoiserConfig and FromTrainer().steps == 10000


# ------------------------------------------------------------------ one error decorator, one data object


def test_user_errors_maps_expected_errors_and_lets_bugs_through():
    import onnx
    import onnxruntime as ort

    from tina_edge.cli.errors import user_errors
    from tina_edge.runtime.errors import TinaEdgeError

    def raising(exc_factory):
        @user_errors
        def command():
            exc_factory()
        return command

    def bad_value():
        raise ValueError("--lr must be positive")

    with pytest.raises(TinaEdgeError, match="--lr must be positive"):
        raising(bad_value)()
    with pytest.raises(TinaEdgeError, match="No such file"):
        raising(lambda: open("/nonexistent/zoo.json"))()
    with pytest.raises(TinaEdgeError, match="DecodeError"):  # protobuf: not an ONNX file
        raising(lambda: onnx.load_from_string(b"\xff\xff not a model"))()
    with pytest.raises(TinaEdgeError) as e:  # onnxruntime's own error type
        raising(lambda: ort.InferenceSession(b"junk", providers=["CPUExecutionProvider"]))()
    assert "\n" not in str(e.value)
    with pytest.raises(KeyError):  # a bug keeps its traceback
        raising(lambda: {}["missing"])()


def _image_folder(root, classes=("red", "blue"), n=(3, 2)):
    from PIL import Image

    for split, count in zip(("train", "test"), n):
        for c, colour in zip(classes, ((200, 0, 0), (0, 0, 200))):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (32, 32), colour).save(d / f"{i}.png")
    return root


def test_data_options_load_both_splits_once(tmp_path):
    from tina_edge.cli.data_options import DataOptions

    data = DataOptions(image_folder=(str(_image_folder(tmp_path / "imgs")),))
    tr, te = data.load()
    assert (len(tr), len(te)) == (6, 4) and sorted(tr.classes) == ["blue", "red"]
    again = data.load()
    assert again[0] is tr and again[1] is te  # read once per command


@pytest.mark.parametrize("args,words", [
    (["--image-folder", "MISSING"], "data folder {tmp}/MISSING does not exist"),
    ([], "no dataset given: pass --cifar10, --fashion-mnist, --image-folder or --cifar-pickle"),
])
def test_data_option_errors_are_one_line(tmp_path, args, words):
    args = [a.replace("MISSING", str(tmp_path / "MISSING")) for a in args]
    for command in (["train", "generic"], ["train", "eval"]):
        r = CliRunner().invoke(main, [*command, "--workdir", str(tmp_path / "wd"), *args])
        assert r.exit_code == 2, r.output
        if command[1] == "eval" and not args:  # nothing to evaluate yet: the work directory says so first
            words = "{tmp}/wd holds no pipeline yet; start with `tina-edge train features` (photos) or `tina-edge train generic` (32-px universe)"
        assert r.stderr == f"error: {words.format(tmp=tmp_path)}\n" and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["train", "features", "--workdir", str(tmp_path / "wd"), "--tiny-imagenet", str(tmp_path / "no")])
    assert r.exit_code == 2 and f"data folder {tmp_path / 'no'} does not exist" in r.stderr


def test_eval_options_fill_each_universe_own_sampler_defaults():
    from tina_edge.train.configs import EvalOptions

    assert (EvalOptions().for_universe("photos").sampler, EvalOptions().for_universe("photos").steps) == ("ddim", 5)
    assert (EvalOptions().for_universe("small").sampler, EvalOptions().for_universe("small").steps) == ("ddpm", 1000)
    given = EvalOptions(sampler="ddpm", steps=7).for_universe("photos")  # what the user asked for wins
    assert (given.sampler, given.steps) == ("ddpm", 7)


def test_the_work_directory_records_its_universe_and_refuses_another(tmp_path):
    from tina_edge.train.workdir import WorkDir, WorkDirError

    wd = WorkDir(tmp_path / "w")
    assert wd.universe() is None
    wd.record_universe("photos")
    assert WorkDir(tmp_path / "w").universe() == "photos"
    with pytest.raises(WorkDirError, match="holds the photos universe; use another --workdir"):
        wd.record_universe("small")
    (tmp_path / "w" / "universe.json").unlink(missing_ok=True)
    assert wd.universe() == "photos"  # the record, not a sniffed file, decides


def test_train_commands_on_an_empty_workdir_say_where_to_start(tmp_path):
    r = CliRunner().invoke(main, ["train", "zoo", "--workdir", str(tmp_path / "new")])
    assert r.exit_code == 2 and "holds no pipeline yet; start with `tina-edge train features`" in r.stderr
