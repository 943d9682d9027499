import test from "node:test";
import assert from "node:assert/strict";
import { splitmix64Word, portableNormal, standardNormal64 } from "../src/noise.mjs";
import { vectors } from "./helpers.mjs";

test("SplitMix64 matches the published first output for seed 0", () => {
  assert.equal(splitmix64Word(0, 0), 0xe220a8397b1dcdafn);
});

test("noise is bit-identical to Python's for every seed of the vectors", () => {
  const v = vectors();
  assert.deepEqual(v.splitmix64_seed0, [0n, 1n, 2n].map((n) => splitmix64Word(0, n).toString()));
  for (const { seed, values } of v.noise) {
    const got = portableNormal(BigInt(seed), values.length);
    assert.deepEqual(Array.from(got), values, `seed ${seed}`);
  }
});

test("the stream is counter-based: a longer draw starts with the shorter one", () => {
  assert.deepEqual(Array.from(portableNormal(7, 5)), Array.from(portableNormal(7, 100).subarray(0, 5)));
  const z = standardNormal64(3, 20000);
  const mean = z.reduce((a, b) => a + b, 0) / z.length;
  const sd = Math.sqrt(z.reduce((a, b) => a + (b - mean) ** 2, 0) / z.length);
  assert.ok(Math.abs(mean) < 0.03 && Math.abs(sd - 1) < 0.03, `mean ${mean} sd ${sd}`);
});

test("seeds out of range are refused", () => {
  assert.throws(() => portableNormal(-1, 3), RangeError);
  assert.throws(() => portableNormal(2n ** 64n, 3), RangeError);
  assert.throws(() => portableNormal(2 ** 60, 3), RangeError); // unsafe number: pass a BigInt
});
