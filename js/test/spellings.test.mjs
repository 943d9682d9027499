// Other spellings of known names (spellings.mjs) against Python's runtime/spellings.py: the same
// rules in the same order, and the same conditioning for typed variants ("tshirt", "sneakers").
import test from "node:test";
import assert from "node:assert/strict";
import { Spellings, singulars, joined } from "../src/spellings.mjs";
import { TinaEdge } from "../src/node.mjs";
import { env, NEEDS_PYTHON, runPython } from "./helpers.mjs";

test("singulars follow WordNet's detachments in order, on the last word only", () => {
  assert.deepEqual(singulars("sneakers"), ["sneaker"]);
  assert.deepEqual(singulars("buses"), ["bus", "buse"]);
  assert.deepEqual(singulars("puppies"), ["puppy", "puppie"]);
  assert.deepEqual(singulars("mashed potatoes"), ["mashed potatoe", "mashed potato"]);
  assert.deepEqual(singulars("men"), ["man"]);
  assert.deepEqual(singulars("s"), []);
  assert.deepEqual(singulars("cat"), []);
  assert.equal(joined("lawn mower"), "lawnmower");
});

test("find: singular first, then space-free forms; known and qualified names are never re-spelled", () => {
  const sp = new Spellings(["sneaker", "lawn mower", "pay phone", "t shirt", "bus", "glass", "glasses"]);
  assert.equal(sp.find("sneakers"), "sneaker");
  assert.equal(sp.find("lawnmowers"), "lawn mower");
  assert.equal(sp.find("payphone"), "pay phone");
  assert.equal(sp.find("tshirts"), "t shirt");
  assert.equal(sp.find("glasses"), null);
  assert.equal(sp.find("sneakers (shoe)"), null);
  assert.equal(sp.find("cats"), null);
  assert.equal(new Spellings(["ice cream", "icecream x", "i cecream"]).find("icecreams"), "ice cream");
});

const WORDS = ["tshirt", "sneakers", "payphone", "lawnmowers", "mashed potatoes", "walruses", "cats", "jeans",
  "school buses", "schoolbus", "Gas Mask", "mouse (rodent)", "glasses", "x", "oes"];
test("Python and JS re-spell alike and read typed variants bit for bit alike", { skip: NEEDS_PYTHON }, async () => {
  const code = `
import json, sys, numpy as np
from tina_edge.runtime import Personalizer
from tina_edge.runtime.prompt import class_key
from tina_edge.runtime.spellings import singulars
p = Personalizer.from_bundle(sys.argv[1], threads=1)
words = json.loads(sys.argv[2])
emb = p.conditioning_texts(words)
sp = p._spellings()
print(json.dumps({"emb": emb.view(np.uint32).ravel().tolist(), "found": [sp.find(class_key(w)) for w in words],
                  "singulars": [singulars(class_key(w)) for w in words]}))`;
  const py = JSON.parse(runPython(code, env().bundle, JSON.stringify(WORDS)));
  const tina = await TinaEdge.fromBundle(env().bundle);
  try {
    const { classKey } = await import("../src/prompt.mjs");
    assert.deepEqual(WORDS.map((w) => singulars(classKey(w))), py.singulars);
    const emb = await tina.conditioningTexts(WORDS);
    assert.deepEqual(WORDS.map((w) => tina._spellings.find(classKey(w))), py.found);
    assert.ok(py.found.filter((f) => f !== null).length >= 4, `few words re-spelled on this bundle: ${py.found}`);
    assert.deepEqual(Array.from(new Uint32Array(emb.buffer)), py.emb); // bit for bit
  } finally {
    tina.dispose();
  }
});
