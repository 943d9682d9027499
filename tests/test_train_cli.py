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
