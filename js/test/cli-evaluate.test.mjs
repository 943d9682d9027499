// node bin/tina-edge.mjs evaluate and personalize's photo prompts (--images, --from-folders, --photos-only):
// the numbers predict's answers give, Python's output format and JSON keys (and Python's own output when
// $TINA_EDGE_PYTHON names a Python with tina-edge), the model the JS API makes from the same pixels, and
// the refusals (exit 2, one line, nothing written).
import test from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { TinaEdge, readImage, evaluate, formatEvaluation, evaluationDict, confusionMatrix } from "../src/node.mjs";
import { pyFixed, pyG } from "../src/evaluate.mjs";
import { decodeModel, readModelMetadata } from "../src/classifier.mjs";
import { env, JS, maxAbsDiff } from "./helpers.mjs";

const { default: sharp } = await import("sharp");
const BIN = path.join(JS, "bin/tina-edge.mjs");
const cli = (...args) => spawnSync(process.execPath, [BIN, ...args], { encoding: "utf8" });
const PY = process.env.TINA_EDGE_PYTHON;
const python = (...args) => spawnSync(PY, ["-m", "tina_edge.cli.main", ...args], { encoding: "utf8", cwd: env().root,
  env: { ...process.env, PYTHONPATH: [env().root, process.env.PYTHONPATH].filter(Boolean).join(path.delimiter), OMP_NUM_THREADS: "1" } });
const NO_PYTHON = PY ? false : "set TINA_EDGE_PYTHON to a Python with tina-edge to compare with its CLI";

function oneErrorLine(r, pattern) {
  assert.equal(r.status, 2, r.stderr);
  assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
  assert.match(r.stderr, /^error: /);
  assert.match(r.stderr, pattern);
}

let state = 7n;
function rand() { // xorshift64: the same photos every run
  state ^= (state << 13n) & 0xffffffffffffffffn; state ^= state >> 7n; state ^= (state << 17n) & 0xffffffffffffffffn;
  return Number(state & 0xffffn) / 0x10000;
}

/** A PNG of colour `rgb` with noise (lossless: sharp and Pillow decode the same bytes). */
async function photo(file, rgb, w, h, noise = 90) {
  const data = Buffer.alloc(w * h * 3);
  for (let i = 0; i < w * h; i++) for (let c = 0; c < 3; c++) data[i * 3 + c] = Math.max(0, Math.min(255, rgb[c] + (rand() - 0.5) * noise * 2));
  fs.mkdirSync(path.dirname(file), { recursive: true });
  await sharp(data, { raw: { width: w, height: h, channels: 3 } }).png().toFile(file);
}

const DIR = fs.mkdtempSync(path.join(os.tmpdir(), "tina-js-eval-"));
const MODEL = path.join(DIR, "m.onnx");
const PHOTOS = path.join(DIR, "photos"); // evaluate's layout: one folder per class, matched to labels by class identity
const LABELS = ["goldfish", "lemon", "school bus"];
const COLOURS = { goldfish: [235, 120, 30], Lemon: [230, 220, 60], school_bus: [215, 170, 40] }; // close colours: some answers wrong
for (const [folder, rgb] of Object.entries(COLOURS)) {
  for (let j = 0; j < 4; j++) await photo(path.join(PHOTOS, folder, `${j}.png`), rgb, 40 + 9 * j, 48 - 4 * j);
}
await photo(path.join(PHOTOS, "goldfish", "more", "deep.png"), [120, 130, 140], 32, 32); // walked recursively
await photo(path.join(PHOTOS, "goldfish", ".hidden.png"), [0, 0, 0], 8, 8); // hidden: never read
fs.writeFileSync(path.join(PHOTOS, "Lemon", "notes.txt"), "not a photo");
fs.writeFileSync(path.join(PHOTOS, "README"), "one folder per class");
await photo(path.join(PHOTOS, "other", "0.png"), [0, 0, 255], 16, 16);
// personalize's photos (every fixture is made before the first test runs)
const PETS = path.join(DIR, "pets");
for (let j = 0; j < 3; j++) await photo(path.join(PETS, "rex", `${j}.png`), [150, 90, 40], 36 + j, 30);
for (let j = 0; j < 2; j++) await photo(path.join(PETS, "bella", `${j}.png`), [60, 60, 60], 30, 30 + j);
const decoded = async (dir) => Promise.all(fs.readdirSync(dir).sort().map((f) => readImage(path.join(dir, f))));
const tina = await TinaEdge.fromBundle(env().bundle);
test.after(() => fs.rmSync(DIR, { recursive: true, force: true }));

