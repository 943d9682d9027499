// TinaEdge in JavaScript: class names -> a personalized image classifier, with onnxruntime only.
// The runtime-neutral part: the onnxruntime module and a file reader are injected by
// index.mjs (browser, onnxruntime-web, fetch) or node.mjs (onnxruntime-node, fs).
// A port of the Python runtime needs no sampler: tokenizer -> text encoder -> generate.onnx
// (DDIM unrolled) -> the template (weights as inputs; template.onnx). See docs/PORTABLE.md.

import { Tokenizer } from "@huggingface/tokenizers";
import { portableNormal, GENERATOR as NOISE_GENERATOR, VERSION as NOISE_VERSION } from "./noise.mjs";
import { parseClasses, descriptionTexts, alignedDescriptions, classKey } from "./prompt.mjs";
import { readPhotos, skipsSampler, zeroParams, applyPhotos } from "./photos.mjs";
import { PersonalizedClassifier } from "./classifier.mjs";
import { TinaEdgeError, BundleError, PromptError, ArgumentError, BackendError } from "./errors.mjs";
import { parseManifest, checkBundleId, subtree } from "./manifest.mjs";
import { preprocessSpec } from "./preprocess.mjs";

/** template.input.preprocess: absent, or a policy the one validator accepts, for a square input of its size
 * (Python's manifest._check_preprocess). */
function checkPreprocess(tree, manifest) {
  const node = subtree(tree, "template", "input", "preprocess");
  if (!node || node.t === "n") return;
  let spec;
  try {
    spec = preprocessSpec(node);
  } catch (e) {
    throw new BundleError(`manifest field template.input.preprocess is invalid (${e.message}); re-export the bundle`);
  }
  const { height, width } = manifest.template.input ?? {};
  if (height !== spec.size || width !== spec.size) {
    throw new BundleError(`manifest field template.input.preprocess.size is ${spec.size} but template.input is ` +
      `${height}x${width}; re-export the bundle`);
  }
}
import { noveltyReport, readNpy } from "./novelty.mjs";
import { SenseTable, senseTexts } from "./senses.mjs";
import { NameTable } from "./name-table.mjs";
import { Spellings } from "./spellings.mjs";
import { maxClasses, groupSizes, joinGroups, calibrateGroups } from "./groups.mjs";
import { isPriorOnly, priorOnlyParams } from "./prior-only.mjs";
import { ATTENTION_MASK, CLASS_EMB, CLASS_MASK, EMBEDDINGS, INPUT_IDS, NOISE, PARAMS, PRIOR } from "./contracts.mjs";

export const VERSION = "0.1.0";

export * from "./errors.mjs";

const TEXT = new TextDecoder();

