// Novelty warnings, the twin of tina_edge/runtime/novelty.py: per prompt name, whether it is in the
// bundle's training vocabulary ("seen") or not ("new", with its nearest known names by cosine of
// text embeddings), and pairs of prompt texts close enough to be confused (cosine >= 0.6).
import { BundleError } from "./errors.mjs";
import { classKey } from "./prompt.mjs";

export const CONFUSABLE_COSINE = 0.6;
export const NEAREST = 3;

function half(h) {
  const s = h >> 15 ? -1 : 1;
  const e = (h >> 10) & 31;
  const f = h & 1023;
  if (e === 0) return s * f * 2 ** -24;
  if (e === 31) return f ? NaN : s * Infinity;
  return s * (1 + f / 1024) * 2 ** (e - 15);
}

/** A .npy file (float16 or float32, little-endian, C order, no pickles) -> {shape, data: Float32Array}. */
export function readNpy(bytes, name = "array.npy", { int8 = false } = {}) {
  const bad = (why) => new BundleError(`bundle file ${name} is not a numpy array: ${why}`);
  if (bytes.byteLength < 10 || String.fromCharCode(...bytes.subarray(1, 6)) !== "NUMPY" || bytes[0] !== 0x93) throw bad("no NUMPY magic");
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const major = bytes[6];
  const hlen = major === 1 ? dv.getUint16(8, true) : dv.getUint32(8, true);
  const start = (major === 1 ? 10 : 12) + hlen;
  const header = new TextDecoder().decode(bytes.subarray(major === 1 ? 10 : 12, start));
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  const fortran = /'fortran_order':\s*True/.test(header);
  const shape = (/'shape':\s*\(([^)]*)\)/.exec(header)?.[1] ?? "").split(",").map((x) => x.trim()).filter(Boolean).map(Number);
  const n = shape.reduce((a, b) => a * b, 1);
  if (int8) { // the name table's vectors (name-table.mjs): int8 only
    if (fortran || descr !== "|i1") throw bad(`dtype ${descr}${fortran ? " (Fortran order)" : ""} is not int8`);
    if (start + n > bytes.byteLength) throw bad("truncated");
    return { shape, data: new Int8Array(bytes.buffer.slice(bytes.byteOffset + start, bytes.byteOffset + start + n)) };
  }
  if (fortran || !["<f2", "<f4"].includes(descr)) throw bad(`dtype ${descr}${fortran ? " (Fortran order)" : ""} is not float16/float32`);
  const size = descr === "<f2" ? 2 : 4;
  if (start + n * size > bytes.byteLength) throw bad("truncated");
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = size === 2 ? half(dv.getUint16(start + 2 * i, true)) : dv.getFloat32(start + 4 * i, true);
  return { shape, data };
}

function unitRows(data, rows, D) {
  const out = new Float32Array(rows * D);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let j = 0; j < D; j++) s += data[r * D + j] ** 2;
    const norm = Math.max(Math.sqrt(s), 1e-12);
    for (let j = 0; j < D; j++) out[r * D + j] = data[r * D + j] / norm;
  }
  return out;
}

const dot = (a, i, b, j, D) => { let s = 0; for (let d = 0; d < D; d++) s += a[i * D + d] * b[j * D + d]; return s; };
const r3 = (x) => Math.round(x * 1000) / 1000;

/**
 * The report Python's Personalizer.novelty returns (to_dict): {seen, new, nearest, confusable, threshold, names}.
 * `emb`: Float32Array [k * D] of the prompt texts; `vocabEmb`: async () => Float32Array [V * D] or null.
 */
