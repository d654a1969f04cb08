/** microsandbox's surface (seed 002): exec, execWith, execStream(With), shell(Stream), ExecHandle, attach*. */
import assert from "node:assert/strict";
import { PassThrough, Writable } from "node:stream";
import { after, before, test } from "node:test";
import { type ExecEvent, ExecOutput, Sandbox } from "sandpit";
import { type Daemon, eventually, seedIO, startDaemon } from "./helpers.js";

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

const dec = new TextDecoder();

test("seed: exec(cmd, args)", async () => {
  const io = seedIO();
  await (async (console: typeof io.console) => {
    const result = await sandbox.exec("python3", ["-c", "print(1 + 1)"]);
    console.log(result.stdout()); // "2\n"
    console.log(result.code); // 0
  })(io.console);
  assert.equal(io.text(), "2\n\n0\n");
});

test("exec: argv (no shell), exit codes, binary output, ExecOutput accessors", async () => {
  const r = await sandbox.exec("sh", ["-c", 'printf "\\377\\376"; echo e >&2; exit 5']);
  assert.ok(r instanceof ExecOutput);
  assert.equal(r.code, 5);
  assert.equal(r.success, false);
  assert.equal(r.status.code, 5);
  assert.equal(r.status.success, false);
  assert.deepEqual(r.stdoutBytes(), new Uint8Array([0xff, 0xfe]));
  assert.equal(r.stderr(), "e\n");
  assert.deepEqual(r.stderrBytes(), new TextEncoder().encode("e\n"));
  const a = await sandbox.exec("echo", new Set(["$HOME", "a b"]));
  assert.equal(a.stdout(), "$HOME a b\n", "args are not shell-expanded");
  const nf = await sandbox.exec("no-such-program-xyz");
  assert.equal(nf.code, 127);
});

test("seed: execWith builder (args, cwd, env, timeout) and the other setters", async () => {
  // The seed's /app is a per-test directory here (the process backend shares the host's filesystem).
  const app = (await sandbox.shell("d=$(mktemp -d); mkdir $d/lib; echo 'import os; print(os.getcwd(), os.environ[\"PYTHONPATH\"])' > $d/script.py; echo $d")).stdout().trim();
  {
    const out = await sandbox.execWith("python3", (e) =>
      e.args(["script.py"])
        .cwd(app)
        .env("PYTHONPATH", `${app}/lib`)
        .timeout(30_000),
    );
    assert.equal(out.stdout(), `${app} ${app}/lib\n`);
  }
  await sandbox.shell(`rm -rf ${app}`);
  const out = await sandbox.execWith("python3", (e) =>
    e.args(["-c", "import os,sys; print(os.getcwd(), os.environ['PYTHONPATH'], sys.stdin.read())"])
      .cwd("/tmp")
      .env("PYTHONPATH", "/app/lib")
      .timeout(30_000)
      .stdinBytes("in"),
  );
  assert.equal(out.stdout(), "/tmp /app/lib in\n");
  const r = await sandbox.execWith("sh", (b) =>
    b.arg("-c").arg("id -un; ulimit -n; ulimit -Hn; echo $X$Y; test -t 0 && echo tty").user("root").envs({ X: "1" }).envs([["Y", "2"]]).rlimit("nofile", 64).stdinNull().tty(false),
  );
  assert.equal(r.stdout(), "root\n64\n64\n12\n");
  const rr = await sandbox.execWith("sh", (b) => b.args(["-c", "ulimit -Sn; ulimit -Hn"]).rlimitRange("nofile", 32, 48));
  assert.equal(rr.stdout(), "32\n48\n");
  const t = await sandbox.execWith("sh", (b) => b.args(["-c", "test -t 1 && echo tty"]).tty(true));
  assert.equal(t.stdout().trim(), "tty");
  const to = await sandbox.execWith("sleep", (b) => b.args(["5"]).timeout(200));
  assert.equal(to.status.state, "timed_out");
  assert.equal(to.code, 137);
});

test("seed: execStream with for await; recv, wait, collect", async () => {
  const io = seedIO();
  await (async (process: typeof io.process) => {
    const handle = await sandbox.execStream("sh", ["-c", "echo a; sleep 0.1; echo b"]);
    for await (const event of handle) {
      if (event.kind === "stdout") process.stdout.write(event.data);
      if (event.kind === "exited") break;
    }
  })(io.process);
  assert.equal(io.text(), "a\nb\n");

  const h = await sandbox.execStream("sh", ["-c", "echo out; echo err >&2; exit 3"]);
  const first = await h.recv();
  assert.equal(first?.kind, "started");
  assert.ok(first?.kind === "started" && first.pid > 0);
  const st = await h.wait();
  assert.equal(st.code, 3);
  const col = await h.collect();
  assert.equal(col.stdout(), "out\n");
  assert.equal(col.stderr(), "err\n");
  assert.equal(col.code, 3);
  assert.equal(await h.recv(), null);
});