test("evaluate: the model made by the CLI", () => {
  const r = cli("personalize", LABELS.join(", "), "-o", MODEL, "--bundle", env().bundle);
  assert.equal(r.status, 0, r.stderr);
});

/** By hand from `predict --json` on each class folder: [true index, answered label] per image. */
function byHand(minProb) {
  const rows = [];
  for (const [folder, i] of [["goldfish", 0], ["Lemon", 1], ["school_bus", 2]]) {
    const files = [...fs.readdirSync(path.join(PHOTOS, folder)).filter((f) => f.endsWith(".png") && !f.startsWith(".")).sort().map((f) => path.join(PHOTOS, folder, f)),
      ...(folder === "goldfish" ? [path.join(PHOTOS, "goldfish", "more", "deep.png")] : [])];
    const r = cli("predict", MODEL, ...files, "--json", ...(minProb === null ? [] : ["--min-prob", String(minProb)]));
    assert.equal(r.status, 0, r.stderr);
    for (const row of JSON.parse(r.stdout)) rows.push([i, row.label]);
  }
  return rows;
}

for (const minProb of [null, 0.5]) {
  test(`evaluate${minProb === null ? "" : " --min-prob " + minProb}: the accuracy, recall and confusion predict's answers give`, () => {
    const rows = byHand(minProb);
    const cols = [...LABELS, ...(minProb === null ? [] : ["unknown"])];
    const confusion = LABELS.map((_, i) => cols.map((c) => rows.filter(([t, a]) => t === i && a === c).length));
    const correct = rows.filter(([t, a]) => a === LABELS[t]).length;
    assert.equal(rows.length, 13);
    assert.ok(correct > 0 && correct < 13, `a test that can fail: ${correct}/13 right`);
    const extra = minProb === null ? [] : ["--min-prob", String(minProb)];
    const j = cli("evaluate", MODEL, PHOTOS, "--json", ...extra);
    assert.equal(j.status, 0, j.stderr);
    const d = JSON.parse(j.stdout);
    assert.deepEqual(Object.keys(d), ["accuracy", "per_class", "confusion", "labels", "columns", "n", "min_prob", "unknown", "folders",
      "unmatched_folders", "missing_labels", "skipped_files", "unusable"]);
    assert.deepEqual(d.confusion, confusion);
    assert.equal(d.accuracy, correct / 13);
    assert.deepEqual(d.per_class, Object.fromEntries(LABELS.map((l, i) => [l, confusion[i][i] / confusion[i].reduce((a, b) => a + b)])));
    assert.deepEqual([d.labels, d.columns, d.n, d.min_prob], [LABELS, cols, 13, minProb]);
    assert.equal(d.unknown, minProb === null ? 0 : confusion.reduce((a, r) => a + r[3], 0));
    assert.deepEqual(d.folders, { goldfish: "goldfish", lemon: "Lemon", "school bus": "school_bus" });
    assert.deepEqual([d.unmatched_folders, d.missing_labels, d.skipped_files, d.unusable], [["other"], [], 2, []]);
    const t = cli("evaluate", MODEL, PHOTOS, ...extra);
    assert.equal(t.status, 0, t.stderr);
    const lines = t.stdout.split("\n");
    assert.equal(lines[0], `accuracy  ${(correct / 13).toFixed(4)}  (${correct}/13 images)`);
    if (minProb !== null) assert.equal(lines[1], `unknown   ${d.unknown} image(s) below min_prob 0.5 (counted as wrong)`);
    assert.ok(lines.includes(`goldfish     ${d.per_class.goldfish.toFixed(4)}        5`), t.stdout);
    assert.ok(lines.includes("confusion (rows: true class, columns: answer)"));
    assert.ok(lines.includes("school bus  " + confusion[2].map((v) => String(v).padStart(10)).join("  ")));
    assert.match(t.stderr, /note: 1 folder\(s\) match no label and were not used: other\n/);
    assert.match(t.stderr, /note: 2 file\(s\) are not images in class folders \(by suffix\) and were not used, e\.g\. .*README\n/);
  });
}

