"""The edge runtime works with torch, open_clip, transformers and torchvision unimportable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from runtime_fixtures import make_tiny_bundle

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import sys
BLOCKED = {"torch", "open_clip", "transformers", "torchvision"}

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked in this test")
        return None

sys.meta_path.insert(0, Block())
try:
    import torch  # noqa: F401
    raise SystemExit("the blocker does not work")
except ImportError:
    pass

bundle, out = sys.argv[1], sys.argv[2]
import numpy as np
import tina_edge.runtime as rt
import tina_edge.cli.main as cli

p = rt.Personalizer.from_bundle(bundle)
clf = p.personalize("dog, cat, frog", seed=1)
pred = clf.predict(np.zeros((2, 8, 8, 3), np.uint8))
assert pred.probabilities.shape == (2, 3)
try:
    cli.main(["personalize", "dog, cat", "-o", out, "--bundle", bundle], standalone_mode=False)
except SystemExit as e:
    assert e.code in (0, None), e.code
loaded = [m for m in sys.modules if m.split(".")[0] in BLOCKED]
assert not loaded, loaded
print("ok", clf.labels, sorted(c.name for c in cli.main.commands.values() if c.name in ("personalize", "predict", "info")))
"""


def test_runtime_without_torch(tmp_path):
    bundle = make_tiny_bundle(tmp_path / "bundle")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(bundle), str(tmp_path / "m.onnx")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ok ['dog', 'cat', 'frog'] ['info', 'personalize', 'predict']" in r.stdout
    assert (tmp_path / "m.onnx").is_file()
