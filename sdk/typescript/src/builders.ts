/**
 * microsandbox's fluent option builders: {@link ExecOptionsBuilder} (for `execWith` / `execStreamWith`) and
 * {@link AttachOptionsBuilder} (for `attachWith`). Every setter returns the same builder.
 *
 * Browser-safe.
 */
import { toBase64, toBytes } from "./encoding.js";
import type { Rlimit, RlimitResource, WireStartRequest } from "./types.js";

/** Where a process's stdin comes from. */
export type StdinMode = { kind: "null" } | { kind: "pipe" } | { kind: "bytes"; data: Uint8Array };

/** Immutable options produced by {@link ExecOptionsBuilder.build}. */
export interface ExecOptions {
  readonly args: readonly string[];
  readonly cwd: string | null;
  readonly user: string | null;
  readonly env: ReadonlyArray<readonly [string, string]>;
  /** Kill the process after this many milliseconds. */
  readonly timeoutMs: number | null;
  readonly stdin: StdinMode;
  readonly tty: boolean;
  readonly rlimits: readonly Rlimit[];
}

/** Immutable options produced by {@link AttachOptionsBuilder.build}. */
export interface AttachOptions {
  readonly args: readonly string[];
  readonly cwd: string | null;
  readonly user: string | null;
  readonly env: ReadonlyArray<readonly [string, string]>;
  /** Detach key sequence, e.g. `"ctrl-]"` (the default when null) or `"ctrl-p,ctrl-q"`. */
  readonly detachKeys: string | null;
  readonly rlimits: readonly Rlimit[];
  /** Streams to use instead of the process's stdin/stdout (Node streams; for embedding and tests). */
  readonly io: AttachIO | null;
}

/** Replacement terminal streams for `attachWith` (Node `Readable` / `Writable`, typed loosely here). */
export interface AttachIO {
  /** Where keystrokes come from (default `process.stdin`). */
  input: unknown;
  /** Where output goes (default `process.stdout`); its `columns`/`rows` and `resize` event are used. */
  output: unknown;
}

/** Entries of a record or an iterable of pairs. */
function entries(v: Record<string, string> | Iterable<readonly [string, string]>): Array<readonly [string, string]> {
  if (typeof (v as Iterable<unknown>)[Symbol.iterator] === "function") {
    return [...(v as Iterable<readonly [string, string]>)];
  }
  return Object.entries(v as Record<string, string>);
}

/** Setters shared by both builders. */
abstract class CommonBuilder<Self> {
  protected _args: string[] = [];
  protected _cwd: string | null = null;
  protected _user: string | null = null;
  protected _env: Array<readonly [string, string]> = [];
  protected _rlimits: Rlimit[] = [];

  protected abstract self(): Self;

  /** Appends one argument. */
  arg(s: string): Self {
    this._args.push(s);
    return this.self();
  }

  /** Appends many arguments. */
  args(iter: Iterable<string>): Self {
    this._args.push(...iter);
    return this.self();
  }

  /** Working directory. */
  cwd(path: string): Self {
    this._cwd = path;
    return this.self();
  }

  /** User to run as. */
  user(user: string): Self {
    this._user = user;
    return this.self();
  }

  /** Adds one environment variable. */
  env(key: string, value: string): Self {
    this._env.push([key, value]);
    return this.self();
  }

  /** Adds many environment variables. */
  envs(vars: Record<string, string> | Iterable<readonly [string, string]>): Self {
    this._env.push(...entries(vars));
    return this.self();
  }

  /** Sets both the soft and hard limit of a resource. */
  rlimit(resource: RlimitResource, n: number): Self {
    return this.rlimitRange(resource, n, n);
  }

  /** Sets distinct soft and hard limits of a resource. */
  rlimitRange(resource: RlimitResource, soft: number, hard: number): Self {
    this._rlimits = this._rlimits.filter((r) => r.resource !== resource);
    this._rlimits.push({ resource, soft, hard });
    return this.self();
  }
}

/** Fluent builder used inside `sandbox.execWith(cmd, b => ...)`. */
export class ExecOptionsBuilder extends CommonBuilder<ExecOptionsBuilder> {
  private _timeoutMs: number | null = null;
  private _stdin: StdinMode = { kind: "null" };
  private _tty = false;

  protected self(): ExecOptionsBuilder {
    return this;
  }

  /** Kill the process after this many milliseconds. */
  timeout(ms: number): ExecOptionsBuilder {
    this._timeoutMs = ms;
    return this;
  }

  /** Stdin connected to /dev/null (the default). */
  stdinNull(): ExecOptionsBuilder {
    this._stdin = { kind: "null" };
    return this;
  }

  /** A writable stdin pipe; get its writer with `ExecHandle.takeStdin()` (streaming calls only). */
  stdinPipe(): ExecOptionsBuilder {
    this._stdin = { kind: "pipe" };
    return this;
  }

  /** Pre-supplied stdin, then EOF. */
  stdinBytes(data: Uint8Array | string): ExecOptionsBuilder {
    this._stdin = { kind: "bytes", data: toBytes(data) };
    return this;
  }