test("evaluate --json and its text are Python's `tina-edge evaluate` on the same model and folder", { skip: NO_PYTHON }, () => {
  for (const extra of [[], ["--min-prob", "0.5"]]) {
    const py = python("evaluate", MODEL, PHOTOS, "--json", ...extra);
    assert.equal(py.status, 0, py.stderr);
    assert.deepEqual(JSON.parse(cli("evaluate", MODEL, PHOTOS, "--json", ...extra).stdout), JSON.parse(py.stdout));
    const [a, b] = [cli("evaluate", MODEL, PHOTOS, ...extra), python("evaluate", MODEL, PHOTOS, ...extra)];
    assert.equal(a.stdout, b.stdout);
    assert.equal(a.stderr, b.stderr); // the same notes
  }
});

test("evaluate: a class folder without photos gets no recall ('-'), as in Python; a label without a folder is noted", async () => {
  const dir = path.join(DIR, "partial");
  await photo(path.join(dir, "goldfish", "a.png"), [235, 120, 30], 30, 30);
  fs.mkdirSync(path.join(dir, "lemon"));
  const r = cli("evaluate", MODEL, dir);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /\nlemon             -        0\n/);
  assert.match(r.stderr, /^note: no folder for label\(s\): school bus$/m);
  const d = JSON.parse(cli("evaluate", MODEL, dir, "--json").stdout);
  assert.equal(d.per_class.lemon, null);
  assert.deepEqual(d.missing_labels, ["school bus"]);
});

test("evaluate refusals: exit 2 with one line (missing folder, class folders without photos, no matching folder, bad options)", () => {
  oneErrorLine(cli("evaluate", MODEL, path.join(DIR, "nope")), /nope is not a directory; pass a folder that holds one folder per class$/m);
  const empty = path.join(DIR, "empty");
  fs.mkdirSync(path.join(empty, "goldfish"), { recursive: true });
  fs.mkdirSync(path.join(empty, "lemon"));
  oneErrorLine(cli("evaluate", MODEL, empty), /the class folders of .*empty hold no image files \(suffixes \.bmp, \.gif, \.jpeg, \.jpg, \.png, \.tif, \.tiff, \.webp\)/);
  oneErrorLine(cli("evaluate", MODEL, path.join(PHOTOS, "goldfish")),
    /no folder of .*goldfish matches a label of the model \(goldfish, lemon, school bus\); folders found: more\. Pass the folder/);
  oneErrorLine(cli("evaluate", MODEL, PHOTOS, "--min-prob", "2"), /--min-prob must be a number from 0 to 1, got 2/);
  oneErrorLine(cli("evaluate", MODEL, PHOTOS, "--plot", path.join(DIR, "c.png")), /--plot needs matplotlib/);
  oneErrorLine(cli("evaluate", path.join(DIR, "none.onnx"), PHOTOS), /cannot read .*none\.onnx/);
  assert.ok(!fs.existsSync(path.join(DIR, "c.png")));
});

test("evaluate (the pure function): confusion, recall, unknown; Python's number formats", () => {
  const ev = evaluate(["a", "b", "c"], [0, 0, 1, 1, 2], [[0.7, 0.2, 0.1], [0.3, 0.6, 0.1], { probabilities: [0.1, 0.8, 0.1] },
    [0.4, 0.35, 0.25], [0.2, 0.2, 0.6]], { minProb: 0.5 });
  assert.deepEqual(ev.confusion, [[1, 1, 0, 0], [0, 1, 0, 1], [0, 0, 1, 0]]);
  assert.deepEqual([ev.n, ev.correct, ev.accuracy, ev.unknown], [5, 3, 0.6, 1]);
  assert.deepEqual(ev.perClass, { a: 0.5, b: 0.5, c: 1 });
  assert.deepEqual(evaluate(["a", "b"], [0, 0], [[0.5, 0.5], [0.2, 0.8]]).confusion, [[1, 1], [0, 0]]); // ties: the first
  assert.equal(evaluate(["a", "b"], [0], [[1, 0]]).perClass.b, null);
  assert.deepEqual(evaluationDict(ev).columns, ["a", "b", "c", "unknown"]);
  assert.match(formatEvaluation(ev), /^accuracy {2}0\.6000 {2}\(3\/5 images\)\nunknown {3}1 image\(s\) below min_prob 0\.5 \(counted as wrong\)\n/);
  assert.throws(() => evaluate(["a", "b"], [0, 1], [[1, 0]]), /2 targets but 1 predictions/);
  assert.throws(() => confusionMatrix([2], [0], 2, false), /target 0 is 2/);
  assert.throws(() => evaluate(["a", "b"], [0], [[1, 0]], { minProb: 2 }), /minProb must be a number from 0 to 1/);
  assert.deepEqual([pyFixed(1 / 32), pyFixed(3 / 32), pyFixed(2 / 3), pyFixed(1)], ["0.0312", "0.0938", "0.6667", "1.0000"]);
  assert.deepEqual([pyG(0.5), pyG(1), pyG(0), pyG(1e-5), pyG(0.123456789)], ["0.5", "1", "0", "1e-05", "0.123457"]);
});

