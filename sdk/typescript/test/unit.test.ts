/** Pure unit tests (no daemon): SSE parser, frames, builders, detach keys, result objects, error mapping. */
import assert from "node:assert/strict";
import { Readable } from "node:stream";
import { inspect } from "node:util";
import { test } from "node:test";
import {
  AttachOptionsBuilder,
  Events,
  ExecOptionsBuilder,
  InvalidArgumentError,
  ExecOutput,
  ExitStatus,
  NotFoundError,
  SandboxError,
  TemplateBuildError,
  Templates,
  TimeoutError,
  UnavailableError,
  decodeSse,
  outputText,
  parseDetachKeys,
  parseSse,
} from "sandpit";
import { DetachMatcher, keyFileCandidates, readKeyFile, verifyWebhook } from "sandpit/node";
import { STREAM_KEEP_BYTES, StreamText, incompleteTail } from "../src/encoding.js";
import { createHmac } from "node:crypto";
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

/** A `fetch` that answers each request with the next JSON body (status 200) and records what it was sent. */
function scriptedFetch(bodies: unknown[]): { fetch: typeof fetch; calls: { url: string; init: RequestInit & { duplex?: string } }[] } {
  const calls: { url: string; init: RequestInit & { duplex?: string } }[] = [];
  const f = async (url: string | URL | Request, init: RequestInit = {}): Promise<Response> => {
    calls.push({ url: String(url), init });
    const body = bodies[Math.min(calls.length, bodies.length) - 1];
    return new Response(JSON.stringify(body), { status: 200, headers: { "Content-Type": "application/json" } });
  };
  return { fetch: f as typeof fetch, calls };
}

test("Templates.wait hands over each build log line once as the daemon's window slides; a failed build rejects", async () => {
  const build = { name: "py", source: { dir: "/srv/py" }, started_at: "2026-01-02T03:04:05.000Z", finished_at: null };
  const template = { name: "py", source: "directory /srv/py", created_at: "2026-01-02T03:04:09.000Z" };
  const { fetch: f, calls } = scriptedFetch([
    { ...build, state: "building", log: [] },
    { ...build, state: "building", log: ["a", "b"] },
    { ...build, state: "building", log: ["a", "b"] },
    { ...build, state: "building", log: ["b", "c", "d"] }, // the daemon keeps the last lines only
    { ...build, state: "ready", log: ["d", "e", "f"], finished_at: "2026-01-02T03:04:09.000Z", template },
  ]);
  const lines: string[] = [];
  const conn = { url: "http://sandpit.test", apiKey: "k", fetch: f };
  const info = await Templates.wait("py", { ...conn, onLog: (l) => lines.push(l), intervalMs: 1 });
  assert.deepEqual(lines, ["a", "b", "c", "d", "e", "f"]);
  assert.deepEqual(info, {
    name: "py",
    source: "directory /srv/py",
    createdAt: new Date("2026-01-02T03:04:09.000Z"),
    parent: null,
    tenant: null,
    autoRemove: false,
  });
  assert.equal(calls.length, 5);
  assert.ok(calls.every((c) => c.url === "http://sandpit.test/v1/templates/py/build"), calls[0]?.url);
  assert.equal((calls[0]?.init.headers as Record<string, string>).Authorization, "Bearer k");

  const failed = scriptedFetch([{ ...build, state: "failed", error: "debootstrap exited 1", log: ["E: no mirror"] }]);
  await assert.rejects(Templates.wait("py", { ...conn, fetch: failed.fetch }), (e: unknown) => {
    assert.ok(e instanceof TemplateBuildError && e instanceof SandboxError, String(e));
    assert.equal(e.code, "template_build_failed");
    assert.match(e.message, /"py" failed to build: debootstrap exited 1/);
    assert.deepEqual(e.build.log, ["E: no mirror"]);
    assert.equal(e.build.finishedAt, null);
    return true;
  });
});

test("Templates.importArchive sends the archive as application/zstd, a stream as a streamed body", async () => {
  const answer = { name: "up", source: "tarball …", created_at: "2026-01-02T03:04:05.000Z", parent: "base", tenant: "t", auto_remove: true };
  const { fetch: f, calls } = scriptedFetch([answer]);
  const conn = { url: "http://sandpit.test", apiKey: "k", fetch: f };
  const info = await Templates.importArchive("up", new Uint8Array([0x28, 0xb5, 0x2f, 0xfd]), conn);
  assert.deepEqual([info.parent, info.tenant, info.autoRemove], ["base", "t", true]);
  await Templates.importArchive("up", Readable.from([new Uint8Array(3), new Uint8Array(2)]), conn);
  assert.equal(calls.length, 2);
  for (const c of calls) {
    assert.equal(c.url, "http://sandpit.test/v1/templates?name=up");
    assert.equal(c.init.method, "POST");
    assert.equal((c.init.headers as Record<string, string>)["Content-Type"], "application/zstd");
  }
  assert.ok(calls[0]!.init.body instanceof Uint8Array);
  assert.equal(calls[0]!.init.duplex, undefined);
  assert.ok(calls[1]!.init.body instanceof ReadableStream);
  assert.equal(calls[1]!.init.duplex, "half");
  await assert.rejects(Templates.importArchive("up", "/no/such/archive.tar.zst", conn), (e: unknown) => {
    assert.ok(e instanceof SandboxError, String(e));
    assert.equal(e.code, "invalid_argument");
    assert.match(e.message, /\/no\/such\/archive\.tar\.zst/);
    return true;
  });
  assert.equal(calls.length, 2, "nothing sent for a file that cannot be read");
});

