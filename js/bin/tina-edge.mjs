#!/usr/bin/env node
// tina-edge (node): personalize a classifier from class names and write the same standalone
// model.onnx the Python CLI writes for the same prompt and seed.
//   node js/bin/tina-edge.mjs personalize "dog, cat" --seed 0 -o model.onnx [--bundle DIR] [--head head.json]
import fs from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { TinaEdge, TinaEdgeError, PromptError, parseClasses, classesFromLines, classKey, loadModel, readImage } from "../src/node.mjs";
import { isPriorOnly } from "../src/prior-only.mjs";
import { readsAsLine } from "../src/novelty.mjs";
import { evaluate, evaluationDict, formatEvaluation } from "../src/evaluate.mjs";
import { labelledImages, IMAGE_SUFFIXES } from "../src/image-folders.mjs";
import { imagesOption, folderClasses, decodePhotoPrompts, photoReads, checkNotPhotos, builtFrom } from "../src/photo-args.mjs";

const USAGE = `usage: tina-edge personalize (CLASSES... | --classes-file FILE) -o model.onnx [--seed N] [--bundle DIR|URL] [--head FILE] [--force] [--json]
           [--describe NAME=TEXT]... [--images NAME=IMG[,IMG...]]... [--from-folders DIR] [--photos-only]
           (photos: 1-20 per class, files or the image files directly inside a folder; --from-folders: one sub-folder per class)
       tina-edge predict MODEL IMAGES... [--top K] [--min-prob P] [--json]   (files or folders; decoding needs sharp)
       tina-edge evaluate MODEL DIR [--min-prob P] [--batch-size N] [--json]   (DIR: one folder of photos per class;
           accuracy, per-class recall, confusion; decoding needs sharp; no --plot here: it needs Python's matplotlib)
       tina-edge info [--bundle DIR|URL]`;

function fail(msg, code = 2) {
  process.stderr.write(`error: ${msg}\n`);
  process.exit(code);
}

/**
 * Write every output as one unit: all temp files first, then the renames; on any failure (a full
 * disk, a read-only directory) every temp is removed and the targets keep their old content.
 */
function commitAll(outputs) {
  const tmps = [];
  try {
    for (const [file, data] of outputs) {
      const tmp = `${file}.tmp-${process.pid}`;
      tmps.push(tmp);
      fs.writeFileSync(tmp, data, { flag: "wx" });
    }
    outputs.forEach(([file], i) => fs.renameSync(tmps[i], file));
  } catch (e) {
    for (const t of tmps) fs.rmSync(t, { force: true });
    const what = outputs.map(([f]) => f).join(" and ");
    throw new TinaEdgeError(`cannot write ${what} (${e.code ?? e.message}); nothing was written: free disk space or choose another directory`);
  }
}

/** Files, and image files in folders (walked recursively, sorted; Python's IMAGE_SUFFIXES, as evaluate takes them); what was skipped and why is counted. */
function expandPaths(items) {
  const files = [];
  const skipped = [];
  const walk = (p, top) => {
    let st;
    try { st = fs.statSync(p); } catch (e) { if (top) fail(`${p} does not exist`); skipped.push(`${p} (${e.code})`); return; }
    if (st.isDirectory()) {
      let names;
      try { names = fs.readdirSync(p).sort(); } catch (e) { skipped.push(`${p} (${e.code})`); return; }
      for (const n of names) walk(path.join(p, n), false);
    } else if (top || (st.isFile() && IMAGE_SUFFIXES.includes(path.extname(p).toLowerCase()))) files.push(p);
    else skipped.push(`${p} (${st.isFile() ? "not an image suffix" : "not a regular file"})`);
  };
  for (const it of items) walk(it, true);
  return { files, skipped };
}

function minProbOption(values) {
  const minProb = values["min-prob"] === undefined ? null : Number(values["min-prob"]);
  if (minProb !== null && !(values["min-prob"].trim() && minProb >= 0 && minProb <= 1)) {
    fail(`--min-prob must be a number from 0 to 1, got ${values["min-prob"]}`);
  }
  return minProb;
}

