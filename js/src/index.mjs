// Browser entry point: onnxruntime-web (wasm) and bundles fetched over HTTP.
// `await TinaEdge.fromBundle(url)`, `await tina.personalize("dog, cat", {seed: 0})`,
// `await clf.predict(canvasOrImage)`.
// the wasm-only build: its WebAssembly file is 14 MB; the default build's (WebGPU/JSEP) is 28 MB
import * as ortWeb from "onnxruntime-web/wasm";
import { TinaEdge as Core } from "./core.mjs";
import { ImageError } from "./errors.mjs";
import { urlReader, browserCache } from "./fetch.mjs";
import { WorkerTinaEdge, WorkerClassifier } from "./worker-client.mjs";

export * from "./exports.mjs";
export { urlReader, browserCache, WorkerTinaEdge, WorkerClassifier };

function isBrowserSource(x) {
  return typeof x === "object" && x !== null && ("naturalWidth" in x || "videoWidth" in x || "displayWidth" in x ||
    (typeof ImageBitmap !== "undefined" && x instanceof ImageBitmap) || (typeof HTMLCanvasElement !== "undefined" && x instanceof HTMLCanvasElement) ||
    (typeof OffscreenCanvas !== "undefined" && x instanceof OffscreenCanvas));
}

/**
 * Draw an image source (canvas, ImageBitmap, <img>, <video>, ImageData) at the bundle's input
 * size: {data: RGBA bytes, width, height}, for bundles without template.input.preprocess. Policy of
 * the Python runtime for them: stretch to H x W (bilinear, the browser's smoothing), alpha dropped.
 */
export function toInput(source, width, height) {
  if (source && source.data && source.width === width && source.height === height) return source;
  const canvas = typeof OffscreenCanvas !== "undefined" ? new OffscreenCanvas(width, height)
    : Object.assign(document.createElement("canvas"), { width, height });
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = "low";
  if (source && source.data && source.width) {
    const tmp = typeof OffscreenCanvas !== "undefined" ? new OffscreenCanvas(source.width, source.height)
      : Object.assign(document.createElement("canvas"), { width: source.width, height: source.height });
    tmp.getContext("2d").putImageData(source instanceof ImageData ? source
      : new ImageData(new Uint8ClampedArray(source.data), source.width, source.height), 0, 0);
    source = tmp;
  }
  ctx.drawImage(source, 0, 0, width, height);
  const d = ctx.getImageData(0, 0, width, height);
  return { data: d.data, width, height };
}

/**
 * The pixels of an image source (canvas, ImageBitmap, <img>, <video>, ImageData) at its own size,
 * unscaled: {data: RGBA bytes, width, height}, for bundles that preprocess photos themselves
 * (manifest template.input.preprocess: preprocess.mjs, byte-identical to Python's). Canvas
 * storage is premultiplied in most browsers, so semi-transparent pixels may come back off by a
 * few units before compositing on white; opaque photos are exact.
 */
export function toPixels(source) {
  if (source && source.data && source.width && source.height) return source;
  if (!isBrowserSource(source)) throw new ImageError("toPixels takes a canvas, ImageBitmap, <img>, <video> or {data, width, height}");
  const w = source.naturalWidth || source.videoWidth || source.displayWidth || source.width;
  const h = source.naturalHeight || source.videoHeight || source.displayHeight || source.height;
  const canvas = typeof OffscreenCanvas !== "undefined" ? new OffscreenCanvas(w, h)
    : Object.assign(document.createElement("canvas"), { width: w, height: h });
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(source, 0, 0);
  const d = ctx.getImageData(0, 0, w, h);
  return { data: d.data, width: w, height: h };
}

/** options with each photo prompt (options.images: {class: source | sources}) turned into pixels by `convert`. */
export function photosAsPixels(options, convert) {
  const images = options?.images;
  if (!images || typeof images !== "object" || Array.isArray(images)) return options;
  const one = (im) => (im && im.data && im.width && im.height ? im : convert(im));
  const out = {};
  for (const [name, list] of Object.entries(images)) out[name] = Array.isArray(list) ? list.map(one) : list == null ? list : one(list);
  return { ...options, images: out };
}

export class TinaEdge extends Core {
  /** Fetch a bundle from `url` (a directory served over HTTP) and create its wasm sessions. */
  /**
   * Fetch a bundle from `url` (a folder served over HTTP) and create its wasm sessions. Every file is
   * checked against the manifest's size and sha256 as it arrives; `progress({file, loaded, total,
   * cached})` reports bytes; files are kept in the Cache API (`cache: false` to skip), so a
   * returning visit downloads nothing but the manifest.
   */
  static async fromBundle(url, options = {}) {
    const ort = options.ort ?? ortWeb;
    // where onnxruntime-web finds ort-wasm-simd-threaded.wasm (bundled apps: see README, "Bundlers")
    if (options.wasmPaths) ort.env.wasm.wasmPaths = options.wasmPaths;
    if (options.numThreads) ort.env.wasm.numThreads = options.numThreads;
    const cache = options.cache === false ? null : (options.cache ?? browserCache());
    const read = options.read ?? urlReader(url, { progress: options.progress, cache });
    const t = await Core.create(ort, read, { executionProviders: ["wasm"], ...options, where: String(url) });
    t.backend = "onnxruntime-web (wasm)";
    return Object.setPrototypeOf(t, TinaEdge.prototype);
  }

  /**
   * The same bundle in a Web Worker: personalize and predict never block the page. `workerUrl`:
   * the worker script (default src/worker.mjs beside this module; bundled apps build it as its
   * own entry). Options as fromBundle's (`progress` included); every method is async.
   */
  static inWorker(url, options = {}) {
    return WorkerTinaEdge.open(url, options);
  }

  /** Personalize (photo prompts may be canvases, bitmaps, <img> elements), then wrap predict so it accepts them too. */
  async personalize(classes, options) {
    const clf = await super.personalize(classes, photosAsPixels(options, toPixels));
    const [H, W] = this.inputSize;
    const predict = clf.predict.bind(clf);
    const prepared = Boolean(this.manifest.template.input.preprocess); // photos: predict prepares them as Python does
    clf.predict = (images, opts) => predict((Array.isArray(images) ? images : [images]).map((im) => (prepared ? toPixels(im) : toInput(im, W, H))), opts);
    return clf;
  }
}

export default TinaEdge;
