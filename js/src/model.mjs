// A standalone personalized model.onnx (written by Python or JS) run directly: labels and the photo
// policy come from its metadata_props, the input size from its graph; no bundle needed. The twin
// of Python's PersonalizedClassifier.load for standalone models (head-only forms need the trunk: not here).
import { readModelMetadata, checkMinProb, UNKNOWN, decodeModel } from "./classifier.mjs";
import { prepareImage, preprocessSpec } from "./preprocess.mjs";
import { parseExact } from "./manifest.mjs";
import { ModelFileError, ImageError, ArgumentError } from "./errors.mjs";
import { IMAGE, LOGITS, PROBABILITIES } from "./contracts.mjs";

export class PersonalizedModel {
  constructor(ort, session, meta, [H, W]) {
    Object.assign(this, { ort, session, meta, inputSize: [H, W] });
    this.labels = meta.labelsList;
    this.preprocess = meta.preprocessSpec;
  }

  /** model.onnx bytes -> a model ready to predict (ModelFileError when it is not a tina-edge model). */
  static async load(ort, bytes, where = "model.onnx") {
    let meta, model;
    try {
      model = decodeModel(bytes);
      meta = readModelMetadata(bytes);
    } catch {
      throw new ModelFileError(`${where} is not an ONNX model; pass a model.onnx written by tina-edge personalize`);
    }
    if (meta.form === "head") throw new ModelFileError(`${where} is a head-only model; JS runs standalone models (tina-edge personalize without --head-only)`);
    let labels;
    try { labels = JSON.parse(meta.labels); } catch { labels = null; }
    if (!Array.isArray(labels) || labels.length < 2 || !labels.every((l) => typeof l === "string")) {
      throw new ModelFileError(`${where} has no valid 'labels' metadata; pass a model.onnx written by tina-edge personalize`);
    }
    let pre = null;
    if (meta.preprocess) {
      try {
        pre = preprocessSpec(parseExact(meta.preprocess, "the 'preprocess' metadata", ArgumentError));
      } catch (e) { // Python's model_meta.check_preprocess
        throw new ModelFileError(`${where}: its 'preprocess' metadata is invalid (${e.message}); re-create the model ` +
          "with `tina-edge personalize`");
      }
    }
    const dims = model.graph.input.find((i) => i.name === IMAGE)?.type?.tensor_type?.shape?.dim ?? [];
    const [H, W] = [Number(dims[1]?.dim_value ?? 0), Number(dims[2]?.dim_value ?? 0)];
    if (!(H > 0 && W > 0)) throw new ModelFileError(`${where}: input 'image' must be [N, H, W, 3] with fixed H and W`);
    let session;
    try {
      session = await ort.InferenceSession.create(bytes);
    } catch (e) {
      throw new ModelFileError(`onnxruntime cannot load ${where}: ${String(e.message).slice(0, 200)}`);
    }
    return new PersonalizedModel(ort, session, { ...meta, labelsList: labels, preprocessSpec: pre }, [H, W]);
  }

  /** Classify decoded images ({data, width, height}); the same answers as PersonalizedClassifier.predict. */
  async predict(images, { minProb = null } = {}) {
    minProb = checkMinProb(minProb);
    const list = (Array.isArray(images) ? images : [images]).map((im, n) => {
      try {
        return this.preprocess ? prepareImage(im, this.preprocess) : im;
      } catch (e) {
        throw new ImageError(`image ${n}: ${e.message}`);
      }
    });
    const [H, W] = this.inputSize;
    const x = new Uint8Array(list.length * H * W * 3);
    list.forEach((im, n) => {
      const c = im.data.length / (im.width * im.height);
      if (im.width !== W || im.height !== H || (c !== 3 && c !== 4)) throw new ImageError(`image ${n} must be RGB or RGBA at ${W} x ${H}`);
      for (let i = 0; i < W * H; i++) for (let j = 0; j < 3; j++) x[(n * H * W + i) * 3 + j] = im.data[i * c + j];
    });
    const res = await this.session.run({ [IMAGE]: new this.ort.Tensor("uint8", x, [list.length, H, W, 3]) });
    const k = this.labels.length;
    return list.map((_, n) => {
      const pr = res[PROBABILITIES].data.slice(n * k, (n + 1) * k);
      let best = 0;
      for (let j = 1; j < k; j++) if (pr[j] > pr[best]) best = j;
      if (minProb !== null && pr[best] < Math.fround(minProb)) best = -1;
      return { label: best < 0 ? UNKNOWN : this.labels[best], index: best, probabilities: pr,
        logits: res[LOGITS] ? res[LOGITS].data.slice(n * k, (n + 1) * k) : null };
    });
  }

  dispose() { this.session?.release?.(); this.session = null; }
}
