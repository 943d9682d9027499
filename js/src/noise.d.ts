export declare const GENERATOR: "splitmix64-boxmuller";
export declare const VERSION: 1;
/** word(seed, n) of the SplitMix64 stream (docs/PORTABLE.md). */
export declare function splitmix64Word(seed: number | bigint, n: number | bigint): bigint;
/** The first `count` standard normals (float64, before the cast to float32). */
export declare function standardNormal64(seed: number | bigint, count: number): Float64Array;
/** float32 N(0, I) noise: the bundle's starting noise for `seed`, the same as Python's. */
export declare function portableNormal(seed: number | bigint, count: number): Float32Array;
