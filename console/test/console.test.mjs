// The web console in headless Chromium (playwright-core driving Debian's chromium) against a real daemon
// (`sandpit serve` on a free port, fresh state dir; the `isolate` backend as root — what CI runs, sandboxes
// as users get them — else the `process` backend, whose sandboxes are the host: its files tab shows the
// host's home). One test walks what a user does —
// sign in, create a sandbox, use its terminal, files, processes, charts and events, add a webhook, delete
// the sandbox — and the others cover a sandbox-token link, a refused key, an unreachable daemon and a
// phone-sized window. Screenshots of each page go to console/test-artifacts/.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const HERE = dirname(fileURLToPath(import.meta.url));
const REPO = resolve(HERE, "../..");
const BIN = process.env.SANDPIT_BIN || join(REPO, "target/debug/sandpit");
const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";
const SHOTS = join(HERE, "../test-artifacts");
const BACKEND = process.getuid?.() === 0 ? "isolate" : "process";
const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"];

let daemon;
let browser;

function freePort() {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.once("error", rej);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => res(port));
    });
  });
}

async function startDaemon() {
  if (!existsSync(BIN)) throw new Error(`no sandpit binary at ${BIN}: cargo build -p sandpit-cli, or set SANDPIT_BIN`);
  const dir = mkdtempSync(join(tmpdir(), "sandpit-console-"));
  const port = await freePort();
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("SANDPIT_")));
  let log = "";
  const child = spawn(BIN, ["serve", "--backend", BACKEND, "--metrics-interval-ms", "300", "--webhook-backoff-ms", "50", "--listen", `127.0.0.1:${port}`, "--state-dir", join(dir, "state")], { env, stdio: ["ignore", "pipe", "pipe"] });
  child.stdout.on("data", (d) => (log = (log + d).slice(-20000)));
  child.stderr.on("data", (d) => (log = (log + d).slice(-20000)));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`sandpit serve exited with ${child.exitCode}:\n${log}`);
    try {
      if ((await fetch(`${url}/health`)).ok) break;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) throw new Error(`sandpit serve did not answer /health within 30 s:\n${log}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const apiKey = readFileSync(join(dir, "state", "api-key"), "utf8").trim();
  const api = async (method, path, body) => {
    const r = await fetch(`${url}${path}`, { method, headers: { Authorization: `Bearer ${apiKey}`, ...(body ? { "content-type": "application/json" } : {}) }, body: body ? JSON.stringify(body) : undefined });
    const text = await r.text();
    return { status: r.status, json: text ? JSON.parse(text) : null };
  };
  return {
    url,
    apiKey,
    api,
    log: () => log,
    async stop() {
      // Sandboxes outlive the daemon by design: delete them first.
      try {
        const { json } = await api("GET", "/v1/sandboxes");
        await Promise.all(json.sandboxes.map((s) => api("DELETE", `/v1/sandboxes/${s.id}`)));
      } catch {
        // already gone
      }
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      const t = setTimeout(() => child.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(t);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Polls `fn` until it returns a truthy value; fails after `ms` naming `what`. */
async function eventually(fn, what, ms = 15_000) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}${last ? `: ${last}` : ""}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A page that records its errors; `errors()` is checked at the end of each test. */
async function newPage(viewport = { width: 1280, height: 800 }) {
  const context = await browser.newContext({ viewport, acceptDownloads: true });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(`page error: ${e}`));
  page.on("dialog", (d) => void d.accept(d.type() === "prompt" ? d.defaultValue() : undefined));
  return { page, context, errors };
}

async function shot(page, name) {
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: join(SHOTS, `${name}.png`) });
}

async function signIn(page, key) {
  await page.goto(`${daemon.url}/`);
  assert.match(page.url(), /\/console/, "/ redirects to the console");
  await page.locator("#key").waitFor();
  // Keyboard only: the key field has the focus.
  await page.keyboard.type(key);
  await page.keyboard.press("Enter");
}

const terminalText = (page) => page.locator("#terminal .xterm-rows").innerText();

async function typeInTerminal(page, text) {
  await page.locator("#terminal .xterm-screen").click();
  await page.keyboard.type(text);
}

before(async () => {
  daemon = await startDaemon();
  if (existsSync(CHROMIUM)) browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS, headless: true });
});

after(async () => {
  await browser?.close().catch(() => undefined);
  await daemon?.stop();
});

function needChromium(t) {
  if (browser) return true;
  if (process.env.CI) throw new Error(`no Chromium at ${CHROMIUM} under CI (test.sh installs Debian's chromium)`);
  t.skip(`no Chromium at ${CHROMIUM}`);
  return false;
}

test("console: sign in, create a sandbox, terminal, files, processes, charts, events, webhooks, delete", async (t) => {
  if (!needChromium(t)) return;
  const { page, context, errors } = await newPage();
  await signIn(page, daemon.apiKey);
  await page.locator("#sandboxes").waitFor();
  await shot(page, "sandboxes-empty");

  // Create.
  await page.locator("#create summary").click();
  await page.locator("#new-timeout").fill("900");
  await page.getByRole("button", { name: "Create" }).click();
  // The first create of a new state directory waits for the `base` template's one-time build.
  await page.waitForURL(/#\/sandboxes\/[^/]+\/?$/, { timeout: 120_000 });
  const id = decodeURIComponent(new URL(page.url()).hash.split("/")[2]);
  assert.equal((await daemon.api("GET", `/v1/sandboxes/${id}`)).json.state, "running");
  await page.locator("#summary[data-state=running]").waitFor();

  // Terminal: type, see, resize, reconnect, reload.
  await page.getByRole("tab", { name: "Terminal" }).click();
  await page.locator("#terminal[data-state=connected]").waitFor();
  await typeInTerminal(page, "echo console-ok\n");
  await eventually(async () => ((await terminalText(page)).match(/console-ok/g) ?? []).length >= 2, "console-ok echoed and printed in the terminal");
  await shot(page, "terminal");
  const before = await page.locator("#terminal").getAttribute("data-cols");
  await page.setViewportSize({ width: 900, height: 640 });
  await eventually(async () => (await page.locator("#terminal").getAttribute("data-cols")) !== before, "the terminal to fit the smaller window");
  const cols = await page.locator("#terminal").getAttribute("data-cols");
  const rows = await page.locator("#terminal").getAttribute("data-rows");
  await typeInTerminal(page, "stty size\n");
  await eventually(async () => (await terminalText(page)).includes(`${rows} ${cols}`), `stty size to say ${rows} ${cols}`);
  await page.setViewportSize({ width: 1280, height: 800 });
  const pid = await page.locator("#terminal").getAttribute("data-pid");
  await page.locator("#terminal-reconnect").click();
  await page.locator("#terminal[data-state=connected]").waitFor();
  await typeInTerminal(page, "echo again-ok\n");
  await eventually(async () => ((await terminalText(page)).match(/again-ok/g) ?? []).length >= 2, "the terminal to work after a reconnect");
  await page.reload();
  await page.locator("#terminal[data-state=connected]").waitFor();
  assert.equal(await page.locator("#terminal").getAttribute("data-pid"), pid, "a reload re-attaches to the same shell");
  await eventually(async () => (await terminalText(page)).includes("again-ok"), "the shell's earlier output replayed after the reload");

  // Files: drop a file, find it in the list and with `ls`, download it, delete it.
  await page.getByRole("tab", { name: "Files" }).click();
  await page.locator("#files-status").filter({ hasText: /entr/ }).waitFor();
  await page.evaluate(() => {
    const dt = new DataTransfer();
    dt.items.add(new File(["from the console\n"], "dropped.txt", { type: "text/plain" }));
    document.querySelector("#files-drop").dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }));
  });
  await page.locator('#files tr[data-name="dropped.txt"]').waitFor();
  const ls = await daemon.api("POST", `/v1/sandboxes/${id}/exec`, { cmd: "ls; cat dropped.txt" });
  assert.match(ls.json.stdout, /dropped\.txt/);
  assert.match(ls.json.stdout, /from the console/);
  await shot(page, "files");
  const [download] = await Promise.all([page.waitForEvent("download"), page.getByRole("button", { name: "Download dropped.txt" }).click()]);
  assert.equal(readFileSync(await download.path(), "utf8"), "from the console\n");
  await page.getByRole("button", { name: "Delete dropped.txt" }).click();
  await page.locator('#files tr[data-name="dropped.txt"]').waitFor({ state: "detached" });
  assert.doesNotMatch((await daemon.api("POST", `/v1/sandboxes/${id}/exec`, { cmd: "ls" })).json.stdout, /dropped\.txt/);

  // Processes: start one, watch its output arrive while it runs.
  await page.getByRole("tab", { name: "Processes" }).click();
  await page.locator("#run-cmd").fill("for i in 1 2 3 4 5 6; do echo tick-$i; sleep 0.5; done");
  await page.getByRole("button", { name: "Run in background" }).click();
  await page.waitForURL(/\/processes\/[^/]+$/);
  const partial = await eventually(async () => {
    const text = await page.locator("#process-output").innerText();
    return text.includes("tick-1") ? text : null;
  }, "the first line of output");
  assert.ok(!partial.includes("tick-6"), `output arrives live, not at the end (saw ${JSON.stringify(partial)})`);
  await shot(page, "processes");
  await page.locator("#process-output[data-done=true]").waitFor({ timeout: 15_000 });
  assert.match(await page.locator("#process-output").innerText(), /tick-1\ntick-2\ntick-3\ntick-4\ntick-5\ntick-6/);
  await page.reload();
  await page.locator("#process-output[data-done=true]").waitFor();
  assert.match(await page.locator("#process-output").innerText(), /tick-1\n[^]*tick-6/, "a reload replays the output from seq 1");

  // Metrics: charts with points; a busy loop shows in the cpu chart.
  await daemon.api("POST", `/v1/sandboxes/${id}/processes`, { cmd: "timeout 8 sh -c 'while :; do :; done'" });
  await page.getByRole("tab", { name: "Metrics" }).click();
  await eventually(async () => Number(await page.locator("#chart-cpu").getAttribute("data-points")) >= 3, "three cpu samples in the chart");
  await eventually(async () => Number(await page.locator("#chart-cpu").getAttribute("data-last")) >= 50, "the busy loop's cpu (≥ 50 % of one cpu) in the chart", 20_000);
  assert.ok((await page.locator("#chart-cpu circle").count()) >= 3);
  assert.ok((await page.locator("#chart-mem circle").count()) >= 3);
  await shot(page, "metrics");

  // Events: the sandbox's, then the daemon-wide page.
  await page.getByRole("tab", { name: "Events" }).click();
  await page.locator('#panel-events tr[data-type="sandbox.created"]').waitFor();
  await page.getByRole("link", { name: "Events", exact: true }).click();
  await page.locator(`table.events tr[data-type="sandbox.created"] a:text("${id}")`).waitFor();

  // Webhooks: add one aimed at a receiver on loopback; deliveries show up as the sandbox changes.
  const received = [];
  const receiver = createServer((req, res) => {
    req.resume();
    received.push(req.headers["sandpit-event"]);
    res.end();
  });
  const rport = await freePort();
  await new Promise((r) => receiver.listen(rport, "127.0.0.1", r));
  t.after(() => receiver.close());
  await page.getByRole("link", { name: "Webhooks", exact: true }).click();
  await page.locator("#webhook-url").fill(`http://127.0.0.1:${rport}/hook`);
  await page.locator("#webhook-secret").fill("console-secret");
  await page.getByRole("button", { name: "Add webhook" }).click();
  const hook = page.locator("#webhooks tbody tr[data-id]");
  await hook.waitFor();
  await daemon.api("POST", `/v1/sandboxes/${id}/pause`);
  await eventually(() => received.includes("sandbox.paused"), "the paused event at the receiver");
  await page.getByRole("button", { name: /^Deliveries of/ }).click();
  await page.locator('#deliveries tr[data-outcome="delivered"]').waitFor();
  await shot(page, "webhooks");
  await page.getByRole("link", { name: "Events", exact: true }).click();
  await page.locator('table.events tr[data-type="sandbox.paused"]').first().waitFor();
  await shot(page, "events");

  // The list: resume from the row, see live usage, then delete from the sandbox's page.
  await page.getByRole("link", { name: "Sandboxes", exact: true }).click();
  const row = page.locator(`#sandboxes tr[data-id="${id}"]`);
  await page.locator(`#sandboxes tr[data-id="${id}"][data-state="paused"]`).waitFor();
  await row.getByRole("button", { name: "Resume" }).click();
  await page.locator(`#sandboxes tr[data-id="${id}"][data-state="running"]`).waitFor();
  await eventually(async () => /\d/.test(await page.locator(`#sandboxes tr[data-id="${id}"] td.mem`).innerText()), "live memory in the sandbox's row");
  await shot(page, "sandboxes");
  await row.getByRole("link", { name: id }).click();
  await page.locator("#summary[data-state=running]").waitFor();
  await page.locator(".sandbox-actions").getByRole("button", { name: "Delete" }).click();
  await page.waitForURL(/#\/sandboxes$/);
  await eventually(async () => (await daemon.api("GET", `/v1/sandboxes/${id}`)).status === 404, "the sandbox gone");
  await page.locator(`#sandboxes tr[data-id="${id}"]`).waitFor({ state: "detached" });

  assert.deepEqual(errors, []);
  await context.close();
});

