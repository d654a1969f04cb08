/**
 * Volumes end to end against a real `isolate` daemon (root; skipped otherwise, and a failure under CI): create,
 * list, get, mount into sandboxes (two at once, one read-only; through a fork too), the size cap, refusals, data
 * that outlives every sandbox, delete. The sandboxes start from a tiny busybox template built through the SDK as
 * in snapshots.test.ts. The last test checks that a `process` daemon refuses volumes with 409; it runs without
 * root.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, test } from "node:test";
import {
  ConflictError,
  InvalidArgumentError,
  Keys,
  NotFoundError,
  Sandbox,
  SandboxError,
  type SandboxInfo,
  Templates,
  type VolumeInfo,
  Volumes,
} from "sandpit";
import {
  type BusyboxIsolate,
  IS_ROOT,
  isolateGuard,
  killAll,
  rejectsWith,
  sh,
  startBusyboxIsolate,
  startDaemon,
} from "./helpers.js";

const NEEDS_ROOT = "volumes need the isolate backend, which needs root";
/** The busybox template every sandbox starts from. */
const BB = "ts-vol-busybox";
/** The volume of the main test. */
const VOL = "ts-vol";
const VOL_MB = 32;

let bb: BusyboxIsolate | undefined;

before(async () => {
  if (!IS_ROOT) return;
  bb = await startBusyboxIsolate("sandpit-ts-vol-", BB);
});
after(async () => {
  await bb?.stop();
});

/** Whether the isolate daemon is up; skips the test (a failure under CI) when not root. */
const isolate = isolateGuard(NEEDS_ROOT, () => bb);

/** Runs a shell command that must fail; returns its stderr. */
async function fails(sbx: Sandbox, cmd: string, user?: string): Promise<string> {
  const r = await sbx.commands.run(cmd, user === undefined ? {} : { user });
  assert.notEqual(r.exitCode, 0, `${cmd} succeeded: stdout ${r.stdout}`);
  return r.stderr;
}

/** Deletes volumes if they are there: cleanup after a test that may have failed midway. */
async function forget(...names: string[]): Promise<void> {
  for (const name of names) await Volumes.delete(name).catch(() => undefined);
}

function sorted(ids: string[]): string[] {
  return [...ids].sort();
}

test("create, list and get a volume; bad names, sizes and a taken name are refused", async (t) => {
  if (!isolate(t)) return;
  const made = await Volumes.create("ts-vol-meta", 16);
  try {
    assert.equal(made.name, "ts-vol-meta");
    assert.equal(made.sizeMb, 16);
    assert.ok(Number.isInteger(made.usedMb) && made.usedMb >= 0 && made.usedMb < 16, `usedMb ${made.usedMb}`);
    assert.equal(made.tenant, "default");
    assert.ok(made.createdAt instanceof Date && Math.abs(made.createdAt.getTime() - Date.now()) < 600_000, String(made.createdAt));
    assert.deepEqual(made.mountedBy, []);
    assert.deepEqual(await Volumes.get("ts-vol-meta"), made);
    const listed = await Volumes.list();
    assert.deepEqual(listed.find((v) => v.name === "ts-vol-meta"), made, listed.map((v) => v.name).join(","));

    await rejectsWith(Volumes.create("ts-vol-meta", 16), ConflictError, 409, "conflict");
    await rejectsWith(Volumes.create("Bad Name", 16), InvalidArgumentError, 400, "invalid_argument", /volume name/);
    await rejectsWith(Volumes.create(".hidden", 16), InvalidArgumentError, 400, "invalid_argument");
    await rejectsWith(Volumes.create("x".repeat(65), 16), InvalidArgumentError, 400, "invalid_argument");
    await rejectsWith(Volumes.create("ts-vol-tiny", 15), InvalidArgumentError, 400, "invalid_argument", /size_mb 15/);
    await rejectsWith(Volumes.create("ts-vol-huge", 1048577), InvalidArgumentError, 400, "invalid_argument", /size_mb/);
    await rejectsWith(Volumes.get("ts-vol-tiny"), NotFoundError, 404, "not_found");
    await rejectsWith(Volumes.get("ts-no-such"), NotFoundError, 404, "not_found");
    await rejectsWith(Volumes.delete("ts-no-such"), NotFoundError, 404, "not_found");
    assert.deepEqual(
      (await Volumes.list()).map((v) => v.name).filter((n) => n.startsWith("ts-vol-")),
      ["ts-vol-meta"],
      "nothing made by a refused create",
    );

    await Volumes.delete("ts-vol-meta");
    await rejectsWith(Volumes.get("ts-vol-meta"), NotFoundError, 404, "not_found");
  } finally {
    await forget("ts-vol-meta");
  }
});

