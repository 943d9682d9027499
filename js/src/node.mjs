// Node entry point: onnxruntime-node (falls back to onnxruntime-web's wasm build) and bundles
// read from a directory. `TinaEdge.fromBundle(dir)` defaults to the repository's default bundle.
import fs from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { TinaEdge as Core } from "./core.mjs";

export { TinaEdgeError, Bundle, sliceClasses, VERSION } from "./core.mjs";
export { PersonalizedClassifier, readModelMetadata, fillTemplate, HEAD_FORMAT } from "./classifier.mjs";
export { portableNormal, standardNormal64, splitmix64Word } from "./noise.mjs";
export { parseClasses } from "./prompt.mjs";
export { prepareImage, toRgbOnWhite } from "./preprocess.mjs";

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const DEFAULT_BUNDLE = path.resolve(HERE, "../../tina_edge/bundles/default");

async function loadOrt() {
  try {
    return await import("onnxruntime-node");
  } catch {
    return await import("onnxruntime-web");
  }
}

export function dirReader(dir) {
  return async (name) => new Uint8Array(await fs.readFile(path.join(dir, name)));
}

function urlReader(base) {
  const root = base.endsWith("/") ? base : base + "/";
  return async (name) => {
    const r = await fetch(new URL(name, root));
    if (!r.ok) throw new Error(`GET ${name}: HTTP ${r.status}`);
    return new Uint8Array(await r.arrayBuffer());
  };
}

export class TinaEdge extends Core {
  /** Open a bundle directory or http(s) URL (default: TINA_EDGE_BUNDLE or the repository's default). */
  static async fromBundle(dirOrUrl, options = {}) {
    const src = dirOrUrl ?? process.env.TINA_EDGE_BUNDLE ?? DEFAULT_BUNDLE;
    const ort = options.ort ?? (await loadOrt());
    const read = /^https?:\/\//.test(String(src)) ? urlReader(String(src)) : dirReader(String(src));
    const t = await Core.create(ort, read, options);
    return Object.setPrototypeOf(t, TinaEdge.prototype);
  }
}

export default TinaEdge;
