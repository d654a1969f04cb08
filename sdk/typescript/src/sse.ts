/**
 * Server-Sent Events over `fetch`: a spec-following parser over a `ReadableStream`, a process event feed
 * that resumes a cut stream from the last `seq` it saw (`Last-Event-ID`), and {@link followFeed}, the same for
 * endless feeds (lifecycle events, metrics).
 *
 * Browser-safe (fetch + ReadableStream; not EventSource, which cannot send the `Authorization` header).
 */
import type { HttpClient, RequestOptions, SandboxScope } from "./client.js";
import { fromBase64, toBytes } from "./encoding.js";
import { SandboxError, errorFromCode } from "./errors.js";
import type { WireProcessInfo } from "./types.js";

/** One dispatched SSE message. */
export interface SseMessage {
  /** `event:` field; `"message"` when absent. */
  event: string;
  /** `data:` lines joined with `\n`. */
  data: string;
  /** `id:` field of this message, if it had one. */
  id: string | undefined;
}

/** The end of an SSE line: `\n`, `\r` or `\r\n` (the `\n` of a `\r\n` is checked for after the match). */
const LINE_END = /[\r\n]/g;

/** Parses an SSE byte stream into messages (the WHATWG event-stream rules, minus `retry`). */
export async function* parseSse(body: ReadableStream<Uint8Array>, onBytes?: () => void): AsyncGenerator<SseMessage> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  let event = "";
  let data: string[] = [];
  let id: string | undefined;
  let hasData = false;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      onBytes?.();
      buf += decoder.decode(value, { stream: true });
      // Lines are cut at `pos` and the consumed part dropped once per read (not once per line); line ends
      // are found with a one-character class (an alternation regex per line was a tenth of a 1 GiB
      // stream's client CPU).
      let pos = 0;
      for (;;) {
        LINE_END.lastIndex = pos;
        const m = LINE_END.exec(buf);
        if (!m) break;
        let next = m.index + 1;
        if (m[0] === "\r") {
          // A lone \r at the very end may be the first half of \r\n: wait for more.
          if (next === buf.length) break;
          if (buf.charCodeAt(next) === 10) next += 1;
        }
        const line = buf.slice(pos, m.index);
        pos = next;
        if (line === "") {
          if (hasData || event) yield { event: event || "message", data: data.join("\n"), id };
          event = "";
          data = [];
          id = undefined;
          hasData = false;
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "event") event = value;
        else if (field === "data") {
          data.push(value);
          hasData = true;
        } else if (field === "id" && !value.includes("\0")) id = value;
      }
      buf = buf.slice(pos);
    }
  } finally {
    reader.cancel().catch(() => undefined);
  }
}

/** A decoded process event, whichever transport carried it. */
export type ProcessStreamEvent =
  | { type: "started"; info: WireProcessInfo }
  | { type: "stdout" | "stderr"; seq: number; data: Uint8Array }
  | { type: "lost"; fromSeq: number; toSeq: number; bytes: number }
  | { type: "exited"; info: WireProcessInfo };

/** Options of {@link followEvents}. */
export interface FollowOptions {
  /** First output chunk to deliver (default 1: everything kept). */
  fromSeq?: number;
  /** Stops following (the generator then throws the abort reason). */
  signal?: AbortSignal | undefined;
  /** A connection silent this long (no data, no keepalive) is treated as cut. Default 45 s. */
  silenceMs?: number;
}

/** Waits, or rejects when the signal aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const t = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(t);
      reject(signal?.reason);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** Delay before resume attempt `n` (1-based). */
export function backoff(n: number): number {
  return Math.min(100 * 2 ** (n - 1), 2000);
}

/** Whether an error from opening a stream is worth retrying (network trouble, an unreachable agent). */
export function retryable(e: unknown): boolean {
  return e instanceof SandboxError && (e.code === "network" || e.code === "unavailable" || e.code === "stream_cut");
}

