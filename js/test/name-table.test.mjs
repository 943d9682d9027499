// The bundle's name table in JS (name-table.mjs) against Python's reader and writer: the same
// refusals, the same vectors bit for bit (int8 x float32 scale), and personalize reading a table
// name from the table exactly as Python does (onnxruntime-node: parameters bit-identical).
import test from "node:test";
import assert from "node:assert/strict";
import zlib from "node:zlib";
import { NameTable, FORMAT } from "../src/name-table.mjs";
import { TinaEdge } from "../src/node.mjs";
import { BundleError } from "../src/errors.mjs";
import { NEEDS_PYTHON, runPython, withBundleCopy } from "./helpers.mjs";

/** .npy bytes of int8 [n, d] (numpy's version 1 header). */
function npyInt8(data, n, d, descr = "|i1") {
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': (${n}, ${d}), }`;
  header += " ".repeat(63 - ((10 + header.length) % 64)) + "\n";
  const out = new Uint8Array(10 + header.length + data.byteLength);
  out.set([0x93, ...Buffer.from("NUMPY"), 1, 0, header.length & 255, header.length >> 8]);
  out.set(Buffer.from(header, "latin1"), 10);
  out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), 10 + header.length);
  return out;
}
const tableBytes = (doc) => new Uint8Array(zlib.gzipSync(JSON.stringify(doc)));
const DOC = { format: FORMAT, version: 1, source: {}, keys: ["aardvark", "sea lion"], scales: [0.0123, 0.031] };
const Q = Int8Array.from([127, -3, 0, 5, -127, 64, 1, 2]);

test("vectors are int8 x their row's float32 scale, found by class key", async () => {
  const t = await NameTable.fromBytes(tableBytes(DOC), npyInt8(Q, 2, 4), 4, "t.json.gz");
  assert.equal(t.size, 2);
  const s = Math.fround(0.031);
  assert.deepEqual(Array.from(t.get("Sea_Lion")), [-127, 64, 1, 2].map((q) => Math.fround(q * s)));
  assert.deepEqual(Array.from(t.get("SEA  LION")), Array.from(t.get("sea-lion")));
  assert.equal(t.get("walrus"), null);
  assert.equal(t.get("sea lion (animal)"), null);
});

test("malformed tables and vectors are refused naming the file", async () => {
  const bad = async (doc, vec, re, dim = 4) => assert.rejects(NameTable.fromBytes(tableBytes(doc), vec, dim, "t.json.gz"),
    (e) => e instanceof BundleError && re.test(e.message) && /t\.json\.gz|int8/.test(e.message));
  const v = npyInt8(Q, 2, 4);
  await bad({ ...DOC, format: "other" }, v, /format/);
  await bad({ ...DOC, keys: ["aardvark"] }, v, /one length/);
  await bad({ ...DOC, keys: ["", "b"] }, v, /class key/);
  await bad({ ...DOC, keys: ["a", "a"] }, v, /twice/);
  await bad({ ...DOC, keys: ["a", "mouse (rodent)"] }, v, /without a qualifier/);
  await bad({ ...DOC, scales: [1, -1] }, v, /finite positive/);
  await bad({ ...DOC, scales: [1, true] }, v, /finite positive/);
  await bad({ ...DOC, aliases: ["a"] }, v, /aliases/);
  await bad({ ...DOC, aliases: { "mouse (rodent)": "mouse" } }, v, /aliases/);
  await bad({ ...DOC, aliases: { a: 3 } }, v, /aliases/);
  await bad(DOC, v, /int8\[2, 5\]/, 5);
  await bad(DOC, npyInt8(new Int8Array(8), 2, 4, "<f4"), /not int8/);
  await assert.rejects(NameTable.fromBytes(new Uint8Array(zlib.gzipSync(Buffer.alloc(17 << 20, 32))), v, 4, "t.json.gz"),
    /inflates to more than/);
});

