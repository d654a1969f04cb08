/**
 * Warm pools (`Templates.pool`, `Templates.setPool`) end to end against a real `isolate` daemon (root; skipped
 * otherwise, and a failure under CI), with a tiny busybox template built through the SDK as in
 * snapshots.test.ts. Whether a create was served from the pool is read inside the sandbox: a waiting sandbox's
 * first process (pid 1) started before the create was sent, a cold sandbox's during it (`/proc/1/stat` against
 * `/proc/uptime`).
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { after, before, test } from "node:test";
import {
  ConflictError,
  InvalidArgumentError,
  Keys,
  NotFoundError,
  PermissionDeniedError,
  type PoolInfo,
  Sandbox,
  type SandboxInfo,
  type SandboxOpts,
  Templates,
  Tenants,
} from "sandpit";
import { type BusyboxIsolate, IS_ROOT, isolateGuard, killAll, rejectsWith, startBusyboxIsolate } from "./helpers.js";

const NEEDS_ROOT = "warm pools are of templates, which need the isolate backend, which needs root";
/** The busybox template every test starts from. */
const BB = "ts-pool-busybox";
/** How long a pool may take to fill (one sandbox at a time) or to empty, in ms. */
const FILL_MS = 30_000;
/** How long a test waits between a pool being full and taking from it: a pooled sandbox's pid 1 is older. */
const AGE_S = 1.5;
/** The env, metadata and timeout of the creates compared; a pooled sandbox must get them as a cold one does. */
const ENV = { POOL_VAR: "from-the-create", OTHER: "two words" };
const META = { suite: "pools", flavour: "typescript" };
const TIMEOUT_S = 120;
const CREATE: SandboxOpts = { template: BB, env: ENV, metadata: META, timeout: TIMEOUT_S, onTimeout: "pause" };
/** Prints the env, the uptime and pid 1's stat (whose 22nd field is its start time in clock ticks since boot). */
const PROBE = 'echo "$POOL_VAR|$OTHER"; cat /proc/uptime /proc/1/stat';
/** Clock ticks per second, the unit of `/proc/1/stat`'s start time. */
const CLK_TCK = Number(spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).stdout.trim()) || 100;

let bb: BusyboxIsolate | undefined;

before(async () => {
  if (!IS_ROOT) return;
  bb = await startBusyboxIsolate("sandpit-ts-pool-", BB);
});
after(async () => {
  if (bb) {
    // Whatever a failed test left: an emptied pool, so that the daemon stops with nothing waiting.
    await Templates.setPool(BB, 0).catch(() => undefined);
    await waitPool(BB, 0).catch(() => undefined);
  }
  await bb?.stop();
});

/** Whether the isolate daemon is up; skips the test (a failure under CI) when not root. */
const isolate = isolateGuard(NEEDS_ROOT, () => bb);

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `Templates.pool(name)` until `ready` sandboxes wait and none is being made. */
async function waitPool(name: string, ready: number, ms = FILL_MS): Promise<PoolInfo> {
  const end = Date.now() + ms;
  const seen: PoolInfo[] = [];
  for (;;) {
    const p = await Templates.pool(name);
    if (JSON.stringify(seen.at(-1)) !== JSON.stringify(p)) seen.push(p);
    if (p.ready === ready && p.filling === 0) return p;
    if (Date.now() > end) throw new Error(`pool ${name} not at ready=${ready}, filling=0 after ${ms} ms: ${JSON.stringify(seen)}`);
    await sleep(100);
  }
}

/** Seconds pid 1 had run when {@link PROBE} printed `out`. */
function pid1Age(out: string): number {
  const lines = out.split("\n");
  const uptime = Number(lines[1]!.split(" ")[0]);
  const afterComm = lines[2]!.slice(lines[2]!.lastIndexOf(")") + 1).trim().split(/\s+/); // fields 3 ... of the stat
  return uptime - Number(afterComm[19]) / CLK_TCK;
}

interface Probed {
  sbx: Sandbox;
  info: SandboxInfo;
  out: string;
  /** Seconds from before the create to after the probe. */
  elapsed: number;
  before: number;
  after: number;
}

/** Creates a sandbox with `opts` and runs {@link PROBE} in it (the sandbox is killed if that fails). */
async function createAndProbe(opts: SandboxOpts): Promise<Probed> {
  const before = Date.now();
  const start = performance.now();
  const sbx = await Sandbox.create(opts);
  const after = Date.now();
  try {
    const r = await sbx.commands.run(PROBE);
    assert.equal(r.exitCode, 0, r.stderr);
    return { sbx, info: await sbx.info(), out: r.stdout, elapsed: (performance.now() - start) / 1000, before, after };
  } catch (e) {
    await sbx.kill().catch(() => undefined);
    throw e;
  }
}