/**
 * Follows a process's SSE feed from `fromSeq` until its `exited` event. A stream cut before `exited` is
 * reopened with `Last-Event-ID: <last seq seen>`, up to the client's `streamRetries` times in a row; then it
 * throws {@link SandboxError} with code `stream_cut`. `started` is delivered once.
 */
export async function* followEvents(
  scope: SandboxScope,
  pid: string | number,
  opts: FollowOptions = {},
): AsyncGenerator<ProcessStreamEvent> {
  const { client, base } = scope;
  const path = `${base}/processes/${encodeURIComponent(String(pid))}/events`;
  const silenceMs = opts.silenceMs ?? 45_000;
  let last = (opts.fromSeq ?? 1) - 1;
  let started = false;
  let failures = 0;
  let lastError: unknown;
  for (;;) {
    opts.signal?.throwIfAborted();
    const ctl = new AbortController();
    const onAbort = (): void => ctl.abort(opts.signal?.reason);
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    let silence: ReturnType<typeof setTimeout> | undefined;
    const arm = (): void => {
      clearTimeout(silence);
      silence = setTimeout(() => ctl.abort(new SandboxError("stream went silent", { code: "stream_cut" })), silenceMs);
    };
    try {
      arm();
      const headers: Record<string, string> = { Accept: "text/event-stream" };
      if (last >= 1) headers["Last-Event-ID"] = String(last);
      const resp = await client.fetch("GET", path, { headers, signal: ctl.signal, timeoutMs: 0 });
      if (!resp.body) throw new SandboxError("event stream has no body", { code: "stream_cut" });
      for await (const msg of parseSse(resp.body, arm)) {
        const ev = decodeSse(msg);
        if (!ev) continue;
        if (ev.type === "started") {
          if (started) continue;
          started = true;
        } else if (ev.type === "stdout" || ev.type === "stderr") {
          if (ev.seq <= last) continue;
          last = ev.seq;
        } else if (ev.type === "lost") {
          last = Math.max(last, ev.toSeq);
        }
        failures = 0; // progress: the retry budget is per cut, not per stream
        yield ev;
        if (ev.type === "exited") return;
      }
      lastError = new SandboxError("event stream ended before the process exited", { code: "stream_cut" });
    } catch (e) {
      if (opts.signal?.aborted) throw opts.signal.reason;
      const reason = ctl.signal.aborted ? ctl.signal.reason : e;
      if (!retryable(reason) && !(e instanceof TypeError)) throw reason;
      lastError = reason;
    } finally {
      clearTimeout(silence);
      opts.signal?.removeEventListener("abort", onAbort);
      ctl.abort();
    }
    failures += 1;
    if (failures > client.config.streamRetries) {
      throw new SandboxError(
        `the output stream of process ${pid} was cut and could not be resumed after ${failures - 1} attempts: ${
          lastError instanceof Error ? lastError.message : String(lastError)
        }`,
        { code: "stream_cut", cause: lastError },
      );
    }
    await sleep(backoff(failures), opts.signal);
  }
}

/** Decodes one SSE message of the process feed; undefined for keepalives and unknown kinds. */
export function decodeSse(msg: SseMessage): ProcessStreamEvent | undefined {
  switch (msg.event) {
    case "started":
    case "exited":
      return { type: msg.event, info: JSON.parse(msg.data) as WireProcessInfo };
    case "stdout":
    case "stderr": {
      const d = JSON.parse(msg.data) as { seq: number; data?: string; data_b64?: string };
      const bytes = d.data != null ? toBytes(d.data) : d.data_b64 != null ? fromBase64(d.data_b64) : new Uint8Array(0);
      return { type: msg.event, seq: d.seq, data: bytes };
    }
    case "lost": {
      const d = JSON.parse(msg.data) as { from_seq: number; to_seq: number; bytes: number };
      return { type: "lost", fromSeq: d.from_seq, toSeq: d.to_seq, bytes: d.bytes };
    }
    case "error": {
      // The daemon ended the stream on purpose (the sandbox's agent stopped answering): thrown as the
      // matching error; an `unavailable` one is a cut like any other, resumed once the agent answers.
      const d = JSON.parse(msg.data) as { code?: string; message?: string };
      throw errorFromCode(String(d.code ?? "unknown"), String(d.message ?? "the stream ended with an error"));
    }
    default:
      return undefined;
  }
}

