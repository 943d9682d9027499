// Issue 24, a returning visit's ready: the classifier's session (template_inputs.model, run by predict
// only) is made on the first predict, once, not by fromBundle; preload (option or method) makes it sooner.
// onnxruntime-node behind a counting proxy, and onnxruntime-web in a worker thread.
import test from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import * as ortNode from "onnxruntime-node";
import * as ortWeb from "onnxruntime-web";
import { TinaEdge, TinaEdgeError, BundleError } from "../src/node.mjs";
import { TinaEdge as WebTinaEdge } from "../src/index.mjs";
import { serveStatic } from "../browser/static.mjs";
import { env, vectors, fixedImages, maxAbsDiff, JS, webWorkerLike } from "./helpers.mjs";

/** onnxruntime-node whose InferenceSession.create records each model's size, may wait on `gate` or fail once. */
function countingOrt() {
  const made = [];
  const released = [];
  const o = { made, released, gate: null, failNext: false, classifierBytes: null };
  o.ort = { ...ortNode, InferenceSession: { create: async (bytes, opts) => {
    const isClassifier = bytes.byteLength === o.classifierBytes;
    if (isClassifier && o.gate) await o.gate;
    if (isClassifier && o.failNext) {
      o.failNext = false;
      throw new Error("model graph could not be loaded (test)");
    }
    const s = await ortNode.InferenceSession.create(bytes, opts);
    made.push(bytes.byteLength);
    const release = s.release.bind(s);
    s.release = async () => { released.push(bytes.byteLength); return release(); };
    return s;
  } } };
  return o;
}

async function open(options = {}) {
  const o = countingOrt();
  const m = JSON.parse((await import("node:fs")).readFileSync(path.join(env().bundle, "manifest.json"), "utf8"));
  o.classifierBytes = m.files[m.portable.template_inputs.model].bytes;
  const tina = await TinaEdge.fromBundle(env().bundle, { ort: o.ort, ...options });
  const classifierSessions = () => o.made.filter((b) => b === o.classifierBytes).length;
  return { tina, o, classifierSessions, m };
}

const v = vectors();
const images = fixedImages(BigInt(v.images.seed), v.images.shape);
const c = v.cases[0];

test("fromBundle and personalize make no classifier session; the first predict makes it", async () => {
  const { tina, o, classifierSessions, m } = await open();
  try {
    assert.equal(tina.sessions.classifier, undefined);
    assert.equal(classifierSessions(), 0);
    assert.equal(m.portable.template_inputs.model in tina.timings.perSession, false);
    const clf = await tina.personalize(c.prompt, { seed: BigInt(c.seed) });
    assert.equal(classifierSessions(), 0, "personalize does not need the classifier's session");
    const pred = await clf.predict(images, { minProb: 0 });
    assert.equal(classifierSessions(), 1);
    assert.ok(tina.sessions.classifier);
    assert.ok(tina.timings.perSession[m.portable.template_inputs.model] > 0);
    assert.ok(maxAbsDiff(pred.flatMap((p) => Array.from(p.probabilities)), c.probabilities.flat()) <= 1e-6);
    await clf.predict(images);
    assert.equal(classifierSessions(), 1, "made once");
    assert.equal(o.made.length, Object.keys(tina.sessions).length);
  } finally {
    tina.dispose();
  }
});

test("predicts started together, of several classifiers, share one classifier session", async () => {
  const { tina, classifierSessions } = await open();
  try {
    const [a, b] = await Promise.all([tina.personalize(c.prompt, { seed: BigInt(c.seed) }), tina.personalize("dog, cat, lemon")]);
    const out = await Promise.all([a.predict(images), b.predict(images[0]), a.predict(images), b.predict(images[0])]);
    assert.equal(classifierSessions(), 1);
    assert.deepEqual(out[0].map((p) => p.label), out[2].map((p) => p.label));
    assert.ok(maxAbsDiff(out[0].flatMap((p) => Array.from(p.probabilities)), c.probabilities.flat()) <= 1e-6);
    assert.deepEqual(out[1][0].probabilities, out[3][0].probabilities);
  } finally {
    tina.dispose();
  }
});

