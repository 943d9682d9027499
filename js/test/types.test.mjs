// The types against the code: small consumer projects compiled with `tsc --noEmit` (strict): a node
// project without the DOM lib, a browser project with it, and a bundler project without it.
import test from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { JS } from "./helpers.mjs";

const TSC = path.join(JS, "node_modules/typescript/bin/tsc");

function compile(name, tsconfig, source) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `tina-js-types-${name}-`));
  try {
    fs.mkdirSync(path.join(dir, "node_modules/@types"), { recursive: true });
    fs.symlinkSync(JS, path.join(dir, "node_modules/tina-edge"));
    fs.symlinkSync(path.join(JS, "node_modules/@types/node"), path.join(dir, "node_modules/@types/node"));
    fs.writeFileSync(path.join(dir, "package.json"), JSON.stringify({ type: "module" }));
    fs.writeFileSync(path.join(dir, "tsconfig.json"), JSON.stringify({ compilerOptions: { strict: true, noEmit: true, target: "es2022",
      skipLibCheck: false, types: [], ...tsconfig }, files: ["app.ts"] }));
    fs.writeFileSync(path.join(dir, "app.ts"), source);
    return spawnSync(process.execPath, [TSC, "-p", dir], { encoding: "utf8" });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const COMMON = `
const tina = await TinaEdge.fromBundle(undefined as unknown as string, { progress: (p) => console.log(p.file, p.loaded, p.total, p.cached) });
const clf = await tina.personalize("dog, cat", { seed: 2n ** 60n, descriptions: { dog: "a small dog" } });
const px = { data: new Uint8Array(12), width: 2, height: 2 };
const [p] = await clf.predict(px, { minProb: 0.5 });
const byPhotos = await tina.personalize("Rex, Bella", { images: { Rex: [px, px], Bella: px }, photosOnly: true });
const counts: Record<string, number> | null = byPhotos.imagePrompts;
const firstText: string | null = byPhotos.texts[0];
await tina.personalize("dog, Rex", { images: { Rex: [px] }, photosOnly: ["Rex"] });
// @ts-expect-error photosOnly is true, false or class names
await tina.personalize("dog, Rex", { images: { Rex: [px] }, photosOnly: "Rex" });
console.log(counts, firstText);
const label: string = p.label;
const seed: number | string = clf.sampler.seed;
const again = PersonalizedClassifier.fromHead(tina, clf.toHead());
await again.predict([px]);
tina.clearCache();
const nov = await tina.novelty("dog, cat");
const lines: string[] = noveltyLines(nov);
const bytes: Uint8Array = clf.toModelBytes();
const text: string = clf.toHeadText();
tina.dispose();
const e: TinaEdgeError = new BundleError("x");
console.log(label, seed, lines, bytes, text, e, tina.backend);
`;

test("node consumer (nodenext, no DOM lib): compiles; browser-only helpers are not there", () => {
  const r = compile("node", { module: "nodenext", moduleResolution: "nodenext", lib: ["es2022"], types: ["node"] },
    `import { TinaEdge, PersonalizedClassifier, TinaEdgeError, BundleError, noveltyLines, defaultBundle, loadModel, readImage,
  evaluate, evaluationDict, formatEvaluation } from "tina-edge";
import * as te from "tina-edge";
${COMMON}
await TinaEdge.fromBundle("https://example.com/b/", { cacheDir: false, read: async (name) => new Uint8Array(name.length) });
const model = await loadModel("model.onnx");
const [mp] = await model.predict(await readImage("x.jpg"), { minProb: 0.2 });
console.log(mp.label, model.labels);
const ev = evaluate(model.labels, [0, 1], [mp, [0.2, 0.8]], { minProb: 0.5 });
const recall: number | null = ev.perClass[model.labels[0]];
console.log(ev.accuracy + ev.unknown, recall, formatEvaluation(ev), evaluationDict(ev).accuracy, ev.confusion[0][0]);
// @ts-expect-error predictions are predict()'s results or probability vectors
evaluate(model.labels, [0], ["cat"]);
console.log(defaultBundle());
// @ts-expect-error toPixels draws on a canvas: browser only
te.toPixels(px);
// @ts-expect-error WebGPU is refused
await TinaEdge.fromBundle("b", { executionProviders: ["webgpu"] });
`);
  assert.equal(r.status, 0, r.stdout + r.stderr);
});

test("browser consumer (bundler, DOM lib): <img> and canvases for personalize's classifier, not for fromHead's", () => {
  const r = compile("dom", { module: "esnext", moduleResolution: "bundler", lib: ["es2022", "dom"] },
    `import { TinaEdge, PersonalizedClassifier, TinaEdgeError, BundleError, noveltyLines, toPixels } from "tina-edge";
${COMMON}
const img = document.createElement("img");
await (await tina.personalize("a, b")).predict([img, document.createElement("canvas")]);
const pix = toPixels(img);
// @ts-expect-error a classifier from a head takes decoded pixels only
await PersonalizedClassifier.fromHead(tina, "{}").predict(img);
await TinaEdge.fromBundle("/bundle/", { cache: false, wasmPaths: "/ort/" });
const w = await TinaEdge.inWorker("/bundle/", { workerUrl: "/worker.mjs", wasmPaths: "/ort/" });
const wc = await w.personalize("dog, cat", { seed: "18446744073709551615", images: { dog: [img, document.createElement("canvas")] } });
const wCounts: Record<string, number> | null = wc.imagePrompts;
await tina.personalize("dog, cat", { images: { cat: [img, px] } });
console.log(wCounts);
const preds = await wc.predict(img, { minProb: 0.3 });
const mb: Uint8Array = await wc.toModelBytes();
// @ts-expect-error worker methods are async
const sync: Uint8Array = wc.toModelBytes();
await w.dispose();
console.log(pix.width, preds, mb, sync);
`);
  assert.equal(r.status, 0, r.stdout + r.stderr);
});

test("bundler consumer without the DOM lib (e.g. a worker or SSR build): the browser types still compile", () => {
  const r = compile("nodom", { module: "esnext", moduleResolution: "bundler", lib: ["es2022"] },
    `import { TinaEdge, PersonalizedClassifier, TinaEdgeError, BundleError, noveltyLines } from "tina-edge";
declare const console: { log(...a: unknown[]): void };
${COMMON}`);
  assert.equal(r.status, 0, r.stdout + r.stderr);
});
