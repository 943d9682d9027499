"""Fixtures shared by several test files.

`base_bundle` is the torch-free tiny bundle (`runtime_fixtures.make_tiny_bundle`), built once per
session and never modified; a test that edits a bundle takes `bundle`, its own copy.
"""

import shutil
from pathlib import Path

import onnxruntime as ort
import pytest

from runtime_fixtures import make_tiny_bundle


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
