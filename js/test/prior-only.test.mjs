// A prior-only bundle (`tina-edge convert --prior-only`): the JS package skips generate.onnx and gives
// the same floats it would (bit for bit), and Python's parameters (conformance vectors, node = Python).
import test from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { TinaEdge } from "../src/node.mjs";
import { priorOnlyParams, isPriorOnly } from "../src/prior-only.mjs";
import { portableNormal } from "../src/noise.mjs";
import { env, maxAbsDiff } from "./helpers.mjs";
import { CLASS_EMB, CLASS_MASK, NOISE, PARAMS, PRIOR } from "../src/contracts.mjs";

const po = env().priorOnly;
const skip = po ? false : "the bundle has no text prior to keep alone";
const TOL = 1e-5; // conformance.test.mjs: the text encoder's embeddings agree to ~1e-7, not bit for bit
const v = po ? JSON.parse(fs.readFileSync(po.vectors, "utf8")) : null;
const tina = po ? await TinaEdge.fromBundle(po.bundle) : null;

test("the manifest says prior alone and generate.onnx is neither loaded nor run", { skip }, () => {
  assert.equal(isPriorOnly(tina.manifest), true);
  assert.equal(tina.manifest.portable.prior.only, true);
  assert.equal(tina.sessions.generate, undefined);
});

test("the shortcut gives generate.onnx's params bit for bit (node, several prompts and seeds)", { skip }, async () => {
  const m = tina.manifest;
  const K = m.denoiser.k_max, D = m.denoiser.embedding_dim, P = m.denoiser.param_count;
  const gen = await tina.ort.InferenceSession.create(fs.readFileSync(path.join(po.bundle, m.portable.generate.model)));
  for (const [texts, seed] of [[["cat", "dog"], 0n], [["sea cucumber", "obelisk", "tabby cat", "goldfish"], 7n],
    [Array.from({ length: K }, (_, i) => `thing ${i}`), 2n ** 64n - 1n]]) {
    const classEmb = new Float32Array(K * D);
    classEmb.set(await tina.encode(texts));
    const mask = new Float32Array(K).fill(1, 0, texts.length);
    const ce = new tina.ort.Tensor("float32", classEmb, [1, K, D]);
    const prior = (await tina.sessions.prior.run({ [CLASS_EMB]: ce }))[PRIOR];
    const full = (await gen.run({ [CLASS_EMB]: ce, [CLASS_MASK]: new tina.ort.Tensor("float32", mask, [1, K]),
      [NOISE]: new tina.ort.Tensor("float32", portableNormal(seed, P), [1, P]), [PRIOR]: prior }))[PARAMS].data;
    const short = priorOnlyParams(prior.data, mask, m.template.layout, 1, K, prior.dims[2], P);
    assert.deepEqual(Buffer.from(short.buffer), Buffer.from(full.buffer.slice(full.byteOffset, full.byteOffset + full.byteLength)),
      `${texts.length} classes, seed ${seed}`);
  }
});

test("node's parameters are Python's (conformance vectors of the prior-only bundle)", { skip }, async () => {
  assert.equal(tina.manifest.bundle_id, v.bundle_id);
  for (const c of v.cases) {
    const clf = await tina.personalize(c.prompt, { seed: BigInt(c.seed), descriptions: c.descriptions });
    for (const [name, t] of Object.entries(c.params)) {
      const d = maxAbsDiff(clf.params[name].data, t.data);
      assert.ok(d <= TOL, `${c.labels.length} classes, ${name}: max abs diff ${d}`);
    }
  }
});

test("the seed changes nothing", { skip }, async () => {
  const a = await tina.personalize("cat, dog, goldfish", { seed: 0 });
  const b = await tina.personalize("cat, dog, goldfish", { seed: 123456789n });
  for (const name of Object.keys(a.params)) assert.deepEqual(Array.from(a.params[name].data), Array.from(b.params[name].data));
});