test("a table written by Python: the same conditioning and parameters as Python's personalize", { skip: NEEDS_PYTHON }, () => withBundleCopy(async (bundle) => {
  const py = JSON.parse(runPython(`
import json, sys, numpy as np
from tina_edge.export.portable.name_table import write_name_table
from tina_edge.runtime import Personalizer
b = sys.argv[1]
D = Personalizer.from_bundle(b, threads=1).manifest.text_encoder.embedding_dim
v = np.random.default_rng(7).standard_normal((2, D))
write_name_table(b, ["Narwhal", "sea lion"], v / np.linalg.norm(v, axis=1, keepdims=True), {"encoder": "test"})
p = Personalizer.from_bundle(b, threads=1)
emb = p.class_embeddings("narwhal, cat, Sea Lion")
clf = p.personalize("narwhal, cat, Sea Lion", seed=3)
print(json.dumps({"emb": emb.view(np.uint32).ravel().tolist(), "w": clf.params["fc.weight"].view(np.uint32).ravel().tolist(),
                  "b": clf.params["fc.bias"].view(np.uint32).ravel().tolist()}))`, bundle));
  const tina = await TinaEdge.fromBundle(bundle);
  try {
    const emb = await tina.conditioningTexts(["narwhal", "cat", "Sea Lion"]);
    assert.deepEqual(Array.from(new Uint32Array(emb.buffer)), py.emb); // bit for bit
    const plain = await tina.encode(["narwhal"]);
    assert.notDeepEqual(Array.from(emb.subarray(0, plain.length)), Array.from(plain)); // the table, not the encoder
    const clf = await tina.personalize("narwhal, cat, Sea Lion", { seed: 3 });
    assert.deepEqual(Array.from(new Uint32Array(clf.params["fc.weight"].data.buffer)), py.w);
    assert.deepEqual(Array.from(new Uint32Array(clf.params["fc.bias"].data.buffer)), py.b);
  } finally {
    tina.dispose();
  }
}));

test("aliases written by Python read as their vocabulary names, bit for bit as in Python", { skip: NEEDS_PYTHON }, () => withBundleCopy(async (bundle) => {
  const py = JSON.parse(runPython(`
import json, sys, numpy as np
from tina_edge.export.portable.name_table import write_name_table
from tina_edge.runtime import Personalizer
b = sys.argv[1]
p0 = Personalizer.from_bundle(b, threads=1)
name = next(v for v in p0.manifest.vocabulary if isinstance(v, str))
D = p0.manifest.text_encoder.embedding_dim
v = np.random.default_rng(8).standard_normal((2, D))
write_name_table(b, ["narwhal", "quux beast"], v / np.linalg.norm(v, axis=1, keepdims=True), {"encoder": "test"}, aliases={"quux beast": name})
p = Personalizer.from_bundle(b, threads=1)
emb = p.conditioning_texts(["Quux Beast", "narwhal", name])
print(json.dumps({"name": name, "emb": emb.view(np.uint32).ravel().tolist()}))`, bundle));
  const tina = await TinaEdge.fromBundle(bundle);
  try {
    const emb = await tina.conditioningTexts(["Quux Beast", "narwhal", py.name]);
    assert.deepEqual(Array.from(new Uint32Array(emb.buffer)), py.emb); // bit for bit
    const D = emb.length / 3;
    assert.deepEqual(Array.from(emb.subarray(0, D)), Array.from(emb.subarray(2 * D))); // the alias reads as the name
  } finally {
    tina.dispose();
  }
}));

test("a table solved against another prior graph is refused, as in Python", { skip: NEEDS_PYTHON }, () => withBundleCopy(async (bundle) => {
  runPython(`
import sys, numpy as np
from tina_edge.export.portable.name_table import write_name_table
from tina_edge.runtime import Personalizer
b = sys.argv[1]
D = Personalizer.from_bundle(b, threads=1).manifest.text_encoder.embedding_dim
v = np.random.default_rng(9).standard_normal((1, D))
write_name_table(b, ["narwhal"], v / np.linalg.norm(v), {"prior_sha256": "cd" * 32})`, bundle);
  const tina = await TinaEdge.fromBundle(bundle);
  try {
    await assert.rejects(tina.conditioningTexts(["narwhal"]),
      (e) => e instanceof BundleError && /solved against a prior graph with sha256 cdcdcdcdcdcd\.\.\., this bundle's is .*rebuild the table/.test(e.message));
    const known = await tina.conditioningTexts(["goldfish"]); // known names never read the table
    assert.equal(known.length, tina.manifest.text_encoder.embedding_dim);
  } finally {
    tina.dispose();
  }
}));
