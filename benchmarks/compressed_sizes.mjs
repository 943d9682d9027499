// Raw, gzip -9 and brotli (quality 11, 16 MB window) bytes of files, as a compressing host would send
// them (benchmarks/notes/bundle-size.md):   node benchmarks/compressed_sizes.mjs FILE...
// Brotli 11 is slow (minutes for the 26 MB text encoder on a loaded core): precompress once, at deploy time.
import fs from "node:fs";
import zlib from "node:zlib";

const out = {};
for (const f of process.argv.slice(2)) {
  const b = fs.readFileSync(f);
  const br = zlib.brotliCompressSync(b, { params: { [zlib.constants.BROTLI_PARAM_QUALITY]: 11,
    [zlib.constants.BROTLI_PARAM_LGWIN]: 24, [zlib.constants.BROTLI_PARAM_SIZE_HINT]: b.length } });
  out[f] = { raw: b.length, gzip9: zlib.gzipSync(b, { level: 9 }).length, brotli11: br.length };
}
console.log(JSON.stringify(out, null, 1));
