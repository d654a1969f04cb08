/**
 * Per-sandbox metrics end to end against the real daemon (sampling every 300 ms, see `startDaemon`): a busy
 * sandbox's cpu, its memory and processes, the start/end filter, the SSE stream, and the errors.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { InvalidArgumentError, type MetricSample, NotFoundError, Sandbox } from "sandpit";
import { type Daemon, eventually, rejectsWith, startDaemon } from "./helpers.js";

let daemon: Daemon;

before(async () => {
  daemon = await startDaemon();
});
after(async () => {
  await daemon?.stop();
});

test("a sandbox spinning a cpu shows it in its samples, with its memory and processes", async () => {
  const sandbox = await Sandbox.create();
  try {
    await sandbox.commands.run("while :; do :; done", { background: true });
    let samples: MetricSample[] = [];
    await eventually(
      async () => {
        samples = await sandbox.metrics();
        return samples.some((s) => s.cpuUsedPct > 50);
      },
      15_000,
      "a sample with cpuUsedPct > 50",
    );
    const busy = samples.find((s) => s.cpuUsedPct > 50)!;
    assert.ok(busy.timestamp instanceof Date && !Number.isNaN(busy.timestamp.getTime()));
    assert.ok(busy.cpuCount > 0, JSON.stringify(busy));
    assert.ok(busy.cpuUsedPct <= 100 * busy.cpuCount + 10, JSON.stringify(busy));
    assert.ok(busy.memUsed > 0, JSON.stringify(busy));
    assert.ok(busy.pids >= 1, JSON.stringify(busy));
    for (const s of samples) {
      for (const v of [s.cpuUsedPct, s.cpuCount, s.memUsed, s.memLimit, s.diskUsed, s.diskLimit, s.pids]) {
        assert.ok(typeof v === "number" && v >= 0, JSON.stringify(s));
      }
    }
    for (let i = 1; i < samples.length; i++) assert.ok(samples[i].timestamp > samples[i - 1].timestamp, "oldest first");
  } finally {
    await sandbox.kill();
  }
});

test("samples filter by start and end (inclusive), stream as they are taken, and refuse bad parameters", async () => {
  const sandbox = await Sandbox.create();
  try {
    let samples: MetricSample[] = [];
    await eventually(
      async () => {
        samples = await sandbox.metrics();
        return samples.length >= 3;
      },
      15_000,
      "three samples",
    );
    const mid = samples[1].timestamp;
    for (const t of [mid, mid.toISOString(), mid.getTime()]) {
      const one = await sandbox.metrics({ start: t, end: t });
      assert.deepEqual(
        one.map((s) => s.timestamp),
        [mid],
        String(t),
      );
      const from = await sandbox.metrics({ start: t });
      assert.deepEqual(from[0]?.timestamp, mid, String(t));
      assert.ok(from.length >= samples.length - 1);
      const upTo = await sandbox.metrics({ end: t });
      assert.deepEqual(
        upTo.map((s) => s.timestamp),
        samples.slice(0, 2).map((s) => s.timestamp),
        String(t),
      );
    }
    assert.deepEqual(await sandbox.metrics({ start: new Date("2999-01-01T00:00:00Z") }), []);

    // The stream: the latest sample already taken, then each new one.
    const latest = (await sandbox.metrics()).at(-1)!;
    const got: MetricSample[] = [];
    for await (const s of sandbox.metricsStream({ signal: AbortSignal.timeout(15_000) })) {
      got.push(s);
      if (got.length === 2) break;
    }
    assert.ok(got[0].timestamp >= latest.timestamp, `${got[0].timestamp.toISOString()} < ${latest.timestamp.toISOString()}`);
    assert.ok(got[1].timestamp > got[0].timestamp);
    assert.ok(got[1].memUsed > 0 && got[1].pids >= 1, JSON.stringify(got[1]));

    await rejectsWith(sandbox.metrics({ start: "yesterday" }), InvalidArgumentError, 400, "invalid_argument");
  } finally {
    await sandbox.kill();
  }
  await rejectsWith(sandbox.metrics(), NotFoundError, 404, "not_found");
  await assert.rejects(sandbox.metricsStream().next(), NotFoundError);
});

test("an ended process reports its cpu time and peak memory; a running one none yet", async () => {
  const sandbox = await Sandbox.create();
  try {
    const p = await sandbox.processes.start(
      "python3 -c 'import time\nx = bytearray(64 << 20)\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass'",
    );
    assert.equal(p.info.resources, null);
    await p.wait();
    const info = await p.refresh();
    assert.equal(info.status, "exited", JSON.stringify(info));
    const r = info.resources!;
    assert.ok(r.cpuUserMs + r.cpuSystemMs >= 300, JSON.stringify(r));
    assert.ok(r.maxRssBytes >= 64 * 1024 * 1024, JSON.stringify(r));
  } finally {
    await sandbox.kill();
  }
});
