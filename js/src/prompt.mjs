// Class prompt parsing, a line-by-line port of tina_edge/runtime/prompt.py (its tables copied as data
// below; checked by the shared prompt vectors in test/rules.test.mjs: names, class keys, skeletons,
// and for refusals the rule `e.rule` and the message). Rules, as Python's:
// - names split on SEPARATORS (every script's comma) before NFKC ("ｄｏｇ" is "dog", "ﬁsh" is "fish");
// - control characters (Cc), the other invisible format characters (Cf: soft hyphen, ...) and the
//   "filler" letters dropped, any whitespace run (Python's str.isspace) one space, ends stripped;
// - refused: bidi controls ("bidi"), zero-width characters and joiners next to a Latin, Greek or
//   Cyrillic letter, a space or an end ("zero-width"); a name with nothing visible ("invisible");
//   an empty name between commas ("stray-comma"); a word mixing Latin, Greek and Cyrillic letters
//   ("mixed-script"); parentheses that do not pair up ("parentheses": "mouse (rodent, small)" splits at
//   its comma); two names with one classKey ("duplicate") or one skeleton ("confusable");
// - names longer than MAX_NAME_CHARS characters are truncated before the duplicate check.
import { PromptError } from "./errors.mjs";
import { CASEFOLD_EXCEPTIONS, NOT_CONFUSABLE_SCRIPT } from "./unicode-tables.mjs";

export const MAX_NAME_CHARS = 200;
export const MAX_PROMPT_CHARS = 100_000;
export const MAX_DESCRIPTION_CHARS = 1000;
export const SEPARATORS = [",", "\uff0c", "\u3001", "\ufe50", "\ufe51", "\uff64", "\ufe10", "\ufe11", "\u060c", "\u055d",
  "\u1363", "\u07f8", "\u2e41", "\ua4fe", "\ua60d", "\u1802", "\u1808"];
export const BIDI_CONTROLS = ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069",
  "\u200e", "\u200f", "\u061c"];
export const ZERO_WIDTH = ["\u200b", "\u2060", "\ufeff", "\u180e"];
export const JOINERS = ["\u200c", "\u200d"];
export const KEY_SEPARATORS = ["_", "-", "\u2010", "\u2011", "\u2012", "\u2013", "\u2212"];
export const CONFUSABLE_SCRIPTS = ["LATIN", "GREEK", "CYRILLIC"];
// Greek and Cyrillic letters that look like a Latin letter (small ones after case folding; capitals,
// looked up before case folding: Cyrillic Т and Greek Τ look like T, their small forms do not).
export const LATIN_LOOKALIKES = new Map(Object.entries({
  "\u0430": "a", "\u0441": "c", "\u0501": "d", "\u0435": "e", "\u04bb": "h", "\u0456": "i", "\u0458": "j",
  "\u043a": "k", "\u04cf": "l", "\u043e": "o", "\u0440": "p", "\u051b": "q", "\u0455": "s", "\u0443": "y",
  "\u0445": "x", "\u051d": "w", "\u0475": "v", "\u04af": "y", "\u0451": "\u00eb", "\u0457": "\u00ef",
  "\u03b1": "a", "\u03bf": "o", "\u03c1": "p", "\u03b9": "i", "\u03ba": "k", "\u03bd": "v", "\u03c5": "u",
  "\u03c7": "x", "\u03f2": "c", "\u03f3": "j", "\u03b3": "y", "\u03b7": "n",
  "\u0410": "A", "\u0412": "B", "\u0415": "E", "\u041a": "K", "\u041c": "M", "\u041d": "H", "\u041e": "O",
  "\u0420": "P", "\u0421": "C", "\u0422": "T", "\u0425": "X", "\u0423": "Y", "\u0405": "S", "\u0406": "I",
  "\u0408": "J", "\u0391": "A", "\u0392": "B", "\u0395": "E", "\u0396": "Z", "\u0397": "H", "\u0399": "I",
  "\u039a": "K", "\u039c": "M", "\u039d": "N", "\u039f": "O", "\u03a1": "P", "\u03a4": "T", "\u03a5": "Y",
  "\u03a7": "X",
}));
const KEEP_FORMAT = new Set(JOINERS);
const BIDI = new Set(BIDI_CONTROLS);
const REFUSED = new Set([...BIDI_CONTROLS, ...ZERO_WIDTH]);
const SEP_SET = new Set(SEPARATORS);
const KEY_SEP = new Set(KEY_SEPARATORS);
const FILLERS = new Set("\u115f\u1160\u3164\uffa0\u2800\u034f\u180e"); // render as nothing, yet are "letters"
// Python's str.isspace: bidi types WS, B, S and category Zs
const PY_SPACE = /^[\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]$/u;
const CC = /^\p{Cc}$/u;
const CF = /^\p{Cf}$/u;
const INVISIBLE = /^[\p{Cc}\p{Cf}\p{Zs}\p{Zl}\p{Zp}\p{Mn}\p{Me}\p{Cs}\p{Co}\p{Cn}]$/u;
const NOT_PRINTABLE = /^[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}\p{Zs}]$/u; // Python's str.isprintable (space aside)
const WORDS = /[\p{L}\p{Nl}\p{No}]+/gu; // Python's [^\W\d_]+: letters and non-decimal numerals
const SCRIPTS = { LATIN: /^\p{Script=Latin}$/u, GREEK: /^\p{Script=Greek}$/u, CYRILLIC: /^\p{Script=Cyrillic}$/u };

