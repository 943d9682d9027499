// Photo prompts on trunk bundles (issue 21), the JS twin of tina_edge/runtime/photo_prompts.py:
// the user's photos of a class go through the bundle's trunk (the template cut at the head's input,
// as runtime/head.py extract_trunk cuts it), with predict's own preprocessing, and a closed-form rule
// fuses their features with the rows generated from the class name. Float64 inside, float32 out, the
// same constants and the same refusals as Python. Photos and features never leave this call: the
// model records only how many photos each class had (metadata `image_prompts`).

import { PromptError, ImageError, TinaEdgeError } from "./errors.mjs";
import { classKey, pyRepr } from "./prompt.mjs";
import { prepareImage } from "./preprocess.mjs";
import { decodeModel, encodeModel } from "./classifier.mjs";
import { FEATURES, IMAGE } from "./contracts.mjs";

export const MAX_PHOTOS_PER_CLASS = 20;
export const BATCH = 2; // photos per trunk run (Python's BATCH)
// Python's FUSION_WEIGHTS (a known name) and FUSION_WEIGHTS_NEW (any other text), which say why
export const FUSION_WEIGHTS = new Map([[1, 0.5], [2, 0.5], [5, 0.5], [10, 0.5]]);
export const FUSION_WEIGHTS_NEW = new Map([[1, 1.5], [2, 1.5], [5, 3.0], [10, 3.0]]);
export const LOO = false;
export const LOO_GRID = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0];
export const CENTRE = true;
export const HEAD_WEIGHT = "fc.weight";
export const HEAD_BIAS = "fc.bias";

/** lam(n): the photo part's weight for a class with n photos, named by a known name or not (step-wise). */
export function fusionWeight(n, known = true) {
  const table = known ? FUSION_WEIGHTS : FUSION_WEIGHTS_NEW;
  const keys = [...table.keys()].sort((a, b) => a - b);
  let w = table.get(keys[0]);
  for (const k of keys) if (n >= k) w = table.get(k);
  return w;
}

// ------------------------------------------------------------------ linear algebra on row-major Float64Array

const dot = (a, ai, b, bi, D) => { let s = 0; for (let d = 0; d < D; d++) s += a[ai + d] * b[bi + d]; return s; };
const norm = (a, ai, D) => Math.sqrt(dot(a, ai, a, ai, D));

