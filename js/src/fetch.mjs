// Bundle files over HTTP: streamed with progress, bounded by the manifest's size, kept in a
// content-addressed cache (key: the file's sha256 from the manifest) so that a returning visit
// downloads nothing. Integrity: Bundle.file checks every file's size and sha256 before use
// (core.mjs); a download larger than the manifest says is cut off as it arrives.
import { BundleError } from "./errors.mjs";

/** The base URL as a directory URL ("https://host/b" -> "https://host/b/"). */
export function baseUrl(base) {
  const s = String(base);
  return new URL(s.endsWith("/") ? s : s + "/", globalThis.location?.href);
}

/**
 * A reader of bundle files at `base`: async (name, entry?) -> Uint8Array.
 * @param options.progress ({file, loaded, total, cached}) => void, per chunk and per file
 * @param options.cache {get(sha256) -> Uint8Array|null, put(sha256, bytes)} or null
 * @param options.fetch the fetch function (default globalThis.fetch)
 */
export function urlReader(base, { progress = null, cache = null, fetch: f = globalThis.fetch } = {}) {
  const root = baseUrl(base);
  return async (name, entry = null) => {
    const total = entry?.bytes ?? null;
    if (cache && entry?.sha256) {
      const hit = await cache.get(entry.sha256).catch(() => null);
      if (hit && hit.byteLength === total) {
        hit.cached = true; // Bundle.file: bytes this cache stored only after verifying them
        progress?.({ file: name, loaded: total, total, cached: true });
        return hit;
      }
    }
    let r;
    try {
      r = await f(new URL(name, root));
    } catch (e) {
      throw new BundleError(`cannot download bundle file ${name} from ${root} (${e.message}); check the URL and the network`);
    }
    if (!r.ok) throw new BundleError(`cannot download bundle file ${name} from ${root}: HTTP ${r.status}; check the bundle URL`);
    const bytes = await readBody(r, name, total, progress);
    if (cache && entry?.sha256) bytes.store = () => cache.put(entry.sha256, bytes).catch(() => {}); // after the check
    return bytes;
  };
}

async function readBody(r, name, total, progress) {
  if (!r.body || !r.body.getReader) {
    const b = new Uint8Array(await r.arrayBuffer());
    progress?.({ file: name, loaded: b.byteLength, total, cached: false });
    return b;
  }
  const reader = r.body.getReader();
  const chunks = [];
  let loaded = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    loaded += value.byteLength;
    if (total !== null && loaded > total) {
      await reader.cancel().catch(() => {});
      throw new BundleError(`bundle file ${name} is larger than the ${total} bytes the manifest says; re-download the bundle`);
    }
    chunks.push(value);
    progress?.({ file: name, loaded, total, cached: false });
  }
  const out = new Uint8Array(loaded);
  let o = 0;
  for (const c of chunks) { out.set(c, o); o += c.byteLength; }
  return out;
}

/** The browser's persistent cache: the Cache API (one entry per file sha256), when it exists. */
export function browserCache(name = "tina-edge-v1") {
  if (typeof caches === "undefined") return null;
  const key = (sha) => new Request(new URL(`/.tina-edge-cache/${sha}`, globalThis.location?.origin ?? "https://tina-edge.invalid").href);
  return {
    async get(sha) {
      const c = await caches.open(name);
      const r = await c.match(key(sha));
      return r ? new Uint8Array(await r.arrayBuffer()) : null;
    },
    async put(sha, bytes) {
      const c = await caches.open(name);
      await c.put(key(sha), new Response(bytes, { headers: { "content-type": "application/octet-stream" } }));
    },
    async clear() { await caches.delete(name); },
  };
}
