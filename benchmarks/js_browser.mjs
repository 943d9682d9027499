// Browser figures of the JavaScript package (issue 24), in headless Chromium against a local static
// server: an esbuild-bundled app (js/test/bundler.test.mjs's recipe) on the default bundle.
//   first visit:     bytes transferred until the first personalize is possible (empty caches)
//   returning visit: page load -> ready (sessions made), bytes transferred (Cache API + HTTP cache)
//   warm personalize of 10 classes (names cached / every name encoded), predict of one photo
//   responsiveness:  the longest main-thread stall (gap between 4 ms timer ticks) during personalize + predict
//   cd js && node ../benchmarks/js_browser.mjs [--classes N] [--bundle DIR] [--json OUT] [--gzip] [--log]   (needs Chromium: see browser/chromium.mjs)
// --gzip: the server sends gzip -9 bodies, so "bytes" is what a compressing host transfers; --log: every request on stderr
// --classes N: personalize N classes instead of 10 (above K_max: in groups, issue 23); --prompt "a, b": these names
// --visits N: N returning visits (medians); each personalizes once and predicts once after ready (first_use_bytes: what that fetched)
// --bundle DIR: a bundle with portable files (generate.onnx) instead of the repository's default one;
//   without --bundle, test/prepare.mjs's bundle ($TINA_EDGE_BUNDLE, else the default, converted if need be)
// --visits N: N returning visits (reloads) per mode instead of 1; ready and timings are then medians, each visit listed
// --quick: the visits only (no warm personalize, predict or stall figures)
// --mode worker|main: one mode only (default: both, worker first)
// --dwell MS: stay MS on the page after each visit (and its first use) before the next reload, as a visitor does:
//   Chromium writes a wasm module's compiled code to its cache a few seconds into its use (default 0: reload at once)
// --preload: fromBundle / inWorker with preload: true (the classifier's session made before ready, as before issue 24)
// after the returning visit(s): its first personalize (names not cached) and first predict, the cost of what was left lazy
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const JS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../js");
const { serveStatic } = await import(path.join(JS, "browser/static.mjs"));
const { findChromium } = await import(path.join(JS, "browser/chromium.mjs"));
const { buildApp } = await import(path.join(JS, "browser/build.mjs"));
const { env } = await import(path.join(JS, "test/helpers.mjs"));
const { default: puppeteer } = await import(path.join(JS, "node_modules/puppeteer-core/lib/esm/puppeteer/puppeteer-core.js"));

const APP = `import { TinaEdge } from "tina-edge";
const mode = new URLSearchParams(location.search).get("mode") ?? "worker";
const options = { wasmPaths: new URL("./", import.meta.url).href, numThreads: 1, preload: new URLSearchParams(location.search).has("preload") };
window.tinaReady = (mode === "worker" ? TinaEdge.inWorker("/bundle/", { ...options, workerUrl: new URL("./worker.mjs", import.meta.url) })
  : TinaEdge.fromBundle("/bundle/", options)).then((t) => { window.tina = t; return performance.now(); });
`;

const chromium = findChromium();
if (!chromium) process.exit(0);
const bi = process.argv.indexOf("--bundle");
const e = bi > 0 ? { bundle: path.resolve(process.argv[bi + 1]) } : env(); // --bundle: no conformance vectors needed
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tina-js-bench-"));
await buildApp(dir, APP, { worker: true });
const srv = await serveStatic([["/app/", path.join(dir, "out")], ["/bundle/", e.bundle]], { gzip: process.argv.includes("--gzip"),
  log: process.argv.includes("--log") ? (line) => console.error(line) : null });
const m = JSON.parse(fs.readFileSync(path.join(e.bundle, "manifest.json"), "utf8"));
const ci = process.argv.indexOf("--classes");
const N = ci > 0 ? Number(process.argv[ci + 1]) : 10;
// --prompt "a, b, c": personalize these names instead of the vocabulary's first N (e.g. names the name table holds)
const pi = process.argv.indexOf("--prompt");
const ten = pi > 0 ? process.argv[pi + 1] : m.training.vocabulary.filter((v) => typeof v === "string").slice(0, N).join(", ");
const med = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function visit(page, mode, reload) {
  const before = { ...srv.counts };
  if (reload) await page.reload();
  else await page.goto(`${srv.url}/app/index.html?mode=${mode}${process.argv.includes("--preload") ? "&preload" : ""}`);
  const ready = await page.evaluate(() => window.tinaReady);
  return { ready_ms: +ready.toFixed(0), bytes: srv.counts.bytes - before.bytes, requests: srv.counts.requests - before.requests };
}

