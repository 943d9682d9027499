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


EXPORT_WITHOUT_TORCH = r"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "open_clip", "transformers", "torchvision"}:
            raise ImportError(f"{name} is blocked in this test")
sys.meta_path.insert(0, Block())
import tina_edge.export.portable.generate  # torch-free: `tina-edge convert` runs in a runtime install
from tina_edge.runtime.errors import TRAIN_EXTRA_HINT, TinaEdgeError
for mod in ("tina_edge.export.bundle", "tina_edge.export.graphs", "tina_edge.export.text_encoder"):
    try:
        __import__(mod)
        raise SystemExit(mod + " imported without torch")
    except TinaEdgeError as e:
        assert str(e) == TRAIN_EXTRA_HINT, str(e)
from click.testing import CliRunner
from tina_edge.cli.main import main
r = CliRunner().invoke(main, ["export", "--ckpt", "x.safetensors", "-o", "out"])
assert r.exit_code == 2 and r.stderr.strip() == "error: " + TRAIN_EXTRA_HINT, (r.exit_code, r.output)
print("ok")
"""


def test_export_without_torch_gives_the_cli_install_hint():
    """`import tina_edge.export.<torch part>` and `tina-edge export` say the same pip line, no traceback."""
    out = subprocess.run([sys.executable, "-c", EXPORT_WITHOUT_TORCH], capture_output=True, text=True, timeout=120,
                         cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert out.returncode == 0, out.stdout + out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")
