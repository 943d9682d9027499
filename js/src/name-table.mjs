// The bundle's name table (Python: runtime/name_table.py, which says why): precomputed embeddings,
// in the text encoder's space, of WordNet's visible nouns as a larger encoder reads them. A text
// whose class key is in the table skips the text encoder; a vector is int8 x its row's float32
// scale, rounded to float32: bit-identical to Python's.
import { BundleError } from "./errors.mjs";
import { classKey } from "./prompt.mjs";
import { inflateBounded } from "./senses.mjs";
import { readNpy } from "./novelty.mjs";

export const FORMAT = "tina-edge-name-table";
export const VERSION = 1;
export const MAX_JSON_BYTES = 16 * 1024 * 1024;
export const MAX_NAMES = 200000;

export class NameTable {
  constructor(keys, vectors, scales, dim, aliases = {}, source = {}) {
    this.index = new Map(keys.map((k, i) => [k, i]));
    this.aliases = new Map(Object.entries(aliases)); // class key -> the vocabulary name it reads as
    this.source = source; // how it was built (encoder, prior graph's sha256, ...)
    this.vectors = vectors; // Int8Array [N * dim]
    this.scales = scales; // Float32Array [N]
    this.dim = dim;
  }

  get size() { return this.index.size; }

  /** Parse and check both files (the bundle verified their sizes and sha256); BundleError if malformed. */
  static async fromBytes(table, vectors, dim, what = "name table") {
    const bad = (why) => new BundleError(`bundle file ${what} is not a usable name table: ${why}`.slice(0, 260));
    let d;
    try {
      d = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(await inflateBounded(table, what, MAX_JSON_BYTES, "name table")));
    } catch (e) {
      if (e instanceof BundleError) throw e;
      throw bad(String(e.message ?? e));
    }
    if (!d || typeof d !== "object" || d.format !== FORMAT || d.version !== VERSION) {
      throw bad(`format ${JSON.stringify(d?.format)} version ${JSON.stringify(d?.version)}, expected "${FORMAT}" ${VERSION}`);
    }
    const { keys, scales } = d;
    if (!Array.isArray(keys) || !Array.isArray(scales) || keys.length !== scales.length) throw bad("keys and scales must be two lists of one length");
    if (keys.length > MAX_NAMES) throw bad(`${keys.length} keys; at most ${MAX_NAMES}`);
    // keys are class keys as the writer makes them (one that is not is never matched; re-deriving 33,000 costs ~100 ms)
    if (keys.some((k) => typeof k !== "string" || !k || k.includes("("))) {
      throw bad("every key must be a non-empty class key without a qualifier (prompt.mjs classKey)");
    }
    if (new Set(keys).size !== keys.length) throw bad("a key is listed twice");
    if (scales.some((s) => typeof s !== "number" || !Number.isFinite(s) || s <= 0)) throw bad("every scale must be a finite positive number");
    const v = readNpy(vectors, what.replace(/\.json(\.gz)?$/, ".npy"), { int8: true });
    if (v.shape.length !== 2 || v.shape[0] !== keys.length || v.shape[1] !== dim) {
      throw new BundleError(`the name table's vectors are int8[${v.shape}]; its keys and the text encoder promise int8[${keys.length}, ${dim}]: re-export the bundle`);
    }
    const aliases = d.aliases ?? {};
    if (typeof aliases !== "object" || Array.isArray(aliases) || Object.keys(aliases).length > MAX_NAMES
        || Object.entries(aliases).some(([k, a]) => !k || k.includes("(") || typeof a !== "string" || !a)) {
      throw bad("aliases must map class keys without a qualifier to vocabulary names");
    }
    const source = d.source ?? {};
    if (typeof source !== "object" || Array.isArray(source) || source === null) throw bad("source must be an object");
    return new NameTable(keys, v.data, Float32Array.from(scales), dim, aliases, source);
  }

  /** The vocabulary name `text` reads as (its WordNet synset is that name's: Python's NameTable.alias), or null. */
  alias(text) { return this.aliases.get(classKey(text)) ?? null; }

  /** Whether a class key can be in a table at all: a qualified name ("mouse (rodent)") never is. */
  static mayHold(key) { return !key.includes("("); }

  /** The table's embedding of `text` (by its class key), or null when the table does not hold it. */
  get(text) {
    const i = this.index.get(classKey(text));
    if (i === undefined) return null;
    const s = this.scales[i];
    const out = new Float32Array(this.dim);
    for (let j = 0; j < this.dim; j++) out[j] = Math.fround(this.vectors[i * this.dim + j] * s);
    return out;
  }
}
