/**
 * Wire shapes (snake_case, exactly as docs/api.md) and the camelCase objects the SDK hands out.
 *
 * Browser-safe: no Node built-ins.
 */
import { type NetworkPolicy, type WireNetworkPolicy, policyFromWire } from "./network.js";
import { type VolumeMount, type WireVolumeMount, volumeMountFromWire } from "./volumes.js";

/** Lifecycle state of a sandbox. */
export type SandboxState = "starting" | "running" | "paused" | "stopped" | "failed" | "unhealthy";

/** Lifecycle state of a process. `exited`, `failed`, `killed` and `timed_out` are final. */
export type ProcessStatus = "queued" | "running" | "exited" | "failed" | "killed" | "timed_out";

/** An `RLIMIT_*` resource, lower case without the prefix. */
export type RlimitResource =
  | "cpu"
  | "fsize"
  | "data"
  | "stack"
  | "core"
  | "rss"
  | "nproc"
  | "nofile"
  | "memlock"
  | "as"
  | "locks"
  | "sigpending"
  | "msgqueue"
  | "nice"
  | "rtprio"
  | "rttime";

/** One resource limit. */
export interface Rlimit {
  resource: RlimitResource;
  soft: number;
  /** Defaults to `soft`. */
  hard?: number;
}

/** A signal: a name with or without `SIG` (`"TERM"`, `"SIGTERM"`, `"RTMIN+1"`) or a number. */
export type Signal = string | number;

/** `SandboxInfo` as the daemon sends it. */
export interface WireSandboxInfo {
  id: string;
  state: SandboxState;
  template: string;
  cpu: number | null;
  memory_mb: number | null;
  pids: number | null;
  disk_mb: number | null;
  env: Record<string, string>;
  metadata: Record<string, string>;
  on_timeout: "kill" | "pause";
  created_at: string;
  expires_at: string | null;
  error?: string | null;
  network?: WireNetworkPolicy | null;
  preview_domain?: string | null;
  tenant?: string;
  access_token?: string;
  /** Absent when the sandbox mounts none. */
  volumes?: WireVolumeMount[];
}

/** `ProcessInfo` as the agent sends it. */
export interface WireProcessInfo {
  id: string;
  pid: number | null;
  cmd: string;
  args: string[];
  cwd: string;
  user: string;
  env: Record<string, string>;
  is_pty: boolean;
  status: ProcessStatus;
  exit_code: number | null;
  signal: string | null;
  started_at: string | null;
  ended_at: string | null;
  error: string | null;
  stdout_bytes: number;
  stderr_bytes: number;
  lost_bytes: number;
  last_seq: number;
  resources?: { cpu_user_ms: number; cpu_system_ms: number; max_rss_bytes: number } | null;
}

/** `ExecResult`: process info plus collected output (text, or base64 when not UTF-8). */
export interface WireExecResult extends WireProcessInfo {
  stdout?: string;
  stdout_b64?: string;
  stderr?: string;
  stderr_b64?: string;
}

/** Body of `POST /exec` and `POST /processes`. */
export interface WireStartRequest {
  cmd?: string;
  argv?: string[];
  cwd?: string;
  env?: Record<string, string>;
  user?: string;
  timeout_ms?: number;
  idle_timeout_ms?: number;
  stdin?: "null" | "pipe" | { bytes_b64: string } | { text: string };
  tty?: { cols: number; rows: number };
  rlimits?: Rlimit[];
  id?: string;
}

/** A sandbox as the SDK reports it. */
export interface SandboxInfo {
  /** Sandbox id. */
  id: string;
  /** Same as {@link SandboxInfo.id} (E2B spelling). */
  sandboxId: string;
  state: SandboxState;
  template: string;
  cpu: number | null;
  memoryMb: number | null;
  pids: number | null;
  diskMb: number | null;
  env: Record<string, string>;
  metadata: Record<string, string>;
  onTimeout: "kill" | "pause";
  /** Creation time. */
  createdAt: Date;
  /** When the sandbox reaches its deadline, if it has one. */
  expiresAt: Date | null;
  /** Why the sandbox is `failed` or `stopped`, when known. */
  error: string | null;
  /** The outbound network policy in force (null without networking). */
  network: NetworkPolicy | null;
  /** What follows `{port}-{id}.` in preview host names, e.g. `localhost:7070`. */
  previewDomain: string | null;
  /** The tenant of the key that created it (`default` for the daemon's key file). */
  tenant: string;
  /** The volumes it mounts, as created (empty when none). */
  volumes: Required<VolumeMount>[];
}

