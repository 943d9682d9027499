// The JS package against the vectors the Python runtime wrote for the same bundle.
import test from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { TinaEdge, PersonalizedClassifier, readModelMetadata } from "../src/node.mjs";
import { decodeModel } from "../src/classifier.mjs";
import { prepareImage } from "../src/node.mjs";
import { env, vectors, fixedImages, maxAbsDiff } from "./helpers.mjs";
import { CLASS_EMB, CONTRACTS, PRIOR } from "../src/contracts.mjs";

const TOL = 1e-5;
const v = vectors();
const tina = await TinaEdge.fromBundle(env().bundle);
const images = fixedImages(BigInt(v.images.seed), v.images.shape);

test("the bundle is the one the vectors were written for", () => {
  assert.equal(tina.manifest.bundle_id, v.bundle_id);
  assert.deepEqual(tina.inputSize, v.images.shape.slice(1, 3)); // read from the manifest, never assumed
});

for (const [i, c] of v.cases.entries()) {
  test(`case ${i} (${c.labels.length} classes, seed ${c.seed}): tokens, embeddings, noise, params, logits`, async () => {
    assert.deepEqual(tina.tokenize(c.texts), c.token_ids);
    const emb = await tina.encode(c.texts);
    assert.ok(maxAbsDiff(emb, c.embeddings.flat()) <= TOL, "embeddings");
    const clf = await tina.personalize(c.prompt, { seed: BigInt(c.seed), descriptions: c.descriptions });
    assert.deepEqual(clf.labels, c.labels);
    for (const [name, t] of Object.entries(c.params)) {
      assert.deepEqual(clf.params[name].shape, t.shape, name);
      const d = maxAbsDiff(clf.params[name].data, t.data);
      assert.ok(d <= TOL, `${name}: max abs diff ${d}`);
    }
    const pred = await clf.predict(images);
    // logits sum 1,281 products (parameters within TOL, features of size ~10): tolerance relative to the largest
    const dl = maxAbsDiff(pred.flatMap((p) => Array.from(p.logits)), c.logits.flat());
    const scale = Math.max(1, ...c.logits.flat().map(Math.abs));
    assert.ok(dl <= TOL * scale, `logits: max abs diff ${dl} (largest logit ${scale})`);
    assert.ok(maxAbsDiff(pred.flatMap((p) => Array.from(p.probabilities)), c.probabilities.flat()) <= TOL, "probabilities");
    const argmax = c.probabilities.map((row) => row.indexOf(Math.max(...row)));
    assert.deepEqual(pred.map((p) => p.index), argmax);
  });
}

test("node + onnxruntime-node is bit-identical to Python: every case's embeddings and parameters", async (t) => {
  if (tina.backend !== "onnxruntime-node") return t.skip(`backend ${tina.backend}: only onnxruntime-node is held to Python's bits`);
  for (const [i, c] of v.cases.entries()) {
    tina.clearCache(); // each text encoded now, alone, as Python encodes it
    const emb = await tina.encode(c.texts);
    assert.deepEqual(Array.from(emb), c.embeddings.flat().map(Math.fround), `case ${i}: embeddings`);
    tina.clearCache();
    const clf = await tina.personalize(c.prompt, { seed: BigInt(c.seed), descriptions: c.descriptions });
    for (const [name, want] of Object.entries(c.params)) {
      assert.deepEqual(Array.from(clf.params[name].data), want.data.map(Math.fround), `case ${i}: ${name}`);
    }
  }
});

test("the prior graph (portable.prior): Python's prior rows, computed once and fed to generate.onnx", async (t) => {
  const prior = tina.manifest.portable.prior;
  if (!v.prior) {
    assert.equal(prior, undefined);
    assert.equal(tina.sessions.prior, undefined);
    return t.skip("this bundle has its prior inside the denoiser (no portable.prior)");
  }
  assert.deepEqual([prior.inputs, prior.outputs], CONTRACTS.prior);
  assert.deepEqual(tina.manifest.portable.generate.inputs, CONTRACTS.generate_on_prior[0]);
  const [, K, R] = v.prior.shape;
  const D = tina.manifest.denoiser.embedding_dim;
  const k = v.prior.texts.length;
  const classEmb = new Float32Array(K * D);
  classEmb.set(await tina.encode(v.prior.texts));
  const rows = (await tina.sessions.prior.run({ [CLASS_EMB]: new tina.ort.Tensor("float32", classEmb, [1, K, D]) }))[PRIOR];
  assert.deepEqual(Array.from(rows.dims), [1, K, R]);
  const d = maxAbsDiff(rows.data.subarray(0, k * R), v.prior.rows);
  assert.ok(d <= TOL, `prior rows: max abs diff ${d}`);
});