/** Rows [n, D] of several Float32/Float64 arrays, concatenated into one Float64Array. */
function concatRows(parts) {
  const n = parts.reduce((s, p) => s + p.length, 0);
  const out = new Float64Array(n);
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

function meanRow(X, n, D) {
  const m = new Float64Array(D);
  for (let i = 0; i < n; i++) for (let d = 0; d < D; d++) m[d] += X[i * D + d];
  for (let d = 0; d < D; d++) m[d] /= n;
  return m;
}

/** Mean distance of the rows of X to `centre` (Python: the typical centred photo norm), 1 if 0. */
function meanNorm(X, n, D, centre) {
  let s = 0;
  const row = new Float64Array(D);
  for (let i = 0; i < n; i++) {
    for (let d = 0; d < D; d++) row[d] = X[i * D + d] - centre[d];
    s += norm(row, 0, D);
  }
  return (s / n) || 1.0;
}

/** Cosine-prototype head (W [k, D], b [k]) for per-class features (Python's prototype_rows). */
export function prototypeRows(feats, centre, D) {
  const k = feats.length;
  const W = new Float64Array(k * D);
  feats.forEach((f, j) => {
    const n = f.length / D;
    const mu = meanRow(f, n, D);
    for (let d = 0; d < D; d++) W[j * D + d] = mu[d] - centre[d];
    const s = norm(W, j * D, D) + 1e-12;
    for (let d = 0; d < D; d++) W[j * D + d] /= s;
  });
  const all = concatRows(feats);
  const r = meanNorm(all, all.length / D, D, centre);
  for (let i = 0; i < W.length; i++) W[i] /= r;
  const b = new Float64Array(k);
  for (let j = 0; j < k; j++) b[j] = -dot(W, j * D, centre, 0, D);
  return { W, b };
}

/** Logits [n, k] of rows (W, b) on photos X [n, D]. */
function logits(W, b, k, X, n, D) {
  const z = new Float64Array(n * k);
  for (let i = 0; i < n; i++) for (let j = 0; j < k; j++) z[i * k + j] = dot(X, i * D, W, j * D, D) + b[j];
  return z;
}

/** Mean over photos of the std over classes of the logits (Python's _spread), 1 if 0. */
export function spread(W, b, k, X, n, D) {
  const z = logits(W, b, k, X, n, D);
  let s = 0;
  for (let i = 0; i < n; i++) {
    let m = 0;
    for (let j = 0; j < k; j++) m += z[i * k + j];
    m /= k;
    let v = 0;
    for (let j = 0; j < k; j++) v += (z[i * k + j] - m) ** 2;
    s += Math.sqrt(v / k);
  }
  return (s / n) || 1.0;
}

/** The task's photo weight by leave-one-out on its own photos (Python's loo_weight); `feats` a Map
 * class index -> Float64Array [n_i * D] in class order; Wn, bn already divided by the name spread. */
export function looWeight(Wn, bn, feats, centre, sp, D) {
  const idx = [...feats.keys()].sort((a, b) => a - b);
  const c = idx.length;
  const X = concatRows(idx.map((i) => feats.get(i)));
  const n = X.length / D;
  const y = [];
  idx.forEach((i, j) => { for (let t = 0; t < feats.get(i).length / D; t++) y.push(j); });
  for (let i = 0; i < n; i++) for (let d = 0; d < D; d++) X[i * D + d] -= centre[d];
  const sums = new Float64Array(c * D);
  const counts = new Float64Array(c);
  for (let i = 0; i < n; i++) {
    counts[y[i]] += 1;
    for (let d = 0; d < D; d++) sums[y[i] * D + d] += X[i * D + d];
  }
  let r = 0;
  for (let i = 0; i < n; i++) r += norm(X, i * D, D);
  r = (r / n) || 1.0;
  const mu = new Float64Array(c * D);
  for (let j = 0; j < c; j++) {
    for (let d = 0; d < D; d++) mu[j * D + d] = sums[j * D + d] / counts[j];
    const s = norm(mu, j * D, D) + 1e-12;
    for (let d = 0; d < D; d++) mu[j * D + d] /= s;
  }
  const P = new Float64Array(n * c);
  for (let i = 0; i < n; i++) for (let j = 0; j < c; j++) P[i * c + j] = dot(X, i * D, mu, j * D, D) / r;
  const loo = new Float64Array(D);
  for (let i = 0; i < n; i++) { // each photo against its own class mean without it
    const j = y[i];
    for (let d = 0; d < D; d++) loo[d] = (sums[j * D + d] - X[i * D + d]) / (counts[j] - 1);
    const s = norm(loo, 0, D) + 1e-12;
    let v = 0;
    for (let d = 0; d < D; d++) v += X[i * D + d] * (loo[d] / s);
    P[i * c + j] = v / r;
  }
  const Zn = new Float64Array(n * c); // name logits among the classes that have photos
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < c; j++) {
      let v = 0;
      for (let d = 0; d < D; d++) v += (X[i * D + d] + centre[d]) * Wn[idx[j] * D + d];
      Zn[i * c + j] = v + bn[idx[j]];
    }
  }
  let best = LOO_GRID[0], bestRight = -1;
  for (const lam of LOO_GRID) {
    let right = 0;
    for (let i = 0; i < n; i++) {
      let a = 0;
      for (let j = 1; j < c; j++) if (Zn[i * c + j] + lam * P[i * c + j] / sp > Zn[i * c + a] + lam * P[i * c + a] / sp) a = j;
      if (a === y[i]) right++;
    }
    if (right > bestRight) { best = lam; bestRight = right; }
  }
  return best;
}

/**
 * Head rows ({W: Float32Array [k * D], b: Float32Array [k]}) from the name rows (null: no class is
 * named) and the photo features of the classes that have photos (Map index -> Float32Array [n_i * D]);
 * named[i]: class i has a name or description the rows should use; known[i]: that text is a name the
 * bundle knows (null: none is). Python's photo_head_rows.
 */
