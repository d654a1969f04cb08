/**
 * Test support: starts a real `sandpit serve --backend process` on a free port with a fresh state dir, and
 * points the SDK at it through SANDPIT_URL / SANDPIT_API_KEY (so tests create sandboxes as users do).
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, mkdirSync, symlinkSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { format } from "node:util";
import { type Sandbox, type SandboxError, type TemplateBuild, type TemplateInfo, Templates } from "sandpit";

/** The repository root (build-test/test/ → ../../../../). */
export const REPO = resolve(fileURLToPath(new URL("../../../../", import.meta.url)));

/** The daemon binary under test. */
export const SANDPIT_BIN = process.env.SANDPIT_BIN || join(REPO, "target", "debug", "sandpit");

/** A running daemon. */
export interface Daemon {
  url: string;
  apiKey: string;
  stateDir: string;
  /** A directory with `python` → python3, for seeds that call `python`. */
  binDir: string;
  stop(): Promise<void>;
}

/** A free TCP port on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.once("error", rej);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => res(port));
    });
  });
}

/** Starts the daemon and sets SANDPIT_URL / SANDPIT_API_KEY for this test process. */
export async function startDaemon(extraArgs: string[] = []): Promise<Daemon> {
  if (!existsSync(SANDPIT_BIN)) {
    throw new Error(`sandpit binary not found at ${SANDPIT_BIN}: run \`cargo build -p sandpit-cli\` or set SANDPIT_BIN`);
  }
  const stateDir = mkdtempSync(join(tmpdir(), "sandpit-ts-"));
  const binDir = join(stateDir, "bin");
  mkdirSync(binDir);
  for (const py of ["/usr/bin/python3", "/usr/local/bin/python3"]) {
    if (existsSync(py)) {
      symlinkSync(py, join(binDir, "python"));
      break;
    }
  }
  const port = await freePort();
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("SANDPIT_")) env[k] = v;
  let log = "";
  const child: ChildProcess = spawn(
    SANDPIT_BIN,
    [
      "serve",
      ...(extraArgs.includes("--backend") ? [] : ["--backend", "process"]),
      // Per-sandbox metrics every 300 ms (default 5 s), so that the metrics tests see samples at once.
      ...(extraArgs.includes("--metrics-interval-ms") ? [] : ["--metrics-interval-ms", "300"]),
      "--listen",
      `127.0.0.1:${port}`,
      "--state-dir",
      join(stateDir, "state"),
      ...extraArgs,
    ],
    { env, stdio: ["ignore", "pipe", "pipe"] },
  );
  child.stdout?.on("data", (d: Buffer) => (log += d.toString()));
  child.stderr?.on("data", (d: Buffer) => (log = (log + d.toString()).slice(-20000)));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`sandpit serve exited with ${child.exitCode}:\n${log}`);
    try {
      const r = await fetch(`${url}/health`);
      if (r.ok) break;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`sandpit serve did not answer /health within 30 s:\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const apiKey = readFileSync(join(stateDir, "state", "api-key"), "utf8").trim();
  process.env.SANDPIT_URL = url;
  process.env.SANDPIT_API_KEY = apiKey;
  return {
    url,
    apiKey,
    stateDir: join(stateDir, "state"),
    binDir,
    async stop() {
      // Sandboxes outlive the daemon by design: delete them first.
      try {
        const h = { Authorization: `Bearer ${apiKey}` };
        const r = (await (await fetch(`${url}/v1/sandboxes`, { headers: h })).json()) as { sandboxes: { id: string }[] };
        await Promise.all(r.sandboxes.map((s) => fetch(`${url}/v1/sandboxes/${s.id}`, { method: "DELETE", headers: h })));
      } catch {
        // daemon already gone
      }
      const exited = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      const t = setTimeout(() => child.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(t);
      rmSync(stateDir, { recursive: true, force: true });
    },
  };
}

/** Polls until `fn` returns true (or throws after `ms`). */
export async function eventually(fn: () => Promise<boolean> | boolean, ms = 5000, what = "condition"): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    if (await fn()) return;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * A stand-in `console` and `process` for seed examples: pass them as parameters named `console` and `process`
 * around the pasted code (inside its own block), and read what it printed from `text()`.
 */
export function seedIO(): {
  console: { log: (...a: unknown[]) => void; error: (...a: unknown[]) => void };
  process: { stdout: { write: (c: string | Uint8Array) => boolean }; stderr: { write: (c: string | Uint8Array) => boolean } };
  text: () => string;
} {
  let out = "";
  const dec = new TextDecoder();
  const write = (c: string | Uint8Array): boolean => {
    out += typeof c === "string" ? c : dec.decode(c);
    return true;
  };
  return {
    console: {
      log: (...a) => void (out += format(...a) + "\n"),
      error: (...a) => void (out += format(...a) + "\n"),
    },
    process: { stdout: { write }, stderr: { write } },
    text: () => out,
  };
}

/** Whether this is a CI run: `CI` set to anything but empty, `false` or `0` (as in the Rust test kit). */
export function underCi(): boolean {
  const v = (process.env.CI ?? "").trim();
  return v !== "" && v !== "false" && v !== "0";
}

/**
 * Skips a test that cannot run here, except under CI, where a skip is a failure: CI runs as root with
 * every tool installed, so a skip there means part of the suite silently stopped running.
 */
export function skipUnlessCi(t: { skip(message?: string): void }, reason: string): void {
  if (underCi()) {
    throw new Error(`a test would be skipped under CI (CI=${process.env.CI}): ${reason}`);
  }
  t.skip(reason);
}

/** Whether the tests run as root, which the `isolate` backend (templates, snapshots, volumes, pools) needs. */
export const IS_ROOT = process.getuid?.() === 0;

/** A root filesystem of busybox and a few applets, with `root` and `user` (the default sandbox user). */
export function busyboxRootfs(dir: string): void {
  for (const d of ["bin", "etc", "tmp", "home/user"]) mkdirSync(join(dir, d), { recursive: true });
  copyFileSync("/bin/busybox", join(dir, "bin", "busybox"));
  for (const applet of ["sh", "echo", "cat", "sleep", "seq", "id", "true"]) symlinkSync("busybox", join(dir, "bin", applet));
  writeFileSync(join(dir, "etc", "passwd"), "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n");
  writeFileSync(join(dir, "etc", "group"), "root:x:0:\nuser:x:1000:\n");
}

/** An `isolate` daemon with an import root, and a busybox template built in it (see {@link startBusyboxIsolate}). */
export interface BusyboxIsolate {
  daemon: Daemon;
  /** The daemon's `--import-root`, a fresh temporary directory. */
  importRoot: string;
  /** The busybox root filesystem the template was built from: `<importRoot>/rootfs`. */
  rootfs: string;
  /** What `Templates.create` answered. */
  created: TemplateBuild;
  /** What `Templates.wait` answered: the template, ready. */
  built: TemplateInfo;
  /** Stops the daemon and removes the import root. */
  stop(): Promise<void>;
}

/**
 * Makes an import root (a temporary directory named from `prefix`) holding a {@link busyboxRootfs} at `rootfs`,
 * starts an `isolate` daemon with it (setting SANDPIT_URL / SANDPIT_API_KEY, as {@link startDaemon} does), and
 * builds template `template` from that root filesystem through the SDK, handing the build's log lines to `onLog`.
 * Needs root. If any step fails, what was made is stopped and removed before the error is thrown.
 */
export async function startBusyboxIsolate(
  prefix: string,
  template: string,
  onLog?: (line: string) => void,
): Promise<BusyboxIsolate> {
  const importRoot = mkdtempSync(join(tmpdir(), prefix));
  const rootfs = join(importRoot, "rootfs");
  let daemon: Daemon | undefined;
  const stop = async (): Promise<void> => {
    try {
      await daemon?.stop();
    } finally {
      rmSync(importRoot, { recursive: true, force: true });
    }
  };
  try {
    busyboxRootfs(rootfs);
    daemon = await startDaemon(["--backend", "isolate", "--import-root", importRoot]);
    const created = await Templates.create(template, { dir: rootfs });
    const built = await Templates.wait(template, onLog ? { onLog, intervalMs: 50 } : { intervalMs: 50 });
    return { daemon, importRoot, rootfs, created, built, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}

/**
 * A guard for the first line of a test that needs the daemon of {@link startBusyboxIsolate} (`if (!isolate(t))
 * return;`): when not root, it skips the test with `reason` (a failure under CI) and returns false; otherwise it
 * asserts that `running()` gives the daemon (the `before` hook started it) and returns true.
 */
export function isolateGuard(reason: string, running: () => unknown): (t: { skip(message?: string): void }) => boolean {
  return (t) => {
    if (!IS_ROOT) {
      skipUnlessCi(t, reason);
      return false;
    }
    assert.ok(running(), "the isolate daemon did not start");
    return true;
  };
}

/** Runs a shell command in the sandbox (as `user` unless told), requires exit 0, and returns its stdout. */
export async function sh(sbx: Sandbox, cmd: string, user?: string): Promise<string> {
  const r = await sbx.commands.run(cmd, user === undefined ? {} : { user });
  assert.equal(r.exitCode, 0, `${cmd}: exit ${r.exitCode}, stderr ${r.stderr}`);
  return r.stdout;
}

/** Kills sandboxes, ignoring those already gone. */
export async function killAll(sandboxes: (Sandbox | undefined)[]): Promise<void> {
  for (const s of sandboxes) await s?.kill().catch(() => undefined);
}

/** Asserts a rejection with the given class, HTTP status (`undefined`: an error raised by the SDK) and server code. */
export async function rejectsWith(
  p: Promise<unknown>,
  Class: new (...a: never[]) => SandboxError,
  status: number | undefined,
  code: string,
  message?: RegExp,
): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof Class, `expected ${Class.name}, got ${String(e)}`);
    assert.equal(e.status, status, String(e));
    assert.equal(e.code, code, String(e));
    if (message) assert.match(e.message, message);
    return true;
  });
}
