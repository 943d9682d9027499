// The photo preprocessing policy of the manifest (template.input.preprocess), the twin of
// tina_edge/runtime/preprocess.py: any photo -> uint8 [S, S, 3] RGB for the trunk.
//   1. alpha composited on white (Pillow's integer alpha_composite over an opaque white image);
//   2. grey (1 channel) and grey + alpha (2 channels) replicated into R, G, B;
//   3. shorter side resized to size / crop_fraction with Pillow's separable resampling
//      (antialiased: the filter support widens by the downscale factor; coefficients in 22-bit
//      fixed point; horizontal pass, rounded to uint8, then vertical pass);
//   4. centre crop to S x S.
// Same integer arithmetic as Pillow, so the output is byte-identical to Python's `prepare`
// (checked by npm test on the conformance vectors: odd sizes, alpha, grey). Why not a canvas:
// browsers' drawImage smoothing is unspecified (and premultiplies alpha), so it differs from the
// pixels the trunk's features were computed from.
import { ImageError, ArgumentError } from "./errors.mjs";
import { pyFloat, toTree, codePointCompare } from "./manifest.mjs";
import { pyRepr } from "./prompt.mjs";

const PRECISION_BITS = 22; // Pillow: 32 - 8 - 2
const ONE = 2 ** PRECISION_BITS;

const FILTERS = {
  bilinear: { support: 1.0, f: (x) => { x = Math.abs(x); return x < 1.0 ? 1.0 - x : 0.0; } },
  bicubic: {
    support: 2.0,
    f: (x) => {
      const a = -0.5;
      x = Math.abs(x);
      if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
      if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
      return 0.0;
    },
  },
};

/** Python's round(): half to even (int(round(w * scale)) in preprocess.py). */
function roundHalfEven(x) {
  const r = Math.round(x);
  return Math.abs(x - Math.trunc(x)) === 0.5 ? 2 * Math.round(x / 2) : r;
}

/** Per output index: first input index, count, and 22-bit fixed-point weights (Pillow's precompute_coeffs),
 * for the input range [in0, in1) (Pillow's resize box; float32 like Pillow's). */
function coefficients(inSize, outSize, filter, in0 = 0, in1 = inSize) {
  const scale = Math.fround(in1 - in0) / outSize; // Pillow: float in0, in1, their difference in float
  const filterscale = Math.max(scale, 1.0);
  const support = filter.support * filterscale;
  const out = [];
  for (let xx = 0; xx < outSize; xx++) {
    const center = in0 + (xx + 0.5) * scale;
    const ss = 1.0 / filterscale;
    const xmin = Math.max(0, Math.trunc(center - support + 0.5));
    const xmax = Math.min(inSize, Math.trunc(center + support + 0.5)) - xmin;
    const w = new Float64Array(Math.max(xmax, 0));
    let ww = 0.0;
    for (let x = 0; x < xmax; x++) { w[x] = filter.f((x + xmin - center + 0.5) * ss); ww += w[x]; }
    const k = new Float64Array(w.length);
    for (let x = 0; x < xmax; x++) {
      const v = ww !== 0.0 ? w[x] / ww : w[x];
      k[x] = v < 0 ? Math.trunc(-0.5 + v * ONE) : Math.trunc(0.5 + v * ONE);
    }
    out.push({ xmin, k });
  }
  return out;
}

const clip8 = (ss) => Math.min(255, Math.max(0, Math.floor(ss / ONE)));

/** One separable pass over an RGB image `w` pixels wide along `axis` (0: horizontal, output row y reads
 * source row y + off; 1: vertical, output column x reads source column x + off). */
