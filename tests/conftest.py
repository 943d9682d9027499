"""Fixtures shared by several test files."""

import onnxruntime as ort
import pytest


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
