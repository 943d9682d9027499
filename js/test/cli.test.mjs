// node bin/tina-edge.mjs personalize writes the model the Python CLI writes (same prompt and seed).
import test from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { decodeModel, readModelMetadata } from "../src/classifier.mjs";
import { env, vectors, JS, maxAbsDiff } from "./helpers.mjs";

test("node CLI: same labels and tensors as Python's model.onnx within 1e-5", () => {
  const v = vectors();
  const c = v.cases[1];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tina-js-"));
  const out = path.join(dir, "model.onnx");
  const r = spawnSync(process.execPath, [path.join(JS, "bin/tina-edge.mjs"), "personalize", c.prompt, "--seed", c.seed,
    "-o", out, "--bundle", env().bundle, "--head", path.join(dir, "head.json"), "--json"], { encoding: "utf8" });
  assert.equal(r.status, 0, r.stderr);
  const summary = JSON.parse(r.stdout);
  assert.deepEqual(summary.labels, c.labels);
  const js = decodeModel(fs.readFileSync(out));
  const py = decodeModel(fs.readFileSync(path.join(env().models, c.model)));
  assert.deepEqual(JSON.parse(readModelMetadata(fs.readFileSync(out)).labels), c.labels);
  const f32 = (t) => new Float32Array(new Uint8Array(t.raw_data).slice().buffer);
  const pyInit = Object.fromEntries(py.graph.initializer.map((t) => [t.name, t]));
  for (const name of Object.keys(c.params)) {
    const a = js.graph.initializer.find((t) => t.name === name);
    assert.ok(maxAbsDiff(f32(a), f32(pyInit[name])) <= 1e-5, name);
  }
  const again = spawnSync(process.execPath, [path.join(JS, "bin/tina-edge.mjs"), "personalize", c.prompt, "-o", out,
    "--bundle", env().bundle], { encoding: "utf8" });
  assert.equal(again.status, 2);
  assert.match(again.stderr, /already exists/);
  fs.rmSync(dir, { recursive: true, force: true });
});

