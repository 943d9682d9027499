// The demo page: loads a bundle (?bundle=URL, default: the package's default bundle), personalizes
// from the text box, classifies photos (file picker or camera) and shows the timings.
// window.tinaDemo exposes the same steps to the headless-browser test (browser/run.mjs).
// Default: TinaEdge.inWorker (personalize and predict run in a Web Worker built by
// browser/build.mjs); ?mode=main runs them on the page's thread instead.
import { TinaEdge, toInput, toPixels, prepareImage } from "../src/index.mjs";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const bundleUrl = params.get("bundle") ?? "../../tina_edge/bundles/default/";
const timings = new Map();
let tina = null;
let clf = null;
const photos = [];
// photo prompts (issue 21): per class name, its example photos as pixels and whether the label is only a label
const classPhotos = new Map();

function time(name, ms) {
  timings.set(name, ms);
  $("timings").tBodies[0].innerHTML = [...timings].map(([k, v]) =>
    `<tr><td>${k}</td><td>${typeof v === "number" ? v.toFixed(1) : v}</td></tr>`).join("");
}

async function bundleBytes() {
  const m = tina.manifest;
  const used = new Set([m.text_encoder.model, m.text_encoder.tokenizer, m.portable.tokenizer_config, m.portable.generate.model,
    m.portable.template_inputs.model, m.template.model, ...(m.portable.prior ? [m.portable.prior.model] : [])]); // one-template bundles name template.onnx twice
  return [...used].reduce((s, n) => s + m.files[n].bytes, 0);
}

const mode = params.get("mode") ?? "worker";
const threads = Number(params.get("threads") ?? 1);

async function load() {
  const t0 = performance.now();
  const options = { verify: params.get("verify") !== "0", numThreads: threads,
    progress: (p) => { if (!p.cached) $("status").textContent = `downloading ${p.file}: ${(p.loaded / 1e6).toFixed(1)} MB`; } };
  if (mode === "worker") {
    tina = await TinaEdge.inWorker(bundleUrl, { ...options, workerUrl: new URL("../.cache/web/worker.mjs", location.href),
      wasmPaths: new URL("../.cache/web/", location.href).href });
  } else {
    tina = await TinaEdge.fromBundle(bundleUrl, { ...options, wasmPaths: new URL("../node_modules/onnxruntime-web/dist/", location.href).href });
  }
  const total = performance.now() - t0;
  time("session creation, incl. download + sha256 (ms)", total);
  time("  of which onnxruntime sessions (ms)", tina.timings.sessionsMs);
  const bytes = await bundleBytes();
  time("bundle download (MB)", (bytes / 1e6).toFixed(2));
  const [H, W] = tina.inputSize;
  $("status").textContent = `bundle ${tina.manifest.bundle_id}: ${tina.manifest.text_encoder.name}, ` +
    `${H}×${W} input, 2–${tina.maxClasses ?? tina.kMax} classes, ${tina.backend}, ${threads} thread, ${mode === "worker" ? "in a Web Worker" : "on the page's thread"}`;
  $("personalize").disabled = false;
  return { createMs: total, sessionsMs: tina.timings.sessionsMs, bundleBytes: bytes };
}

/** The class names of the text box (as the prompt splits them, roughly: for the per-class photo pickers). */
const classNames = () => $("classes").value.split(/[,\uff0c\u3001]/).map((n) => n.trim()).filter(Boolean);

/** One row per class: a file picker (several photos), a camera-frame button, the count, "photos only". */
function renderClassPhotos() {
  const box = $("class-photos");
  box.innerHTML = "";
  for (const name of classNames()) {
    const entry = classPhotos.get(name) ?? { pixels: [], only: false };
    const row = document.createElement("div");
    row.className = "class-photo";
    row.innerHTML = `<span class="name"></span><label class="button">Photos… <input type="file" accept="image/*" multiple hidden></label>` +
      `<button class="snap" ${$("video").hidden ? "hidden" : ""}>+ camera</button><span class="count"></span>` +
      `<label><input type="checkbox" class="only"> photos only</label><button class="clear">clear</button>`;
    row.querySelector(".name").textContent = name;
    const count = () => { row.querySelector(".count").textContent = `${entry.pixels.length} photo${entry.pixels.length === 1 ? "" : "s"}`; };
    count();
    row.querySelector(".only").checked = entry.only;
    row.querySelector(".only").addEventListener("change", (e) => { entry.only = e.target.checked; classPhotos.set(name, entry); });
    row.querySelector("input[type=file]").addEventListener("change", async (e) => {
      for (const f of e.target.files) entry.pixels.push(toPixels(await createImageBitmap(f)));
      classPhotos.set(name, entry); count();
    });
    row.querySelector(".snap").addEventListener("click", () => { entry.pixels.push(toPixels($("video"))); classPhotos.set(name, entry); count(); });
    row.querySelector(".clear").addEventListener("click", () => { entry.pixels = []; entry.only = false; classPhotos.set(name, entry); renderClassPhotos(); });
    box.append(row);
  }
}

