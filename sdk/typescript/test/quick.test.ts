/** The Node transport of small calls (`src/node/quick.ts`), against a local HTTP server (no daemon). */
import assert from "node:assert/strict";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { test } from "node:test";
import { HttpClient, SandboxError, TimeoutError } from "sandpit";

interface Seen {
  method: string;
  url: string;
  auth: string | undefined;
  type: string | undefined;
  body: string;
  socket: number;
}

async function server(answer: (req: IncomingMessage, res: ServerResponse, body: string) => void): Promise<{
  url: string;
  seen: Seen[];
  close: () => Promise<void>;
}> {
  const seen: Seen[] = [];
  const sockets = new WeakMap<object, number>();
  let nextSocket = 0;
  const srv = createServer((req, res) => {
    let body = "";
    req.setEncoding("utf8");
    req.on("data", (c: string) => (body += c));
    req.on("end", () => {
      if (!sockets.has(req.socket)) sockets.set(req.socket, nextSocket++);
      seen.push({
        method: req.method ?? "",
        url: req.url ?? "",
        auth: req.headers.authorization,
        type: req.headers["content-type"],
        body,
        socket: sockets.get(req.socket) ?? -1,
      });
      answer(req, res, body);
    });
  });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", r));
  const { port } = srv.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    seen,
    close: () => {
      srv.closeAllConnections();
      return new Promise<void>((r) => srv.close(() => r()));
    },
  };
}

test("small calls share one keep-alive connection and carry the key and the JSON body", async () => {
  const s = await server((_req, res) => {
    res.setHeader("Content-Type", "application/json");
    res.end(JSON.stringify({ ok: true }));
  });
  try {
    const c = await HttpClient.create({ url: s.url, apiKey: "k-quick" });
    assert.ok(c.config.quick, "Node without a fetch of the caller's takes the quick path");
    assert.deepEqual(await c.json("POST", "/v1/x", { json: { argv: ["true"] }, query: { a: true, b: undefined } }), {
      ok: true,
    });
    await c.send("DELETE", "/v1/y");
    assert.equal(s.seen.length, 2);
    assert.deepEqual(
      s.seen.map((r) => [r.method, r.url, r.auth, r.type, r.body]),
      [
        ["POST", "/v1/x?a=true", "Bearer k-quick", "application/json", '{"argv":["true"]}'],
        ["DELETE", "/v1/y", "Bearer k-quick", undefined, ""],
      ],
    );
    assert.equal(s.seen[0]?.socket, s.seen[1]?.socket, "the second call reused the first one's connection");
  } finally {
    await s.close();
  }
});

test("an error answer on the quick path is the SDK error fetch's path gives, Retry-After included", async () => {
  const s = await server((_req, res) => {
    res.writeHead(429, { "Content-Type": "application/json", "Retry-After": "3" });
    res.end(JSON.stringify({ error: { code: "resource_exhausted", message: "slow down" } }));
  });
  try {
    const quick = await HttpClient.create({ url: s.url, apiKey: "k" });
    const viaFetch = await HttpClient.create({ url: s.url, apiKey: "k", fetch: globalThis.fetch });
    assert.equal(viaFetch.config.quick, undefined, "a caller's fetch is used for everything");
    const errors: unknown[] = [];
    for (const c of [quick, viaFetch]) {
      await c.json("GET", "/v1/z").then(
        () => assert.fail("an error answer resolved"),
        (e: unknown) => errors.push(e),
      );
    }
    for (const e of errors) {
      assert.ok(e instanceof SandboxError);
      assert.equal(e.code, "resource_exhausted");
      assert.equal(e.retryAfter, 3);
      assert.match(e.message, /slow down/);
    }
  } finally {
    await s.close();
  }
});

test("the quick path keeps the request time-out", async () => {
  const s = await server((_req, res) => {
    setTimeout(() => res.end("{}"), 2000).unref();
  });
  try {
    const c = await HttpClient.create({ url: s.url, apiKey: "k", requestTimeoutMs: 100 });
    await assert.rejects(c.json("GET", "/v1/slow"), TimeoutError);
  } finally {
    await s.close();
  }
});
