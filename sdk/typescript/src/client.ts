/**
 * The transport: every HTTP request and WebSocket the SDK makes goes through {@link HttpClient}, and every
 * error response becomes an SDK error class here and nowhere else.
 *
 * Browser-safe: on Node the `ws` package is loaded dynamically when there is no global WebSocket.
 */
import {
  type ConnectionOptions,
  type QuickRequest,
  type ResolvedConfig,
  type WebSocketConstructor,
  importDynamic,
  isNode,
  resolveConfig,
} from "./config.js";
import { SandboxError, TimeoutError, codeForStatus, errorFromBody, errorFromCode } from "./errors.js";

/** Options of one HTTP request. */
export interface RequestOptions {
  /** A JSON body (sent with `Content-Type: application/json`). */
  json?: unknown;
  /** A raw body: sent as `application/octet-stream` unless `headers` names a `Content-Type`. A `ReadableStream`
   * is sent as it is read (build one with `requestBody` so that browsers get a `Blob` instead). */
  body?: Uint8Array | BodyInit;
  /** Query parameters; undefined values are left out. */
  query?: Record<string, string | number | boolean | undefined>;
  /** Extra headers. */
  headers?: Record<string, string>;
  /** Aborts the request. */
  signal?: AbortSignal | undefined;
  /** Per-request timeout in milliseconds (overrides the client's default). */
  timeoutMs?: number | undefined;
}

/** WebSocket subprotocol the SDK speaks; browsers also send the key as `sandpit.bearer.<key>`. */
export const WS_PROTOCOL = "sandpit";

/** Talks HTTP and WebSocket to one daemon with one key. */
export class HttpClient {
  /** Resolved settings. */
  readonly config: ResolvedConfig;

  private constructor(config: ResolvedConfig) {
    this.config = config;
  }

  /** Resolves options (and environment, and on Node the key file) into a client. */
  static async create(opts: ConnectionOptions = {}): Promise<HttpClient> {
    return new HttpClient(await resolveConfig(opts));
  }

  /** Absolute URL of an API path with a query string. */
  url(path: string, query?: RequestOptions["query"]): string {
    let u = this.config.url + path;
    if (query) {
      const q = new URLSearchParams();
      for (const [k, v] of Object.entries(query)) if (v !== undefined) q.set(k, String(v));
      const s = q.toString();
      if (s) u += (u.includes("?") ? "&" : "?") + s;
    }
    return u;
  }

  /** Headers every request carries. */
  authHeaders(): Record<string, string> {
    return this.config.apiKey ? { Authorization: `Bearer ${this.config.apiKey}` } : {};
  }

  /**
   * Sends a request and returns the response when it is a success; throws the mapped error otherwise.
   * The caller reads (or cancels) the body.
   */
  async fetch(method: string, path: string, opts: RequestOptions = {}): Promise<Response> {
    const headers: Record<string, string> = { ...this.authHeaders(), ...opts.headers };
    let body: BodyInit | undefined;
    if (opts.json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(opts.json);
    } else if (opts.body !== undefined) {
      headers["Content-Type"] = opts.headers?.["Content-Type"] ?? "application/octet-stream";
      body = opts.body as BodyInit;
    }
    const { timeoutMs, timeout, signal } = this.deadline(opts);
    let resp: Response;
    try {
      const init: RequestInit & { duplex?: "half" } = { method, headers };
      if (body !== undefined) init.body = body;
      // A streamed request body must say so (fetch's rule; Node sends it chunked).
      if (body instanceof ReadableStream) init.duplex = "half";
      if (signal !== undefined) init.signal = signal;
      resp = await this.config.fetch(this.url(path, opts.query), init);
    } catch (e) {
      const sysCode = (e as { cause?: { code?: unknown } } | null)?.cause?.code;
      if (body instanceof ReadableStream && (sysCode === "EPIPE" || sysCode === "ECONNRESET") && !signal?.aborted) {
        // A server that answers before reading a streamed body and closes the connection loses its answer to
        // Node's fetch, which fails on the next write instead: say so rather than "cannot reach".
        throw new SandboxError(
          `${method} ${path}: the daemon at ${this.config.url} closed the connection while the request body was ` +
            `being sent (${sysCode}); it may have refused the request before reading it`,
          { code: "network", cause: e },
        );
      }
      throw this.transportError(e, method, path, timeout, timeoutMs);
    }
    if (!resp.ok) throw await errorFromResponse(resp);
    return resp;
  }

