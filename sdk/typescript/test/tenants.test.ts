/** Tenant quotas end to end against the real daemon: set, read, and a create over a quota refused with 429. */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import {
  InvalidArgumentError,
  Keys,
  NotFoundError,
  PermissionDeniedError,
  ResourceExhaustedError,
  Sandbox,
  Tenants,
} from "sandpit";
import { type Daemon, startDaemon } from "./helpers.js";

let daemon: Daemon;

before(async () => {
  daemon = await startDaemon();
});
after(async () => {
  await daemon?.stop();
});

test("quotas are set, read, and refuse a create over them with 429", async () => {
  const t = await Tenants.setQuotas("ts-quota", { maxSandboxes: 1, maxMemoryMb: 256 });
  assert.deepEqual(t.quotas, { maxSandboxes: 1, maxCreatesPerSecond: null, maxMemoryMb: 256, maxDiskMb: null });
  assert.equal(t.usage.sandboxes, 0);
  const bot = await Keys.create({ name: "ts-quota-bot", scopes: ["sandboxes"], tenant: "ts-quota" });
  const sbx = await Sandbox.create({ apiKey: bot.key, memoryMb: 128 });
  try {
    await assert.rejects(Sandbox.create({ apiKey: bot.key, memoryMb: 64 }), (e: unknown) => {
      assert.ok(e instanceof ResourceExhaustedError, String(e));
      assert.equal(e.code, "quota_exceeded");
      assert.equal(e.retryAfter, 5);
      assert.match(e.message, /max_sandboxes quota \(1\)/);
      return true;
    });
    await Tenants.setQuotas("ts-quota", { maxSandboxes: 5, maxMemoryMb: 256 });
    await assert.rejects(Sandbox.create({ apiKey: bot.key }), InvalidArgumentError);
    const own = await Tenants.get("ts-quota", { apiKey: bot.key });
    assert.deepEqual([own.usage.sandboxes, own.usage.memoryMb], [1, 128]);
    await assert.rejects(Tenants.get("default", { apiKey: bot.key }), NotFoundError);
    await assert.rejects(Tenants.setQuotas("ts-quota", {}, { apiKey: bot.key }), PermissionDeniedError);
    assert.ok((await Tenants.list()).some((x) => x.name === "ts-quota"));
  } finally {
    await sbx.kill();
  }
  await Tenants.setQuotas("ts-quota", { maxCreatesPerSecond: 0.1 });
  const first = await Sandbox.create({ apiKey: bot.key });
  try {
    await assert.rejects(Sandbox.create({ apiKey: bot.key }), (e: unknown) => {
      assert.ok(e instanceof ResourceExhaustedError, String(e));
      assert.equal(e.code, "rate_limited");
      assert.ok(e.retryAfter !== undefined && e.retryAfter >= 1 && e.retryAfter <= 10, String(e.retryAfter));
      return true;
    });
  } finally {
    await first.kill();
  }
  await assert.rejects(Tenants.setQuotas("ts-quota", { maxCreatesPerSecond: 0 }), InvalidArgumentError);
  const cleared = await Tenants.setQuotas("ts-quota", {});
  assert.deepEqual(cleared.quotas, { maxSandboxes: null, maxCreatesPerSecond: null, maxMemoryMb: null, maxDiskMb: null });
  await Keys.revoke(bot.id);
});
