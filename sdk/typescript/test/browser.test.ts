/**
 * The SDK in a browser: a page served on localhost loads the built ESM (`dist/`) in plain headless Chromium
 * (driven by playwright-core, web security on) and creates a sandbox and runs commands with it against the
 * real daemon, which answers CORS for the page's origin (`--cors-origin`). WebSockets authenticate with the
 * `access_token` query parameter, since browsers cannot set headers on them.
 */
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { extname, join, normalize, resolve } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { chromium, type Browser } from "playwright-core";
import { Sandbox } from "sandpit";
import { type Daemon, freePort, skipUnlessCi, startDaemon } from "./helpers.js";

const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
];
const PKG = resolve(fileURLToPath(new URL("../../", import.meta.url)));

const PAGE = `<!doctype html><html><head><meta charset="utf-8"><title>sandpit browser test</title></head><body>
<pre id="log"></pre>
<script type="module">
  import * as sdk from "/dist/index.js";
  window.sdkLoaded = true;
  window.runSdk = async (url, apiKey) => {
    const { Sandbox } = sdk;
    const sandbox = await Sandbox.create({ url, apiKey });
    try {
      const out = {};
      const r = await sandbox.commands.run("echo hello from $0; exit 3");
      out.run = { stdout: r.stdout, exitCode: r.exitCode };
      const chunks = [];
      const s = await sandbox.commands.run("for i in 1 2 3; do echo $i; sleep 0.05; done", { onStdout: (d) => chunks.push(d) });
      out.streamed = { chunks: chunks.join(""), exitCode: s.exitCode };
      const e = await sandbox.exec("python3", ["-c", "print(6 * 7)"]);
      out.exec = e.stdout();
      const session = await sandbox.commands.spawn("cat");
      session.stdin.write("via websocket\\n");
      session.stdin.close();
      out.spawn = (await session.wait()).stdout;
      out.isNode = typeof globalThis.process !== "undefined";
      return out;
    } finally {
      await sandbox.kill();
    }
  };
  // A page that holds only one sandbox's access token (its back end created the sandbox with a key).
  window.runWithToken = async (url, id, token, downloadUrl, dir) => {
    const { Sandbox, PermissionDeniedError } = sdk;
    const sandbox = await Sandbox.connect(id, { url, apiKey: token });
    const out = {};
    out.run = (await sandbox.commands.run("echo token-only")).stdout;
    const session = await sandbox.commands.spawn("cat");
    session.stdin.write("typed in a page\\n");
    session.stdin.close();
    out.spawn = (await session.wait()).stdout;
    await sandbox.files.write(dir + "/from-page.txt", "written by the page");
    out.readBack = await sandbox.files.read(dir + "/from-page.txt");
    out.download = await (await fetch(downloadUrl)).text();
    const refused = async (p) => {
      try {
        await p;
        return "allowed";
      } catch (e) {
        return e instanceof PermissionDeniedError ? "permission_denied" : String(e);
      }
    };
    out.list = await refused(Sandbox.list({ url, apiKey: token }));
    out.kill = await refused(sandbox.kill());
    out.create = await refused(Sandbox.create({ url, apiKey: token }));
    return out;
  };
</script></body></html>`;

let daemon: Daemon;
let server: Server;
let pageUrl = "";
let browser: Browser | undefined;

const TYPES: Record<string, string> = { ".js": "text/javascript", ".map": "application/json", ".html": "text/html" };

before(async () => {
  server = createServer((req, res) => {
    const path = new URL(req.url ?? "/", "http://x").pathname;
    if (path === "/" || path === "/index.html") {
      res.writeHead(200, { "content-type": "text/html" });
      return res.end(PAGE);
    }
    const file = normalize(join(PKG, path));
    if (!file.startsWith(join(PKG, "dist")) || !existsSync(file)) {
      res.writeHead(404);
      return res.end();
    }
    res.writeHead(200, { "content-type": TYPES[extname(file)] ?? "application/octet-stream" });
    res.end(readFileSync(file));
  });
  const port = await freePort();
  await new Promise<void>((r) => server.listen(port, "127.0.0.1", r));
  pageUrl = `http://127.0.0.1:${port}/`;
  // The daemon allows exactly the page's origin, as a user would configure it.
  daemon = await startDaemon(["--cors-origin", new URL(pageUrl).origin]);
});

