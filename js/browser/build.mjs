// Builds the Web Worker script of TinaEdge.inWorker with esbuild (module workers get no import
// map, so the worker must be bundled) and copies onnxruntime-web's 14 MB WebAssembly file (and its loader) beside
// it: the recipe of the README's "Bundlers" section. Output: js/.cache/web/{worker.mjs, ort-wasm-simd-threaded.wasm}.
//   node browser/build.mjs [OUT_DIR]
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const JS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
export const WASM = ["ort-wasm-simd-threaded.wasm", "ort-wasm-simd-threaded.mjs"]; // the wasm and its loader

export async function buildWorker(out = path.join(JS, ".cache/web")) {
  fs.mkdirSync(out, { recursive: true });
  await esbuild.build({ entryPoints: [path.join(JS, "src/worker.mjs")], bundle: true, format: "esm", platform: "browser",
    target: "es2022", minify: true, outfile: path.join(out, "worker.mjs"), logLevel: "error" });
  for (const f of WASM) fs.copyFileSync(path.join(JS, "node_modules/onnxruntime-web/dist", f), path.join(out, f));
  return out;
}

/**
 * An outsider's app, as the README's "Bundlers" recipe builds it: `app` (source importing "tina-edge") bundled
 * by esbuild into DIR/out/app.js beside an index.html, the package linked as node_modules/tina-edge; with
 * `worker`, the worker script and the wasm beside it (buildWorker), else the wasm and its loader only. Returns DIR/out.
 */
export async function buildApp(dir, app, { worker = false } = {}) {
  const out = path.join(dir, "out");
  fs.mkdirSync(path.join(dir, "node_modules"), { recursive: true });
  fs.symlinkSync(JS, path.join(dir, "node_modules/tina-edge"));
  fs.writeFileSync(path.join(dir, "app.mjs"), app);
  await esbuild.build({ entryPoints: [path.join(dir, "app.mjs")], bundle: true, format: "esm", platform: "browser", target: "es2022",
    minify: true, outfile: path.join(out, "app.js"), logLevel: "error" });
  if (worker) await buildWorker(out);
  else for (const f of WASM) fs.copyFileSync(path.join(JS, "node_modules/onnxruntime-web/dist", f), path.join(out, f));
  fs.writeFileSync(path.join(out, "index.html"), '<!doctype html><meta charset="utf-8"><script type="module" src="app.js"></script>');
  return out;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  console.log(`built ${await buildWorker(process.argv[2] ? path.resolve(process.argv[2]) : undefined)}`);
}