export function photoHeadRows(WName, bName, feats, named, k, D, known = null) {
  if (!feats.size) throw new PromptError("photo_head_rows needs photos of at least one class");
  const idx = [...feats.keys()].sort((a, b) => a - b);
  const f64 = new Map(idx.map((i) => [i, Float64Array.from(feats.get(i))]));
  const X = concatRows(idx.map((i) => f64.get(i)));
  const n = X.length / D;
  const centre = CENTRE ? meanRow(X, n, D) : new Float64Array(D);
  const some = prototypeRows(idx.map((i) => f64.get(i)), centre, D);
  const Wp = new Float64Array(k * D), bp = new Float64Array(k);
  idx.forEach((i, j) => { Wp.set(some.W.subarray(j * D, (j + 1) * D), i * D); bp[i] = some.b[j]; });
  const others = [...Array(k).keys()].filter((i) => !feats.has(i));
  if (others.length) { // no photos: a neutral photo part
    const wm = meanRow(some.W, idx.length, D);
    const bm = some.b.reduce((a, v) => a + v, 0) / idx.length;
    for (const i of others) { Wp.set(wm, i * D); bp[i] = bm; }
  }
  const hasName = [...Array(k).keys()].filter((i) => named[i]);
  if (WName === null || !hasName.length) {
    if (others.length) throw new PromptError("a class without a name needs photos");
    return { W: Float32Array.from(Wp), b: Float32Array.from(bp) };
  }
  const Wn = Float64Array.from(WName), bn = Float64Array.from(bName);
  const unnamed = [...Array(k).keys()].filter((i) => !named[i]);
  if (unnamed.length) { // only its photos speak
    const wm = new Float64Array(D);
    for (const i of hasName) for (let d = 0; d < D; d++) wm[d] += Wn[i * D + d];
    for (let d = 0; d < D; d++) wm[d] /= hasName.length;
    const bm = hasName.reduce((a, i) => a + bn[i], 0) / hasName.length;
    for (const i of unnamed) { Wn.set(wm, i * D); bn[i] = bm; }
  }
  const sn = spread(Wn, bn, k, X, n, D), sp = spread(Wp, bp, k, X, n, D);
  const lam = [...Array(k).keys()].map((i) => (feats.has(i) ? fusionWeight(feats.get(i).length / D, Boolean(known?.[i])) : 1.0));
  if (LOO && idx.every((i) => feats.get(i).length / D >= 2)) {
    const l = looWeight(Wn.map((v) => v / sn), bn.map((v) => v / sn), f64, centre, sp, D);
    lam.fill(l);
  }
  const W = new Float32Array(k * D), b = new Float32Array(k);
  for (let i = 0; i < k; i++) {
    for (let d = 0; d < D; d++) W[i * D + d] = Wn[i * D + d] / sn + (lam[i] * Wp[i * D + d]) / sp;
    b[i] = bn[i] / sn + lam[i] * bp[i] / sp;
  }
  return { W, b };
}

// ------------------------------------------------------------------ the trunk

/** The tensor the generated head reads: the other input of the node that consumes fc.weight; null if none. */
export function headInputName(model) {
  for (const node of model.graph.node) {
    if (node.input.includes(HEAD_WEIGHT)) {
      const others = node.input.filter((i) => i !== HEAD_WEIGHT && i !== HEAD_BIAS);
      if (others.length === 1) return others[0];
    }
  }
  return null;
}

/** image -> features: the template graph (bytes) cut at the head's input (runtime/head.py extract_trunk). */
export function extractTrunk(templateBytes) {
  const model = decodeModel(templateBytes);
  const feat = headInputName(model);
  if (feat === null) {
    throw new TinaEdgeError("this bundle's template has no linear head on a trunk (no fc.weight); photo prompts need a trunk template such as lite0_head");
  }
  const g = model.graph;
  const keep = new Set([feat]);
  const nodes = [];
  for (const node of [...g.node].reverse()) { // walk back from the features tensor
    if (node.output.some((o) => keep.has(o))) {
      nodes.push(node);
      node.input.forEach((i) => keep.add(i));
    }
  }
  nodes.reverse();
  g.initializer = g.initializer.filter((t) => keep.has(t.name));
  g.input = g.input.filter((t) => keep.has(t.name));
  g.node = [...nodes, { input: [feat], output: [FEATURES], name: "features_out", op_type: "Identity" }];
  g.output = [{ name: FEATURES, type: { tensor_type: { elem_type: 1, shape: { dim: [{ dim_param: "N" }, {}] } } } }];
  g.value_info = [];
  g.name = "tina_edge_trunk";
  model.metadata_props = [];
  return encodeModel(model);
}

