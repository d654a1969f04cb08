/**
 * Result objects: {@link CommandResult} (Superserve / Declaw), {@link ExecOutput} and {@link ExitStatus}
 * (microsandbox, also Hyperbrowser's `exec`), {@link ProcessResult} (Hyperbrowser).
 *
 * Browser-safe.
 */
import { utf8, wireBytes } from "./encoding.js";
import type { ProcessStatus, WireExecResult, WireProcessInfo } from "./types.js";

/** The result of `commands.run()` / `runStream()` / `CommandHandle.wait()` / `CommandSession.wait()`. */
export interface CommandResult {
  /** Everything written to stdout (UTF-8, invalid bytes replaced). */
  stdout: string;
  /** Everything written to stderr. */
  stderr: string;
  /** Exit code (shell convention: 128 + n when ended by signal n, 127 when the program was not found). */
  exitCode: number;
  /** Final status. */
  status: ProcessStatus;
  /** The server's explanation when the command failed to start or timed out. */
  error: string | null;
  /** Signal that ended the command, e.g. `"SIGKILL"`. */
  signal: string | null;
  /** Process id (string). */
  id: string;
  /** PID inside the sandbox. */
  pid: number;
}

/** Builds a {@link CommandResult} from final info and collected output. */
export function commandResult(info: WireProcessInfo, stdout: string, stderr: string): CommandResult {
  return {
    stdout,
    stderr,
    exitCode: info.exit_code ?? -1,
    status: info.status,
    error: info.error ?? null,
    signal: info.signal ?? null,
    id: info.id,
    pid: info.pid ?? 0,
  };
}

/** Builds a {@link CommandResult} from an `ExecResult`. */
export function commandResultFromExec(r: WireExecResult): CommandResult {
  return commandResult(r, utf8(wireBytes(r.stdout, r.stdout_b64)), utf8(wireBytes(r.stderr, r.stderr_b64)));
}

/** The result of Hyperbrowser's `process.wait()` / `result()` and of its stream's `exit` event. */
export interface ProcessResult extends CommandResult {
  /** Raw stdout bytes. */
  stdoutBytes: Uint8Array;
  /** Raw stderr bytes. */
  stderrBytes: Uint8Array;
  /** When the process started / ended (RFC 3339). */
  startedAt: string | null;
  endedAt: string | null;
}

/** Builds a {@link ProcessResult}. */
export function processResult(info: WireProcessInfo, stdout: Uint8Array, stderr: Uint8Array): ProcessResult {
  return {
    ...commandResult(info, utf8(stdout), utf8(stderr)),
    stdoutBytes: stdout,
    stderrBytes: stderr,
    startedAt: info.started_at ?? null,
    endedAt: info.ended_at ?? null,
  };
}

/** How a process ended (microsandbox's `ExitStatus`). */
export class ExitStatus {
  /** Exit code; 0 typically means success. */
  readonly code: number;
  /** The process's final status (`exited`, `killed`, `timed_out`, `failed`). */
  readonly state: ProcessStatus;
  /** Signal that ended it, if any. */
  readonly signal: string | null;

  constructor(code: number, state: ProcessStatus = "exited", signal: string | null = null) {
    this.code = code;
    this.state = state;
    this.signal = signal;
  }

  /** True if code is 0. */
  get success(): boolean {
    return this.code === 0;
  }

  /** The final status string, so that `${result.status}` reads `exited`, `killed`, ... */
  toString(): string {
    return this.state;
  }

  /** JSON form. */
  toJSON(): { code: number; success: boolean; state: ProcessStatus; signal: string | null } {
    return { code: this.code, success: this.success, state: this.state, signal: this.signal };
  }
}

/**
 * Text that is both a string and a function returning it, so that microsandbox's `out.stdout()` and
 * Hyperbrowser's `result.stdout.trim()` both work on the same result. Template literals, `String(x)`,
 * `x + ""`, `JSON.stringify` and Node's `console.log` see the text; `typeof` says `"function"`, so compare
 * with `x.toString()` or `x()` when you need a primitive.
 */
export type OutputText = string & (() => string);

const INSPECT = Symbol.for("nodejs.util.inspect.custom");

/** Makes an {@link OutputText}. */
export function outputText(text: string): OutputText {
  const target = (() => text) as unknown as Record<PropertyKey, unknown>;
  Object.defineProperty(target, INSPECT, { value: () => text });
  const boxed = Object(text) as Record<PropertyKey, unknown>;
  return new Proxy(target, {
    apply: () => text,
    get(_t, prop) {
      if (prop === Symbol.toPrimitive) return () => text;
      if (prop === "toString" || prop === "valueOf" || prop === "toJSON") return () => text;
      if (prop === INSPECT) return () => text;
      if (prop === "length") return text.length;
      if (prop in boxed) {
        const v = Reflect.get(boxed, prop, boxed);
        return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(text) : v;
      }
      return undefined;
    },
    has: (_t, prop) => prop in boxed,
  }) as unknown as OutputText;
}

/** A finished command's collected output and status (microsandbox's `ExecOutput`). */
export class ExecOutput {
  private readonly out: Uint8Array;
  private readonly err: Uint8Array;
  /** Exit status object. */
  readonly status: ExitStatus;
  /** Process id (string). */
  readonly id: string;
  /** PID inside the sandbox. */
  readonly pid: number;
  /** The server's explanation when the command failed to start or timed out. */
  readonly error: string | null;
  /**
   * Collected stdout: call it (`stdout()`, microsandbox) or use it as a string (`stdout.trim()`,
   * Hyperbrowser).
   */
  readonly stdout: OutputText;
  /** Collected stderr; see {@link ExecOutput.stdout}. */
  readonly stderr: OutputText;

  constructor(stdout: Uint8Array, stderr: Uint8Array, status: ExitStatus, info?: Partial<WireProcessInfo>) {
    this.out = stdout;
    this.err = stderr;
    this.status = status;
    this.id = info?.id ?? "";
    this.pid = info?.pid ?? 0;
    this.error = info?.error ?? null;
    this.stdout = outputText(utf8(stdout));
    this.stderr = outputText(utf8(stderr));
  }

  /** Builds one from an `ExecResult`. */
  static fromWire(r: WireExecResult): ExecOutput {
    return new ExecOutput(
      wireBytes(r.stdout, r.stdout_b64),
      wireBytes(r.stderr, r.stderr_b64),
      new ExitStatus(r.exit_code ?? -1, r.status, r.signal ?? null),
      r,
    );
  }

  /** Exit code. */
  get code(): number {
    return this.status.code;
  }

  /** Exit code (Hyperbrowser / Superserve spelling). */
  get exitCode(): number {
    return this.status.code;
  }

  /** True if the exit code is 0. */
  get success(): boolean {
    return this.status.success;
  }

  /** Raw stdout bytes. */
  stdoutBytes(): Uint8Array {
    return this.out;
  }

  /** Raw stderr bytes. */
  stderrBytes(): Uint8Array {
    return this.err;
  }

  /** JSON form with plain strings. */
  toJSON(): Record<string, unknown> {
    return {
      id: this.id,
      pid: this.pid,
      exitCode: this.code,
      success: this.success,
      status: this.status.state,
      signal: this.status.signal,
      error: this.error,
      stdout: this.stdout.toString(),
      stderr: this.stderr.toString(),
    };
  }
}
