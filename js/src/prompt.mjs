// Class prompt parsing, the twin of tina_edge/runtime/prompt.py (checked by the shared prompt
// vectors in test/conformance.test.mjs). Rules:
// - NFKC ("ｄｏｇ" is "dog", "ﬁsh" is "fish"); names split on "," and the ideographic comma "、"
//   (NFKC already turns "，", "﹐" into "," and "､" into "、");
// - control characters (Cc), the other invisible format characters (Cf: soft hyphen, ...) and the
//   "filler" letters dropped, any whitespace run (Python's str.isspace) one space, ends stripped;
// - refused: bidirectional controls and zero-width characters (ZERO_WIDTH), naming each;
//   a name with nothing visible; an empty name between commas; a name given twice, where case
//   (full case folding), spacing and look-alike letters (Cyrillic "а" for Latin "a", ...) are ignored;
// - names longer than MAX_NAME_CHARS characters are truncated before the duplicate check.
import { PromptError } from "./errors.mjs";

export const MAX_NAME_CHARS = 200;
export const MAX_PROMPT_CHARS = 100_000;
export const MAX_DESCRIPTION_CHARS = 1000;

const KEEP_FORMAT = new Set(["\u200c", "\u200d"]);
const BIDI = new Set("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069");
const ZERO_WIDTH = new Set("\u200b\u2060\ufeff\u180e"); // Python's ZERO_WIDTH: refused, not dropped
const FILLERS = new Set("\u115f\u1160\u3164\uffa0\u2800\u034f\u180e");
// Python's str.isspace: bidi types WS, B, S and category Zs
const PY_SPACE = /[\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]/u;
const CC = /\p{Cc}/u;
const CF = /\p{Cf}/u;
const VISIBLE = /[^\p{Cc}\p{Cf}\p{Zs}\p{Zl}\p{Zp}\p{Mn}\p{Me}\p{Cs}\p{Co}\p{Cn}]/u;
const SEPARATORS = /[,\u3001]/u;

// Look-alikes folded for class identity (after case folding): Cyrillic and Greek letters drawn
// like Latin ones. A name written wholly in Cyrillic stays itself; only identity uses this.
const CONFUSABLES = new Map(Object.entries({
  "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c", "т": "t",
  "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i", "ј": "j", "ԁ": "d", "ԛ": "q", "ԝ": "w", "һ": "h", "ӏ": "l",
  "ɑ": "a", "α": "a", "β": "b", "ε": "e", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t", "υ": "u",
  "χ": "x", "γ": "y", "ѵ": "v", "ɡ": "g", "ı": "i", "ȷ": "j",
}));

const codepoints = (s) => [...s].map((c) => "U+" + c.codePointAt(0).toString(16).toUpperCase().padStart(4, "0"));

function dropped(ch) {
  if (BIDI.has(ch) || ZERO_WIDTH.has(ch) || KEEP_FORMAT.has(ch)) return false; // refused (or kept) by checkText
  return CC.test(ch) || CF.test(ch) || FILLERS.has(ch);
}

/** NFKC, control characters dropped, whitespace runs one space, ends stripped (names and descriptions). */
export function cleanText(s) {
  const n = String(s).normalize("NFKC");
  let out = "";
  for (const ch of n) {
    if (PY_SPACE.test(ch)) out += " ";
    else if (!dropped(ch)) out += ch;
  }
  return out.split(" ").filter(Boolean).join(" ").normalize("NFKC");
}

/** Refuse bidi controls and invisible format characters in a cleaned name or description. */
export function checkText(s, what) {
  const bidi = [...new Set([...s].filter((ch) => BIDI.has(ch)))];
  if (bidi.length) {
    throw new PromptError(`${what} contains bidirectional control characters (${codepoints(bidi.join("")).join(", ")}) ` +
      "that make text display as something else; remove them");
  }
  const hidden = [...new Set([...s].filter((ch) => ZERO_WIDTH.has(ch)))];
  if (hidden.length) {
    throw new PromptError(`${what} contains invisible characters (${codepoints(hidden.join("")).join(", ")}) ` +
      "that make two names look alike; remove them");
  }
}

export function isVisible(s) { return VISIBLE.test(s); }

/** Python's str.casefold for practical purposes: full case folding (ß -> ss, ς -> σ). */
export function casefold(s) { return s.toUpperCase().toLowerCase().normalize("NFKC"); }

/** The identity of a class name: cleaned, case-folded, look-alike letters folded. */
export function classKey(name) {
  return [...casefold(cleanText(name))].map((c) => CONFUSABLES.get(c) ?? c).join("").normalize("NFC");
}

