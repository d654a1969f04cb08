/** API keys end to end against the real daemon: made, scoped, listed, revoked; tenants see only their own. */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { AuthenticationError, InvalidArgumentError, Keys, NotFoundError, PermissionDeniedError, Sandbox } from "sandpit";
import { type Daemon, startDaemon } from "./helpers.js";

let daemon: Daemon;

before(async () => {
  daemon = await startDaemon();
});
after(async () => {
  await daemon?.stop();
});

test("keys are made, scoped, listed and revoked; tenants see only their own", async () => {
  const reader = await Keys.create({ name: "ts-reader", scopes: ["read"] });
  const bot = await Keys.create({ name: "ts-bot", scopes: ["sandboxes"], tenant: "ts-team", expiresIn: 3600 });
  assert.ok(bot.key.startsWith(`sp_${bot.id}_`), bot.key);
  assert.equal(bot.tenant, "ts-team");
  assert.deepEqual(bot.scopes, ["sandboxes"]);
  assert.ok(bot.expiresAt instanceof Date);
  const listed = await Keys.list();
  assert.deepEqual(
    listed.map((k) => k.name),
    ["ts-reader", "ts-bot"],
  );
  assert.ok(listed.every((k) => !("key" in k)), "a listed key carries no secret");

  // A read key lists but cannot create.
  await Sandbox.list({ apiKey: reader.key });
  await assert.rejects(Sandbox.create({ apiKey: reader.key }), (e: unknown) => {
    assert.ok(e instanceof PermissionDeniedError, String(e));
    assert.match(e.message, /scope/);
    return true;
  });

  // A sandboxes key creates and runs in its own tenant, but cannot manage keys.
  const sandbox = await Sandbox.create({ apiKey: bot.key });
  try {
    assert.equal((await sandbox.info()).tenant, "ts-team");
    assert.equal((await sandbox.commands.run("echo hi")).stdout, "hi\n");
    await assert.rejects(Keys.list({ apiKey: bot.key }), PermissionDeniedError);
    assert.ok(!(await Sandbox.list({ apiKey: reader.key })).some((s) => s.id === sandbox.id), "other tenant's hidden");
    assert.ok((await Sandbox.list({ apiKey: bot.key })).some((s) => s.id === sandbox.id));
  } finally {
    await sandbox.kill();
  }

  // A sandbox's access token opens that sandbox only; rotation ends the old one.
  const own = await Sandbox.create();
  try {
    const token = own.accessToken;
    assert.ok(token?.startsWith(`spa_${own.id}_`), String(token));
    const scoped = await Sandbox.connect(own.id, { apiKey: token! });
    assert.equal((await scoped.commands.run("echo scoped")).stdout, "scoped\n");
    await assert.rejects(Sandbox.list({ apiKey: token! }), PermissionDeniedError);
    const fresh = await own.rotateAccessToken();
    assert.notEqual(fresh, token);
    assert.equal(own.accessToken, fresh);
    await assert.rejects(scoped.info(), AuthenticationError);
    assert.equal((await (await Sandbox.connect(own.id, { apiKey: fresh })).info()).id, own.id);
  } finally {
    await own.kill();
  }

  // Revocation: the very next call is refused.
  await Keys.revoke(bot.id);
  await assert.rejects(Sandbox.list({ apiKey: bot.key }), AuthenticationError);
  await assert.rejects(Keys.revoke("k_nope"), NotFoundError);
  await assert.rejects(Keys.create({ name: "bad name", scopes: ["read"] }), InvalidArgumentError);
  await assert.rejects(
    Keys.create({ name: "x", scopes: ["root" as unknown as "read"] }),
    InvalidArgumentError,
  );
  await Keys.revoke(reader.id);
});
