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
}

/** What personalize returns in the browser: predict also takes canvases, bitmaps and <img> elements. */
export interface BrowserClassifier extends PersonalizedClassifier {
  predict(images: ImageSource | ImageSource[], options?: PredictOptions): Promise<Prediction[]>;
}

export declare class TinaEdge extends TinaEdgeBase {
  /** A bundle folder served over HTTP: files checked as they arrive, progress, Cache API. */
  static fromBundle(url: string, options?: BrowserFromBundleOptions): Promise<TinaEdge>;
  personalize(classes: string | string[], options?: import("./common.js").PersonalizeOptions): Promise<BrowserClassifier>;
}
export default TinaEdge;

/** The pixels of an image source at its own size (RGBA), for photo bundles. */
export declare function toPixels(source: ImageSource): ImageLike;
/** Draw an image source at width x height (RGBA). */
export declare function toInput(source: ImageSource, width: number, height: number): ImageLike;
export declare function browserCache(name?: string): (BundleCache & { clear(): Promise<void> }) | null;
export declare function urlReader(base: string, options?: { progress?: FromBundleOptions["progress"]; cache?: BundleCache | null;
  fetch?: (url: { href: string }) => Promise<unknown> }): (name: string, entry?: { sha256: string; bytes: number } | null) => Promise<Uint8Array>;