/** A delivery's headers as the daemon signs them (`v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`). */
function signed(body: string | Uint8Array, secret: string, stamp = Math.floor(Date.now() / 1000)): Record<string, string> {
  const mac = createHmac("sha256", secret).update(`${stamp}.`).update(body).digest("hex");
  return { "sandpit-timestamp": String(stamp), "sandpit-signature": `v1=${mac}`, "content-type": "application/json" };
}

test("verifyWebhook accepts the daemon's signature and rejects a wrong secret, a changed body, a stale or bad header", () => {
  const body = '{"id":17,"type":"sandbox.paused","data":{"reason":"api"},"note":"é"}';
  const secret = "s3cret-s3cret";
  const h = signed(body, secret);
  assert.equal(verifyWebhook(body, h, secret), true);
  assert.equal(verifyWebhook(new TextEncoder().encode(body), h, secret), true, "raw bytes");
  assert.equal(verifyWebhook(body, new Headers(h), secret), true, "fetch Headers");
  assert.equal(verifyWebhook(body, { "Sandpit-Timestamp": h["sandpit-timestamp"], "Sandpit-Signature": h["sandpit-signature"] }, secret), true);
  const other = signed(body, "another-secret", Number(h["sandpit-timestamp"]))["sandpit-signature"];
  assert.equal(verifyWebhook(body, { ...h, "sandpit-signature": `${other}, ${h["sandpit-signature"]}` }, secret), true, "any v1 matches");
  assert.equal(verifyWebhook(body, h, "wrong-secret"), false);
  assert.equal(verifyWebhook(body.replace("api", "apj"), h, secret), false);
  assert.equal(verifyWebhook(body, { ...h, "sandpit-signature": h["sandpit-signature"]!.toUpperCase().replace("V1=", "v1=") }, secret), true);
  assert.equal(verifyWebhook(body, { ...h, "sandpit-signature": h["sandpit-signature"]!.slice(0, -2) }, secret), false);
  assert.equal(verifyWebhook(body, { ...h, "sandpit-signature": h["sandpit-signature"]!.replace("v1=", "v0=") }, secret), false);
  assert.equal(verifyWebhook(body, { "sandpit-signature": h["sandpit-signature"] }, secret), false, "no timestamp");
  assert.equal(verifyWebhook(body, { "sandpit-timestamp": h["sandpit-timestamp"] }, secret), false, "no signature");
  assert.equal(verifyWebhook(body, { ...h, "sandpit-timestamp": `${h["sandpit-timestamp"]}.5` }, secret), false);
  // The timestamp is signed too, and must be recent (default 300 s either way).
  const now = Math.floor(Date.now() / 1000);
  const stale = signed(body, secret, now - 400);
  assert.equal(verifyWebhook(body, stale, secret), false, "older than 300 s");
  assert.equal(verifyWebhook(body, stale, secret, { toleranceS: 500 }), true);
  assert.equal(verifyWebhook(body, signed(body, secret, now + 400), secret), false, "from the future");
  assert.equal(verifyWebhook(body, signed(body, secret, now - 200), secret), true);
  assert.equal(verifyWebhook(body, { ...stale, "sandpit-timestamp": String(now) }, secret), false, "a replayed signature");
});

/** A fetch answering with scripted SSE streams; `open` keeps the stream open after its text. */
function sseFetch(streams: { status?: number; text: string; open?: boolean }[]): {
  fetch: typeof fetch;
  calls: { url: string; headers: Record<string, string> }[];
} {
  const calls: { url: string; headers: Record<string, string> }[] = [];
  const f = async (url: string | URL | Request, init: RequestInit = {}): Promise<Response> => {
    calls.push({ url: String(url), headers: { ...(init.headers as Record<string, string>) } });
    const s = streams[calls.length - 1];
    if (!s) return new Promise<Response>(() => undefined);
    const bytes = new TextEncoder().encode(s.text);
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(bytes);
        if (!s.open) c.close();
        else init.signal?.addEventListener("abort", () => c.error(init.signal?.reason), { once: true });
      },
    });
    return new Response(body, { status: s.status ?? 200, headers: { "Content-Type": "text/event-stream" } });
  };
  return { fetch: f as typeof fetch, calls };
}

function eventMsg(id: number, type: string): string {
  const ev = { id, type, sandbox_id: "sb_1", tenant: "default", at: "2026-12-04T13:00:00.123Z", data: { reason: "api" } };
  return `id: ${id}\nevent: ${type}\ndata: ${JSON.stringify(ev)}\n\n`;
}

