// More classes than the bundle's K_max slots: the twin of tina_edge/runtime/groups.py.
// k > K_max classes are split into ceil(k / K_max) groups of balanced sizes (the first k mod G
// one class larger), contiguous runs of the prompt; every group starts from the same portable
// noise (portableNormal(seed, P)) and all run in one generate.onnx batch; the groups' class
// slices are joined in prompt order and calibrated (mode "group"): each group's weights scaled so
// its mean row norm is that of all k classes, its biases shifted so its mean bias is the mean of
// all k biases. k <= K_max is one group, as before.

export const MAX_CLASSES = 1000;

/** The most classes a prompt may name with a bundle of kMax slots. */
export function maxClasses(kMax) { return Math.max(MAX_CLASSES, kMax); }

/** Balanced group sizes for k classes in groups of at most kMax ([k] when k <= kMax). */
export function groupSizes(k, kMax) {
  const g = Math.max(1, Math.ceil(k / kMax));
  const base = Math.floor(k / g), extra = k % g;
  return Array.from({ length: g }, (_, i) => base + (i < extra ? 1 : 0));
}

/** Per group its tensors ({shape, data}, k_g on the class axis) -> one set with every class in prompt order. */
export function joinGroups(parts, layout) {
  const out = {};
  for (const t of layout) {
    if (t.class_axis === null || t.class_axis === undefined) { out[t.name] = parts[0][t.name]; continue; }
    const ax = t.class_axis;
    const shape0 = parts[0][t.name].shape;
    const outer = shape0.slice(0, ax).reduce((a, b) => a * b, 1);
    const inner = shape0.slice(ax + 1).reduce((a, b) => a * b, 1);
    const k = parts.reduce((a, p) => a + p[t.name].shape[ax], 0);
    const data = new Float32Array(outer * k * inner);
    let at = 0;
    for (const p of parts) {
      const kg = p[t.name].shape[ax];
      for (let o = 0; o < outer; o++) data.set(p[t.name].data.subarray(o * kg * inner, (o + 1) * kg * inner), (o * k + at) * inner);
      at += kg;
    }
    const shape = shape0.slice();
    shape[ax] = k;
    out[t.name] = { shape, data };
  }
  return out;
}

/** Index of element (class c, j-th number of its slice) in a tensor with class axis ax. */
function classIndexer(shape, ax) {
  const inner = shape.slice(ax + 1).reduce((a, b) => a * b, 1);
  const outer = shape.slice(0, ax).reduce((a, b) => a * b, 1);
  const k = shape[ax];
  return { per: outer * inner, at: (c, j) => (Math.floor(j / inner) * k + c) * inner + (j % inner) };
}

/** "group" calibration in place (runtime/groups.py calibrate): one mean row norm and one mean bias for every group. */
export function calibrateGroups(params, layout, sizes) {
  const k = sizes.reduce((a, b) => a + b, 0);
  const starts = [0];
  for (const n of sizes) starts.push(starts[starts.length - 1] + n);
  const cls = layout.filter((t) => t.class_axis !== null && t.class_axis !== undefined);
  const idx = new Map(cls.map((t) => [t.name, classIndexer(params[t.name].shape, t.class_axis)]));
  const weights = cls.filter((t) => idx.get(t.name).per > 1);
  const biases = cls.filter((t) => idx.get(t.name).per === 1);
  if (weights.length) {
    const norm = new Float64Array(k);
    for (const t of weights) {
      const { per, at } = idx.get(t.name);
      const d = params[t.name].data;
      for (let c = 0; c < k; c++) { let s = 0; for (let j = 0; j < per; j++) { const v = d[at(c, j)]; s += v * v; } norm[c] += s; }
    }
    for (let c = 0; c < k; c++) norm[c] = Math.sqrt(norm[c]);
    const meanOf = (a, e) => { let s = 0; for (let c = a; c < e; c++) s += norm[c]; return s / (e - a); };
    const all = meanOf(0, k);
    for (let g = 0; g < sizes.length; g++) {
      const a = starts[g], e = starts[g + 1];
      const s = Math.fround(all / Math.max(meanOf(a, e), 1e-12));
      for (const t of weights) {
        const { per, at } = idx.get(t.name);
        const d = params[t.name].data;
        for (let c = a; c < e; c++) for (let j = 0; j < per; j++) { const i = at(c, j); d[i] = d[i] * s; }
      }
    }
  }
  for (const t of biases) {
    const d = params[t.name].data;
    let s = 0;
    for (let c = 0; c < k; c++) s += d[c];
    const mean = s / k;
    for (let g = 0; g < sizes.length; g++) {
      const a = starts[g], e = starts[g + 1];
      let sg = 0;
      for (let c = a; c < e; c++) sg += d[c];
      const shift = Math.fround(mean - sg / (e - a));
      for (let c = a; c < e; c++) d[c] = d[c] + shift;
    }
  }
  return params;
}
