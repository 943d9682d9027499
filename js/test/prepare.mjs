// Makes `npm test` self-sufficient: finds (or builds) a bundle with portable files and the
// conformance vectors the Python suite writes, under js/.cache/ (git-ignored).
//   bundle:  $TINA_EDGE_BUNDLE, else the repository's default bundle; one without generate.onnx
//            is converted with `tina-edge convert` (Python, no torch) into js/.cache/bundle.
//   vectors: js/.cache/vectors.json + js/.cache/models/ (Python's model.onnx per case),
//            written by `python -m tina_edge.export.portable.conformance` when absent or stale.
//   python:  $TINA_EDGE_PYTHON, else the repository's .venv, else python3.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const JS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const ROOT = path.resolve(JS, "..");
const CACHE = path.join(JS, ".cache");

function python() {
  if (process.env.TINA_EDGE_PYTHON) return process.env.TINA_EDGE_PYTHON;
  if (process.env.VIRTUAL_ENV) return path.join(process.env.VIRTUAL_ENV, "bin/python");
  for (const p of [path.join(ROOT, ".venv/bin/python"), path.join(ROOT, "venv/bin/python")]) if (fs.existsSync(p)) return p;
  return "python3";
}

function run(args) {
  const py = python();
  const env = { ...process.env, PYTHONPATH: [ROOT, process.env.PYTHONPATH].filter(Boolean).join(path.delimiter), OMP_NUM_THREADS: "1" };
  const r = spawnSync(py, args, { cwd: ROOT, env, encoding: "utf8" });
  if (r.status !== 0) {
    console.error(r.stdout, r.stderr);
    throw new Error(`${py} ${args.join(" ")} failed (exit ${r.status ?? r.error}); install tina-edge's Python runtime ` +
      "(pip install -e .) or set TINA_EDGE_PYTHON to a Python that has it");
  }
  return r.stdout;
}

const VECTORS_FORMAT = 17; // tina_edge/export/portable/conformance.py FORMAT: older vectors are rebuilt
const readJSON = (p) => JSON.parse(fs.readFileSync(p, "utf8"));

// the same source converted with --prior-only (the generator as the text prior alone) and Python's
// vectors for it: js/test/prior-only.test.mjs; {} when the source has no text prior to keep alone
function preparePriorOnly(source, srcManifest) {
  const bundle = path.join(CACHE, "bundle-prior-only");
  const vectors = path.join(CACHE, "vectors-prior-only.json");
  const stamp = path.join(CACHE, "bundle-prior-only.source");
  const key = `${source}\n${srcManifest.bundle_id}\n${VECTORS_FORMAT}`;
  if (!(fs.existsSync(stamp) && fs.readFileSync(stamp, "utf8") === key && fs.existsSync(vectors))) {
    try {
      run(["-m", "tina_edge.cli.main", "convert", source, "-o", bundle, "--prior-only", "--force"]);
    } catch {
      return {};
    }
    run(["-m", "tina_edge.export.portable.conformance", "--bundle", bundle, "-o", vectors, "--model-dir", path.join(CACHE, "models-prior-only")]);
    fs.writeFileSync(stamp, key);
  }
  return { priorOnly: { bundle, vectors } };
}

export function prepare() {
  fs.mkdirSync(CACHE, { recursive: true });
  const source = path.resolve(process.env.TINA_EDGE_BUNDLE ?? path.join(ROOT, "tina_edge/bundles/default"));
  const srcManifest = readJSON(path.join(source, "manifest.json"));
  let bundle = source;
  if (!srcManifest.portable?.generate) {
    bundle = path.join(CACHE, "bundle");
    const stamp = path.join(CACHE, "bundle.source");
    const fresh = fs.existsSync(path.join(bundle, "manifest.json")) && fs.existsSync(stamp) &&
      fs.readFileSync(stamp, "utf8") === `${source}\n${srcManifest.bundle_id}`;
    if (!fresh) {
      run(["-m", "tina_edge.cli.main", "convert", source, "-o", bundle, "--force"]);
      fs.writeFileSync(stamp, `${source}\n${srcManifest.bundle_id}`);
    }
  }
  const bundleId = readJSON(path.join(bundle, "manifest.json")).bundle_id;
  const vectors = path.join(CACHE, "vectors.json");
  const models = path.join(CACHE, "models");
  let stale = true;
  if (fs.existsSync(vectors)) {
    const v = readJSON(vectors);
    stale = v.bundle_id !== bundleId || v.bundle !== bundle || v.format !== VECTORS_FORMAT;
  }
  if (stale) run(["-m", "tina_edge.export.portable.conformance", "--bundle", bundle, "-o", vectors, "--model-dir", models]);
  const env = { bundle, vectors, models, root: ROOT, ...preparePriorOnly(source, srcManifest) };
  fs.writeFileSync(path.join(CACHE, "env.json"), JSON.stringify(env, null, 2) + "\n");
  return env;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const env = prepare();
  console.log(`tina-edge js tests: bundle ${env.bundle}, vectors ${env.vectors}`);
}