/** Options of {@link followFeed}. */
export interface FeedOptions {
  /** Stops following (the generator then throws the abort reason). */
  signal?: AbortSignal | undefined;
  /** A connection silent this long (no data, no keepalive) is treated as cut. Default 45 s. */
  silenceMs?: number;
  /** Names the feed in the error thrown when it cannot be resumed. */
  what?: string;
  /**
   * A one-sandbox feed, which the daemon ends once the sandbox is gone: when reopening it finds the sandbox
   * gone (404), the feed ends instead of throwing.
   */
  endsWithSandbox?: boolean;
}

/**
 * Follows an endless SSE feed (`GET path?query`), yielding every message. A cut stream (an error, a silent or
 * closed connection) is reopened; once a message with an `id:` was seen it is reopened with `Last-Event-ID:
 * <that id>` and without the query's `after`, which the header replaces. After the client's `streamRetries`
 * reopenings in a row without a message it throws {@link SandboxError} with code `stream_cut`. An error answer
 * that is not worth retrying (a bad parameter, an unknown sandbox, a refused key) is thrown as it is, but for
 * a reopened `endsWithSandbox` feed a 404 ends it.
 */
export async function* followFeed(
  client: HttpClient,
  path: string,
  query: RequestOptions["query"] = {},
  opts: FeedOptions = {},
): AsyncGenerator<SseMessage> {
  const silenceMs = opts.silenceMs ?? 45_000;
  let lastId: string | undefined;
  let failures = 0;
  let lastError: unknown;
  let reopened = false;
  for (;;) {
    opts.signal?.throwIfAborted();
    const ctl = new AbortController();
    const onAbort = (): void => ctl.abort(opts.signal?.reason);
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    let silence: ReturnType<typeof setTimeout> | undefined;
    const arm = (): void => {
      clearTimeout(silence);
      silence = setTimeout(() => ctl.abort(new SandboxError("stream went silent", { code: "stream_cut" })), silenceMs);
    };
    try {
      arm();
      const headers: Record<string, string> = { Accept: "text/event-stream" };
      let q = query;
      if (lastId !== undefined) {
        headers["Last-Event-ID"] = lastId;
        q = { ...query, after: undefined };
      }
      const resp = await client.fetch("GET", path, { query: q, headers, signal: ctl.signal, timeoutMs: 0 });
      if (!resp.body) throw new SandboxError("event stream has no body", { code: "stream_cut" });
      for await (const msg of parseSse(resp.body, arm)) {
        if (msg.id !== undefined && msg.id !== "") lastId = msg.id;
        failures = 0; // progress: the retry budget is per cut, not per stream
        yield msg;
      }
      lastError = new SandboxError("the daemon closed the event stream", { code: "stream_cut" });
    } catch (e) {
      if (opts.signal?.aborted) throw opts.signal.reason;
      const reason = ctl.signal.aborted ? ctl.signal.reason : e;
      if (opts.endsWithSandbox && reopened && reason instanceof SandboxError && reason.code === "not_found") return;
      if (!retryable(reason) && !(e instanceof TypeError)) throw reason;
      lastError = reason;
    } finally {
      clearTimeout(silence);
      opts.signal?.removeEventListener("abort", onAbort);
      ctl.abort();
    }
    reopened = true;
    failures += 1;
    if (failures > client.config.streamRetries) {
      throw new SandboxError(
        `${opts.what ?? `the stream ${path}`} was cut and could not be resumed after ${failures - 1} attempts: ${
          lastError instanceof Error ? lastError.message : String(lastError)
        }`,
        { code: "stream_cut", cause: lastError },
      );
    }
    await sleep(backoff(failures), opts.signal);
  }
}
