/**
 * Cut streams resume from the last seq: SSE via `Last-Event-ID`, WebSocket via `?from_seq=`. Faults are
 * injected on the client side (a fetch that truncates event streams, a WebSocket that drops itself) while
 * talking to the real daemon.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { WebSocket as WsWebSocket } from "ws";
import { Sandbox, SandboxError, type WebSocketConstructor } from "sandpit";
import { type Daemon, startDaemon } from "./helpers.js";

let daemon: Daemon;

before(async () => {
  daemon = await startDaemon();
});
after(async () => {
  await daemon?.stop();
});

/** A fetch that cuts the first `cuts` event streams after their first output event. */
function cuttingFetch(cuts: number, seen: Array<string | null>): typeof fetch {
  let left = cuts;
  return async (input, init) => {
    const resp = await fetch(input, init);
    const url = String(input);
    if (!url.includes("/events")) return resp;
    seen.push(new Headers(init?.headers).get("last-event-id"));
    if (left <= 0 || !resp.body) return resp;
    left -= 1;
    const reader = resp.body.getReader();
    let text = "";
    const body = new ReadableStream<Uint8Array>({
      async pull(c) {
        const { value, done } = await reader.read();
        if (done) return c.close();
        text += new TextDecoder().decode(value);
        c.enqueue(value);
        if (/event: std(out|err)[^]*?\n\n/.test(text)) {
          await reader.cancel();
          c.error(new TypeError("terminated (injected)"));
        }
      },
    });
    return new Response(body, { status: resp.status, headers: resp.headers });
  };
}

const SCRIPT = "for i in 1 2 3 4 5 6; do echo $i; sleep 0.1; done";

/**
 * A `ws` WebSocket whose every connection is refused (as by a proxy that drops `Upgrade`): it connects to a
 * closed loopback port instead of the daemon. Streams then fall back to SSE. Records the URLs asked for.
 */
function refusedWebSocket(urls: string[]): WebSocketConstructor {
  class Refused extends WsWebSocket {
    constructor(url: string, protocols?: string | string[], opts?: object) {
      super("ws://127.0.0.1:1/", protocols, opts);
      urls.push(url);
    }
  }
  return Refused as unknown as WebSocketConstructor;
}

/** A `ws` WebSocket that records the URLs it connects to. */
function recordingWebSocket(urls: string[]): WebSocketConstructor {
  class Recording extends WsWebSocket {
    constructor(url: string, protocols?: string | string[], opts?: object) {
      super(url, protocols, opts);
      urls.push(url);
    }
  }
  return Recording as unknown as WebSocketConstructor;
}

test("SSE: a cut stream resumes after the last seq (Last-Event-ID), nothing lost or repeated", async () => {
  const seen: Array<string | null> = [];
  const refused: string[] = [];
  // Streams read the WebSocket session when they can: refused here, they fall back to SSE.
  const sandbox = await Sandbox.create({ fetch: cuttingFetch(3, seen), WebSocket: refusedWebSocket(refused) });
  try {
    const chunks: string[] = [];
    const r = await sandbox.commands.run(SCRIPT, { onStdout: (d) => chunks.push(d) });
    assert.equal(r.stdout, "1\n2\n3\n4\n5\n6\n");
    assert.equal(chunks.join(""), r.stdout);
    assert.ok(seen.length >= 4, `reconnected ${seen.length - 1} times`);
    assert.equal(seen[0], null);
    assert.ok(seen.slice(1).every((h) => h !== null && Number(h) >= 1), JSON.stringify(seen));

    const p = await sandbox.processes.start(SCRIPT);
    let out = "";
    for await (const ev of p.stream()) if (ev.type === "stdout") out += ev.data;
    assert.equal(out, "1\n2\n3\n4\n5\n6\n");
    assert.ok(refused.length >= 2 && refused.every((u) => u.includes("/ws?from_seq=1")), refused.join(" "));
  } finally {
    await sandbox.kill();
  }
});