function pieces(prompt) {
  let items;
  if (typeof prompt === "string") items = [prompt];
  else if (prompt && typeof prompt[Symbol.iterator] === "function") items = Array.from(prompt);
  else throw new PromptError(`the prompt must be a string or a list of strings, got ${prompt === null ? "null" : typeof prompt}`);
  let total = 0;
  const out = [];
  for (const it of items) {
    if (typeof it !== "string") throw new PromptError(`every class name must be a string, got ${typeof it}`);
    total += [...it].length;
    if (!it.isWellFormed()) {
      throw new PromptError("the prompt contains text that is not valid Unicode (a lone surrogate); pass class names as text");
    }
  }
  if (total > MAX_PROMPT_CHARS) throw new PromptError(`the prompt is longer than ${MAX_PROMPT_CHARS} characters; name the classes briefly`);
  for (const it of items) out.push(...it.normalize("NFKC").split(SEPARATORS));
  return out;
}

const blank = (raw) => [...raw].every((ch) => PY_SPACE.test(ch) || CC.test(ch));
const shown = (raw) => [...raw.split(/\s+/u).filter(Boolean).join(" ")].slice(0, MAX_NAME_CHARS)
  .map((ch) => (VISIBLE.test(ch) || ch === " " ? ch : "\\u" + ch.codePointAt(0).toString(16).padStart(4, "0"))).join("");

/** Split and clean a class prompt; PromptError for empty, stray-comma, invisible, hidden-character or duplicate names. */
export function parseClasses(prompt) {
  const raw = pieces(prompt);
  let names = raw.map(cleanText);
  if (raw.every(blank)) throw new PromptError('the prompt is empty; name at least 2 classes separated by commas, e.g. "dog, cat"');
  names.forEach((n, i) => {
    if (blank(raw[i])) {
      throw new PromptError(`class name ${i + 1} of ${names.length} is empty (a stray comma?); separate class names with single commas, e.g. "dog, cat"`);
    }
    checkText(n, `class name ${i + 1}`);
    if (!n || !isVisible(n)) {
      throw new PromptError(`class name ${i + 1} of ${names.length} ("${shown(raw[i])}") has no visible characters; give every class a readable name`);
    }
  });
  names = names.map((n) => ([...n].length > MAX_NAME_CHARS ? [...n].slice(0, MAX_NAME_CHARS).join("").trimEnd() : n));
  const seen = new Map();
  names.forEach((n, i) => {
    const k = classKey(n);
    if (seen.has(k)) {
      const first = names[seen.get(k)];
      const how = first === n ? "" : ` (as "${first}" and "${n}"; case, spacing and look-alike letters are ignored)`;
      throw new PromptError(`the class "${first}" is named twice${how}; name each class once`);
    }
    seen.set(k, i);
  });
  return names;
}

/**
 * The text encoded per class (class_prompts.description_texts): its cleaned description, else its name.
 * `descriptions`: null, an array with one entry (string or null) per class, or an object
 * {class name: description} (names matched like the prompt: case, spacing and look-alikes ignored).
 */
export function descriptionTexts(names, descriptions) {
  if (descriptions === null || descriptions === undefined) return names.slice();
  let descs;
  if (Array.isArray(descriptions)) {
    if (descriptions.length !== names.length) {
      throw new PromptError(`descriptions has ${descriptions.length} entries but there are ${names.length} classes; give one ` +
        "entry (or null) per class, or an object {class: description}");
    }
    descs = descriptions;
  } else if (typeof descriptions === "object") {
    const keys = new Map(names.map((n, i) => [classKey(n), i]));
    descs = names.map(() => null);
    for (const [key, text] of Object.entries(descriptions)) {
      const i = keys.get(classKey(key));
      if (i === undefined) throw new PromptError(`descriptions names ${JSON.stringify(key).slice(0, 60)}, which is not one of the classes (${names.join(", ")})`);
      if (descs[i] !== null) throw new PromptError(`the class ${JSON.stringify(names[i])} has two descriptions; give one`);
      descs[i] = text;
    }
  } else {
    throw new PromptError(`descriptions must be an array with one entry (or null) per class, or an object {class: description}; got a ${typeof descriptions}`);
  }
  return names.map((n, i) => {
    const d = descs[i];
    if (d === null || d === undefined) return n;
    const what = `the description of ${JSON.stringify(n)}`;
    if (typeof d !== "string" || !d.isWellFormed()) throw new PromptError(`${what} must be UTF-8 text`);
    const len = [...d].length;
    if (len > MAX_DESCRIPTION_CHARS) throw new PromptError(`${what} has ${len} characters; at most ${MAX_DESCRIPTION_CHARS} are allowed`);
    const c = cleanText(d);
    checkText(c, what);
    if (!c || !isVisible(c)) throw new PromptError(`${what} is empty; leave it out to use the class name`);
    return c;
  });
}
