// Node entry point: onnxruntime-node when it is installed (an optional peer dependency: bit-identical
// to Python, 5x faster to load), else onnxruntime-web's wasm build, with a warning; `tina.backend`
// says which runs. Bundles are read from a directory or downloaded from a URL into a cache
// directory (content-addressed by sha256: a second run downloads nothing).
import fs from "node:fs";
import fsp from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { TinaEdge as Core } from "./core.mjs";
import { BundleError, ImageError, ModelFileError } from "./errors.mjs";
import { urlReader } from "./fetch.mjs";
import { PersonalizedModel } from "./model.mjs";

export * from "./exports.mjs";
export { evaluate, evaluationDict, formatEvaluation, confusionMatrix, answerIndex } from "./evaluate.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO_BUNDLE = path.resolve(HERE, "../../tina_edge/bundles/default");
const BUNDLE_PACKAGE = "tina-edge-default-bundle";

/** The default bundle directory: $TINA_EDGE_BUNDLE, the tina-edge-default-bundle package, or a repository checkout's. */
export function defaultBundle() {
  if (process.env.TINA_EDGE_BUNDLE) return process.env.TINA_EDGE_BUNDLE;
  try {
    const req = createRequire(import.meta.url);
    return path.dirname(req.resolve(`${BUNDLE_PACKAGE}/manifest.json`));
  } catch { /* not installed */ }
  if (fs.existsSync(path.join(REPO_BUNDLE, "manifest.json"))) return REPO_BUNDLE;
  throw new BundleError(`no bundle given and none installed; npm install ${BUNDLE_PACKAGE}, or pass a bundle directory or URL ` +
    "(see js/README.md, \"Getting a model\")");
}
/** @deprecated the repository's bundle path; use defaultBundle(). */
export const DEFAULT_BUNDLE = REPO_BUNDLE;

let warned = false;
/** {ort, backend}: onnxruntime-node when installed, else onnxruntime-web (wasm) with one warning. */
export async function loadOrt({ quiet = false } = {}) {
  try {
    return { ort: await import("onnxruntime-node"), backend: "onnxruntime-node" };
  } catch {
    const ort = await import("onnxruntime-web");
    if (!quiet && !warned && !process.env.TINA_EDGE_QUIET) {
      warned = true;
      process.emitWarning("onnxruntime-node is not installed: tina-edge runs onnxruntime-web's wasm build in node " +
        "(about 5x slower to load, not bit-identical to Python); npm install onnxruntime-node", { code: "TINA_EDGE_WASM" });
    }
    return { ort, backend: "onnxruntime-web (wasm)" };
  }
}

/** A reader of a bundle directory. */
export function dirReader(dir) {
  return async (name) => {
    try {
      return new Uint8Array(await fsp.readFile(path.join(dir, name)));
    } catch (e) {
      throw new BundleError(`cannot read bundle file ${name} in ${dir} (${e.code ?? e.message}); pass a tina-edge bundle directory`);
    }
  };
}

/** The cache directory for downloaded bundle files: $TINA_EDGE_CACHE, else $XDG_CACHE_HOME/tina-edge or ~/.cache/tina-edge. */
export function defaultCacheDir() {
  return process.env.TINA_EDGE_CACHE ?? path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), ".cache"), "tina-edge");
}

/** A content-addressed file cache (name: sha256); writes go through a temp file removed on failure. */
export function dirCache(dir) {
  const file = (sha) => path.join(dir, "sha256", sha);
  return {
    dir,
    async get(sha) {
      try { return new Uint8Array(await fsp.readFile(file(sha))); } catch { return null; }
    },
    async put(sha, bytes) {
      await fsp.mkdir(path.dirname(file(sha)), { recursive: true });
      await writeFileAtomic(file(sha), bytes);
    },
    async clear() { await fsp.rm(path.join(dir, "sha256"), { recursive: true, force: true }); },
  };
}