const isSpace = (ch) => PY_SPACE.test(ch);
const hex = (ch) => ch.codePointAt(0).toString(16).toUpperCase().padStart(4, "0");
const title = (w) => w[0] + w.slice(1).toLowerCase();
/** Python's " ".join(s.split()). */
const pySplitJoin = (s) => [...s].map((ch) => (isSpace(ch) ? " " : ch)).join("").split(" ").filter(Boolean).join(" ");

function error(message, rule) {
  return new PromptError(message, rule);
}

function dropped(ch) {
  return CC.test(ch) || (CF.test(ch) && !KEEP_FORMAT.has(ch) && !REFUSED.has(ch)) || FILLERS.has(ch);
}

/** NFC, drop control and invisible format characters, collapse whitespace, strip (shared with descriptions). */
export function cleanText(s) {
  let out = "";
  for (const ch of String(s).normalize("NFC")) {
    if (isSpace(ch)) out += " ";
    else if (!dropped(ch)) out += ch;
  }
  return pySplitJoin(out).normalize("NFC");
}

/** Whether a cleaned text shows anything (not only joiners, combining marks or spaces). */
export function isVisible(s) { return [...s].some((ch) => !INVISIBLE.test(ch)); }

/** LATIN, GREEK or CYRILLIC for a letter of those alphabets, else null (Python reads the Unicode name). */
function script(ch) {
  if (ch === undefined || !/^\p{L}$/u.test(ch) || NOT_CONFUSABLE_SCRIPT.has(ch)) return null;
  for (const name of CONFUSABLE_SCRIPTS) if (SCRIPTS[name].test(ch)) return name;
  return null;
}

/** Python's str.casefold. */
export function casefold(s) {
  let out = "";
  for (const ch of s) {
    const cp = ch.codePointAt(0);
    if ((cp >= 0x13a0 && cp <= 0x13fd) || (cp >= 0xab70 && cp <= 0xabbf)) out += ch.toUpperCase(); // Cherokee folds to capitals
    else out += CASEFOLD_EXCEPTIONS.get(ch) ?? ch.toLowerCase();
  }
  return out;
}

/** Refuse bidi controls, zero-width characters, and ZWJ/ZWNJ next to a Latin, Greek or Cyrillic letter,
 * a space or an end (there they only hide a difference). */