// ------------------------------------------------------------------ personalize --images / --from-folders


function sameModel(file, clf) {
  const a = decodeModel(fs.readFileSync(file)), b = decodeModel(clf.toModelBytes());
  const init = (m) => Object.fromEntries(m.graph.initializer.map((t) => [t.name, new Uint8Array(t.raw_data)]));
  const [ia, ib] = [init(a), init(b)];
  for (const name of Object.keys(clf.params)) assert.deepEqual(ia[name], ib[name], name);
  assert.deepEqual(readModelMetadata(fs.readFileSync(file)), readModelMetadata(clf.toModelBytes()));
}

test("personalize --images (folders and files, repeats add photos) --photos-only: the model the JS API makes from the same pixels", async () => {
  const out = path.join(DIR, "pets.onnx");
  const r = cli("personalize", "rex, bella", "--images", `rex=${path.join(PETS, "rex")}`, "--images",
    `bella=${path.join(PETS, "bella", "0.png")}`, "--images", `Bella=${path.join(PETS, "bella", "1.png")}`, "--photos-only", "-o", out,
    "--bundle", env().bundle);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /\n {2}prompted by images: rex \(3\), bella \(2\)\n {2}built from: rex: 3 photos; bella: 2 photos\n/);
  assert.doesNotMatch(r.stderr, /new \(not in training/); // photos-only labels are only labels
  const clf = await tina.personalize("rex, bella", { images: { rex: await decoded(path.join(PETS, "rex")),
    bella: await decoded(path.join(PETS, "bella")) }, photosOnly: true });
  sameModel(out, clf);
  const meta = readModelMetadata(fs.readFileSync(out));
  assert.equal(meta.image_prompts, '{"rex": 3, "bella": 2}'); // only counts: no pixels, no features, no paths
  assert.ok(!Object.values(meta).some((v) => v.includes(PETS)));
  assert.deepEqual(JSON.parse(meta.texts), [null, null]);
});

test("personalize --from-folders: classes from the sub-folders (sorted), photos fused with the names; --json's built_from", async () => {
  const out = path.join(DIR, "folders.onnx");
  const r = cli("personalize", "--from-folders", PETS, "-o", out, "--json", "--bundle", env().bundle);
  assert.equal(r.status, 0, r.stderr);
  const d = JSON.parse(r.stdout);
  assert.deepEqual(d.labels, ["bella", "rex"]);
  assert.deepEqual(d.image_prompts, { bella: 2, rex: 3 });
  assert.deepEqual(d.built_from, { bella: "name + 2 photos", rex: "name + 3 photos" });
  const clf = await tina.personalize(["bella", "rex"], { images: { bella: await decoded(path.join(PETS, "bella")),
    rex: await decoded(path.join(PETS, "rex")) } });
  sameModel(out, clf);
  const plain = cli("personalize", "goldfish, lemon", "-o", path.join(DIR, "plain.onnx"), "--json", "--bundle", env().bundle);
  assert.deepEqual(JSON.parse(plain.stdout).image_prompts, {});
  assert.deepEqual(JSON.parse(plain.stdout).built_from, { goldfish: "name", lemon: "name" });
  const keys = (f) => Object.keys(readModelMetadata(fs.readFileSync(f))).sort();
  assert.deepEqual(keys(out), [...keys(path.join(DIR, "plain.onnx")), "image_prompts"].sort());
});

