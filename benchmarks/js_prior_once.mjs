// Node warm personalize of 10 cached names: the text prior inside generate.onnx's every step (OLD)
// vs prior.onnx once per personalize (NEW, `tina-edge convert`), timed in alternation in one process
// on onnxruntime-node, one intra-op thread; medians (issue 22).
//   cd js && node ../benchmarks/js_prior_once.mjs OLD_BUNDLE NEW_BUNDLE [--repeats 100] [--json OUT]
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const JS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../js");
const { TinaEdge } = await import(path.join(JS, "src/node.mjs"));
const args = process.argv.slice(2);
const opt = (name, dflt) => (args.includes(name) ? args[args.indexOf(name) + 1] : dflt);
const [oldDir, newDir] = args.filter((a, i) => !a.startsWith("--") && !(i > 0 && args[i - 1].startsWith("--")));
const repeats = Number(opt("--repeats", 100));
const med = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const pct = (xs, q) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) * q)];
const ort = await import(path.join(JS, "node_modules/onnxruntime-node/dist/index.js"));
const bundles = { old: oldDir, new: newDir };
const tinas = {};
for (const [label, dir] of Object.entries(bundles)) {
  tinas[label] = await TinaEdge.fromBundle(path.resolve(dir), { ort, backend: "onnxruntime-node", sessionOptions: { intraOpNumThreads: 1 } });
}
const m = tinas.old.manifest;
const ten = m.training.vocabulary.filter((v) => typeof v === "string").slice(0, 10).join(", ");
const loadBefore = os.loadavg().map((x) => +x.toFixed(2));
const times = { old: [], new: [] };
for (const t of Object.values(tinas)) for (let i = 0; i < 3; i++) await t.personalize(ten, { seed: i }); // warm-up, names cached
for (let r = 0; r < repeats; r++) {
  for (const [label, t] of Object.entries(tinas)) {
    const t0 = performance.now();
    await t.personalize(ten, { seed: r });
    times[label].push(performance.now() - t0);
  }
}
const out = { node: process.version, machine: `${os.cpus().length} cores (${os.cpus()[0]?.model}), shared`, repeats,
  load_average_before: loadBefore, load_average_after: os.loadavg().map((x) => +x.toFixed(2)), figures: {} };
for (const [label, xs] of Object.entries(times)) {
  out.figures[label] = { bundle_id: tinas[label].manifest.bundle_id, prior_graph: Boolean(tinas[label].manifest.portable.prior),
    median_ms: +med(xs).toFixed(2), min_ms: +Math.min(...xs).toFixed(2), p10_ms: +pct(xs, 0.1).toFixed(2), p90_ms: +pct(xs, 0.9).toFixed(2) };
  tinas[label].dispose();
}
console.log(JSON.stringify(out, null, 2));
if (args.includes("--json")) fs.writeFileSync(opt("--json"), JSON.stringify(out, null, 2) + "\n");
