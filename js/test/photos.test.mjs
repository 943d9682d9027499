// Photo prompts (issue 21) in JS against the vectors Python wrote: the same fixed photos through the
// bundle's trunk and the closed-form fusion give Python's params (1e-5), probabilities and metadata,
// and the same bad requests are refused with Python's messages.
import test from "node:test";
import assert from "node:assert/strict";
import { TinaEdge } from "../src/node.mjs";
import { photoHeadRows, fusionWeight, extractTrunk } from "../src/photos.mjs";
import { decodeModel } from "../src/classifier.mjs";
import { vectors, fixedImages, maxAbsDiff } from "./helpers.mjs";
import { env } from "./helpers.mjs";

const TOL = 1e-5;
const v = vectors();
const ph = v.photos;
const tina = await TinaEdge.fromBundle(env().bundle);
const images = fixedImages(BigInt(v.images.seed), v.images.shape);
const photos = ph ? fixedImages(BigInt(ph.seed), ph.shape) : [];
const pick = (spec) => Object.fromEntries(Object.entries(spec).map(([n, idx]) => [n, idx.map((j) => photos[j])]));

test("the vectors hold photo-prompt cases (the default bundle is a trunk bundle)", () => {
  assert.ok(ph && ph.cases.length >= 3 && ph.refusals.length >= 7);
});

for (const [i, c] of (ph?.cases ?? []).entries()) {
  test(`photo case ${i} (${c.labels.join(", ")}; photos-only ${JSON.stringify(c.photos_only)}): params, probabilities, metadata`, async () => {
    const before = tina.photosRun ?? 0;
    const clf = await tina.personalize(c.prompt, { seed: BigInt(c.seed), images: pick(c.images), photosOnly: c.photos_only,
      descriptions: c.descriptions ?? null });
    assert.deepEqual(clf.labels, c.labels);
    const nPhotos = Object.values(c.images).reduce((a, x) => a + x.length, 0);
    assert.equal(tina.photosRun - before, nPhotos); // each photo through the trunk once
    for (const [name, t] of Object.entries(c.params)) {
      assert.deepEqual(clf.params[name].shape, t.shape, name);
      const d = maxAbsDiff(clf.params[name].data, t.data);
      assert.ok(d <= TOL, `${name}: max abs diff ${d}`);
    }
    const pred = await clf.predict(images);
    const dp = maxAbsDiff(pred.flatMap((p) => Array.from(p.probabilities)), c.probabilities.flat());
    assert.ok(dp <= TOL, `probabilities: max abs diff ${dp}`);
    const meta = clf.metadata();
    const { producer: _a, ...mine } = meta;
    const { producer: _b, ...theirs } = c.metadata;
    assert.deepEqual(mine, theirs); // only photo counts recorded; texts null for photos-only classes
    const props = Object.fromEntries(decodeModel(clf.toModelBytes()).metadata_props.map((p) => [p.key, p.value]));
    assert.equal(props.image_prompts, c.metadata.image_prompts);
  });
}

for (const r of ph?.refusals ?? []) {
  test(`photo refusal: ${r.error.slice(0, 60)}`, async () => {
    await assert.rejects(tina.personalize(r.prompt, { images: pick(r.images), photosOnly: r.photos_only, descriptions: r.descriptions ?? null }),
      (e) => e.message === r.error && e.name !== "Error");
  });
}

test("the trunk cut from the template ends at the head's input and keeps no head weight", () => {
  const trunk = decodeModel(extractTrunk(tina.templateBytes));
  assert.deepEqual(trunk.graph.output.map((o) => o.name), ["features"]);
  assert.ok(!trunk.graph.input.some((i) => i.name.startsWith("fc.")) && !trunk.graph.initializer.some((i) => i.name.startsWith("fc.")));
  assert.equal(trunk.graph.node.at(-1).op_type, "Identity");
});

test("fusion rule: photos-only tasks are a cosine prototype; lam(n) step-wise", () => {
  assert.equal(fusionWeight(1), 0.5);
  assert.equal(fusionWeight(3), 0.5);
  assert.equal(fusionWeight(50), 0.5);
  const D = 3;
  const feats = new Map([[0, Float32Array.from([1, 0, 0, 2, 0, 0])], [1, Float32Array.from([0, 1, 0, 0, 3, 0])]]);
  const { W, b } = photoHeadRows(new Float32Array(6), new Float32Array(2), feats, [false, false], 2, D);
  const score = (x, j) => x[0] * W[j * D] + x[1] * W[j * D + 1] + x[2] * W[j * D + 2] + b[j];
  assert.ok(score([1.5, 0, 0], 0) > score([1.5, 0, 0], 1));
  assert.ok(score([0, 2, 0], 1) > score([0, 2, 0], 0));
  assert.throws(() => photoHeadRows(null, null, new Map([[0, feats.get(0)]]), [false, false], 2, D), /a class without a name needs photos/);
});

test("no photos and an empty photosOnly list is a plain personalize, as in Python (an empty collection is false)", async () => {
  const c = v.cases[0];
  const plain = await tina.personalize(c.prompt, { seed: BigInt(c.seed) });
  const empty = await tina.personalize(c.prompt, { seed: BigInt(c.seed), images: {}, photosOnly: [] });
  assert.deepEqual(Array.from(empty.params["fc.weight"].data), Array.from(plain.params["fc.weight"].data));
  assert.equal(empty.metadata().image_prompts, undefined);
});

test("a bad photo is refused naming its class and index; nothing is generated", async () => {
  const c = ph.cases[0];
  const [a] = c.labels;
  await assert.rejects(tina.personalize(c.prompt, { images: { [a]: [photos[0], { data: new Uint8Array(3), width: 0, height: 1 }] } }),
    (e) => e.name === "ImageError" && e.message.startsWith(`class '${a}': image 1: `));
});

test("photo prompts on a bundle with an image tower are refused (this package fuses photos through a trunk only)", async () => {
  const m = tina.manifest;
  const tower = Object.assign(Object.create(Object.getPrototypeOf(tina)), tina,
    { manifest: { ...m, text_encoder: { ...m.text_encoder, image_encoder: "image_encoder.onnx" } } });
  const c = ph.cases[0];
  await assert.rejects(tower.personalize(c.prompt, { images: { [c.labels[0]]: [photos[0]] } }),
    /prompts with photos only on trunk bundles without an image tower/);
  await assert.rejects(tower.personalize(c.prompt, { images: { [c.labels[0]]: [photos[0]] }, photosOnly: true }),
    (e) => e.name === "PromptError" && e.message === "photos_only needs a trunk bundle without an image tower (such as the default one); " +
      "with this bundle, images already replace the class name");
});