test("Events.stream resumes a dropped connection with Last-Event-ID and delivers each event once", async () => {
  const { fetch: f, calls } = sseFetch([
    { text: `: keep-alive\n\n${eventMsg(5, "sandbox.paused")}` },
    { text: `${eventMsg(5, "sandbox.paused")}${eventMsg(6, "sandbox.resumed")}`, open: true },
  ]);
  const conn = { url: "http://sandpit.test", apiKey: "k", fetch: f };
  const got = [];
  for await (const ev of Events.stream({ sandbox: "sb_1", type: ["sandbox.paused", "sandbox.resumed"], after: 4 }, conn)) {
    got.push(ev);
    if (ev.id === 6) break;
  }
  assert.deepEqual(
    got.map((e) => [e.id, e.type, e.sandboxId]),
    [
      [5, "sandbox.paused", "sb_1"],
      [6, "sandbox.resumed", "sb_1"],
    ],
  );
  assert.deepEqual(got[0]!.at, new Date("2026-12-04T13:00:00.123Z"));
  assert.deepEqual(got[0]!.data, { reason: "api" });
  assert.equal(calls.length, 2);
  assert.equal(calls[0]!.url, "http://sandpit.test/v1/events/stream?sandbox=sb_1&type=sandbox.paused%2Csandbox.resumed&after=4");
  assert.equal(calls[0]!.headers["Last-Event-ID"], undefined);
  assert.equal(calls[0]!.headers.Accept, "text/event-stream");
  // Reopened from the last event seen: the header replaces `after`.
  assert.equal(calls[1]!.url, "http://sandpit.test/v1/events/stream?sandbox=sb_1&type=sandbox.paused%2Csandbox.resumed");
  assert.equal(calls[1]!.headers["Last-Event-ID"], "5");
});

test("Events.stream throws a refused request at once, and stops when its signal aborts", async () => {
  const bad = sseFetch([{ status: 400, text: '{"error":{"code":"invalid_argument","message":"unknown parameter"}}' }]);
  const conn = { url: "http://sandpit.test", apiKey: "k", fetch: bad.fetch };
  await assert.rejects(Events.stream({ type: "nope" }, conn).next(), InvalidArgumentError);
  assert.equal(bad.calls.length, 1, "not retried");

  const quiet = sseFetch([{ text: ": keep-alive\n\n", open: true }]);
  const ctl = new AbortController();
  const it = Events.stream({ signal: ctl.signal }, { ...conn, fetch: quiet.fetch });
  const next = it.next();
  setTimeout(() => ctl.abort(), 50);
  await assert.rejects(next, (e: unknown) => e instanceof Error && e.name === "AbortError");
  assert.equal(quiet.calls.length, 1);
});

// Regression: a stream's text was accumulated in one string for the result, and past V8's string limit
// (~512 MiB of output through `handle.stream()`) the SDK threw a RangeError mid-stream.
test("StreamText hands out every chunk but keeps only the last 64 MiB, decoding the whole text on demand", () => {
  const s = new StreamText();
  const chunk = new Uint8Array(1 << 20).fill(0x61);
  let handedOut = 0;
  for (let i = 0; i < 80; i++) handedOut += s.push(chunk).length;
  assert.equal(handedOut, 80 << 20);
  const kept = s.bytes.length;
  assert.ok(kept >= STREAM_KEEP_BYTES && kept <= STREAM_KEEP_BYTES + (1 << 20), `kept ${kept}`);
  assert.equal(s.value.length, kept);
  // A character split across chunks is decoded once, whole.
  const t = new StreamText();
  const e = new TextEncoder().encode("é");
  assert.equal(t.push(e.subarray(0, 1)) + t.push(e.subarray(1)), "é");
  assert.equal(t.value, "é");
  // ... for every cut of 1- to 4-byte characters, and an invalid byte is still replaced, not carried.
  const text = "aé€😀b";
  const bytes = new TextEncoder().encode(text);
  for (let cut = 0; cut <= bytes.length; cut++) {
    const u = new StreamText();
    assert.equal(u.push(bytes.subarray(0, cut)) + u.push(bytes.subarray(cut)), text, `cut at ${cut}`);
  }
  assert.equal(new StreamText().push(new Uint8Array([0x61, 0xff, 0x62])), "a\ufffdb");
});

test("incompleteTail counts only a character that continues past the end", () => {
  const b = (...x: number[]): Uint8Array => new Uint8Array(x);
  assert.equal(incompleteTail(b()), 0);
  assert.equal(incompleteTail(b(0x61)), 0);
  assert.equal(incompleteTail(b(0xc3)), 1);
  assert.equal(incompleteTail(b(0xc3, 0xa9)), 0);
  assert.equal(incompleteTail(b(0xe2, 0x82)), 2);
  assert.equal(incompleteTail(b(0xe2, 0x82, 0xac)), 0);
  assert.equal(incompleteTail(b(0xf0, 0x9f, 0x98)), 3);
  assert.equal(incompleteTail(b(0xf0, 0x9f, 0x98, 0x80)), 0);
  assert.equal(incompleteTail(b(0x80, 0x80, 0x80, 0x80)), 0); // stray continuation bytes: nothing to wait for
});
