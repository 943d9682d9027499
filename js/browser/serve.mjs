// npm run demo: serves the repository's js/ and a bundle, and prints the demo's URL.
//   node browser/serve.mjs [BUNDLE_DIR] [--port N]   (default: $TINA_EDGE_BUNDLE, the default-bundle package, the repository's)
import path from "node:path";
import { fileURLToPath } from "node:url";
import { serveStatic } from "./static.mjs";
import { defaultBundle } from "../src/node.mjs";
import { buildWorker } from "./build.mjs";

const JS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const args = process.argv.slice(2);
const pi = args.indexOf("--port");
const port = pi >= 0 ? Number(args.splice(pi, 2)[1]) : 8080;
const bundle = path.resolve(args[0] ?? defaultBundle());
await buildWorker(); // the demo runs TinaEdge.inWorker: its worker script is bundled (js/.cache/web)
const s = await serveStatic([["/js/", JS], ["/bundle/", bundle]], { port });
console.log(`tina-edge demo: ${s.url}/js/demo/index.html?bundle=/bundle/  (bundle ${bundle}; Ctrl-C stops)`);
