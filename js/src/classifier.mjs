// A personalized classifier in JS: labels + generated tensors. Predicts with the bundle's
// template (weights fed as inputs: one session serves every classifier), and writes
// the same artefacts as Python: a standalone model.onnx (template with the tensors filled in,
// labels in metadata_props) and the portable head JSON (docs/PORTABLE.md).

import protobuf from "protobufjs";
import ONNX_PROTO from "./onnx-proto.mjs";
import { TinaEdgeError, ImageError, ModelFileError, ArgumentError } from "./errors.mjs";
import { pyDumps, toTree, subtree, parseExact } from "./manifest.mjs";
import { prepareImage } from "./preprocess.mjs";
import { IMAGE, LOGITS, PROBABILITIES } from "./contracts.mjs";

export const HEAD_FORMAT = "tina-edge-head";
/** The label predict(images, {minProb}) gives an image whose top probability is below minProb (index -1). */
export const UNKNOWN = "unknown";

/** null, or a probability in [0, 1] (Python's check_min_prob; NaN refused). */
export function checkMinProb(p) {
  if (p === null || p === undefined) return null;
  if (typeof p !== "number" || !(p >= 0 && p <= 1)) throw new ArgumentError(`minProb must be a number from 0 to 1; got ${String(p).slice(0, 40)}`);
  return p;
}
export const HEAD_VERSION = 1;
const PRODUCER = "tina-edge-js 0.1.0";

let _modelType = null;
function modelType() {
  if (!_modelType) _modelType = protobuf.parse(ONNX_PROTO, { keepCase: true }).root.lookupType("onnx.ModelProto");
  return _modelType;
}

/** Decode an ONNX model (Uint8Array) with the ONNX schema; returns a protobufjs message. */
export function decodeModel(bytes) {
  return modelType().decode(bytes);
}

/** Encode an ONNX model message (decodeModel's) back to bytes. */
export function encodeModel(model) {
  return modelType().encode(model).finish();
}

/** metadata_props of an ONNX model as an object: how JS reads `labels` without onnxruntime's API. */
export function readModelMetadata(bytes) {
  const m = decodeModel(bytes);
  return Object.fromEntries((m.metadata_props || []).map((p) => [p.key, p.value]));
}

function f32Bytes(data) {
  const out = new Uint8Array(data.length * 4);
  const dv = new DataView(out.buffer);
  for (let i = 0; i < data.length; i++) dv.setFloat32(i * 4, data[i], true);
  return out;
}