test("execStreamWith: stdinPipe + takeStdin, signal, kill, await using", async () => {
  const h = await sandbox.execStreamWith("cat", (b) => b.stdinPipe());
  const sink = await h.takeStdin();
  assert.ok(sink);
  assert.equal(await h.takeStdin(), null);
  await sink.write("one ");
  await sink.write(new TextEncoder().encode("two"));
  await sink.close();
  const out = await h.collect();
  assert.equal(out.stdout(), "one two");
  assert.equal(out.success, true);

  const h3 = await sandbox.execStreamWith("wc", (b) => b.args(["-c"]).stdinPipe());
  {
    await using sink = (await h3.takeStdin())!;
    await sink.write("12345");
  } // disposing the sink closes stdin
  assert.equal((await h3.collect()).stdout().trim(), "5");

  const none = await sandbox.execStream("true");
  assert.equal(await none.takeStdin(), null, "no pipe, no writer");
  await none.wait();

  const s = await sandbox.execStream("sleep", ["30"]);
  await s.signal(15);
  assert.equal((await s.wait()).code, 143);
  const s2 = await sandbox.execStream("sleep", ["30"]);
  await s2.signal("INT");
  assert.equal((await s2.wait()).code, 130);
  const k = await sandbox.execStream("sleep", ["30"]);
  await k.kill();
  const ks = await k.wait();
  assert.equal(ks.code, 137);
  assert.equal(ks.state, "killed");

  let id = "";
  {
    await using h2 = await sandbox.execStream("sleep", ["30"]);
    id = h2.id;
  }
  await eventually(async () => (await sandbox.getProcess(id)).status === "killed", 5000, "disposed handle killed");
});

test("shell and shellStream", async () => {
  const r = await sandbox.shell("ls -d / && echo done | tr a-z A-Z");
  assert.equal(r.stdout(), "/\nDONE\n");
  const h = await sandbox.shellStream("echo x >&2; exit 2");
  const evs: ExecEvent[] = [];
  for await (const ev of h) evs.push(ev);
  assert.deepEqual(evs.map((e) => e.kind), ["started", "stderr", "exited"]);
  const last = evs[2];
  assert.ok(last?.kind === "exited" && last.code === 2);
  assert.equal(dec.decode((evs[1] as { data: Uint8Array }).data), "x\n");
});

/** A fake terminal: keystrokes in, output captured, a size and a resize event. */
function fakeTerminal(): { input: PassThrough; output: Writable & { columns: number; rows: number }; text: () => string } {
  let buf = "";
  const output = new Writable({
    write(chunk: Buffer, _enc, cb) {
      buf += chunk.toString();
      cb();
    },
  }) as Writable & { columns: number; rows: number };
  output.columns = 100;
  output.rows = 30;
  return { input: new PassThrough(), output, text: () => buf };
}

test("attachWith: PTY bridge, resize, exit code", async () => {
  const t = fakeTerminal();
  const p = sandbox.attachWith("sh", (a) => a.cwd("/tmp").env("EDITOR", "vim").io(t.input, t.output));
  await eventually(() => t.text().length > 0 || true, 100);
  t.input.write("stty size; echo $EDITOR; pwd\n");
  await eventually(() => t.text().includes("/tmp"), 5000, "attach output");
  assert.match(t.text(), /30 100/);
  t.output.columns = 120;
  t.output.rows = 40;
  t.output.emit("resize");
  await new Promise((r) => setTimeout(r, 200));
  t.input.write("stty size; exit 4\n");
  const code = await p;
  assert.equal(code, 4);
  assert.match(t.text(), /vim/);
  assert.match(t.text(), /40 120/);
});

test("attach / attachShell: detach keys leave the process running", async () => {
  const t = fakeTerminal();
  const p = sandbox.attachWith("sh", (a) => a.detachKeys("ctrl-p,ctrl-q").io(t.input, t.output));
  t.input.write("echo attached-$((6*7))\n");
  await eventually(() => t.text().includes("attached-42"), 5000, "attach output");
  t.input.write(Buffer.from([0x10, 0x11]));
  assert.equal(await p, -1);
  const running = (await sandbox.processes.list({ status: "running" })).data.filter((x) => x.isPty);
  assert.ok(running.length >= 1, "the PTY process survives detaching");
  for (const r of running) await sandbox.commands.kill(r.id);

  // attach(cmd, args) with the default detach key ctrl-]
  const t2 = fakeTerminal();
  const p2 = sandbox.attachWith("cat", (a) => a.io(t2.input, t2.output));
  t2.input.write("meow\n");
  await eventually(() => t2.text().includes("meow"), 5000, "cat echo");
  t2.input.write(Buffer.from([0x1d]));
  assert.equal(await p2, -1);

  // attach / attachShell on a real terminal: see attach-tty.test.ts.
});
