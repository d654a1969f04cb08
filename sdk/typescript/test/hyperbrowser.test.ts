/** Hyperbrowser's surface (seed 004): exec with options, processes.start/list, getProcess, signal, wait, stream. */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Sandbox } from "sandpit";
import { type Daemon, seedIO, startDaemon } from "./helpers.js";

let daemon: Daemon;
let sandbox: Sandbox;

before(async () => {
  daemon = await startDaemon();
  sandbox = await Sandbox.create();
});
after(async () => {
  await sandbox?.kill().catch(() => undefined);
  await daemon?.stop();
});

type IO = ReturnType<typeof seedIO>;
async function seed(fn: (console: IO["console"]) => Promise<void>): Promise<string> {
  const io = seedIO();
  await fn(io.console);
  return io.text();
}

test("seed: run a command", async () => {
  const out = await seed(async (console) => {
    const result = await sandbox.exec("node -v");

    console.log("Exit code:", result.exitCode);
    console.log("Stdout:", result.stdout.trim());
    console.log("Stderr:", result.stderr.trim());
  });
  assert.equal(out, `Exit code: 0\nStdout: ${process.version}\nStderr: \n`);
});

test("seed: request-scoped options", async () => {
  const result = await sandbox.exec("pwd && echo $FOO && whoami", {
    cwd: "/tmp",
    env: {
      FOO: "bar",
    },
    timeoutMs: 5_000,
    runAs: "root",
  });
  assert.equal(result.exitCode, 0);
  assert.equal(result.stdout.toString(), "/tmp\nbar\nroot\n");
  const slow = await sandbox.exec("sleep 5", { timeoutMs: 200 });
  assert.equal(slow.status.state, "timed_out");
});

test("seed: background process with stdin", async () => {
  const out = await seed(async (console) => {
    const process = await sandbox.processes.start(
      "read line; echo stdout:$line; echo stderr:$line 1>&2",
      {
        runAs: "root",
      }
    );

    await process.writeStdin({
      data: "hello\n",
      eof: true,
    });

    const result = await process.wait();
    console.log(result.stdout);
    console.log(result.stderr);
  });
  assert.equal(out, "stdout:hello\n\nstderr:hello\n\n");
});

test("seed: get, list, and signal processes", async () => {
  const out = await seed(async (console) => {
    const process = await sandbox.processes.start("sleep 30", {
      runAs: "root",
    });

    const fetched = await sandbox.getProcess(process.id);
    const listing = await sandbox.processes.list({
      status: "running",
      limit: 20,
    });

    await fetched.signal("TERM");
    const result = await fetched.wait();

    console.log(listing.data.map((entry) => entry.id));
    console.log(result.status);
    assert.ok(listing.data.some((e) => e.id === process.id));
    assert.equal((await fetched.result()).exitCode, 143, "result() is wait()");
  });
  assert.match(out, /^\[ '[^']+'.*\]\nkilled\n$/s);
  const one = await sandbox.processes.list({ limit: 1 });
  assert.equal(one.data.length, 1);
  const byPid = await sandbox.getProcess(one.data[0]!.pid);
  assert.equal(byPid.id, one.data[0]!.id);
});

test("seed: stream process output", async () => {
  const out = await seed(async (console) => {
    const process = await sandbox.processes.start("echo stream-out; echo stream-err 1>&2");

    for await (const event of process.stream()) {
      if (event.type === "exit") {
        console.log("Exited with:", event.result.exitCode);
        break;
      }

      console.log(event.type, event.data);
    }
  });
  // stdout and stderr are separate pipes: the agent may record either chunk first.
  const [a, b, exit] = out.split("\n\n");
  assert.deepEqual([a, b].sort(), ["stderr stream-err", "stdout stream-out"]);
  assert.equal(exit, "Exited with: 0\n");
});

test("ProcessHandle extras: writeStdin(string), kill, refresh, stream fromSeq, status values", async () => {
  const p = await sandbox.processes.start("cat");
  await p.writeStdin("abc");
  await p.writeStdin({ eof: true });
  const r = await p.wait();
  assert.equal(r.stdout, "abc");
  assert.equal(r.status, "exited");
  const seqs: number[] = [];
  for await (const ev of p.stream({ fromSeq: 1 })) if (ev.type === "stdout") seqs.push(ev.seq);
  assert.deepEqual(seqs, [1]);
  const k = await sandbox.processes.start("sleep 30");
  assert.equal((await k.refresh()).status, "running");
  assert.equal(await k.kill(), true);
  assert.equal((await k.wait()).status, "killed");
  const f = await sandbox.processes.start("cd /nonexistent-dir-xyz", { cwd: "/nonexistent-dir-xyz" });
  const fr = await f.wait();
  assert.equal(fr.status, "failed");
  assert.ok(fr.error);
});
