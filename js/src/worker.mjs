// The worker side of TinaEdge.inWorker (worker-client.mjs): the bundle, its sessions and every
// classifier live here, so personalize and predict never block the page. Messages:
// {id, op, args} -> {id, result} | {id, error: {name, message}}; progress events {progress}.
import { TinaEdge, toPixels, photosAsPixels } from "./index.mjs";

const scope = globalThis.self ?? globalThis;
let tina = null;
const classifiers = new Map();
let next = 1;

const describe = (handle, clf) => ({ handle, labels: clf.labels, params: clf.params, prompt: clf.prompt, texts: clf.texts, sampler: clf.sampler, imagePrompts: clf.imagePrompts,
  bundleId: clf.bundleId, timings: clf.timings, k: clf.k });

function pixels(im) {
  if (im && im.data && im.width && im.height) return im;
  return toPixels(im); // an ImageBitmap transferred by the page: drawn here, on an OffscreenCanvas
}

// onnxruntime-web's WebAssembly file as its loader here will fetch it: wasmPaths + the wasm-only build's file name
// (a folder prefix) or wasmPaths.wasm, resolved against this script. null: not known (no wasmPaths).
function wasmFileUrl(wasmPaths) {
  const p = typeof wasmPaths === "string" ? wasmPaths + "ort-wasm-simd-threaded.wasm" : (wasmPaths?.wasm?.href ?? wasmPaths?.wasm);
  if (typeof p !== "string" || !p) return null;
  try { return new URL(p, scope.location?.href).href; } catch { return null; }
}

const ops = {
  async open(url, { compileOnPage = true, ...options } = {}) {
    // Ask the page to compile onnxruntime's wasm (worker-client.mjs): its WebAssembly.compileStreaming is served from
    // Chromium's compiled-code cache, which a worker's mostly misses, and V8's per-process module cache then hands
    // our own compile of the same bytes (onnxruntime-web's instantiateStreaming, unchanged) that compiled code.
    const wasmUrl = compileOnPage ? wasmFileUrl(options.wasmPaths) : null;
    if (wasmUrl) scope.postMessage({ compileWasm: wasmUrl });
    tina = await TinaEdge.fromBundle(url, { ...options, progress: (p) => scope.postMessage({ progress: p }) });
    return { manifest: tina.manifest, backend: tina.backend, timings: tina.timings, inputSize: tina.inputSize, kMax: tina.kMax, maxClasses: tina.maxClasses };
  },
  async personalize(classes, options) {
    const opts = photosAsPixels(options, pixels); // photo prompts: pixel arrays (structured clone) or transferred bitmaps
    const clf = await tina.personalize(classes, opts);
    for (const list of Object.values(options?.images ?? {})) for (const im of [].concat(list ?? [])) im?.close?.();
    const h = next++;
    classifiers.set(h, clf);
    return describe(h, clf);
  },
  async predict(handle, images, options) {
    const out = await classifiers.get(handle).predict(images.map(pixels), options);
    images.forEach((im) => im?.close?.());
    return out;
  },
  async fromHead(head) {
    const { PersonalizedClassifier } = await import("./classifier.mjs");
    const clf = PersonalizedClassifier.fromHead(tina, head);
    const h = next++;
    classifiers.set(h, clf);
    return describe(h, clf);
  },
  async modelBytes(handle) { return classifiers.get(handle).toModelBytes(); },
  async head(handle) { return classifiers.get(handle).toHead(); },
  async headText(handle) { return classifiers.get(handle).toHeadText(); },
  async metadata(handle) { return classifiers.get(handle).metadata(); },
  async release(handle) { classifiers.delete(handle); },
  async novelty(classes, options) { return tina.novelty(classes, options); },
  async encode(texts) { return tina.encode(texts); },
  async clearCache() { tina.clearCache(); },
  async preload() { await tina.preload(); },
  async dispose() { classifiers.clear(); tina?.dispose(); tina = null; },
};

scope.addEventListener("message", async (ev) => {
  const { id, op, args } = ev.data ?? {};
  if (!(op in ops)) return;
  try {
    if (op !== "open" && !tina) throw Object.assign(new Error("the worker has no bundle open"), { name: "TinaEdgeError" });
    const result = await ops[op](...(args ?? []));
    const transfer = result instanceof Uint8Array ? [result.buffer] : [];
    scope.postMessage({ id, result }, transfer);
  } catch (e) {
    scope.postMessage({ id, error: { name: e?.name ?? "Error", message: String(e?.message ?? e), rule: e?.rule } });
  }
});
