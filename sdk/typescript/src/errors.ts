/**
 * Error classes. Every error the SDK throws is a {@link SandboxError}; the subclasses name the server's
 * error codes (`{"error": {"code", "message"}}`) and the SDK's own failures (a cut stream, a non-zero exit).
 *
 * Browser-safe: no Node built-ins.
 */
import type { TemplateBuild } from "./templates.js";

/** Fields shared by every SDK error. */
export interface SandboxErrorOptions {
  /** The server's machine-readable code (`not_found`, `conflict`, ...), or an SDK code such as `stream_cut`. */
  code?: string;
  /** The HTTP status of the failed response, when there was one. */
  status?: number;
  /** The underlying error (a network failure, for instance). */
  cause?: unknown;
}

/**
 * Base class of every sandpit error. Thrown as-is when a stream (SSE or WebSocket) was cut and could not be
 * resumed before the process finished, and for server codes without a dedicated class.
 */
export class SandboxError extends Error {
  /** Machine-readable code: the server's (`resource_exhausted`, `internal`, ...) or the SDK's (`stream_cut`). */
  readonly code: string;
  /** HTTP status of the failed response, if any. */
  readonly status: number | undefined;
  /** The server's `Retry-After` in seconds, when it sent one (a 429 over a tenant quota or rate, a 503). */
  retryAfter: number | undefined;

  constructor(message: string, opts: SandboxErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = new.target.name;
    this.code = opts.code ?? "unknown";
    this.status = opts.status;
    this.retryAfter = undefined;
  }
}

/** `401 unauthenticated`: the API key is missing or wrong. */
export class AuthenticationError extends SandboxError {}

/** `400 invalid_argument`: a malformed request, an unknown field, a bad value. */
export class InvalidArgumentError extends SandboxError {}

/** `404 not_found`: no such sandbox, process or template. */
export class NotFoundError extends SandboxError {}

/** `409 conflict`: an impossible state transition, stdin that is not a pipe, a signal to an ended process. */
export class ConflictError extends SandboxError {}

/**
 * A deadline passed: a `408 timeout` long-poll, a per-request timeout (`requestTimeout`), or a command that
 * the sandbox ended as `timed_out`. In the last case {@link TimeoutError.result} holds what it printed.
 */
export class TimeoutError extends SandboxError {
  /** The command's result when the command itself timed out (status `timed_out`). */
  result?: unknown;
}

/** Alias of {@link TimeoutError}, as spelled in the Superserve docs. */
export const SandboxTimeoutError = TimeoutError;

/** `413 payload_too_large`: the request body is larger than the server accepts. */
export class PayloadTooLargeError extends SandboxError {}

/**
 * `429`: too many sandboxes or processes (`resource_exhausted`), or over a tenant quota (`code`
 * `quota_exceeded` or `rate_limited`).
 */
export class ResourceExhaustedError extends SandboxError {}

/**
 * `503 unavailable`: what should serve the call cannot be reached: the sandbox's agent, the daemon behind a
 * proxy (a 502/503/504 without the API's error body), or a server in the sandbox (`502 bad_gateway`).
 */
export class UnavailableError extends SandboxError {}

/** `500 internal`: a bug or an unexpected host failure on the server. */
export class InternalError extends SandboxError {}

/** `507 insufficient_storage`: a disk is full (the daemon's, or a sandbox's `disk_mb` during a file write);
 * nothing half-made was left. Retry once space is freed. */
export class InsufficientStorageError extends SandboxError {}

/** `403 permission_denied`: the sandbox user may not do this (file permissions, a read-only file system). */
export class PermissionDeniedError extends SandboxError {}

/** `409 already_exists`: the path exists already. */
export class AlreadyExistsError extends ConflictError {}

/** `409 not_empty`: the directory is not empty (remove it recursively). */
export class NotEmptyError extends ConflictError {}

/** `409 is_a_directory`: a directory where a file was needed. */
export class IsADirError extends ConflictError {}

/** `409 not_a_directory`: a file where a directory was needed. */
export class NotADirError extends ConflictError {}

/** What a command that exited non-zero left behind. */
export interface CommandExitInfo {
  exitCode: number;
  stdout: string;
  stderr: string;
  error?: string | null;
}

/** A command ended with a non-zero exit code where success was required (Declaw's `CommandHandle.wait()`). */
export class CommandExitError extends SandboxError implements CommandExitInfo {
  /** The exit code (shell convention: 128 + n when killed by signal n). */
  readonly exitCode: number;
  /** Everything the command wrote to stdout. */
  readonly stdout: string;
  /** Everything the command wrote to stderr. */
  readonly stderr: string;
  /** The server's explanation when the command failed to start or timed out. */
  readonly error: string | null;
  /** The full result object. */
  readonly result: CommandExitInfo;

