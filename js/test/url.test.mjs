// fromBundle(url): a bundle folder served over HTTP (a local static server), checked file by file
// against the manifest as it arrives, with progress callbacks and a persistent cache directory.
import test from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { TinaEdge, BundleError, BackendError } from "../src/node.mjs";
import { serveStatic } from "../browser/static.mjs";
import { env } from "./helpers.mjs";

const bundle = env().bundle;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "tina-js-url-"));
const bad = path.join(tmp, "bad");
const big = path.join(tmp, "big");
for (const d of [bad, big]) {
  fs.mkdirSync(d);
  for (const f of fs.readdirSync(bundle)) if (f !== "tokenizer_config.json") fs.symlinkSync(path.join(bundle, f), path.join(d, f));
}
const cfg = fs.readFileSync(path.join(bundle, "tokenizer_config.json"));
const flipped = Buffer.from(cfg);
flipped[flipped.length - 2] ^= 1;
fs.writeFileSync(path.join(bad, "tokenizer_config.json"), flipped);
fs.writeFileSync(path.join(big, "tokenizer_config.json"), Buffer.concat([cfg, Buffer.alloc(1 << 20, 32)]));
const srv = await serveStatic([["/b/", bundle], ["/bad/", bad], ["/big/", big]]);
test.after(async () => { await srv.close(); fs.rmSync(tmp, { recursive: true, force: true }); });

test("fromBundle(url): progress, then a cache directory that makes the next load download only the manifest", async () => {
  const cacheDir = path.join(tmp, "cache");
  const events = [];
  const before = srv.counts.bytes;
  const a = await TinaEdge.fromBundle(`${srv.url}/b`, { cacheDir, progress: (e) => events.push(e) });
  const manifest = a.manifest;
  // the graphs a load fetches: a split bundle adds prior.onnx; a prior-only one never fetches generate.onnx
  const priorOnly = manifest.portable.prior?.only === true;
  const files = new Set([manifest.text_encoder.model, manifest.template.model,
    ...(manifest.portable.prior ? [manifest.portable.prior.model] : []), ...(priorOnly ? [] : [manifest.portable.generate.model])]);
  if (priorOnly) assert.ok(!events.some((e) => e.file === manifest.portable.generate.model), "a prior-only load skips generate.onnx");
  for (const f of files) {
    const last = events.filter((e) => e.file === f).at(-1);
    assert.ok(last, `no progress for ${f}`);
    assert.equal(last.loaded, manifest.files[f].bytes);
    assert.equal(last.total, manifest.files[f].bytes);
    assert.equal(last.cached, false);
  }
  assert.ok(srv.counts.bytes - before > 20e6, "the first load downloads the bundle");
  const cached = fs.readdirSync(path.join(cacheDir, "sha256"));
  for (const f of files) assert.ok(cached.includes(manifest.files[f].sha256), f);
  assert.ok(!cached.some((n) => n.includes(".tmp-")), "no temp file left in the cache");
  const again = [];
  const mid = srv.counts.bytes;
  const b = await TinaEdge.fromBundle(`${srv.url}/b/`, { cacheDir, progress: (e) => again.push(e) });
  assert.equal(srv.counts.bytes - mid, fs.statSync(path.join(bundle, "manifest.json")).size, "only the manifest is downloaded again");
  const files2 = again.filter((e) => e.file !== "manifest.json");
  assert.ok(files2.length >= 3 && files2.every((e) => e.cached));
  const [p, q] = await Promise.all([a.personalize("dog, cat", { seed: 1 }), b.personalize("dog, cat", { seed: 1 })]);
  assert.deepEqual(Array.from(Object.values(q.params)[0].data), Array.from(Object.values(p.params)[0].data));
  a.dispose(); b.dispose();
});

test("fromBundle(url) refuses a file that does not match the manifest: changed bytes, or more bytes than listed", async () => {
  await assert.rejects(TinaEdge.fromBundle(`${srv.url}/bad/`, { cacheDir: false }),
    (e) => e instanceof BundleError && /tokenizer_config\.json does not match its sha256/.test(e.message));
  await assert.rejects(TinaEdge.fromBundle(`${srv.url}/big/`, { cacheDir: false }),
    (e) => e instanceof BundleError && /tokenizer_config\.json is larger than the \d+ bytes the manifest says/.test(e.message));
  await assert.rejects(TinaEdge.fromBundle(`${srv.url}/nothing/`, { cacheDir: false }),
    (e) => e instanceof BundleError && /HTTP 404/.test(e.message));
});

test("execution providers not verified against Python (WebGPU) are refused with a clear error", async () => {
  await assert.rejects(TinaEdge.fromBundle(bundle, { executionProviders: ["webgpu"] }),
    (e) => e instanceof BackendError && /execution provider "webgpu" is not supported/.test(e.message));
});
