// The bundle id, computed exactly as tina_edge/runtime/manifest.py's compute_bundle_id:
// sha256 of json.dumps(manifest without "bundle_id", sort_keys=True, separators=(",", ":"),
// ensure_ascii=True), first 16 hex digits. JSON.parse loses what Python keeps (1.0 vs 1, big
// integers, duplicate keys' last value), so the manifest text is parsed here into a tree that
// remembers each number's kind, then written back the way Python's json module writes it.
import { BundleError } from "./errors.mjs";

export const MAX_MANIFEST_BYTES = 4 << 20; // runtime/manifest.py MAX_MANIFEST_BYTES
export const MAX_DEPTH = 64; // far deeper than any real manifest (about 5); Python bounds it too

const HEX = "0123456789abcdef";

/** Python's json string encoder with ensure_ascii=True: escapes per UTF-16 unit, lower-case hex. */
function pyString(s) {
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x22) out += '\\"';
    else if (c === 0x5c) out += "\\\\";
    else if (c === 0x0a) out += "\\n";
    else if (c === 0x0d) out += "\\r";
    else if (c === 0x09) out += "\\t";
    else if (c === 0x08) out += "\\b";
    else if (c === 0x0c) out += "\\f";
    else if (c >= 0x20 && c <= 0x7e) out += s[i];
    else out += "\\u" + HEX[(c >> 12) & 15] + HEX[(c >> 8) & 15] + HEX[(c >> 4) & 15] + HEX[c & 15];
  }
  return out + '"';
}

/** repr(float) of Python: shortest round-trip digits; exponent form when exp < -4 or exp >= 16. */
export function pyFloat(x) {
  if (Number.isNaN(x)) return "NaN";
  if (x === Infinity) return "Infinity";
  if (x === -Infinity) return "-Infinity";
  const neg = x < 0 || Object.is(x, -0);
  const [mant, expText] = Math.abs(x).toExponential().split("e");
  const digits = mant.replace(".", "");
  const e = Number(expText);
  let body;
  if (e < -4 || e >= 16) {
    const exp = Math.abs(e) < 10 ? "0" + Math.abs(e) : String(Math.abs(e));
    body = digits[0] + (digits.length > 1 ? "." + digits.slice(1) : "") + "e" + (e < 0 ? "-" : "+") + exp;
  } else if (e < 0) {
    body = "0." + "0".repeat(-e - 1) + digits;
  } else if (digits.length <= e + 1) {
    body = digits + "0".repeat(e + 1 - digits.length) + ".0";
  } else {
    body = digits.slice(0, e + 1) + "." + digits.slice(e + 1);
  }
  return (neg ? "-" : "") + body;
}

/** A strict JSON parser (Python's json.loads grammar, NaN/Infinity included) keeping number kinds. */
class Parser {
  constructor(text, what = "manifest.json", Err = BundleError) { this.s = text; this.i = 0; this.what = what; this.Err = Err; }
  fail(what) { throw new this.Err(`${this.what} is not valid JSON: ${what} at character ${this.i}`); }
  ws() { while (this.i < this.s.length && " \t\n\r".includes(this.s[this.i])) this.i++; }
  value(depth) {
    if (depth > MAX_DEPTH) throw new this.Err(`${this.what} is not usable: its JSON is nested too deeply`);
    this.ws();
    const c = this.s[this.i];
    if (c === "{") return this.object(depth);
    if (c === "[") return this.array(depth);
    if (c === '"') return { t: "s", v: this.string() };
    for (const [word, node] of [["true", { t: "b", v: true }], ["false", { t: "b", v: false }], ["null", { t: "n" }],
      ["NaN", { t: "f", v: NaN }], ["Infinity", { t: "f", v: Infinity }], ["-Infinity", { t: "f", v: -Infinity }]]) {
      if (this.s.startsWith(word, this.i)) { this.i += word.length; return node; }
    }
    const m = /^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?/.exec(this.s.slice(this.i, this.i + 400));
    if (!m || !m[0] || m[0] === "-") this.fail("unexpected character");
    this.i += m[0].length;
    if (m[2] || m[3]) return { t: "f", v: Number(m[0]) };
    return { t: "i", v: BigInt(m[0]) };
  }
  object(depth) {
    this.i++;
    const entries = new Map(); // the last of duplicate keys wins, as in Python
    this.ws();
    if (this.s[this.i] === "}") { this.i++; return { t: "o", v: entries }; }
    for (;;) {
      this.ws();
      if (this.s[this.i] !== '"') this.fail("expected a property name");
      const k = this.string();
      this.ws();
      if (this.s[this.i++] !== ":") this.fail("expected ':'");
      entries.set(k, this.value(depth + 1));
      this.ws();
      const c = this.s[this.i++];
      if (c === "}") return { t: "o", v: entries };
      if (c !== ",") this.fail("expected ',' or '}'");
    }
  }
  array(depth) {
    this.i++;
    const items = [];
    this.ws();
    if (this.s[this.i] === "]") { this.i++; return { t: "a", v: items }; }
    for (;;) {
      items.push(this.value(depth + 1));
      this.ws();
      const c = this.s[this.i++];
      if (c === "]") return { t: "a", v: items };
      if (c !== ",") this.fail("expected ',' or ']'");
    }
  }
  string() {
    const start = ++this.i;
    let out = "";
    let from = start;
    for (;;) {
      if (this.i >= this.s.length) this.fail("unterminated string");
      const c = this.s.charCodeAt(this.i);
      if (c === 0x22) { out += this.s.slice(from, this.i++); return out; }
      if (c < 0x20) this.fail("control character in a string");
      if (c === 0x5c) {
        out += this.s.slice(from, this.i);
        const e = this.s[this.i + 1];
        const simple = { '"': '"', "\\": "\\", "/": "/", b: "\b", f: "\f", n: "\n", r: "\r", t: "\t" }[e];
        if (simple !== undefined) { out += simple; this.i += 2; } else if (e === "u" && /^[0-9a-fA-F]{4}$/.test(this.s.slice(this.i + 2, this.i + 6))) {
          out += String.fromCharCode(parseInt(this.s.slice(this.i + 2, this.i + 6), 16));
          this.i += 6;
        } else this.fail("invalid escape");
        from = this.i;
      } else this.i++;
    }
  }
}

