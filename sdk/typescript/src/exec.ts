/**
 * microsandbox's streaming execution: {@link ExecHandle} (events over a resumable WebSocket) and
 * {@link ExecSink} (its stdin writer).
 *
 * Browser-safe.
 */
import type { SandboxScope } from "./client.js";
import { concatBytes } from "./encoding.js";
import { ExecOutput, ExitStatus } from "./output.js";
import { killProcess } from "./start.js";
import type { Signal, WireProcessInfo } from "./types.js";
import type { ProcessSocket, SocketEvent } from "./ws.js";

/** An event of an {@link ExecHandle}; the discriminator is `kind`. */
export type ExecEvent =
  | { kind: "started"; pid: number }
  | { kind: "stdout"; data: Uint8Array }
  | { kind: "stderr"; data: Uint8Array }
  | { kind: "exited"; code: number };

/** Writer for a running process's stdin (`ExecHandle.takeStdin()`). */
export class ExecSink implements AsyncDisposable {
  private closed = false;

  /** @internal */
  constructor(private readonly socket: ProcessSocket) {}

  /** Writes bytes (or UTF-8 text) to stdin. */
  async write(data: Uint8Array | string): Promise<void> {
    this.socket.sendStdin(data);
  }

  /** Closes stdin; the process sees EOF. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.socket.sendEof();
  }

  /** Calls {@link ExecSink.close}. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

function toExecEvent(ev: SocketEvent): ExecEvent | undefined {
  switch (ev.type) {
    case "started":
      return { kind: "started", pid: ev.info.pid ?? 0 };
    case "stdout":
    case "stderr":
      return { kind: ev.type, data: ev.data };
    case "exited":
      return { kind: "exited", code: ev.info.exit_code ?? -1 };
    default:
      return undefined; // lost / control errors are not ExecEvents
  }
}

/** A running streaming execution: `AsyncIterable<ExecEvent>` and `AsyncDisposable`. */
export class ExecHandle implements AsyncIterable<ExecEvent>, AsyncDisposable {
  /** The process's string id. */
  readonly id: string;
  /** PID inside the sandbox. */
  readonly pid: number;
  private stdinTaken: boolean;
  private exitInfo: WireProcessInfo | undefined;

  /** @internal */
  constructor(
    private readonly scope: SandboxScope,
    info: WireProcessInfo,
    private readonly socket: ProcessSocket,
    hasStdinPipe: boolean,
  ) {
    this.id = info.id;
    this.pid = info.pid ?? 0;
    this.stdinTaken = !hasStdinPipe;
    void socket.exited.then((i) => (this.exitInfo = i)).catch(() => undefined);
  }

  /** Receives the next event; null when the stream is done. */
  async recv(): Promise<ExecEvent | null> {
    for (;;) {
      const r = await this.socket.events.next();
      if (r.done) return null;
      const ev = toExecEvent(r.value);
      if (ev) return ev;
    }
  }

  /** Takes the stdin writer (needs `stdinPipe()`); null if there is none or it was already taken. */
  async takeStdin(): Promise<ExecSink | null> {
    if (this.stdinTaken) return null;
    this.stdinTaken = true;
    return new ExecSink(this.socket);
  }

  /** Waits for the process to exit (does not consume events). */
  async wait(): Promise<ExitStatus> {
    const i = await this.socket.exited;
    return new ExitStatus(i.exit_code ?? -1, i.status, i.signal ?? null);
  }

  /** Drains the events not yet received and waits: the remaining output plus the exit status. */
  async collect(): Promise<ExecOutput> {
    const out: Uint8Array[] = [];
    const err: Uint8Array[] = [];
    for (;;) {
      const ev = await this.recv();
      if (ev === null) break;
      if (ev.kind === "stdout") out.push(ev.data);
      else if (ev.kind === "stderr") err.push(ev.data);
    }
    const i = await this.socket.exited;
    return new ExecOutput(concatBytes(out), concatBytes(err), new ExitStatus(i.exit_code ?? -1, i.status, i.signal ?? null), i);
  }

  /** Sends a POSIX signal (number or name). */
  async signal(n: Signal): Promise<void> {
    this.socket.sendSignal(n);
  }

  /** Kills the process and its descendants (SIGKILL). */
  async kill(): Promise<void> {
    await killProcess(this.scope, this.id).catch(() => undefined);
  }

  /** Iterates events with `for await`. Breaking out leaves the process running. */
  [Symbol.asyncIterator](): AsyncIterator<ExecEvent> {
    return {
      next: async () => {
        const ev = await this.recv();
        return ev === null ? { value: undefined, done: true } : { value: ev, done: false };
      },
    };
  }

  /** `await using`: best-effort kill if still running, then close the connection. */
  async [Symbol.asyncDispose](): Promise<void> {
    try {
      if (!this.exitInfo && !this.socket.finished) await this.kill();
    } finally {
      this.socket.close();
    }
  }
}
