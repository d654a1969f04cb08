/** Superserve's surface (seeds 000, 001): commands.run (plain, streaming, idle timeout, abort), commands.spawn. */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { ConflictError, NotFoundError, Sandbox, SandboxError, TimeoutError } from "sandpit";
import { type Daemon, eventually, seedIO, startDaemon } from "./helpers.js";

let daemon: Daemon;
let sandbox: Sandbox;

before(async () => {
  daemon = await startDaemon();
  sandbox = await Sandbox.create({ env: { PATH: `${daemon.binDir}:/usr/local/bin:/usr/bin:/bin` } });
});
after(async () => {
  await sandbox?.kill().catch(() => undefined);
  await daemon?.stop();
});

describe("commands.run", () => {
  test("returns the result; non-zero exit is not an error", async () => {
    const r = await sandbox.commands.run("echo out; echo err >&2; exit 3", { cwd: "/tmp", env: { A: "1" } });
    assert.equal(r.stdout, "out\n");
    assert.equal(r.stderr, "err\n");
    assert.equal(r.exitCode, 3);
    assert.equal(r.status, "exited");
    const w = await sandbox.commands.run('pwd; echo "$A"', { cwd: "/tmp", env: { A: "1" } });
    assert.equal(w.stdout, "/tmp\n1\n");
  });

  test("streams over SSE with callbacks; the final result has everything", async () => {
    const chunks: string[] = [];
    const errs: string[] = [];
    const r = await sandbox.commands.run("for i in 1 2 3; do echo $i; sleep 0.05; done; echo e >&2", {
      onStdout: (d) => chunks.push(d),
      onStderr: (d) => errs.push(d),
    });
    assert.ok(chunks.length >= 2, `got ${chunks.length} chunks`);
    assert.equal(chunks.join(""), "1\n2\n3\n");
    assert.equal(errs.join(""), "e\n");
    assert.equal(r.stdout, "1\n2\n3\n");
    assert.equal(r.exitCode, 0);
  });

  test("streaming timeout is an idle timeout: chatty commands outlive it, silent ones trip it", async () => {
    const r = await sandbox.commands.run("for i in 1 2 3 4 5 6; do echo $i; sleep 0.2; done", {
      timeoutMs: 700,
      onStdout: () => {},
    });
    assert.equal(r.exitCode, 0, "1.2 s of output every 0.2 s never idles 0.7 s");
    await assert.rejects(
      sandbox.commands.run("echo start; sleep 5", { timeoutMs: 500, onStdout: () => {} }),
      (e: unknown) => e instanceof TimeoutError && (e.result as { stdout: string }).stdout === "start\n",
    );
  });

  test("a total timeout without callbacks throws TimeoutError", async () => {
    const t0 = Date.now();
    await assert.rejects(sandbox.commands.run("sleep 5", { timeoutMs: 300 }), TimeoutError);
    assert.ok(Date.now() - t0 < 4000);
  });

  test("signal: AbortSignal aborts mid-execution and kills the command", async () => {
    for (const withCallbacks of [false, true]) {
      const ac = new AbortController();
      const marker = `abort-${withCallbacks}-${Date.now()}`;
      const p = sandbox.commands.run(`sleep 30 # ${marker}`, {
        signal: ac.signal,
        ...(withCallbacks ? { onStdout: () => {} } : {}),
      });
      await eventually(async () => (await sandbox.commands.list()).some((x) => x.cmd.includes(marker)), 5000, "start");
      ac.abort();
      await assert.rejects(p, (e: unknown) => (e as Error).name === "AbortError");
      await eventually(async () => !(await sandbox.commands.list()).some((x) => x.cmd.includes(marker)), 5000, "kill");
    }
  });
});

