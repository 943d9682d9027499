// Issue 20 cause 9: the JS package refuses what Python refuses. Shared vectors (written by
// tina_edge/export/portable/conformance.py from Python's own functions): prompt parsing, the manifest id
// (Python's canonical JSON) and the id check; then a hand-edited bundle, and the rules by hand.
import test from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseClasses, classKey, TinaEdge, PromptError, BundleError, TinaEdgeError, ImageError } from "../src/node.mjs";
import { skeleton, descriptionTexts, splitQualifier, classesFromLines } from "../src/prompt.mjs";
import { preprocessSpec, prepareImage } from "../src/preprocess.mjs";
import { parseManifest, parseExact, computeBundleId, pyFloat } from "../src/manifest.mjs";
import { env, vectors } from "./helpers.mjs";

const v = vectors();
const outcome = (p) => {
  try {
    const names = parseClasses(p);
    return { names, keys: names.map(classKey), skeletons: names.map(skeleton) };
  } catch (e) {
    if (!(e instanceof PromptError)) throw e;
    return { error: "PromptError", rule: e.rule, message: e.message };
  }
};

test("prompt vectors: Python's names, class keys and skeletons, or its refusal (rule and message)", () => {
  const rules = new Set();
  let accepted = 0;
  for (const c of v.prompts.cases) {
    const p = c.bytes !== undefined ? new Uint8Array(Buffer.from(c.bytes, "base64")) : c.prompt;
    const want = c.names ? { names: c.names, keys: c.keys, skeletons: c.skeletons }
      : { error: c.error, rule: c.rule, message: c.message };
    const got = outcome(p);
    if (c.rule === "type") { // Python names its own type ("int"); JS says "number"
      assert.equal(got.rule, "type", JSON.stringify(p));
      continue;
    }
    assert.deepEqual(got, want, JSON.stringify(p).slice(0, 200));
    if (c.rule) rules.add(c.rule);
    else accepted++;
  }
  assert.deepEqual([...rules].sort(), ["bidi", "confusable", "duplicate", "empty", "invisible", "mixed-script", "parentheses", "stray-comma",
    "too-long", "utf8", "zero-width"]);
  assert.ok(accepted >= 50, `${accepted} accepted prompts`);
});

test("classes-file vectors: Python's classes_from_lines (line breaks, comments, blank lines, a bad line by its number)", () => {
  assert.ok(v.prompts.classes_files.length >= 10);
  for (const c of v.prompts.classes_files) {
    const want = c.names ? { names: c.names } : { rule: c.rule, message: c.message };
    let got;
    try {
      got = { names: classesFromLines(c.text) };
    } catch (e) {
      assert.ok(e instanceof PromptError, String(e));
      got = { rule: e.rule, message: e.message };
    }
    assert.deepEqual(got, want, JSON.stringify(c.text));
  }
});

test("class key vectors: Python's class_key and skeleton (case folding, widths, separators, look-alikes)", () => {
  assert.ok(v.prompts.keys.length >= 20);
  for (const { name, key, skeleton: sk, split } of v.prompts.keys) {
    assert.deepEqual([classKey(name), skeleton(name)], [key, sk], JSON.stringify(name));
    assert.deepEqual(splitQualifier(name), split, JSON.stringify(name)); // issue 22: "mouse (rodent)"
  }
});

test("description vectors: Python's description_texts (cleaning, matching by class key, refusals and messages)", () => {
  assert.ok(v.prompts.descriptions.length >= 10);
  for (const c of v.prompts.descriptions) {
    let got;
    try {
      got = { texts: descriptionTexts(c.names, c.descriptions) };
    } catch (e) {
      assert.ok(e instanceof PromptError, String(e));
      got = { error: e.message };
    }
    assert.deepEqual(got, c.texts ? { texts: c.texts } : { error: c.error }, JSON.stringify(c.descriptions).slice(0, 80));
  }
});

test("issue-20 prompt rules by hand: separators, joiners, look-alike capitals, rules named", () => {
  assert.deepEqual(parseClasses("dog, cat\uff0chorse"), ["dog", "cat", "horse"]);
  assert.deepEqual(parseClasses("\u0441\u0430\u0442, cat"), ["\u0441\u0430\u0442", "cat"]); // small т: no Latin look-alike
  assert.throws(() => parseClasses("\u0421\u0410\u0422, CAT"), (e) => e.rule === "confusable" &&
    e.message.includes("\u0422 U+0422 Cyrillic")); // capital Т looks like T
  assert.throws(() => parseClasses("cat, c\u0430t"), (e) => e.rule === "mixed-script" &&
    e.message === 'class name 2 ("c\u0430t") mixes Cyrillic and Latin letters in one word (\u0430 U+0430 is Cyrillic); type it in one alphabet');
  assert.deepEqual(parseClasses("dog\u00adgie, cat"), ["doggie", "cat"]); // soft hyphen dropped
  assert.throws(() => parseClasses("d\u200dog, cat"), (e) => e.rule === "zero-width");
  assert.deepEqual(parseClasses("\u{1f468}\u200d\u{1f469}\u200d\u{1f467}, cat").length, 2); // joiners kept for emoji
  assert.throws(() => parseClasses(["dog", "\ud800"]), (e) => e.rule === "utf8");
  assert.throws(() => parseClasses(42), (e) => e instanceof PromptError && e.rule === "type");
});