/** Converts the daemon's `SandboxInfo`. */
export function sandboxInfoFromWire(w: WireSandboxInfo): SandboxInfo {
  return {
    id: w.id,
    sandboxId: w.id,
    state: w.state,
    template: w.template,
    cpu: w.cpu ?? null,
    memoryMb: w.memory_mb ?? null,
    pids: w.pids ?? null,
    diskMb: w.disk_mb ?? null,
    env: w.env ?? {},
    metadata: w.metadata ?? {},
    onTimeout: w.on_timeout,
    createdAt: new Date(w.created_at),
    expiresAt: w.expires_at ? new Date(w.expires_at) : null,
    error: w.error ?? null,
    network: w.network ? policyFromWire(w.network) : null,
    previewDomain: w.preview_domain ?? null,
    tenant: w.tenant ?? "default",
    volumes: (w.volumes ?? []).map(volumeMountFromWire),
  };
}

/** Everything known about one process (camelCase; `envs` is an alias of `env` for Declaw code). */
export interface ProcessInfo {
  /** Stable string id (client-chosen or assigned by the agent). */
  id: string;
  /** PID inside the sandbox; 0 when the process never started. */
  pid: number;
  /** The command as given: the shell string, or argv joined with spaces. */
  cmd: string;
  /** The argv actually executed. */
  args: string[];
  cwd: string;
  user: string;
  /** The merged environment the process was given. */
  env: Record<string, string>;
  /** Alias of {@link ProcessInfo.env} (Declaw spelling). */
  envs: Record<string, string>;
  isPty: boolean;
  status: ProcessStatus;
  /** Exit code by shell convention (128 + n for signal n); null while running. */
  exitCode: number | null;
  /** Signal that ended the process, e.g. `"SIGKILL"`. */
  signal: string | null;
  startedAt: Date | null;
  endedAt: Date | null;
  /** Why it failed to start or timed out. */
  error: string | null;
  stdoutBytes: number;
  stderrBytes: number;
  /** Output bytes dropped by the per-process cap. */
  lostBytes: number;
  /** Seq of the last output chunk so far (0: none). */
  lastSeq: number;
  /** What the process used, once it has ended (the kernel's account: it and the children it waited for). */
  resources: ProcessResources | null;
}

/** CPU time and peak memory of an ended process. */
export interface ProcessResources {
  cpuUserMs: number;
  cpuSystemMs: number;
  /** The largest resident set of the process or of one child it waited for. */
  maxRssBytes: number;
}

/** Converts the agent's `ProcessInfo`. */
export function processInfoFromWire(w: WireProcessInfo): ProcessInfo {
  return {
    id: w.id,
    pid: w.pid ?? 0,
    cmd: w.cmd,
    args: w.args ?? [],
    cwd: w.cwd,
    user: w.user,
    env: w.env ?? {},
    envs: w.env ?? {},
    isPty: w.is_pty,
    status: w.status,
    exitCode: w.exit_code ?? null,
    signal: w.signal ?? null,
    startedAt: w.started_at ? new Date(w.started_at) : null,
    endedAt: w.ended_at ? new Date(w.ended_at) : null,
    error: w.error ?? null,
    stdoutBytes: w.stdout_bytes,
    stderrBytes: w.stderr_bytes,
    lostBytes: w.lost_bytes,
    lastSeq: w.last_seq,
    resources: w.resources
      ? {
          cpuUserMs: w.resources.cpu_user_ms,
          cpuSystemMs: w.resources.cpu_system_ms,
          maxRssBytes: w.resources.max_rss_bytes,
        }
      : null,
  };
}

/** Whether a status is final. */
export function isFinal(status: ProcessStatus): boolean {
  return status !== "queued" && status !== "running";
}

/** The exit code of a finished process (shell convention; -1 if the server gave none). */
export function exitCodeOf(w: Pick<WireProcessInfo, "exit_code">): number {
  return w.exit_code ?? -1;
}
