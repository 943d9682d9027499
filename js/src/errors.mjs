// One error hierarchy, the twin of tina_edge/runtime/errors.py: every error this package raises on
// purpose is a TinaEdgeError subclass named for what it is; the message says what to do.
export class TinaEdgeError extends Error {
  constructor(message) {
    super(message);
  }
}
/** The class prompt (names, descriptions) is unusable; `rule`: which prompt rule refused it (Python's `e.rule`:
 * "empty", "stray-comma", "invisible", "bidi", "zero-width", "mixed-script", "duplicate", "confusable", ...). */
export class PromptError extends TinaEdgeError {
  constructor(message, rule) {
    super(message);
    if (rule !== undefined) this.rule = rule;
  }
}
/** The bundle (manifest, files, hashes, download) is unusable. */
export class BundleError extends TinaEdgeError {}
/** An image cannot be read or classified. */
export class ImageError extends TinaEdgeError {}
/** An argument or option is out of range. */
export class ArgumentError extends TinaEdgeError {}
/** A model or head file cannot be read or written. */
export class ModelFileError extends TinaEdgeError {}
/** The runtime asked for (e.g. executionProviders: ["webgpu"]) is not supported. */
export class BackendError extends TinaEdgeError {}

// names that survive minifiers (esbuild renames classes) and cross a Worker boundary by name
for (const [name, C] of Object.entries({ TinaEdgeError, PromptError, BundleError, ImageError, ArgumentError, ModelFileError, BackendError })) {
  Object.defineProperty(C.prototype, "name", { value: name, writable: true, configurable: true });
}