test("a volume: two sandboxes at once (one read-only), its size cap, a fork, refusals, data that outlives them", async (t) => {
  if (!isolate(t)) return;
  const secret = `written by user ${randomBytes(8).toString("hex")}`;
  let a: Sandbox | undefined;
  let b: Sandbox | undefined;
  let fork: Sandbox | undefined;
  let c: Sandbox | undefined;
  try {
    const vol = await Volumes.create(VOL, VOL_MB);
    assert.equal(vol.sizeMb, VOL_MB);
    assert.deepEqual(vol.mountedBy, []);

    // Mounted read-write in one sandbox and read-only at another path in a second, at the same time.
    a = await Sandbox.create({ template: BB, volumes: [{ name: VOL, path: "/data" }] });
    b = await Sandbox.create({ template: BB, volumes: [{ name: VOL, path: "/mnt/ro", readOnly: true }] });
    assert.deepEqual(a.lastInfo.volumes, [{ name: VOL, path: "/data", readOnly: false }]);
    assert.deepEqual(b.lastInfo.volumes, [{ name: VOL, path: "/mnt/ro", readOnly: true }]);
    assert.deepEqual((await a.info()).volumes, [{ name: VOL, path: "/data", readOnly: false }]);
    assert.deepEqual((await b.info()).volumes, [{ name: VOL, path: "/mnt/ro", readOnly: true }]);
    const listed = await Sandbox.list();
    const volumesOf = (id: string): SandboxInfo["volumes"] | undefined => listed.find((s) => s.id === id)?.volumes;
    assert.deepEqual(volumesOf(a.id), [{ name: VOL, path: "/data", readOnly: false }]);
    assert.deepEqual(volumesOf(b.id), [{ name: VOL, path: "/mnt/ro", readOnly: true }]);

    // Its root belongs to `user`, who writes there; the other sandbox reads it at once, owned by `user`.
    assert.equal((await sh(a, "id -un")).trim(), "user");
    assert.equal((await sh(a, "busybox stat -c %U /data")).trim(), "user");
    await sh(a, `echo '${secret}' > /data/hello.txt`);
    assert.equal((await sh(b, "cat /mnt/ro/hello.txt")).trim(), secret);
    assert.equal((await sh(b, "busybox stat -c %U /mnt/ro/hello.txt")).trim(), "user");
    assert.equal(await b.files.read("/mnt/ro/hello.txt"), `${secret}\n`, "the files API sees the mount too");
    await a.files.write("/data/via-files.txt", "through the files API\n");
    assert.equal((await sh(b, "cat /mnt/ro/via-files.txt")).trim(), "through the files API");

    // Read-only is the mount's, not a permission: root cannot write there either.
    assert.match(await fails(b, "echo no > /mnt/ro/nope.txt"), /Read-only file system/);
    assert.match(await fails(b, "echo no > /mnt/ro/nope.txt", "root"), /Read-only file system/);
    assert.match(await fails(b, "busybox rm /mnt/ro/hello.txt", "root"), /Read-only file system/);
    assert.equal((await sh(a, "cat /data/hello.txt")).trim(), secret);

    // The size cap: writing more than the volume holds fails inside the sandbox.
    const full = await fails(a, `busybox dd if=/dev/zero of=/data/big bs=1M count=${VOL_MB * 2}`);
    assert.match(full, /No space left/);
    const whenFull = await Volumes.get(VOL);
    assert.ok(whenFull.usedMb >= VOL_MB / 2 && whenFull.usedMb <= VOL_MB, `usedMb ${whenFull.usedMb} of ${VOL_MB}`);
    assert.ok(
      Number((await sh(a, "busybox stat -c %s /data/big")).trim()) < VOL_MB * 1024 * 1024,
      "the file stopped at the cap",
    );
    await sh(a, "busybox rm /data/big");
    await sh(a, "echo room again > /data/after-rm.txt");
    assert.ok((await Volumes.get(VOL)).usedMb < whenFull.usedMb, "the space came back");

    // Who mounts it; it is not deleted while they do.
    const mounted = await Volumes.get(VOL);
    assert.deepEqual(sorted(mounted.mountedBy), sorted([a.id, b.id]));
    assert.deepEqual(sorted((await Volumes.list()).find((v) => v.name === VOL)?.mountedBy ?? []), sorted([a.id, b.id]));
    await rejectsWith(Volumes.delete(VOL), ConflictError, 409, "conflict", /mounted by sandbox\(es\)/);
    const aId = a.id;
    await assert.rejects(Volumes.delete(VOL), (e: unknown) => e instanceof SandboxError && e.message.includes(aId));

    // Refused mounts make no sandbox.
    const before = (await Sandbox.list()).length;
    const refuse = (volumes: { name: string; path: string; readOnly?: boolean }[]) => Sandbox.create({ template: BB, volumes });
    await rejectsWith(refuse([{ name: VOL, path: "/proc/x" }]), InvalidArgumentError, 400, "invalid_argument", /\/proc/);
    await rejectsWith(refuse([{ name: VOL, path: "/" }]), InvalidArgumentError, 400, "invalid_argument");
    await rejectsWith(refuse([{ name: VOL, path: "data" }]), InvalidArgumentError, 400, "invalid_argument");
    await rejectsWith(refuse([{ name: VOL, path: "/a/../b" }]), InvalidArgumentError, 400, "invalid_argument");
    await rejectsWith(refuse([{ name: VOL, path: "/run/sandpit/x" }]), InvalidArgumentError, 400, "invalid_argument");
    await rejectsWith(
      refuse([
        { name: VOL, path: "/twice" },
        { name: VOL, path: "/twice", readOnly: true },
      ]),
      InvalidArgumentError,
      400,
      "invalid_argument",
      /two volumes at \/twice/,
    );
    await rejectsWith(refuse([{ name: "ts-no-such", path: "/x" }]), NotFoundError, 404, "not_found", /ts-no-such/);
    await rejectsWith(a.fork({ volumes: [{ name: "ts-no-such", path: "/x" }] }), NotFoundError, 404, "not_found");
    await rejectsWith(a.fork({ volumes: [{ name: VOL, path: "/sys/x" }] }), InvalidArgumentError, 400, "invalid_argument");
    assert.equal((await Sandbox.list()).length, before);
    assert.ok((await Templates.list()).every((x) => !x.autoRemove), "no fork snapshot left behind");

    // A fork mounts what its request names (the same volume, elsewhere): the volume is shared, not copied.
    const r = await a.fork({ volumes: [{ name: VOL, path: "/home/user/vol" }] });
    assert.equal(r.sandboxes.length, 1);
    fork = r.sandboxes[0]!;
    assert.deepEqual(fork.lastInfo.volumes, [{ name: VOL, path: "/home/user/vol", readOnly: false }]);
    assert.deepEqual((await fork.info()).volumes, [{ name: VOL, path: "/home/user/vol", readOnly: false }]);
    assert.equal((await sh(fork, "cat /home/user/vol/hello.txt")).trim(), secret);
    await sh(fork, "echo from the fork > /home/user/vol/fork.txt");
    assert.equal((await sh(a, "cat /data/fork.txt")).trim(), "from the fork");
    assert.equal((await sh(b, "cat /mnt/ro/fork.txt")).trim(), "from the fork");
    // The source's mount is not part of the fork's snapshot: /data there is not the volume.
    assert.notEqual((await fork.commands.run("cat /data/hello.txt")).exitCode, 0, "the volume's files were copied into the fork");
    assert.deepEqual(sorted((await Volumes.get(VOL)).mountedBy), sorted([a.id, b.id, fork.id]));

    // With every sandbox gone, nothing mounts it, and a new one finds the files.
    await fork.kill();
    await a.kill();
    await b.kill();
    assert.deepEqual((await Volumes.get(VOL)).mountedBy, []);
    c = await Sandbox.create({ template: BB, volumes: [{ name: VOL, path: "/again" }] });
    assert.equal((await sh(c, "cat /again/hello.txt")).trim(), secret);
    assert.equal((await sh(c, "busybox stat -c %U /again/hello.txt")).trim(), "user");
    assert.equal((await sh(c, "cat /again/fork.txt")).trim(), "from the fork");
    assert.equal(await c.files.exists("/again/big"), false);
    assert.deepEqual((await Volumes.get(VOL)).mountedBy, [c.id]);
    await c.kill();

    await Volumes.delete(VOL);
    await rejectsWith(Volumes.get(VOL), NotFoundError, 404, "not_found");
    assert.ok((await Volumes.list()).every((v) => v.name !== VOL));
    await rejectsWith(Volumes.delete(VOL), NotFoundError, 404, "not_found");
    await rejectsWith(Sandbox.create({ template: BB, volumes: [{ name: VOL, path: "/data" }] }), NotFoundError, 404, "not_found");
  } finally {
    await killAll([fork, a, b, c]);
    await forget(VOL);
  }
});

