/**
 * Hyperbrowser's process API: `sandbox.processes.start/list/get`, `sandbox.getProcess(id)` and
 * {@link ProcessHandle} (`writeStdin`, `signal`, `wait`/`result`, `stream`, `kill`).
 *
 * Browser-safe.
 */
import type { SandboxScope } from "./client.js";
import { StreamText, toBytes, wireBytes } from "./encoding.js";
import { type ProcessResult, processResult } from "./output.js";
import { followProcess } from "./ws.js";
import { type StartOptions, killProcess, startProcess, startRequest, waitProcess } from "./start.js";
import {
  type ProcessInfo,
  type ProcessStatus,
  type Signal,
  type WireProcessInfo,
  processInfoFromWire,
} from "./types.js";

/** Options of `processes.start()`: `cwd`, `env`, `timeoutMs`, `runAs` (and the other spellings). */
export type ProcessStartOpts = StartOptions;

/** Options of `processes.list()`. */
export interface ProcessListOpts {
  /** Keep processes with this status. */
  status?: ProcessStatus;
  /** At most this many, newest first. */
  limit?: number;
}

/** What `processes.list()` resolves with. */
export interface ProcessList {
  /** The processes, newest first. */
  data: ProcessInfo[];
}

/** Body of `writeStdin`. */
export interface WriteStdinOpts {
  /** Text (UTF-8) or bytes to write; may be omitted to only send EOF. */
  data?: string | Uint8Array;
  /** Close stdin after writing. */
  eof?: boolean;
}

/**
 * An event of {@link ProcessHandle.stream}. `lost` reports output the per-process cap dropped before it could
 * be read (chunks `fromSeq..toSeq`); it has an empty `data` so that generic loops still type-check.
 */
export type ProcessEvent =
  | { type: "stdout"; data: string; bytes: Uint8Array; seq: number }
  | { type: "stderr"; data: string; bytes: Uint8Array; seq: number }
  | { type: "lost"; data: ""; fromSeq: number; toSeq: number; lostBytes: number }
  | { type: "exit"; data?: undefined; result: ProcessResult };

/** Options of {@link ProcessHandle.stream}. */
export interface StreamOpts {
  /** First output chunk to deliver (default 1: from the beginning). */
  fromSeq?: number;
  /** Stops the stream. */
  signal?: AbortSignal;
}

/** `sandbox.processes`. */
export class Processes {
  /** @internal */
  constructor(private readonly scope: SandboxScope) {}

  /** Starts a shell command in the background (stdin is a pipe, for `writeStdin`). */
  async start(command: string, opts: ProcessStartOpts = {}): Promise<ProcessHandle> {
    const info = await startProcess(this.scope, startRequest(command, opts, { pipe: true }));
    return new ProcessHandle(this.scope, info);
  }

  /** Lists processes, newest first: `{ data: [...] }`. */
  async list(opts: ProcessListOpts = {}): Promise<ProcessList> {
    const r = await this.scope.client.json<{ processes: WireProcessInfo[] }>("GET", `${this.scope.base}/processes`, {
      query: { status: opts.status, limit: opts.limit },
    });
    return { data: r.processes.map(processInfoFromWire) };
  }

  /** A handle for an existing process, by string id or numeric pid. */
  async get(id: string | number): Promise<ProcessHandle> {
    const info = await this.scope.client.json<WireProcessInfo>(
      "GET",
      `${this.scope.base}/processes/${encodeURIComponent(String(id))}`,
    );
    return new ProcessHandle(this.scope, info);
  }
}

/** A process started with `processes.start()` or found with `getProcess()`. */
export class ProcessHandle {
  /** String id. */
  readonly id: string;
  /** PID inside the sandbox. */
  readonly pid: number;
  /** The latest known info (updated by `refresh`, `wait`, `kill`). */
  info: ProcessInfo;

  /** @internal */
  constructor(
    private readonly scope: SandboxScope,
    info: WireProcessInfo,
  ) {
    this.id = info.id;
    this.pid = info.pid ?? 0;
    this.info = processInfoFromWire(info);
  }

  private path(suffix = ""): string {
    return `${this.scope.base}/processes/${encodeURIComponent(this.id)}${suffix}`;
  }

  /** The status as last seen. */
  get status(): ProcessStatus {
    return this.info.status;
  }

  /** Fetches the current info. */
  async refresh(): Promise<ProcessInfo> {
    this.info = processInfoFromWire(await this.scope.client.json<WireProcessInfo>("GET", this.path()));
    return this.info;
  }

  /** Writes to stdin, and/or closes it with `eof: true`. A plain string or bytes also works. */
  async writeStdin(input: WriteStdinOpts | string | Uint8Array): Promise<void> {
    const o: WriteStdinOpts = typeof input === "string" || input instanceof Uint8Array ? { data: input } : input;
    await this.scope.client.send("POST", this.path("/stdin"), {
      body: o.data === undefined ? new Uint8Array(0) : toBytes(o.data),
      query: { eof: o.eof ? true : undefined },
    });
  }

  /** Sends a signal: `"TERM"`, `"SIGTERM"`, `15`, ... (default `"TERM"`). */
  async signal(signal: Signal = "TERM"): Promise<void> {
    await this.scope.client.send("POST", this.path("/signal"), { json: { signal } });
  }

  /** Kills the process tree (SIGKILL). True if killed, false if it had already ended. */
  async kill(): Promise<boolean> {
    return killProcess(this.scope, this.id);
  }

  /** Waits for the process to end; resolves with its status, exit code and output (never throws on non-zero). */
  async wait(opts: { timeoutMs?: number } = {}): Promise<ProcessResult> {
    const r = await waitProcess(this.scope, this.id, { timeoutMs: opts.timeoutMs });
    this.info = processInfoFromWire(r);
    return processResult(r, wireBytes(r.stdout, r.stdout_b64), wireBytes(r.stderr, r.stderr_b64));
  }

  /** Alias of {@link ProcessHandle.wait}. */
  result(opts: { timeoutMs?: number } = {}): Promise<ProcessResult> {
    return this.wait(opts);
  }

  /**
   * Streams output as it arrives: `stdout` / `stderr` events with `data`, then one `exit` event with the
   * `result`. On Node it reads the process's WebSocket session (binary frames), held back while the loop
   * body is slower than the process; in browsers, or where no socket can be opened, Server-Sent Events. A cut
   * stream resumes where it stopped.
   */
  async *stream(opts: StreamOpts = {}): AsyncGenerator<ProcessEvent> {
    const out = new StreamText();
    const err = new StreamText();
    for await (const ev of followProcess(this.scope, this.id, opts)) {
      if (ev.type === "stdout" || ev.type === "stderr") {
        const data = (ev.type === "stdout" ? out : err).push(ev.data);
        yield { type: ev.type, data, bytes: ev.data, seq: ev.seq };
      } else if (ev.type === "lost") {
        yield { type: "lost", data: "", fromSeq: ev.fromSeq, toSeq: ev.toSeq, lostBytes: ev.bytes };
      } else if (ev.type === "exited") {
        this.info = processInfoFromWire(ev.info);
        yield { type: "exit", result: processResult(ev.info, out.bytes, err.bytes) };
        return;
      }
    }
  }
}
