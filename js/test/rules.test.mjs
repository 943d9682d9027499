// Issue 20 cause 9: the JS package refuses what Python refuses. Shared vectors (written by
// tina_edge/export/portable/conformance.py from Python's own functions): prompt parsing, the manifest id
// (Python's canonical JSON) and the id check; then a hand-edited bundle, and the rules by hand.
import test from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseClasses, TinaEdge, PromptError, BundleError, TinaEdgeError } from "../src/node.mjs";
import { parseManifest, computeBundleId, pyFloat } from "../src/manifest.mjs";
import { env, vectors } from "./helpers.mjs";

const v = vectors();
const outcome = (p) => {
  try {
    return { names: parseClasses(p) };
  } catch (e) {
    if (!(e instanceof PromptError)) throw e;
    return { error: "PromptError" };
  }
};

test("prompt vectors: the same names (or a refusal) as Python's parse_classes", (t) => {
  let checked = 0;
  for (const c of v.prompts.cases) {
    if (c.new_rule && !v.prompts.new_rules) continue; // this Python predates the issue-20 rules: checked by hand below
    const want = c.names ? { names: c.names } : { error: c.error };
    assert.deepEqual(outcome(c.prompt), want, JSON.stringify(c.prompt));
    checked++;
  }
  if (!v.prompts.new_rules) t.diagnostic("Python's prompt.py predates the issue-20 rules: the new-rule vectors are checked by hand only");
  assert.ok(checked >= 20);
});

test("issue-20 prompt rules: NFKC, Unicode commas, invisible and bidi characters, look-alike letters", () => {
  assert.deepEqual(parseClasses("dog, cat，horse"), ["dog", "cat", "horse"]);
  assert.deepEqual(parseClasses("dog、cat﹐bird､fish"), ["dog", "cat", "bird", "fish"]);
  assert.deepEqual(parseClasses("ｄｏｇ, cat"), ["dog", "cat"]);
  assert.throws(() => parseClasses("dog, ｄｏｇ"), /named twice/);
  assert.throws(() => parseClasses("cat, c\u0430t"), /named twice/); // Cyrillic а
  assert.throws(() => parseClasses("Straße, STRASSE"), /named twice/);
  for (const bad of ["dog\u200b, cat", "d\u200bog, cat", "\ufeffdog, cat", "dog\u00adgie, cat", "dog, cat\u2060"]) {
    assert.throws(() => parseClasses(bad), (e) => e instanceof PromptError && /invisible characters \(U\+/.test(e.message), JSON.stringify(bad));
  }
  for (const bad of ["\u202edog, cat", "dog, c\u2066at", "dog\u200f, cat"]) {
    assert.throws(() => parseClasses(bad), /bidirectional control/, JSON.stringify(bad));
  }
  assert.deepEqual(parseClasses("кот, собака"), ["кот", "собака"]); // one script is fine
  assert.deepEqual(parseClasses("👨\u200d👩\u200d👧, cat").length, 2); // joiners kept for emoji
  assert.throws(() => parseClasses(["dog", "\ud800"]), /not valid Unicode/);
});

test("manifest vectors: Python's bundle id for tricky JSON, and its accept/refuse", async () => {
  for (const c of v.manifests.ids) {
    const bytes = new Uint8Array(Buffer.from(c.json, "base64"));
    const { id } = await parseManifest(bytes);
    assert.equal(id, c.id, Buffer.from(bytes).toString("utf8").slice(0, 80));
  }
  for (const [i, c] of v.manifests.checks.entries()) {
    const bytes = new Uint8Array(Buffer.from(c.data, "base64"));
    let got;
    try {
      const { manifest, id } = await parseManifest(bytes);
      got = manifest.bundle_id === id ? { id } : { error: "BundleError", stale_id: true };
    } catch (e) {
      assert.ok(e instanceof BundleError, `check ${i}: ${e}`);
      got = { error: "BundleError" };
    }
    const want = { ...c };
    delete want.data;
    assert.deepEqual(got, want, `manifest check ${i}`);
  }
  assert.equal(pyFloat(1e-5), "1e-05");
  assert.equal(pyFloat(1e16), "1e+16");
  assert.equal(pyFloat(100), "100.0");
});

test("a hand-edited manifest (stale bundle_id) is refused before any file is used", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tina-js-edit-"));
  try {
    const src = env().bundle;
    for (const f of fs.readdirSync(src)) fs.symlinkSync(path.join(src, f), path.join(dir, f));
    const text = fs.readFileSync(path.join(src, "manifest.json"), "utf8");
    const id = JSON.parse(text).bundle_id;
    fs.rmSync(path.join(dir, "manifest.json"));
    fs.writeFileSync(path.join(dir, "manifest.json"), text.replace(/,\n/g, ",\n\n ")); // whitespace alone keeps the id
    const t = await TinaEdge.fromBundle(dir, { loadTemplate: false });
    assert.equal(t.manifest.bundle_id, id);
    // a real edit, the id left stale (JSON.stringify would be one too: it writes 1.0 as 1)
    fs.writeFileSync(path.join(dir, "manifest.json"), text.replace(/"default_steps": (\d+)/, (_, n) => `"default_steps": ${Number(n) + 1}`));
    await assert.rejects(TinaEdge.fromBundle(dir), (e) => e instanceof BundleError && e instanceof TinaEdgeError &&
      /records bundle_id "[0-9a-f]{16}" but its content hashes to [0-9a-f]{16}/.test(e.message));
    const d = JSON.parse(fs.readFileSync(path.join(dir, "manifest.json"), "utf8"));
    assert.notEqual(await computeBundleId((await parseManifest(fs.readFileSync(path.join(dir, "manifest.json")))).tree), d.bundle_id);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("preprocessing bounds every intermediate: a 1x100000 strip is refused at once, an ImageError", async () => {
  const { prepareImage } = await import("../src/preprocess.mjs");
  const { ImageError } = await import("../src/errors.mjs");
  const t0 = performance.now();
  for (const [w, h] of [[100000, 1], [1, 100000]]) {
    assert.throws(() => prepareImage({ data: new Uint8Array(w * h * 3), width: w, height: h }, { size: 128 }),
      (e) => e instanceof ImageError && /aspect ratio is too extreme/.test(e.message));
  }
  assert.throws(() => prepareImage({ data: new Uint8Array(3), width: 9000, height: 9000 }, { size: 128 }), /at most 64 megapixels/);
  assert.ok(performance.now() - t0 < 2000);
  const ok = prepareImage({ data: new Uint8Array(400 * 100 * 3), width: 400, height: 100 }, { size: 32 }); // 4:1 is fine
  assert.deepEqual([ok.width, ok.height], [32, 32]);
});

test("a head read from text keeps a seed above 2**53 exact (metadata and head text as Python's)", async () => {
  const { PersonalizedClassifier } = await import("../src/classifier.mjs");
  const tina = await TinaEdge.fromBundle(env().bundle, { loadTemplate: true });
  const clf = await tina.personalize("dog, cat", { seed: "18446744073709551557" });
  assert.equal(clf.sampler.seed, "18446744073709551557");
  const text = clf.toHeadText();
  assert.match(text, /"seed": 18446744073709551557,/);
  const back = PersonalizedClassifier.fromHead(tina, text);
  assert.equal(back.sampler.seed, "18446744073709551557");
  assert.match(back.metadata().sampler, /"seed": 18446744073709551557,/);
  assert.throws(() => PersonalizedClassifier.fromHead(tina, "{"), /not valid JSON/);
  tina.dispose();
});