export function checkText(s, what) {
  const cs = [...s];
  const list = (chars) => [...new Set(chars.map((ch) => `U+${hex(ch)}`))].sort().join(", ");
  const bidi = cs.filter((ch) => BIDI.has(ch));
  if (bidi.length) {
    throw error(`${what} contains bidirectional control characters (${list(bidi)}) that make text ` +
      "display as something else; remove them", "bidi");
  }
  const n = cs.length;
  const bad = cs.filter((ch, i) => REFUSED.has(ch) || (KEEP_FORMAT.has(ch) && (i === 0 || i === n - 1 ||
    script(cs[i - 1]) || script(cs[i + 1]) || isSpace(cs[i - 1]) || isSpace(cs[i + 1]))));
  if (bad.length) {
    throw error(`${what} contains zero-width characters (${list(bad)}) that hide a difference between ` +
      "names; remove them", "zero-width");
  }
}

/** The identity of a class name: NFKC, cleaned, case-folded, joiners ignored, "_", "-" and whitespace one space. */
export function classKey(name) {
  const s = casefold(cleanText(String(name).normalize("NFKC"))).normalize("NFKC");
  let out = "";
  let gap = false;
  for (const ch of s) {
    if (KEEP_FORMAT.has(ch)) continue;
    if (KEY_SEP.has(ch) || isSpace(ch)) { gap = true; continue; }
    if (gap && out) out += " ";
    gap = false;
    out += ch;
  }
  const m = QUALIFIED.exec(out);
  return m ? `${m[1]} (${m[2]})` : out;
}

// a class key ending in a qualifier, "name (qualifier)" (runtime/prompt.py _QUALIFIED): one class
// for "Mouse(Rodent)" and "mouse ( rodent )"; the qualifier picks a sense (runtime/senses.py)
const QUALIFIED = /^([^()]*[^() ]) ?\( ?([^()]*[^() ]) ?\)$/su;

/** [class key of the name, class key of its qualifier or null]: "Mouse (Rodent)" -> ["mouse", "rodent"]. */
export function splitQualifier(name) {
  const key = classKey(name);
  const m = QUALIFIED.exec(key);
  return m ? [m[1], m[2]] : [key, null];
}

const lookalikes = (s) => [...s].map((ch) => LATIN_LOOKALIKES.get(ch) ?? ch).join("");

/** classKey with Greek and Cyrillic look-alikes of Latin letters replaced (capitals before case folding). */
export function skeleton(name) {
  return lookalikes(classKey(lookalikes(cleanText(String(name).normalize("NFKC")))));
}

function checkScripts(name, what) {
  for (const [word] of name.matchAll(WORDS)) {
    const cs = [...word];
    const counts = new Map();
    for (const ch of cs) { const sc = script(ch); if (sc) counts.set(sc, (counts.get(sc) ?? 0) + 1); }
    if (counts.size > 1) {
      const scripts = [...counts.keys()].sort();
      const odd = scripts.reduce((a, b) => (counts.get(b) < counts.get(a) ? b : a));
      const chars = [...new Set(cs.filter((ch) => script(ch) === odd))].map((ch) => `${ch} U+${hex(ch)}`).join(", ");
      throw error(`${what} ("${name}") mixes ${scripts.map(title).join(" and ")} letters in one word (${chars} is ` +
        `${title(odd)}); type it in one alphabet`, "mixed-script");
    }
  }
}

function splitSeparators(s) {
  const out = [];
  let cur = "";
  for (const ch of s) {
    if (SEP_SET.has(ch)) { out.push(cur); cur = ""; } else cur += ch;
  }
  out.push(cur);
  return out;
}

function pieces(prompt) {
  if (prompt instanceof Uint8Array) {
    try {
      prompt = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(prompt);
    } catch {
      throw error("the prompt is not valid UTF-8 text; pass class names as text", "utf8");
    }
  }
  let items;
  if (typeof prompt === "string") items = [prompt];
  else if (prompt && typeof prompt !== "object") items = null;
  else if (prompt && typeof prompt[Symbol.iterator] === "function") items = Array.from(prompt);
  if (!items) throw error(`the prompt must be a string or a list of strings, got ${prompt === null ? "null" : typeof prompt}`, "type");
  let total = 0;
  for (const it of items) if (typeof it === "string") total += [...it].length;
  if (total > MAX_PROMPT_CHARS) throw error(`the prompt is longer than ${MAX_PROMPT_CHARS} characters; name the classes briefly`, "too-long");
  const out = [];
  for (const it of items) {
    if (typeof it !== "string") throw error(`every class name must be a string, got ${it === null ? "null" : typeof it}`, "type");
    if (!it.isWellFormed()) {
      throw error("the prompt contains bytes that are not valid UTF-8 (check the terminal's encoding); " +
        "pass class names as UTF-8 text", "utf8");
    }
    out.push(...splitSeparators(it));
  }
  return out;
}

