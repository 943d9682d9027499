"""Portable starting noise: a counter-based generator every platform can reproduce bit for bit.

numpy's `Generator` has no JavaScript, Kotlin or Swift twin, so "same seed, same model" held only
in Python. The starting noise x_T is therefore drawn from this generator, specified in
docs/PORTABLE.md and implemented again in js/src/noise.mjs (conformance vectors check the two):

    gamma = 0x9E3779B97F4A7C15
    word(seed, n) = mix64(seed + (n + 1) * gamma  mod 2^64)            SplitMix64, counter-based
    mix64(z): z = (z ^ z >> 30) * 0xBF58476D1CE4E5B9; z = (z ^ z >> 27) * 0x94D049BB133111EB;
              return z ^ z >> 31                                        (all mod 2^64)
    u1 = ((word(seed, 2i) >> 11) + 1) * 2^-53        in (0, 1]
    u2 =  (word(seed, 2i+1) >> 11) * 2^-53           in [0, 1)
    z[2i]   = sqrt(-2 ln u1) * cos(2 pi u2)         Box-Muller in float64, then cast to float32
    z[2i+1] = sqrt(-2 ln u1) * sin(2 pi u2)

Element j of a row-major tensor of shape (C, P) is z[j]; a shape with an odd count drops the last
value of the final pair. Being counter-based, any element can be computed without the others.
The float64 -> float32 cast hides last-ulp differences between platforms' libm log/cos/sin.
"""

from __future__ import annotations

import math

import numpy as np

GENERATOR = "splitmix64-boxmuller"
VERSION = 1

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not (0 <= int(seed) < 2**64):
        raise ValueError(f"the noise seed must be an integer from 0 to 2**64 - 1, got {seed!r}")
    return int(seed)


def splitmix64_words(seed: int, start: int, count: int) -> np.ndarray:
    """word(seed, n) for n = start .. start + count - 1, uint64."""
    seed = _check_seed(seed)
    n = np.arange(start + 1, start + 1 + int(count), dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + n * _GAMMA
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def standard_normal64(seed: int, count: int) -> np.ndarray:
    """The first `count` normals of the stream, float64 (before the cast to float32)."""
    count = int(count)
    pairs = (count + 1) // 2
    w = splitmix64_words(seed, 0, 2 * pairs)
    scale = 2.0 ** -53
    u1 = ((w[0::2] >> np.uint64(11)).astype(np.float64) + 1.0) * scale
    u2 = (w[1::2] >> np.uint64(11)).astype(np.float64) * scale
    r = np.sqrt(-2.0 * np.log(u1))
    theta = 2.0 * math.pi * u2
    out = np.empty(2 * pairs, dtype=np.float64)
    out[0::2] = r * np.cos(theta)
    out[1::2] = r * np.sin(theta)
    return out[:count]


def portable_normal(seed: int, shape: tuple[int, ...] | int) -> np.ndarray:
    """float32 N(0, I) noise of `shape` from the portable generator (same values on every platform)."""
    shape = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)
    n = int(np.prod(shape)) if shape else 1
    return standard_normal64(seed, n).astype(np.float32).reshape(shape)


class PortableNoise:
    """Duck-types `numpy.random.Generator.standard_normal` for code that takes an rng.

    Lets reference samplers that draw x_T with `rng.standard_normal(shape)` start from the
    portable noise, exactly like `Personalizer.personalize(seed=s)`: the first draw is the portable
    x_T, later draws (DDPM step noise) come from `then`, a fresh `numpy.random.default_rng(s)` in
    the runtime. Without `then` a second draw is refused (it would repeat the first values).
    """

    def __init__(self, seed: int, then: np.random.Generator | None = None):
        self.seed = _check_seed(seed)
        self.then = then
        self._used = False

    def standard_normal(self, shape) -> np.ndarray:
        if self._used:
            if self.then is None:
                raise RuntimeError("PortableNoise gives one draw (the starting noise); pass then= for step noise")
            return self.then.standard_normal(shape)
        self._used = True
        return standard_normal64(self.seed, int(np.prod(shape))).reshape(shape)
