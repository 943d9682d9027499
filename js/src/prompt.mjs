// Class prompt parsing, the twin of tina_edge/runtime/prompt.py: split on commas, NFC, drop
// control characters, collapse whitespace, refuse empty and duplicate (case-folded) names.
import { TinaEdgeError } from "./errors.mjs";

export const MAX_NAME_CHARS = 200;

export function cleanText(s) {
  const nfc = String(s).normalize("NFC");
  let out = "";
  for (const ch of nfc) {
    if (/\s/u.test(ch)) out += " ";
    else if (!/\p{Cc}/u.test(ch)) out += ch;
  }
  return out.split(" ").filter(Boolean).join(" ");
}

export function classKey(name) {
  return cleanText(name).toLowerCase().normalize("NFC");
}

export function parseClasses(prompt) {
  const items = typeof prompt === "string" ? [prompt] : Array.from(prompt ?? []);
  const pieces = [];
  for (const it of items) {
    if (typeof it !== "string") throw new TinaEdgeError(`every class name must be a string, got ${typeof it}`);
    pieces.push(...it.split(","));
  }
  let names = pieces.map(cleanText);
  if (!names.some(Boolean)) throw new TinaEdgeError('the prompt is empty; name at least 2 classes separated by commas, e.g. "dog, cat"');
  names.forEach((n, i) => {
    if (!n) throw new TinaEdgeError(`class name ${i + 1} of ${names.length} is empty (a stray comma?); separate class names with single commas, e.g. "dog, cat"`);
  });
  names = names.map((n) => ([...n].length > MAX_NAME_CHARS ? [...n].slice(0, MAX_NAME_CHARS).join("").trimEnd() : n));
  const seen = new Map();
  for (const n of names) {
    const k = classKey(n);
    if (seen.has(k)) throw new TinaEdgeError(`the class "${seen.get(k)}" is named twice; name each class once`);
    seen.set(k, n);
  }
  return names;
}