test("dispose releases the classifier session, and one still being made when it arrives", async () => {
  const { tina, o } = await open();
  const clf = await tina.personalize("dog, cat");
  await clf.predict(images[0]);
  tina.dispose();
  assert.equal(o.released.filter((b) => b === o.classifierBytes).length, 1);
  assert.equal(o.released.length, o.made.length, "every session released");
  await assert.rejects(clf.predict(images[0]), (e) => e instanceof TinaEdgeError && /disposed/.test(e.message));
  await assert.rejects(tina.preload(), (e) => e instanceof TinaEdgeError && /disposed/.test(e.message));

  const second = await open();
  let release;
  second.o.gate = new Promise((r) => { release = r; });
  const clf2 = await second.tina.personalize("dog, cat");
  const pending = clf2.predict(images[0]);
  await new Promise((r) => setTimeout(r, 20));
  second.tina.dispose();
  release();
  await assert.rejects(pending, (e) => e instanceof TinaEdgeError && /disposed/.test(e.message));
  assert.equal(second.classifierSessions(), 1);
  assert.equal(second.o.released.filter((b) => b === second.o.classifierBytes).length, 1, "released when it arrived");
  assert.equal(second.tina.sessions.classifier, undefined);
});

test("a classifier session that fails to load is a BundleError at predict, and the next predict tries again", async () => {
  const { tina, o, classifierSessions } = await open();
  try {
    const clf = await tina.personalize("dog, cat");
    o.failNext = true;
    await assert.rejects(clf.predict(images[0]), (e) => e instanceof BundleError && /cannot load bundle file/.test(e.message));
    assert.equal(classifierSessions(), 0);
    const [p] = await clf.predict(images[0]);
    assert.ok(["dog", "cat"].includes(p.label));
    assert.equal(classifierSessions(), 1);
  } finally {
    tina.dispose();
  }
});

test("preload: true makes the classifier session before ready; preload() makes it once", async () => {
  const eager = await open({ preload: true });
  try {
    assert.ok(eager.tina.sessions.classifier);
    assert.equal(eager.classifierSessions(), 1);
    assert.ok(eager.tina.timings.perSession[eager.m.portable.template_inputs.model] > 0);
    await (await eager.tina.personalize("dog, cat")).predict(images[0]);
    assert.equal(eager.classifierSessions(), 1);
  } finally {
    eager.tina.dispose();
  }
  const lazy = await open();
  try {
    await Promise.all([lazy.tina.preload(), lazy.tina.preload()]);
    await lazy.tina.preload();
    assert.equal(lazy.classifierSessions(), 1);
  } finally {
    lazy.tina.dispose();
  }
});

test("inWorker (onnxruntime-web): predict after a lazy start, and preload(), give Python's probabilities", async () => {
  ortWeb.env.wasm.numThreads = 1;
  const srv = await serveStatic([["/b/", env().bundle]]);
  const remotes = [];
  try {
    for (const preload of ["option", "method", null]) {
      const remote = await WebTinaEdge.inWorker(`${srv.url}/b/`, { worker: webWorkerLike(path.join(JS, "test/worker-shim.mjs")), cache: false,
        preload: preload === "option" });
      remotes.push(remote);
      const model = remote.manifest.portable.template_inputs.model;
      assert.equal(model in remote.timings.perSession, preload === "option", `${preload}: made before ready`);
      if (preload === "method") await remote.preload();
      const clf = await remote.personalize(c.prompt, { seed: BigInt(c.seed) });
      const [pred, again] = await Promise.all([clf.predict(images, { minProb: 0 }), clf.predict(images)]);
      assert.ok(maxAbsDiff(pred.flatMap((p) => Array.from(p.probabilities)), c.probabilities.flat()) <= 1e-5, `${preload}`);
      assert.deepEqual(pred.map((p) => p.label), again.map((p) => p.label));
    }
  } finally {
    for (const r of remotes) await r.dispose();
    await srv.close();
  }
});
