// Word senses, the twin of tina_edge/runtime/senses.py (issue 22): which sense of an ambiguous name a
// class is built from, read from the bundle's senses.json.gz (written from WordNet 3.0 by
// tina_edge/export/portable/senses.py). Resolution needs no text encoder (qualifier keys, WordNet
// family and kind of the other names), so every port resolves alike; only whether a word outside the
// vocabulary is written with its sense asks the encoder (the bare word read as another sense).
import { BundleError } from "./errors.mjs";
import { splitQualifier } from "./prompt.mjs";

export const FORMAT = "tina-edge-senses";
export const VERSION = 1;
export const KINDS = ["animal", "food", "plant", "artifact", "object", "body"];
export const CONTEXT_KINDS = ["animal", "food", "plant"];
export const EVIDENCE = 4; // a first sense tagged this often (or the vocabulary's) needs two context names to move
export const MAX_TABLE_BYTES = 32 * 1024 * 1024; // the table once inflated; a gzip bomb stops here

const senseText = (word, s) => `${word} (${s.tag})`;
const family = (text) => new Set(String(text).split(/\s+/).filter(Boolean).map(Number));
const meets = (a, b) => { for (const x of a) if (b.has(x)) return true; return false; };

/** A bundle table's JSON bytes: gzip inflated at most to `limit` bytes, or the bytes as they are
 * (the senses table and the name table, name-table.mjs, read their files through it). */
export async function inflateBounded(bytes, what, limit = MAX_TABLE_BYTES, kind = "senses table") {
  if (bytes[0] !== 0x1f || bytes[1] !== 0x8b) return bytes;
  const chunks = [];
  let total = 0;
  try {
    const reader = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip")).getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.byteLength;
      if (total > limit) {
        await reader.cancel();
        throw new BundleError(`bundle file ${what} inflates to more than ${limit} bytes; it is not a ${kind}`);
      }
      chunks.push(value);
    }
  } catch (e) {
    if (e instanceof BundleError) throw e;
    throw new BundleError(`bundle file ${what} is not valid gzip: ${String(e.message ?? e).slice(0, 160)}`);
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) { out.set(c, at); at += c.byteLength; }
  return out;
}

export class SenseTable {
  constructor(words, vocabulary, nouns) {
    this.words = words; // class key -> [{wnid, tag, kind, rank, keys: Set, family: Set}]
    this.vocabulary = vocabulary; // class key -> wnid of the vocabulary's sense
    this.nouns = nouns; // class key -> [kind, family] of the other visible nouns
  }