export function codePointCompare(a, b) {
  const x = [...a].map((c) => c.codePointAt(0));
  const y = [...b].map((c) => c.codePointAt(0));
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
  return x.length - y.length;
}

/** Python's json string encoder with ensure_ascii=False: only '"', '\\' and controls below 0x20 escaped. */
function pyStringUnicode(s) {
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x20 && c !== 0x22 && c !== 0x5c) { out += s[i]; continue; }
    out += { 0x22: '\\"', 0x5c: "\\\\", 0x0a: "\\n", 0x0d: "\\r", 0x09: "\\t", 0x08: "\\b", 0x0c: "\\f" }[c]
      ?? "\\u" + c.toString(16).padStart(4, "0");
  }
  return out + '"';
}

/**
 * Python's json.dumps of a tree: `sortKeys`, `ensureAscii` (default true) and `compact` (separators
 * (",", ":"); default: Python's ", " and ": ").
 */
export function pyDumps(node, { sortKeys = false, ensureAscii = true, compact = false } = {}) {
  const [item, kv] = compact ? [",", ":"] : [", ", ": "];
  const str = ensureAscii ? pyString : pyStringUnicode;
  const go = (n) => {
    switch (n.t) {
      case "o": {
        const keys = sortKeys ? [...n.v.keys()].sort(codePointCompare) : [...n.v.keys()];
        return "{" + keys.map((k) => str(k) + kv + go(n.v.get(k))).join(item) + "}";
      }
      case "a": return "[" + n.v.map(go).join(item) + "]";
      case "s": return str(n.v);
      case "i": return n.v.toString();
      case "f": return pyFloat(n.v);
      case "b": return n.v ? "true" : "false";
      default: return "null";
    }
  };
  return go(node);
}

/** A plain JS value as a tree: BigInt and integral numbers are ints, other numbers floats. */
export function toTree(v) {
  if (v === null || v === undefined) return { t: "n" };
  if (typeof v === "bigint") return { t: "i", v };
  if (typeof v === "number") return Number.isInteger(v) ? { t: "i", v: BigInt(v) } : { t: "f", v };
  if (typeof v === "string") return { t: "s", v };
  if (typeof v === "boolean") return { t: "b", v };
  if (Array.isArray(v)) return { t: "a", v: v.map(toTree) };
  if (v.t && "v" in v) return v; // already a tree
  return { t: "o", v: new Map(Object.entries(v).map(([k, x]) => [k, toTree(x)])) };
}

/** The subtree at `path` (keys) of a parsed manifest, or null. */
export function subtree(tree, ...path) {
  let n = tree;
  for (const k of path) {
    if (!n || n.t !== "o" || !n.v.has(k)) return null;
    n = n.v.get(k);
  }
  return n;
}

const canonical = (node) => pyDumps(node, { sortKeys: true, ensureAscii: true, compact: true });

async function sha256Hex(bytes) {
  const digest = await globalThis.crypto.subtle.digest("SHA-256", bytes);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The id a manifest's content hashes to (its own bundle_id field left out). */
export async function computeBundleId(tree) {
  const d = { t: "o", v: new Map([...tree.v].filter(([k]) => k !== "bundle_id")) };
  return (await sha256Hex(new TextEncoder().encode(canonical(d)))).slice(0, 16);
}

/**
 * manifest.json bytes -> {manifest (plain object), id (what its content hashes to)}. Refuses what
 * Python's parse_manifest refuses before validation: too big, not UTF-8 (a BOM included), not JSON,
 * nested too deeply, not an object.
 */
export async function parseManifest(bytes) {
  if (bytes.byteLength > MAX_MANIFEST_BYTES) {
    throw new BundleError(`manifest.json is ${bytes.byteLength} bytes; a manifest may hold at most ${MAX_MANIFEST_BYTES >> 20} MiB`);
  }
  let text;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    throw new BundleError("manifest.json is not valid JSON: it is not UTF-8 text");
  }
  const p = new Parser(text);
  const tree = p.value(0);
  p.ws();
  if (p.i !== text.length) p.fail("extra data");
  if (tree.t !== "o") throw new BundleError("manifest.json is not a usable manifest: it must be a JSON object");
  let manifest;
  try {
    manifest = JSON.parse(text);
  } catch (e) { // NaN/Infinity are Python's extensions: no real manifest has them
    throw new BundleError(`manifest.json is not usable here: ${e.message}`);
  }
  return { manifest, id: await computeBundleId(tree), tree };
}

/** JSON text -> a tree keeping Python's number kinds (exact integers above 2**53). */
export function parseExact(text, what = "the JSON text", Err = BundleError) {
  const p = new Parser(text, what, Err);
  const tree = p.value(0);
  p.ws();
  if (p.i !== text.length) p.fail("extra data");
  return tree;
}

/** Refuse a manifest whose recorded bundle_id is not what its content hashes to (a hand edit). */
export function checkBundleId(manifest, id, where = "the bundle") {
  if (manifest.bundle_id !== id) {
    throw new BundleError(`the manifest of ${where} records bundle_id ${JSON.stringify(String(manifest.bundle_id ?? "")).slice(0, 42)} ` +
      `but its content hashes to ${id}; it was edited or damaged: re-download or re-export the bundle`);
  }
}