test("preprocessing policy vectors: Python's PreprocessSpec.from_dict accepts and refuses the same, with its message", () => {
  const { policies, sizes } = v.preprocess_rules;
  let ok = 0;
  for (const c of policies) {
    let got;
    try {
      got = { spec: preprocessSpec(parseExact(c.json)) };
    } catch (e) {
      got = { error: "ValueError", message: e.message };
    }
    const want = c.spec ? { spec: c.spec } : { error: c.error, message: c.message };
    assert.deepEqual(got, want, c.json);
    if (c.spec) ok++;
  }
  assert.ok(ok >= 5 && policies.length - ok >= 20);
  for (const c of sizes) {
    const grey = { data: new Uint8Array(Math.max(c.width * c.height, 0)), width: c.width, height: c.height };
    let got;
    try {
      prepareImage(grey, { size: 8 });
      got = { ok: true };
    } catch (e) {
      assert.ok(e instanceof ImageError, String(e));
      got = { ok: false, message: e.message };
    }
    const { width, height, ...want } = c;
    assert.deepEqual(got, want, `${width}x${height}`);
  }
});

test("a manifest's and a model's preprocess policy go through the one validator", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tina-js-pre-"));
  try {
    const src = env().bundle;
    for (const f of fs.readdirSync(src)) if (f !== "manifest.json") fs.symlinkSync(path.join(src, f), path.join(dir, f));
    const d = JSON.parse(fs.readFileSync(path.join(src, "manifest.json"), "utf8"));
    const size = d.template.input.height;
    const write = async (pre) => {
      d.template.input.preprocess = pre;
      delete d.bundle_id;
      const { tree } = await parseManifest(new TextEncoder().encode(JSON.stringify(d)));
      d.bundle_id = await computeBundleId(tree);
      fs.writeFileSync(path.join(dir, "manifest.json"), JSON.stringify(d));
    };
    await write({ size, crop_fraction: 0.3 });
    await assert.rejects(TinaEdge.fromBundle(dir, { loadTemplate: false }), (e) => e instanceof BundleError &&
      e.message === "manifest field template.input.preprocess is invalid (crop_fraction must be a number in [0.5, 1], " +
      "got 0.3); re-export the bundle");
    await write({ size, mean: 1 });
    await assert.rejects(TinaEdge.fromBundle(dir, { loadTemplate: false }), /unknown keys \['mean'\]/);
    if (size >= 8 && size <= 1024 && d.template.input.width === size) {
      await write({ size, interpolation: "nearest" });
      const t = await TinaEdge.fromBundle(dir, { loadTemplate: false });
      assert.equal(t.manifest.template.input.preprocess.interpolation, "nearest");
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("a model's 'preprocess' metadata goes through the one validator (Python's model_meta.check_preprocess)", async () => {
  const { decodeModel } = await import("../src/classifier.mjs");
  const { loadModel, ModelFileError } = await import("../src/node.mjs");
  const bytes = fs.readFileSync(path.join(env().models, "case0.onnx"));
  const withPolicy = (pre) => {
    const m = decodeModel(bytes);
    m.metadata_props = [...m.metadata_props.filter((p) => p.key !== "preprocess"), { key: "preprocess", value: pre }];
    return m.$type.encode(m).finish();
  };
  for (const [pre, why] of [['{"size": 64, "crop_fraction": NaN}', "crop_fraction must be a number in [0.5, 1], got nan"],
    ['{"size": 64.0}', "preprocessing size must be an integer in 8..1024, got 64.0"], ['[64]', "preprocessing must be a JSON object, got list"]]) {
    await assert.rejects(loadModel(withPolicy(pre)), (e) => e instanceof ModelFileError &&
      e.message === `model.onnx: its 'preprocess' metadata is invalid (${why}); re-create the model with \`tina-edge personalize\``, pre);
  }
  const model = await loadModel(withPolicy('{"size": 64, "interpolation": "nearest"}'));
  assert.deepEqual(model.preprocess, { size: 64, resize: "shorter_side", crop: "center", crop_fraction: 1, interpolation: "nearest",
    alpha: "white", grey: "replicate" });
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
  const t0 = performance.now();
  for (const [w, h] of [[100000, 1], [1, 100000]]) {
    assert.throws(() => prepareImage({ data: new Uint8Array(w * h * 3), width: w, height: h }, { size: 128 }),
      (e) => e instanceof ImageError && e.message === `the image is ${w}x${h} pixels, a strip longer than 50:1; crop it to the part to classify first`);
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
