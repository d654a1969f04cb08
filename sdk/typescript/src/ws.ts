/**
 * The process WebSocket session (`GET /processes/{pid}/ws`): binary frames `[channel u8][seq u64 BE][bytes]`
 * and JSON control frames, with automatic resume from the last `seq` (`?from_seq=`) when the socket drops
 * before the process exits.
 *
 * Browser-safe: uses the standard WebSocket API (the `ws` package provides it on Node).
 */
import type { SandboxScope } from "./client.js";
import { toBytes } from "./encoding.js";
import { SandboxError } from "./errors.js";
import { type FollowOptions, type ProcessStreamEvent, backoff, followEvents, retryable, sleep } from "./sse.js";
import type { Signal, WireProcessInfo } from "./types.js";

/** An event of a WebSocket session: the process events, plus control errors the agent reports. */
export type SocketEvent = ProcessStreamEvent | { type: "error"; code: string; message: string };

/** Output queued for a slow consumer past which a session stops reading its socket (when it can). */
export const QUEUE_HIGH_BYTES = 4 * 1024 * 1024;
/** ... and below which it reads again. */
const QUEUE_LOW_BYTES = 1024 * 1024;

/** The socket's `pause`/`resume` (the `ws` package has them; the standard WebSocket does not). */
function pausable(ws: WebSocket | undefined): { pause(): void; resume(): void } | undefined {
  const p = ws as unknown as { pause?: unknown; resume?: unknown } | undefined;
  return p && typeof p.pause === "function" && typeof p.resume === "function"
    ? (p as unknown as { pause(): void; resume(): void })
    : undefined;
}

/** A minimal async queue: producers push, one consumer pulls in order. */
export class AsyncQueue<T> implements AsyncIterable<T> {
  private readonly items: T[] = [];
  private readonly waiters: Array<{ resolve: (r: IteratorResult<T>) => void; reject: (e: unknown) => void }> = [];
  private ended = false;
  private failure: { error: unknown } | undefined;
  /** Called with each item as it leaves the queue (for flow control). */
  onTake: ((item: T) => void) | undefined;

  /** Adds an item. */
  push(item: T): void {
    const w = this.waiters.shift();
    if (w) {
      this.onTake?.(item);
      w.resolve({ value: item, done: false });
    } else this.items.push(item);
  }

  /** Marks the end; pending and later pulls see `done` once the buffered items are consumed. */
  end(): void {
    this.ended = true;
    for (const w of this.waiters.splice(0)) w.resolve({ value: undefined, done: true });
  }

  /** Ends with an error, thrown to the consumer after the buffered items. */
  fail(error: unknown): void {
    this.failure = { error };
    this.ended = true;
    for (const w of this.waiters.splice(0)) w.reject(error);
  }

  /** The next item, or done. */
  next(): Promise<IteratorResult<T>> {
    const item = this.items.shift();
    if (item !== undefined) {
      this.onTake?.(item);
      return Promise.resolve({ value: item, done: false });
    }
    if (this.failure) return Promise.reject(this.failure.error);
    if (this.ended) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  [Symbol.asyncIterator](): AsyncIterator<T> {
    return { next: () => this.next() };
  }
}

/** Options of {@link ProcessSocket.open}. */
export interface ProcessSocketOptions {
  /** First output chunk to receive (default 1: everything kept). */
  fromSeq?: number;
  /** Called synchronously for every event, before it is queued. */
  onEvent?: (ev: SocketEvent) => void;
  /** Queue events for {@link ProcessSocket.events} (default true). */
  queue?: boolean;
}

/** Encodes a client → agent binary frame on channel 0 (stdin). */
export function stdinFrame(data: Uint8Array): Uint8Array {
  const out = new Uint8Array(9 + data.length);
  out[0] = 0;
  out.set(data, 9);
  return out;
}

/** Decodes an agent → client binary frame. */
export function decodeFrame(buf: ArrayBuffer | Uint8Array): { channel: number; seq: number; data: Uint8Array } {
  const bytes = buf instanceof Uint8Array ? buf : new Uint8Array(buf);
  if (bytes.length < 9) throw new SandboxError(`binary frame of ${bytes.length} bytes is too short`, { code: "protocol" });
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  // A view, not a copy: each message has a buffer of its own.
  return { channel: bytes[0] ?? 0, seq: Number(view.getBigUint64(1, false)), data: bytes.subarray(9) };
}

/**
 * A live WebSocket session with one process. Outgoing messages sent while the socket is reconnecting are
 * queued and flushed once it is back. {@link ProcessSocket.exited} resolves with the final process info, or
 * rejects with `SandboxError` (`stream_cut`) when the socket could not be resumed.
 */
export class ProcessSocket {
  /** Events in order (when queueing is on). Ends after `exited`; fails if the session is lost. */
  readonly events = new AsyncQueue<SocketEvent>();
  /** Resolves with the process info carried by the `exited` frame. */
  readonly exited: Promise<WireProcessInfo>;
  /** Seq of the last output chunk received. */
  lastSeq: number;
  /** Process info from the `started` frame. */
  startedInfo: WireProcessInfo | undefined;