after(async () => {
  await browser?.close().catch(() => undefined);
  server?.close();
  await daemon?.stop();
});

test("browser: a localhost page creates a sandbox and runs, streams and spawns commands", async (t) => {
  if (!existsSync(CHROMIUM)) return skipUnlessCi(t, `no Chromium at ${CHROMIUM} (test.sh installs Debian's chromium)`);
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS, headless: true });
  const page = await browser.newPage();
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(pageUrl);
  await page.waitForFunction(() => (window as unknown as { sdkLoaded?: boolean }).sdkLoaded === true, null, { timeout: 10_000 });
  const out = (await page.evaluate(
    ([url, key]) => (window as unknown as { runSdk: (u: string, k: string) => Promise<unknown> }).runSdk(url, key),
    [daemon.url, daemon.apiKey] as [string, string],
  )) as Record<string, unknown>;
  assert.deepEqual(errors, []);
  assert.deepEqual(out.run, { stdout: "hello from /bin/sh\n", exitCode: 3 });
  assert.deepEqual(out.streamed, { chunks: "1\n2\n3\n", exitCode: 0 });
  assert.equal(out.exec, "42\n");
  assert.equal(out.spawn, "via websocket\n", "spawn over the browser's own WebSocket");
  assert.equal(out.isNode, false);
});

test("browser: a page holding only a sandbox's access token uses that sandbox and nothing else", async (t) => {
  if (!existsSync(CHROMIUM)) return skipUnlessCi(t, `no Chromium at ${CHROMIUM} (test.sh installs Debian's chromium)`);
  // The back end: creates the sandbox with its key, prepares a file and a signed download URL, and hands
  // the page the sandbox id, its access token and that URL — never the key.
  const sandbox = await Sandbox.create({ url: daemon.url, apiKey: daemon.apiKey });
  // The process backend's files are the host's: keep them in a temporary directory.
  const dir = mkdtempSync(join(tmpdir(), "sandpit-ts-browser-"));
  try {
    const token = sandbox.accessToken;
    assert.ok(token?.startsWith(`spa_${sandbox.sandboxId}_`), String(token));
    await sandbox.files.write(`${dir}/report.txt`, "made by the back end");
    const downloadUrl = await sandbox.files.downloadUrl(`${dir}/report.txt`);
    browser ??= await chromium.launch({ executablePath: CHROMIUM, args: ARGS, headless: true });
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(pageUrl);
    await page.waitForFunction(() => (window as unknown as { sdkLoaded?: boolean }).sdkLoaded === true, null, {
      timeout: 10_000,
    });
    const out = (await page.evaluate(
      ([url, id, tok, dl, d]) =>
        (
          window as unknown as {
            runWithToken: (u: string, i: string, t: string, dl: string, d: string) => Promise<unknown>;
          }
        ).runWithToken(url, id, tok, dl, d),
      [daemon.url, sandbox.sandboxId, token ?? "", downloadUrl, dir] as [string, string, string, string, string],
    )) as Record<string, unknown>;
    assert.deepEqual(errors, []);
    assert.deepEqual(out, {
      run: "token-only\n",
      spawn: "typed in a page\n",
      readBack: "written by the page",
      download: "made by the back end",
      list: "permission_denied",
      kill: "permission_denied",
      create: "permission_denied",
    });
    // The sandbox is still there: the page could not delete it.
    assert.equal((await sandbox.getInfo()).state, "running");
  } finally {
    await sandbox.kill();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("browser: another origin is refused by CORS", async () => {
  const r = await fetch(`${daemon.url}/v1/sandboxes`, {
    method: "OPTIONS",
    headers: { Origin: "http://evil.invalid", "Access-Control-Request-Method": "POST" },
  });
  assert.equal(r.headers.get("access-control-allow-origin"), null);
});