  /** Sends a request and parses a JSON answer. */
  async json<T>(method: string, path: string, opts: RequestOptions = {}): Promise<T> {
    if (this.config.quick !== undefined && opts.body === undefined) {
      const text = await this.quickText(this.config.quick, method, path, opts);
      try {
        return JSON.parse(text) as T;
      } catch (e) {
        throw this.transportError(e, method, path, undefined, undefined);
      }
    }
    const resp = await this.fetch(method, path, opts);
    try {
      return (await resp.json()) as T;
    } catch (e) {
      throw this.transportError(e, method, path, undefined, undefined);
    }
  }

  /** Sends a request whose answer has no useful body. */
  async send(method: string, path: string, opts: RequestOptions = {}): Promise<void> {
    if (this.config.quick !== undefined && opts.body === undefined) {
      await this.quickText(this.config.quick, method, path, opts);
      return;
    }
    const resp = await this.fetch(method, path, opts);
    await resp.body?.cancel().catch(() => undefined);
  }

  /** {@link fetch}'s rules (headers, time-out, error mapping) for a JSON or empty body on `config.quick`; the
   * answer's body as text. */
  private async quickText(
    quick: QuickRequest,
    method: string,
    path: string,
    opts: RequestOptions,
  ): Promise<string> {
    const headers: Record<string, string> = { ...this.authHeaders(), ...opts.headers };
    let body: string | undefined;
    if (opts.json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(opts.json);
    }
    const { timeoutMs, timeout, signal } = this.deadline(opts);
    let answer: Awaited<ReturnType<QuickRequest>>;
    try {
      answer = await quick(method, this.url(path, opts.query), headers, body, signal);
    } catch (e) {
      throw this.transportError(e, method, path, timeout, timeoutMs);
    }
    if (answer.status < 200 || answer.status > 299) {
      throw errorFromAnswer(answer.status, answer.text, answer.statusText, answer.headers["retry-after"]);
    }
    return answer.text;
  }

  /** A request's time-out (`timeoutMs`, else the client's) and the signal that aborts it: the caller's
   * signal, the time-out, or either. */
  private deadline(opts: RequestOptions): {
    timeoutMs: number | undefined;
    timeout: AbortSignal | undefined;
    signal: AbortSignal | undefined;
  } {
    const timeoutMs = opts.timeoutMs ?? this.config.requestTimeoutMs;
    const timeout = timeoutMs !== undefined && timeoutMs > 0 ? AbortSignal.timeout(timeoutMs) : undefined;
    const signals = [opts.signal, timeout].filter((s): s is AbortSignal => s !== undefined);
    const signal = signals.length === 0 ? undefined : signals.length === 1 ? signals[0] : AbortSignal.any(signals);
    return { timeoutMs, timeout, signal };
  }

  /** Maps a fetch failure (network, abort, timeout) to an SDK error; user aborts pass through. */
  transportError(
    e: unknown,
    method: string,
    path: string,
    timeout: AbortSignal | undefined,
    timeoutMs: number | undefined,
  ): unknown {
    if (e instanceof SandboxError) return e;
    if (timeout?.aborted) {
      return new TimeoutError(`${method} ${path}: no answer within ${timeoutMs} ms`, { code: "timeout", cause: e });
    }
    if (e instanceof Error && e.name === "AbortError") return e;
    const msg = e instanceof Error ? e.message : String(e);
    return new SandboxError(`${method} ${path}: cannot reach the sandpit daemon at ${this.config.url}: ${msg}`, {
      code: "network",
      cause: e,
    });
  }

