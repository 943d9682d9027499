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


LIGHT_IMPORT = r"""
import sys
HEAVY = {"torch", "open_clip", "transformers", "torchvision", "onnx", "onnxruntime", "PIL", "tokenizers"}

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HEAVY:
            raise ImportError(f"{name} is blocked in this test")
        return None

sys.meta_path.insert(0, Block())
import tina_edge.runtime as rt
assert rt.parse_classes("dog, cat") == ["dog", "cat"]
print("ok", sorted(m for m in sys.modules if m.split(".")[0] in HEAVY))
"""


def test_importing_the_runtime_needs_only_numpy():
    """`import tina_edge.runtime` loads no ML stack (not even onnx/onnxruntime/Pillow/tokenizers):
    they are imported where a bundle, graph or image is actually used, which also keeps it cheap."""
    out = subprocess.run([sys.executable, "-c", LIGHT_IMPORT], capture_output=True, text=True, timeout=60,
                         cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok []"