function pass(src, w, outW, outH, coeffs, axis, off = 0) {
  const dst = new Uint8Array(outW * outH * 3);
  for (let y = 0; y < outH; y++) {
    for (let x = 0; x < outW; x++) {
      const { xmin, k } = coeffs[axis === 0 ? x : y];
      let s0 = ONE / 2, s1 = ONE / 2, s2 = ONE / 2;
      for (let t = 0; t < k.length; t++) {
        const i = axis === 0 ? ((y + off) * w + xmin + t) * 3 : ((xmin + t) * w + x + off) * 3;
        s0 += src[i] * k[t]; s1 += src[i + 1] * k[t]; s2 += src[i + 2] * k[t];
      }
      const o = (y * outW + x) * 3;
      dst[o] = clip8(s0); dst[o + 1] = clip8(s1); dst[o + 2] = clip8(s2);
    }
  }
  return dst;
}

/** RGB bytes of an image with 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA) channels, alpha on white. */
export function toRgbOnWhite(data, width, height) {
  const n = width * height;
  const c = data.length / n;
  if (![1, 2, 3, 4].includes(c)) {
    throw new ImageError(`the image has ${c} values per pixel for ${width} x ${height}; pass grey, grey+alpha, RGB or RGBA bytes`);
  }
  const out = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    const r = data[i * c], g = c >= 3 ? data[i * c + 1] : r, b = c >= 3 ? data[i * c + 2] : r;
    const a = c === 2 ? data[i * c + 1] : c === 4 ? data[i * c + 3] : 255;
    if (a === 255) { out[i * 3] = r; out[i * 3 + 1] = g; out[i * 3 + 2] = b; continue; }
    if (a === 0) { out[i * 3] = out[i * 3 + 1] = out[i * 3 + 2] = 255; continue; }
    // Pillow's alpha_composite(white, src) with 7 extra bits; over opaque white coef1 = a * 128 exactly
    const coef1 = a * 128, coef2 = 255 * 128 - coef1;
    const comp = (v) => { const t = v * coef1 + 255 * coef2 + (0x80 << 7); return ((((t >> 8) + t) >> 8) >> 7); };
    out[i * 3] = comp(r); out[i * 3 + 1] = comp(g); out[i * 3 + 2] = comp(b);
  }
  return out;
}

/**
 * Pillow's Image.resize(size, filter, box) of an RGB image (box in float32, as Pillow parses it):
 * nearest through its affine scale (positions accumulated as Pillow does), the others by two separable
 * passes, the horizontal one over the rows the vertical one reads only.
 */
function resize(rgb, w, h, outW, outH, interpolation, box = [0, 0, w, h]) {
  const [b0, b1, b2, b3] = box.map(Math.fround);
  if (interpolation === "nearest") {
    const a0 = Math.fround(b2 - b0) / outW, a4 = Math.fround(b3 - b1) / outH;
    const coord = (v) => (v < 0 ? -1 : Math.trunc(v));
    const xs = new Int32Array(outW);
    let xo = b0 + a0 * 0.5;
    for (let x = 0; x < outW; x++) { const xin = coord(xo); xs[x] = xin < w ? xin : -1; xo += a0; }
    const out = new Uint8Array(outW * outH * 3); // outside the source: 0, as Pillow fills
    let yo = b1 + a4 * 0.5;
    for (let y = 0; y < outH; y++) {
      const yi = coord(yo);
      if (yi < 0 || yi >= h) { yo += a4; continue; }
      for (let x = 0; x < outW; x++) {
        if (xs[x] < 0) continue;
        const i = (yi * w + xs[x]) * 3, o = (y * outW + x) * 3;
        out[o] = rgb[i]; out[o + 1] = rgb[i + 1]; out[o + 2] = rgb[i + 2];
      }
      yo += a4;
    }
    return out;
  }
  const filter = FILTERS[interpolation];
  const needH = outW !== w || b0 !== 0 || b2 !== outW;
  const needV = outH !== h || b1 !== 0 || b3 !== outH;
  const ch = coefficients(w, outW, filter, b0, b2), cv = coefficients(h, outH, filter, b1, b3);
  const used = (c) => [c[0].xmin, c[c.length - 1].xmin + c[c.length - 1].k.length]; // first, end source index
  if (needH && needV && outH < h && 2 * (w - outW) < h - outH) {
    // Pillow 13 runs the vertical pass first here (found by experiment on every order-sensitive case: the
    // intermediate rounding to uint8 makes the order visible); over the columns the horizontal pass reads only
    const [first, end] = used(ch);
    for (const c of ch) c.xmin -= first;
    return pass(pass(rgb, w, end - first, outH, cv, 1, first), end - first, outW, outH, ch, 0);
  }
  let cur = rgb, curW = w;
  if (needH) { // over the rows the vertical pass reads only
    const [first, end] = used(cv);
    for (const c of cv) c.xmin -= first;
    cur = pass(rgb, w, outW, end - first, ch, 0, first);
    curW = outW;
  }
  if (needV) cur = pass(cur, curW, curW, outH, cv, 1);
  return cur;
}

