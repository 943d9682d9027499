// Fills this package folder with the portable files of a tina-edge bundle, at pack time (npm pack
// runs it as `prepack`); the binaries are never committed (.gitignore).
//   node fill.mjs [SOURCE_DIR]   SOURCE_DIR: a portable bundle (`tina-edge convert -o DIR`); default
//   $TINA_EDGE_BUNDLE, else `python -m tina_edge convert -o <tmp>` ($TINA_EDGE_PYTHON or python3).
// The files the JS package reads are copied and checked against the manifest's sha256;
// denoiser.onnx (Python's sampler only) is left out.
import { spawnSync } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const FILES = ["manifest.json", "text_encoder.onnx", "prior.onnx", "generate.onnx", "template.onnx", "tokenizer.json",
  "tokenizer_config.json", "vocabulary_embeddings.npy", "senses.json.gz", "name_table.json.gz", "name_table.npy"];
// prior.onnx, senses.json.gz, the name table: where the bundle has them (issue 22)

export function fill(source, dest = HERE) {
  const m = JSON.parse(fs.readFileSync(path.join(source, "manifest.json"), "utf8"));
  if (!m.portable?.generate) throw new Error(`${source} has no portable files; run tina-edge convert ${source} -o OUT first`);
  for (const f of FILES) {
    if (f !== "manifest.json" && !m.files[f]) continue;
    const bytes = fs.readFileSync(path.join(source, f));
    if (f !== "manifest.json" && crypto.createHash("sha256").update(bytes).digest("hex") !== m.files[f].sha256) {
      throw new Error(`${source}/${f} does not match the manifest's sha256`);
    }
    const tmp = path.join(dest, `.${f}.tmp-${process.pid}`);
    try {
      fs.writeFileSync(tmp, bytes);
      fs.renameSync(tmp, path.join(dest, f));
    } catch (e) {
      fs.rmSync(tmp, { force: true });
      throw e;
    }
  }
  return m.bundle_id;
}

function convert() {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), "tina-edge-bundle-"));
  const py = process.env.TINA_EDGE_PYTHON ?? "python3";
  const r = spawnSync(py, ["-m", "tina_edge", "convert", "-o", out, "--force"], { stdio: "inherit" });
  if (r.status !== 0) throw new Error(`${py} -m tina_edge convert failed; pass a portable bundle directory instead`);
  return out;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const source = process.argv[2] ?? process.env.TINA_EDGE_BUNDLE ?? convert();
  const id = fill(path.resolve(source));
  console.log(`tina-edge-default-bundle: bundle ${id} from ${source}`);
}
