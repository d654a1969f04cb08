/**
 * Templates, snapshots and forks end to end against a real `isolate` daemon (root; skipped otherwise, and a
 * failure under CI). The daemon gets an import root holding a tiny busybox root filesystem, built into a template
 * through the SDK, so that exporting and importing stay small (the default `base` template is the host's /usr).
 * The last test checks that a `process` daemon refuses these calls with 409; it runs without root.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { createWriteStream, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { after, before, test } from "node:test";
import {
  ConflictError,
  InvalidArgumentError,
  Keys,
  NotFoundError,
  PermissionDeniedError,
  Sandbox,
  TemplateBuildError,
  type TemplateInfo,
  Templates,
} from "sandpit";
import {
  type BusyboxIsolate,
  eventually,
  IS_ROOT,
  isolateGuard,
  rejectsWith,
  sh,
  startBusyboxIsolate,
  startDaemon,
} from "./helpers.js";

const NEEDS_ROOT = "templates, snapshots and forks need the isolate backend, which needs root";
/** The busybox template every test starts from. */
const BB = "ts-busybox";

let bb: BusyboxIsolate | undefined;
let importRoot = "";
let built: TemplateInfo;
const buildLog: string[] = [];

before(async () => {
  if (!IS_ROOT) return;
  bb = await startBusyboxIsolate("sandpit-ts-import-", BB, (line) => buildLog.push(line));
  ({ importRoot, built } = bb);
  const build = bb.created;
  assert.equal(build.name, BB);
  assert.deepEqual(build.source, { dir: join(importRoot, "rootfs") });
  assert.ok(build.state === "building" || build.state === "ready", build.state);
  assert.ok(build.startedAt instanceof Date && !Number.isNaN(build.startedAt.getTime()));
});
after(async () => {
  await bb?.stop();
});

/** Whether the isolate daemon is up; skips the test (a failure under CI) when not root. */
const isolate = isolateGuard(NEEDS_ROOT, () => bb);

/** The SHA-256 of a file in the sandbox, by busybox. */
async function sha256In(sbx: Sandbox, path: string): Promise<string> {
  return (await sh(sbx, `busybox sha256sum ${path}`)).split(" ")[0]!;
}