  constructor(result: CommandExitInfo) {
    super(`command exited with code ${result.exitCode}${result.error ? `: ${result.error}` : ""}`, {
      code: "command_exit",
    });
    this.exitCode = result.exitCode;
    this.stdout = result.stdout;
    this.stderr = result.stderr;
    this.error = result.error ?? null;
    this.result = result;
  }
}

/** A template build ended `failed` (`Templates.wait`): `build.error` says why, `build.log` what it did. */
export class TemplateBuildError extends SandboxError {
  /** The failed build as the daemon reported it. */
  readonly build: TemplateBuild;

  constructor(build: TemplateBuild) {
    super(`template ${JSON.stringify(build.name)} failed to build: ${build.error ?? "no reason given"}`, {
      code: "template_build_failed",
    });
    this.build = build;
  }
}

type ErrorClass = new (message: string, opts?: SandboxErrorOptions) => SandboxError;

/** The class of each server code this SDK knows. */
const CODE_CLASSES: Readonly<Record<string, ErrorClass>> = {
  invalid_argument: InvalidArgumentError,
  unauthenticated: AuthenticationError,
  permission_denied: PermissionDeniedError,
  not_found: NotFoundError,
  timeout: TimeoutError,
  conflict: ConflictError,
  already_exists: AlreadyExistsError,
  not_empty: NotEmptyError,
  is_a_directory: IsADirError,
  not_a_directory: NotADirError,
  payload_too_large: PayloadTooLargeError,
  range_not_satisfiable: SandboxError,
  resource_exhausted: ResourceExhaustedError,
  quota_exceeded: ResourceExhaustedError,
  rate_limited: ResourceExhaustedError,
  unavailable: UnavailableError,
  bad_gateway: UnavailableError,
  insufficient_storage: InsufficientStorageError,
  internal: InternalError,
};

function classOf(code: string): ErrorClass | undefined {
  return Object.hasOwn(CODE_CLASSES, code) ? CODE_CLASSES[code] : undefined;
}

/**
 * Builds the error class for a server error code and HTTP status. A code this SDK does not know (a newer
 * server) keeps its `code` and gets the class its status stands for (a 409 is a {@link ConflictError}).
 */
export function errorFromCode(code: string, message: string, status?: number): SandboxError {
  const opts: SandboxErrorOptions = { code };
  if (status !== undefined) opts.status = status;
  const Class = classOf(code) ?? (status === undefined ? undefined : classOf(codeForStatus(status))) ?? SandboxError;
  return new Class(message, opts);
}

/**
 * The code an error answer without the API's error body stands for, by its HTTP status: 502-504 (a gateway
 * in front of the daemon could not reach it) are `unavailable`, other 5xx `internal`, an unlisted status `unknown`.
 */
export function codeForStatus(status: number): string {
  switch (status) {
    case 400:
    case 405: // a method the path does not have (the daemon says invalid_argument too)
      return "invalid_argument";
    case 401:
      return "unauthenticated";
    case 403:
      return "permission_denied";
    case 404:
      return "not_found";
    case 408:
      return "timeout";
    case 409:
      return "conflict";
    case 413:
      return "payload_too_large";
    case 416:
      return "range_not_satisfiable";
    case 429:
      return "resource_exhausted";
    case 502:
    case 503:
    case 504:
      return "unavailable";
    case 507:
      return "insufficient_storage";
    default:
      return status >= 500 && status <= 599 ? "internal" : "unknown";
  }
}

/**
 * Turns an HTTP error answer (its status and body text) into the matching error class, as every sandpit SDK
 * does (docs/api.md, "How the SDKs map errors"; pinned by `sdk/testdata/vectors.json`). A body
 * `{"error": {"code", "message"}}` with a non-empty string code: the code decides the class (see
 * {@link errorFromCode}) and the message is the server's. Any other body (none, text, a proxy's page, other
 * JSON): the status decides ({@link codeForStatus}), and the message is `HTTP <status>: <the body's start>`.
 */
export function errorFromBody(status: number, body: string, statusText = ""): SandboxError {
  let code: string | undefined;
  let message: string | undefined;
  try {
    const detail: unknown = (JSON.parse(body) as { error?: unknown } | null)?.error;
    if (typeof detail === "object" && detail !== null) {
      const d = detail as { code?: unknown; message?: unknown };
      if (typeof d.code === "string" && d.code !== "") {
        code = d.code;
        if (typeof d.message === "string") message = d.message;
      }
    }
  } catch {
    // not JSON: classified by the status
  }
  if (message === undefined) {
    const shown = body.trim().slice(0, 500);
    message = `HTTP ${status}${statusText ? ` ${statusText}` : ""}${shown ? `: ${shown}` : ""}`;
  }
  return errorFromCode(code ?? codeForStatus(status), message, status);
}
