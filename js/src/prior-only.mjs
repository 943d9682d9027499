// The generator as the text prior alone (manifest portable.prior.only, `tina-edge convert --prior-only`):
// the denoiser's correction is zero, so generate.onnx would return, float for float, the prior rows
// (0 + prior * mask) scattered to the flat parameter vector, de-normalised as x0 * std + mean: its
// DDIM steps end with x0 itself (abar_prev = 1). Computed here without running it; the Python twin
// is tina_edge/runtime/prior_only.py (tests/test_prior_only.py, js/test/prior-only.test.mjs).
import { BundleError } from "./errors.mjs";

/** True when the manifest says the generator is the prior alone (and names the prior graph). */
export function isPriorOnly(manifest) {
  return manifest.portable?.prior?.only === true && Boolean(manifest.portable.prior.model);
}

/** [[offset, per-slot numel]] of the layout's tensors, in layout order: slot j's row is their concatenation. */
export function rowSegments(layout, K, R) {
  const segs = layout.map((t) => {
    if (t.class_axis !== 0 || t.shape[0] !== K) {
      throw new BundleError(`the generated tensor ${t.name} has no leading class axis of K_max ${K}; the prior alone needs one row per class`);
    }
    return [t.offset, t.shape.reduce((a, b) => a * b, 1) / K];
  });
  if (segs.reduce((a, [, per]) => a + per, 0) !== R) throw new BundleError(`the prior rows hold ${R} numbers but the layout's rows do not`);
  return segs;
}

/**
 * generate.onnx's `params` [G, P] for a prior-only bundle, from the prior rows [G, K, R] and the mask
 * [G, K]: every operation rounds to float32 as onnxruntime's does (Math.fround of an exact double).
 */
export function priorOnlyParams(prior, mask, layout, G, K, R, P) {
  const segs = rowSegments(layout, K, R);
  const out = new Float32Array(G * P);
  for (let g = 0; g < G; g++) {
    let at = 0;
    for (const [offset, per] of segs) {
      const spec = layout.find((t) => t.offset === offset);
      const std = Math.fround(spec.std);
      const mean = Math.fround(spec.mean);
      for (let j = 0; j < K; j++) {
        const mk = mask[g * K + j];
        const src = (g * K + j) * R + at;
        const dst = g * P + offset + j * per;
        for (let i = 0; i < per; i++) {
          const x0 = Math.fround(0 + Math.fround(prior[src + i] * mk)); // the denoiser: correction (+0) + prior * mask
          out[dst + i] = Math.fround(Math.fround(x0 * std) + mean); // generate.onnx: Mul(x0, std), Add(., mean)
        }
      }
      at += per;
    }
  }
  return out;
}
