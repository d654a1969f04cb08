// Bundles the console into dist/ (committed: the daemon embeds dist/ in its binary with include_bytes!, so a
// Rust build needs no Node). `node build.mjs --check` builds into a temporary directory and fails when dist/
// differs from what the sources give (CI runs it: the committed bundle is always the sources').
import { build } from "esbuild";
import { copyFileSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const check = process.argv.includes("--check");
const out = check ? mkdtempSync(join(tmpdir(), "console-dist-")) : join(here, "dist");

await build({
  entryPoints: { console: join(here, "src/main.ts"), "console-style": join(here, "src/console.css") },
  outdir: out,
  bundle: true,
  minify: true,
  format: "esm",
  target: ["es2022", "chrome110", "firefox110", "safari16"],
  platform: "browser",
  charset: "utf8",
  legalComments: "eof",
  alias: { sandpit: resolve(here, "../sdk/typescript/src/index.ts") },
  logLevel: "warning",
});
// One stylesheet name for the page.
copyFileSync(join(out, "console-style.css"), join(out, "console.css"));
rmSync(join(out, "console-style.css"));
copyFileSync(join(here, "src/index.html"), join(out, "index.html"));

if (check) {
  const dist = join(here, "dist");
  const names = (d) => readdirSync(d).sort();
  const stale = [];
  for (const n of new Set([...names(out), ...names(dist)])) {
    let a, b;
    try { a = readFileSync(join(out, n)); } catch { a = null; }
    try { b = readFileSync(join(dist, n)); } catch { b = null; }
    if (!a || !b || !a.equals(b)) stale.push(n);
  }
  rmSync(out, { recursive: true, force: true });
  if (stale.length) {
    console.error(`console/dist is not what the sources build (${stale.join(", ")}): run \`npm run build\` in console/ and commit dist/`);
    process.exit(1);
  }
  console.log("console/dist matches the sources");
}