/** personalize's photo options from the pickers: {images, photosOnly} of the classes in the text box. */
function photoOptions() {
  const names = new Set(classNames());
  const images = {}, only = [];
  for (const [name, e] of classPhotos) {
    if (!names.has(name) || !e.pixels.length) continue;
    images[name] = e.pixels;
    if (e.only) only.push(name);
  }
  return Object.keys(images).length ? { images, photosOnly: only } : {};
}

/** Photos for a class (sources: canvases, bitmaps, <img> or {data, width, height}), for the headless test too. */
function setClassPhotos(name, sources, only = false) {
  classPhotos.set(name, { pixels: sources.map(toPixels), only });
  renderClassPhotos();
}

async function personalize(text = $("classes").value, seed = Number($("seed").value || 0)) {
  const t0 = performance.now();
  const photo = photoOptions();
  clf = await tina.personalize(text, { seed, ...photo });
  const ms = performance.now() - t0;
  const nPhotos = Object.values(photo.images ?? {}).reduce((a, l) => a + l.length, 0);
  time(`personalize, ${clf.k} classes${nPhotos ? ` + ${nPhotos} photos` : ""} (ms)`, ms);
  $("labels").textContent = `labels: ${clf.labels.join(", ")}`;
  const a = $("download");
  a.href = URL.createObjectURL(new Blob([await clf.toModelBytes()], { type: "application/octet-stream" }));
  a.hidden = false;
  const h = $("download-head");
  h.href = URL.createObjectURL(new Blob([await clf.toHeadText()], { type: "application/json" }));
  h.hidden = false;
  await render();
  return { ms, k: clf.k, labels: clf.labels };
}

async function addPhoto(source, name = "photo") {
  const [H, W] = tina.inputSize;
  // photo bundles: the manifest's policy (shorter side, centre crop, alpha on white), once per photo
  const pre = tina.manifest.template.input.preprocess;
  const input = pre ? prepareImage(toPixels(source), pre) : toInput(source, W, H);
  photos.push({ input, name });
  return render();
}

async function render() {
  const out = $("results");
  out.innerHTML = "";
  if (!clf || !photos.length) return [];
  const rows = [];
  for (const p of photos) {
    const t0 = performance.now();
    const [pred] = await clf.predict([p.input]);
    const ms = performance.now() - t0;
    time("predict one photo (ms)", ms);
    rows.push({ name: p.name, label: pred.label, probabilities: Array.from(pred.probabilities), ms });
    const card = document.createElement("div");
    card.className = "card";
    const cv = document.createElement("canvas");
    cv.width = p.input.width; cv.height = p.input.height;
    const n = p.input.width * p.input.height, c = p.input.data.length / n;
    const rgba = c === 4 ? new Uint8ClampedArray(p.input.data) : new Uint8ClampedArray(n * 4).fill(255);
    if (c === 3) for (let i = 0; i < n; i++) rgba.set(p.input.data.subarray(i * 3, i * 3 + 3), i * 4); // prepared photos are RGB
    cv.getContext("2d").putImageData(new ImageData(rgba, p.input.width, p.input.height), 0, 0);
    const bars = document.createElement("div");
    bars.className = "bars";
    const order = [...pred.probabilities.keys()].sort((a, b) => pred.probabilities[b] - pred.probabilities[a]).slice(0, 5);
    bars.innerHTML = `<div class="muted">${p.name}</div>` + order.map((j, r) =>
      `<div class="bar${r === 0 ? " top" : ""}"><span class="name">${clf.labels[j]}</span>` +
      `<span class="fill" style="width:${Math.round(200 * pred.probabilities[j])}px"></span>` +
      `<span>${(100 * pred.probabilities[j]).toFixed(1)}%</span></div>`).join("");
    card.append(cv, bars);
    out.append(card);
  }
  return rows;
}

$("personalize").addEventListener("click", () => personalize().catch(showError));
$("classes").addEventListener("input", renderClassPhotos);
renderClassPhotos();
$("files").addEventListener("change", async (e) => {
  for (const f of e.target.files) await addPhoto(await createImageBitmap(f), f.name).catch(showError);
});
$("camera").addEventListener("click", async () => {
  try {
    const v = $("video");
    v.srcObject = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } });
    v.hidden = false; $("snap").hidden = false;
    renderClassPhotos(); // each class row gets its "+ camera" button
    await v.play();
  } catch (e) { showError(e); }
});
$("snap").addEventListener("click", () => addPhoto($("video"), `camera ${photos.length + 1}`).catch(showError));

function showError(e) {
  $("status").textContent = `error: ${e.message || e}`;
  console.error(e);
}

const ready = load().catch((e) => { showError(e); throw e; });
window.tinaDemo = { ready, personalize, addPhoto, render, setClassPhotos, timings: () => Object.fromEntries(timings),
  get tina() { return tina; }, get clf() { return clf; } };