/** Nothing but spaces and control characters: a stray comma, not an invisible name. */
const blank = (raw) => [...raw].every((ch) => isSpace(ch) || CC.test(ch));
/** A name as the user typed it, with invisible characters made visible (\u200b, ...). */
const shown = (raw) => [...pySplitJoin(raw)].slice(0, MAX_NAME_CHARS)
  .map((ch) => (ch === " " || !NOT_PRINTABLE.test(ch) ? ch : "\\u" + ch.codePointAt(0).toString(16).padStart(4, "0"))).join("");
const scriptName = (ch) => (ch.codePointAt(0) < 0x400 ? "Greek" : "Cyrillic"); // of a LATIN_LOOKALIKES key

// Python's str.splitlines boundaries (\r\n is one)
const LINE_BREAK = /\r\n|[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]/u;

/**
 * The classes of a classes file (`personalize --classes-file`, Python's classes_from_lines): one name per
 * line, blank lines and lines starting with "#" ignored, a line with commas naming several classes; a
 * line's error carries its number.
 */
export function classesFromLines(text) {
  const parts = String(text).split(LINE_BREAK);
  if (parts.length && parts[parts.length - 1] === "") parts.pop(); // splitlines drops the last break's empty tail
  // Python: line.strip() and not line.lstrip().startswith("#"); pySplitJoin strips as str.strip does
  const lines = parts.map((line, i) => [i + 1, line, pySplitJoin(line)]).filter(([, , t]) => t && !t.startsWith("#"));
  if (!lines.length) throw error('the classes file names no class; write one class name per line, e.g. "dog"', "empty");
  for (const [no, line] of lines) {
    try {
      parseClasses(line);
    } catch (e) {
      if (e instanceof PromptError) throw error(`line ${no}: ${e.message}`, e.rule ?? "other");
      throw e;
    }
  }
  return parseClasses(lines.map(([, line]) => line));
}

/** Every "(" closed by a later ")" (after NFKC, which folds the fullwidth ones). */
function parenthesesPair(name) {
  let depth = 0;
  for (const ch of name) {
    depth += (ch === "(") - (ch === ")");
    if (depth < 0) return false;
  }
  return depth === 0;
}

