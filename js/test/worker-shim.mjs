// Runs src/worker.mjs in a node worker thread with the Web Worker globals it uses (self.postMessage,
// self.addEventListener), so test/worker.test.mjs checks the worker protocol without a browser.
import { parentPort } from "node:worker_threads";
import * as ort from "onnxruntime-web";

ort.env.wasm.numThreads = 1;
globalThis.self = {
  postMessage: (m, transfer) => parentPort.postMessage(m, transfer),
  addEventListener: (type, f) => { if (type === "message") parentPort.on("message", (data) => f({ data })); },
};
await import("../src/worker.mjs");