  private ws: WebSocket | undefined;
  private readonly pending: Array<string | Uint8Array> = [];
  private closedByUser = false;
  private dropsWithoutProgress = 0;
  private done = false;
  /** Output bytes queued in {@link ProcessSocket.events} and not yet taken. */
  private queuedBytes = 0;
  /** Whether reading from the socket is paused because the queue holds {@link QUEUE_HIGH_BYTES}. */
  private paused = false;
  /** Whether the sockets this session opens can pause (known once the first is open, even if it is gone). */
  private holdable = false;
  private resolveExited!: (info: WireProcessInfo) => void;
  private rejectExited!: (e: unknown) => void;

  private constructor(
    private readonly scope: SandboxScope,
    private readonly pid: string,
    private readonly opts: ProcessSocketOptions,
  ) {
    this.lastSeq = (opts.fromSeq ?? 1) - 1;
    this.exited = new Promise((resolve, reject) => {
      this.resolveExited = resolve;
      this.rejectExited = reject;
    });
    // Nobody may await it (fire-and-forget sessions): never report it as unhandled.
    this.exited.catch(() => undefined);
    this.events.onTake = (ev) => {
      if (ev.type !== "stdout" && ev.type !== "stderr") return;
      this.queuedBytes -= ev.data.length;
      if (this.paused && this.queuedBytes <= QUEUE_LOW_BYTES) {
        this.paused = false;
        pausable(this.ws)?.resume();
      }
    };
  }

  /** Opens the session; resolves once the socket is open. */
  static async open(scope: SandboxScope, pid: string | number, opts: ProcessSocketOptions = {}): Promise<ProcessSocket> {
    const s = new ProcessSocket(scope, String(pid), opts);
    await s.connect();
    return s;
  }

  /** Whether the `exited` frame arrived (or the session was given up). */
  get finished(): boolean {
    return this.done;
  }

  private path(): string {
    return `${this.scope.base}/processes/${encodeURIComponent(this.pid)}/ws`;
  }

  private async connect(): Promise<void> {
    const ws = await this.scope.client.openSocket(this.path(), { from_seq: this.lastSeq + 1 }, (ev: MessageEvent) =>
      this.onMessage(ev.data),
    );
    this.ws = ws;
    this.holdable = pausable(ws) !== undefined;
    // A new socket starts reading; it is paused again by the next chunk if the queue is still full.
    this.paused = false;
    const onClose = (): void => {
      if (this.ws === ws) this.ws = undefined;
      if (!this.done && !this.closedByUser) void this.reconnect();
    };
    if (ws.readyState >= 2) {
      onClose();
      return;
    }
    ws.addEventListener("close", onClose);
    for (const m of this.pending.splice(0)) ws.send(m);
  }

  private async reconnect(): Promise<void> {
    let lastError: unknown = new SandboxError("the socket closed", { code: "stream_cut" });
    // Drops with no output in between share one retry budget, so a server that keeps accepting and
    // dropping cannot keep the session reconnecting forever.
    const first = this.dropsWithoutProgress + 1;
    for (let attempt = first; attempt <= this.scope.client.config.streamRetries; attempt++) {
      this.dropsWithoutProgress = attempt;
      await sleep(backoff(attempt));
      if (this.closedByUser || this.done) return;
      try {
        await this.connect();
        return;
      } catch (e) {
        lastError = e;
        if (!retryable(e)) break;
      }
    }
    this.fail(
      new SandboxError(
        `the WebSocket of process ${this.pid} dropped before it exited and could not be resumed: ${
          lastError instanceof Error ? lastError.message : String(lastError)
        }`,
        { code: "stream_cut", cause: lastError },
      ),
    );
  }

  private fail(e: unknown): void {
    if (this.done) return;
    this.done = true;
    this.rejectExited(e);
    this.events.fail(e);
  }

  private emit(ev: SocketEvent): void {
    this.opts.onEvent?.(ev);
    if (this.opts.queue === false) return;
    this.events.push(ev);
    if (ev.type !== "stdout" && ev.type !== "stderr") return;
    // Flow control: a consumer that falls behind holds the socket (and through TCP, the agent and the
    // process) back instead of queueing without bound. Only sockets that can pause (the `ws` package) can.
    this.queuedBytes += ev.data.length;
    if (!this.paused && this.queuedBytes > QUEUE_HIGH_BYTES) {
      const ws = pausable(this.ws);
      if (ws) {
        ws.pause();
        this.paused = true;
      }
    }
  }

