// Portable starting noise: SplitMix64 (counter-based) + Box-Muller, the twin of
// tina_edge/runtime/noise.py. Specification: docs/PORTABLE.md. The same seed gives the same
// float32 values as Python (the float64 -> float32 cast hides last-ulp libm differences).

const MASK = (1n << 64n) - 1n;
const GAMMA = 0x9e3779b97f4a7c15n;
const M1 = 0xbf58476d1ce4e5b9n;
const M2 = 0x94d049bb133111ebn;
const TWO_M53 = 2 ** -53;

export const GENERATOR = "splitmix64-boxmuller";
export const VERSION = 1;

function toSeed(seed) {
  const s = typeof seed === "bigint" ? seed : BigInt(seed);
  if (typeof seed === "number" && !Number.isSafeInteger(seed)) {
    throw new RangeError(`the seed must be an integer (pass a BigInt above 2**53), got ${seed}`);
  }
  if (s < 0n || s > MASK) throw new RangeError(`the seed must be from 0 to 2**64 - 1, got ${seed}`);
  return s;
}

/** word(seed, n) = mix64(seed + (n + 1) * gamma mod 2^64), as a BigInt. */
export function splitmix64Word(seed, n) {
  let z = (toSeed(seed) + (BigInt(n) + 1n) * GAMMA) & MASK;
  z = ((z ^ (z >> 30n)) * M1) & MASK;
  z = ((z ^ (z >> 27n)) * M2) & MASK;
  return z ^ (z >> 31n);
}

/** The first `count` standard normals of the stream for `seed`, as float64 (before the cast). */
export function standardNormal64(seed, count) {
  const s = toSeed(seed);
  const pairs = Math.ceil(count / 2);
  const out = new Float64Array(2 * pairs);
  let z = s;
  for (let i = 0; i < pairs; i++) {
    z = (z + GAMMA) & MASK;
    const w1 = mix(z);
    z = (z + GAMMA) & MASK;
    const w2 = mix(z);
    const u1 = (Number(w1 >> 11n) + 1) * TWO_M53;
    const u2 = Number(w2 >> 11n) * TWO_M53;
    const r = Math.sqrt(-2 * Math.log(u1));
    const theta = 2 * Math.PI * u2;
    out[2 * i] = r * Math.cos(theta);
    out[2 * i + 1] = r * Math.sin(theta);
  }
  return out.subarray(0, count);
}

function mix(z) {
  z = ((z ^ (z >> 30n)) * M1) & MASK;
  z = ((z ^ (z >> 27n)) * M2) & MASK;
  return z ^ (z >> 31n);
}

/** float32 N(0, I) noise, `count` values (row-major order of the caller's shape). */
export function portableNormal(seed, count) {
  return Float32Array.from(standardNormal64(seed, count));
}
