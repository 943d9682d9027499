// Types of the tina-edge JavaScript package (browser entry: src/index.mjs; node: src/node.mjs).

export declare const VERSION: string;

export declare class TinaEdgeError extends Error {}

/** The raw pixels of one image, row-major: RGB or RGBA bytes (grey and grey+alpha too for photo bundles). */
export interface ImageLike {
  data: Uint8Array | Uint8ClampedArray;
  width: number;
  height: number;
}

/** A browser image source that TinaEdge (browser build) resizes to the bundle's input size. */
export type ImageSource = ImageLike | ImageData | ImageBitmap | HTMLImageElement | HTMLCanvasElement
  | HTMLVideoElement | OffscreenCanvas;

export interface Tensor {
  shape: number[];
  data: Float32Array;
}

export interface Prediction {
  label: string;
  index: number;
  probabilities: Float32Array;
  logits: Float32Array;
}

export interface Head {
  format: "tina-edge-head";
  version: 1;
  bundle_id: string;
  labels: string[];
  prompt?: string;
  texts?: string[];
  sampler?: Record<string, unknown>;
  params: Record<string, { shape: number[]; dtype: "float32"; data: string }>;
  producer?: string;
}

export interface FromBundleOptions {
  /** An onnxruntime module to use instead of the default (onnxruntime-web / onnxruntime-node). */
  ort?: unknown;
  /** Check every file's size and sha256 against the manifest (default true). */
  verify?: boolean;
  /** Extra onnxruntime session options. */
  sessionOptions?: Record<string, unknown>;
  /** Load template.onnx so that toModelBytes() works (default true). */
  loadTemplate?: boolean;
  executionProviders?: string[];
  /** Browser: a custom file reader (name -> bytes) instead of fetch. */
  read?: (name: string) => Promise<Uint8Array>;
}

export interface PersonalizeOptions {
  /** Integer seed (BigInt above 2**53); the same seed gives the same model as Python. Default 0. */
  seed?: number | bigint;
  /** One text (or null) per class, encoded instead of the class name. */
  descriptions?: (string | null)[] | null;
}

export declare class PersonalizedClassifier {
  readonly labels: string[];
  readonly params: Record<string, Tensor>;
  readonly prompt: string;
  readonly texts: string[];
  readonly sampler: Record<string, unknown>;
  readonly bundleId: string;
  readonly timings: { encodeMs?: number; generateMs?: number };
  readonly k: number;
  /** Classify images (node: ImageLike, of any size with grey/grey+alpha/RGB/RGBA bytes when the bundle's
   * manifest has template.input.preprocess, else at the bundle's size; browser: any ImageSource). */
  predict(images: ImageSource | ImageSource[]): Promise<Prediction[]>;
  /** metadata_props of the standalone model (labels, prompt, texts, bundle_id, sampler, params, producer). */
  metadata(): Record<string, string>;
  /** The standalone model.onnx: the bundle's template with this classifier's tensors filled in. */
  toModelBytes(): Uint8Array;
  /** The portable head JSON (labels + tensors + bundle id), docs/PORTABLE.md. */
  toHead(): Head;
  static fromHead(tina: TinaEdge, head: Head | string): PersonalizedClassifier;
}

export declare class TinaEdge {
  /** Browser: a bundle URL (directory served over HTTP). Node: a directory or URL (default: the repository's bundle). */
  static fromBundle(urlOrDir?: string, options?: FromBundleOptions): Promise<TinaEdge>;
  readonly manifest: Record<string, any>;
  readonly kMax: number;
  /** [height, width] of the classifier input, from the manifest. */
  readonly inputSize: [number, number];
  readonly timings: { createMs: number; sessionsMs: number; fileMs: number; perSession: Record<string, number>; bytesRead: number };
  tokenize(texts: string[]): number[][];
  /** L2-normalised embeddings, n * D values. */
  encode(texts: string[]): Promise<Float32Array>;
  personalize(classes: string | string[], options?: PersonalizeOptions): Promise<PersonalizedClassifier>;
}

export default TinaEdge;

/** labels and other metadata_props of a model.onnx, read without onnxruntime's (absent) metadata API. */
export declare function readModelMetadata(modelBytes: Uint8Array): Record<string, string>;
export declare function fillTemplate(templateBytes: Uint8Array, params: Record<string, Tensor>, k: number,
  metadata: Record<string, string>): Uint8Array;
export declare function parseClasses(prompt: string | string[]): string[];
export declare function portableNormal(seed: number | bigint, count: number): Float32Array;
export declare function standardNormal64(seed: number | bigint, count: number): Float64Array;
export declare function splitmix64Word(seed: number | bigint, n: number | bigint): bigint;
/** The manifest's template.input.preprocess (docs/PORTABLE.md). */
export interface PreprocessSpec {
  size: number; resize?: "shorter_side"; crop?: "center"; crop_fraction?: number;
  interpolation?: "bilinear" | "bicubic"; alpha?: "white"; grey?: "replicate";
}
/** A photo of any size -> RGB bytes at size x size, byte-identical to Python's runtime.preprocess.prepare. */
export declare function prepareImage(image: ImageLike, spec: PreprocessSpec): ImageLike;
/** Grey, grey+alpha, RGB or RGBA bytes -> RGB bytes with alpha composited on white (Pillow's arithmetic). */
export declare function toRgbOnWhite(data: Uint8Array | Uint8ClampedArray, width: number, height: number): Uint8Array;
/** Browser only: the pixels of an image source at its own size (RGBA), for photo bundles. */
export declare function toPixels(source: ImageSource): ImageLike;
/** Browser only: draw an image source at width x height (RGBA). */
export declare function toInput(source: ImageSource, width: number, height: number): ImageLike;
/** Node only: the repository's default bundle directory. */
export declare const DEFAULT_BUNDLE: string;