const out = { load_average: os.loadavg().map((x) => +x.toFixed(1)), chromium: null, bundle_id: m.bundle_id, machine: `${os.cpus().length} cores (${os.cpus()[0]?.model}), shared and heavily loaded`, modes: {} };
// --mode worker|main: only that mode (default: both)
const mi = process.argv.indexOf("--mode");
for (const mode of mi > 0 ? [process.argv[mi + 1]] : ["worker", "main"]) {
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "tina-js-profile-"));
  const browser = await puppeteer.launch({ executablePath: chromium, headless: true, userDataDir,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"] });
  try {
    out.chromium = await browser.version();
    const page = await browser.newPage();
    const first = await visit(page, mode, false);
    const di = process.argv.indexOf("--dwell");
    const dwell = () => new Promise((r) => setTimeout(r, di > 0 ? Number(process.argv[di + 1]) : 0));
    await dwell();
    const vi = process.argv.indexOf("--visits");
    const visits = [];
    for (let i = 0; i < (vi > 0 ? Number(process.argv[vi + 1]) : 1); i++) {
      const v = await visit(page, mode, true);
      v.timings = await page.evaluate(() => window.tina.timings); // where a returning visit's time goes (core.mjs)
      // what the first use costs after ready (names not cached; predict makes the classifier's session if lazy)
      const beforeUse = srv.counts.bytes;
      Object.assign(v, await page.evaluate(async (p) => {
        const t0 = performance.now();
        window.clf = await window.tina.personalize(p);
        const t1 = performance.now();
        await window.clf.predict({ data: new Uint8Array(128 * 128 * 3), width: 128, height: 128 });
        const t2 = performance.now();
        return { first_personalize_ms: +(t1 - t0).toFixed(0), first_predict_ms: +(t2 - t1).toFixed(0) };
      }, ten));
      v.first_use_bytes = srv.counts.bytes - beforeUse; // e.g. the name table, fetched by the first prompt that needs it
      visits.push(v);
      await dwell();
    }
    const again = visits.length === 1 ? visits[0] : { ...Object.fromEntries(["ready_ms", "bytes", "requests", "first_personalize_ms", "first_predict_ms"]
      .map((k) => [k, med(visits.map((v) => v[k]))])), visits };
    if (process.argv.includes("--quick")) { out.modes[mode] = { first_visit: first, returning_visit: again }; continue; }
    const warm = [], fresh = [], predict = [];
    const photo = { data: Array.from({ length: 301 * 200 * 3 }, (_, i) => (i * 37) % 256), width: 301, height: 200 };
    for (let i = 0; i < 6; i++) {
      warm.push(await page.evaluate(async (p) => { const t = performance.now(); window.clf = await window.tina.personalize(p); return performance.now() - t; }, ten));
      await page.evaluate(() => window.tina.clearCache());
      fresh.push(await page.evaluate(async (p) => { const t = performance.now(); await window.tina.personalize(p); return performance.now() - t; }, ten));
      predict.push(await page.evaluate(async (ph) => {
        const im = { data: new Uint8Array(ph.data), width: ph.width, height: ph.height };
        const t = performance.now(); await window.clf.predict(im); return performance.now() - t;
      }, photo));
    }
    // the page's responsiveness: the longest gap between 4 ms timer ticks while personalize + predict run
    // (the longtask observer reported nothing in headless Chromium, in either mode)
    const longest = await page.evaluate(async (p) => {
      let last = performance.now(), gap = 0;
      const h = setInterval(() => { const n = performance.now(); gap = Math.max(gap, n - last); last = n; }, 4);
      await new Promise((r) => setTimeout(r, 50));
      gap = 0; last = performance.now();
      const clf = await window.tina.personalize(p, { seed: 7 });
      await clf.predict({ data: new Uint8Array(128 * 128 * 3), width: 128, height: 128 });
      await new Promise((r) => setTimeout(r, 50));
      clearInterval(h);
      return gap;
    }, ten);
    out.modes[mode] = { first_visit: first, returning_visit: again, [`warm_personalize_${N}_ms`]: +med(warm.slice(1)).toFixed(1),
      [`warm_personalize_${N}_uncached_ms`]: +med(fresh.slice(1)).toFixed(1), predict_one_301x200_photo_ms: +med(predict.slice(1)).toFixed(1),
      longest_main_thread_stall_during_personalize_predict_ms: +longest.toFixed(0) };
  } finally {
    await browser.close();
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
}
await srv.close();
fs.rmSync(dir, { recursive: true, force: true });
console.log(JSON.stringify(out, null, 2));
const j = process.argv.indexOf("--json");
if (j > 0) fs.writeFileSync(process.argv[j + 1], JSON.stringify(out, null, 2) + "\n");