test("SSE: gives up with SandboxError after streamRetries attempts without progress", async () => {
  const cut = cuttingFetch(1, []);
  let resumes = 0;
  const failing: typeof fetch = async (input, init) => {
    if (String(input).includes("/events") && new Headers(init?.headers).has("last-event-id")) {
      resumes += 1;
      throw new TypeError("fetch failed (injected)");
    }
    return cut(input, init);
  };
  const sandbox = await Sandbox.create({ fetch: failing, streamRetries: 2, WebSocket: refusedWebSocket([]) });
  try {
    await assert.rejects(
      sandbox.commands.runStream("for i in $(seq 1 40); do echo $i; sleep 0.05; done"),
      (e: unknown) => e instanceof SandboxError && e.code === "stream_cut",
    );
    assert.equal(resumes, 2);
  } finally {
    await sandbox.kill();
  }
});

/** A `ws` WebSocket that drops itself after its first binary frame, for the first `cuts` connections. */
function droppingWebSocket(cuts: number, urls: string[]): WebSocketConstructor {
  let left = cuts;
  class Dropping extends WsWebSocket {
    constructor(url: string, protocols?: string | string[], opts?: object) {
      super(url, protocols, opts);
      urls.push(url);
      if (left > 0) {
        left -= 1;
        this.on("message", (_data, isBinary) => {
          if (isBinary) this.terminate();
        });
      }
    }
  }
  return Dropping as unknown as WebSocketConstructor;
}

test("WebSocket: a dropped session resumes with ?from_seq=, nothing lost or repeated", async () => {
  const urls: string[] = [];
  const sandbox = await Sandbox.create({ WebSocket: droppingWebSocket(2, urls) });
  try {
    const chunks: string[] = [];
    const s = await sandbox.commands.spawn(SCRIPT, { onStdout: (d) => chunks.push(d) });
    const r = await s.wait();
    assert.equal(r.stdout, "1\n2\n3\n4\n5\n6\n");
    assert.equal(chunks.join(""), r.stdout);
    assert.ok(urls.length >= 3, urls.join(" "));
    assert.match(urls[0]!, /from_seq=1$/);
    assert.ok(urls.slice(1).every((u) => Number(/from_seq=(\d+)/.exec(u)?.[1]) > 1), urls.join(" "));

    const h = await sandbox.execStream("sh", ["-c", SCRIPT]);
    const out = await h.collect();
    assert.equal(out.stdout(), "1\n2\n3\n4\n5\n6\n");
  } finally {
    await sandbox.kill();
  }
});

test("stream(): reads the WebSocket session, and a cut one resumes with ?from_seq=", async () => {
  const urls: string[] = [];
  const sandbox = await Sandbox.create({ WebSocket: droppingWebSocket(2, urls) });
  try {
    const p = await sandbox.processes.start(SCRIPT);
    let out = "";
    let exit: string | undefined;
    for await (const ev of p.stream()) {
      if (ev.type === "stdout") out += ev.data;
      else if (ev.type === "exit") exit = ev.result.stdout;
    }
    assert.equal(out, "1\n2\n3\n4\n5\n6\n");
    assert.equal(exit, out);
    assert.ok(urls.length >= 3, urls.join(" "));
    assert.ok(urls.every((u) => u.includes(`/processes/${p.id}/ws?`)), urls.join(" "));
  } finally {
    await sandbox.kill();
  }
});

