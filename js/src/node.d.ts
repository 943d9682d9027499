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

/** evaluate(): accuracy, per-class recall and the confusion matrix of answers against true classes. */
export interface Evaluation {
  readonly labels: string[];
  /** The labels, plus "unknown" last when a minProb was given. */
  readonly columns: string[];
  /** confusion[i][j]: images of labels[i] answered columns[j]. */
  readonly confusion: number[][];
  readonly minProb: number | null;
  readonly n: number;
  readonly correct: number;
  readonly accuracy: number;
  /** Recall per label; null for a label with no images. */
  readonly perClass: Record<string, number | null>;
  /** Images answered "unknown" (below minProb; counted as wrong). */
  readonly unknown: number;
}
/** What a walk of evaluate's folder found (the CLI's src/image-folders.mjs labelledImages), for the JSON and text forms. */
export interface LabelledFolder {
  folders: Record<string, string>;
  unmatchedFolders: string[];
  missingLabels: string[];
  skippedFiles: string[];
  unusable: [string, string][];
}
/**
 * Evaluate answers: `targets` the true label index per image; `predictions` per image predict()'s result
 * or its probability vector, answered by predict's rule (first largest; "unknown" below minProb).
 */
export declare function evaluate(labels: string[], targets: ArrayLike<number>,
  predictions: Array<{ probabilities: ArrayLike<number> } | ArrayLike<number>>, options?: { minProb?: number | null }): Evaluation;
/** The JSON Python's `tina-edge evaluate --json` prints (accuracy, per_class, confusion, labels, columns, n, min_prob, unknown, ...). */
export declare function evaluationDict(ev: Evaluation, data?: LabelledFolder | null): Record<string, unknown>;
/** The text Python's `tina-edge evaluate` prints: accuracy, per-class recall table, confusion matrix. */
export declare function formatEvaluation(ev: Evaluation, data?: LabelledFolder | null): string;
/** [k][k(+1)] counts of (true, answered) pairs; an answer -1 goes to the extra "unknown" column. */
export declare function confusionMatrix(targets: ArrayLike<number>, answers: ArrayLike<number>, k: number, withUnknown: boolean): number[][];
/** predict's answer for one probability vector: the first largest index, -1 below minProb. */
export declare function answerIndex(probabilities: ArrayLike<number>, minProb?: number | null): number;