test("the graph value names are Python's (tina_edge/runtime/contracts.py, declared once)", () => {
  for (const [role, io] of Object.entries(CONTRACTS)) assert.deepEqual(io, v.contracts[role], role);
});

test("the standalone model.onnx written in JS holds Python's tensors and labels", async () => {
  const c = v.cases[0];
  const clf = await tina.personalize(c.prompt, { seed: BigInt(c.seed) });
  const js = decodeModel(clf.toModelBytes());
  const py = decodeModel(fs.readFileSync(path.join(env().models, c.model)));
  const meta = readModelMetadata(clf.toModelBytes());
  assert.deepEqual(JSON.parse(meta.labels), c.labels);
  assert.equal(meta.bundle_id, v.bundle_id);
  const pyInit = Object.fromEntries(py.graph.initializer.map((t) => [t.name, t]));
  for (const t of js.graph.initializer) {
    const p = pyInit[t.name];
    assert.ok(p, t.name);
    assert.deepEqual(t.dims.map(Number), p.dims.map(Number), t.name);
    const a = new Float32Array(new Uint8Array(t.raw_data).buffer);
    const b = p.raw_data?.length ? new Float32Array(new Uint8Array(p.raw_data).buffer) : Float32Array.from(p.float_data);
    if (t.data_type === 1) assert.ok(maxAbsDiff(a, b) <= TOL, t.name);
  }
  assert.deepEqual(js.graph.node.map((n) => n.op_type), py.graph.node.map((n) => n.op_type));
  assert.deepEqual(js.graph.output.map((o) => o.type.tensor_type.shape.dim[1].dim_value),
    py.graph.output.map((o) => o.type.tensor_type.shape.dim[1].dim_value));
});

test("a head written by Python predicts the same in JS; a JS head round-trips", async () => {
  const c = v.cases[1];
  const head = JSON.parse(fs.readFileSync(path.join(env().models, c.model.replace(".onnx", ".head.json")), "utf8"));
  const fromPy = PersonalizedClassifier.fromHead(tina, head);
  assert.deepEqual(fromPy.labels, c.labels);
  const pred = await fromPy.predict(images);
  assert.ok(maxAbsDiff(pred.flatMap((p) => Array.from(p.logits)), c.logits.flat()) <= TOL);
  const again = PersonalizedClassifier.fromHead(tina, JSON.stringify(fromPy.toHead()));
  assert.deepEqual(Array.from(again.params["fc.weight"] ? again.params["fc.weight"].data : Object.values(again.params)[0].data),
    Array.from(fromPy.params["fc.weight"] ? fromPy.params["fc.weight"].data : Object.values(fromPy.params)[0].data));
  assert.throws(() => PersonalizedClassifier.fromHead(tina, { ...head, bundle_id: "0000" }), /generated with bundle/);
});

test("prompts are checked like Python's", async () => {
  await assert.rejects(tina.personalize("dog"), /2 to/);
  await assert.rejects(tina.personalize("dog, , cat"), /empty/);
  await assert.rejects(tina.personalize("Dog, dog"), /named twice/);
});

test("text embeddings are cached by text: same values, bounded, clearable", async () => {
  const c = v.cases[0];
  tina.clearCache();
  const a = await tina.encode(c.texts);
  assert.equal(tina._cache.size, new Set(c.texts).size);
  const b = await tina.encode(c.texts);
  assert.deepEqual(Array.from(b), Array.from(a));
  const size = tina.cacheSize;
  tina.cacheSize = 2;
  await tina.encode(["alpha", "beta", "gamma"]);
  assert.equal(tina._cache.size, 2);
  assert.ok(!tina._cache.has("alpha") && tina._cache.has("gamma")); // least recently used goes first
  tina.cacheSize = size;
  tina.clearCache();
  assert.equal(tina._cache.size, 0);
});

// Photo preprocessing (manifest template.input.preprocess): Python's runtime.preprocess.prepare on
// fixed images of odd sizes, with alpha (0, 255 and between) and grey. Tolerance: 0 (byte-identical;
// preprocess.mjs uses Pillow's integer arithmetic).
test("photo preprocessing gives Python's bytes (odd sizes, alpha, grey, up/downscale, bicubic)", () => {
  assert.ok(v.preprocess.length >= 7);
  const modes = new Set();
  for (const c of v.preprocess) {
    const data = new Uint8Array(Buffer.from(c.data, "base64"));
    assert.equal(data.length, c.width * c.height * c.channels);
    const got = prepareImage({ data, width: c.width, height: c.height }, c.spec);
    const want = new Uint8Array(Buffer.from(c.expected, "base64"));
    assert.deepEqual([got.height, got.width, 3], c.expected_shape);
    let diff = 0;
    for (let i = 0; i < want.length; i++) diff = Math.max(diff, Math.abs(want[i] - got.data[i]));
    assert.equal(diff, 0, `${c.mode} ${c.width}x${c.height} ${JSON.stringify(c.spec)}: max abs diff ${diff}`);
    modes.add(c.mode);
  }
  assert.deepEqual([...modes].sort(), ["L", "LA", "RGB", "RGBA"]);
});