  /** The WebSocket constructor for this runtime: the option, the global one, or (Node) the `ws` package. */
  async webSocketClass(): Promise<{ ctor: WebSocketConstructor; isWsPackage: boolean }> {
    if (this.config.WebSocket) return { ctor: this.config.WebSocket, isWsPackage: isNode() };
    if (isNode()) {
      try {
        const mod = await importDynamic<{ WebSocket: WebSocketConstructor }>("ws");
        return { ctor: mod.WebSocket, isWsPackage: true };
      } catch {
        // no ws package installed: fall through to the global one (Node 22+)
      }
    }
    const g = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!g) throw new SandboxError("no WebSocket implementation: install the `ws` package", { code: "unsupported" });
    return { ctor: g, isWsPackage: false };
  }

  /**
   * Opens a WebSocket to an API path. On Node the key travels in the `Authorization` header; browsers cannot
   * set headers on a WebSocket, so there it goes in the `access_token` query parameter, which the daemon
   * accepts for exactly this purpose and strips before proxying.
   */
  async openSocket(
    path: string,
    query?: RequestOptions["query"],
    onMessage?: (ev: MessageEvent) => void,
  ): Promise<WebSocket> {
    const { ctor, isWsPackage } = await this.webSocketClass();
    const url = this.url(path, query).replace(/^http/, "ws");
    let ws: WebSocket;
    if (isWsPackage || isNode()) {
      // `ws` takes {headers}; Node's global (undici) WebSocket takes {headers} as its second argument.
      ws = isWsPackage
        ? new ctor(url, [], { headers: this.authHeaders() })
        : new ctor(url, { headers: this.authHeaders() } as unknown as string[]);
    } else {
      const withToken = new URL(url);
      if (this.config.apiKey) withToken.searchParams.set("access_token", this.config.apiKey);
      ws = new ctor(withToken.toString());
    }
    ws.binaryType = "arraybuffer";
    // Attached before `open`: frames that arrive with the handshake are dispatched in the same tick.
    if (onMessage) ws.addEventListener("message", onMessage);
    await new Promise<void>((resolve, reject) => {
      const onOpen = (): void => {
        cleanup();
        resolve();
      };
      const onError = (ev: Event): void => {
        cleanup();
        reject(socketOpenError(ev, url));
      };
      const onClose = (ev: CloseEvent): void => {
        cleanup();
        reject(new SandboxError(`WebSocket ${path} closed before opening (code ${ev.code})`, { code: "network" }));
      };
      const cleanup = (): void => {
        ws.removeEventListener("open", onOpen);
        ws.removeEventListener("error", onError);
        ws.removeEventListener("close", onClose);
      };
      ws.addEventListener("open", onOpen);
      ws.addEventListener("error", onError);
      ws.addEventListener("close", onClose);
    });
    return ws;
  }
}

/** Maps a failed WebSocket handshake to an SDK error, using the HTTP status when the runtime reports it. */
function socketOpenError(ev: Event, url: string): SandboxError {
  const err = (ev as { error?: unknown }).error;
  const msg = err instanceof Error ? err.message : "WebSocket connection failed";
  const m = /Unexpected server response: (\d{3})/.exec(msg);
  if (m) {
    const status = Number(m[1]);
    return errorFromCode(codeForStatus(status), `WebSocket ${url.replace(/\?.*/, "")}: HTTP ${status}`, status);
  }
  return new SandboxError(`WebSocket ${url.replace(/\?.*/, "")}: ${msg}`, { code: "network", cause: err });
}

/** Reads an error answer (`{"error": {"code", "message"}}`, or anything else) into the matching error class. */
export async function errorFromResponse(resp: Response): Promise<SandboxError> {
  let text = "";
  try {
    text = await resp.text();
  } catch {
    // body unreadable: the status decides
  }
  return errorFromAnswer(resp.status, text, resp.statusText, resp.headers.get("retry-after") ?? undefined);
}

/** The SDK error for an error answer read whole (`Retry-After` in whole seconds becomes `retryAfter`). */
function errorFromAnswer(status: number, text: string, statusText: string, retryAfter: string | undefined): SandboxError {
  const err = errorFromBody(status, text, statusText);
  const retry = retryAfter?.trim() ?? "";
  if (/^\d+$/.test(retry)) err.retryAfter = Number(retry);
  return err;
}

/** Client and base path of one sandbox's process API. */
export interface SandboxScope {
  client: HttpClient;
  /** `/v1/sandboxes/{id}` */
  base: string;
}

