// Types of the browser entry point (src/index.mjs). DOM types are referenced only through the
// global scope, so a project without the DOM lib that resolves this file still compiles.
import type { TinaEdgeBase, FromBundleOptions, BundleCache, ImageLike, Prediction, PredictOptions, PersonalizedClassifier } from "./common.js";
export * from "./common.js";

type G = typeof globalThis;
type Inst<K extends string> = G extends { [P in K]: abstract new (...a: any) => infer T } ? T : never;
/** A browser image source (canvas, ImageBitmap, <img>, <video>, ImageData), or decoded pixels. */
export type ImageSource = ImageLike | Inst<"ImageData"> | Inst<"ImageBitmap"> | Inst<"HTMLImageElement"> | Inst<"HTMLCanvasElement">
  | Inst<"HTMLVideoElement"> | Inst<"OffscreenCanvas">;

export interface BrowserFromBundleOptions extends FromBundleOptions {
  /** The persistent cache (default: the Cache API); false: none. */
  cache?: BundleCache | false;
  /** Where onnxruntime-web finds ort-wasm-simd-threaded.{wasm,mjs} (bundled apps). */
  wasmPaths?: string;
  /** onnxruntime-web's wasm threads (default 1 unless set elsewhere). */
  numThreads?: number;
}

/** personalize's options in the browser: photo prompts may also be canvases, bitmaps and <img> elements. */
export interface BrowserPersonalizeOptions extends Omit<import("./common.js").PersonalizeOptions, "images"> {
  images?: Record<string, ImageSource | ImageSource[]> | null;
}

/** `options` with each photo prompt turned into pixels by `convert` (used by personalize and the worker). */
export declare function photosAsPixels<T extends { images?: unknown } | null | undefined>(options: T, convert: (source: ImageSource) => ImageLike): T;

/** What personalize returns in the browser: predict also takes canvases, bitmaps and <img> elements. */
export interface BrowserClassifier extends PersonalizedClassifier {
  predict(images: ImageSource | ImageSource[], options?: PredictOptions): Promise<Prediction[]>;
}

export interface WorkerOptions extends BrowserFromBundleOptions {
  /** The worker script: src/worker.mjs built as its own entry (default: beside this module). */
  workerUrl?: string | { href: string };
  /** An already created worker running src/worker.mjs. */
  worker?: unknown;
  /** Where onnxruntime-web finds ort-wasm-simd-threaded.{wasm,mjs} (README, "Bundlers"). */
  wasmPaths?: string;
  numThreads?: number;
  /**
   * Compile onnxruntime-web's wasm (the file under `wasmPaths`) on the page while the worker starts, default true:
   * Chromium restores the page's compile from its compiled-code cache on a returning visit, and the worker's
   * compile of the same file gets that code instead of compiling it again (README, "A worker's returning visit").
   */
  compileOnPage?: boolean;
}

/** A classifier living in the worker: PersonalizedClassifier's methods, all async. */
export declare class WorkerClassifier {
  readonly labels: string[];
  readonly params: Record<string, import("./common.js").Tensor>;
  readonly prompt: string;
  readonly texts: (string | null)[];
  readonly sampler: import("./common.js").Sampler;
  readonly bundleId: string;
  readonly imagePrompts: Record<string, number> | null;
  readonly k: number;
  readonly timings: { encodeMs?: number; generateMs?: number; photosMs?: number };
  predict(images: ImageSource | ImageSource[], options?: PredictOptions): Promise<Prediction[]>;
  toModelBytes(): Promise<Uint8Array>;
  toHead(): Promise<import("./common.js").Head>;
  toHeadText(): Promise<string>;
  metadata(): Promise<Record<string, string>>;
  release(): Promise<void>;
}

/** TinaEdge in a Web Worker: the same methods, all async; personalize and predict never block the page. */
export declare class WorkerTinaEdge {
  readonly manifest: Record<string, any>;
  readonly backend: string;
  readonly kMax: number;
  readonly maxClasses: number;
  readonly inputSize: [number, number];
  readonly timings: TinaEdgeBase["timings"];
  personalize(classes: string | string[], options?: BrowserPersonalizeOptions): Promise<WorkerClassifier>;
  fromHead(head: import("./common.js").Head | string): Promise<WorkerClassifier>;
  novelty(classes: string | string[], options?: Pick<import("./common.js").PersonalizeOptions, "descriptions">): Promise<import("./common.js").NoveltyReport>;
  encode(texts: string[]): Promise<Float32Array>;
  clearCache(): Promise<void>;
  /** Make the classifier's session in the worker now rather than on the first predict. */
  preload(): Promise<void>;
  dispose(): Promise<void>;
}

export declare class TinaEdge extends TinaEdgeBase {
  /** The bundle in a Web Worker (see WorkerTinaEdge). */
  static inWorker(url: string, options?: WorkerOptions): Promise<WorkerTinaEdge>;
  /** A bundle folder served over HTTP: files checked as they arrive, progress, Cache API. */
  static fromBundle(url: string, options?: BrowserFromBundleOptions): Promise<TinaEdge>;
  personalize(classes: string | string[], options?: BrowserPersonalizeOptions): Promise<BrowserClassifier>;
}
export default TinaEdge;

/** The pixels of an image source at its own size (RGBA), for photo bundles. */
export declare function toPixels(source: ImageSource): ImageLike;
/** Draw an image source at width x height (RGBA). */
export declare function toInput(source: ImageSource, width: number, height: number): ImageLike;
export declare function browserCache(name?: string): (BundleCache & { clear(): Promise<void> }) | null;
export declare function urlReader(base: string, options?: { progress?: FromBundleOptions["progress"]; cache?: BundleCache | null;
  fetch?: (url: { href: string }) => Promise<unknown> }): (name: string, entry?: { sha256: string; bytes: number } | null) => Promise<Uint8Array>;
