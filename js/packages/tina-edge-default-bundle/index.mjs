// The folder of this package is a tina-edge bundle (portable files only): TinaEdge.fromBundle(bundleDir).
import path from "node:path";
import { fileURLToPath } from "node:url";

export const bundleDir = path.dirname(fileURLToPath(import.meta.url));
export default bundleDir;