test("a volume made again under a deleted one's name starts empty", async (t) => {
  if (!isolate(t)) return;
  let sbx: Sandbox | undefined;
  try {
    await Volumes.create("ts-vol-again", 16);
    sbx = await Sandbox.create({ template: BB, volumes: [{ name: "ts-vol-again", path: "/v" }] });
    await sh(sbx, "echo old > /v/old.txt");
    await sbx.kill();
    await Volumes.delete("ts-vol-again");
    const fresh = await Volumes.create("ts-vol-again", 16);
    assert.deepEqual(fresh.mountedBy, []);
    sbx = await Sandbox.create({ template: BB, volumes: [{ name: "ts-vol-again", path: "/v" }] });
    assert.equal(await sbx.files.exists("/v/old.txt"), false);
    assert.equal((await sh(sbx, "busybox stat -c %U /v")).trim(), "user");
  } finally {
    await killAll([sbx]);
    await forget("ts-vol-again");
  }
});

test("a tenant's key sees, mounts and deletes its own tenant's volumes only", async (t) => {
  if (!isolate(t)) return;
  const bot = await Keys.create({ name: "ts-vol-bot", scopes: ["sandboxes"], tenant: "ts-vol-team" });
  const asBot = { apiKey: bot.key };
  let mine: Sandbox | undefined;
  try {
    const theirs: VolumeInfo = await Volumes.create("ts-vol-team-data", 16, asBot);
    assert.equal(theirs.tenant, "ts-vol-team");
    const admins = await Volumes.create("ts-vol-admin-data", 16);
    assert.equal(admins.tenant, "default");

    assert.deepEqual((await Volumes.list(asBot)).map((v) => v.name), ["ts-vol-team-data"]);
    const all = (await Volumes.list()).map((v) => v.name);
    assert.ok(all.includes("ts-vol-team-data") && all.includes("ts-vol-admin-data"), all.join(","));
    await rejectsWith(Volumes.get("ts-vol-admin-data", asBot), NotFoundError, 404, "not_found");
    await rejectsWith(Volumes.delete("ts-vol-admin-data", asBot), NotFoundError, 404, "not_found");
    await rejectsWith(
      Sandbox.create({ ...asBot, template: BB, volumes: [{ name: "ts-vol-admin-data", path: "/x" }] }),
      NotFoundError,
      404,
      "not_found",
    );
    // The name space is the daemon's: another tenant cannot take a name in use.
    await rejectsWith(Volumes.create("ts-vol-admin-data", 16, asBot), ConflictError, 409, "conflict");

    mine = await Sandbox.create({ ...asBot, template: BB, volumes: [{ name: "ts-vol-team-data", path: "/team" }] });
    assert.equal(mine.lastInfo.tenant, "ts-vol-team");
    await sh(mine, "echo team > /team/t.txt");
    assert.deepEqual((await Volumes.get("ts-vol-team-data", asBot)).mountedBy, [mine.id]);
    await mine.kill();
    await Volumes.delete("ts-vol-team-data", asBot);
    await Volumes.delete("ts-vol-admin-data");
    assert.ok((await Volumes.list()).every((v) => !v.name.startsWith("ts-vol-")));
  } finally {
    await killAll([mine]);
    await forget("ts-vol-team-data", "ts-vol-admin-data");
    await Keys.revoke(bot.id);
  }
});

