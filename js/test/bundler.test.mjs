// A small app bundled with esbuild (the README's "Bundlers" recipe: onnxruntime-web's wasm and its
// loader copied beside the bundle, wasmPaths pointing at them), run in headless Chromium against a
// local static server: it personalizes and predicts, and downloads the 14 MB wasm, not the 28 MB one.
import test from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { serveStatic } from "../browser/static.mjs";
import { findChromium } from "../browser/chromium.mjs";
import { buildApp } from "../browser/build.mjs";
import { env } from "./helpers.mjs";

const APP = `import { TinaEdge } from "tina-edge";
const t0 = performance.now();
try {
  const tina = await TinaEdge.fromBundle("/bundle/", { wasmPaths: new URL("./", import.meta.url).href });
  const clf = await tina.personalize("dog, cat", { seed: 0 });
  const [p] = await clf.predict({ data: new Uint8Array(64 * 48 * 3).fill(128), width: 64, height: 48 });
  window.result = { labels: clf.labels, label: p.label, backend: tina.backend, ms: performance.now() - t0 };
} catch (e) {
  window.result = { error: e.name + ": " + e.message };
}
`;

test("esbuild bundles an app that runs in Chromium with the documented wasmPaths recipe", async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tina-js-esbuild-"));
  const srv = await serveStatic([["/app/", path.join(dir, "out")], ["/bundle/", env().bundle]]);
  try {
    await buildApp(dir, APP);
    const size = fs.statSync(path.join(dir, "out/app.js")).size;
    assert.ok(size < 2e6, `app.js is ${size} bytes`);
    const chromium = findChromium();
    if (!chromium) return t.skip("no Chromium (see the message above for how to get one)");
    const { default: puppeteer } = await import("puppeteer-core");
    const browser = await puppeteer.launch({ executablePath: chromium, headless: true,
      args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"] });
    try {
      const page = await browser.newPage();
      const wasm = [];
      page.on("response", (r) => { if (r.url().endsWith(".wasm")) wasm.push(r.url()); });
      await page.goto(`${srv.url}/app/index.html`);
      await page.waitForFunction(() => window.result, { timeout: 240_000 });
      const result = await page.evaluate(() => window.result);
      assert.ok(!result.error, result.error);
      assert.deepEqual(result.labels, ["dog", "cat"]);
      assert.ok(["dog", "cat"].includes(result.label));
      assert.equal(result.backend, "onnxruntime-web (wasm)");
      assert.deepEqual(wasm.map((u) => path.basename(u)), ["ort-wasm-simd-threaded.wasm"]);
    } finally {
      await browser.close();
    }
  } finally {
    await srv.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