test("node CLI summary as Python's: the sense of each ambiguous name, its warnings, and what generated the weights", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tina-js-sum-"));
  try {
    const r = spawnSync(process.execPath, [path.join(JS, "bin/tina-edge.mjs"), "personalize", "dog, crane (bird)", "-o",
      path.join(dir, "m.onnx"), "--bundle", env().bundle], { encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    const m = JSON.parse(fs.readFileSync(path.join(env().bundle, "manifest.json"), "utf8"));
    if (m.text_encoder.senses) {
      assert.match(r.stderr, /'dog' is read as dog \(animal\) \(most frequent visible sense\); for another sense write /);
      assert.match(r.stderr, /'crane \(bird\)' is read as crane \(bird\) \(qualifier\)/);
    }
    const j = spawnSync(process.execPath, [path.join(JS, "bin/tina-edge.mjs"), "personalize", "dog, crane (bird)", "-o",
      path.join(dir, "m.onnx"), "--bundle", env().bundle, "--json", "--force"], { encoding: "utf8" });
    const d = JSON.parse(j.stdout);
    assert.equal(d.prior_only, m.portable.prior?.only === true);
    if (m.text_encoder.senses) assert.equal(d.names.find((n) => n.name === "crane (bird)").sense.how, "qualifier");
    assert.match(r.stderr, m.portable.prior?.only === true
      ? /the text prior alone \(no denoiser step; seed and candidates change nothing\), bundle /
      : /ddim \d+ steps, seed 0, 1 candidate\(s\), bundle /);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("node CLI --classes-file: one class per line as Python reads it; a bad line exits 2 with its number", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tina-js-cf-"));
  try {
    const good = path.join(dir, "shop.txt"), bad = path.join(dir, "bad.txt");
    fs.writeFileSync(good, "\ufeff# my shop\r\ngoldfish\r\nschool bus, lemon\n\npizza\n");
    fs.writeFileSync(bad, "dog\nmouse (rodent, small)\n");
    const cli = (...a) => spawnSync(process.execPath, [path.join(JS, "bin/tina-edge.mjs"), "personalize", ...a, "--bundle", env().bundle],
      { encoding: "utf8" });
    const r = cli("--classes-file", good, "-o", path.join(dir, "m.onnx"), "--json");
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout).labels, ["goldfish", "school bus", "lemon", "pizza"]);
    const e = cli("--classes-file", bad, "-o", path.join(dir, "n.onnx"));
    assert.equal(e.status, 2);
    assert.equal(e.stderr.trim().split("\n").length, 1);
    assert.match(e.stderr, /bad\.txt line 2: class name 1 of 2 \("mouse \(rodent"\) has unbalanced parentheses/);
    assert.ok(!fs.existsSync(path.join(dir, "n.onnx")));
    const both = cli("dog, cat", "--classes-file", good, "-o", path.join(dir, "o.onnx"));
    assert.equal(both.status, 2);
    assert.match(both.stderr, /--classes-file names the classes; leave out CLASSES/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("node CLI on a full disk (RLIMIT_FSIZE): exit 2, one error line, no output and no temp file left", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tina-js-full-"));
  try {
    const cmd = `ulimit -f 2000; exec "${process.execPath}" "${path.join(JS, "bin/tina-edge.mjs")}" personalize "dog, cat" ` +
      `-o "${path.join(dir, "m.onnx")}" --head "${path.join(dir, "h.json")}" --bundle "${env().bundle}"`;
    const r = spawnSync("bash", ["-c", cmd], { encoding: "utf8" });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /^error: cannot write .*m\.onnx and .*h\.json \(EFBIG\); nothing was written/);
    assert.equal(r.stderr.trim().split("\n").length, 1);
    assert.deepEqual(fs.readdirSync(dir), []);
    const same = spawnSync(process.execPath, [path.join(JS, "bin/tina-edge.mjs"), "personalize", "dog, cat", "-o",
      path.join(dir, "x"), "--head", path.join(dir, ".", "x"), "--bundle", env().bundle], { encoding: "utf8" });
    assert.equal(same.status, 2);
    assert.match(same.stderr, /name the same file/);
    assert.deepEqual(fs.readdirSync(dir), []);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("node CLI: a seed above 2**53 is recorded exactly in the model and the head", () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tina-js-seed-"));
  try {
    const seed = "18446744073709551557";
    const r = spawnSync(process.execPath, [path.join(JS, "bin/tina-edge.mjs"), "personalize", "dog, cat", "--seed", seed,
      "-o", path.join(dir, "m.onnx"), "--head", path.join(dir, "h.json"), "--bundle", env().bundle, "--json"], { encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).seed, seed);
    const meta = readModelMetadata(fs.readFileSync(path.join(dir, "m.onnx")));
    assert.match(meta.sampler, new RegExp(`"seed": ${seed},`));
    assert.match(fs.readFileSync(path.join(dir, "h.json"), "utf8"), new RegExp(`"seed": ${seed},`));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test("node CLI predict: a Python-written model.onnx on a PNG gives Python's probabilities (its preprocess metadata)", async () => {
  const { default: sharp } = await import("sharp");
  const v = vectors();
  const c = v.cases[0];
  if (!c.photo_probabilities) return; // a bundle without template.input.preprocess
  const ph = v.preprocess[v.preprocess.length - 1];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tina-js-predict-"));
  try {
    await sharp(Buffer.from(ph.data, "base64"), { raw: { width: ph.width, height: ph.height, channels: ph.channels } })
      .png().toFile(path.join(dir, "photo.png"));
    fs.writeFileSync(path.join(dir, "notes.txt"), "not an image");
    const model = path.join(env().models, c.model);
    const r = spawnSync(process.execPath, [path.join(JS, "bin/tina-edge.mjs"), "predict", model, dir, "--json", "--top", "2"], { encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /note: 1 path\(s\) were not used, e\.g\. .*notes\.txt \(not an image suffix\)/);
    const [row] = JSON.parse(r.stdout);
    const want = c.photo_probabilities[0];
    const best = want.indexOf(Math.max(...want));
    assert.equal(row.label, c.labels[best]);
    assert.ok(Math.abs(row.probability - want[best]) <= 1e-5, `${row.probability} vs ${want[best]}`);
    const t = spawnSync(process.execPath, [path.join(JS, "bin/tina-edge.mjs"), "predict", model, path.join(dir, "photo.png"), "--min-prob", "1"],
      { encoding: "utf8" });
    assert.equal(t.status, 0, t.stderr);
    assert.match(t.stdout, /photo\.png\tunknown\t/);
    const bad = spawnSync(process.execPath, [path.join(JS, "bin/tina-edge.mjs"), "predict", model, path.join(dir, "notes.txt")], { encoding: "utf8" });
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /^error: cannot read .*notes\.txt as an image/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
