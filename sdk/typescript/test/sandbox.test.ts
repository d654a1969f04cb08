/** Sandbox lifecycle, configuration (options, environment, key file) and error mapping. */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { AuthenticationError, InvalidArgumentError, NotFoundError, Sandbox, SandboxError } from "sandpit";
import { type Daemon, startDaemon } from "./helpers.js";

let daemon: Daemon;

before(async () => {
  daemon = await startDaemon();
});
after(async () => {
  await daemon?.stop();
});

test("create, info, list, pause, resume, setTimeout, connect, kill", async () => {
  const sandbox = await Sandbox.create({ metadata: { suite: "lifecycle" }, env: { GREETING: "hi" }, timeout: 120 });
  assert.match(sandbox.id, /^[a-z0-9]+$/);
  assert.equal(sandbox.sandboxId, sandbox.id);
  const info = await sandbox.info();
  assert.equal(info.state, "running");
  assert.equal(info.template, "base");
  assert.equal(info.metadata.suite, "lifecycle");
  assert.ok(info.createdAt instanceof Date);
  assert.ok(info.expiresAt && info.expiresAt.getTime() - Date.now() > 100_000);

  const all = await Sandbox.list();
  assert.ok(all.some((s) => s.id === sandbox.id));
  const tagged = await Sandbox.list({ metadata: { suite: "lifecycle" } });
  assert.deepEqual(tagged.map((s) => s.id), [sandbox.id]);
  assert.equal((await Sandbox.list({ metadata: { suite: "nope" } })).length, 0);
  assert.ok((await Sandbox.list({ state: "running" })).some((s) => s.id === sandbox.id));

  assert.equal((await sandbox.pause()).state, "paused");
  assert.equal((await Sandbox.list({ state: "paused" })).map((s) => s.id).includes(sandbox.id), true);
  assert.equal((await sandbox.resume()).state, "running");

  const t = await sandbox.setTimeout(600_000);
  assert.ok(t.expiresAt && t.expiresAt.getTime() - Date.now() > 500_000);

  await sandbox.pause();
  const looked = await Sandbox.get(sandbox.id);
  assert.equal(looked.lastInfo.state, "paused", "get does not resume");
  assert.equal((await sandbox.info()).state, "paused");
  const again = await Sandbox.connect(sandbox.id);
  assert.equal(again.lastInfo.state, "running", "connect resumes a paused sandbox");
  const r = await again.commands.run("echo $GREETING");
  assert.equal(r.stdout, "hi\n");

  await sandbox.pause();
  const auto = await sandbox.commands.run("echo auto-resumed");
  assert.equal(auto.stdout, "auto-resumed\n", "a command on a paused sandbox resumes it");

  assert.equal(await sandbox.isRunning(), true);
  assert.equal(await sandbox.kill(), true);
  assert.equal(await sandbox.kill(), false);
  await assert.rejects(sandbox.info(), NotFoundError);
  await assert.rejects(Sandbox.get(sandbox.id), NotFoundError);
  const s2 = await Sandbox.create("base");
  assert.equal(await Sandbox.kill(s2.id), true);
});

test("the agent's own log is readable", async () => {
  const sandbox = await Sandbox.create();
  try {
    assert.match(await sandbox.logs(), /agent listening/);
    assert.equal((await sandbox.logs({ tailBytes: 10 })).length, 10);
    await assert.rejects(sandbox.logs({ tailBytes: 2 ** 40 }), (e: unknown) => e instanceof InvalidArgumentError && /tail_bytes/.test(e.message));
  } finally {
    await sandbox.kill();
  }
});

test("URL and key from options, environment, or the key file", async () => {
  const { SANDPIT_URL, SANDPIT_API_KEY } = process.env;
  try {
    delete process.env.SANDPIT_URL;
    delete process.env.SANDPIT_API_KEY;
    const viaOpts = await Sandbox.create({ url: daemon.url, apiKey: daemon.apiKey });
    await viaOpts.kill();

    process.env.SANDPIT_URL = daemon.url;
    process.env.SANDPIT_STATE_DIR = daemon.stateDir;
    const viaFile = await Sandbox.create();
    assert.equal(viaFile.client.config.apiKey, daemon.apiKey, "read $SANDPIT_STATE_DIR/api-key");
    await viaFile.kill();
    delete process.env.SANDPIT_STATE_DIR;

    delete process.env.SANDPIT_URL;
    const def = await Sandbox.create({ apiKey: "x" }).catch((e: unknown) => e);
    assert.ok(def instanceof SandboxError);
    assert.match((def as Error).message, /127\.0\.0\.1:7070|AuthenticationError|unauth/i);
  } finally {
    process.env.SANDPIT_URL = SANDPIT_URL;
    process.env.SANDPIT_API_KEY = SANDPIT_API_KEY;
  }
});

test("errors carry the server's code and message", async () => {
  const bad = await Sandbox.create({ apiKey: "wrong" }).catch((e: unknown) => e);
  assert.ok(bad instanceof AuthenticationError);
  assert.equal(bad.code, "unauthenticated");
  assert.equal(bad.status, 401);
  assert.match(bad.message, /API key/);

  const nf = await Sandbox.connect("doesnotexist").catch((e: unknown) => e);
  assert.ok(nf instanceof NotFoundError);
  assert.equal(nf.code, "not_found");

  const inv = await Sandbox.create({ template: "no-such-template" }).catch((e: unknown) => e);
  assert.ok(inv instanceof SandboxError, String(inv));
  assert.ok(inv instanceof NotFoundError || inv instanceof InvalidArgumentError, String(inv));

  const sandbox = await Sandbox.create();
  const badArg = await sandbox.execWith("true", (b) => b.stdinPipe()).catch((e: unknown) => e);
  assert.ok(badArg instanceof InvalidArgumentError, "stdin pipe needs a streaming call");
  const badId = await sandbox.processes.start("true", { id: "bad id!" }).catch((e: unknown) => e);
  assert.ok(badId instanceof InvalidArgumentError, String(badId));
  assert.equal(badId.code, "invalid_argument");
  assert.equal(badId.status, 400);
  await sandbox.kill();
});
