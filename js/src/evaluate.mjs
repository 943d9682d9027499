// Accuracy, per-class recall and the confusion matrix of a model on labelled photos: the twin of
// tina_edge/runtime/evaluation.py's Evaluation (to_dict is the `--json` form, formatText the
// terminal form, as Python's CLI prints them). Pure: true class indices and predict's answers
// in, numbers out; finding the photos (one folder per class) is src/image-folders.mjs.
import { UNKNOWN, checkMinProb } from "./classifier.mjs";
import { ArgumentError } from "./errors.mjs";

/** predict's answer for one probability vector: the first largest, -1 below minProb (compared in float32, as predict). */
export function answerIndex(probabilities, minProb = null) {
  let best = 0;
  for (let j = 1; j < probabilities.length; j++) if (probabilities[j] > probabilities[best]) best = j;
  return minProb !== null && probabilities[best] < Math.fround(minProb) ? -1 : best;
}

/** [k][k(+1)] counts of (true, answered) pairs; an answer -1 (unknown) goes to the extra last column. */
export function confusionMatrix(targets, answers, k, withUnknown) {
  const m = Array.from({ length: k }, () => new Array(withUnknown ? k + 1 : k).fill(0));
  targets.forEach((t, n) => {
    const a = answers[n];
    if (!(Number.isInteger(t) && t >= 0 && t < k)) throw new ArgumentError(`target ${n} is ${t}; give class indices 0 to ${k - 1}`);
    if (!(Number.isInteger(a) && a >= -1 && a < k) || (a === -1 && !withUnknown)) {
      throw new ArgumentError(`answer ${n} is ${a}; give class indices 0 to ${k - 1}${withUnknown ? " or -1 (unknown)" : ""}`);
    }
    m[t][a < 0 ? k : a] += 1;
  });
  return m;
}

/**
 * Evaluate answers against true classes. `targets`: per image the index of its true label;
 * `predictions`: per image predict()'s result ({probabilities}) or its probability vector, answered
 * by predict's rule (the first largest; "unknown" below minProb, which counts as wrong). Returns
 * {labels, columns, confusion, minProb, n, correct, accuracy, perClass (recall per label, null
 * without images), unknown}.
 */
export function evaluate(labels, targets, predictions, { minProb = null } = {}) {
  minProb = checkMinProb(minProb);
  if (targets.length !== predictions.length) {
    throw new ArgumentError(`${targets.length} targets but ${predictions.length} predictions; give one of each per image`);
  }
  const k = labels.length;
  const answers = predictions.map((p) => answerIndex(p?.probabilities ?? p, minProb)); // predict's own rule
  const confusion = confusionMatrix(Array.from(targets), answers, k, minProb !== null);
  const rows = confusion.map((r) => r.reduce((a, b) => a + b, 0));
  const n = rows.reduce((a, b) => a + b, 0);
  const correct = confusion.reduce((a, r, i) => a + r[i], 0);
  return {
    labels: [...labels], columns: [...labels, ...(minProb !== null ? [UNKNOWN] : [])], confusion, minProb, n, correct,
    accuracy: n ? correct / n : 0,
    perClass: Object.fromEntries(labels.map((lab, i) => [lab, rows[i] ? confusion[i][i] / rows[i] : null])),
    unknown: minProb !== null ? confusion.reduce((a, r) => a + r[k], 0) : 0,
  };
}

/** Python's to_dict (the `--json` keys, in its order); `data`: what the folder walk found, or null. */
export function evaluationDict(ev, data = null) {
  const d = { accuracy: ev.accuracy, per_class: ev.perClass, confusion: ev.confusion, labels: ev.labels, columns: ev.columns,
    n: ev.n, min_prob: ev.minProb, unknown: ev.unknown };
  if (data) {
    Object.assign(d, { folders: data.folders, unmatched_folders: data.unmatchedFolders, missing_labels: data.missingLabels,
      skipped_files: data.skippedFiles.length, unusable: data.unusable.map(([p, reason]) => ({ path: p, reason })) });
  }
  return d;
}

/** Python's "%.{digits}f": toFixed, with an exact tie rounded half to even (0.03125 -> "0.0312"). */
export function pyFixed(x, digits = 4) {
  const s = x.toFixed(digits);
  const exact = x.toFixed(Math.min(100, digits + 60));
  const tail = exact.slice(exact.indexOf(".") + 1 + digits);
  if (!/^50*$/.test(tail)) return s;
  const down = exact.slice(0, exact.indexOf(".") + 1 + digits);
  return Number(down.at(-1)) % 2 === 0 ? down : s; // toFixed rounds a tie up
}

/** Python's "{:g}" for a probability (6 significant digits, trailing zeros dropped, 1e-05 style below 1e-4). */
export function pyG(x) {
  if (x === 0) return "0";
  const exp = Math.floor(Math.log10(Math.abs(x)));
  if (exp < -4 || exp >= 6) {
    const [m, e] = x.toExponential(5).split("e");
    const mant = m.includes(".") ? m.replace(/0+$/, "").replace(/\.$/, "") : m;
    const n = Number(e);
    return `${mant}e${n < 0 ? "-" : "+"}${String(Math.abs(n)).padStart(2, "0")}`;
  }
  return String(Number(x.toPrecision(6)));
}

const width = (s) => [...s].length; // Python's len: code points
const left = (s, w) => s + " ".repeat(Math.max(0, w - width(s)));
const right = (s, w) => " ".repeat(Math.max(0, w - width(s))) + s;

/** Accuracy, a per-class recall table and the confusion matrix, as Python's format_text prints them. */
export function formatEvaluation(ev, data = null) {
  const w = Math.max(8, ...ev.columns.map(width));
  const lines = [`accuracy  ${pyFixed(ev.accuracy)}  (${ev.correct}/${ev.n} images)`];
  const bad = data?.unusable.length ?? 0;
  if (bad) lines.push(`left out  ${bad} entr${bad === 1 ? "y" : "ies"} that could not be read (see the note above)`);
  if (ev.minProb !== null) lines.push(`unknown   ${ev.unknown} image(s) below min_prob ${pyG(ev.minProb)} (counted as wrong)`);
  lines.push("", `${left("class", w)}  ${right("recall", 7)}  ${right("images", 7)}`);
  ev.labels.forEach((lab, i) => {
    const r = ev.perClass[lab];
    const images = ev.confusion[i].reduce((a, b) => a + b, 0);
    lines.push(`${left(lab, w)}  ${right(r === null ? "-" : pyFixed(r), 7)}  ${right(String(images), 7)}`);
  });
  lines.push("", "confusion (rows: true class, columns: answer)");
  lines.push(`${left("", w)}  ` + ev.columns.map((c) => right(c, w)).join("  "));
  ev.labels.forEach((lab, i) => lines.push(`${left(lab, w)}  ` + ev.confusion[i].map((v) => right(String(v), w)).join("  ")));
  return lines.join("\n");
}
