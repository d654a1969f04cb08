/**
 * Where the daemon is and which key to send: options, then `SANDPIT_URL` / `SANDPIT_API_KEY`, then (Node
 * only) the key file the daemon writes. Browser-safe: the key-file reader is loaded only on Node.
 */

/** Default daemon address. */
export const DEFAULT_URL = "http://127.0.0.1:7070";

/** A WebSocket constructor with the standard browser shape (the `ws` package's also fits). */
export type WebSocketConstructor = new (url: string, protocols?: string | string[], init?: unknown) => WebSocket;

/** How to reach the daemon. Every field is optional. */
export interface ConnectionOptions {
  /** Daemon URL; default `SANDPIT_URL`, else `http://127.0.0.1:7070`. */
  url?: string;
  /** Alias of {@link ConnectionOptions.url}. */
  apiUrl?: string;
  /** API key; default `SANDPIT_API_KEY`, else (Node) the daemon's key file. */
  apiKey?: string;
  /** Default per-request timeout in milliseconds for plain HTTP calls (not streams). None by default. */
  requestTimeoutMs?: number;
  /** A `fetch` implementation to use instead of the global one. */
  fetch?: typeof fetch;
  /** A WebSocket constructor to use instead of the global one (or, on Node, the `ws` package). */
  WebSocket?: WebSocketConstructor;
  /** How many times a cut stream is resumed before giving up with `SandboxError` (default 5). */
  streamRetries?: number;
}

/** Resolved connection settings. */
export interface ResolvedConfig {
  url: string;
  apiKey: string | undefined;
  requestTimeoutMs: number | undefined;
  fetch: typeof fetch;
  /** On Node, unless the caller passed its own `fetch`: small JSON calls on `node:http` (`./node/quick.ts`). */
  quick: QuickRequest | undefined;
  WebSocket: WebSocketConstructor | undefined;
  streamRetries: number;
}

/** `./node/quick.ts`'s request function (declared here: browser builds do not compile `src/node`). */
export type QuickRequest = (
  method: string,
  url: string,
  headers: Record<string, string>,
  body: string | undefined,
  signal: AbortSignal | undefined,
) => Promise<{ status: number; statusText: string; headers: Record<string, string>; text: string }>;

/** Whether this runtime is Node.js. */
export function isNode(): boolean {
  const p = (globalThis as { process?: { versions?: { node?: string } } }).process;
  return typeof p?.versions?.node === "string";
}

/** An environment variable, or undefined (always undefined in browsers). */
export function envVar(name: string): string | undefined {
  const p = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process;
  const v = p?.env?.[name];
  return v === undefined || v === "" ? undefined : v;
}

/**
 * Imports a module by a specifier computed at run time, so that bundlers do not pull Node-only code into
 * a browser build. Relative specifiers resolve against this file.
 */
export async function importDynamic<T>(specifier: string): Promise<T> {
  const spec = specifier.startsWith(".") ? new URL(specifier, import.meta.url).href : specifier;
  return (await import(/* webpackIgnore: true */ /* @vite-ignore */ spec)) as T;
}

/** Resolves options and environment into settings. */
export async function resolveConfig(opts: ConnectionOptions = {}): Promise<ResolvedConfig> {
  const url = (opts.url ?? opts.apiUrl ?? envVar("SANDPIT_URL") ?? DEFAULT_URL).replace(/\/+$/, "");
  let apiKey = opts.apiKey ?? envVar("SANDPIT_API_KEY");
  if (apiKey === undefined && isNode()) {
    const mod = await importDynamic<{ readKeyFile(): Promise<string | undefined> }>("./node/keyfile.js");
    apiKey = await mod.readKeyFile();
  }
  const f = opts.fetch ?? globalThis.fetch;
  if (typeof f !== "function") throw new Error("sandpit: no fetch available; pass options.fetch");
  let quick: QuickRequest | undefined;
  if (opts.fetch === undefined && isNode() && /^https?:\/\//.test(url)) {
    quick = (await importDynamic<{ quickTransport(): QuickRequest }>("./node/quick.js")).quickTransport();
  }
  return {
    url,
    apiKey,
    requestTimeoutMs: opts.requestTimeoutMs,
    fetch: f.bind(globalThis),
    quick,
    WebSocket: opts.WebSocket,
    streamRetries: opts.streamRetries ?? 5,
  };
}
