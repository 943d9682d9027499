// A compressing host (README, "Hosting a bundle"): browser/static.mjs with gzip sends gzip -9 bodies to
// clients that accept them, and fromBundle(url) still checks every file's sha256 on the decoded bytes.
import test from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import fs from "node:fs";
import path from "node:path";
import zlib from "node:zlib";
import { TinaEdge } from "../src/node.mjs";
import { serveStatic } from "../browser/static.mjs";
import { env } from "./helpers.mjs";

const bundle = env().bundle;
const srv = await serveStatic([["/b/", bundle]], { gzip: true });
test.after(() => srv.close());

const get = (url, headers) => new Promise((resolve, reject) => http.get(url, { headers }, (res) => {
  const parts = [];
  res.on("data", (c) => parts.push(c));
  res.on("end", () => resolve({ res, body: Buffer.concat(parts) }));
}).on("error", reject));

test("static.mjs gzip: compressed bodies only for clients that accept gzip, counted as sent", async () => {
  const file = path.join(bundle, "tokenizer.json");
  const raw = fs.readFileSync(file);
  const before = srv.counts.bytes;
  const z = await get(`${srv.url}/b/tokenizer.json`, { "accept-encoding": "gzip, br" });
  assert.equal(z.res.headers["content-encoding"], "gzip");
  assert.equal(Number(z.res.headers["content-length"]), z.body.length);
  assert.ok(z.body.length < raw.length / 2);
  assert.deepEqual(zlib.gunzipSync(z.body), raw);
  assert.equal(srv.counts.bytes - before, z.body.length);
  const plain = await get(`${srv.url}/b/tokenizer.json`, {});
  assert.equal(plain.res.headers["content-encoding"], undefined);
  assert.deepEqual(plain.body, raw);
});

test("fromBundle(url) over a gzip host: files verified on the decoded bytes, fewer bytes sent", async () => {
  const before = srv.counts.bytes;
  const tina = await TinaEdge.fromBundle(`${srv.url}/b`, { cache: false });
  const m = tina.manifest;
  const names = [m.text_encoder.model, m.portable.generate.model, m.template.model];
  const decoded = names.reduce((s, n) => s + m.files[n].bytes, 0);
  assert.ok(srv.counts.bytes - before < decoded, `${srv.counts.bytes - before} bytes sent for ${decoded} decoded`);
  const clf = await tina.personalize("cat, dog", { seed: 0n });
  assert.deepEqual(clf.labels, ["cat", "dog"]);
  await tina.dispose?.();
});

test("static.mjs isolated: COOP/COEP/CORP on every file (a cross-origin isolated page: numThreads > 1), none by default", async () => {
  const iso = await serveStatic([["/b/", bundle]], { isolated: true });
  try {
    const r = await get(`${iso.url}/b/tokenizer.json`, {});
    assert.equal(r.res.headers["cross-origin-opener-policy"], "same-origin");
    assert.equal(r.res.headers["cross-origin-embedder-policy"], "require-corp");
    assert.equal(r.res.headers["cross-origin-resource-policy"], "same-origin");
  } finally {
    iso.close();
  }
  const plain = await get(`${srv.url}/b/tokenizer.json`, {});
  assert.equal(plain.res.headers["cross-origin-opener-policy"], undefined);
  assert.equal(plain.res.headers["cross-origin-embedder-policy"], undefined);
});