/** What {@link CREATE} must give, pooled or cold: the env in its commands, the metadata, a deadline from the create. */
function checkCreated(p: Probed, tenant = "default"): void {
  assert.equal(p.out.split("\n")[0], `${ENV.POOL_VAR}|${ENV.OTHER}`, p.out);
  assert.equal(p.info.template, BB);
  assert.equal(p.info.state, "running");
  assert.equal(p.info.tenant, tenant);
  assert.deepEqual(p.info.metadata, META);
  assert.equal(p.info.onTimeout, "pause");
  assert.equal(p.info.env.POOL_VAR, ENV.POOL_VAR);
  assert.equal(p.info.env.OTHER, ENV.OTHER);
  const created = p.info.createdAt.getTime();
  assert.ok(created >= p.before - 1000 && created <= p.after + 1000, `createdAt ${p.info.createdAt.toISOString()}`);
  assert.ok(p.info.expiresAt, "a deadline");
  assert.ok(Math.abs(p.info.expiresAt.getTime() - created - TIMEOUT_S * 1000) <= 1000, `expiresAt ${p.info.expiresAt.toISOString()}`);
  assert.deepEqual([p.info.cpu, p.info.memoryMb, p.info.pids, p.info.diskMb], [null, null, null, null]);
}

/** Served from the pool: pid 1 was up (at least {@link AGE_S}) before the create was sent. */
function assertWarm(p: Probed): void {
  const age = pid1Age(p.out);
  assert.ok(age >= AGE_S + p.elapsed - 0.05, `pid 1 is ${age} s old, the create and probe took ${p.elapsed} s: not pooled`);
}

/** Made cold: pid 1 started during the create. */
function assertCold(p: Probed): void {
  const age = pid1Age(p.out);
  assert.ok(age <= p.elapsed + 0.05, `pid 1 is ${age} s old, the create and probe took ${p.elapsed} s: pooled`);
}

test("a pool fills, serves a create as a cold create would be made, refills, and empties", async (t) => {
  if (!isolate(t)) return;
  const made: Sandbox[] = [];
  try {
    assert.deepEqual(await Templates.pool(BB), { template: BB, size: 0, ready: 0, filling: 0 });

    // Cold first (no pool): what a create of env, metadata and timeout gives.
    const cold = await createAndProbe(CREATE);
    made.push(cold.sbx);
    checkCreated(cold);
    assertCold(cold);
    await cold.sbx.kill();

    const set = await Templates.setPool(BB, 2);
    assert.equal(set.template, BB);
    assert.equal(set.size, 2);
    assert.ok(set.ready + set.filling <= 2, JSON.stringify(set));
    const full = await waitPool(BB, 2);
    assert.deepEqual(full, { template: BB, size: 2, ready: 2, filling: 0 });

    // Waiting sandboxes are in no list and count toward no tenant.
    assert.deepEqual(await Sandbox.list(), []);
    assert.equal((await Tenants.get("default")).usage.sandboxes, 0);

    await sleep(AGE_S * 1000);
    const warm = await createAndProbe(CREATE);
    made.push(warm.sbx);
    const rightAfter = await Templates.pool(BB);
    assert.equal(rightAfter.size, 2);
    assert.equal(rightAfter.ready + rightAfter.filling, 2, JSON.stringify(rightAfter));
    assertWarm(warm);
    checkCreated(warm);
    assert.deepEqual((await Sandbox.list()).map((s) => s.id), [warm.sbx.id]);
    assert.deepEqual((await Sandbox.list({ metadata: { suite: "pools" } })).map((s) => s.id), [warm.sbx.id]);
    assert.equal((await Tenants.get("default")).usage.sandboxes, 1);
    assert.deepEqual(await waitPool(BB, 2), full, "the pool refills");
    assert.deepEqual((await Sandbox.list()).map((s) => s.id), [warm.sbx.id], "the refill is not listed");

    // A create naming a limit is made cold: the pool keeps its sandboxes.
    await sleep(AGE_S * 1000);
    for (const limits of [{ memoryMb: 256 }, { pids: 128 }]) {
      const limited = await createAndProbe({ template: BB, env: ENV, ...limits });
      made.push(limited.sbx);
      assert.deepEqual(await Templates.pool(BB), full, JSON.stringify(limits));
      assertCold(limited);
      assert.equal(limited.out.split("\n")[0], `${ENV.POOL_VAR}|${ENV.OTHER}`);
      assert.equal(limited.info.memoryMb, "memoryMb" in limits ? limits.memoryMb : null);
      assert.equal(limited.info.pids, "pids" in limits ? limits.pids : null);
      await limited.sbx.kill();
      assert.deepEqual(await Templates.pool(BB), full);
    }
    await warm.sbx.kill();
    assert.deepEqual(await Sandbox.list(), []);

    // Size 0 removes the pool: its sandboxes go, and a create is cold again, with the same result.
    const emptied = await Templates.setPool(BB, 0);
    assert.equal(emptied.size, 0);
    assert.deepEqual(await waitPool(BB, 0), { template: BB, size: 0, ready: 0, filling: 0 });
    await sleep(AGE_S * 1000);
    const again = await createAndProbe(CREATE);
    made.push(again.sbx);
    checkCreated(again);
    assertCold(again);
    await again.sbx.kill();
    assert.deepEqual(await Sandbox.list(), []);
  } finally {
    await killAll(made);
    await Templates.setPool(BB, 0).catch(() => undefined);
    await waitPool(BB, 0).catch(() => undefined);
  }
});

