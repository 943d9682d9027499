// TinaEdge.inWorker: the page's side. The bundle, its sessions and the classifiers live in a Web
// Worker (worker.mjs); the page keeps proxies with the same methods, all async. Images go over as
// decoded pixels or as transferred ImageBitmaps (decoded off the main thread), so no task on the
// page lasts longer than a postMessage.
import * as errors from "./errors.mjs";

function rebuild(err) {
  const Cls = errors[err.name] && errors[err.name].prototype instanceof Error ? errors[err.name] : Error;
  const e = new Cls(err.message);
  if (Cls === Error) e.name = err.name;
  if (err.rule !== undefined) e.rule = err.rule; // PromptError's rule survives the Worker boundary
  return e;
}

class Channel {
  constructor(worker, onProgress) {
    this.worker = worker;
    this.pending = new Map();
    this.next = 1;
    this.onProgress = onProgress;
    worker.addEventListener("message", (ev) => {
      const m = ev.data;
      if (m?.progress) return this.onProgress?.(m.progress);
      if (m?.compileWasm) return this.onCompileWasm?.(m.compileWasm);
      const p = this.pending.get(m?.id);
      if (!p) return;
      this.pending.delete(m.id);
      if (m.error) p.reject(rebuild(m.error));
      else p.resolve(m.result);
    });
    worker.addEventListener("error", (ev) => {
      const e = new errors.TinaEdgeError(`the tina-edge worker failed to start or crashed (${ev.message ?? "no message"}); ` +
        "check workerUrl (bundled apps: build src/worker.mjs as its own entry)");
      for (const p of this.pending.values()) p.reject(e);
      this.pending.clear();
    });
  }
  call(op, args = [], transfer = []) {
    const id = this.next++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ id, op, args }, transfer);
    });
  }
}

async function toTransferable(im) {
  if (im && im.data && im.width && im.height) return im;
  if (typeof createImageBitmap === "function") return createImageBitmap(im); // decoded off the main thread
  throw new errors.ImageError("pass {data, width, height} or an image source createImageBitmap accepts");
}

/** A classifier living in the worker: the same methods as PersonalizedClassifier, all async. */
export class WorkerClassifier {
  constructor(channel, d) {
    Object.assign(this, d);
    this._ch = channel;
  }
  async predict(images, options) {
    const list = await Promise.all((Array.isArray(images) ? images : [images]).map(toTransferable));
    const transfer = list.filter((x) => typeof ImageBitmap !== "undefined" && x instanceof ImageBitmap);
    return this._ch.call("predict", [this.handle, list, options ?? {}], transfer);
  }
  toModelBytes() { return this._ch.call("modelBytes", [this.handle]); }
  toHead() { return this._ch.call("head", [this.handle]); }
  toHeadText() { return this._ch.call("headText", [this.handle]); }
  metadata() { return this._ch.call("metadata", [this.handle]); }
  /** Free this classifier's tensors in the worker. */
  release() { return this._ch.call("release", [this.handle]); }
}

/** TinaEdge in a Web Worker: personalize and predict run off the page's main thread. */
export class WorkerTinaEdge {
  static async open(url, { workerUrl, worker, progress, ...options } = {}) {
    const w = worker ?? new Worker(workerUrl ?? new URL("./worker.mjs", import.meta.url), { type: "module" });
    const ch = new Channel(w, progress);
    // The worker names onnxruntime's wasm file as it starts (options.wasmPaths; compileOnPage: false, never). Compiled
    // here, on the page, a returning visit's compile is restored from Chromium's wasm code cache (which a worker, ended
    // by the next reload before Chromium writes its code, mostly misses); the worker's own compile of the same bytes, a
    // moment later, is then given this compiled module by V8 (one per set of bytes in a process) instead of compiling
    // hundreds to thousands of functions lazily (README, "A worker's returning visit"). Kept until the worker is ready.
    let compiled = null;
    ch.onCompileWasm = (wasmUrl) => {
      if (compiled || typeof WebAssembly?.compileStreaming !== "function" || typeof fetch !== "function") return;
      compiled = WebAssembly.compileStreaming(fetch(wasmUrl, { credentials: "same-origin" })).catch(() => null);
    };
    const base = String(new URL(String(url), globalThis.location?.href ?? undefined));
    try {
      const info = await ch.call("open", [base, options]);
      return Object.assign(new WorkerTinaEdge(), info, { _ch: ch, worker: w });
    } finally {
      ch.onCompileWasm = null;
    }
  }
  /** options.images (photo prompts): pixel arrays go by structured clone, image sources as transferred bitmaps. */
  async personalize(classes, options) {
    const opts = { ...(options ?? {}) };
    const transfer = [];
    if (opts.images && typeof opts.images === "object" && !Array.isArray(opts.images)) {
      const images = {};
      for (const [name, list] of Object.entries(opts.images)) {
        const conv = async (im) => {
          const x = await toTransferable(im);
          if (typeof ImageBitmap !== "undefined" && x instanceof ImageBitmap) transfer.push(x);
          return x;
        };
        images[name] = Array.isArray(list) ? await Promise.all(list.map(conv)) : list == null ? list : await conv(list);
      }
      opts.images = images;
    }
    return new WorkerClassifier(this._ch, await this._ch.call("personalize", [classes, opts], transfer));
  }
  async fromHead(head) { return new WorkerClassifier(this._ch, await this._ch.call("fromHead", [head])); }
  novelty(classes, options) { return this._ch.call("novelty", [classes, options ?? {}]); }
  encode(texts) { return this._ch.call("encode", [texts]); }
  clearCache() { return this._ch.call("clearCache"); }
  /** Make the classifier's session in the worker now rather than on the first predict (TinaEdge.preload). */
  async preload() { await this._ch.call("preload"); }
  /** Release the sessions and end the worker. */
  async dispose() {
    await this._ch.call("dispose").catch(() => {});
    this.worker.terminate?.();
  }
}
