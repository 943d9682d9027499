import fs from "node:fs";
import os from "node:os";
import { spawnSync } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { prepare } from "./prepare.mjs";
import { Worker } from "node:worker_threads";
import { splitmix64Word } from "../src/noise.mjs";

export const JS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
let _env = null;
export function env() {
  if (!_env) _env = prepare(); // cheap when js/.cache is fresh; follows TINA_EDGE_BUNDLE
  return _env;
}
export const vectors = () => JSON.parse(fs.readFileSync(env().vectors, "utf8"));

/** The fixed images of the vectors: byte i = word(seed, i) >> 56 (tina_edge/export/portable/conformance.py). */
export function fixedImages(seed, [n, h, w]) {
  const out = [];
  let i = 0;
  for (let j = 0; j < n; j++) {
    const data = new Uint8Array(h * w * 3);
    for (let b = 0; b < data.length; b++) data[b] = Number(splitmix64Word(seed, i++) >> 56n);
    out.push({ data, width: w, height: h });
  }
  return out;
}

export function maxAbsDiff(a, b) {
  if (a.length !== b.length) throw new Error(`length ${a.length} != ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** A node worker thread behind the Web Worker interface inWorker expects (test/worker-shim.mjs runs src/worker.mjs). */
export function webWorkerLike(file) {
  const w = new Worker(file);
  return {
    addEventListener(type, f) {
      if (type === "message") w.on("message", (data) => f({ data }));
      if (type === "error") w.on("error", (e) => f({ message: e.message }));
    },
    postMessage: (m, transfer) => w.postMessage(m, transfer),
    terminate: () => w.terminate(),
  };
}

/** The Python to compare with ($TINA_EDGE_PYTHON), and the skip reason of tests that need it. */
export const PY = process.env.TINA_EDGE_PYTHON;
export const NEEDS_PYTHON = PY ? false : "set TINA_EDGE_PYTHON to a Python with tina-edge to compare with it";

/** stdout of `$PY -c code args...` with this checkout first on PYTHONPATH and one thread; throws with its stderr unless it exits 0. */
export function runPython(code, ...args) {
  const r = spawnSync(PY, ["-c", code, ...args], { encoding: "utf8", maxBuffer: 1 << 28,
    env: { ...process.env, PYTHONPATH: [env().root, process.env.PYTHONPATH].filter(Boolean).join(path.delimiter), OMP_NUM_THREADS: "1" } });
  if (r.status !== 0) throw new Error(`python exited ${r.status}: ${r.stderr}`);
  return r.stdout;
}

/** await fn(dir): a private copy of the test bundle that a test may edit, removed afterwards. */
export async function withBundleCopy(fn) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tina-bundle-copy-"));
  try {
    const bundle = path.join(dir, "bundle");
    fs.cpSync(env().bundle, bundle, { recursive: true });
    return await fn(bundle);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
