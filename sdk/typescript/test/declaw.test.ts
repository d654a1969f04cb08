/** Declaw's surface (seed 003), examples pasted as published (`sbx` is our sandbox). */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { CommandExitError, Sandbox, TimeoutError } from "sandpit";
import type { CommandResult, ProcessInfo, RunOpts, RunStreamOpts } from "sandpit";
import { type Daemon, eventually, seedIO, startDaemon } from "./helpers.js";

let daemon: Daemon;
let sbx: Sandbox;

before(async () => {
  daemon = await startDaemon();
  sbx = await Sandbox.create();
});
after(async () => {
  await sbx?.kill().catch(() => undefined);
  await daemon?.stop();
});

type IO = ReturnType<typeof seedIO>;
async function seed(fn: (console: IO["console"], process: IO["process"]) => Promise<void>): Promise<string> {
  const io = seedIO();
  await fn(io.console, io.process);
  return io.text();
}

test("run: foreground and background", async () => {
  const out = await seed(async (console) => {
    // Foreground — block until complete
    const result: CommandResult = await sbx.commands.run('echo hello');
    console.log(result.stdout);   // "hello\n"
    console.log(result.exitCode); // 0

    // Background — return immediately
    const handle = await sbx.commands.run('sleep 30', { background: true });
    console.log('PID:', handle.pid);
    assert.ok(handle.pid > 0);
    assert.equal(await handle.kill(), true);
  });
  assert.match(out, /^hello\n\n0\nPID: \d+\n$/);
});

test("runStream: live chunks", async () => {
  const out = await seed(async (console, process) => {
    const lines: string[] = [];

    const result = await sbx.commands.runStream(
      'for i in $(seq 1 50); do echo "line $i"; sleep 0.02; done',
      {
        onStdout: (chunk) => {
          process.stdout.write(chunk);
          lines.push(chunk);
        },
        onStderr: (chunk) => process.stderr.write(chunk),
      },
    );
    console.log('Exit code:', result.exitCode);
    assert.ok(lines.length > 1);
  });
  const want = Array.from({ length: 50 }, (_, i) => `line ${i + 1}\n`).join("");
  assert.equal(out, `${want}Exit code: 0\n`);
});

test("list, kill, sendStdin, connect", async () => {
  const handle0 = await sbx.commands.run('sleep 30', { background: true });
  const out = await seed(async (console) => {
    const processes: ProcessInfo[] = await sbx.commands.list();
    for (const p of processes) {
      console.log(p.pid, p.cmd);
    }
  });
  assert.ok(out.includes(`${handle0.pid} sleep 30`), out);
  const listed = (await sbx.commands.list()).find((p) => p.pid === handle0.pid);
  assert.equal(listed?.isPty, false);
  assert.equal(typeof listed?.envs, "object");

  const killed = await sbx.commands.kill(handle0.pid);
  assert.equal(killed, true);
  assert.equal(await sbx.commands.kill(handle0.pid), false, "already dead");
  assert.equal(await sbx.commands.kill(999_999), false, "unknown pid");

  {
    const handle = await sbx.commands.run('cat', { background: true });
    await sbx.commands.sendStdin(handle.pid, 'hello\n');
    await sbx.commands.sendStdin(handle.pid, 'world\n');
    await sbx.getProcess(handle.pid).then((p) => p.writeStdin({ eof: true }));
    const r = await handle.wait();
    assert.equal(r.stdout, "hello\nworld\n");
  }

  const bg = await sbx.commands.run('sleep 0.3; echo late', { background: true });
  {
    const handle = sbx.commands.connect(bg.pid);
    const result = await handle.wait();
    assert.equal(result.stdout, "late\n");
  }
});

test("CommandHandle.wait with callbacks; CommandExitError; disconnect", async () => {
  const out = await seed(async (console) => {
    const handle = await sbx.commands.run('echo 1; sleep 0.1; echo 2 >&2', { background: true });
    console.log('PID:', handle.pid);

    const result = await handle.wait({
      onStdout: (line) => console.log('>', line),
      onStderr: (line) => console.error('!', line),
    });
    console.log('Finished with exit code:', result.exitCode);
  });
  assert.match(out, /^PID: \d+\n> 1\n! 2\nFinished with exit code: 0\n$/);

  const bad = await sbx.commands.run("echo oops >&2; exit 7", { background: true });
  await assert.rejects(bad.wait(), (e: unknown) => e instanceof CommandExitError && e.exitCode === 7 && e.stderr === "oops\n");

  const slow = await sbx.commands.run("sleep 30", { background: true });
  const w = slow.wait({ onStdout: () => {} });
  slow.disconnect();
  await assert.rejects(w);
  assert.equal((await sbx.getProcess(slow.pid)).status, "running", "disconnect leaves the process running");
  await slow.kill();
});

test("examples: node script, env vars, background stdin, streaming", async () => {
  const out = await seed(async (console) => {
    {
      const result = await sbx.commands.run(
        'node -e "console.log(process.version)"',
        { timeout: 10 },
      );
      console.log(result.stdout.trim());
    }
    {
      const result = await sbx.commands.run('echo $SECRET', {
        envs: { SECRET: 'supersecret' },
      });
      console.log(result.stdout.trim());
    }
    {
      const handle = await sbx.commands.run(
        'node -e "process.stdin.on(\'data\', d => process.stdout.write(d.toString().toUpperCase()))"',
        { background: true },
      );

      await new Promise(r => setTimeout(r, 100)); // allow process to start
      await sbx.commands.sendStdin(handle.pid, 'hello\n');
      await eventually(async () => (await sbx.getProcess(handle.pid)).info.stdoutBytes > 0, 5000, "echo");
      await sbx.commands.kill(handle.pid);
      const p = await sbx.getProcess(handle.pid);
      console.log((await p.wait()).stdout.trim());
    }
    {
      const chunks: string[] = [];
      const result = await sbx.commands.runStream(
        'for i in $(seq 1 5); do echo "step $i"; sleep 0.1; done',
        { onStdout: (chunk) => chunks.push(chunk) },
      );
      console.log(`Collected ${chunks.length} chunks, exit code ${result.exitCode}`);
    }
  });
  assert.equal(out, `${process.version}\nsupersecret\nHELLO\nCollected 5 chunks, exit code 0\n`);
});

test("RunOpts: user, cwd, timeout seconds, requestTimeout", async () => {
  const opts = { user: "root", cwd: "/tmp" } satisfies RunOpts;
  const r = await sbx.commands.run("id -un; pwd", opts);
  assert.equal(r.stdout, "root\n/tmp\n");
  await assert.rejects(sbx.commands.run("sleep 5", { timeout: 0.3 }), TimeoutError);
  await assert.rejects(sbx.commands.run("sleep 5 # request-timeout", { requestTimeout: 200 }), TimeoutError);
  await eventually(async () => !(await sbx.commands.list()).some((p) => p.cmd.includes("request-timeout")), 5000, "killed");
  const so: RunStreamOpts = { timeout: 0.3 };
  await assert.rejects(sbx.commands.runStream("sleep 5", so), TimeoutError);
});
