// Packaging: what `npm pack` publishes, the engines it promises, the default-bundle package.
import test from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { TinaEdge } from "../src/node.mjs";
import { env, JS } from "./helpers.mjs";

const pack = (cwd) => {
  const r = spawnSync("npm", ["pack", "--dry-run", "--json", "--ignore-scripts"], { cwd, encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout)[0].files.map((f) => f.path);
};
const satisfiesNode20 = (range) => {
  const m = /^>=\s*(\d+)(?:\.(\d+))?/.exec(range ?? "");
  return Boolean(m) && Number(m[1]) <= 20;
};

test("npm pack publishes src/, bin/ and the README only (no model.onnx left by the CLI, no tests, no cache)", () => {
  const files = pack(JS);
  assert.ok(files.includes("src/node.mjs") && files.includes("src/index.d.ts") && files.includes("bin/tina-edge.mjs"));
  for (const f of files) assert.match(f, /^(src\/|bin\/|README\.md$|package\.json$|LICENSE)/, f);
});

test("engines: node >= 20, and every dev tool installed here runs on node 20 (puppeteer-core 25 would not)", () => {
  const pkg = JSON.parse(fs.readFileSync(path.join(JS, "package.json"), "utf8"));
  assert.equal(pkg.engines.node, ">=20");
  assert.equal(pkg.peerDependenciesMeta["onnxruntime-node"].optional, true);
  for (const dep of ["puppeteer-core", "esbuild", "typescript", "onnxruntime-web", "@huggingface/tokenizers", "protobufjs"]) {
    const p = JSON.parse(fs.readFileSync(path.join(JS, "node_modules", dep, "package.json"), "utf8"));
    if (p.engines?.node) assert.ok(satisfiesNode20(p.engines.node), `${dep} ${p.version} needs node ${p.engines.node}`);
  }
});

test("the default-bundle package: filled at pack time from a portable bundle, loadable as a bundle folder", async () => {
  const src = path.join(JS, "packages/tina-edge-default-bundle");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tina-js-pkg-"));
  try {
    for (const f of ["package.json", "index.mjs", "fill.mjs", "README.md"]) fs.copyFileSync(path.join(src, f), path.join(dir, f));
    const r = spawnSync(process.execPath, [path.join(dir, "fill.mjs"), env().bundle], { encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    const files = pack(dir);
    for (const f of ["manifest.json", "text_encoder.onnx", "generate.onnx", "template.onnx", "tokenizer.json"]) assert.ok(files.includes(f), f);
    assert.ok(!files.includes("denoiser.onnx") && !files.includes("fill.mjs"));
    const prior = JSON.parse(fs.readFileSync(path.join(env().bundle, "manifest.json"), "utf8")).portable.prior;
    assert.equal(files.includes("prior.onnx"), Boolean(prior), "prior.onnx ships exactly when the manifest names it");
    const tina = await TinaEdge.fromBundle(dir);
    const clf = await tina.personalize("dog, cat", { seed: 0 });
    assert.deepEqual(clf.labels, ["dog", "cat"]);
    tina.dispose();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
