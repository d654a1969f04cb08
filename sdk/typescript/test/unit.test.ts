/** Pure unit tests (no daemon): SSE parser, frames, builders, detach keys, result objects, error mapping. */
import assert from "node:assert/strict";
import { inspect } from "node:util";
import { test } from "node:test";
import {
  AttachOptionsBuilder,
  ExecOptionsBuilder,
  ExecOutput,
  ExitStatus,
  NotFoundError,
  SandboxError,
  TimeoutError,
  UnavailableError,
  decodeSse,
  outputText,
  parseDetachKeys,
  parseSse,
} from "sandpit";
import { DetachMatcher, keyFileCandidates, readKeyFile } from "sandpit/node";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

function streamOf(parts: string[]): ReadableStream<Uint8Array> {
  const enc = new TextEncoder();
  return new ReadableStream({
    start(c) {
      for (const p of parts) c.enqueue(enc.encode(p));
      c.close();
    },
  });
}

test("SSE parser: fields, multi-line data, comments, CRLF, split chunks", async () => {
  const msgs = [];
  for await (const m of parseSse(
    streamOf(["event: started\ndata: {\"a\"", ":1}\n\n: comment\n\nid: 7\r\nevent: stdout\r\ndata: x\r\ndata: y\r", "\n\r\n", "data: tail\n\n"]),
  )) msgs.push(m);
  assert.deepEqual(msgs, [
    { event: "started", data: '{"a":1}', id: undefined },
    { event: "stdout", data: "x\ny", id: "7" },
    { event: "message", data: "tail", id: undefined },
  ]);
});

test("an SSE error event (the daemon cut a stream: the agent stopped answering) throws its error", () => {
  assert.throws(
    () => decodeSse({ event: "error", data: '{"code":"unavailable","message":"agent stopped"}', id: undefined }),
    (e: unknown) => e instanceof UnavailableError && e.message.includes("agent stopped"),
  );
});

test("detach keys parse and match across chunks", () => {
  assert.deepEqual(parseDetachKeys("ctrl-]"), [0x1d]);
  assert.deepEqual(parseDetachKeys("ctrl-p,ctrl-q"), [0x10, 0x11]);
  assert.deepEqual(parseDetachKeys("ctrl-a, x"), [1, 0x78]);
  assert.throws(() => parseDetachKeys("meta-x"));
  const m = new DetachMatcher([0x10, 0x11]);
  assert.deepEqual(m.feed(Uint8Array.from([0x61, 0x10])), { forward: Uint8Array.from([0x61]), detached: false });
  assert.deepEqual(m.feed(Uint8Array.from([0x62])), { forward: Uint8Array.from([0x10, 0x62]), detached: false });
  assert.deepEqual(m.feed(Uint8Array.from([0x10])), { forward: new Uint8Array(0), detached: false });
  assert.deepEqual(m.feed(Uint8Array.from([0x11, 0x63])), { forward: new Uint8Array(0), detached: true });
});

test("ExecOptionsBuilder / AttachOptionsBuilder build immutable options", () => {
  const o = new ExecOptionsBuilder()
    .args(["a", "b"])
    .arg("c")
    .cwd("/app")
    .user("root")
    .env("K", "V")
    .envs({ X: "1" })
    .timeout(30_000)
    .stdinBytes("hi")
    .tty(true)
    .rlimit("nofile", 64)
    .rlimitRange("nproc", 10, 20)
    .build();
  assert.deepEqual(o.args, ["a", "b", "c"]);
  assert.deepEqual(o.env, [["K", "V"], ["X", "1"]]);
  assert.equal(o.timeoutMs, 30_000);
  assert.equal(o.stdin.kind, "bytes");
  assert.equal(o.tty, true);
  assert.deepEqual(o.rlimits, [
    { resource: "nofile", soft: 64, hard: 64 },
    { resource: "nproc", soft: 10, hard: 20 },
  ]);
  assert.ok(Object.isFrozen(o));
  const a = new AttachOptionsBuilder().cwd("/app").env("EDITOR", "vim").detachKeys("ctrl-p,ctrl-q").build();
  assert.equal(a.detachKeys, "ctrl-p,ctrl-q");
  assert.equal(a.cwd, "/app");
});

test("OutputText is both a string and a function", () => {
  const t = outputText("hello\n");
  assert.equal(t(), "hello\n");
  assert.equal(t.trim(), "hello");
  assert.equal(`${t}`, "hello\n");
  assert.equal(t + "!", "hello\n!");
  assert.equal(t.length, 6);
  assert.equal(t[0], "h");
  assert.equal(JSON.stringify({ t }), '{"t":"hello\\n"}');
  assert.equal(inspect(t), "hello\n");
  assert.ok(t.includes("ell"));
  const out = new ExecOutput(new TextEncoder().encode("2\n"), new Uint8Array([0xff]), new ExitStatus(3));
  assert.equal(out.stdout(), "2\n");
  assert.equal(out.code, 3);
  assert.equal(out.exitCode, 3);
  assert.equal(out.success, false);
  assert.equal(out.status.success, false);
  assert.deepEqual(out.stderrBytes(), new Uint8Array([0xff]));
  assert.equal(JSON.parse(JSON.stringify(out)).stdout, "2\n");
});

test("error classes carry code and status", () => {
  const e = new NotFoundError("no such sandbox", { code: "not_found", status: 404 });
  assert.ok(e instanceof SandboxError);
  assert.equal(e.name, "NotFoundError");
  assert.equal(e.code, "not_found");
  assert.equal(e.status, 404);
  assert.ok(new TimeoutError("x") instanceof SandboxError);
});

test("key file lookup order and reading (Node)", async () => {
  const dir = mkdtempSync(join(tmpdir(), "sandpit-key-"));
  writeFileSync(join(dir, "api-key"), "  k3y\n");
  const c = keyFileCandidates({ SANDPIT_STATE_DIR: dir, HOME: "/h" });
  assert.equal(c[0], join(dir, "api-key"));
  assert.ok(c.includes("/var/lib/sandpit/api-key"));
  assert.ok(c.some((p) => p.endsWith(".local/share/sandpit/api-key")));
  assert.equal(await readKeyFile({ SANDPIT_STATE_DIR: dir }), "k3y");
});
