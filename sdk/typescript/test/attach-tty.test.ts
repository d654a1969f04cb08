/**
 * `attach` on a real terminal: a Node program that calls `sandbox.attachShell()` / `sandbox.attach()` runs in
 * tmux (a real PTY: raw mode, SIGWINCH); keys are typed with send-keys and the screen read with capture-pane.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { pathToFileURL } from "node:url";
import { Sandbox } from "sandpit";
import { type Daemon, eventually, skipUnlessCi, startDaemon } from "./helpers.js";

let daemon: Daemon;
let sandbox: Sandbox;
let dir = "";
const session = `sandpit-attach-${process.pid}`;

function hasTmux(): boolean {
  try {
    execFileSync("tmux", ["-V"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

const tmux = (...args: string[]): string => execFileSync("tmux", args, { encoding: "utf8" });
const screen = (): string => tmux("capture-pane", "-p", "-t", session);

before(async () => {
  daemon = await startDaemon();
  sandbox = await Sandbox.create();
  dir = mkdtempSync(join(tmpdir(), "sandpit-attach-"));
  const sdk = pathToFileURL(join(process.cwd(), "dist", "index.js")).href;
  writeFileSync(
    join(dir, "demo.mjs"),
    `import { Sandbox } from ${JSON.stringify(sdk)};
const sandbox = await Sandbox.connect(process.argv[2]);
if (process.argv[3] === "with") {
  // the seed, with /app replaced by /tmp (the process backend shares the host's filesystem)
  const code = await sandbox.attachWith("bash", (a) =>
    a.cwd("/tmp")
      .env("EDITOR", "vim")
      .detachKeys("ctrl-]"),
  );
  console.log("ATTACH-RESULT", code);
} else {
  const code = process.argv[3] === "shell" ? await sandbox.attachShell() : await sandbox.attach("sh", ["-c", "sleep 0.5; exit 5"]);
  console.log("ATTACH-RESULT", code);
}
`,
  );
});
after(async () => {
  try {
    tmux("kill-session", "-t", session);
  } catch {
    // already gone
  }
  await sandbox?.kill().catch(() => undefined);
  await daemon?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function runInTmux(mode: string): void {
  const env = `SANDPIT_URL=${daemon.url} SANDPIT_API_KEY=${daemon.apiKey}`;
  tmux("new-session", "-d", "-s", session, "-x", "100", "-y", "30", `${env} node ${join(dir, "demo.mjs")} ${sandbox.id} ${mode}; sleep 60`);
}

test("attachShell on a real TTY: raw keys, SIGWINCH resize, ctrl-] detaches and the shell lives on", async (t) => {
  if (!hasTmux()) return skipUnlessCi(t, "tmux is not installed");
  runInTmux("shell");
  try {
    await eventually(async () => (await sandbox.commands.list()).some((p) => p.isPty), 10_000, "the PTY shell");
    await new Promise((r) => setTimeout(r, 300));
    tmux("send-keys", "-t", session, "stty size; echo $((6*7))", "Enter");
    await eventually(() => /30 100\s+42/.test(screen()), 5000, "stty output");
    tmux("resize-window", "-t", session, "-x", "120", "-y", "40");
    await new Promise((r) => setTimeout(r, 300));
    tmux("send-keys", "-t", session, "stty size", "Enter");
    await eventually(() => /40 120/.test(screen()), 5000, "resized PTY");
    tmux("send-keys", "-t", session, "C-]");
    await eventually(() => screen().includes("ATTACH-RESULT -1"), 5000, "detach");
    const pty = (await sandbox.commands.list()).filter((p) => p.isPty);
    assert.equal(pty.length, 1, "the shell keeps running after detach");
    await sandbox.commands.kill(pty[0]!.id);
  } finally {
    tmux("kill-session", "-t", session);
  }
});

test("attach(cmd, args) resolves with the exit code", async (t) => {
  if (!hasTmux()) return skipUnlessCi(t, "tmux is not installed");
  runInTmux("cmd");
  try {
    await eventually(() => screen().includes("ATTACH-RESULT 5"), 10_000, "exit code");
  } finally {
    tmux("kill-session", "-t", session);
  }
});

test("seed: attachWith(bash, cwd/env/detachKeys) on a real TTY", async (t) => {
  if (!hasTmux()) return skipUnlessCi(t, "tmux is not installed");
  runInTmux("with");
  try {
    await eventually(async () => (await sandbox.commands.list()).some((p) => p.isPty), 10_000, "the PTY bash");
    await new Promise((r) => setTimeout(r, 300));
    tmux("send-keys", "-t", session, "echo editor=$EDITOR cwd=$(pwd)", "Enter");
    await eventually(() => screen().includes("editor=vim cwd=/tmp"), 5000, "bash output");
    tmux("send-keys", "-t", session, "C-]");
    await eventually(() => screen().includes("ATTACH-RESULT -1"), 5000, "detach");
    for (const p of (await sandbox.commands.list()).filter((x) => x.isPty)) await sandbox.commands.kill(p.id);
  } finally {
    tmux("kill-session", "-t", session);
  }
});
