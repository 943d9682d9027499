// Types shared by both entry points (node: node.d.ts, browser: index.d.ts). No DOM types here.

export declare const VERSION: string;

/** Every error this package raises on purpose; the message says what to do. */
export declare class TinaEdgeError extends Error {}
export declare class PromptError extends TinaEdgeError {
  /** The prompt rule that refused the input, as Python's `e.rule` ("duplicate", "confusable", ...). */
  readonly rule?: string;
}
export declare class BundleError extends TinaEdgeError {}
export declare class ImageError extends TinaEdgeError {}
export declare class ArgumentError extends TinaEdgeError {}
export declare class ModelFileError extends TinaEdgeError {}
export declare class BackendError extends TinaEdgeError {}

/** The raw pixels of one image, row-major: RGB or RGBA bytes (grey and grey+alpha too for photo bundles). */
export interface ImageLike {
  data: Uint8Array | Uint8ClampedArray;
  width: number;
  height: number;
}

export interface Tensor {
  shape: number[];
  data: Float32Array;
}

export interface Prediction {
  /** The class name, or "unknown" when the top probability is below minProb. */
  label: string;
  /** The class index, -1 for "unknown". */
  index: number;
  probabilities: Float32Array;
  logits: Float32Array;
}

export interface PredictOptions {
  /** An image whose top probability is below this (0..1) is answered "unknown" (index -1). */
  minProb?: number | null;
}

export interface Sampler {
  sampler: string;
  steps: number;
  /** A number up to 2**53, a decimal string above (exact in the model's metadata either way). */
  seed: number | string;
  candidates: number;
}

export interface Head {
  format: "tina-edge-head";
  version: 1;
  bundle_id: string;
  labels: string[];
  prompt?: string;
  texts?: string[];
  sampler?: Partial<Sampler> & Record<string, unknown>;
  params: Record<string, { shape: number[]; dtype: "float32"; data: string }>;
  producer?: string;
}

export interface Progress {
  file: string;
  loaded: number;
  /** The size the manifest lists (null for manifest.json). */
  total: number | null;
  /** Served from the persistent cache (nothing downloaded). */
  cached: boolean;
}

export interface BundleCache {
  get(sha256: string): Promise<Uint8Array | null>;
  put(sha256: string, bytes: Uint8Array): Promise<void>;
  clear?(): Promise<void>;
}

export interface FromBundleOptions {
  /** An onnxruntime module to use instead of the default. */
  ort?: unknown;
  /** Check every file's size and sha256 against the manifest (default true). The bundle id is always checked. */
  verify?: boolean;
  /** Extra onnxruntime session options. */
  sessionOptions?: Record<string, unknown>;
  /** Load template.onnx so that toModelBytes() works (default true). */
  loadTemplate?: boolean;
  /**
   * Make the classifier's session (the one predict runs) before fromBundle resolves. Default false: it is
   * made on the first predict, so personalize is possible sooner (see TinaEdgeBase.preload).
   */
  preload?: boolean;
  /** Only "wasm" (browser) or "cpu" (onnxruntime-node): others, WebGPU included, raise BackendError. */
  executionProviders?: ("wasm" | "cpu")[];
  /** A custom file reader (name -> bytes) instead of fetch / the file system. */
  read?: (name: string, entry?: { sha256: string; bytes: number } | null) => Promise<Uint8Array>;
  /** Called as bundle files arrive. */
  progress?: (p: Progress) => void;
}

export interface PersonalizeOptions {
  /** Integer seed 0..2**64-1 (a BigInt or a decimal string above 2**53); the same seed gives the same model as Python. Default 0. */
  seed?: number | bigint | string;
  /** One text (or null) per class, or {class name: text}, encoded instead of the class name. */
  descriptions?: (string | null)[] | Record<string, string> | null;
  /**
   * Photo prompts (trunk bundles such as the default one): {class name: 1-20 photos}, each photo
   * {data, width, height} (any size; prepared as predict prepares it). Fused with the class name or
   * description, as Python's personalize(images=...); the model records only how many photos each class had.
   */
  images?: Record<string, ImageLike | ImageLike[]> | null;
  /** true (every class given photos) or class names: those labels are only labels ("Rex"); default false. */
  photosOnly?: boolean | string[];
}

export interface NoveltyReport {
  seen: string[];
  new: string[];
  nearest: Record<string, [string, number][]>;
  confusable: [string, string, number][];
  threshold: number;
  names: {
    name: string; known: boolean; nearest: [string, number][];
    /** Issue 22: the sense an ambiguous name was read in (bundles with senses.json.gz), its alternatives, how to choose. */
    sense?: { sense: string; wnid: string; how: string; encoded_as: string; alternatives: { sense: string; wnid: string }[]; choose: string };
    /** Issue 22: the nearest known names are far, or all of another kind, and what to do. */
    warning?: string;
    /** The known name the conditioning reads instead: a WordNet synonym of it (name-table alias) or another spelling. */
    reads_as?: string;
  }[];
}

