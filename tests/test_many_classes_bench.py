"""The references benchmarks/many_classes.py measures against (issue 23) do what their names say.

- "prior alone": a denoiser with its correction head zeroed returns the same x0 whatever x_t and the
  timestep (the text prior depends on the names only), and differs from the denoiser with its
  correction (the shipped default is prior-only already and is measured as it is);
- "nearest vocabulary": a held-out name takes the conditioning row of a known name that is not in
  the task; seen names keep their own rows;
- the Fashion-MNIST reader gives 28x28 grey photos in one batch, per class in label order.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import _many_refs as refs  # noqa: E402
from _tin_features import FASHION, fashion_photos  # noqa: E402
from bundle_variants import with_correction  # noqa: E402
from runtime_fixtures import make_tiny_bundle  # noqa: E402
from tina_edge.runtime import Personalizer  # noqa: E402


@pytest.fixture(scope="module")
def pz() -> Personalizer:
    return Personalizer.from_bundle(threads=1)


def test_prior_alone_ignores_the_noise_and_the_step(pz, tmp_path):
    assert refs.prior_only(pz, None) == (pz, "the bundle is prior-only already (portable.prior.only)")  # the shipped default
    src = with_correction(tmp_path / "corrected")  # the default with a non-zero correction (bundle_variants.py)
    pz = Personalizer.from_bundle(src, threads=1)
    prior, note = refs.prior_only(pz, src)
    assert prior is not None and "row_out.bias" in note
    k, K = 3, pz.manifest.k_max
    emb = np.zeros((2, K, pz.manifest.text_encoder.embedding_dim), np.float32)
    emb[:, :k] = pz.class_embeddings(["lemon", "school bus", "gondola"])
    mask = np.zeros((2, K), np.float32)
    mask[:, :k] = 1
    rng = np.random.default_rng(0)
    P = pz.manifest.denoiser.param_count
    x1, x2 = rng.standard_normal((2, P), dtype=np.float32), 3 * rng.standard_normal((2, P), dtype=np.float32)
    a, b = prior._denoise(x1, 999, emb, mask), prior._denoise(x2, 250, emb, mask)
    np.testing.assert_array_equal(a, b)
    assert np.abs(pz._denoise(x1, 999, emb, mask) - a).max() > 1e-3  # the correction was not zero


def test_prior_alone_is_none_without_a_correction_head(tmp_path):
    p = Personalizer.from_bundle(make_tiny_bundle(tmp_path / "b"), threads=1)
    prior, note = refs.prior_only(p, tmp_path / "b")
    assert prior is None and "has no /row_out/ correction head" in note


def test_nearest_vocabulary_takes_a_known_name_outside_the_task(pz):
    voc = refs.Vocabulary(pz)
    held = [h for h in pz.manifest.training.holdout_classes if h.lower() not in {v.lower() for v in voc.names}][:2]
    names = [held[0], "lemon", held[1], "school bus"]
    emb = pz.class_embeddings(names)
    out, chosen = voc.substitute(names, set(held), emb)
    assert set(chosen) == set(held) and len(set(chosen.values())) == 2
    assert not {v.lower() for v in chosen.values()} & {n.lower() for n in names}
    assert all(v in voc.names for v in chosen.values())
    np.testing.assert_array_equal(out[[1, 3]], emb[[1, 3]])  # seen names keep their rows
    np.testing.assert_allclose(out[0], pz.class_embeddings([chosen[held[0]]])[0], atol=1e-6)


def test_fashion_mnist_reader():
    root = Path("/usr/share/datasets/fashion-mnist")
    if not (root / "t10k-labels-idx1-ubyte.gz").is_file() and not (root / "t10k-labels-idx1-ubyte").is_file():
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    arr, names = fashion_photos(root, "test", 3)
    assert arr.shape == (30, 28, 28, 1) and arr.dtype == np.uint8
    assert names == [c for c in FASHION for _ in range(3)]
