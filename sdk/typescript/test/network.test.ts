/**
 * Network policy and exposed ports (preview URLs) against the real daemon. Ports work with the process
 * backend (the daemon started here); policies need the isolate backend (root), started on its own and
 * skipped otherwise. Only loopback traffic.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { Sandbox } from "sandpit";
import { type Daemon, eventually, freePort, skipUnlessCi, startDaemon } from "./helpers.js";

let daemon: Daemon;
before(async () => {
  daemon = await startDaemon();
});
after(async () => {
  await daemon?.stop();
});

/** GET a preview URL through the daemon (Node does not resolve `*.localhost` the way browsers do). */
async function previewGet(url: string, host: string, token?: string): Promise<Response> {
  const daemonPort = host.split(":")[1];
  const path = url.slice(url.indexOf(host) + host.length);
  const http = await import("node:http");
  return new Promise((res, rej) => {
    const headers: Record<string, string> = { Host: host };
    if (token) headers["X-Sandpit-Token"] = token;
    const req = http.request({ host: "127.0.0.1", port: Number(daemonPort), path, headers }, (r) => {
      let body = "";
      r.on("data", (d: Buffer) => (body += d.toString()));
      r.on("end", () => res(new Response(body, { status: r.statusCode ?? 0 })));
    });
    req.on("error", rej);
    req.end();
  });
}

test("exposePort, getHost, ports and closePort", async () => {
  const port = await freePort();
  const sbx = await Sandbox.create();
  try {
    await sbx.commands.run(`python3 -m http.server ${port} --bind 127.0.0.1`, { background: true });
    const host = sbx.getHost(port);
    assert.equal(host, `${port}-${sbx.id}.localhost:${new URL(daemon.url).port}`);
    const p = await sbx.exposePort(port);
    assert.equal(p.public, false);
    assert.ok(p.token?.startsWith("spt_"));
    assert.equal(p.url, `http://${host}/`);
    assert.equal(p.browserUrl, `${p.url}?sandpit_token=${p.token}`);
    await eventually(async () => (await previewGet(p.url, host, p.token ?? undefined)).status === 200, 20_000, "the server");
    assert.equal((await previewGet(p.url, host)).status, 401);
    const pub = await sbx.exposePort(port, { public: true });
    assert.equal(pub.browserUrl, pub.url);
    assert.equal((await previewGet(p.url, host)).status, 200);
    assert.deepEqual((await sbx.ports()).map((x) => x.port), [port]);
    await sbx.closePort(port);
    assert.equal((await previewGet(p.url, host, p.token ?? undefined)).status, 401);
  } finally {
    await sbx.kill();
  }
});

test("network policy on create, getNetwork and setNetwork (isolate backend)", async (t) => {
  if (process.getuid?.() !== 0) {
    skipUnlessCi(t, "network policies need the isolate backend, which needs root");
    return;
  }
  const iso = await startDaemon(["--backend", "isolate"]);
  try {
    const conn = { url: iso.url, apiKey: iso.apiKey };
    const sbx = await Sandbox.create({ ...conn, network: { egress: "deny", allowOut: ["pypi.org"] } });
    try {
      assert.deepEqual(await sbx.getNetwork(), { egress: "deny", allowOut: ["pypi.org"], denyOut: [] });
      assert.deepEqual(sbx.lastInfo.network, { egress: "deny", allowOut: ["pypi.org"], denyOut: [] });
      const p = await sbx.setNetwork({ egress: "allow", denyOut: ["10.0.0.0/8"] });
      assert.deepEqual(p, { egress: "allow", allowOut: [], denyOut: ["10.0.0.0/8"] });
      await assert.rejects(sbx.setNetwork({ allowOut: ["bad domain"] }), /bad domain/);
    } finally {
      await sbx.kill();
    }
  } finally {
    await iso.stop();
    process.env.SANDPIT_URL = daemon.url;
    process.env.SANDPIT_API_KEY = daemon.apiKey;
  }
});