test("stream(): a loop slower than the process holds it back over the WebSocket, nothing lost", async () => {
  const urls: string[] = [];
  const sandbox = await Sandbox.create({ WebSocket: recordingWebSocket(urls) });
  const total = 96 * 1024 * 1024;
  try {
    // Gated: the output starts once the stream is attached (a process nobody follows is never held back).
    const p = await sandbox.processes.start(`echo ready; read _gate; head -c ${total} /dev/zero`);
    let got = 0;
    let paused = false;
    let writtenWhilePaused = 0;
    for await (const ev of p.stream()) {
      if (ev.type === "stdout" && ev.data === "ready\n" && got === 0) {
        await p.writeStdin({ data: "go\n", eof: true });
      } else if (ev.type === "stdout") {
        got += ev.bytes.length;
        if (!paused) {
          paused = true;
          // The loop stops reading for a while: unheld, the process would write all 96 MiB meanwhile
          // (hundreds of MiB/s) and this session would queue it all in memory.
          await new Promise((r) => setTimeout(r, 1500));
          writtenWhilePaused = (await p.refresh()).stdoutBytes;
        }
      } else if (ev.type === "lost") {
        assert.fail(`lost ${ev.lostBytes} bytes`);
      } else if (ev.type === "exit") {
        assert.equal(ev.result.exitCode, 0);
      }
    }
    assert.equal(got, total);
    // Held back: what the process wrote is what this session queued (4 MiB), the agent's window and the
    // socket buffers between them: far from everything.
    assert.ok(writtenWhilePaused < total / 2, `the process wrote ${writtenWhilePaused} bytes while the loop slept`);
    assert.ok(urls.some((u) => u.includes("/ws?")), urls.join(" "));
  } finally {
    await sandbox.kill();
  }
});

test("WebSocket: stdin written while reconnecting is delivered", async () => {
  const urls: string[] = [];
  const sandbox = await Sandbox.create({ WebSocket: droppingWebSocket(1, urls) });
  try {
    const s = await sandbox.commands.spawn("echo ready; cat");
    await new Promise((r) => setTimeout(r, 300));
    await s.stdin.write("after-drop\n");
    await s.stdin.close();
    const r = await s.wait();
    assert.equal(r.stdout, "ready\nafter-drop\n");
    assert.equal(urls.length, 2);
  } finally {
    await sandbox.kill();
  }
});

/**
 * A fetch that loses the answer to the first `POST /exec` the way Node's fetch does after its 5-minute
 * `headersTimeout` (here after 300 ms): the request reached the daemon, the answer never reaches the caller.
 */
function losingExecFetch(urls: string[]): typeof fetch {
  let lost = false;
  return async (input, init) => {
    const url = String(input);
    urls.push(`${init?.method ?? "GET"} ${new URL(url).pathname}`);
    if (lost || init?.method !== "POST" || !url.endsWith("/exec")) return fetch(input, init);
    lost = true;
    const cut = new AbortController();
    const pending = fetch(input, { ...init, signal: cut.signal }).catch(() => undefined);
    await new Promise((r) => setTimeout(r, 300));
    cut.abort();
    await pending;
    const cause = Object.assign(new Error("Headers Timeout Error"), { code: "UND_ERR_HEADERS_TIMEOUT" });
    throw new TypeError("fetch failed", { cause });
  };
}

test("run(): an answer lost to the client's own wait limit is long-polled by id, nothing lost", async () => {
  const urls: string[] = [];
  const sandbox = await Sandbox.create({ fetch: losingExecFetch(urls) });
  try {
    const r = await sandbox.commands.run("sleep 1; echo done");
    assert.equal(r.exitCode, 0);
    assert.equal(r.stdout, "done\n");
    assert.ok(
      urls.some((u) => /\/processes\/[^/]+\/wait$/.test(u)),
      `no long-poll after the lost answer: ${urls.join(", ")}`,
    );
    // A command that ends at once answers in one round trip: no long-poll.
    const before = urls.length;
    assert.equal((await sandbox.commands.run("echo hi")).stdout, "hi\n");
    assert.deepEqual(
      urls.slice(before).map((u) => u.split(" ")[0]),
      ["POST"],
      `more than one request: ${urls.slice(before).join(", ")}`,
    );
  } finally {
    await sandbox.kill();
  }
});