test("predict prepares photos of any size as the bundle says (photo bundles)", { skip: !tina.manifest.template.input.preprocess &&
  "this bundle has no template.input.preprocess (set TINA_EDGE_BUNDLE to a photo bundle)" }, async () => {
  const c = v.cases[0];
  const clf = await tina.personalize(c.prompt, { seed: BigInt(c.seed) });
  const photo = v.preprocess[v.preprocess.length - 1]; // the bundle's own spec
  const raw = { data: new Uint8Array(Buffer.from(photo.data, "base64")), width: photo.width, height: photo.height };
  const prepared = prepareImage(raw, tina.manifest.template.input.preprocess);
  const [a] = await clf.predict(raw);
  const [b] = await clf.predict(prepared);
  assert.deepEqual(Array.from(a.probabilities), Array.from(b.probabilities));
  const d = maxAbsDiff(a.probabilities, c.photo_probabilities.flat()); // Python's predict on the same photo
  assert.ok(d <= TOL, `photo probabilities: max abs diff ${d}`);
  assert.throws(() => prepareImage({ data: new Uint8Array(10), width: 2, height: 2 }, { size: 8 }), /values per pixel/);
});

test("a JS-written model.onnx carries Python's metadata_props, preprocess included (all but producer)", async () => {
  for (const c of v.cases) {
    const clf = await tina.personalize(c.prompt, { seed: BigInt(c.seed), descriptions: c.descriptions });
    const js = readModelMetadata(clf.toModelBytes());
    const py = readModelMetadata(fs.readFileSync(path.join(env().models, c.model)));
    assert.match(js.producer, /^tina-edge-js /);
    delete js.producer;
    delete py.producer;
    assert.deepEqual(js, py, c.prompt);
    assert.deepEqual(Object.keys(js), Object.keys(py)); // the same order too
    if (tina.manifest.template.input.preprocess) assert.ok(js.preprocess, "photo bundles record how to prepare photos");
  }
});

test("novelty warnings: seen/new names, nearest known names and confusable pairs as Python reports them", async () => {
  for (const { prompt, report } of v.novelty) {
    const got = await tina.novelty(prompt);
    assert.deepEqual(got.seen, report.seen, prompt);
    assert.deepEqual(got.new, report.new, prompt);
    assert.deepEqual(got.confusable.map(([a, b]) => [a, b]), report.confusable.map(([a, b]) => [a, b]), prompt);
    got.names.forEach((n, i) => {
      assert.deepEqual(n.nearest.map(([m]) => m), report.names[i].nearest.map(([m]) => m), `${prompt}: ${n.name}`);
      n.nearest.forEach(([, s], j) => assert.ok(Math.abs(s - report.names[i].nearest[j][1]) <= 1e-5, `${n.name}: cosine ${s}`));
    });
  }
});

test("predict(images, {minProb}): below it an image is 'unknown' with index -1; out of range is refused", async () => {
  const clf = await tina.personalize(v.cases[0].prompt, { seed: BigInt(v.cases[0].seed) });
  const plain = await clf.predict(images);
  const top = plain.map((p) => Math.max(...p.probabilities));
  const cut = (Math.min(...top) + Math.max(...top)) / 2;
  const gated = await clf.predict(images, { minProb: cut });
  gated.forEach((p, i) => {
    if (top[i] < Math.fround(cut)) assert.deepEqual([p.label, p.index], ["unknown", -1]);
    else assert.deepEqual([p.label, p.index], [plain[i].label, plain[i].index]);
  });
  for (const bad of [1.5, -0.1, NaN, "0.5"]) await assert.rejects(clf.predict(images, { minProb: bad }), /minProb must be a number from 0 to 1/);
});

test("more classes than K_max: groups of balanced sizes; over 1000 classes refused with Python's sentence", async () => {
  const { groupSizes, maxClasses } = await import("../src/groups.mjs");
  assert.deepEqual(groupSizes(50, 20), [17, 17, 16]);
  assert.deepEqual(groupSizes(20, 20), [20]);
  assert.equal(tina.maxClasses, maxClasses(tina.kMax));
  const names = Array.from({ length: tina.maxClasses + 1 }, (_, i) => `c${i}`);
  await assert.rejects(tina.personalize(names), (e) => e.name === "PromptError" && e.message ===
    `the prompt has ${names.length} classes but this bundle allows 2 to ${tina.maxClasses}; split the task into prompts of at most ${tina.maxClasses} classes`);
});
