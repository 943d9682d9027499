// What both entry points (index.mjs: browser, node.mjs: node) export besides TinaEdge itself.
export { Bundle, sliceClasses, checkSeed, VERSION } from "./core.mjs";
export * from "./errors.mjs";
export { PersonalizedClassifier, readModelMetadata, fillTemplate, HEAD_FORMAT, UNKNOWN } from "./classifier.mjs";
export { portableNormal, standardNormal64, splitmix64Word } from "./noise.mjs";
export { parseClasses, classesFromLines, descriptionTexts, classKey, skeleton } from "./prompt.mjs";
export { prepareImage, toRgbOnWhite, preprocessSpec } from "./preprocess.mjs";
export { computeBundleId, parseManifest } from "./manifest.mjs";
export { noveltyLines, readNpy } from "./novelty.mjs";
export { PersonalizedModel } from "./model.mjs";
