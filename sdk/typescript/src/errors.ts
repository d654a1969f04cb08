/**
 * Error classes. Every error the SDK throws is a {@link SandboxError}; the subclasses name the server's
 * error codes (`{"error": {"code", "message"}}`) and the SDK's own failures (a cut stream, a non-zero exit).
 *
 * Browser-safe: no Node built-ins.
 */

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

  constructor(message: string, opts: SandboxErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = new.target.name;
    this.code = opts.code ?? "unknown";
    this.status = opts.status;
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

/** `429 resource_exhausted`: too many sandboxes or processes. */
export class ResourceExhaustedError extends SandboxError {}

/** `503 unavailable`: the sandbox's agent cannot be reached. */
export class UnavailableError extends SandboxError {}

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

/** Builds the error class for a server error code and HTTP status. */
export function errorFromCode(code: string, message: string, status?: number): SandboxError {
  const opts: SandboxErrorOptions = { code };
  if (status !== undefined) opts.status = status;
  switch (code) {
    case "unauthenticated":
      return new AuthenticationError(message, opts);
    case "invalid_argument":
    case "payload_too_large":
      return new InvalidArgumentError(message, opts);
    case "not_found":
      return new NotFoundError(message, opts);
    case "conflict":
      return new ConflictError(message, opts);
    case "timeout":
      return new TimeoutError(message, opts);
    case "resource_exhausted":
      return new ResourceExhaustedError(message, opts);
    case "unavailable":
      return new UnavailableError(message, opts);
    case "insufficient_storage":
      return new InsufficientStorageError(message, opts);
    case "permission_denied":
      return new PermissionDeniedError(message, opts);
    case "already_exists":
      return new AlreadyExistsError(message, opts);
    case "not_empty":
      return new NotEmptyError(message, opts);
    case "is_a_directory":
      return new IsADirError(message, opts);
    case "not_a_directory":
      return new NotADirError(message, opts);
    default:
      return new SandboxError(message, opts);
  }
}

/** The code the server would use for an HTTP status whose body carried no error object. */
export function codeForStatus(status: number): string {
  switch (status) {
    case 400:
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
    case 429:
      return "resource_exhausted";
    case 503:
      return "unavailable";
    case 507:
      return "insufficient_storage";
    default:
      return "internal";
  }
}
