/** `sandbox.files` against the real daemon. The test daemon uses the process backend, whose agent runs on this
 * host: every path is under this test's temporary directory. */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, openAsBlob, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { after, before, test } from "node:test";
import { AlreadyExistsError, type FilesystemEvent, InvalidArgumentError, IsADirError, NotEmptyError, NotFoundError, Sandbox } from "sandpit";
import { type Daemon, startDaemon } from "./helpers.js";

let daemon: Daemon;
let dir: string;

before(async () => {
  daemon = await startDaemon();
  dir = mkdtempSync(join(tmpdir(), "sandpit-ts-files-"));
});
after(async () => {
  await daemon?.stop();
  rmSync(dir, { recursive: true, force: true });
});

test("read and write text, bytes, blobs and streams; metadata; errors", async () => {
  const sbx = await Sandbox.create();
  const f = sbx.files;
  const e = await f.write(`${dir}/a/b.txt`, "hello");
  assert.equal(e.type, "file");
  assert.equal(e.size, 5);
  assert.equal(await f.read(`${dir}/a/b.txt`), "hello");
  assert.deepEqual(await f.read(`${dir}/a/b.txt`, { format: "bytes" }), new TextEncoder().encode("hello"));
  assert.equal(await (await f.read(`${dir}/a/b.txt`, { format: "blob" })).text(), "hello");
  // A Node stream in, a web stream out: 3 MiB, hashed on the way.
  const payload = randomBytes(3 * 1024 * 1024 + 5);
  await f.write(`${dir}/big.bin`, Readable.from([payload.subarray(0, 1 << 20), payload.subarray(1 << 20)]));
  const h = createHash("sha256");
  for await (const chunk of (await f.read(`${dir}/big.bin`, { format: "stream" })) as unknown as AsyncIterable<Uint8Array>) {
    h.update(chunk);
  }
  assert.equal(h.digest("hex"), createHash("sha256").update(payload).digest("hex"));
  await f.write(`${dir}/blob.txt`, new Blob(["from ", "a blob"]));
  assert.equal(readFileSync(`${dir}/blob.txt`, "utf8"), "from a blob");
  // A local file as a file-backed Blob: streamed from disk with its length, which takes the daemon's fast path.
  const local = join(dir, "local.bin");
  writeFileSync(local, payload);
  const sized = await f.write(`${dir}/sized.bin`, await openAsBlob(local));
  assert.equal(sized.size, payload.length);
  assert.ok(readFileSync(`${dir}/sized.bin`).equals(payload));
  // Many files in one request, then metadata calls.
  const written = await f.writeFiles([
    ...Array.from({ length: 30 }, (_, i) => ({ path: `${dir}/many/${i}.txt`, data: String(i) })),
    { path: `${dir}/many/run.sh`, data: "#!/bin/sh\n", mode: 0o755 },
    { path: `${dir}/many/${"n".repeat(120)}.txt`, data: "long name" },
  ]);
  assert.equal(written.length, 32);
  assert.equal((await f.getInfo(`${dir}/many/run.sh`)).mode, "0755");
  assert.equal(await f.read(`${dir}/many/${"n".repeat(120)}.txt`), "long name");
  assert.equal((await f.list(`${dir}/many`)).length, 32);
  assert.ok(await f.exists(`${dir}/many`));
  assert.ok(!(await f.exists(`${dir}/nope`)));
  assert.equal(await f.makeDir(`${dir}/x/y`), true);
  assert.equal(await f.makeDir(`${dir}/x/y`), false);
  await f.rename(`${dir}/a/b.txt`, `${dir}/x/y/b.txt`);
  await assert.rejects(f.rename(`${dir}/many/1.txt`, `${dir}/many/2.txt`), AlreadyExistsError);
  await assert.rejects(f.remove(`${dir}/x`, { recursive: false }), NotEmptyError);
  await f.remove(`${dir}/x`);
  await assert.rejects(f.read(`${dir}/nope`), NotFoundError);
  await assert.rejects(f.read(dir), IsADirError);
  assert.equal((await f.chmod(`${dir}/blob.txt`, 0o600)).permissions, "rw-------");
  await sbx.kill();
});

test("watchDir sees writes and renames in order", async () => {
  const sbx = await Sandbox.create();
  const events: FilesystemEvent[] = [];
  const w = await sbx.files.watchDir(dir, (e) => void events.push(e), { recursive: true });
  await sbx.files.write(`${dir}/watched.txt`, "1");
  await sbx.files.rename(`${dir}/watched.txt`, `${dir}/renamed.txt`);
  const deadline = Date.now() + 10_000;
  while (!events.some((e) => e.type === "rename") && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  await w.stop();
  const rename = events.find((e) => e.type === "rename");
  assert.ok(rename, JSON.stringify(events));
  assert.equal(rename.from, `${dir}/watched.txt`);
  assert.equal(rename.to, `${dir}/renamed.txt`);
  assert.deepEqual(events.map((e) => e.seq), [...events.map((e) => e.seq)].sort((a, b) => a - b));
  await sbx.kill();
});

test("signed URLs download and upload with no other credential", async () => {
  const sbx = await Sandbox.create();
  try {
    const f = sbx.files;
    await f.write(`${dir}/report.txt`, "the report");
    const url = await f.downloadUrl(`${dir}/report.txt`);
    const r = await fetch(url);
    assert.equal(r.status, 200);
    assert.equal(await r.text(), "the report");
    const up = await f.uploadUrl(`${dir}/up.bin`, { expiresIn: 60 });
    const put = await fetch(up, { method: "PUT", body: "from a page" });
    assert.equal(put.status, 200, await put.text());
    assert.equal(readFileSync(`${dir}/up.bin`, "utf8"), "from a page");
    const signed = await f.signedUrl(`${dir}/report.txt`, "read", { expiresIn: 120 });
    assert.equal(signed.method, "GET");
    assert.ok(signed.expiresAt instanceof Date && signed.url.endsWith(signed.path));
    const altered = await fetch(url.replace("report", "other"));
    assert.equal(altered.status, 403);
    await altered.body?.cancel();
    await assert.rejects(f.signedUrl(`${dir}/report.txt`, "read", { expiresIn: 0 }), InvalidArgumentError);
  } finally {
    await sbx.kill();
  }
});
