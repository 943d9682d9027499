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

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  console.log(`built ${await buildWorker(process.argv[2] ? path.resolve(process.argv[2]) : undefined)}`);
}