/** Split, normalise and check a class prompt; PromptError (with `rule`) as Python's parse_classes. */
export function parseClasses(prompt) {
  const raw = pieces(prompt);
  let names = raw.map((p) => cleanText(p.normalize("NFKC")));
  if (raw.every(blank)) throw error('the prompt is empty; name at least 2 classes separated by commas, e.g. "dog, cat"', "empty");
  names.forEach((n, i) => {
    if (blank(raw[i])) {
      throw error(`class name ${i + 1} of ${names.length} is empty (a stray comma?); ` +
        'separate class names with single commas, e.g. "dog, cat"', "stray-comma");
    }
    if (!n || !isVisible(n)) {
      throw error(`class name ${i + 1} of ${names.length} ("${shown(raw[i])}") has no visible characters; ` +
        "give every class a readable name", "invisible");
    }
    checkText(n, `class name ${i + 1}`);
    checkScripts(n, `class name ${i + 1}`);
    if (!parenthesesPair(n)) {
      throw error(`class name ${i + 1} of ${names.length} ("${shown(raw[i])}") has unbalanced parentheses; a comma ` +
        'always separates classes, so a sense in parentheses holds no comma: write e.g. "mouse (rodent)"', "parentheses");
    }
  });
  names = names.map((n) => ([...n].length > MAX_NAME_CHARS ? [...n].slice(0, MAX_NAME_CHARS).join("").replace(/ +$/u, "") : n));
  const seen = new Map();
  const looks = new Map();
  names.forEach((n, i) => {
    const k = classKey(n);
    if (seen.has(k)) {
      const j = seen.get(k);
      let how;
      if (names[j] !== n) {
        const why = casefold(names[j]) === casefold(n) ? "case and spacing are ignored"
          : '"_", "-" and spaces are one, character width, case and spacing are ignored';
        how = ` (as "${names[j]}" and "${n}"; ${why})`;
      } else {
        const first = shown(raw[j]), again = shown(raw[i]);
        how = first === again ? "" : ` (as "${first}" and "${again}"; invisible characters and character width are ignored)`;
      }
      throw error(`the class "${names[j]}" is named twice${how}; name each class once`, "duplicate");
    }
    const sk = skeleton(n);
    if (looks.has(sk)) {
      const j = looks.get(sk);
      const odd = [...new Set(names[j] + n)].filter((ch) => LATIN_LOOKALIKES.has(ch))
        .map((ch) => `${ch} U+${hex(ch)} ${scriptName(ch)}`).join(", ");
      throw error(`the classes "${names[j]}" and "${n}" look the same but are spelled with different alphabets ` +
        `(${odd}); type both in one alphabet`, "confusable");
    }
    seen.set(k, i);
    looks.set(sk, i);
  });
  return names;
}

/** Python's repr() of a str (the quotes and escapes its messages show). */
export function pyRepr(s) {
  const q = s.includes("'") && !s.includes('"') ? '"' : "'";
  const esc = { "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t" };
  let out = q;
  for (const ch of s) {
    const cp = ch.codePointAt(0);
    if (esc[ch]) out += esc[ch];
    else if (ch === q) out += "\\" + ch;
    else if (ch !== " " && NOT_PRINTABLE.test(ch) || (cp >= 0xd800 && cp <= 0xdfff)) {
      out += cp < 0x100 ? "\\x" + cp.toString(16).padStart(2, "0") : cp < 0x10000 ? "\\u" + cp.toString(16).padStart(4, "0")
        : "\\U" + cp.toString(16).padStart(8, "0");
    } else out += ch;
  }
  return out + q;
}

/**
 * Per class the description given (or null), unchecked (class_prompts.aligned_descriptions).
 * `descriptions`: null, an array with one entry (string or null) per class, or an object
 * {class name: description} (names matched by classKey).
 */
export function alignedDescriptions(names, descriptions) {
  if (descriptions === null || descriptions === undefined) return names.map(() => null);
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
      if (i === undefined) throw new PromptError(`descriptions names ${pyRepr(key).slice(0, 60)}, which is not one of the classes (${names.join(", ")})`);
      if (descs[i] !== null) throw new PromptError(`the class ${pyRepr(names[i])} has two descriptions; give one`);
      descs[i] = text;
    }
  } else {
    throw new PromptError(`descriptions must be an array with one entry (or null) per class, or an object {class: description}; got a ${typeof descriptions}`);
  }
  return names.map((_, i) => descs[i] ?? null);
}

/** Per class its cleaned description, else its name (the text encoded). */
export function descriptionTexts(names, descriptions) {
  if (descriptions === null || descriptions === undefined) return names.slice();
  const descs = alignedDescriptions(names, descriptions);
  return names.map((n, i) => {
    const d = descs[i];
    if (d === null || d === undefined) return n;
    const what = `the description of ${pyRepr(n)}`;
    if (typeof d !== "string" || !d.isWellFormed()) throw new PromptError(`${what} must be UTF-8 text`);
    const len = [...d].length;
    if (len > MAX_DESCRIPTION_CHARS) throw new PromptError(`${what} has ${len} characters; at most ${MAX_DESCRIPTION_CHARS} are allowed`);
    const c = cleanText(d);
    checkText(c, what);
    if (!c || !isVisible(c)) throw new PromptError(`${what} is empty; leave it out to use the class name`);
    return c;
  });
}