export async function noveltyReport(names, emb, D, vocabulary, vocabEmb,
  { threshold = CONFUSABLE_COSINE, nearest = NEAREST, senses = null, kindOf = null, readsAs = null } = {}) {
  const vocab = (vocabulary ?? []).filter((v) => typeof v === "string");
  const keys = new Set(vocab.map(classKey));
  const e = unitRows(emb, names.length, D);
  const res = senses ?? names.map(() => null); // senses.mjs resolutions: "seen" only in the vocabulary's sense
  const items = names.map((n, i) => {
    const item = { name: n, known: res[i] ? keys.has(res[i].word) && res[i].seen : keys.has(classKey(n)), nearest: [] };
    if (res[i]) item.sense = res[i].toDict(); // issue 22: written only when set, as Python's to_dict
    if (readsAs?.[i]) item.reads_as = readsAs[i]; // the known name the conditioning reads instead
    return item;
  });
  if (vocab.length && vocabEmb && items.some((i) => !i.known)) {
    const V = unitRows(await vocabEmb(), vocab.length, D);
    items.forEach((item, i) => {
      if (item.known) return;
      const sims = vocab.map((_, j) => dot(V, j, e, i, D));
      const order = sims.map((_, j) => j).sort((a, b) => sims[b] - sims[a] || a - b).slice(0, nearest);
      item.nearest = order.map((j) => [vocab[j], sims[j]]);
      const own = res[i] ? res[i].sense.kind : (kindOf ? kindOf(item.name) : null);
      const warning = farWarning(item.nearest) ?? kindWarning(own, item.nearest, kindOf ? item.nearest.map(([m]) => kindOf(m)) : []);
      if (warning && !item.reads_as) item.warning = warning;
    });
  }
  const pairs = [];
  // two names read as one known name get one row: as confusable as it gets (cosine 1)
  const same = names.map((n, i) => classKey(readsAs?.[i] ?? n));
  for (let a = 0; a < names.length; a++) for (let b = a + 1; b < names.length; b++) {
    const s = same[a] === same[b] && (readsAs?.[a] || readsAs?.[b]) ? 1 : dot(e, a, e, b, D);
    if (s >= threshold) pairs.push([names[a], names[b], s]);
  }
  pairs.sort((x, y) => y[2] - x[2]);
  return {
    seen: items.filter((i) => i.known).map((i) => i.name), new: items.filter((i) => !i.known).map((i) => i.name),
    nearest: Object.fromEntries(items.filter((i) => !i.known).map((i) => [i.name, i.nearest.map(([m, s]) => [m, r3(s)])])),
    confusable: pairs.map(([a, b, s]) => [a, b, r3(s)]), threshold,
    names: items,
  };
}

/** The line for a name the conditioning reads as a known name (novelty.py reads_as_line; the CLI prints it too). */
export function readsAsLine(name, known) {
  return `'${name}' is read as '${known}', a name the bundle knows (a WordNet synonym or another spelling of it)`;
}

export const FAR_COSINE = 0.5; // below: the nearest known name is far; the generator guesses (novelty.py)

/** Item 5 (issue 22): a new name whose nearest known names are far. */
export function farWarning(nearest) {
  if (!nearest.length || nearest[0][1] >= FAR_COSINE) return null;
  return `its nearest known names are far (best cosine ${nearest[0][1].toFixed(2)} < ${FAR_COSINE}): the classifier is ` +
    "a guess; describe the class in words the bundle knows (descriptions), add example photos, or " +
    'qualify the name, e.g. "bat (animal)"';
}

/** Item 5 (issue 22): a new name whose nearest known names are all of another kind of thing. */
export function kindWarning(own, nearest, kinds) {
  const known = kinds.filter(Boolean);
  if (own === null || own === undefined || !known.length || known.includes(own)) return null;
  const names = nearest.filter((_, j) => kinds[j]).map(([m]) => m).join(", ");
  return `it is a kind of ${own} but its nearest known names (${names}) are ${[...new Set(known)].join(" / ")}: the ` +
    "generator leans on the wrong kind of thing; describe the class (descriptions), add example photos, or " +
    'write the name with its sense, e.g. "bat (animal)"';
}

/** One human line per new name and per confusable pair (novelty.py lines()). */
export function noveltyLines(report) {
  const out = [];
  for (const n of report.names) {
    if (n.sense) out.push(`'${n.name}' is read as ${n.sense.sense} (${n.sense.how}); ${n.sense.choose}`);
    if (!n.known) {
      const near = n.nearest.map(([m, s]) => `${m} (${s.toFixed(2)})`).join(", ") || "none";
      out.push(`'${n.name}' is not in the training vocabulary; nearest known names: ${near}`);
    }
    if (n.reads_as) out.push(readsAsLine(n.name, n.reads_as));
    if (n.warning) out.push(`'${n.name}': ${n.warning}`);
  }
  for (const [a, b, s] of report.confusable) out.push(`'${a}' and '${b}' are close in meaning (cosine ${s.toFixed(2)}): their classes may be confused`);
  return out;
}