async function sha256Hex(bytes) {
  const digest = await globalThis.crypto.subtle.digest("SHA-256", bytes);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** A bundle's manifest and a reader of its files, verified against the manifest's sizes and hashes. */
export class Bundle {
  constructor(manifest, read, { verify = true, tree = null } = {}) {
    this.manifest = manifest;
    this.tree = tree; // the manifest with Python's number kinds (manifest.mjs), for metadata Python writes
    this._read = read;
    this.verify = verify;
    this.bytesRead = 0;
  }

  static async open(read, options = {}) {
    let bytes;
    try {
      bytes = await read("manifest.json");
    } catch (e) {
      if (e instanceof TinaEdgeError) throw e;
      throw new BundleError(`cannot read the bundle's manifest.json (${e.message}); pass a tina-edge bundle directory or URL`);
    }
    const { manifest, id, tree } = await parseManifest(bytes);
    if (manifest.schema_version !== 1) {
      throw new BundleError(`bundle schema version ${JSON.stringify(manifest.schema_version)} is not supported (this package reads 1); re-export the bundle or upgrade tina-edge`);
    }
    for (const k of ["text_encoder", "denoiser", "template", "files"]) {
      if (!manifest[k] || typeof manifest[k] !== "object") throw new BundleError(`manifest.json is missing required fields: ${k}`);
    }
    // the id pins every file's sha256 and every setting: a hand-edited manifest is refused, as in Python
    checkBundleId(manifest, id, options.where ?? "the bundle");
    checkPreprocess(tree, manifest);
    const p = manifest.portable || {};
    if (!p.generate || !p.template_inputs || !p.tokenizer_config) {
      throw new BundleError(
        "this bundle has no portable files (generate.onnx, tokenizer_config.json, a template with weights as inputs); " +
          "add them with `tina-edge convert BUNDLE -o OUT` (Python, no torch needed)");
    }
    if (p.noise && (p.noise.generator !== NOISE_GENERATOR || p.noise.version !== NOISE_VERSION)) {
      throw new BundleError(`the bundle's noise generator ${p.noise.generator} v${p.noise.version} is not this package's`);
    }
    return new Bundle(manifest, read, { ...options, tree });
  }

  /** The bytes of a bundle file, checked against the manifest (size, sha256). */
  async file(name) {
    const entry = this.manifest.files[name];
    if (!entry) throw new BundleError(`bundle file ${name} is not listed in the manifest`);
    const bytes = await this._read(name, entry);
    this.bytesRead += bytes.byteLength;
    if (this.verify) {
      if (bytes.byteLength !== entry.bytes) {
        throw new BundleError(`bundle file ${name} has ${bytes.byteLength} bytes, the manifest says ${entry.bytes}; re-download the bundle`);
      }
      // bytes from the reader's own cache were stored only after this very check (fetch.mjs)
      if (!bytes.cached) {
        const h = await sha256Hex(bytes);
        if (h !== entry.sha256) throw new BundleError(`bundle file ${name} does not match its sha256; re-download the bundle`);
      }
    }
    if (bytes.store && this.verify) await bytes.store();
    return bytes;
  }

  async json(name) {
    return JSON.parse(TEXT.decode(await this.file(name)));
  }
}

function int64Tensor(ort, rows, width) {
  const data = new BigInt64Array(rows.length * width);
  rows.forEach((r, i) => r.forEach((v, j) => { data[i * width + j] = BigInt(v); }));
  return new ort.Tensor("int64", data, [rows.length, width]);
}

/** The personalizer: one bundle, its onnxruntime sessions (text, [prior,] generate, classifier) created once and reused. */
export class TinaEdge {
  constructor({ ort, bundle, tokenizer, sessions, templateBytes, timings, sessionOptions = {}, makeClassifier = null }) {
    this.ort = ort;
    this.bundle = bundle;
    this.manifest = bundle.manifest;
    this.tokenizer = tokenizer;
    this.sessions = sessions;
    this.templateBytes = templateBytes;
    this.timings = timings;
    this.sessionOptions = sessionOptions; // the trunk session of photo prompts (photos.mjs) is made alike
    this._trunk = null;
    // the classifier's session (template_inputs.model) serves predict only, so it is made on the first
    // predict (or preload()), once: personalize never waits for it (issue 24, a returning visit's ready)
    this._makeClassifier = makeClassifier;
    this._classifierPromise = null;
    // a text's embedding depends on the text alone (see encode), so caching it is exact up to
    // float rounding between batch shapes (1e-7); apps re-use class names. Bounded LRU, like Python's.
    this.cacheSize = 1024;
    this._cache = new Map();
  }

  /** Release the onnxruntime sessions (memory); this object and its classifiers cannot run afterwards. */
  dispose() {
    for (const s of Object.values(this.sessions ?? {})) s?.release?.().catch?.(() => {});
    this._makeClassifier = null; // a classifier session still being made is released when it arrives (classifierSession)
    this._classifierPromise = null;
    this._trunk?.release?.().catch?.(() => {});
    this._trunk = null;
    this.sessions = {};
    this.templateBytes = null;
    this._cache.clear();
    this.disposed = true;
  }

  /**
   * The classifier's onnxruntime session (the template with the generated tensors as inputs), which
   * every predict runs: made on first use, once, however many predicts ask at the same time.
   */
  async classifierSession() {
    if (this.disposed) throw new TinaEdgeError("this TinaEdge was disposed; open the bundle again");
    if (this.sessions.classifier) return this.sessions.classifier;
    if (!this._classifierPromise) {
      const make = this._makeClassifier;
      this._classifierPromise = make().then((s) => {
        if (this.disposed || this._makeClassifier !== make) { // disposed while it was being made
          s?.release?.().catch?.(() => {});
          throw new TinaEdgeError("this TinaEdge was disposed; open the bundle again");
        }
        this.sessions.classifier = s;
        return s;
      }, (e) => {
        if (this._makeClassifier === make) this._classifierPromise = null; // a later predict may try again
        throw e;
      });
    }
    return this._classifierPromise;
  }

  /**
   * Make the classifier's session now instead of on the first predict (fromBundle's `preload: true`
   * does it before ready): the first predict is then as fast as the later ones.
   */
  async preload() {
    await this.classifierSession();
  }

  /** Forget cached text embeddings (e.g. to time the text encoder). */
  clearCache() { this._cache.clear(); }

  /**
   * Open a bundle and create its sessions.
   * @param ort onnxruntime module (onnxruntime-web or onnxruntime-node)
   * @param read async (file name) -> Uint8Array
   */
  static async create(ort, read, { executionProviders, verify = true, sessionOptions = {}, loadTemplate = true, preload = false, where } = {}) {
    const t0 = performance.now();
    checkProviders(executionProviders ?? sessionOptions.executionProviders);
    const opts = { graphOptimizationLevel: "extended", ...sessionOptions };
    if (executionProviders) opts.executionProviders = executionProviders;
    const bundle = await Bundle.open(read, { verify, where });
    const tOpen = performance.now();
    const m = bundle.manifest;
    const te = m.text_encoder;
    const [tokJson, tokCfg] = await Promise.all([bundle.json(te.tokenizer), bundle.json(m.portable.tokenizer_config)]);
    const tokenizer = new Tokenizer(tokJson, tokCfg);
    const tTok = performance.now();
    const perSession = {};
    const f0 = performance.now();
    // every download (and hash check) starts now, overlapping onnxruntime's wasm start-up
    // one download per file: a one-template bundle names template.onnx twice (template.model = portable.template_inputs.model)
    const priorModel = m.portable.prior?.model; // split bundles: the text prior's own graph, run once per personalize
    const classifierModel = m.portable.template_inputs.model;
    const names = [...new Set([te.model, ...(priorModel ? [priorModel] : []), ...(isPriorOnly(m) ? [] : [m.portable.generate.model]),
      classifierModel, ...(loadTemplate ? [m.template.model] : [])])];
    const files = Object.fromEntries(names.map((n) => [n, bundle.file(n)]));
    Object.values(files).forEach((p) => p.catch(() => {})); // failures surface where the file is awaited
    const make = (name) => createSession(ort, name, files[name], opts, perSession);
    const tFiles = performance.now();
    // smallest first: it pays onnxruntime's one-time start-up while the big files still download. The classifier's
    // session is not made here: predict makes it (classifierSession); personalize never needs it (issue 24: a returning
    // visit's ready)
    const prior = priorModel ? await make(priorModel) : null;
    const text = await make(te.model);
    const generate = isPriorOnly(m) ? null : await make(m.portable.generate.model); // prior alone: never run (prior-only.mjs)
    const templateBytes = loadTemplate ? await files[m.template.model] : null;
    await Promise.all(Object.values(files));
    const makeClassifier = lazySession(ort, classifierModel, files[classifierModel], opts, perSession);
    const fileMs = performance.now() - f0;
    const t1 = performance.now();
    const tina = new TinaEdge({
      ort, bundle, tokenizer, sessions: { text, ...(generate ? { generate } : {}), ...(prior ? { prior } : {}) }, templateBytes, sessionOptions: opts,
      makeClassifier,
      timings: { createMs: t1 - t0, openMs: tOpen - t0, tokenizerMs: tTok - tOpen, sessionsMs: t1 - tFiles, fileMs, perSession,
        bytesRead: bundle.bytesRead },
    });
    if (preload) {
      await tina.preload();
      const t2 = performance.now();
      Object.assign(tina.timings, { createMs: t2 - t0, sessionsMs: t2 - tFiles });
    }
    return tina;
  }

  /**
   * Novelty warnings (Python's Personalizer.novelty): which names the bundle was trained on, the
   * nearest known names of the others, and pairs of classes close enough to be confused.
   */
  async novelty(classes, { descriptions = null } = {}) {
    const names = parseClasses(classes);
    const D = this.manifest.text_encoder.embedding_dim;
    const [texts, senses] = await this._senses(names, descriptionTexts(names, descriptions), descriptions);
    const emb = await this.encode(texts);
    const vocab = this.manifest.training?.vocabulary ?? [];
    const file = this.manifest.text_encoder.vocabulary_embeddings;
    const vocabEmb = async () => {
      if (this._vocabEmb) return this._vocabEmb;
      let data;
      if (file) {
        const a = readNpy(await this.bundle.file(file), file);
        if (a.shape.length !== 2 || a.shape[0] !== vocab.filter((v) => typeof v === "string").length || a.shape[1] !== D) {
          throw new BundleError(`bundle file ${file} holds [${a.shape}]; the manifest promises [${vocab.length}, ${D}]`);
        }
        data = a.data;
      } else {
        data = await this.encode(vocab.filter((v) => typeof v === "string"));
      }
      this._vocabEmb = data;
      return data;
    };
    const table = await this._senseTable();
    const { read } = await this._readings(texts);
    return noveltyReport(names, emb, D, vocab, vocabEmb, { senses, kindOf: table ? (n) => table.kindOf(n) : null,
      readsAs: read.map((r, i) => (r !== texts[i] ? r : null)) });
  }

  /**
   * What the prior reads for each text (Python's Personalizer.conditioning_texts): the bundle's name
   * table where it holds the text (name-table.mjs), else `encode`; a text that is neither a known name
   * nor in the table but spells one ("tshirt", "sneakers": spellings.mjs) is read as that name. Only
   * the conditioning reads the table and the spellings (novelty says so: reads_as); sense resolution
   * and novelty's nearest names compare the encoder's own readings of the texts as typed.
   */
  async conditioningTexts(texts) {
    const D = this.manifest.text_encoder.embedding_dim;
    const { read, rows } = await this._readings(texts);
    const miss = read.filter((_, i) => rows[i] === null);
    const enc = miss.length ? await this.encode(miss) : null;
    const out = new Float32Array(texts.length * D);
    let next = 0; // the next encoded row
    rows.forEach((r, i) => {
      if (r === null) { r = enc.subarray(next * D, (next + 1) * D); next += 1; }
      out.set(r, i * D);
    });
    return out;
  }

  /**
   * {read, rows}: the text each of `texts` is read as, and its name-table row or null (Python's
   * Personalizer._readings): a known name as itself; a table alias as its vocabulary name; a table
   * noun by its row; another spelling of a known name as that name; anything else as itself.
   */
  async _readings(texts) {
    const known = this._knownNames();
    // the table never holds a known name: a prompt of known names does not fetch it
    const isNew = texts.map((t) => { const k = classKey(t); return !known.has(k) && NameTable.mayHold(k); });
    const table = isNew.some(Boolean) ? await this._nameTable() : null;
    const read = [...texts];
    const rows = texts.map((t, i) => {
      if (!isNew[i]) return null;
      const alias = table?.alias(t) ?? null;
      if (alias !== null) { read[i] = alias; return null; } // a WordNet synonym of a vocabulary name reads as that name
      const r = table?.get(t) ?? null;
      if (r === null) {
        this._spellings ??= new Spellings(known.keys());
        const spelled = this._spellings.find(classKey(t));
        if (spelled !== null) read[i] = known.get(spelled);
      }
      return r;
    });
    return { read, rows };
  }

  /** class key -> the name as the bundle spells it: the training vocabulary, then the training synonyms. */
  _knownNames() {
    if (!this._known) {
      const t = this.manifest.training ?? {};
      const names = [...(Array.isArray(t.vocabulary) ? t.vocabulary : []),
        ...Object.values(t.synonyms ?? {}).flatMap((ws) => (Array.isArray(ws) ? ws : []))];
      const known = new Map();
      for (const n of names) {
        if (typeof n !== "string") continue;
        const k = classKey(n);
        if (!known.has(k)) known.set(k, n);
      }
      this._known = known;
    }
    return this._known;
  }

  /** The bundle's name table (name-table.mjs), read on the first conditioning; null for a bundle without one. */
  async _nameTable() {
    const te = this.manifest.text_encoder;
    if (!te.name_table) return null;
    if (!te.name_vectors) throw new BundleError("the manifest names text_encoder.name_table without text_encoder.name_vectors; re-export the bundle");
    if (!this._nameTablePromise) {
      this._nameTablePromise = Promise.all([this.bundle.file(te.name_table), this.bundle.file(te.name_vectors)])
        .then(([t, v]) => NameTable.fromBytes(t, v, te.embedding_dim, te.name_table))
        .then((table) => {
          const builtFor = table.source.prior_sha256; // the prior graph the vectors were solved against (Python's load_name_table)
          if (builtFor !== undefined && builtFor !== null) {
            const prior = this.manifest.portable?.prior?.model;
            const have = prior ? this.manifest.files?.[prior]?.sha256 : undefined;
            if (have !== builtFor) {
              throw new BundleError(`the name table ${te.name_table} was solved against a prior graph with sha256 ${String(builtFor).slice(0, 12)}..., ` +
                `this bundle's is ${have ? have.slice(0, 12) + "..." : "absent"}: rebuild the table ` +
                "(python -m tina_edge.export.name_table BUNDLE --encoder ...) or drop it from the manifest");
            }
          }
          const vocab = new Set((this.manifest.training?.vocabulary ?? []).filter((n) => typeof n === "string").map(classKey));
          const odd = [...table.aliases.values()].filter((a) => !vocab.has(classKey(a))).sort();
          if (odd.length) throw new BundleError(`the name table's aliases name ${odd.length} names outside training.vocabulary (first: ${JSON.stringify(odd[0]).slice(0, 62)}); re-export the bundle`);
          return table;
        });
      this._nameTablePromise.catch(() => { this._nameTablePromise = null; }); // a later personalize may try again
    }
    return this._nameTablePromise;
  }

  /** The bundle's senses table (senses.mjs), read on first use; null for a bundle without one. */
  async _senseTable() {
    const name = this.manifest.text_encoder.senses;
    if (!name) return null;
    if (!this._senseTablePromise) this._senseTablePromise = this.bundle.file(name).then((b) => SenseTable.fromBytes(b, name));
    return this._senseTablePromise;
  }

  /** [texts with ambiguous names written in their sense ("mouse (rodent)"), resolutions] (Python's _senses). */
  async _senses(names, texts, descriptions) {
    const aligned = descriptions === null ? null : alignedDescriptions(names, descriptions);
    return senseTexts(await this._senseTable(), names, texts, aligned, (t) => this.encode(t), this.manifest.text_encoder.embedding_dim);
  }

  get kMax() { return this.manifest.denoiser.k_max; }
  /** The most classes one prompt may name (above kMax: generated in groups, groups.mjs). */
  get maxClasses() { return maxClasses(this.manifest.denoiser.k_max); }
  get inputSize() { return [this.manifest.template.input.height, this.manifest.template.input.width]; }

  /** Token ids and mask per text, exactly as the Python runtime makes them (see docs/PORTABLE.md). */
  tokenize(texts) {
    const te = this.manifest.text_encoder;
    const L = te.max_tokens;
    const ids = texts.map((t) => {
      const text = te.cleaning === "clip" ? clipClean(t) : t;
      let x = this.tokenizer.encode(text).ids;
      if (x.length > L) x = x.slice(0, L - 1).concat([x[x.length - 1]]); // keep the end token
      return x;
    });
    return ids;
  }

  /**
   * L2-normalised text embeddings, Float32Array [n * D]. On onnxruntime-node each text runs alone,
   * unpadded, as the Python runtime runs it: a weight-only encoder rounds a batch differently from a
   * single row (1.5e-8 to 3e-8), and node is held to Python's bits. A dynamic-int8 encoder depends on
   * the batch by much more, so it always runs one text at a time. Elsewhere (wasm: within 1e-5 of
   * Python anyway) texts of equal token length run together: 1.5-2x faster for 10 new names.
   */
  async encode(texts) {
    const D = this.manifest.text_encoder.embedding_dim;
    const out = new Float32Array(texts.length * D);
    const missing = [...new Set(texts.filter((t) => !this._cache.has(t)))];
    const got = new Map();
    if (missing.length) {
      const emb = await this._encodeUncached(missing);
      missing.forEach((t, i) => got.set(t, emb.slice(i * D, (i + 1) * D)));
    }
    texts.forEach((t, i) => {
      const e = got.get(t) ?? this._cache.get(t);
      this._cache.delete(t); // most recently used goes last
      this._cache.set(t, e);
      out.set(e, i * D);
    });
    while (this._cache.size > this.cacheSize) this._cache.delete(this._cache.keys().next().value);
    return out;
  }

  async _encodeUncached(texts) {
    const te = this.manifest.text_encoder;
    const D = te.embedding_dim;
    const out = new Float32Array(texts.length * D);
    const dynamic = typeof this.sessions.text.inputMetadata?.[0]?.shape?.[1] !== "number";
    const ids = this.tokenize(texts);
    const groups = [];
    if (dynamic && this.manifest.portable?.text_encoder && this.backend !== "onnxruntime-node") {
      const byLen = new Map();
      ids.forEach((r, i) => byLen.set(r.length, [...(byLen.get(r.length) ?? []), i]));
      groups.push(...byLen.values());
    } else {
      ids.forEach((_, i) => groups.push([i])); // one text per run (see encode)
    }
    for (const idx of groups) {
      const batch = idx.map((i) => ids[i]);
      const width = dynamic ? Math.max(1, ...batch.map((r) => r.length)) : te.max_tokens;
      const padded = batch.map((r) => r.concat(new Array(width - r.length).fill(te.pad_id)));
      const mask = batch.map((r) => r.map(() => 1).concat(new Array(width - r.length).fill(0)));
      const res = await this.sessions.text.run({
        [INPUT_IDS]: int64Tensor(this.ort, padded, width), [ATTENTION_MASK]: int64Tensor(this.ort, mask, width),
      });
      idx.forEach((i, j) => out.set(res[EMBEDDINGS].data.subarray(j * D, (j + 1) * D), i * D));
    }
    return out;
  }

  /**
   * Generate a classifier for `classes` ("dog, cat" or ["dog", "cat"]); labels keep the prompt order.
   * @param options.seed integer or BigInt (default 0): the same seed gives the same model as Python
   * @param options.descriptions one text (or null) per class, encoded instead of the name
   * @param options.images {class name: [photos]} (1-20 per class, each {data, width, height}): on a trunk
   *   bundle (the default one) fused with the class name, as Python's personalize(images=...)
   * @param options.photosOnly true (every class given photos) or class names: those labels are only labels
   */
  async personalize(classes, { seed = 0, descriptions = null, images = null, photosOnly = false } = {}) {
    const t0 = performance.now();
    const m = this.manifest;
    const names = parseClasses(classes);
    const K = m.denoiser.k_max;
    const limit = maxClasses(K);
    if (names.length < 2) {
      const got = names.length === 1 ? `only 1 class ("${names[0]}")` : "no classes";
      throw new PromptError(`a classifier needs at least 2 classes but the prompt has ${got}; this bundle allows 2 to ${limit}`);
    }
    if (names.length > limit) {
      throw new PromptError(`the prompt has ${names.length} classes but this bundle allows 2 to ${limit}; split the task into prompts of at most ${limit} classes`);
    }
    let texts = descriptionTexts(names, descriptions);
    texts = (await this._senses(names, texts, descriptions))[0]; // "mouse" -> "mouse (rodent)" where the bundle has senses
    const seedBig = checkSeed(seed);
    const photos = await readPhotos(this, names, images, descriptions === null ? null : alignedDescriptions(names, descriptions), photosOnly);
    const k = names.length;
    const g = m.portable.generate;
    const raw = typeof classes === "string" ? classes : classes.map(String).join(", ");
    const sampler = { sampler: g.sampler, steps: g.steps, seed: seedBig <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(seedBig) : seedBig.toString(), candidates: 1 };
    if (photos && skipsSampler(photos, m.template.layout)) { // every row replaced by prototype rows
      const fused = applyPhotos(photos, zeroParams(m.template.layout, k), texts);
      return new PersonalizedClassifier(this, { labels: names, params: fused.params, prompt: raw, texts: fused.texts, sampler,
        imagePrompts: fused.counts, timings: { encodeMs: 0, generateMs: 0, photosMs: performance.now() - t0 } });
    }
    const D = m.denoiser.embedding_dim;
    const P = m.denoiser.param_count;
    const emb = await this.conditioningTexts(texts);
    // k > K_max: groups of balanced sizes, one batch, the same starting noise each (groups.mjs)
    const sizes = groupSizes(k, K);
    const G = sizes.length;
    const classEmb = new Float32Array(G * K * D);
    const mask = new Float32Array(G * K);
    const noise1 = portableNormal(seedBig, P);
    const noise = new Float32Array(G * P);
    let start = 0;
    sizes.forEach((n, g) => {
      classEmb.set(emb.subarray(start * D, (start + n) * D), g * K * D);
      mask.fill(1, g * K, g * K + n);
      noise.set(noise1, g * P);
      start += n;
    });
    const t1 = performance.now();
    const feeds = {
      [CLASS_EMB]: new this.ort.Tensor("float32", classEmb, [G, K, D]),
      [CLASS_MASK]: new this.ort.Tensor("float32", mask, [G, K]),
      [NOISE]: new this.ort.Tensor("float32", noise, [G, P]),
    };
    // split bundles (manifest portable.prior): the prior rows once, read by every step of generate.onnx
    if (this.sessions.prior) feeds[PRIOR] = (await this.sessions.prior.run({ [CLASS_EMB]: feeds[CLASS_EMB] }))[PRIOR];
    const flat = isPriorOnly(m) ? priorOnlyParams(feeds[PRIOR].data, mask, m.template.layout, G, K, feeds[PRIOR].dims[2], P)
      : (await this.sessions.generate.run(feeds))[PARAMS].data; // prior alone: generate.onnx's floats without running it
    const parts = sizes.map((n, g) => {
      const part = {};
      for (const t of m.template.layout) {
        const at = g * P + t.offset;
        part[t.name] = sliceClasses(flat.subarray(at, at + t.shape.reduce((a, b) => a * b, 1)), t, n);
      }
      return part;
    });
    let params = G === 1 ? parts[0] : calibrateGroups(joinGroups(parts, m.template.layout), m.template.layout, sizes);
    let imagePrompts = null;
    const t2 = performance.now();
    if (photos) {
      const known = this._knownNames(); // a text read as a known name counts as one
      const { read } = await this._readings(texts.map((t) => (typeof t === "string" ? t : "")));
      ({ params, texts, counts: imagePrompts } = applyPhotos(photos, params, texts, texts.map((t, i) => typeof t === "string" && known.has(classKey(read[i])))));
    }
    return new PersonalizedClassifier(this, {
      labels: names, params, prompt: raw, texts, sampler, imagePrompts,
      timings: { encodeMs: t1 - t0, generateMs: t2 - t1 },
    });
  }
}

/** An onnxruntime session of bundle file `name` (bytes: a promise), its creation time in perSession; errors as BundleError/BackendError. */
async function createSession(ort, name, bytesPromise, opts, perSession) {
  const bytes = await bytesPromise;
  const s0 = performance.now();
  try {
    const s = await ort.InferenceSession.create(bytes, opts);
    perSession[name] = performance.now() - s0;
    return s;
  } catch (e) {
    const msg = String(e?.message || e);
    // "node" as a graph word, not inside a file name (onnxruntime-web's own loader is ort.node.min.mjs)
    const graphWords = msg.replace(/[\w./-]*\.m?js\b/g, "");
    if (/wasm|webassembly|backend|fetch|import/i.test(msg) && !/protobuf|model|graph|\bnode\b|opset/i.test(graphWords)) {
      throw new BackendError(`onnxruntime could not start (${msg.slice(0, 200)}): in a bundled app it cannot find its ` +
        "WebAssembly file: copy node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.{wasm,mjs} to your site and pass " +
        "wasmPaths: '/where/they/are/' to fromBundle (README, \"Bundlers\")");
    }
    throw new BundleError(`onnxruntime cannot load bundle file ${name}: ${msg.slice(0, 300)}`);
  }
}

/**
 * A maker of the session of `name` for later: it holds that file's bytes alone (not the other files'),
 * until the session is made.
 */
function lazySession(ort, name, bytesPromise, opts, perSession) {
  let bytes = bytesPromise;
  return async () => {
    const s = await createSession(ort, name, bytes, opts, perSession);
    bytes = null;
    return s;
  };
}

/**
 * Refuse execution providers not verified against Python: only "cpu" (onnxruntime-node) and
 * "wasm" are. WebGPU, tried, changed the generated weights by up to 0.49 (issue 24).
 */
export function checkProviders(eps) {
  for (const ep of eps ?? []) {
    const n = typeof ep === "string" ? ep : ep?.name;
    if (n !== "wasm" && n !== "cpu") {
      throw new BackendError(`execution provider ${JSON.stringify(n)} is not supported: only "cpu" (onnxruntime-node) and "wasm" ` +
        "give Python's results (WebGPU changed the generated weights by up to 0.49 when tried); leave executionProviders out");
    }
  }
}

/** A seed as BigInt: an integer 0..2**64-1 (number up to 2**53, BigInt or a decimal string above). */
export function checkSeed(seed) {
  let s;
  if (typeof seed === "bigint") s = seed;
  else if (typeof seed === "number" && Number.isSafeInteger(seed)) s = BigInt(seed);
  else if (typeof seed === "string" && /^[0-9]{1,20}$/.test(seed)) s = BigInt(seed);
  else if (typeof seed === "number" && Number.isInteger(seed)) {
    throw new ArgumentError(`seed ${seed} is above 2**53 and was rounded by JavaScript; pass it as a BigInt or a decimal string`);
  } else throw new ArgumentError(`seed must be an integer from 0 to 2**64-1, got ${String(seed).slice(0, 40)}`);
  if (s < 0n || s >= 2n ** 64n) throw new ArgumentError(`seed must be an integer from 0 to 2**64-1, got ${s}`);
  return s;
}

/** The first k slices on the class axis of a tensor stored at K_max ({shape, data}). */
export function sliceClasses(flat, spec, k) {
  const shape = spec.shape.slice();
  if (spec.class_axis === null || spec.class_axis === undefined) return { shape, data: Float32Array.from(flat) };
  const ax = spec.class_axis;
  const outer = shape.slice(0, ax).reduce((a, b) => a * b, 1);
  const inner = shape.slice(ax + 1).reduce((a, b) => a * b, 1);
  const K = shape[ax];
  const data = new Float32Array(outer * k * inner);
  for (let o = 0; o < outer; o++) data.set(flat.subarray(o * K * inner, o * K * inner + k * inner), o * k * inner);
  shape[ax] = k;
  return { shape, data };
}

function clipClean(text) {
  // open_clip's cleaning without ftfy (ASCII and already-clean text are unaffected by fix_text)
  const el = text.replace(/&amp;/g, "&").replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&quot;/g, '"').replace(/&#39;/g, "'");
  return el.trim().split(/\s+/).join(" ").toLowerCase();
}
