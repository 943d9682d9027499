"""Fixtures shared by several test files.

`base_bundle` is the torch-free tiny bundle (`runtime_fixtures.make_tiny_bundle`), built once per
session and never modified; a test that edits a bundle takes `bundle`, its own copy.

Reproducibility (issue 20): every test starts from the same global random state (`random`, numpy's
legacy global generator and torch, seed $TINA_EDGE_TEST_SEED, default 0, printed with the test's
output), and Hypothesis runs derandomized with no example database under CI (profile "ci", chosen
when $CI is set or by --hypothesis-profile=ci), printing a reproduction blob for every failure.
"""

import os
import random
import shutil
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import settings

from runtime_fixtures import make_tiny_bundle
from shared_data import SHARED_DATA, tiny_imagenet_dir

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("dev", print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))

TEST_SEED = int(os.environ.get("TINA_EDGE_TEST_SEED", "0"))


@pytest.fixture(autouse=True)
def _seeded_global_rngs():
    """Tests that draw from a global generator (torch.randn without a generator, ...) draw the same
    numbers whatever ran before them; the seed is printed, so a failure's output names it."""
    random.seed(TEST_SEED)
    np.random.seed(TEST_SEED)
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(TEST_SEED)
    print(f"global random seed {TEST_SEED} (TINA_EDGE_TEST_SEED)")


@pytest.fixture(scope="session")
def tiny_imagenet() -> Path:
    """Tiny-ImageNet extracted from ../shared/data (once, into .cache/tests); skips without it."""
    root = tiny_imagenet_dir()
    if root is None:
        pytest.skip(f"needs {SHARED_DATA}/tiny-imagenet-200.tar.gz (../shared/data, or $TINA_EDGE_SHARED_DATA)")
    return root


@pytest.fixture(scope="session")
def base_bundle(tmp_path_factory) -> Path:
    """The tiny bundle, read-only: copy it (fixture `bundle`) before changing anything in it."""
    return make_tiny_bundle(tmp_path_factory.mktemp("base") / "bundle")


@pytest.fixture
def bundle(base_bundle, tmp_path) -> Path:
    """A private copy of the tiny bundle that a test may edit."""
    d = tmp_path / "bundle"
    shutil.copytree(base_bundle, d)
    return d


@pytest.fixture
def sessions(monkeypatch):
    """Count InferenceSession constructions (the real class still does the work), to prove that
    bundle checks run before any session is created."""
    count = {"n": 0}
    real = ort.InferenceSession

    class Counting(real):
        def __init__(self, *a, **k):
            count["n"] += 1
            super().__init__(*a, **k)

    monkeypatch.setattr(ort, "InferenceSession", Counting)
    return count