/** Whether the bundle prompts with photos through its trunk: no image tower and a head on a trunk. */
export function supportsPhotoPrompts(tina) {
  if (tina.manifest.text_encoder.image_encoder) return false;
  return tina.manifest.template.layout.some((t) => t.name === HEAD_WEIGHT) && tina.manifest.template.layout.some((t) => t.name === HEAD_BIAS);
}

/** The TinaEdge's one trunk session (made on first use, settings as Python's: optimization level all). */
async function trunkSession(tina) {
  if (tina._trunk) return tina._trunk;
  const m = tina.manifest;
  const bytes = tina.templateBytes ?? await tina.bundle.file(m.template.model);
  const trunk = extractTrunk(bytes);
  const opts = { ...(tina.sessionOptions ?? {}), graphOptimizationLevel: "all" };
  tina._trunk = await tina.ort.InferenceSession.create(trunk, opts);
  return tina._trunk;
}

/** Prepared photos ({data RGB, width, height} at the input size) -> features Float32Array [n * D], BATCH per run. */
export async function trunkFeatures(tina, pixels) {
  const sess = await trunkSession(tina);
  const [H, W] = tina.inputSize;
  const parts = [];
  for (let s = 0; s < pixels.length; s += BATCH) {
    const batch = pixels.slice(s, s + BATCH);
    const x = new Uint8Array(batch.length * H * W * 3);
    batch.forEach((im, n) => {
      const c = im.data.length / (W * H);
      for (let i = 0; i < W * H; i++) for (let ch = 0; ch < 3; ch++) x[(n * H * W + i) * 3 + ch] = im.data[i * c + ch];
    });
    const res = await sess.run({ [IMAGE]: new tina.ort.Tensor("uint8", x, [batch.length, H, W, 3]) });
    parts.push(Float32Array.from(res[FEATURES].data));
    tina.photosRun = (tina.photosRun ?? 0) + batch.length;
  }
  const out = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

// ------------------------------------------------------------------ personalize(classes, {images, photosOnly})

const isPlainObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v) && !ArrayBuffer.isView(v);
const wantsImages = (images) => isPlainObject(images) && Object.keys(images).length > 0;

function classIndex(keys, key, names) {
  const i = keys.get(classKey(key));
  if (i !== undefined) return i;
  throw new PromptError(`images are given for ${pyRepr(String(key).trim())}, which is not one of the classes (${names.join(", ")}); ` +
    "name every class in the prompt, in the order the labels should have");
}

/** {class index: its photos} (Python's match_photos). */
function matchPhotos(names, images) {
  if (!isPlainObject(images)) {
    throw new PromptError("images must map class names to example images, e.g. {'cat': ['cat1.jpg', 'cat2.jpg']}");
  }
  const keys = new Map(names.map((n, i) => [classKey(n), i]));
  const out = new Map();
  for (const [key, items] of Object.entries(images)) {
    const i = classIndex(keys, key, names);
    if (out.has(i)) throw new PromptError(`images for the class ${pyRepr(names[i])} are given twice; give them under one name`);
    if (items === null || items === undefined || (Array.isArray(items) && items.length === 0)) {
      throw new PromptError(`no images are given for the class ${pyRepr(names[i])}; give at least one or leave it out`);
    }
    out.set(i, Array.isArray(items) ? items : [items]);
  }
  return out;
}

/** The classes whose label is only a label (Python's photos_only_indices). */
function photosOnlyIndices(names, photosOnly, photoIdx) {
  if (photosOnly === null || photosOnly === undefined || photosOnly === false) return new Set();
  if (photosOnly === true) return new Set(photoIdx);
  if (typeof photosOnly === "string" || typeof photosOnly?.[Symbol.iterator] !== "function") {
    throw new PromptError("photos_only must be True, False or a collection of class names, e.g. photos_only={'Rex'}");
  }
  const keys = new Map(names.map((n, i) => [classKey(n), i]));
  const out = new Set();
  for (const key of photosOnly) {
    const i = classIndex(keys, key, names);
    if (!photoIdx.has(i)) {
      throw new PromptError(`the class ${pyRepr(names[i])} is asked to be photos-only but no photos are given for it`);
    }
    out.add(i);
  }
  return out;
}

