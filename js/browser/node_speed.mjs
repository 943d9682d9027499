// Node timings of the JS package (onnxruntime-node): session creation, warm personalize of K_max
// classes, predict one image. Prints JSON. Used by benchmarks/portable_speed.py.
//   node js/browser/node_speed.mjs BUNDLE_DIR [REPEATS]
import { TinaEdge } from "../src/node.mjs";

const [dir, repeats = "7", kArg] = process.argv.slice(2);
const median = (xs) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const t0 = performance.now();
const tina = await TinaEdge.fromBundle(dir, { sessionOptions: { intraOpNumThreads: 1 } });
const createMs = performance.now() - t0;
const m = tina.manifest;
const voc = m.training?.vocabulary ?? [];
const names = Array.from({ length: kArg ? Number(kArg) : m.denoiser.k_max }, (_, i) => voc[i] ?? `class number ${i}`);
const runs = [];
const fresh = [];
let clf;
for (let i = 0; i <= Number(repeats); i++) {
  let a = performance.now();
  clf = await tina.personalize(names.join(", "), { seed: i }); // names' embeddings cached after the first call
  if (i > 0) runs.push(performance.now() - a); // the first call warms up
  tina.clearCache();
  a = performance.now();
  await tina.personalize(names.join(", "), { seed: i }); // every name through the text encoder
  if (i > 0) fresh.push(performance.now() - a);
}
const [H, W] = tina.inputSize;
const img = { data: new Uint8Array(H * W * 3).fill(127), width: W, height: H };
const pr = [];
for (let i = 0; i <= 20; i++) {
  const a = performance.now();
  await clf.predict([img]);
  if (i > 0) pr.push(performance.now() - a);
}
console.log(JSON.stringify({ runtime: "onnxruntime-node (JS package)", session_creation_ms: createMs, k: names.length,
  warm_personalize_ms: median(runs), warm_personalize_uncached_ms: median(fresh), predict_one_ms: median(pr) }));