function b64encode(bytes) {
  if (typeof Buffer !== "undefined") return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64");
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

function b64decode(text) {
  if (typeof Buffer !== "undefined") return new Uint8Array(Buffer.from(text, "base64"));
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

function f32FromBytes(bytes) {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Float32Array(bytes.byteLength / 4);
  for (let i = 0; i < out.length; i++) out[i] = dv.getFloat32(i * 4, true);
  return out;
}

/**
 * template.onnx bytes -> standalone model bytes with `params` as initializers. Either template form
 * (manifest template.form): "initializers" (older bundles: the generated initializers are replaced) or
 * "inputs" (the generated tensors are graph inputs: each becomes an initializer appended in the
 * order of `params`, the layout order, as the Python runtime does; the other inputs stay).
 */
export function fillTemplate(templateBytes, params, k, metadata) {
  const Model = modelType();
  const model = Model.decode(templateBytes);
  const g = model.graph;
  const found = new Set();
  const inits = new Set(g.initializer.map((i) => i.name));
  const asInputs = g.input.filter((i) => params[i.name] && !inits.has(i.name));
  if (asInputs.length) {
    const types = Object.fromEntries(asInputs.map((i) => [i.name, i.type?.tensor_type?.elem_type]));
    g.input = g.input.filter((i) => !(i.name in types));
    for (const name of Object.keys(params)) {
      if (!(name in types)) continue;
      if (types[name] !== 1) throw new TinaEdgeError(`template input ${name} is not float32; this package fills float32 only`);
      g.initializer.push({ name, data_type: 1, dims: params[name].shape.slice(), raw_data: f32Bytes(params[name].data) });
      found.add(name);
    }
  }
  for (const init of g.initializer) {
    if (found.has(init.name)) continue;
    const p = params[init.name];
    if (!p) continue;
    if (init.data_type !== 1) throw new TinaEdgeError(`template tensor ${init.name} is not float32; this package fills float32 only`);
    init.dims = p.shape.slice();
    init.float_data = [];
    init.raw_data = f32Bytes(p.data);
    found.add(init.name);
  }
  const missing = Object.keys(params).filter((n) => !found.has(n));
  if (missing.length) throw new TinaEdgeError(`the template has no initializer(s) ${missing.join(", ")}; the bundle is broken`);
  g.value_info = [];
  for (const out of g.output) {
    const dims = out.type?.tensor_type?.shape?.dim;
    if (dims && dims.length === 2) dims[1] = { dim_value: k };
  }
  const merged = new Map((model.metadata_props || []).map((p) => [p.key, p.value]));
  for (const [key, value] of Object.entries(metadata)) merged.set(key, value);
  model.metadata_props = [...merged].map(([key, value]) => ({ key, value }));
  return Model.encode(model).finish();
}

export class PersonalizedClassifier {
  constructor(tina, { labels, params, prompt, texts, sampler, timings = {}, imagePrompts = null }) {
    this.tina = tina;
    this.labels = labels;
    this.params = params; // name -> {shape, data: Float32Array}
    this.prompt = prompt;
    this.texts = texts;
    this.sampler = sampler;
    this.timings = timings;
    this.imagePrompts = imagePrompts; // {class: number of photos} of photo prompts (the model records only counts)
    this.bundleId = tina.manifest.bundle_id;
  }

  get k() { return this.labels.length; }

  /**
   * Classify images: each {data: Uint8Array, width, height}. A bundle whose manifest has
   * template.input.preprocess (photo bundles) takes photos of any size with grey, grey+alpha, RGB or
   * RGBA bytes and prepares them exactly as Python does (shorter side, centre crop, alpha on white:
   * preprocess.mjs); other bundles take RGB or RGBA at the input size (the browser entry point
   * resizes canvases, bitmaps and <img> elements first).
   * Returns one {label, index, probabilities: Float32Array(k)} per image.
   */
  async predict(images, { minProb = null } = {}) {
    minProb = checkMinProb(minProb);
    if (this.tina.disposed || !this.tina.sessions) throw new TinaEdgeError("this TinaEdge was disposed; open the bundle again");
    let list = Array.isArray(images) ? images : [images];
    const [H, W] = this.tina.inputSize;
    const pre = this.tina.manifest.template.input.preprocess;
    if (pre) {
      list = list.map((im, n) => {
        try {
          return prepareImage(im, pre);
        } catch (e) {
          throw new ImageError(`image ${n}: ${e.message}`);
        }
      });
    }
    const x = new Uint8Array(list.length * H * W * 3);
    list.forEach((im, n) => {
      if (!im || !im.data || im.width !== W || im.height !== H) {
        throw new ImageError(`image ${n} must be {data, width: ${W}, height: ${H}} (the bundle's input size); ` +
          "resize it first (in the browser pass a canvas, ImageBitmap or <img> to TinaEdge.predict)");
      }
      const c = im.data.length / (W * H);
      if (c !== 3 && c !== 4) throw new ImageError(`image ${n} has ${c} channels per pixel; pass RGB or RGBA bytes`);
      for (let i = 0; i < W * H; i++) {
        x[(n * H * W + i) * 3] = im.data[i * c];
        x[(n * H * W + i) * 3 + 1] = im.data[i * c + 1];
        x[(n * H * W + i) * 3 + 2] = im.data[i * c + 2]; // alpha dropped, as in Python
      }
    });
    const ort = this.tina.ort;
    const feeds = { [IMAGE]: new ort.Tensor("uint8", x, [list.length, H, W, 3]) };
    for (const [name, p] of Object.entries(this.params)) feeds[name] = new ort.Tensor("float32", p.data, p.shape);
    // made on the first predict (TinaEdge.classifierSession), shared by every classifier of this bundle
    const session = this.tina.sessions.classifier ?? await this.tina.classifierSession();
    const res = await session.run(feeds);
    const probs = res[PROBABILITIES].data;
    const logits = res[LOGITS].data;
    const k = this.k;
    return list.map((_, n) => {
      const pr = probs.slice(n * k, (n + 1) * k);
      let best = 0;
      for (let j = 1; j < k; j++) if (pr[j] > pr[best]) best = j;
      if (minProb !== null && pr[best] < Math.fround(minProb)) best = -1; // as Python: compared in float32
      return { label: best < 0 ? UNKNOWN : this.labels[best], index: best, probabilities: pr, logits: logits.slice(n * k, (n + 1) * k) };
    });
  }

  /**
   * The metadata_props Python writes (runtime/model_meta.py to_props), the same strings: labels,
   * prompt, texts, bundle_id, sampler (a seed above 2**53 exact), params, producer and, for photo
   * bundles, preprocess (without it Python's predict would stretch photos instead of cropping).
   */
  metadata() {
    const out = {
      labels: pyDumps(toTree(this.labels), { ensureAscii: false }),
      prompt: this.prompt,
      texts: pyDumps(toTree(this.texts), { ensureAscii: false }),
      bundle_id: this.bundleId,
      sampler: pyDumps(toTree(this.exactSampler())),
      params: pyDumps(toTree(Object.keys(this.params))),
      producer: PRODUCER,
    };
    const tree = this.tina.bundle?.tree;
    const pre = tree ? subtree(tree, "template", "input", "preprocess") : null;
    if (pre && pre.t === "o") out.preprocess = pyDumps(pre, { sortKeys: true });
    else if (this.tina.manifest.template.input.preprocess) out.preprocess = pyDumps(toTree(this.tina.manifest.template.input.preprocess), { sortKeys: true });
    if (this.imagePrompts && Object.keys(this.imagePrompts).length) out.image_prompts = pyDumps(toTree(this.imagePrompts), { ensureAscii: false });
    return out;
  }

  /** The sampler with an exact integer seed (`sampler.seed` is a decimal string above 2**53), for Python's JSON. */
  exactSampler() {
    const s = { ...this.sampler };
    if (typeof s.seed === "string" && /^[0-9]+$/.test(s.seed)) s.seed = BigInt(s.seed);
    return s;
  }

  /** The standalone model.onnx (bytes): the same graph and tensors the Python CLI writes. */
  toModelBytes() {
    if (!this.tina.templateBytes) throw new TinaEdgeError("the template was not loaded; create TinaEdge with loadTemplate: true");
    return fillTemplate(this.tina.templateBytes, this.params, this.k, this.metadata());
  }

  /** The portable head: labels + generated tensors + bundle id, JSON (docs/PORTABLE.md). */
  toHead() {
    const tensors = {};
    for (const [name, p] of Object.entries(this.params)) {
      tensors[name] = { shape: p.shape, dtype: "float32", data: b64encode(f32Bytes(p.data)) };
    }
    return { format: HEAD_FORMAT, version: HEAD_VERSION, bundle_id: this.bundleId, labels: this.labels,
      prompt: this.prompt, texts: this.texts, sampler: this.sampler, params: tensors, producer: PRODUCER };
  }

  /** The head as JSON text, written as Python writes it (save_head): an exact seed above 2**53 included. */
  toHeadText() {
    const h = this.toHead();
    return pyDumps(toTree({ ...h, sampler: this.exactSampler() }), { ensureAscii: false }) + "\n";
  }

  /** A classifier from a head JSON (object or text) produced by Python or JS for this bundle. */
  static fromHead(tina, head) {
    let h = head;
    if (typeof head === "string") {
      try { h = JSON.parse(head); } catch { throw new ModelFileError("the head is not valid JSON; pass a head file written by tina-edge"); }
      const seed = subtree(parseExact(head, "the head", ModelFileError), "sampler", "seed"); // exact above 2**53
      if (seed?.t === "i" && h.sampler) h.sampler = { ...h.sampler, seed: seed.v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(seed.v) : seed.v.toString() };
    }
    if (!h || h.format !== HEAD_FORMAT || h.version !== HEAD_VERSION) throw new ModelFileError("not a tina-edge head file (format/version)");
    if (h.bundle_id !== tina.manifest.bundle_id) {
      throw new ModelFileError(`this head was generated with bundle ${h.bundle_id}, not ${tina.manifest.bundle_id}; load that bundle`);
    }
    const params = {};
    for (const [name, t] of Object.entries(h.params)) params[name] = { shape: t.shape, data: f32FromBytes(b64decode(t.data)) };
    return new PersonalizedClassifier(tina, { labels: h.labels, params, prompt: h.prompt ?? h.labels.join(", "),
      texts: h.texts ?? h.labels, sampler: h.sampler ?? {} });
  }
}