test("console: a link with a sandbox's access token opens that sandbox only, and the token leaves the address bar", async (t) => {
  if (!needChromium(t)) return;
  const created = await daemon.api("POST", "/v1/sandboxes", {});
  assert.equal(created.status, 201);
  const { id, access_token: token } = created.json;
  const { page, context, errors } = await newPage();
  await page.goto(`${daemon.url}/console#sandbox=${id}&token=${token}`);
  await page.locator("#summary[data-state=running]").waitFor();
  assert.ok(!page.url().includes(token), `the token is gone from the address bar: ${page.url()}`);
  assert.equal(await page.locator("header nav a").count(), 1, "only the sandbox's own page");
  await page.locator("#run-cmd").fill("echo token-ok");
  await page.getByRole("button", { name: "Run in background" }).click();
  await page.locator("#process-output[data-done=true]").waitFor();
  assert.match(await page.locator("#process-output").innerText(), /token-ok/);
  // The list is not the token's: going there leads back to the sandbox.
  await page.goto(`${daemon.url}/console#/sandboxes`);
  await page.waitForURL(new RegExp(`#/sandboxes/${id}$`));
  assert.deepEqual(errors, []);
  await context.close();
});

test("console: a refused key and an unreachable daemon say so", async (t) => {
  if (!needChromium(t)) return;
  const { page, context } = await newPage();
  await signIn(page, "sk_not_a_key");
  await page.locator("#banner .error").filter({ hasText: "refused (401)" }).waitFor();
  assert.equal(await page.locator("#key").count(), 1, "still on the sign-in form");
  await page.locator("#key").fill(daemon.apiKey);
  await page.keyboard.press("Enter");
  await page.locator("#sandboxes").waitFor();
  await page.route("**/v1/**", (r) => r.abort("connectionrefused"));
  await page.getByRole("button", { name: "Refresh" }).click();
  await page.locator("#banner .error").filter({ hasText: "cannot be reached" }).waitFor();
  await shot(page, "unreachable");
  await context.close();
});

test("console: readable in a phone-sized window", async (t) => {
  if (!needChromium(t)) return;
  const created = await daemon.api("POST", "/v1/sandboxes", {});
  const { page, context, errors } = await newPage({ width: 390, height: 844 });
  await signIn(page, daemon.apiKey);
  await page.locator(`#sandboxes tr[data-id="${created.json.id}"]`).waitFor();
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, `the page does not scroll sideways (by ${overflow}px); wide tables scroll in their box`);
  await shot(page, "phone-sandboxes");
  await page.goto(`${daemon.url}/console#/sandboxes/${created.json.id}/metrics`);
  await page.locator("#chart-cpu").waitFor();
  assert.ok((await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth)) <= 1);
  await shot(page, "phone-metrics");
  assert.deepEqual(errors, []);
  await context.close();
});
