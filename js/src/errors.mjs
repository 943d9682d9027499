/** Every error this package raises on purpose: the message says what to do. */
export class TinaEdgeError extends Error {
  constructor(message) {
    super(message);
    this.name = "TinaEdgeError";
  }
}
