// Word senses (issue 22) in JS against the vectors Python wrote for the same bundle: the texts encoded
// for ambiguous names, each name's sense report, "seen" and the novelty warnings; and a small table by hand.
import test from "node:test";
import assert from "node:assert/strict";
import { TinaEdge } from "../src/node.mjs";
import { SenseTable } from "../src/senses.mjs";
import { parseClasses } from "../src/prompt.mjs";
import { env, vectors } from "./helpers.mjs";

const v = vectors();
const tina = await TinaEdge.fromBundle(env().bundle);

test("ambiguous names read in Python's senses: texts, sense reports, seen/new and warnings", async () => {
  assert.ok(v.senses.length >= 5);
  for (const c of v.senses) {
    const names = parseClasses(c.prompt);
    const [texts, res] = await tina._senses(names, [...names], null);
    assert.deepEqual(texts, c.texts, c.prompt);
    assert.deepEqual(res.map((r) => (r ? r.toDict() : null)), c.senses, c.prompt);
    const nov = await tina.novelty(c.prompt);
    assert.deepEqual(nov.names.map((n) => n.known), c.known, c.prompt);
    assert.deepEqual(nov.names.map((n) => n.warning ?? null), c.warnings, c.prompt);
  }
  if (tina.manifest.text_encoder.senses) assert.ok(v.senses.some((c) => c.senses.some(Boolean)), "a bundle with a table reads some names in a sense");
});

const TABLE = {
  format: "tina-edge-senses", version: 1,
  words: {
    mouse: [["n02330245", "rodent", "animal", 1, "rodent animal", "0 1"], ["n03793489", "device", "artifact", 4, "computer device", "2 3"]],
    crane: [["n03126707", "device", "artifact", 4, "device", "11"], ["n02012849", "bird", "animal", 5, "bird animal", "12"]],
    pig: [["n02395003", "mammal", "animal", 1, "mammal", "6 1"], ["n03935335", "block", "artifact", 5, "iron", "7"]],
  },
  vocabulary: { mouse: "n03793489" },
  nouns: { animal: "rat\t0 1\ncow\t8 1", artifact: "keyboard\t3\ncar\t9" },
};

test("a small table: qualifier, family and kind votes, two passes (the Python test's cases)", async () => {
  const t = await SenseTable.fromBytes(new TextEncoder().encode(JSON.stringify(TABLE)));
  const r = (p) => t.resolve(parseClasses(p)).map((x) => (x ? [x.sense.wnid, x.how] : null));
  assert.deepEqual(r("mouse, car")[0], ["n02330245", "most frequent visible sense"]);
  assert.deepEqual(r("Mouse(Computer), car")[0], ["n03793489", "qualifier"]);
  assert.deepEqual(r("mouse (car), car")[0], ["n03793489", "qualifier: car is a kind of artifact"]);
  assert.deepEqual(r("mouse, keyboard")[0], ["n03793489", "context: keyboard"]);
  assert.deepEqual(r("crane, pig"), [["n02012849", "context: pig"], ["n02395003", "most frequent visible sense"]]);
  assert.deepEqual(r("crane, cows")[0], ["n02012849", "context: cows"]);
  const { gzipSync } = await import("node:zlib");
  const gz = await SenseTable.fromBytes(gzipSync(Buffer.from(JSON.stringify(TABLE))));
  assert.equal(gz.vocabulary.get("mouse"), "n03793489");
  await assert.rejects(SenseTable.fromBytes(gzipSync(Buffer.alloc(33 * 1024 * 1024, 32))), /inflates to more than 33554432 bytes/);
  await assert.rejects(SenseTable.fromBytes(new TextEncoder().encode(JSON.stringify({ ...TABLE, format: "x" }))), /format 'x' version 1/);
});
