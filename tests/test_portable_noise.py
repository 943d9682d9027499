"""The portable starting-noise generator (docs/PORTABLE.md): spec values, properties, use."""

import numpy as np
import pytest

from runtime_fixtures import make_tiny_bundle
from tina_edge.runtime.noise import PortableNoise, portable_normal, splitmix64_words, standard_normal64
from tina_edge.runtime.personalizer import Personalizer
from tina_edge.runtime.samplers import initial_noise


def test_splitmix64_matches_the_reference_outputs():
    # SplitMix64 with state 0 (Vigna's reference C code): the first outputs
    assert [int(x) for x in splitmix64_words(0, 0, 2)] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4]


def test_box_muller_by_hand_for_the_first_pair():
    w = [int(x) for x in splitmix64_words(5, 0, 2)]
    u1 = ((w[0] >> 11) + 1) * 2.0**-53
    u2 = (w[1] >> 11) * 2.0**-53
    r = np.sqrt(-2 * np.log(u1))
    np.testing.assert_array_equal(standard_normal64(5, 2), [r * np.cos(2 * np.pi * u2), r * np.sin(2 * np.pi * u2)])


def test_counter_based_prefixes_shapes_and_dtype():
    full = portable_normal(9, (3, 7))
    assert full.dtype == np.float32 and full.shape == (3, 7)
    np.testing.assert_array_equal(portable_normal(9, 5), full.reshape(-1)[:5])  # odd counts: a prefix
    assert not np.array_equal(portable_normal(10, 21), full.reshape(-1))


def test_statistics_are_standard_normal():
    z = portable_normal(123, 200_000).astype(np.float64)
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01
    assert abs((z > 1.96).mean() - 0.025) < 0.002


@pytest.mark.parametrize("seed", [-1, 2**64, 1.5, True, "3"])
def test_bad_seeds_are_refused(seed):
    with pytest.raises(ValueError):
        portable_normal(seed, 3)


def test_initial_noise_uses_it_and_portable_noise_gives_one_draw():
    np.testing.assert_array_equal(initial_noise(4, (2, 3)), portable_normal(4, (2, 3)))
    pn = PortableNoise(4)
    np.testing.assert_array_equal(pn.standard_normal((2, 3)).astype(np.float32), portable_normal(4, (2, 3)))
    with pytest.raises(RuntimeError):
        pn.standard_normal((2, 3))
    chained = PortableNoise(4, then=np.random.default_rng(4))
    chained.standard_normal((2, 3))
    np.testing.assert_array_equal(chained.standard_normal((5,)), np.random.default_rng(4).standard_normal(5))


def test_personalize_starts_from_the_portable_noise(tmp_path):
    """A denoiser that returns its input makes DDIM-1 output x_T itself: the portable noise."""
    b = make_tiny_bundle(tmp_path / "b")
    p = Personalizer.from_bundle(b, threads=1)
    m = p.manifest
    seen = []
    real = p._denoise
    p._denoise = lambda x, t, e, mk, *prior: (seen.append(x.copy()), real(x, t, e, mk, *prior))[1]
    p.personalize("dog, cat", steps=3, seed=2**63 - 1)
    np.testing.assert_array_equal(seen[0], portable_normal(2**63 - 1, (1, m.denoiser.param_count)))
    a = p.personalize("dog, cat", seed=8).to_bytes()
    assert p.personalize("dog, cat", seed=8).to_bytes() == a  # seed= still means the same bytes