function sha256(data: string | Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

/** Deletes a template if it is there: cleanup after a test that may have failed midway. */
async function forget(...names: string[]): Promise<void> {
  for (const name of names) await Templates.delete(name).catch(() => undefined);
}

test("a template is built from a directory: create, wait, buildStatus, list, get", async (t) => {
  if (!isolate(t)) return;
  const rootfs = join(importRoot, "rootfs");
  assert.equal(built.name, BB);
  assert.equal(built.source, `directory ${rootfs}`);
  assert.equal(built.parent, null);
  assert.equal(built.tenant, null);
  assert.equal(built.autoRemove, false);
  assert.ok(built.createdAt instanceof Date && Math.abs(built.createdAt.getTime() - Date.now()) < 600_000, String(built.createdAt));
  assert.ok(buildLog.some((l) => l.includes(rootfs)), buildLog.join("\n"));
  assert.equal(new Set(buildLog).size, buildLog.length, `a log line was handed over twice: ${buildLog.join(" | ")}`);

  const status = await Templates.buildStatus(BB);
  assert.equal(status.state, "ready");
  assert.deepEqual(status.template, built);
  assert.ok(status.finishedAt instanceof Date);
  assert.deepEqual(await Templates.get(BB), built);
  // (`base` is listed once the daemon has built it from the host, which it may still be doing.)
  const listed = await Templates.list();
  assert.deepEqual(listed.find((x) => x.name === BB), built, listed.map((x) => x.name).join(","));

  await rejectsWith(Templates.get("ts-no-such"), NotFoundError, 404, "not_found");
  await rejectsWith(Templates.create(BB, { dir: rootfs }), ConflictError, 409, "conflict");
  await rejectsWith(Templates.create("ts-outside", { dir: "/etc" }), InvalidArgumentError, 400, "invalid_argument", /import roots/);

  // A build that fails in the daemon: wait() rejects with the build.
  writeFileSync(join(importRoot, "bad.tar"), "not a tar archive\n");
  await Templates.create("ts-bad", { tar: join(importRoot, "bad.tar") });
  await assert.rejects(Templates.wait("ts-bad", { intervalMs: 50 }), (e: unknown) => {
    assert.ok(e instanceof TemplateBuildError, String(e));
    assert.equal(e.code, "template_build_failed");
    assert.equal(e.build.state, "failed");
    assert.match(e.build.error ?? "", /bad\.tar/);
    assert.match(e.message, /ts-bad/);
    return true;
  });
  await rejectsWith(Templates.get("ts-bad"), NotFoundError, 404, "not_found");

  // Commands run as `user` in it.
  const sbx = await Sandbox.create({ template: BB });
  try {
    assert.equal(sbx.lastInfo.template, BB);
    assert.equal((await sh(sbx, "id -un")).trim(), "user");
    assert.equal((await sh(sbx, "id -un", "root")).trim(), "root");
  } finally {
    await sbx.kill();
  }
});

test("snapshot: what was written before is in the new template, what was written after is not", async (t) => {
  if (!isolate(t)) return;
  const before = `written before the snapshot ${randomBytes(8).toString("hex")}\n`;
  const src = await Sandbox.create({ template: BB });
  let from: Sandbox | undefined;
  try {
    await src.files.write("/home/user/before.txt", before);
    await sh(src, "echo root was here > /etc/root-file", "root");
    assert.equal(await sha256In(src, "/home/user/before.txt"), sha256(before));

    const snap = await src.snapshot("ts-snap");
    assert.equal(snap.template.name, "ts-snap");
    assert.equal(snap.template.parent, BB);
    assert.equal(snap.template.tenant, "default");
    assert.equal(snap.template.autoRemove, false);
    assert.match(snap.template.source, new RegExp(`snapshot of sandbox ${src.id}`));
    assert.ok(snap.bytes >= before.length, `bytes ${snap.bytes}`);
    assert.ok(snap.entries >= 2, `entries ${snap.entries}`);
    assert.ok(typeof snap.frozenMs === "number" && snap.frozenMs >= 0, String(snap.frozenMs));
    assert.deepEqual(await Templates.get("ts-snap"), snap.template);
    await rejectsWith(src.snapshot("ts-snap"), ConflictError, 409, "conflict");
    await rejectsWith(src.snapshot("Bad Name"), InvalidArgumentError, 400, "invalid_argument");

    await src.files.write("/home/user/after.txt", "written after the snapshot\n");
    assert.equal((await sh(src, "echo running")).trim(), "running", "the source keeps running");

    from = await Sandbox.create({ template: "ts-snap" });
    assert.equal(from.lastInfo.template, "ts-snap");
    assert.equal(await sha256In(from, "/home/user/before.txt"), sha256(before));
    assert.equal(await from.files.read("/home/user/before.txt"), before);
    assert.equal((await sh(from, "busybox stat -c %U:%G /home/user/before.txt")).trim(), "user:user");
    assert.equal((await sh(from, "cat /etc/root-file")).trim(), "root was here");
    assert.equal(await from.files.exists("/home/user/after.txt"), false);
    assert.notEqual((await from.commands.run("cat /home/user/after.txt")).exitCode, 0);

    // Not deleted while used: by a sandbox (the snapshot), by a sandbox and a snapshot layered over it (BB).
    await rejectsWith(Templates.delete("ts-snap"), ConflictError, 409, "conflict", /in use/);
    await rejectsWith(Templates.delete(BB), ConflictError, 409, "conflict");
    await from.kill();
    await src.kill();
    // With no sandbox left, the snapshot still holds its parent.
    await rejectsWith(Templates.delete(BB), ConflictError, 409, "conflict", /ts-snap/);
    await Templates.delete("ts-snap");
    await rejectsWith(Templates.get("ts-snap"), NotFoundError, 404, "not_found");
  } finally {
    await from?.kill();
    await src.kill();
    await forget("ts-snap");
  }
});

test("fork: count sandboxes that see the source's files, carry the options, and diverge", async (t) => {
  if (!isolate(t)) return;
  const shared = `shared ${randomBytes(8).toString("hex")}\n`;
  const metadata = { case: "ts-fork", run: String(process.pid) };
  const src = await Sandbox.create({ template: BB });
  let forks: Sandbox[] = [];
  try {
    await src.files.write("/home/user/shared.txt", shared);
    const bg = await src.commands.run("sleep 300", { background: true });
    const r = await src.fork({ count: 2, metadata, env: { FORKED: "yes" }, timeout: 120 });
    forks = r.sandboxes;

    assert.equal(r.snapshot.template.autoRemove, true);
    assert.equal(r.snapshot.template.parent, BB);
    assert.equal(r.snapshot.template.tenant, "default");
    assert.match(r.snapshot.template.source, new RegExp(`fork of sandbox ${src.id}`));
    assert.ok(r.snapshot.bytes >= shared.length, `bytes ${r.snapshot.bytes}`);
    assert.equal(forks.length, 2);
    assert.equal(new Set([src.id, ...forks.map((f) => f.id)]).size, 3, "new ids");
    for (const f of forks) {
      assert.ok(f instanceof Sandbox);
      assert.equal(f.lastInfo.state, "running");
      assert.equal(f.lastInfo.template, r.snapshot.template.name);
      assert.deepEqual(f.lastInfo.metadata, metadata);
      assert.deepEqual(f.lastInfo.env, { FORKED: "yes" });
      assert.ok(f.lastInfo.expiresAt && f.lastInfo.expiresAt.getTime() - Date.now() <= 121_000, String(f.lastInfo.expiresAt));
      assert.ok(f.accessToken?.startsWith(`spa_${f.id}_`), String(f.accessToken));
      assert.equal(await sha256In(f, "/home/user/shared.txt"), sha256(shared));
      assert.equal((await sh(f, "echo $FORKED")).trim(), "yes");
      // Files are copied, processes are not.
      assert.ok(!(await f.commands.list()).some((p) => p.cmd === "sleep 300"), "the source's process is not in the fork");
    }
    assert.ok((await src.commands.list()).some((p) => p.pid === bg.pid), "the source's process still runs");
    assert.deepEqual(
      (await Sandbox.list({ metadata })).map((s) => s.id).sort(),
      forks.map((f) => f.id).sort(),
    );

    // They diverge: from each other and from the source.
    const [a, b] = forks as [Sandbox, Sandbox];
    await a.files.write("/home/user/mine.txt", "a\n");
    await b.files.write("/home/user/mine.txt", "b\n");
    await src.files.write("/home/user/shared.txt", "changed in the source\n");
    assert.equal(await a.files.read("/home/user/mine.txt"), "a\n");
    assert.equal(await b.files.read("/home/user/mine.txt"), "b\n");
    assert.equal(await src.files.exists("/home/user/mine.txt"), false);
    assert.equal(await sha256In(a, "/home/user/shared.txt"), sha256(shared));
    assert.equal(await sha256In(b, "/home/user/shared.txt"), sha256(shared));

    // Each fork's access token opens that fork, as a created sandbox's does.
    const viaToken = await Sandbox.connect(a.id, { apiKey: a.accessToken ?? "" });
    assert.equal(await viaToken.files.read("/home/user/mine.txt"), "a\n");
    await rejectsWith(Sandbox.connect(b.id, { apiKey: a.accessToken ?? "" }), NotFoundError, 404, "not_found");

    // The fork's snapshot is deleted with the last sandbox using it.
    const snapName = r.snapshot.template.name;
    assert.ok((await Templates.list()).some((x) => x.name === snapName && x.autoRemove));
    await a.kill();
    assert.equal((await Templates.get(snapName)).name, snapName, "kept while a fork uses it");
    await b.kill();
    await eventually(
      async () => (await Templates.list()).every((x) => x.name !== snapName),
      10_000,
      `the fork's snapshot ${snapName} to be removed`,
    );
  } finally {
    for (const f of forks) await f.kill();
    await src.kill();
  }
});

test("a fork with a bad count or a template is refused with 400, and makes nothing", async (t) => {
  if (!isolate(t)) return;
  const src = await Sandbox.create({ template: BB, metadata: { case: "ts-bad-fork" } });
  try {
    const before = (await Sandbox.list()).length;
    await rejectsWith(src.fork({ count: 0 }), InvalidArgumentError, 400, "invalid_argument", /count 0/);
    await rejectsWith(src.fork({ count: 101 }), InvalidArgumentError, 400, "invalid_argument", /count 101/);
    await rejectsWith(src.fork({ count: 1.5 }), InvalidArgumentError, 400, "invalid_argument", /count/);
    // Not in the type, but a JavaScript caller may pass it: the daemon says why not.
    await rejectsWith(src.fork({ template: BB } as never), InvalidArgumentError, 400, "invalid_argument", /template/);
    await rejectsWith(src.fork({ memoryMb: 1 }), InvalidArgumentError, 400, "invalid_argument");
    assert.equal((await Sandbox.list()).length, before);
    assert.ok((await Templates.list()).every((x) => !x.autoRemove), "no fork snapshot left behind");
  } finally {
    await src.kill();
  }
});

test("export, then importArchive from bytes, a file and a stream: sandboxes from them have the same files", async (t) => {
  if (!isolate(t)) return;
  const content = randomBytes(64 * 1024);
  const src = await Sandbox.create({ template: BB });
  const made: Sandbox[] = [];
  const templates: string[] = [];
  const archive = join(importRoot, "exported.tar.zst");
  try {
    await src.files.write("/home/user/data.bin", content);
    await src.snapshot("ts-exp");
    templates.push("ts-exp");

    const bytes = await Templates.export("ts-exp", { format: "bytes" });
    assert.deepEqual([...bytes.subarray(0, 4)], [0x28, 0xb5, 0x2f, 0xfd], "a zstd frame");
    assert.ok(bytes.length > 100_000, `${bytes.length} bytes (busybox alone is larger)`);
    await pipeline(Readable.fromWeb((await Templates.export("ts-exp")) as never), createWriteStream(archive));
    assert.ok(statSync(archive).size > 100_000, `${statSync(archive).size} bytes written`);
    const blob = await Templates.export("ts-exp", { format: "blob" });
    assert.ok(blob.size > 100_000);

    const fromBytes = await Templates.importArchive("ts-imp-bytes", bytes);
    templates.push("ts-imp-bytes");
    const fromFile = await Templates.importArchive("ts-imp-file", archive);
    templates.push("ts-imp-file");
    // Straight from one call to the other, never held whole.
    const fromStream = await Templates.importArchive("ts-imp-stream", await Templates.export("ts-exp"));
    templates.push("ts-imp-stream");
    const fromBlob = await Templates.importArchive("ts-imp-blob", blob);
    templates.push("ts-imp-blob");
    for (const info of [fromBytes, fromFile, fromStream, fromBlob]) {
      assert.ok(info.name.startsWith("ts-imp-"));
      assert.equal(info.parent, null, "an import is a template of its own");
      assert.equal(info.tenant, null);
      assert.equal(info.autoRemove, false);
      assert.deepEqual(await Templates.get(info.name), info);
      const sbx = await Sandbox.create({ template: info.name });
      made.push(sbx);
      assert.equal(await sha256In(sbx, "/home/user/data.bin"), sha256(content), info.name);
      assert.equal((await sh(sbx, "id -un")).trim(), "user");
    }

    await rejectsWith(Templates.importArchive("ts-imp-bytes", bytes), ConflictError, 409, "conflict", /already exists/);
    // Streamed (a path): the daemon reads a refused upload to its end before answering, so the client gets
    // the 409 (regression: it answered at once and closed, and Node's fetch saw EPIPE instead).
    await rejectsWith(Templates.importArchive("ts-imp-file", archive), ConflictError, 409, "conflict", /already exists/);
    assert.equal((await Templates.get("ts-imp-file")).source, fromFile.source, "the template is untouched");
    await rejectsWith(
      Templates.importArchive("ts-garbage", new TextEncoder().encode("not an archive")),
      InvalidArgumentError,
      400,
      "invalid_argument",
      /archive/,
    );
    await rejectsWith(Templates.importArchive("", bytes), InvalidArgumentError, 400, "invalid_argument");
    await rejectsWith(
      Templates.importArchive("ts-missing-file", join(importRoot, "no-such.tar.zst")),
      InvalidArgumentError,
      undefined,
      "invalid_argument",
      /no-such\.tar\.zst/,
    );
    await rejectsWith(Templates.export("ts-no-such"), NotFoundError, 404, "not_found");
    assert.ok((await Templates.list()).every((x) => x.name !== "ts-garbage"));
    for (const sbx of [...made, src]) await sbx.kill();
    for (const name of templates) await Templates.delete(name);
    const left = (await Templates.list()).map((x) => x.name);
    assert.deepEqual(left.filter((n) => n.startsWith("ts-imp") || n === "ts-exp"), []);
  } finally {
    for (const sbx of [...made, src]) await sbx.kill();
    await forget(...templates.reverse(), "ts-garbage");
  }
});

test("a tenant's key sees global templates and its own snapshots only", async (t) => {
  if (!isolate(t)) return;
  const bot = await Keys.create({ name: "ts-snap-bot", scopes: ["sandboxes"], tenant: "ts-team" });
  const asBot = { apiKey: bot.key };
  const mine = await Sandbox.create({ ...asBot, template: BB });
  const admins = await Sandbox.create({ template: BB });
  try {
    const teamSnap = await mine.snapshot("ts-team-snap");
    assert.equal(teamSnap.template.tenant, "ts-team");
    await admins.snapshot("ts-default-snap");

    const seen = (await Templates.list(asBot)).map((x) => x.name);
    assert.ok(seen.includes(BB) && seen.includes("ts-team-snap"), seen.join(","));
    assert.ok(!seen.includes("ts-default-snap"), seen.join(","));
    await rejectsWith(Templates.get("ts-default-snap", asBot), NotFoundError, 404, "not_found");
    await rejectsWith(Templates.export("ts-default-snap", asBot), NotFoundError, 404, "not_found");
    const all = (await Templates.list()).map((x) => x.name);
    assert.ok(all.includes("ts-team-snap") && all.includes("ts-default-snap"), all.join(","));

    // Its own snapshot starts its sandboxes; the global template is not its to delete or replace.
    const again = await Sandbox.create({ ...asBot, template: "ts-team-snap" });
    assert.equal(again.lastInfo.tenant, "ts-team");
    await again.kill();
    await rejectsWith(Templates.delete(BB, asBot), PermissionDeniedError, 403, "permission_denied");
    await rejectsWith(Templates.create("ts-bot-made", { dir: join(importRoot, "rootfs") }, asBot), PermissionDeniedError, 403, "permission_denied");
    await rejectsWith(Templates.importArchive("ts-bot-import", new Uint8Array(16), asBot), PermissionDeniedError, 403, "permission_denied");
    await mine.kill();
    await admins.kill();
    await Templates.delete("ts-team-snap", asBot);
    await rejectsWith(Templates.get("ts-team-snap"), NotFoundError, 404, "not_found");
  } finally {
    await mine.kill();
    await admins.kill();
    await forget("ts-team-snap", "ts-default-snap");
    await Keys.revoke(bot.id);
  }
});

test("the busybox template is deleted once nothing uses it", async (t) => {
  if (!isolate(t)) return;
  await Templates.delete(BB);
  await rejectsWith(Templates.get(BB), NotFoundError, 404, "not_found");
  await rejectsWith(Sandbox.create({ template: BB }), NotFoundError, 404, "not_found");
});

test("a process-backend daemon refuses templates, snapshots and forks with 409", async () => {
  const env = { url: process.env.SANDPIT_URL, key: process.env.SANDPIT_API_KEY };
  const proc = await startDaemon();
  try {
    const conn = { url: proc.url, apiKey: proc.apiKey };
    await rejectsWith(Templates.list(conn), ConflictError, 409, "conflict");
    await rejectsWith(Templates.export("base", conn), ConflictError, 409, "conflict");
    await rejectsWith(Templates.importArchive("ts-x", new Uint8Array(16), conn), ConflictError, 409, "conflict");
    const sbx = await Sandbox.create(conn);
    try {
      for (const call of [() => sbx.snapshot("ts-x"), () => sbx.fork({ count: 1 })]) {
        await rejectsWith(call(), ConflictError, 409, "conflict", /snapshots need the `isolate` backend/);
      }
    } finally {
      await sbx.kill();
    }
  } finally {
    await proc.stop();
    if (env.url !== undefined) process.env.SANDPIT_URL = env.url;
    if (env.key !== undefined) process.env.SANDPIT_API_KEY = env.key;
  }
});
