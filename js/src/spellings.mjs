// Another spelling of a name the bundle knows (Python: runtime/spellings.py, which says why): a
// plural ("sneakers"), or one word written as two or two as one ("tshirt", "lawnmower"). Only a
// text that matches nothing the bundle knows is re-spelled, and only onto a known name; the same
// rules in the same order as Python's, so both read the same text.

// WordNet 3.0 morphy's noun detachments, then "-oes" -> "-o" (the pattern of WordNet's noun exceptions)
export const NOUN_SUFFIXES = [["ses", "s"], ["xes", "x"], ["zes", "z"], ["ches", "ch"], ["shes", "sh"], ["men", "man"],
  ["ies", "y"], ["s", ""], ["oes", "o"]];

/** The class key with its last word made singular by each detachment rule that applies, in rule order. */
export function singulars(key) {
  const cut = key.lastIndexOf(" ");
  const head = key.slice(0, cut + 1); // with its space, or "" for one word
  const last = key.slice(cut + 1);
  const out = [];
  for (const [suffix, ending] of NOUN_SUFFIXES) {
    const word = last.endsWith(suffix) ? last.slice(0, last.length - suffix.length) + ending : "";
    if (word && !out.includes(head + word)) out.push(head + word); // "s" alone is no plural; "men" is "man"'s
  }
  return out;
}

/** The class key with its spaces removed: "lawn mower" and "lawnmower" meet here. */
export const joined = (key) => key.replaceAll(" ", "");

/** Known class keys and their space-free forms; `find` maps a typed key to the known key it spells. */
export class Spellings {
  constructor(known) {
    this.known = new Set();
    this.joined = new Map();
    for (const k of known) {
      this.known.add(k);
      const j = joined(k);
      if (!this.joined.has(j)) this.joined.set(j, k);
    }
  }

  /** The known key that `key` is another spelling of, or null (also for a known key: never re-spelled). */
  find(key) {
    if (this.known.has(key) || key.includes("(")) return null;
    const forms = singulars(key);
    for (const s of forms) if (this.known.has(s)) return s;
    for (const s of [key, ...forms]) {
      const hit = this.joined.get(joined(s));
      if (hit !== undefined) return hit;
    }
    return null;
  }
}
