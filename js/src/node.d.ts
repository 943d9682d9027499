// Types of the node entry point (src/node.mjs): no DOM types needed.
import type { TinaEdgeBase, FromBundleOptions, BundleCache } from "./common.js";
export * from "./common.js";

export interface NodeFromBundleOptions extends FromBundleOptions {
  /** URL bundles: where downloaded files are kept (default defaultCacheDir()); false: no cache. */
  cacheDir?: string | false;
  /** Do not warn when onnxruntime-node is missing. */
  quiet?: boolean;
}

export declare class TinaEdge extends TinaEdgeBase {
  /** A bundle directory or http(s) URL; default: $TINA_EDGE_BUNDLE, the tina-edge-default-bundle package, or a repository checkout's. */
  static fromBundle(dirOrUrl?: string, options?: NodeFromBundleOptions): Promise<TinaEdge>;
}
export default TinaEdge;

/** The default bundle directory (BundleError when none is installed). */
export declare function defaultBundle(): string;
/** @deprecated the repository checkout's bundle path; use defaultBundle(). */
export declare const DEFAULT_BUNDLE: string;
/** $TINA_EDGE_CACHE, else $XDG_CACHE_HOME/tina-edge or ~/.cache/tina-edge. */
export declare function defaultCacheDir(): string;
export declare function dirCache(dir: string): BundleCache & { dir: string };
export declare function dirReader(dir: string): (name: string) => Promise<Uint8Array>;
export declare function writeFileAtomic(file: string, data: Uint8Array | string): Promise<void>;
export declare function loadOrt(options?: { quiet?: boolean }): Promise<{ ort: unknown; backend: string }>;
/** Decode a photo file with the optional dependency sharp (EXIF orientation applied); ImageError without it. */
export declare function readImage(file: string, options?: { maxPixels?: number }): Promise<import("./common.js").ImageLike>;
/** A standalone model.onnx written by tina-edge (Python or JS): labels and photo policy from its metadata. */
export declare class PersonalizedModel {
  readonly labels: string[];
  readonly inputSize: [number, number];
  readonly preprocess: import("./common.js").PreprocessSpec | null;
  predict(images: import("./common.js").ImageLike | import("./common.js").ImageLike[],
    options?: import("./common.js").PredictOptions): Promise<import("./common.js").Prediction[]>;
  dispose(): void;
}
/** Load a standalone model.onnx (path or bytes) on onnxruntime-node when installed. */
export declare function loadModel(fileOrBytes: string | Uint8Array, options?: { ort?: unknown; quiet?: boolean }): Promise<PersonalizedModel>;