describe("commands.spawn", () => {
  test("seed 000: python REPL over stdin", async () => {
    const io = seedIO();
    await (async (console: typeof io.console, process: typeof io.process) => {
      {
        const session = await sandbox.commands.spawn("python -i", {
          onStdout: (data) => process.stdout.write(data),
        })

        session.stdin.write("print(2 + 2)\n")
        session.stdin.close() // EOF, so the REPL exits

        const result = await session.wait()
        console.log(`exited ${result.exitCode}`)
      }
    })(io.console, io.process);
    assert.equal(io.text(), "4\nexited 0\n");
  });

  test("stdin bytes, kill(signal), wait, close, await using", async () => {
    const out: string[] = [];
    const s = await sandbox.commands.spawn("cat; echo done-$?", { onStdout: (d) => out.push(d) });
    assert.ok(s.pid > 0);
    await s.stdin.write(new TextEncoder().encode("bytes\n"));
    await s.stdin.write("text\n");
    await s.stdin.close();
    const r = await s.wait();
    assert.equal(r.stdout, "bytes\ntext\ndone-0\n");
    assert.equal(out.join(""), r.stdout);

    const k = await sandbox.commands.spawn("sleep 30");
    await k.kill();
    const kr = await k.wait();
    assert.equal(kr.status, "killed");
    assert.equal(kr.signal, "SIGTERM");
    assert.equal(kr.exitCode, 143);

    // `sh -c` swallows a SIGINT that lands before it execs the command: signal once the program runs.
    let ready!: () => void;
    const isReady = new Promise<void>((r) => (ready = r));
    const k2 = await sandbox.commands.spawn("python3 -u -c \"import time; print('ready'); time.sleep(30)\"", {
      onStdout: (d) => d.includes("ready") && ready(),
    });
    await isReady;
    await k2.kill("SIGINT");
    assert.equal((await k2.wait()).exitCode, 130);

    let id = "";
    {
      await using session = await sandbox.commands.spawn("sleep 30");
      id = session.id;
      assert.equal((await sandbox.getProcess(id)).status, "running");
    }
    await eventually(async () => (await sandbox.getProcess(id)).status === "killed", 5000, "disposed session killed");

    const c = await sandbox.commands.spawn("sleep 30");
    const waiting = c.wait().then(
      (r) => r.status,
      (e: unknown) => (e instanceof SandboxError ? "rejected" : e),
    );
    await c.close();
    // close() kills, then drops the socket: wait() sees the kill or the closed socket, whichever comes first.
    assert.ok(["killed", "rejected"].includes(String(await waiting)));
    await eventually(async () => (await sandbox.getProcess(c.id)).status === "killed", 5000, "closed session killed");
  });

  test("spawn options (cwd, env, timeoutMs, tty) and resize", async () => {
    const s = await sandbox.commands.spawn('pwd; echo "$X"', { cwd: "/tmp", env: { X: "y" } });
    assert.equal((await s.wait()).stdout, "/tmp\ny\n");
    const t = await sandbox.commands.spawn("sleep 30", { timeoutMs: 300 });
    await assert.rejects(t.wait(), TimeoutError);
    const out: string[] = [];
    const pty = await sandbox.commands.spawn("sh", { tty: { cols: 80, rows: 24 }, onStdout: (d) => out.push(d) });
    await pty.resize(132, 43);
    await pty.stdin.write("stty size; exit\n");
    const r = await pty.wait();
    assert.match(r.stdout, /43 132/);
    assert.equal(out.join(""), r.stdout);
  });

  test("session.wait() rejects when the sandbox goes away; errors map to classes", async () => {
    const other = await Sandbox.create();
    const s = await other.commands.spawn("sleep 30");
    const waiting = s.wait();
    await other.kill();
    await assert.rejects(waiting, SandboxError);
    await assert.rejects(other.commands.run("true"), NotFoundError);
    await assert.rejects(Sandbox.connect(other.id), NotFoundError);
    const p = await sandbox.processes.start("true");
    await p.wait();
    await assert.rejects(p.signal("TERM"), ConflictError);
  });
});
