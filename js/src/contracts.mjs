// Graph value names, the twin of tina_edge/runtime/contracts.py (declared once there; js/test/
// conformance.test.mjs checks these against the contracts Python writes into the vectors).
export const INPUT_IDS = "input_ids";
export const ATTENTION_MASK = "attention_mask";
export const EMBEDDINGS = "embeddings";
export const CLASS_EMB = "class_emb";
export const CLASS_MASK = "class_mask";
export const NOISE = "noise";
export const X0 = "x0";
export const PARAMS = "params";
export const PRIOR = "prior";
export const IMAGE = "image";
export const FEATURES = "features";
export const LOGITS = "logits";
export const PROBABILITIES = "probabilities";

// role -> [inputs, outputs] of the graphs the JS package runs (text encoder, prior.onnx, generate.onnx, the template)
export const CONTRACTS = {
  text_encoder: [[INPUT_IDS, ATTENTION_MASK], [EMBEDDINGS]],
  generate: [[CLASS_EMB, CLASS_MASK, NOISE], [X0, PARAMS]],
  // bundles whose manifest names a prior graph (portable.prior): the text prior runs once, generate.onnx reads its rows
  prior: [[CLASS_EMB], [PRIOR]],
  generate_on_prior: [[CLASS_EMB, CLASS_MASK, NOISE, PRIOR], [X0, PARAMS]],
  template: [[IMAGE], [LOGITS, PROBABILITIES]],
};
