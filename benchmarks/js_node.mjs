// Node figures of the JavaScript package: time to open the default bundle and warm personalize of
// 10 classes on onnxruntime-node and on onnxruntime-web's wasm build (what node users got before
// onnxruntime-node became the default).   cd js && node ../benchmarks/js_node.mjs [--json OUT]
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const JS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../js");
const { TinaEdge } = await import(path.join(JS, "src/node.mjs"));
const { env } = await import(path.join(JS, "test/helpers.mjs"));
const bundle = env().bundle;
const m = JSON.parse(fs.readFileSync(path.join(bundle, "manifest.json"), "utf8"));
const ten = m.training.vocabulary.filter((v) => typeof v === "string").slice(0, 10).join(", ");
const med = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const out = { load_average: os.loadavg().map((x) => +x.toFixed(1)), machine: `${os.cpus().length} cores (${os.cpus()[0]?.model}), shared and heavily loaded`,
  node: process.version, bundle_id: m.bundle_id, backends: {} };
for (const which of ["onnxruntime-node", "onnxruntime-web"]) {
  const ort = await import(path.join(JS, "node_modules", which === "onnxruntime-web" ? "onnxruntime-web/dist/ort.node.min.mjs" : "onnxruntime-node/dist/index.js"));
  if (which === "onnxruntime-web") ort.env.wasm.numThreads = 1;
  const t0 = performance.now();
  const tina = await TinaEdge.fromBundle(bundle, { ort, backend: which, sessionOptions: which === "onnxruntime-node" ? { intraOpNumThreads: 1 } : {} });
  const open = performance.now() - t0;
  const warm = [], fresh = [];
  for (let i = 0; i < 6; i++) {
    let t = performance.now(); await tina.personalize(ten); warm.push(performance.now() - t);
    tina.clearCache();
    t = performance.now(); await tina.personalize(ten); fresh.push(performance.now() - t);
  }
  out.backends[which] = { open_ms: +open.toFixed(0), warm_personalize_10_ms: +med(warm.slice(1)).toFixed(1),
    warm_personalize_10_uncached_ms: +med(fresh.slice(1)).toFixed(1), rss_mb: +(process.memoryUsage().rss / 1e6).toFixed(0) };
  tina.dispose();
}
console.log(JSON.stringify(out, null, 2));
const j = process.argv.indexOf("--json");
if (j > 0) fs.writeFileSync(process.argv[j + 1], JSON.stringify(out, null, 2) + "\n");
