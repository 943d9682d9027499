// Where the browser tests find Chromium: $CHROMIUM, else a system install. When there is none,
// say how to get one and return null: the caller skips (the node tests cover the same code on wasm).
import fs from "node:fs";

const CANDIDATES = ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome", "/usr/bin/google-chrome-stable",
  "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome", "/Applications/Chromium.app/Contents/MacOS/Chromium"];

export function findChromium({ quiet = false } = {}) {
  const p = process.env.CHROMIUM ?? CANDIDATES.find((c) => fs.existsSync(c));
  if (p && fs.existsSync(p)) return p;
  if (!quiet) {
    console.error(`SKIPPED: no Chromium found${process.env.CHROMIUM ? ` at CHROMIUM=${process.env.CHROMIUM}` : ""}. Get one with ` +
      "`apt-get install -y chromium` (Debian/Ubuntu), `brew install --cask chromium` (macOS), or " +
      "`npx @puppeteer/browsers install chrome-headless-shell@stable`, then set CHROMIUM=/path/to/the/binary.");
  }
  return null;
}