/** The twin of Python's `tina-edge predict`: IMAGE<TAB>[ANSWER<TAB>]LABEL PROB... per image, or --json. */
async function predictCmd([model, ...images], values) {
  if (!model || !images.length) fail(`name a model and images\n${USAGE}`);
  const top = Number(values.top);
  if (!Number.isInteger(top) || top < 1) fail(`--top must be an integer >= 1, got ${values.top}`);
  const minProb = minProbOption(values);
  const clf = await loadModel(model);
  const { files, skipped } = expandPaths(images);
  if (skipped.length) process.stderr.write(`note: ${skipped.length} path(s) were not used, e.g. ${skipped[0]}\n`);
  const rows = [];
  for (const f of files) {
    const [p] = await clf.predict(await readImage(f), { minProb });
    const order = [...p.probabilities.keys()].sort((a, b) => p.probabilities[b] - p.probabilities[a]).slice(0, top);
    rows.push({ image: f, label: p.label, probability: Math.max(...p.probabilities),
      top: order.map((j) => ({ label: clf.labels[j], probability: p.probabilities[j] })) });
  }
  if (values.json) { process.stdout.write(JSON.stringify(rows) + "\n"); return; }
  const safe = (t) => JSON.stringify(String(t)).slice(1, -1);
  for (const r of rows) {
    process.stdout.write(`${safe(r.image)}\t${minProb !== null ? safe(r.label) + "\t" : ""}` +
      r.top.map((t) => `${safe(t.label)} ${t.probability.toFixed(3)}`).join("\t") + "\n");
  }
}

const safeLine = (t) => String(t).replace(/[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}\p{Zs}]/gu, (ch) => { // Python's safe()
  const cp = ch.codePointAt(0);
  if (ch === " " || cp === 0x200c || cp === 0x200d) return ch;
  return cp < 0x100 ? `\\x${cp.toString(16).padStart(2, "0")}` : cp < 0x10000 ? `\\u${cp.toString(16).padStart(4, "0")}`
    : `\\U${cp.toString(16).padStart(8, "0")}`;
});

/** The twin of Python's `tina-edge evaluate MODEL DIR`: accuracy, per-class recall and confusion (or --json). */
async function evaluateCmd([model, dir, ...extra], values) {
  if (!model || !dir || extra.length) fail(`name a model and one folder that holds a folder of photos per class\n${USAGE}`);
  if (values.plot !== undefined) fail("--plot needs matplotlib, which the node CLI does not have; use Python's tina-edge evaluate --plot");
  const minProb = minProbOption(values);
  const batch = Number(values["batch-size"]);
  if (!Number.isInteger(batch) || batch < 1) fail(`--batch-size must be an integer >= 1, got ${values["batch-size"]}`);
  const clf = await loadModel(model);
  const data = labelledImages(dir, clf.labels);
  const note = (line) => process.stderr.write(safeLine(`note: ${line}`) + "\n");
  const u = data.unmatchedFolders;
  if (u.length) note(`${u.length} folder(s) match no label and were not used: ${u.slice(0, 20).join(", ")}${u.length > 20 ? " ..." : ""}`);
  if (data.missingLabels.length) note(`no folder for label(s): ${data.missingLabels.join(", ")}`);
  if (data.skippedFiles.length) {
    note(`${data.skippedFiles.length} file(s) are not images in class folders (by suffix) and were not used, e.g. ${data.skippedFiles[0]}`);
  }
  const bad = data.unusable;
  if (bad.length) {
    note(`${bad.length} entr${bad.length === 1 ? "y" : "ies"} could not be used and ${bad.length === 1 ? "was" : "were"} left out: ` +
      bad.slice(0, 5).map(([p, why]) => `${p} (${why})`).join("; ") + (bad.length > 5 ? " ..." : "") +
      "; the accuracy counts only the images that were read");
  }
  const predictions = [];
  for (let s = 0; s < data.files.length; s += batch) { // bounded memory: a batch of decoded photos at a time
    const images = [];
    for (const f of data.files.slice(s, s + batch)) images.push(await readImage(f));
    predictions.push(...await clf.predict(images, { minProb }));
  }
  const ev = evaluate(clf.labels, data.targets, predictions, { minProb });
  if (values.json) process.stdout.write(JSON.stringify(evaluationDict(ev, data)) + "\n");
  else process.stdout.write(formatEvaluation(ev, data).split("\n").map(safeLine).join("\n") + "\n");
}

const MAX_CLASSES_FILE_BYTES = 16 << 20; // Python's MAX_BATCH_FILE_BYTES