export declare class PersonalizedClassifier {
  readonly labels: string[];
  readonly params: Record<string, Tensor>;
  readonly prompt: string;
  /** The text encoded per class; null for a photos-only class (its label is only a label). */
  readonly texts: (string | null)[];
  readonly sampler: Sampler;
  readonly bundleId: string;
  /** Photo prompts: {class: number of photos}, what the model records of them (null without photos). */
  readonly imagePrompts: Record<string, number> | null;
  readonly timings: { encodeMs?: number; generateMs?: number; photosMs?: number };
  readonly k: number;
  /** Classify decoded images: of any size (grey/grey+alpha/RGB/RGBA) when the bundle's manifest has
   * template.input.preprocess, else RGB/RGBA at the bundle's input size. */
  predict(images: ImageLike | ImageLike[], options?: PredictOptions): Promise<Prediction[]>;
  /** metadata_props of the standalone model, the strings Python writes (labels, prompt, texts, bundle_id, sampler, params, producer, preprocess, image_prompts). */
  metadata(): Record<string, string>;
  /** The standalone model.onnx: the bundle's template with this classifier's tensors filled in. */
  toModelBytes(): Uint8Array;
  /** The portable head (labels + tensors + bundle id), docs/PORTABLE.md. */
  toHead(): Head;
  /** The head as JSON text, as Python writes it (exact seeds above 2**53). */
  toHeadText(): string;
  static fromHead(tina: TinaEdgeBase, head: Head | string): PersonalizedClassifier;
}

export declare class TinaEdgeBase {
  readonly manifest: Record<string, any>;
  /** Which onnxruntime runs: "onnxruntime-node", "onnxruntime-web (wasm)" or "custom". */
  readonly backend: string;
  readonly kMax: number;
  /** The most classes one prompt may name (1000; above kMax they are generated in groups). */
  readonly maxClasses: number;
  /** [height, width] of the classifier input, from the manifest. */
  readonly inputSize: [number, number];
  readonly timings: { createMs: number; openMs: number; tokenizerMs: number; sessionsMs: number; fileMs: number; perSession: Record<string, number>; bytesRead: number };
  /** Size of the text-embedding cache (entries). */
  cacheSize: number;
  tokenize(texts: string[]): number[][];
  /** L2-normalised embeddings, n * D values. */
  encode(texts: string[]): Promise<Float32Array>;
  /** Forget cached text embeddings. */
  clearCache(): void;
  /**
   * Make the classifier's session now (it is otherwise made on the first predict, once, however many
   * predicts start together): the first predict is then as fast as the later ones.
   */
  preload(): Promise<void>;
  /** Release the onnxruntime sessions; this object cannot run afterwards. */
  dispose(): void;
  /** Which names the bundle was trained on, nearest known names of the others, confusable pairs. */
  novelty(classes: string | string[], options?: Pick<PersonalizeOptions, "descriptions">): Promise<NoveltyReport>;
  personalize(classes: string | string[], options?: PersonalizeOptions): Promise<PersonalizedClassifier>;
}

/** labels and other metadata_props of a model.onnx, read without onnxruntime's (absent) metadata API. */
export declare function readModelMetadata(modelBytes: Uint8Array): Record<string, string>;
export declare function fillTemplate(templateBytes: Uint8Array, params: Record<string, Tensor>, k: number,
  metadata: Record<string, string>): Uint8Array;
export declare function parseClasses(prompt: string | string[]): string[];
/** The classes of a classes file: one name per line, blank and "#" lines ignored (Python's classes_from_lines). */
export declare function classesFromLines(text: string): string[];
/** The one notion of class identity (Python's class_key): NFKC, case-folded, "_", "-" and spaces one. */
export declare function classKey(name: string): string;
/** classKey with Greek and Cyrillic look-alikes of Latin letters replaced (Python's skeleton). */
export declare function skeleton(name: string): string;
export declare function descriptionTexts(names: string[], descriptions: PersonalizeOptions["descriptions"]): string[];
export declare function checkSeed(seed: number | bigint | string): bigint;
export declare function computeBundleId(tree: unknown): Promise<string>;
export declare function parseManifest(bytes: Uint8Array): Promise<{ manifest: Record<string, any>; id: string; tree: unknown }>;
export declare function noveltyLines(report: NoveltyReport): string[];
export declare function readNpy(bytes: Uint8Array, name?: string): { shape: number[]; data: Float32Array };
export declare const HEAD_FORMAT: "tina-edge-head";
export declare const UNKNOWN: "unknown";
export declare function portableNormal(seed: number | bigint, count: number): Float32Array;
export declare function standardNormal64(seed: number | bigint, count: number): Float64Array;
export declare function splitmix64Word(seed: number | bigint, n: number | bigint): bigint;
/** The manifest's template.input.preprocess (docs/PORTABLE.md). */
export interface PreprocessSpec {
  size: number; resize?: "shorter_side"; crop?: "center"; crop_fraction?: number;
  interpolation?: "bilinear" | "bicubic" | "nearest"; alpha?: "white"; grey?: "replicate";
}
/** The one validator of a photo policy (Python's PreprocessSpec.from_dict): the full policy, or an error with its message. */
export declare function preprocessSpec(policy: unknown): Required<PreprocessSpec>;
/** A photo of any size -> RGB bytes at size x size, byte-identical to Python's runtime.preprocess.prepare. */
export declare function prepareImage(image: ImageLike, spec: PreprocessSpec, name?: string): ImageLike;
/** Grey, grey+alpha, RGB or RGBA bytes -> RGB bytes with alpha composited on white (Pillow's arithmetic). */
export declare function toRgbOnWhite(data: Uint8Array | Uint8ClampedArray, width: number, height: number): Uint8Array;