/** The runtime's size checks (runtime/images.py check_size on an in-memory image): not empty, no strip
 * longer than MAX_ASPECT:1 (its resized intermediate would be huge; a 1x100000 PNG is 475 bytes). */
export function checkSize(w, h, name = "the image") {
  if (!(w >= 1 && h >= 1)) throw new ImageError(`${name} is an empty image (${w}x${h} pixels)`);
  if (Math.max(w, h) > MAX_ASPECT * Math.min(w, h)) {
    throw new ImageError(`${name} is ${w}x${h} pixels, a strip longer than ${MAX_ASPECT}:1; crop it to the part ` +
      "to classify first");
  }
}

export const MAX_ASPECT = 50; // runtime/images.py MAX_ASPECT
// Pixels of the resized image before its crop (runtime/preprocess.py): beyond it only the crop's region is resized.
export const MAX_INTERMEDIATE = 4_000_000;
// Pixels of an image handed over in memory: a bound of this package (Python's arrays are already paid for).
export const MAX_PIXELS = 64_000_000;

/**
 * One photo {data, width, height} of any size (grey, grey+alpha, RGB or RGBA bytes) ->
 * {data: Uint8Array RGB [size * size * 3], width: size, height: size}, following `spec`
 * (the manifest's template.input.preprocess, checked by preprocessSpec as Python's PreprocessSpec.from_dict).
 */
export function prepareImage(image, spec, name = "the image") {
  const { data, width: w, height: h } = image ?? {};
  if (!data) throw new ImageError("an image must be {data, width, height} with at least one pixel");
  checkSize(w, h, name);
  if (w * h > MAX_PIXELS) throw new ImageError(`${name} is ${w}x${h} pixels; images of at most ${MAX_PIXELS / 1e6} megapixels are accepted`);
  const { size: S, crop_fraction: cf, interpolation } = preprocessSpec(spec, ImageError);
  const scale = S / cf / Math.min(w, h);
  const nw = Math.max(S, roundHalfEven(w * scale)), nh = Math.max(S, roundHalfEven(h * scale));
  const left = Math.floor((nw - S) / 2), top = Math.floor((nh - S) / 2);
  const rgb = toRgbOnWhite(data, w, h);
  if (nw * nh > MAX_INTERMEDIATE) { // the same crop, resized from its region of the photo alone
    const box = [left * w / nw, top * h / nh, (left + S) * w / nw, (top + S) * h / nh];
    return { data: resize(rgb, w, h, S, S, interpolation, box), width: S, height: S };
  }
  const big = nw !== w || nh !== h ? resize(rgb, w, h, nw, nh, interpolation) : rgb;
  if (nw === S && nh === S) return { data: big, width: S, height: S };
  const out = new Uint8Array(S * S * 3);
  for (let y = 0; y < S; y++) out.set(big.subarray(((top + y) * nw + left) * 3, ((top + y) * nw + left + S) * 3), y * S * 3);
  return { data: out, width: S, height: S };
}

// The policy's keys and its only supported values (runtime/preprocess.py PreprocessSpec).
const DEFAULTS = { size: 128, resize: "shorter_side", crop: "center", crop_fraction: 1.0, interpolation: "bilinear",
  alpha: "white", grey: "replicate" };
