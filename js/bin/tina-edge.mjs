#!/usr/bin/env node
// tina-edge (node): personalize a classifier from class names and write the same standalone
// model.onnx the Python CLI writes for the same prompt and seed.
//   node js/bin/tina-edge.mjs personalize "dog, cat" --seed 0 -o model.onnx [--bundle DIR] [--head head.json]
import fs from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { TinaEdge, TinaEdgeError } from "../src/node.mjs";

const USAGE = `usage: tina-edge personalize CLASSES... -o model.onnx [--seed N] [--bundle DIR|URL] [--head FILE] [--force] [--json]
       tina-edge info [--bundle DIR|URL]`;

function fail(msg, code = 2) {
  process.stderr.write(`error: ${msg}\n`);
  process.exit(code);
}

async function main(argv) {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === "-h" || cmd === "--help") { process.stdout.write(USAGE + "\n"); return; }
  const { values, positionals } = parseArgs({
    args: rest, allowPositionals: true,
    options: {
      output: { type: "string", short: "o" }, seed: { type: "string", default: "0" }, bundle: { type: "string" },
      head: { type: "string" }, force: { type: "boolean", default: false }, json: { type: "boolean", default: false },
      describe: { type: "string", multiple: true },
    },
  });
  if (cmd === "info") {
    const tina = await TinaEdge.fromBundle(values.bundle, { loadTemplate: false });
    const m = tina.manifest;
    process.stdout.write(JSON.stringify({ bundle_id: m.bundle_id, k_max: m.denoiser.k_max, input: m.template.input,
      text_encoder: m.text_encoder.name, generate: m.portable.generate, timings: tina.timings }, null, 2) + "\n");
    return;
  }
  if (cmd !== "personalize") fail(`unknown command ${cmd}\n${USAGE}`);
  if (!positionals.length) fail(`name the classes, e.g. "dog, cat"\n${USAGE}`);
  if (!values.output) fail("give the output file with -o model.onnx");
  if (!/^\d+$/.test(values.seed)) fail(`--seed must be a non-negative integer, got ${values.seed}`);
  const seed = BigInt(values.seed);
  for (const f of [values.output, values.head].filter(Boolean)) {
    if (fs.existsSync(f) && !values.force) fail(`${f} already exists; choose another path or pass --force to overwrite it`);
    if (!fs.existsSync(path.dirname(path.resolve(f)))) fail(`cannot write ${f}: its directory does not exist`);
  }
  const t0 = performance.now();
  const tina = await TinaEdge.fromBundle(values.bundle);
  const names = positionals;
  let descriptions = null;
  if (values.describe?.length) {
    const { parseClasses, } = await import("../src/prompt.mjs");
    const list = parseClasses(names);
    descriptions = list.map(() => null);
    for (const item of values.describe) {
      const i = item.indexOf("=");
      const key = i > 0 ? item.slice(0, i).trim().toLowerCase() : "";
      const j = list.findIndex((n) => n.toLowerCase() === key);
      if (j < 0) fail(`--describe takes NAME=TEXT with NAME one of the classes; got ${item}`);
      descriptions[j] = item.slice(i + 1);
    }
  }
  const t1 = performance.now();
  const clf = await tina.personalize(names, { seed, descriptions });
  const t2 = performance.now();
  const write = (file, data) => { const tmp = `${file}.tmp-${process.pid}`; fs.writeFileSync(tmp, data); fs.renameSync(tmp, file); };
  write(values.output, clf.toModelBytes());
  if (values.head) write(values.head, JSON.stringify(clf.toHead()) + "\n");
  const summary = { output: values.output, head: values.head ?? null, labels: clf.labels, seed: Number(seed),
    sampler: clf.sampler, bundle_id: clf.bundleId, session_ms: +(t1 - t0).toFixed(1), generate_ms: +(t2 - t1).toFixed(1) };
  if (values.json) process.stdout.write(JSON.stringify(summary) + "\n");
  else process.stderr.write(`wrote ${values.output}: ${clf.k} classes, labels in this order: ${clf.labels.join(", ")}\n` +
    `  ddim ${clf.sampler.steps} steps, seed ${seed}, bundle ${clf.bundleId}; generated in ${(t2 - t1).toFixed(0)} ms\n`);
}

main(process.argv.slice(2)).catch((e) => {
  if (e instanceof TinaEdgeError || e?.name === "TinaEdgeError") fail(e.message);
  fail(e?.stack || String(e), 1);
});