test("personalize --from-folders / --images: Python's CLI writes the same model from the same PNGs", { skip: NO_PYTHON }, () => {
  for (const args of [["--from-folders", PETS], ["rex, bella", "--images", `rex=${path.join(PETS, "rex")}`,
    "--images", `bella=${path.join(PETS, "bella")}`, "--photos-only"]]) {
    const [a, b] = [path.join(DIR, "js.onnx"), path.join(DIR, "py.onnx")];
    const js = cli("personalize", ...args, "-o", a, "--force", "--json", "--bundle", env().bundle);
    const py = python("personalize", ...args, "-o", b, "--force", "--json", "--bundle", env().bundle);
    assert.equal(py.status, 0, py.stderr);
    const [dj, dp] = [JSON.parse(js.stdout), JSON.parse(py.stdout)];
    for (const k of ["labels", "image_prompts", "built_from", "seen", "new"]) assert.deepEqual(dj[k], dp[k], k);
    const f32 = (t) => new Float32Array(new Uint8Array(t.raw_data).slice().buffer);
    const pyInit = Object.fromEntries(decodeModel(fs.readFileSync(b)).graph.initializer.map((t) => [t.name, t]));
    for (const t of decodeModel(fs.readFileSync(a)).graph.initializer.filter((x) => x.name.startsWith("fc."))) {
      assert.ok(maxAbsDiff(f32(t), f32(pyInit[t.name])) <= 1e-5, t.name);
    }
    const [mj, mp] = [readModelMetadata(fs.readFileSync(a)), readModelMetadata(fs.readFileSync(b))];
    for (const k of ["labels", "texts", "image_prompts"]) assert.equal(mj[k], mp[k], k);
  }
});

test("personalize photo refusals: exit 2 with Python's one line, nothing written", async () => {
  const out = path.join(DIR, "refused.onnx");
  const run = (...a) => cli("personalize", ...a, "-o", out, "--bundle", env().bundle);
  const emptyPets = path.join(DIR, "empty-pets");
  await photo(path.join(emptyPets, "rex", "0.png"), [1, 2, 3], 20, 20);
  fs.mkdirSync(path.join(emptyPets, "bella"));
  oneErrorLine(run("--from-folders", emptyPets), /^error: class 'bella': directory .*empty-pets\/bella holds no image files$/m);
  for (let j = 0; j < 21; j++) await photo(path.join(DIR, "many", `${String(j).padStart(2, "0")}.png`), [9, 9, 9], 8, 8, 20);
  oneErrorLine(run("rex, bella", "--images", `rex=${path.join(DIR, "many")}`), /the class 'rex' has 21 photos; give at most 20$/m);
  oneErrorLine(run("--from-folders", PETS, "--images", `REX=${path.join(DIR, "many", "00.png")}`),
    /photos for the class 'rex' are given twice \(its folder in .*pets and --images\); give them once/);
  oneErrorLine(run("rex", "--from-folders", PETS), /--from-folders takes the classes from DIR's sub-folders; leave out CLASSES/);
  oneErrorLine(run("rex, bella", "--photos-only"), /photos_only needs photos: give images=\{class: \[photos\]\} for those classes/);
  oneErrorLine(run("rex, bella", "--images", `cat=${path.join(PETS, "rex")}`),
    /--images names 'cat', which is not one of the classes \(rex, bella\); name it in CLASSES too, where the label order is set/);
  oneErrorLine(run("rex, bella", "--images", "rex"), /--images takes NAME=IMAGE\[,IMAGE\.\.\.\], e\.g\. --images cat=cat1\.jpg,cat2\.jpg; got 'rex'/);
  oneErrorLine(run("rex, bella", "--images", `rex=${path.join(DIR, "nope.png")}`), /class 'rex': image .*nope\.png does not exist/);
  oneErrorLine(run("rex, bella", "--images", `rex=${path.join(PETS, "rex")}`, "--describe", "rex=a dog", "--photos-only"),
    /the class 'rex' is photos-only and has a description; give one of the two/);
  oneErrorLine(run("--from-folders", path.join(DIR, "nope")), /nope is not a directory; pass a folder that holds one folder of photos per class/);
  oneErrorLine(run("--from-folders", path.join(DIR, "many")), /many holds no class folders; make one sub-folder of photos per class/);
  fs.writeFileSync(path.join(DIR, "note.txt"), "hello");
  oneErrorLine(run("rex, bella", "--images", `rex=${path.join(DIR, "note.txt")}`), /class 'rex': cannot read .*note\.txt as an image/);
  assert.ok(!fs.existsSync(out));
  const inside = cli("personalize", "--from-folders", PETS, "-o", path.join(PETS, "m.onnx"), "--bundle", env().bundle);
  oneErrorLine(inside, /-o .*m\.onnx is inside the --from-folders folder \(.*pets\); --force replaces outputs, never what the command reads/);
  const photoFile = path.join(PETS, "rex", "0.png");
  const before = fs.readFileSync(photoFile);
  oneErrorLine(cli("personalize", "rex, bella", "--images", `rex=${photoFile}`, "-o", photoFile, "--force", "--bundle", env().bundle),
    /-o .*0\.png is an --images example/);
  assert.deepEqual(fs.readFileSync(photoFile), before);
});