  /** Parse and check the table (the bundle verified its size and sha256); BundleError if malformed. */
  static async fromBytes(bytes, what = "senses.json") {
    const bad = (why) => new BundleError(`bundle file ${what} is not a usable senses table: ${why}`.slice(0, 260));
    let d;
    try {
      d = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(await inflateBounded(bytes, what)));
    } catch (e) {
      if (e instanceof BundleError) throw e;
      throw bad(String(e.message ?? e));
    }
    if (d?.format !== FORMAT || d?.version !== VERSION) throw bad(`format '${d?.format}' version ${d?.version}, expected '${FORMAT}' ${VERSION}`);
    const words = new Map();
    for (const [word, rows] of Object.entries(d.words ?? {})) {
      if (!Array.isArray(rows) || rows.length < 2) throw bad(`'${word}' has fewer than 2 senses`);
      words.set(word, rows.map(([wnid, tag, kind, rank, keys, fam, count]) => ({
        wnid: String(wnid), tag: String(tag), kind: String(kind), rank: Number(rank),
        keys: new Set(String(keys).split(/\s+/).filter(Boolean)), family: family(fam), count: Number(count ?? 0),
      })));
    }
    const nouns = new Map();
    for (const [kind, text] of Object.entries(d.nouns ?? {})) {
      for (const line of String(text).split("\n")) {
        const tab = line.indexOf("\t");
        nouns.set(tab < 0 ? line : line.slice(0, tab), [kind, family(tab < 0 ? "" : line.slice(tab + 1))]);
      }
    }
    const kinds = new Set([...[...words.values()].flat().map((s) => s.kind), ...[...nouns.values()].map(([k]) => k)]);
    const unknown = [...kinds].filter((k) => !KINDS.includes(k)).sort();
    if (unknown.length) throw bad(`unknown kind '${unknown[0]}'; kinds are ${KINDS.join(", ")}`);
    return new SenseTable(words, new Map(Object.entries(d.vocabulary ?? {}).map(([k, v]) => [k, String(v)])), nouns);
  }

  /** [kind, family] of a context name (an ambiguous one: no kind, every sense's family); null when unknown. */
  noun(name) {
    const word = splitQualifier(name)[0];
    for (const w of [word, word.endsWith("s") ? word.slice(0, -1) : null, word.endsWith("es") ? word.slice(0, -2) : null]) {
      if (w && this.words.has(w)) {
        const all = new Set();
        for (const s of this.words.get(w)) for (const x of s.family) all.add(x);
        return [null, all];
      }
      if (w && this.nouns.has(w)) return this.nouns.get(w);
    }
    return null;
  }

  /** The kind of thing a name is (novelty: nearest known names of another kind). */
  kindOf(name) {
    const word = splitQualifier(name)[0];
    return this.words.has(word) ? this.words.get(word)[0].kind : (this.noun(name)?.[0] ?? null);
  }

  /** One resolution per name with several visible senses (null for the others), in two passes. */
  resolve(names) {
    let infos = names.map((n) => { const i = this.noun(n); return i ? [i[0], i[1], new Set()] : null; });
    const first = this._resolve(names, infos);
    infos = first.map((r, i) => (r ? [r.sense.kind, r.sense.family, splitQualifier(r.name)[1] !== null ? new Set() : infos[i][1]] : infos[i]));
    return this._resolve(names, infos);
  }

  _resolve(names, infos) {
    return names.map((name, i) => {
      const [word, qual] = splitQualifier(name);
      const senses = this.words.get(word);
      if (!senses) return null;
      const others = names.map((n, j) => [n, infos[j]]).filter(([, info], j) => j !== i && info !== null);
      const trained = this.vocabulary.get(word) ?? null;
      const firm = senses[0].count >= EVIDENCE || senses[0].wnid === trained;
      const [sense, how] = qual !== null ? this._byQualifier(qual, senses) : this._byContext(senses, others, firm ? 2 : 1);
      return new Resolution(name, word, sense, senses.filter((s) => s !== sense), how, trained);
    });
  }

  _byQualifier(qual, senses) {
    for (const s of senses) if (qual === s.tag || s.keys.has(qual) || qual === s.wnid) return [s, "qualifier"];
    const k = this.words.has(qual) ? this.words.get(qual)[0].kind : (this.noun(qual)?.[0] ?? null);
    for (const s of senses) if (s.kind === k) return [s, `qualifier: ${qual} is a kind of ${k}`];
    return [senses[0], "qualifier not recognised: most frequent visible sense"];
  }

  _byContext(senses, others, need = 1) {
    const votes = new Map();
    const voters = new Map();
    for (const [o, [kind, fam, more]] of others) {
      let hit = senses.findIndex((s) => meets(s.family, fam));
      if (hit < 0 && more.size) hit = senses.findIndex((s) => meets(s.family, more));
      if (hit < 0 && CONTEXT_KINDS.includes(kind)) hit = senses.findIndex((s) => s.kind === kind);
      if (hit >= 0) {
        votes.set(hit, (votes.get(hit) ?? 0) + 1);
        voters.set(hit, [...(voters.get(hit) ?? []), o]);
      }
    }
    let best = null;
    for (const [i, n] of votes) if (best === null || n > best[1]) best = [i, n];
    if (best && best[0] !== 0 && 2 * best[1] >= others.length && best[1] > (votes.get(0) ?? 0) && best[1] >= need) {
      return [senses[best[0]], `context: ${voters.get(best[0]).join(", ")}`];
    }
    return [senses[0], "most frequent visible sense"];
  }
}

export class Resolution {
  constructor(name, word, sense, alternatives, how, vocabularyWnid) {
    Object.assign(this, { name, word, sense, alternatives, how, vocabularyWnid, tagged: true });
  }

  get seen() { return this.vocabularyWnid === this.sense.wnid; }

  /** What the text encoder reads (senses.py Resolution.text). */
  get text() {
    if (this.seen || (this.vocabularyWnid === null && !this.tagged)) return this.word;
    return senseText(this.word, this.sense);
  }

  choose() {
    const alts = this.alternatives.slice(0, 3).map((s) => `"${senseText(this.word, s)}"`).join(" or ");
    return `for another sense write ${alts} in the prompt, or describe the class (descriptions)`;
  }

  toDict() {
    return { sense: senseText(this.word, this.sense), wnid: this.sense.wnid, how: this.how, encoded_as: this.text,
      alternatives: this.alternatives.map((s) => ({ sense: senseText(this.word, s), wnid: s.wnid })), choose: this.choose() };
  }
}

/**
 * [texts to encode, resolutions]: each ambiguous name without a description written in its sense.
 * `encode(texts)` -> Float32Array [n * D] (cached) is asked only for words the vocabulary lacks.
 */
export async function senseTexts(table, names, texts, aligned, encode, D) {
  if (!table) return [[...texts], names.map(() => null)];
  const res = table.resolve(names);
  for (const r of res) {
    if (!r || r.vocabularyWnid !== null) continue;
    const senses = [r.sense, ...r.alternatives];
    const e = await encode([r.word, ...senses.map((s) => senseText(r.word, s))]);
    const unit = (i) => { let n = 0; for (let d = 0; d < D; d++) n += e[i * D + d] ** 2; return Math.max(Math.sqrt(n), 1e-12); };
    const n0 = unit(0);
    let best = 0;
    let bestSim = -Infinity;
    senses.forEach((_, j) => {
      let s = 0;
      for (let d = 0; d < D; d++) s += e[(j + 1) * D + d] * e[d];
      s /= unit(j + 1) * n0;
      if (s > bestSim) { bestSim = s; best = j; }
    });
    r.tagged = best !== 0;
  }
  const out = texts.map((t, i) => (res[i] && (aligned === null || aligned[i] === null || aligned[i] === undefined) ? res[i].text : t));
  return [out, res];
}
