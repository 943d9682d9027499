// TinaEdge.inWorker's returning visit in headless Chromium: the page compiles onnxruntime-web's wasm
// (worker-client.mjs, at the worker's request: worker.mjs), which Chromium restores from its compiled-wasm
// code cache, and the worker's own compile of the same file then gets that compiled code instead of
// compiling its functions lazily one by one (README, "What ready waits for"). Measured in V8's trace events
// (wasm.CompileLazy on the worker's thread), with compileOnPage: false as the control: without the page's
// compile a quick returning visit's worker compiles hundreds to thousands of functions lazily, with it none.
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
const q = new URLSearchParams(location.search);
const asked = [];
const fetch0 = window.fetch;
window.fetch = (u, o) => { asked.push(String(u)); return fetch0(u, o); }; // what the page fetched (the wasm, asked by the worker)
window.result = TinaEdge.inWorker("/bundle/", { wasmPaths: new URL("./", import.meta.url).href, numThreads: 1,
  workerUrl: new URL("./worker.mjs", import.meta.url), compileOnPage: !q.has("off") })
  .then(async (tina) => {
    const clf = await tina.personalize("dog, cat", { seed: 0 });
    const [p] = await clf.predict({ data: new Uint8Array(64 * 48 * 3).fill(128), width: 64, height: 48 });
    return { labels: clf.labels, label: p.label, asked };
  }, (e) => ({ error: e.name + ": " + e.message }));
`;

/** wasm.CompileLazy events per thread name in a Chromium trace. */
function lazyCompiles(trace) {
  const events = trace.traceEvents ?? trace;
  const names = new Map(events.filter((e) => e.name === "thread_name").map((e) => [`${e.pid}:${e.tid}`, e.args.name]));
  const counts = {};
  for (const e of events) {
    if (e.name !== "wasm.CompileLazy") continue;
    const t = names.get(`${e.pid}:${e.tid}`) ?? "?";
    counts[t] = (counts[t] ?? 0) + 1;
  }
  return counts;
}

test("inWorker: a returning visit's worker runs the wasm the page compiled from Chromium's code cache (no lazy compilation)", async (t) => {
  const chromium = findChromium();
  if (!chromium) return t.skip("no Chromium (see the message above for how to get one)");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tina-js-wasm-cache-"));
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "tina-js-wasm-cache-profile-"));
  const srv = await serveStatic([["/app/", path.join(dir, "out")], ["/bundle/", env().bundle]]);
  const { default: puppeteer } = await import("puppeteer-core");
  let browser = null;
  try {
    await buildApp(dir, APP, { worker: true });
    browser = await puppeteer.launch({ executablePath: chromium, headless: true, userDataDir,
      args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"] });
    const page = await browser.newPage();
    const traceFile = path.join(dir, "trace.json");
    const result = async () => {
      const r = await page.evaluate(() => window.result);
      assert.ok(!r.error, r.error);
      assert.deepEqual(r.labels, ["dog", "cat"]);
      return r;
    };
    // a returning visit, traced: the worker thread's lazy wasm compilations
    const tracedReload = async () => {
      await page.tracing.start({ path: traceFile, categories: ["v8.wasm", "disabled-by-default-v8.wasm.detailed"] });
      await page.reload();
      const r = await result();
      await page.tracing.stop();
      return { ...r, lazy: lazyCompiles(JSON.parse(fs.readFileSync(traceFile, "utf8")))["DedicatedWorker thread"] ?? 0 };
    };
    const visits = async (query, n) => {
      await page.goto(`${srv.url}/app/index.html${query}`);
      const first = await result();
      const reloads = [];
      for (let i = 0; i < n; i++) reloads.push(await tracedReload());
      return { first, reloads };
    };
    // the control first (nothing compiled on the page): quick returning visits' workers compile hundreds to
    // thousands of functions lazily (3,589, 460, 269 measured: Chromium caches a module's code a few seconds into
    // its use, which a worker ended by the next reload never reaches)
    const off = await visits("?off", 2);
    assert.ok(!off.first.asked.some((u) => u.endsWith(".wasm")), "compileOnPage: false, yet the page fetched the wasm");
    // the default: the worker asks the page to compile the very file onnxruntime-web fetches; from the second
    // returning visit on (the first one's page writes the cache) the worker's onnxruntime runs that code: none lazily
    const on = await visits("", 3);
    assert.deepEqual(on.first.asked.filter((u) => u.endsWith(".wasm")), [`${srv.url}/app/ort-wasm-simd-threaded.wasm`]);
    const lazy = on.reloads.map((r) => r.lazy);
    const control = off.reloads.map((r) => r.lazy);
    assert.ok(control.every((n) => n > 100), `control: lazy compilations in the worker per returning visit ${control.join(", ")}`);
    assert.ok(lazy.slice(1).every((n) => n < 20), `lazy compilations in the worker per returning visit: ${lazy.join(", ")} ` +
      `(control: ${control.join(", ")})`);
  } finally {
    await browser?.close();
    await srv.close();
    fs.rmSync(dir, { recursive: true, force: true });
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
});