test("a pooled sandbox gets the tenant of the key that takes it", async (t) => {
  if (!isolate(t)) return;
  const bot = await Keys.create({ name: "ts-pool-team-bot", scopes: ["sandboxes"], tenant: "ts-pool-team" });
  let sbx: Sandbox | undefined;
  try {
    await Templates.setPool(BB, 1);
    const full = await waitPool(BB, 1);
    await sleep(AGE_S * 1000);
    const p = await createAndProbe({ ...CREATE, apiKey: bot.key });
    sbx = p.sbx;
    assertWarm(p);
    checkCreated(p, "ts-pool-team");
    assert.deepEqual((await Sandbox.list({ apiKey: bot.key })).map((s) => s.id), [sbx.id]);
    assert.deepEqual(await waitPool(BB, 1), full);
    assert.deepEqual((await Sandbox.list({ apiKey: bot.key })).map((s) => s.id), [sbx.id], "the refill is not the tenant's");
  } finally {
    await killAll([sbx]);
    await Keys.revoke(bot.id);
    await Templates.setPool(BB, 0).catch(() => undefined);
    await waitPool(BB, 0).catch(() => undefined);
  }
});

test("refusals: a non-admin key, a bad size or name, an unknown template; a template with a pool is not deleted", async (t) => {
  if (!isolate(t)) return;
  const bot = await Keys.create({ name: "ts-pool-bot", scopes: ["sandboxes"] });
  const DEL = "ts-pool-del";
  try {
    // Any key reads a pool; only an admin key sets one.
    assert.deepEqual(await Templates.pool(BB, { apiKey: bot.key }), { template: BB, size: 0, ready: 0, filling: 0 });
    await rejectsWith(Templates.setPool(BB, 1, { apiKey: bot.key }), PermissionDeniedError, 403, "permission_denied", /admin/);
    assert.equal((await Templates.pool(BB)).size, 0, "a refused set changed nothing");

    await rejectsWith(Templates.setPool(BB, 257), InvalidArgumentError, 400, "invalid_argument", /257/);
    await rejectsWith(Templates.setPool(BB, -1), InvalidArgumentError, 400, "invalid_argument");
    await rejectsWith(Templates.setPool(BB, 1.5), InvalidArgumentError, 400, "invalid_argument");
    await rejectsWith(Templates.setPool("Bad Name", 1), InvalidArgumentError, 400, "invalid_argument");
    await rejectsWith(Templates.setPool("ts-no-such-template", 1), NotFoundError, 404, "not_found", /ts-no-such-template/);
    assert.deepEqual(await Templates.pool("ts-no-such-template"), { template: "ts-no-such-template", size: 0, ready: 0, filling: 0 });
    assert.deepEqual(await Templates.pool(BB), { template: BB, size: 0, ready: 0, filling: 0 });

    // A template with a pool is not deleted until its size is 0; then it is.
    await Templates.create(DEL, { dir: bb!.rootfs });
    await Templates.wait(DEL, { intervalMs: 50 });
    assert.equal((await Templates.setPool(DEL, 1)).size, 1);
    await waitPool(DEL, 1);
    await rejectsWith(Templates.delete(DEL), ConflictError, 409, "conflict");
    assert.equal((await Templates.get(DEL)).name, DEL);
    assert.deepEqual(await Sandbox.list(), []);
    await Templates.setPool(DEL, 0);
    await waitPool(DEL, 0);
    await Templates.delete(DEL);
    await rejectsWith(Templates.get(DEL), NotFoundError, 404, "not_found");
    assert.deepEqual(await Templates.pool(DEL), { template: DEL, size: 0, ready: 0, filling: 0 });
  } finally {
    await Keys.revoke(bot.id);
    await Templates.setPool(DEL, 0).catch(() => undefined);
    await waitPool(DEL, 0).catch(() => undefined);
    await Templates.delete(DEL).catch(() => undefined);
  }
});

test("no pool and no sandbox is left, and the busybox template can be deleted", async (t) => {
  if (!isolate(t)) return;
  assert.deepEqual(await Templates.pool(BB), { template: BB, size: 0, ready: 0, filling: 0 });
  assert.deepEqual(await Sandbox.list(), []);
  await Templates.delete(BB);
});
