// A missing onnxruntime-web WebAssembly file is the app's set-up, not a broken bundle: it must be
// reported as BackendError with the wasmPaths recipe. Own file: onnxruntime-web remembers a failed
// start-up for the whole process, so no other test may share it.
import test from "node:test";
import assert from "node:assert/strict";
import * as ortWeb from "onnxruntime-web";
import { TinaEdge } from "../src/node.mjs";
import { BackendError } from "../src/errors.mjs";
import { env } from "./helpers.mjs";

test("onnxruntime-web without its wasm file raises BackendError naming wasmPaths, not BundleError", async () => {
  ortWeb.env.wasm.numThreads = 1;
  ortWeb.env.wasm.wasmPaths = "/nonexistent-ort-dir/";
  await assert.rejects(TinaEdge.fromBundle(env().bundle, { ort: ortWeb, executionProviders: ["wasm"] }), (e) => {
    assert.ok(e instanceof BackendError, `${e.name}: ${e.message.slice(0, 200)}`);
    assert.match(e.message, /wasmPaths/);
    assert.match(e.message, /ort-wasm-simd-threaded/);
    return true;
  });
});