/** The class names of a --classes-file FILE (a regular UTF-8 file of at most 16 MiB), as Python reads it. */
function classesFile(file) {
  const layout = "one class name per line, e.g. 'dog'";
  let st;
  try {
    st = fs.statSync(file);
  } catch (e) {
    fail(`cannot read ${file}: ${e.code === "ENOENT" ? "No such file or directory" : e.message}`);
  }
  if (!st.isFile()) fail(`${file} is not a regular file; write ${layout} in a text file`);
  if (st.size > MAX_CLASSES_FILE_BYTES) fail(`${file} is larger than 16 MiB; split it into several files`);
  let text;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(fs.readFileSync(file)); // a BOM is dropped, as utf-8-sig
  } catch {
    fail(`${file} is not UTF-8 text; write ${layout}`);
  }
  try {
    return classesFromLines(text);
  } catch (e) {
    if (!(e instanceof PromptError)) throw e;
    fail(e.message.startsWith("line ") ? `${file} ${e.message}` : `${file}: ${e.message}`);
  }
}

async function main(argv) {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === "-h" || cmd === "--help") { process.stdout.write(USAGE + "\n"); return; }
  const { values, positionals } = parseArgs({
    args: rest, allowPositionals: true,
    options: {
      output: { type: "string", short: "o" }, seed: { type: "string", default: "0" }, bundle: { type: "string" },
      head: { type: "string" }, force: { type: "boolean", default: false }, json: { type: "boolean", default: false },
      describe: { type: "string", multiple: true }, top: { type: "string", default: "1" }, "min-prob": { type: "string" },
      "classes-file": { type: "string" }, images: { type: "string", multiple: true }, "from-folders": { type: "string" },
      "photos-only": { type: "boolean", default: false }, "batch-size": { type: "string", default: "32" }, plot: { type: "string" },
    },
  });
  if (cmd === "info") {
    const tina = await TinaEdge.fromBundle(values.bundle, { loadTemplate: false });
    const m = tina.manifest;
    process.stdout.write(JSON.stringify({ bundle_id: m.bundle_id, k_max: m.denoiser.k_max, input: m.template.input,
      text_encoder: m.text_encoder.name, generate: m.portable.generate, backend: tina.backend, timings: tina.timings }, null, 2) + "\n");
    return;
  }
  if (cmd === "predict") return predictCmd(positionals, values);
  if (cmd === "evaluate") return evaluateCmd(positionals, values);
  if (cmd !== "personalize") fail(`unknown command ${cmd}\n${USAGE}`);
  let names = positionals;
  if (values["classes-file"] !== undefined) { // one class name per line (Python's --classes-file)
    if (positionals.length) fail("--classes-file names the classes; leave out CLASSES (or drop --classes-file)");
    names = classesFile(values["classes-file"]);
  }
  let images = imagesOption(values.images); // photo prompts (src/photo-args.mjs): Python's --images and --from-folders
  if (values["from-folders"] !== undefined) ({ classes: names, images } = folderClasses(values["from-folders"], names, images));
  if (!names.length) fail(`name the classes, e.g. "dog, cat"\n${USAGE}`);
  if (!values.output) fail("give the output file with -o model.onnx");
  if (!/^\d{1,20}$/.test(values.seed) || BigInt(values.seed) >= 2n ** 64n) fail(`--seed must be an integer from 0 to 2**64-1, got ${values.seed}`);
  const seed = BigInt(values.seed);
  if (values.head && path.resolve(values.head) === path.resolve(values.output)) {
    fail(`-o and --head name the same file ${values.output}; give the head its own path`);
  }
  for (const f of [values.output, values.head].filter(Boolean)) {
    if (fs.existsSync(f) && !fs.statSync(f).isFile()) fail(`cannot write ${f}: it is not a regular file; choose a file path`);
    if (fs.existsSync(f) && !values.force) fail(`${f} already exists; choose another path or pass --force to overwrite it`);
    if (!fs.existsSync(path.dirname(path.resolve(f)))) fail(`cannot write ${f}: its directory does not exist`);
  }
  checkNotPhotos([[values.output, "-o"], ...(values.head ? [[values.head, "--head"]] : [])], photoReads(images, values["from-folders"]));
  const t0 = performance.now();
  const tina = await TinaEdge.fromBundle(values.bundle);
  let descriptions = null;
  if (values.describe?.length) {
    const list = parseClasses(names);
    descriptions = list.map(() => null);
    for (const item of values.describe) {
      const i = item.indexOf("=");
      const key = i > 0 ? classKey(item.slice(0, i)) : "";
      const j = list.findIndex((n) => classKey(n) === key);
      if (j < 0) fail(`--describe takes NAME=TEXT with NAME one of the classes; got ${item}`);
      descriptions[j] = item.slice(i + 1);
    }
  }
  const photos = images.length ? await decodePhotoPrompts(parseClasses(names), images, readImage) : null;
  const t1 = performance.now();
  const clf = await tina.personalize(names, { seed, descriptions, images: photos, photosOnly: values["photos-only"] });
  const t2 = performance.now();
  const outputs = [[values.output, clf.toModelBytes()]];
  if (values.head) outputs.push([values.head, clf.toHeadText()]);
  commitAll(outputs);
  const keep = clf.labels.map((_, i) => clf.texts?.[i] !== null); // a photos-only label is only a label: no novelty
  const nov = keep.some(Boolean) ? await tina.novelty(clf.labels.filter((_, i) => keep[i]),
    { descriptions: descriptions?.filter((_, i) => keep[i]) ?? null }) : { seen: [], new: [], nearest: {}, confusable: [] };
  const built = builtFrom(clf.labels, clf.texts, clf.imagePrompts);
  const s = clf.sampler;
  if (values.json) {
    process.stdout.write(JSON.stringify({ output: values.output, head: values.head ?? null, labels: clf.labels, seen: nov.seen,
      new: nov.new, nearest_known: nov.nearest, confusable: nov.confusable, ...s, image_prompts: clf.imagePrompts ?? {},
      built_from: built, names: nov.names ?? [],
      prior_only: isPriorOnly(tina.manifest), bundle_id: clf.bundleId, backend: tina.backend,
      session_ms: +(t1 - t0).toFixed(1), generate_ms: +(t2 - t1).toFixed(1) }) + "\n");
    return;
  }
  const say = (line) => process.stderr.write(safeLine(line) + "\n"); // labels and paths come from strangers
  say(`wrote ${values.output}: ${clf.k} classes, labels in this order: ${clf.labels.join(", ")}`);
  if (clf.imagePrompts && Object.keys(clf.imagePrompts).length) {
    say("  prompted by images: " + Object.entries(clf.imagePrompts).map(([n, c]) => `${n} (${c})`).join(", "));
    say("  built from: " + Object.entries(built).map(([n, how]) => `${n}: ${how}`).join("; "));
  }
  if (nov.seen.length) say(`  seen in training:  ${nov.seen.join(", ")}`);
  if (nov.new.length) say(`  new (not in training vocabulary, expect lower accuracy): ${nov.new.join(", ")}`);
  for (const [n, near] of Object.entries(nov.nearest)) say(`  '${n}' is new; nearest known names: ` + near.map(([m, c]) => `${m} (${c.toFixed(2)})`).join(", "));
  for (const item of nov.names ?? []) { // senses (issue 22), as Python's CLI prints them
    if (item.sense) say(`  '${item.name}' is read as ${item.sense.sense} (${item.sense.how}); ${item.sense.choose}`);
    if (item.reads_as) say(`  ${readsAsLine(item.name, item.reads_as)}`);
    if (item.warning) say(`  warning: '${item.name}': ${item.warning}`);
  }
  for (const [a, b, c] of nov.confusable) say(`  warning: '${a}' and '${b}' are close in meaning (cosine ${c.toFixed(2)}); their classes may be confused`);
  const how = isPriorOnly(tina.manifest) ? "the text prior alone (no denoiser step; seed and candidates change nothing)"
    : `${s.sampler} ${s.steps} steps, seed ${s.seed}, ${s.candidates} candidate(s)`;
  say(`  ${how}, bundle ${clf.bundleId}; ` +
    `generated in ${(t2 - t1).toFixed(0)} ms (${(performance.now() - t0).toFixed(0)} ms in all) on ${tina.backend}`);
}

main(process.argv.slice(2)).catch((e) => {
  if (e instanceof TinaEdgeError || e?.name === "TinaEdgeError") fail(e.message);
  fail(e?.stack || String(e), 1);
});