test("every volume is gone and the busybox template can be deleted", async (t) => {
  if (!isolate(t)) return;
  assert.deepEqual((await Volumes.list()).map((v) => v.name), []);
  assert.deepEqual((await Sandbox.list()).map((s) => s.id), []);
  await Templates.delete(BB);
});

test("a process-backend daemon refuses volumes with 409", async () => {
  const env = { url: process.env.SANDPIT_URL, key: process.env.SANDPIT_API_KEY };
  const proc = await startDaemon();
  try {
    const conn = { url: proc.url, apiKey: proc.apiKey };
    const isolateOnly = /volumes need the `isolate` backend/;
    await rejectsWith(Volumes.create("ts-x", 16, conn), ConflictError, 409, "conflict", isolateOnly);
    await rejectsWith(Volumes.list(conn), ConflictError, 409, "conflict", isolateOnly);
    await rejectsWith(Volumes.get("ts-x", conn), ConflictError, 409, "conflict", isolateOnly);
    await rejectsWith(Volumes.delete("ts-x", conn), ConflictError, 409, "conflict", isolateOnly);
    await rejectsWith(Sandbox.create({ ...conn, volumes: [{ name: "ts-x", path: "/x" }] }), ConflictError, 409, "conflict", isolateOnly);
    assert.deepEqual(await Sandbox.list(conn), [], "no sandbox was made");
  } finally {
    await proc.stop();
    if (env.url !== undefined) process.env.SANDPIT_URL = env.url;
    if (env.key !== undefined) process.env.SANDPIT_API_KEY = env.key;
  }
});
