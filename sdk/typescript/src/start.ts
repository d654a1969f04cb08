/**
 * Turns the option spellings of every seed (`env`/`envs`, `user`/`runAs`, `timeoutMs`/`timeout` seconds)
 * into one `StartRequest`, and runs a request to completion.
 *
 * Browser-safe.
 */
import type { SandboxScope } from "./client.js";
import { toBase64, toBytes } from "./encoding.js";
import { NotFoundError, SandboxError, TimeoutError } from "./errors.js";
import type { WireExecResult, WireProcessInfo, WireStartRequest } from "./types.js";

/** Options every way of starting a command accepts. */
export interface StartOptions {
  /** Working directory (server default: the user's home). */
  cwd?: string;
  /** Environment for this command, merged over the sandbox's. */
  env?: Record<string, string>;
  /** Alias of `env` (Declaw). */
  envs?: Record<string, string>;
  /** User to run as. */
  user?: string;
  /** Alias of `user` (Hyperbrowser). */
  runAs?: string;
  /** Total run time in milliseconds before the command is killed (status `timed_out`). */
  timeoutMs?: number;
  /** Total run time in seconds (Declaw). */
  timeout?: number;
  /** Kill after this long without output, in milliseconds. */
  idleTimeoutMs?: number;
  /** Standard input given up front (then EOF). */
  stdin?: string | Uint8Array;
  /** Allocate a PTY of this size. */
  tty?: { cols: number; rows: number };
  /** A client-chosen process id ([A-Za-z0-9._-]{1,128}); starting it again returns the same process. */
  id?: string;
}

/** Builds the wire request for a shell command. `idle` maps `timeoutMs` to the idle timeout (streaming). */
export function startRequest(cmd: string, o: StartOptions = {}, mode: { idle?: boolean; pipe?: boolean } = {}): WireStartRequest {
  const req: WireStartRequest = { cmd };
  if (o.cwd !== undefined) req.cwd = o.cwd;
  const env = { ...(o.envs ?? {}), ...(o.env ?? {}) };
  if (Object.keys(env).length) req.env = env;
  const user = o.user ?? o.runAs;
  if (user !== undefined) req.user = user;
  if (o.timeout !== undefined && o.timeout > 0) req.timeout_ms = Math.ceil(o.timeout * 1000);
  if (o.timeoutMs !== undefined && o.timeoutMs > 0) {
    if (mode.idle) req.idle_timeout_ms = Math.ceil(o.timeoutMs);
    else req.timeout_ms = Math.ceil(o.timeoutMs);
  }
  if (o.idleTimeoutMs !== undefined && o.idleTimeoutMs > 0) req.idle_timeout_ms = Math.ceil(o.idleTimeoutMs);
  if (o.stdin !== undefined) req.stdin = { bytes_b64: toBase64(toBytes(o.stdin)) };
  else if (mode.pipe) req.stdin = "pipe";
  if (o.tty) req.tty = { cols: o.tty.cols, rows: o.tty.rows };
  if (o.id !== undefined) req.id = o.id;
  return req;
}

/** A random process id for requests that may have to be cancelled. */
export function randomId(prefix = "ts"): string {
  const b = new Uint8Array(8);
  crypto.getRandomValues(b);
  return `${prefix}-${Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("")}`;
}

/** `POST /processes`. */
export async function startProcess(
  scope: SandboxScope,
  req: WireStartRequest,
  opts: { timeoutMs?: number | undefined; signal?: AbortSignal | undefined } = {},
): Promise<WireProcessInfo> {
  return scope.client.json<WireProcessInfo>("POST", `${scope.base}/processes`, { json: req, ...opts });
}

/** Long-polls `GET /processes/{pid}/wait` in slices (a long wait never meets an HTTP client timeout). */
export async function waitProcess(
  scope: SandboxScope,
  pid: string | number,
  opts: { output?: boolean; signal?: AbortSignal | undefined; timeoutMs?: number | undefined } = {},
): Promise<WireExecResult> {
  const deadline = opts.timeoutMs !== undefined ? Date.now() + opts.timeoutMs : undefined;
  for (;;) {
    let slice = 60_000;
    if (deadline !== undefined) slice = Math.max(0, Math.min(slice, deadline - Date.now()));
    try {
      return await scope.client.json<WireExecResult>(
        "GET",
        `${scope.base}/processes/${encodeURIComponent(String(pid))}/wait`,
        { query: { timeout_ms: slice, output: opts.output === false ? false : undefined }, signal: opts.signal, timeoutMs: 0 },
      );
    } catch (e) {
      if (!(e instanceof TimeoutError) || e.code !== "timeout" || e.status !== 408) throw e;
      if (deadline !== undefined && Date.now() >= deadline) throw e;
    }
  }
}

/** `DELETE /processes/{pid}`: SIGKILL to the whole tree; false when it had already ended. */
export async function killProcess(scope: SandboxScope, pid: string | number, opts: { timeoutMs?: number | undefined } = {}): Promise<boolean> {
  const r = await scope.client.json<{ killed: boolean }>(
    "DELETE",
    `${scope.base}/processes/${encodeURIComponent(String(pid))}`,
    opts,
  );
  return r.killed;
}

/**
 * Runs a request to completion and returns its `ExecResult`, in one round trip (`POST /exec`). Node's fetch
 * stops waiting for an answer after 5 minutes (undici's `headersTimeout`), so a command without a total
 * timeout of at most 4 minutes carries a client-chosen id, and when its answer is lost that way (or to a
 * dropped connection) the command, which runs on in the sandbox, is long-polled by that id. An aborted
 * `signal` kills the command.
 */
export async function runToCompletion(
  scope: SandboxScope,
  req: WireStartRequest,
  opts: { signal?: AbortSignal | undefined; requestTimeoutMs?: number | undefined } = {},
): Promise<WireExecResult> {
  const short = req.timeout_ms !== undefined && req.timeout_ms <= 240_000;
  // A client-chosen id lets an aborted or timed-out request kill what it started, and a lost answer be
  // waited for.
  const cancellable = opts.signal !== undefined || opts.requestTimeoutMs !== undefined;
  if ((cancellable || !short) && req.id === undefined) req = { ...req, id: randomId() };
  const id = req.id;
  const kill = (): void => {
    if (id !== undefined) void killProcess(scope, id).catch(() => undefined);
  };
  opts.signal?.throwIfAborted();
  opts.signal?.addEventListener("abort", kill, { once: true });
  try {
    try {
      return await scope.client.json<WireExecResult>("POST", `${scope.base}/exec`, {
        json: req,
        signal: opts.signal,
        timeoutMs: opts.requestTimeoutMs ?? 0,
      });
    } catch (e) {
      const lost = e instanceof SandboxError && e.code === "network" && !(e instanceof TimeoutError);
      if (short || id === undefined || !lost || opts.signal?.aborted === true) throw e;
      try {
        return await waitProcess(scope, id, { signal: opts.signal, timeoutMs: opts.requestTimeoutMs });
      } catch (e2) {
        // Never started (the request did not reach the sandbox): the first error says why.
        throw e2 instanceof NotFoundError ? e : e2;
      }
    }
  } catch (e) {
    if (e instanceof TimeoutError && cancellable) kill();
    throw e;
  } finally {
    opts.signal?.removeEventListener("abort", kill);
  }
}
