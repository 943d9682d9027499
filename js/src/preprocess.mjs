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
import { ImageError } from "./errors.mjs";

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

/** Per output index: first input index, count, and 22-bit fixed-point weights (Pillow's precompute_coeffs). */
function coefficients(inSize, outSize, filter) {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1.0);
  const support = filter.support * filterscale;
  const out = [];
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
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

/** One separable pass over an RGB image along `axis` (0: horizontal, 1: vertical). */
function pass(src, w, h, outW, outH, coeffs, axis) {
  const dst = new Uint8Array(outW * outH * 3);
  for (let y = 0; y < outH; y++) {
    for (let x = 0; x < outW; x++) {
      const { xmin, k } = coeffs[axis === 0 ? x : y];
      let s0 = ONE / 2, s1 = ONE / 2, s2 = ONE / 2;
      for (let t = 0; t < k.length; t++) {
        const i = axis === 0 ? (y * w + xmin + t) * 3 : ((xmin + t) * w + x) * 3;
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
 * One photo {data, width, height} of any size (grey, grey+alpha, RGB or RGBA bytes) ->
 * {data: Uint8Array RGB [size * size * 3], width: size, height: size}, following `spec`
 * (the manifest's template.input.preprocess: size, crop_fraction, interpolation).
 */
export const MAX_PIXELS = 64_000_000; // runtime/images.py MAX_PIXELS: decoded pixels, and here every intermediate too

export function prepareImage(image, spec) {
  const { data, width: w, height: h } = image ?? {};
  if (!data || !(w >= 1) || !(h >= 1)) throw new ImageError("an image must be {data, width, height} with at least one pixel");
  if (w * h > MAX_PIXELS) throw new ImageError(`the image is ${w}x${h} pixels; images of at most ${MAX_PIXELS / 1e6} megapixels are accepted`);
  const { size: S, crop_fraction: cf = 1.0, interpolation = "bilinear", resize = "shorter_side", crop = "center" } = spec;
  const filter = FILTERS[interpolation];
  if (!filter || resize !== "shorter_side" || crop !== "center") {
    throw new ImageError(`this tina-edge implements preprocessing with bilinear or bicubic shorter-side resize and centre crop; ` +
      `the bundle asks for ${interpolation} ${resize} ${crop}`);
  }
  const scale = S / cf / Math.min(w, h);
  const nw = Math.max(S, roundHalfEven(w * scale)), nh = Math.max(S, roundHalfEven(h * scale));
  // the shorter side is resized first: a 1x100000 strip would become 128x12800000 (4.9 GB) before the crop
  if (nw * nh > MAX_PIXELS || nw * h > MAX_PIXELS) {
    throw new ImageError(`the image is ${w}x${h} pixels: its aspect ratio is too extreme to classify (resizing it would ` +
      `make ${nw}x${nh} pixels); crop it to the object first`);
  }
  let rgb = toRgbOnWhite(data, w, h);
  let cw = w, ch = h;
  if (nw !== w || nh !== h) {
    if (nw !== w) { rgb = pass(rgb, w, h, nw, h, coefficients(w, nw, filter), 0); cw = nw; }
    if (nh !== h) { rgb = pass(rgb, cw, h, cw, nh, coefficients(h, nh, filter), 1); ch = nh; }
  }
  if (cw === S && ch === S) return { data: rgb, width: S, height: S };
  const left = Math.floor((cw - S) / 2), top = Math.floor((ch - S) / 2);
  const out = new Uint8Array(S * S * 3);
  for (let y = 0; y < S; y++) out.set(rgb.subarray(((top + y) * cw + left) * 3, ((top + y) * cw + left + S) * 3), y * S * 3);
  return { data: out, width: S, height: S };
}