const KEYS = Object.keys(DEFAULTS).sort();
const INTERPOLATIONS = ["bilinear", "bicubic", "nearest"];
export const MAX_SIZE = 1024;
export const MIN_CROP_FRACTION = 0.5;

/** Python's repr() of a JSON value (a tree from manifest.mjs's parseExact), as its messages show it. */
function reprNode(n) {
  switch (n.t) {
    case "i": return String(n.v);
    case "f": return Number.isNaN(n.v) ? "nan" : n.v === Infinity ? "inf" : n.v === -Infinity ? "-inf" : pyFloat(n.v);
    case "s": return pyRepr(n.v);
    case "b": return n.v ? "True" : "False";
    case "n": return "None";
    case "a": return "[" + n.v.map(reprNode).join(", ") + "]";
    default: return "{" + [...n.v].map(([k, x]) => `${pyRepr(k)}: ${reprNode(x)}`).join(", ") + "}";
  }
}
const cut = (s, n) => [...s].slice(0, n).join("");
const isTree = (x) => x !== null && typeof x === "object" && typeof x.t === "string" && x.t.length === 1 &&
  Object.keys(x).every((k) => k === "t" || k === "v");
const TYPE_NAMES = { i: "int", f: "float", s: "str", b: "bool", n: "NoneType", a: "list" };

/**
 * The one validator of a stored photo policy, Python's PreprocessSpec.from_dict: a JSON object with
 * `size` (an integer 8..1024) and only known keys; crop_fraction a number in [0.5, 1] (not a bool, not
 * NaN); interpolation bilinear, bicubic or nearest; the other fields their one supported value.
 * `policy`: a plain object, or a tree from parseExact (keeps 128.0 apart from 128, as Python does).
 * Returns the full policy; throws `Err` with Python's ValueError message.
 */
export function preprocessSpec(policy, Err = ArgumentError) {
  const node = isTree(policy) ? policy : toTree(policy);
  if (node.t !== "o") throw new Err(`preprocessing must be a JSON object, got ${TYPE_NAMES[node.t]}`);
  const unknown = [...node.v.keys()].filter((k) => !KEYS.includes(k)).sort(codePointCompare);
  if (unknown.length) {
    throw new Err(`preprocessing has unknown keys ${cut(reprNode(toTree(unknown.slice(0, 5))), 120)}; it knows ${reprNode(toTree(KEYS))}`);
  }
  if (!node.v.has("size")) throw new Err("preprocessing has no size");
  const get = (k) => node.v.get(k) ?? toTree(DEFAULTS[k]);
  const size = get("size");
  if (!(size.t === "i" && size.v >= 8n && size.v <= BigInt(MAX_SIZE))) {
    throw new Err(`preprocessing size must be an integer in 8..${MAX_SIZE}, got ${cut(reprNode(size), 40)}`);
  }
  const cf = node.v.has("crop_fraction") ? node.v.get("crop_fraction") : { t: "f", v: 1.0 };
  const cfv = cf.t === "i" || cf.t === "f" ? Number(cf.v) : NaN;
  if (!(Number.isFinite(cfv) && cfv >= MIN_CROP_FRACTION && cfv <= 1.0)) {
    throw new Err(`crop_fraction must be a number in [${MIN_CROP_FRACTION}, 1], got ${cut(reprNode(cf), 40)}`);
  }
  const interp = get("interpolation");
  if (!(interp.t === "s" && INTERPOLATIONS.includes(interp.v))) {
    throw new Err(`interpolation must be one of ('bilinear', 'bicubic', 'nearest'), got ${cut(reprNode(interp), 40)}`);
  }
  for (const k of ["resize", "crop", "alpha", "grey"]) {
    const n = get(k);
    if (!(n.t === "s" && n.v === DEFAULTS[k])) {
      throw new Err("unsupported preprocessing policy; this tina-edge implements resize=shorter_side, " +
        "crop=center, alpha=white, grey=replicate");
    }
  }
  return { ...DEFAULTS, size: Number(size.v), crop_fraction: cfv, interpolation: interp.v };
}