  /** Allocate a pseudo-terminal (80x24; stderr is then merged into stdout). */
  tty(enabled = true): ExecOptionsBuilder {
    this._tty = enabled;
    return this;
  }

  /** Produces the immutable options. */
  build(): ExecOptions {
    return Object.freeze({
      args: Object.freeze([...this._args]),
      cwd: this._cwd,
      user: this._user,
      env: Object.freeze([...this._env]),
      timeoutMs: this._timeoutMs,
      stdin: this._stdin,
      tty: this._tty,
      rlimits: Object.freeze([...this._rlimits]),
    });
  }
}

/** Fluent builder used inside `sandbox.attachWith(cmd, b => ...)`. */
export class AttachOptionsBuilder extends CommonBuilder<AttachOptionsBuilder> {
  private _detachKeys: string | null = null;
  private _io: AttachIO | null = null;

  protected self(): AttachOptionsBuilder {
    return this;
  }

  /** Uses these streams instead of `process.stdin` / `process.stdout` (not in the microsandbox docs). */
  io(input: unknown, output: unknown): AttachOptionsBuilder {
    this._io = { input, output };
    return this;
  }

  /** Detach key sequence, e.g. `"ctrl-]"` (default) or `"ctrl-p,ctrl-q"`. */
  detachKeys(spec: string): AttachOptionsBuilder {
    this._detachKeys = spec;
    return this;
  }

  /** Produces the immutable options. */
  build(): AttachOptions {
    return Object.freeze({
      args: Object.freeze([...this._args]),
      cwd: this._cwd,
      user: this._user,
      env: Object.freeze([...this._env]),
      detachKeys: this._detachKeys,
      rlimits: Object.freeze([...this._rlimits]),
      io: this._io,
    });
  }
}

/** Runs a builder callback; accepts callbacks that return the builder, a built object, or nothing. */
export function runBuilder<B extends { build(): O }, O>(b: B, configure?: (b: B) => B | O | void): O {
  if (!configure) return b.build();
  const r = configure(b);
  if (r && typeof (r as B).build === "function") return (r as B).build();
  if (r) return r as O;
  return b.build();
}

/** The start request for a program and built exec options. */
export function execRequest(cmd: string, o: ExecOptions): WireStartRequest {
  const req: WireStartRequest = { argv: [cmd, ...o.args] };
  if (o.cwd !== null) req.cwd = o.cwd;
  if (o.user !== null) req.user = o.user;
  if (o.env.length) req.env = Object.fromEntries(o.env);
  if (o.timeoutMs !== null && o.timeoutMs > 0) req.timeout_ms = Math.ceil(o.timeoutMs);
  if (o.stdin.kind === "pipe") req.stdin = "pipe";
  else if (o.stdin.kind === "bytes") req.stdin = { bytes_b64: toBase64(o.stdin.data) };
  if (o.tty) req.tty = { cols: 80, rows: 24 };
  if (o.rlimits.length) req.rlimits = o.rlimits.map((r) => ({ ...r }));
  return req;
}

/** What `ctrl-X` types, for the X that are not letters. */
const CTRL_PUNCT: Readonly<Record<string, number>> = { "@": 0x00, "[": 0x1b, "\\": 0x1c, "]": 0x1d, "^": 0x1e, "_": 0x1f };

/**
 * Parses a detach key spec: comma-separated keys, each `ctrl-X` (X a letter in either case or one of
 * `@[\\]^_`) or one ASCII character; spaces, tabs and line breaks around a key are ignored. `"ctrl-]"` is
 * `[0x1d]`, `"ctrl-p,ctrl-q"` is `[0x10, 0x11]`. The same rules in every SDK (docs/api.md, "Detach keys";
 * `sdk/testdata/vectors.json`). Throws an `Error` for anything else.
 */
export function parseDetachKeys(spec: string): number[] {
  const out: number[] = [];
  for (const raw of spec.split(",")) {
    const key = raw.replace(/^[ \t\r\n]+|[ \t\r\n]+$/g, "");
    const m = /^ctrl-(.)$/is.exec(key);
    if (m) {
      // ASCII only: the Kelvin sign, for one, lowercases to "k".
      const c = (m[1] ?? "").charCodeAt(0) < 0x80 ? (m[1] ?? "").toLowerCase() : "";
      if (c >= "a" && c <= "z") out.push(c.charCodeAt(0) - 0x60);
      else if (Object.hasOwn(CTRL_PUNCT, c)) out.push(CTRL_PUNCT[c] ?? 0);
      else throw new Error(`detach keys: cannot press ctrl-${m[1] ?? ""} (use a letter or one of @[\\]^_)`);
    } else if (key.length === 1 && key.charCodeAt(0) < 0x80) {
      out.push(key.charCodeAt(0));
    } else {
      throw new Error(`detach keys: unknown key ${JSON.stringify(key)} (use ctrl-X or a single ASCII character)`);
    }
  }
  return out;
}
