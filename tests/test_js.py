"""The JavaScript package's own suite (`cd js && npm test`), run when node and its modules are there.

npm test checks the JS port against conformance vectors this Python runtime writes (noise, token
ids, embeddings, parameters, logits; docs/PORTABLE.md) and the node CLI's model.onnx against the
Python one. It runs where js/node_modules exists (after `cd js && npm ci`) and skips elsewhere;
.ci/run runs `npm ci && npm test` (and `npm run test:browser` when chromium is there) after pytest.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

JS = Path(__file__).resolve().parents[1] / "js"


@pytest.mark.slow
def test_npm_test_passes():
    node, npm = shutil.which("node"), shutil.which("npm")
    if not (node and npm):
        pytest.skip("node/npm are not installed")
    if not (JS / "node_modules" / "onnxruntime-node").is_dir():
        pytest.skip("js/node_modules is missing: run `cd js && npm ci` first")
    env = dict(os.environ, TINA_EDGE_PYTHON=sys.executable, OMP_NUM_THREADS="1")
    r = subprocess.run([npm, "test"], cwd=JS, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    assert "# fail 0" in r.stdout
