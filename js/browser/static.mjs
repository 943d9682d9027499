// A small static file server (node:http only) for the demo, the browser test and the URL-loading
// tests: routes map URL prefixes to directories; files are served with a content type, a length,
// cache headers and ETags, as a real host serves a bundle (see README, "Hosting a bundle").
import http from "node:http";
import fs from "node:fs";
import path from "node:path";
import zlib from "node:zlib";

const TYPES = { ".html": "text/html; charset=utf-8", ".mjs": "text/javascript", ".js": "text/javascript", ".css": "text/css",
  ".json": "application/json", ".wasm": "application/wasm", ".onnx": "application/octet-stream", ".png": "image/png" };

/**
 * Start a server on 127.0.0.1 (port 0: any free one). routes: [[prefix, dir], ...], longest prefix first.
 * gzip: serve gzip -9 bodies (Content-Encoding) to clients that accept them, as a host should (README,
 * "Hosting a bundle"); counts.bytes then counts the compressed bytes sent. isolated: send the headers that make
 * a page cross-origin isolated (COOP same-origin, COEP require-corp), which onnxruntime-web needs for numThreads > 1.
 */
export async function serveStatic(routes, { port = 0, log = null, gzip = false, isolated = false } = {}) {
  const sorted = [...routes].sort((a, b) => b[0].length - a[0].length);
  const counts = { requests: 0, bytes: 0 };
  const gzipped = new Map(); // file + etag -> compressed bytes, made once
  const server = http.createServer((req, res) => {
    counts.requests++;
    const url = new URL(req.url, "http://x");
    const route = sorted.find(([p]) => url.pathname.startsWith(p));
    const rel = route ? decodeURIComponent(url.pathname.slice(route[0].length)) : null;
    const file = route ? path.resolve(route[1], "." + path.posix.normalize("/" + rel)) : null;
    let st = null;
    try { st = file && fs.statSync(file); } catch { /* 404 below */ }
    if (!st || !st.isFile() || !file.startsWith(path.resolve(route[1]))) {
      res.writeHead(404, { "content-type": "text/plain" });
      return res.end("not found\n");
    }
    const etag = `"${st.size}-${Math.floor(st.mtimeMs)}"`;
    if (req.headers["if-none-match"] === etag) { res.writeHead(304); return res.end(); }
    const headers = { "content-type": TYPES[path.extname(file)] ?? "application/octet-stream", "content-length": st.size,
      "cache-control": "public, max-age=3600", etag, "access-control-allow-origin": "*",
      ...(isolated ? { "cross-origin-opener-policy": "same-origin", "cross-origin-embedder-policy": "require-corp",
        "cross-origin-resource-policy": "same-origin" } : {}) };
    if (gzip && /\bgzip\b/.test(req.headers["accept-encoding"] ?? "")) {
      const key = `${file}\n${etag}`;
      if (!gzipped.has(key)) gzipped.set(key, zlib.gzipSync(fs.readFileSync(file), { level: 9 }));
      const body = gzipped.get(key);
      res.writeHead(200, { ...headers, "content-length": body.length, "content-encoding": "gzip", vary: "accept-encoding" });
      counts.bytes += body.length;
      log?.(`${req.method} ${url.pathname} ${body.length} (gzip, ${st.size})`);
      return res.end(req.method === "HEAD" ? undefined : body);
    }
    res.writeHead(200, headers);
    counts.bytes += st.size;
    log?.(`${req.method} ${url.pathname} ${st.size}`);
    if (req.method === "HEAD") return res.end();
    fs.createReadStream(file).pipe(res);
  });
  await new Promise((r) => server.listen(port, "127.0.0.1", r));
  return { server, counts, url: `http://127.0.0.1:${server.address().port}`, close: () => new Promise((r) => server.close(r)) };
}