/**
 * One personalize call's photos (Python's read_photos + PhotoPrompts.read): null when the call gives
 * no photos; refusals as Python's. `aligned`: per class its description or null.
 */
export async function readPhotos(tina, names, images, aligned, photosOnly) {
  const asksOnly = Array.isArray(photosOnly) || photosOnly instanceof Set ? [...photosOnly].length > 0 : Boolean(photosOnly); // Python's truth
  if (!wantsImages(images) && !asksOnly) return null;
  if (!supportsPhotoPrompts(tina)) {
    if (asksOnly) {
      throw new PromptError("photos_only needs a trunk bundle without an image tower (such as the default one); " +
        "with this bundle, images already replace the class name");
    }
    throw new PromptError("this package prompts with photos only on trunk bundles without an image tower (such as the default one); " +
      "prompt this bundle with class names or descriptions");
  }
  if (!wantsImages(images)) throw new PromptError("photos_only needs photos: give images={class: [photos]} for those classes");
  const byClass = matchPhotos(names, images);
  const only = photosOnlyIndices(names, photosOnly, new Set(byClass.keys()));
  if (only.size && aligned) {
    for (const i of [...only].sort((a, b) => a - b)) {
      if (aligned[i] !== null && aligned[i] !== undefined) {
        throw new PromptError(`the class ${pyRepr(names[i])} is photos-only and has a description; give one of the two`);
      }
    }
  }
  const pre = tina.manifest.template.input.preprocess ?? {};
  const feats = new Map();
  for (const i of [...byClass.keys()].sort((a, b) => a - b)) {
    const pix = byClass.get(i).map((im, n) => {
      try {
        return prepareImage(im, pre);
      } catch (e) {
        throw new ImageError(`class ${pyRepr(names[i])}: image ${n}: ${e.message}`);
      }
    });
    if (pix.length > MAX_PHOTOS_PER_CLASS) {
      throw new PromptError(`the class ${pyRepr(names[i])} has ${pix.length} photos; give at most ${MAX_PHOTOS_PER_CLASS}`);
    }
    feats.set(i, await trunkFeatures(tina, pix));
  }
  return { names, feats, only };
}

/** Whether the sampler can be skipped: every class photos-only and the head is all the template generates. */
export function skipsSampler(photos, layout) {
  return photos.only.size === photos.names.length && layout.every((t) => t.name === HEAD_WEIGHT || t.name === HEAD_BIAS);
}

/** Zero tensors of the layout at k classes (the rows the fusion replaces). */
export function zeroParams(layout, k) {
  const out = {};
  for (const t of layout) {
    const shape = t.shape.map((d, i) => (i === t.class_axis ? k : d));
    out[t.name] = { shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)) };
  }
  return out;
}

/**
 * (params with the fused head rows, texts with null for photos-only classes, {class: photo count});
 * known[i]: class i's text is a name the bundle knows (its fusion weight).
 */
export function applyPhotos(photos, params, texts, known = null) {
  const k = photos.names.length;
  const w = params[HEAD_WEIGHT];
  const D = w.shape[1];
  const named = [...Array(k).keys()].map((i) => !photos.only.has(i));
  const { W, b } = photoHeadRows(w.data, params[HEAD_BIAS].data, photos.feats, named, k, D, known);
  const out = { ...params, [HEAD_WEIGHT]: { shape: w.shape.slice(), data: W }, [HEAD_BIAS]: { shape: params[HEAD_BIAS].shape.slice(), data: b } };
  const counts = {};
  for (const i of [...photos.feats.keys()].sort((a, b2) => a - b2)) counts[photos.names[i]] = photos.feats.get(i).length / D;
  return { params: out, texts: texts.map((t, i) => (photos.only.has(i) ? null : t)), counts };
}
