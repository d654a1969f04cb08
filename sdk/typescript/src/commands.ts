/**
 * `sandbox.commands`: Superserve's `run` / `spawn` and Declaw's `run` (foreground and background),
 * `runStream`, `list`, `kill`, `sendStdin`, `connect`, with {@link CommandHandle} and {@link CommandSession}.
 *
 * Browser-safe.
 */
import type { SandboxScope } from "./client.js";
import { StreamText, toBytes } from "./encoding.js";
import { CommandExitError, NotFoundError, SandboxError, TimeoutError } from "./errors.js";
import { type CommandResult, commandResult, commandResultFromExec } from "./output.js";
import { followProcess } from "./ws.js";
import {
  type StartOptions,
  killProcess,
  randomId,
  runToCompletion,
  startProcess,
  startRequest,
  waitProcess,
} from "./start.js";
import { type ProcessInfo, type Signal, type WireProcessInfo, processInfoFromWire } from "./types.js";
import { ProcessSocket } from "./ws.js";

/** Output callbacks. */
export interface OutputCallbacks {
  /** Called with each stdout chunk as it arrives. */
  onStdout?: (data: string) => void;
  /** Called with each stderr chunk as it arrives. */
  onStderr?: (data: string) => void;
}

/**
 * Options of `commands.run()`: Superserve's (`cwd`, `env`, `timeoutMs`, `onStdout`, `onStderr`, `signal`) and
 * Declaw's (`background`, `envs`, `user`, `cwd`, `timeout` seconds, `requestTimeout` ms, callbacks).
 *
 * With callbacks the command streams over SSE and `timeoutMs` is an idle timeout (reset by every chunk);
 * without, `timeoutMs` bounds the total run time. `timeout` (seconds) is always a total.
 */
export interface RunOpts extends StartOptions, OutputCallbacks {
  /** Return a {@link CommandHandle} at once instead of waiting (stdin is then a pipe for `sendStdin`). */
  background?: boolean;
  /** Per-request HTTP timeout in milliseconds. */
  requestTimeout?: number;
  /** Aborts the command: the process is killed and the call rejects with the abort reason. */
  signal?: AbortSignal;
}

/** Options of `commands.runStream()` (Declaw): like {@link RunOpts}; callbacks fire per chunk, live. */
export type RunStreamOpts = Omit<RunOpts, "background">;

/** Options of `commands.spawn()` (Superserve). `timeoutMs` is a total; leave it off for long-lived processes. */
export interface SpawnOpts extends StartOptions, OutputCallbacks {}

/** Options of `CommandHandle.wait()` (Declaw's `CommandWaitOpts`); the callbacks get one line at a time. */
export interface CommandWaitOpts extends OutputCallbacks {
  /** Give up waiting after this many milliseconds (TimeoutError; the process keeps running). */
  timeoutMs?: number;
}

/** Per-request options of `list`, `kill`, `sendStdin`. */
export interface RequestOpts {
  /** Per-request HTTP timeout in milliseconds. */
  requestTimeout?: number;
}

/** Throws {@link TimeoutError} (carrying the result) when a command ended as `timed_out`. */
function throwIfTimedOut(r: CommandResult): CommandResult {
  if (r.status === "timed_out") {
    const e = new TimeoutError(r.error ?? "the command timed out", { code: "timed_out" });
    e.result = r;
    throw e;
  }
  return r;
}

/**
 * Follows a process's output from the start ({@link followProcess}), calling the callbacks per chunk, and returns the final result.
 */
export async function streamResult(
  scope: SandboxScope,
  pid: string | number,
  cb: OutputCallbacks,
  signal?: AbortSignal,
): Promise<CommandResult> {
  const out = new StreamText();
  const err = new StreamText();
  for await (const ev of followProcess(scope, pid, { signal })) {
    if (ev.type === "stdout") {
      const t = out.push(ev.data);
      if (t) cb.onStdout?.(t);
    } else if (ev.type === "stderr") {
      const t = err.push(ev.data);
      if (t) cb.onStderr?.(t);
    } else if (ev.type === "exited") {
      return commandResult(ev.info, out.value, err.value);
    }
  }
  throw new SandboxError(`the output stream of ${pid} ended without an exit event`, { code: "stream_cut" });
}