/** Write `data` to `file` through `file.tmp-PID-N`, renamed into place; the temp is removed on any failure. */
let tmpCount = 0;
export async function writeFileAtomic(file, data) {
  const tmp = `${file}.tmp-${process.pid}-${tmpCount++}`;
  try {
    await fsp.writeFile(tmp, data, { flag: "wx" });
    await fsp.rename(tmp, file);
  } catch (e) {
    await fsp.rm(tmp, { force: true }).catch(() => {});
    throw e;
  }
}

/**
 * Decode a photo file (JPEG, PNG, WebP, ...) to {data, width, height} with `sharp`, an optional
 * dependency (npm install sharp): EXIF orientation applied, as Python's loader does. Pixel bytes
 * may differ from Pillow's JPEG decoder by a unit here and there (libjpeg-turbo builds differ).
 */
export async function readImage(file, { maxPixels = 64e6 } = {}) {
  let sharp;
  try {
    sharp = (await import("sharp")).default;
  } catch {
    throw new ImageError("decoding image files in node needs the optional dependency sharp: npm install sharp " +
      "(or decode the photo yourself and pass {data, width, height})");
  }
  try {
    const { data, info } = await sharp(file, { limitInputPixels: maxPixels, failOn: "error" }).rotate().raw()
      .toBuffer({ resolveWithObject: true });
    return { data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width: info.width, height: info.height };
  } catch (e) {
    throw new ImageError(`cannot read ${file} as an image (${String(e.message).slice(0, 160)}); pass a JPEG, PNG or WebP photo`);
  }
}

/** A standalone model.onnx (a path or its bytes), run on onnxruntime-node when installed. */
export async function loadModel(fileOrBytes, options = {}) {
  const { ort } = options.ort ? { ort: options.ort } : await loadOrt(options);
  let bytes = fileOrBytes;
  if (typeof fileOrBytes === "string") {
    try { bytes = new Uint8Array(await fsp.readFile(fileOrBytes)); } catch (e) {
      throw new ModelFileError(`cannot read ${fileOrBytes} (${e.code ?? e.message}); pass a model.onnx written by tina-edge personalize`);
    }
  }
  return PersonalizedModel.load(ort, bytes, typeof fileOrBytes === "string" ? fileOrBytes : "model.onnx");
}

export class TinaEdge extends Core {
  /**
   * Open a bundle: a directory, or an http(s) URL downloaded into `cacheDir` (default
   * defaultCacheDir(); false: no cache) with `progress` callbacks. Default: defaultBundle().
   */
  static async fromBundle(dirOrUrl, options = {}) {
    const src = String(dirOrUrl ?? defaultBundle());
    const { ort, backend } = options.ort ? { ort: options.ort, backend: options.backend ?? "custom" } : await loadOrt(options);
    let read = options.read;
    if (!read) {
      if (/^https?:\/\//.test(src)) {
        const cache = options.cacheDir === false ? null : dirCache(options.cacheDir ?? defaultCacheDir());
        read = urlReader(src, { progress: options.progress, cache });
      } else {
        const base = dirReader(src);
        read = options.progress ? async (name, entry) => {
          const b = await base(name);
          options.progress({ file: name, loaded: b.byteLength, total: entry?.bytes ?? b.byteLength, cached: true });
          return b;
        } : base;
      }
    }
    const t = await Core.create(ort, read, { ...options, where: src });
    t.backend = backend;
    return Object.setPrototypeOf(t, TinaEdge.prototype);
  }

  /** Personalize; the classifier's predict refuses file paths and encoded bytes with a clear error. */
  async personalize(classes, options) {
    const clf = await super.personalize(classes, options);
    const predict = clf.predict.bind(clf);
    clf.predict = (images, opts) => {
      for (const im of Array.isArray(images) ? images : [images]) {
        if (typeof im === "string" || (im instanceof Uint8Array && !("width" in im))) {
          throw new ImageError("predict takes decoded pixels {data, width, height}, not a path or encoded bytes; decode the photo " +
            "first, e.g. with sharp: const {data, info} = await sharp(file).raw().toBuffer({resolveWithObject: true}); " +
            "predict({data, width: info.width, height: info.height})");
        }
      }
      return predict(images, opts);
    };
    return clf;
  }
}

export default TinaEdge;