  private onMessage(data: unknown): void {
    if (this.done) return;
    if (typeof data === "string") {
      const msg = JSON.parse(data) as { type: string; [k: string]: unknown };
      switch (msg.type) {
        case "started":
          if (this.startedInfo) return;
          this.startedInfo = msg.process as WireProcessInfo;
          this.emit({ type: "started", info: this.startedInfo });
          return;
        case "lost": {
          const toSeq = Number(msg.to_seq);
          this.lastSeq = Math.max(this.lastSeq, toSeq);
          this.emit({ type: "lost", fromSeq: Number(msg.from_seq), toSeq, bytes: Number(msg.bytes) });
          return;
        }
        case "exited": {
          const info = msg.process as WireProcessInfo;
          this.emit({ type: "exited", info });
          this.done = true;
          this.resolveExited(info);
          this.events.end();
          this.ws?.close();
          return;
        }
        case "error":
          this.emit({ type: "error", code: String(msg.code), message: String(msg.message) });
          return;
        default:
          return; // unknown kinds are ignored (compatibility rule)
      }
    }
    const bytes = data instanceof ArrayBuffer ? new Uint8Array(data) : (data as Uint8Array);
    const f = decodeFrame(bytes);
    if (f.seq <= this.lastSeq) return;
    this.lastSeq = f.seq;
    this.dropsWithoutProgress = 0;
    if (f.channel === 1) this.emit({ type: "stdout", seq: f.seq, data: f.data });
    else if (f.channel === 2) this.emit({ type: "stderr", seq: f.seq, data: f.data });
  }

  private sendRaw(m: string | Uint8Array): void {
    if (this.ws && this.ws.readyState === 1) this.ws.send(m);
    else this.pending.push(m);
  }

  /** Writes to stdin: text as a JSON `stdin` frame's bytes, bytes as a channel-0 binary frame. */
  sendStdin(data: string | Uint8Array): void {
    this.sendRaw(stdinFrame(toBytes(data)));
  }

  /** Closes stdin (EOF). */
  sendEof(): void {
    this.sendRaw(JSON.stringify({ type: "stdin_eof" }));
  }

  /** Sends a signal. */
  sendSignal(signal: Signal): void {
    this.sendRaw(JSON.stringify({ type: "signal", signal }));
  }

  /** Resizes the process's PTY. */
  sendResize(cols: number, rows: number): void {
    this.sendRaw(JSON.stringify({ type: "resize", cols, rows }));
  }

  /** Whether the session can hold its socket back when {@link ProcessSocket.events} is not read fast enough. */
  get canHoldBack(): boolean {
    return this.holdable;
  }

  /** Test hook and escape hatch: the current underlying socket, if open. */
  get socket(): WebSocket | undefined {
    return this.ws;
  }

  /** Closes the socket (never affects the process). Pending `exited` waiters get `SandboxError`. */
  close(): void {
    this.closedByUser = true;
    this.ws?.close();
    if (!this.done) this.fail(new SandboxError("the session was closed before the process exited", { code: "closed" }));
  }
}

/**
 * A process's events from `fromSeq` until `exited` (what {@link ProcessHandle.stream} reads): over the
 * WebSocket session where its socket can be held back by a slow consumer (Node with the `ws` package):
 * binary frames, with no JSON or base64 to decode. Elsewhere (a browser's WebSocket cannot pause), or when
 * no socket can be opened (a proxy that drops `Upgrade`, an API error), over SSE ({@link followEvents}),
 * which reports any API error itself. Either resumes a cut connection from the last `seq`.
 */
export async function* followProcess(
  scope: SandboxScope,
  pid: string | number,
  opts: FollowOptions = {},
): AsyncGenerator<ProcessStreamEvent> {
  opts.signal?.throwIfAborted();
  let socket: ProcessSocket | undefined;
  const impl = await scope.client.webSocketClass().catch(() => undefined);
  if (impl?.isWsPackage) {
    socket = await ProcessSocket.open(scope, pid, { fromSeq: opts.fromSeq }).catch(() => undefined);
    if (socket && !socket.canHoldBack) {
      socket.close();
      socket = undefined;
    }
  }
  if (!socket) {
    yield* followEvents(scope, pid, opts);
    return;
  }
  const open = socket;
  const onAbort = (): void => open.close();
  opts.signal?.addEventListener("abort", onAbort, { once: true });
  try {
    opts.signal?.throwIfAborted(); // aborted while the socket was opening
    for await (const ev of open.events) {
      if (ev.type === "error") continue; // answers to control messages, which this reader never sends
      yield ev;
      if (ev.type === "exited") return;
    }
  } catch (e) {
    if (opts.signal?.aborted) throw opts.signal.reason;
    throw e;
  } finally {
    opts.signal?.removeEventListener("abort", onAbort);
    open.close();
  }
}