/** Runs `fn` and kills the process if `signal` aborts meanwhile. */
async function killOnAbort<T>(scope: SandboxScope, pid: string, signal: AbortSignal | undefined, fn: () => Promise<T>): Promise<T> {
  if (!signal) return fn();
  const onAbort = (): void => void killProcess(scope, pid).catch(() => undefined);
  signal.addEventListener("abort", onAbort, { once: true });
  try {
    return await fn();
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
}

/** Commands of one sandbox (`sandbox.commands`). */
export class Commands {
  /** @internal */
  constructor(private readonly scope: SandboxScope) {}

  /**
   * Runs a shell command. Foreground (default): resolves with a {@link CommandResult} once it ends; a non-zero
   * exit is a result, not an error; a command the sandbox timed out throws {@link TimeoutError}. With
   * `background: true`: resolves at once with a {@link CommandHandle}.
   */
  run(cmd: string, opts: RunOpts & { background: true }): Promise<CommandHandle>;
  run(cmd: string, opts?: RunOpts & { background?: false | undefined }): Promise<CommandResult>;
  run(cmd: string, opts?: RunOpts): Promise<CommandResult | CommandHandle>;
  async run(cmd: string, opts: RunOpts = {}): Promise<CommandResult | CommandHandle> {
    if (opts.background) {
      const info = await startProcess(this.scope, startRequest(cmd, opts, { pipe: true }), {
        timeoutMs: opts.requestTimeout,
        signal: opts.signal,
      });
      return new CommandHandle(this.scope, info.pid ?? 0, info.id, opts);
    }
    if (opts.onStdout || opts.onStderr) return this.streamed(cmd, opts, true);
    const r = await runToCompletion(this.scope, startRequest(cmd, opts), {
      signal: opts.signal,
      requestTimeoutMs: opts.requestTimeout,
    });
    return throwIfTimedOut(commandResultFromExec(r));
  }

  /**
   * Runs a command streaming its output over SSE: callbacks fire for each chunk as it arrives; resolves with
   * the full result. A cut stream resumes from the last chunk seen.
   */
  async runStream(cmd: string, opts: RunStreamOpts = {}): Promise<CommandResult> {
    return this.streamed(cmd, opts, false);
  }

  private async streamed(cmd: string, opts: RunOpts, idle: boolean): Promise<CommandResult> {
    opts.signal?.throwIfAborted();
    const req = startRequest(cmd, opts, { idle });
    req.id ??= randomId();
    const id = req.id;
    return killOnAbort(this.scope, id, opts.signal, async () => {
      await startProcess(this.scope, req, { timeoutMs: opts.requestTimeout, signal: opts.signal });
      return throwIfTimedOut(await streamResult(this.scope, id, opts, opts.signal));
    });
  }

  /**
   * Starts a command and resolves, once it runs, with an interactive {@link CommandSession} over a WebSocket:
   * write to its stdin, signal it, wait for it.
   */
  async spawn(cmd: string, opts: SpawnOpts = {}): Promise<CommandSession> {
    const info = await startProcess(this.scope, startRequest(cmd, opts, { pipe: true }));
    return CommandSession.open(this.scope, info, opts);
  }

  /** Lists the running processes. */
  async list(opts: RequestOpts = {}): Promise<ProcessInfo[]> {
    const r = await this.scope.client.json<{ processes: WireProcessInfo[] }>("GET", `${this.scope.base}/processes`, {
      query: { status: "running" },
      timeoutMs: opts.requestTimeout,
    });
    return r.processes.map(processInfoFromWire);
  }

  /** Kills a process and its descendants (SIGKILL). True if killed, false if it had already ended. */
  async kill(pid: number | string, opts: RequestOpts = {}): Promise<boolean> {
    try {
      return await killProcess(this.scope, pid, { timeoutMs: opts.requestTimeout });
    } catch (e) {
      if (e instanceof NotFoundError && /process/i.test(e.message)) return false;
      throw e;
    }
  }

  /** Writes to a running process's stdin (started with `background: true`, or any process with a stdin pipe). */
  async sendStdin(pid: number | string, data: string | Uint8Array, opts: RequestOpts = {}): Promise<void> {
    await this.scope.client.send("POST", `${this.scope.base}/processes/${encodeURIComponent(String(pid))}/stdin`, {
      body: toBytes(data),
      timeoutMs: opts.requestTimeout,
    });
  }

  /** A {@link CommandHandle} for an existing process, by pid or id. Makes no API call. */
  connect(pid: number | string): CommandHandle {
    return typeof pid === "number" ? new CommandHandle(this.scope, pid, undefined) : new CommandHandle(this.scope, 0, pid);
  }
}

/** Turns chunks into lines for a per-line callback. */
class LineSplitter {
  private rest = "";

  constructor(private readonly cb: ((line: string) => void) | undefined) {}

  push(chunk: string): void {
    if (!this.cb) return;
    const parts = (this.rest + chunk).split("\n");
    this.rest = parts.pop() ?? "";
    for (const line of parts) this.cb(line);
  }

  flush(): void {
    if (this.cb && this.rest) this.cb(this.rest);
    this.rest = "";
  }
}

/** A background command (Declaw's `CommandHandle`). */
export class CommandHandle {
  /** PID inside the sandbox (0 if the handle was made from a string id). */
  readonly pid: number;
  /** The process's string id, when known. */
  readonly id: string | undefined;
  private readonly ctl = new AbortController();

  /** @internal */
  constructor(
    private readonly scope: SandboxScope,
    pid: number,
    id: string | undefined,
    private readonly defaults: OutputCallbacks = {},
  ) {
    this.pid = pid;
    this.id = id;
  }

  private get ref(): string | number {
    return this.id ?? this.pid;
  }

  /**
   * Waits for the command to end and resolves with its result, calling the callbacks with each line of its
   * output (from the beginning, without the newline). Throws {@link CommandExitError} on a non-zero exit, {@link TimeoutError} if it timed out.
   */
  async wait(opts: CommandWaitOpts = {}): Promise<CommandResult> {
    const onStdout = opts.onStdout ?? this.defaults.onStdout;
    const onStderr = opts.onStderr ?? this.defaults.onStderr;
    const signals = [this.ctl.signal];
    if (opts.timeoutMs !== undefined) signals.push(AbortSignal.timeout(opts.timeoutMs));
    const signal = AbortSignal.any(signals);
    let r: CommandResult;
    try {
      if (onStdout || onStderr) {
        // Declaw's wait callbacks get whole lines (without the newline); a last partial line comes at exit.
        const out = new LineSplitter(onStdout);
        const err = new LineSplitter(onStderr);
        r = await streamResult(this.scope, this.ref, { onStdout: (d) => out.push(d), onStderr: (d) => err.push(d) }, signal);
        out.flush();
        err.flush();
      } else {
        r = commandResultFromExec(await waitProcess(this.scope, this.ref, { signal }));
      }
    } catch (e) {
      if (signal.aborted && !this.ctl.signal.aborted) {
        throw new TimeoutError(`process ${this.ref} did not end within ${opts.timeoutMs} ms`, { code: "timeout", cause: e });
      }
      throw e;
    }
    throwIfTimedOut(r);
    if (r.exitCode !== 0) throw new CommandExitError(r);
    return r;
  }

  /** Kills the process tree. True if killed, false if it had already ended. */
  async kill(): Promise<boolean> {
    try {
      return await killProcess(this.scope, this.ref);
    } catch (e) {
      if (e instanceof NotFoundError && /process/i.test(e.message)) return false;
      throw e;
    }
  }

  /** Writes to the process's stdin. */
  async sendStdin(data: string | Uint8Array): Promise<void> {
    await this.scope.client.send("POST", `${this.scope.base}/processes/${encodeURIComponent(String(this.ref))}/stdin`, {
      body: toBytes(data),
    });
  }

  /** Stops following the process locally (pending `wait()` calls reject); the process keeps running. */
  disconnect(): void {
    this.ctl.abort(new SandboxError("the handle was disconnected", { code: "disconnected" }));
  }
}

/** The stdin of a {@link CommandSession}. */
export interface SessionStdin {
  /** Writes a string (UTF-8) or raw bytes. */
  write(data: string | Uint8Array): Promise<void>;
  /** Closes stdin: the process reads EOF. */
  close(): Promise<void>;
}

/** An interactive process over a WebSocket (Superserve's `CommandSession`). Supports `await using`. */
export class CommandSession implements AsyncDisposable {
  /** The process's string id (save it to find the process again after a disconnect). */
  readonly id: string;
  /** PID inside the sandbox. */
  readonly pid: number;
  /** Writes to / closes the process's stdin. */
  readonly stdin: SessionStdin;
  private readonly out = new StreamText();
  private readonly err = new StreamText();

  private constructor(
    private readonly scope: SandboxScope,
    info: WireProcessInfo,
    private socket: ProcessSocket | undefined,
  ) {
    this.id = info.id;
    this.pid = info.pid ?? 0;
    this.stdin = {
      write: async (data) => this.sock().sendStdin(data),
      close: async () => this.sock().sendEof(),
    };
  }

  /** @internal Opens the WebSocket for a started process. */
  static async open(scope: SandboxScope, info: WireProcessInfo, cb: OutputCallbacks): Promise<CommandSession> {
    const s = new CommandSession(scope, info, undefined);
    s.socket = await ProcessSocket.open(scope, info.id, {
      queue: false,
      onEvent: (ev) => {
        if (ev.type === "stdout") {
          const t = s.out.push(ev.data);
          if (t) cb.onStdout?.(t);
        } else if (ev.type === "stderr") {
          const t = s.err.push(ev.data);
          if (t) cb.onStderr?.(t);
        }
      },
    });
    return s;
  }

  private sock(): ProcessSocket {
    if (!this.socket) throw new SandboxError("the session is not connected", { code: "closed" });
    return this.socket;
  }

  /** Sends a signal (default `"SIGTERM"`). */
  async kill(signal: Signal = "SIGTERM"): Promise<void> {
    this.sock().sendSignal(signal);
  }

  /** Resizes the PTY of a session started with `tty`. */
  async resize(cols: number, rows: number): Promise<void> {
    this.sock().sendResize(cols, rows);
  }

  /**
   * Resolves with the result when the process exits; rejects with {@link SandboxError} if the connection
   * drops for good first (the process keeps running: find it again by {@link CommandSession.id}).
   */
  async wait(): Promise<CommandResult> {
    const info = await this.sock().exited;
    return throwIfTimedOut(commandResult(info, this.out.value, this.err.value));
  }

  /** Kills the process (if still running) and closes the connection. */
  async close(): Promise<void> {
    const s = this.socket;
    try {
      if (!s?.finished) await killProcess(this.scope, this.id).catch(() => undefined);
    } finally {
      s?.close();
    }
  }

  /** `await using` support: same as {@link CommandSession.close}. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}
