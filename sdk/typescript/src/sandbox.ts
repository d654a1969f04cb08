/**
 * {@link Sandbox}: lifecycle (`create`, `connect`, `list`, `info`, `pause`, `resume`, `setTimeout`, `kill`),
 * lifecycle events and metrics (`events`, `eventsStream`, `metrics`, `metricsStream`), snapshots and forks
 * (`snapshot`, `fork`), and the per-sandbox surfaces of every seed: `commands` (Superserve, Declaw), `exec*` /
 * `shell*` / `attach*` (microsandbox), `exec` / `processes` / `getProcess` (Hyperbrowser).
 *
 * Browser-safe: `attach*` loads its Node-only module on demand.
 */
import {
  type AttachOptions,
  AttachOptionsBuilder,
  type ExecOptions,
  ExecOptionsBuilder,
  execRequest,
  runBuilder,
} from "./builders.js";
import { HttpClient, type SandboxScope } from "./client.js";
import { type ConnectionOptions, importDynamic, isNode } from "./config.js";
import { InvalidArgumentError, SandboxError } from "./errors.js";
import { Commands } from "./commands.js";
import { Files } from "./files.js";
import { ExecHandle } from "./exec.js";
import { ExecOutput } from "./output.js";
import { type ProcessHandle, Processes } from "./processes.js";
import { type StartOptions, runToCompletion, startProcess, startRequest } from "./start.js";
import { type SandboxInfo, type SandboxState, type WireSandboxInfo, type WireStartRequest, sandboxInfoFromWire } from "./types.js";
import { type SnapshotInfo, type WireSnapshotInfo, snapshotInfoFromWire } from "./templates.js";
import { type VolumeMount, volumeMountToWire } from "./volumes.js";
import { ProcessSocket } from "./ws.js";
import {
  type EventPage,
  type LifecycleEvent,
  type SandboxEventQuery,
  type SandboxEventStreamOpts,
  followLifecycle,
  listEvents,
} from "./events.js";
import { type MetricSample, type MetricsQuery, type MetricsStreamOpts, followMetrics, listMetrics } from "./metrics.js";
import {
  type ExposedPort,
  type ExposePortOpts,
  type NetworkPolicy,
  type WireExposedPort,
  type WireNetworkPolicy,
  exposedPortFromWire,
  hostOf,
  policyFromWire,
  policyToWire,
} from "./network.js";

/** Options of {@link Sandbox.create}. Connection options (`url`, `apiKey`, ...) may be mixed in. */
export interface SandboxOpts extends ConnectionOptions {
  /** Template name (default `base`). */
  template?: string;
  /** CPU limit in cores. */
  cpu?: number;
  /** Memory limit in MiB. */
  memoryMb?: number;
  /** Maximum number of processes/threads. */
  pids?: number;
  /** Size cap of the writable layer in MiB. */
  diskMb?: number;
  /** Environment of every command in the sandbox. */
  env?: Record<string, string>;
  /** Alias of `env`. */
  envs?: Record<string, string>;
  /** Free-form labels (filter with `Sandbox.list({ metadata })`). */
  metadata?: Record<string, string>;
  /** Seconds until the sandbox's deadline (daemon default 300). */
  timeout?: number;
  /** Same deadline in milliseconds. */
  timeoutMs?: number;
  /** What happens at the deadline: `kill` (default) or `pause`. */
  onTimeout?: "kill" | "pause";
  /** Outbound network policy (the daemon's default when absent). */
  network?: NetworkPolicy & WireNetworkPolicy;
  /**
   * Volumes to mount (at most 16, `isolate` backend): `{ name, path, readOnly }`, each at its own path. An
   * unknown volume (or another tenant's) rejects with {@link NotFoundError}, a bad path with
   * {@link InvalidArgumentError}.
   */
  volumes?: VolumeMount[];
}

/**
 * Options of {@link Sandbox.fork}: those of {@link Sandbox.create} but `template` (a fork starts from the
 * source's files) and the connection (the forks live on the source's daemon and use its key), plus `count`.
 */
export interface ForkOpts extends Omit<SandboxOpts, "template" | keyof ConnectionOptions> {
  /** How many sandboxes to make: 1-100 (default 1). */
  count?: number;
}

/** What {@link Sandbox.fork} made. */
export interface ForkResult {
  /** The snapshot they start from (`template.autoRemove`: deleted with the last of them). */
  snapshot: SnapshotInfo;
  /** The new sandboxes, running. */
  sandboxes: Sandbox[];
}

/** Options of {@link Sandbox.list}. */
export interface SandboxListOpts extends ConnectionOptions {
  /** Keep sandboxes in this state. */
  state?: SandboxState;
  /** Keep sandboxes whose metadata has all these pairs. */
  metadata?: Record<string, string>;
}

/** Options of `sandbox.exec(cmd, opts)` (Hyperbrowser): `cwd`, `env`, `timeoutMs`, `runAs`. */
export interface ExecOpts extends StartOptions {
  /** Aborts the command (it is killed). */
  signal?: AbortSignal;
}

/** Where a command's argv comes from: microsandbox passes an iterable of args, Hyperbrowser an options object. */
function isArgs(v: unknown): v is Iterable<string> {
  return v != null && typeof v !== "string" && typeof (v as Iterable<string>)[Symbol.iterator] === "function";
}

/** One sandbox. Get one with {@link Sandbox.create} or {@link Sandbox.connect}. */
export class Sandbox {
  /** Sandbox id. */
  readonly id: string;
  /** Commands: `run`, `runStream`, `spawn`, `list`, `kill`, `sendStdin`, `connect`. */
  readonly commands: Commands;
  /** Hyperbrowser's process API: `start`, `list`, `get`. */
  readonly processes: Processes;
  /** Files, with E2B's names: `read`, `write`, `writeFiles`, `list`, `exists`, `getInfo`, `makeDir`, `rename`,
   * `remove`, `watchDir`. */
  readonly files: Files;
  /** The info returned by the last lifecycle call. */
  lastInfo: SandboxInfo;
  /** The HTTP client (URL, key). */
  readonly client: HttpClient;
  /** This sandbox's access token (from create or {@link Sandbox.rotateAccessToken}); `null` when connected.
   * It opens this sandbox only: hand it to a page instead of the API key. */
  accessToken: string | null;
  private readonly scope: SandboxScope;

  private constructor(client: HttpClient, info: WireSandboxInfo) {
    this.client = client;
    this.id = info.id;
    this.lastInfo = sandboxInfoFromWire(info);
    this.accessToken = info.access_token ?? null;
    this.scope = { client, base: `/v1/sandboxes/${encodeURIComponent(info.id)}` };
    this.commands = new Commands(this.scope);
    this.processes = new Processes(this.scope);
    this.files = new Files(this.scope);
  }

  /** A new access token for this sandbox; the previous one stops working at once. */
  async rotateAccessToken(): Promise<string> {
    const r = await this.client.json<{ access_token: string }>("POST", `${this.scope.base}/access-token`);
    this.accessToken = r.access_token;
    return r.access_token;
  }

  /** Same as {@link Sandbox.id} (E2B spelling). */
  get sandboxId(): string {
    return this.id;
  }

  /** Creates a sandbox (a template name may be given instead of options). */
  static async create(opts: SandboxOpts | string = {}): Promise<Sandbox> {
    const o: SandboxOpts = typeof opts === "string" ? { template: opts } : opts;
    const client = await HttpClient.create(o);
    const info = await client.json<WireSandboxInfo>("POST", "/v1/sandboxes", { json: createRequest(o) });
    return new Sandbox(client, info);
  }

  /** Connects to an existing sandbox by id, resuming it if paused. */
  static async connect(id: string, opts: ConnectionOptions = {}): Promise<Sandbox> {
    const client = await HttpClient.create(opts);
    const info = await client.json<WireSandboxInfo>("POST", `/v1/sandboxes/${encodeURIComponent(id)}/connect`);
    return new Sandbox(client, info);
  }

  /**
   * Looks a sandbox up by id without resuming it (`GET /v1/sandboxes/{id}`), unlike {@link Sandbox.connect}.
   * Rejects with {@link NotFoundError} when it is gone.
   */
  static async get(id: string, opts: ConnectionOptions = {}): Promise<Sandbox> {
    const client = await HttpClient.create(opts);
    const info = await client.json<WireSandboxInfo>("GET", `/v1/sandboxes/${encodeURIComponent(id)}`);
    return new Sandbox(client, info);
  }

  /** Lists sandboxes. */
  static async list(opts: SandboxListOpts = {}): Promise<SandboxInfo[]> {
    const client = await HttpClient.create(opts);
    const q = new URLSearchParams();
    if (opts.state) q.append("state", opts.state);
    for (const [k, v] of Object.entries(opts.metadata ?? {})) q.append("metadata", `${k}=${v}`);
    const qs = q.toString();
    const r = await client.json<{ sandboxes: WireSandboxInfo[] }>("GET", `/v1/sandboxes${qs ? `?${qs}` : ""}`);
    return r.sandboxes.map(sandboxInfoFromWire);
  }

  /** Deletes a sandbox by id. True if it existed. */
  static async kill(id: string, opts: ConnectionOptions = {}): Promise<boolean> {
    const client = await HttpClient.create(opts);
    return deleteSandbox(client, id);
  }

  private async lifecycle(method: string, suffix: string, json?: unknown): Promise<SandboxInfo> {
    const info = await this.client.json<WireSandboxInfo>(method, `${this.scope.base}${suffix}`, json === undefined ? {} : { json });
    this.lastInfo = sandboxInfoFromWire(info);
    return this.lastInfo;
  }

  /** Current info. */
  info(): Promise<SandboxInfo> {
    return this.lifecycle("GET", "");
  }

  /** Alias of {@link Sandbox.info}. */
  getInfo(): Promise<SandboxInfo> {
    return this.info();
  }

  /** Whether the sandbox is running. */
  async isRunning(): Promise<boolean> {
    return (await this.info()).state === "running";
  }

  /** Freezes every process of the sandbox. Any process call resumes it. */
  pause(): Promise<SandboxInfo> {
    return this.lifecycle("POST", "/pause");
  }

  /** Thaws a paused sandbox. */
  resume(): Promise<SandboxInfo> {
    return this.lifecycle("POST", "/resume");
  }

  /** Moves the deadline to `timeoutMs` milliseconds from now (rounded up to whole seconds). */
  setTimeout(timeoutMs: number): Promise<SandboxInfo> {
    return this.lifecycle("POST", "/timeout", { timeout: Math.max(1, Math.ceil(timeoutMs / 1000)) });
  }

  /** Deletes the sandbox and everything in it. True if it existed. */
  kill(): Promise<boolean> {
    return deleteSandbox(this.client, this.id);
  }

  // ---- lifecycle events and metrics ----

  /**
   * This sandbox's lifecycle events (`GET /v1/sandboxes/{id}/events`), oldest first: one page, filtered by
   * `type`, `since`, `after` (a previous page's `nextAfter`) and `limit`. Its access token may read them too.
   * Once the sandbox is deleted this is a {@link NotFoundError}: read its history with
   * `Events.list({ sandbox: id })`.
   */
  events(query: SandboxEventQuery = {}): Promise<EventPage> {
    return listEvents(this.client, `${this.scope.base}/events`, { ...query, sandbox: undefined });
  }

  /**
   * Follows this sandbox's lifecycle events (`GET /v1/sandboxes/{id}/events/stream`): those after `after` when
   * given, then each new one. It ends after `sandbox.killed` (or once the sandbox is gone), or when `signal`
   * aborts or the loop breaks. A dropped connection resumes where it stopped.
   */
  async *eventsStream(opts: SandboxEventStreamOpts = {}): AsyncGenerator<LifecycleEvent> {
    yield* followLifecycle(this.client, `${this.scope.base}/events/stream`, { ...opts, sandbox: undefined }, true);
  }

  /**
   * The kept resource samples (`GET /v1/sandboxes/{id}/metrics`), oldest first, between `start` and `end`
   * (inclusive, both optional). Taken every `metrics_interval_ms` (daemon setting) while the sandbox runs.
   */
  metrics(query: MetricsQuery = {}): Promise<MetricSample[]> {
    return listMetrics(this.scope, query);
  }

  /**
   * Follows the samples (`GET /v1/sandboxes/{id}/metrics/stream`): the latest one already taken, then each new
   * one, until the sandbox is deleted, `signal` aborts or the loop breaks.
   */
  async *metricsStream(opts: MetricsStreamOpts = {}): AsyncGenerator<MetricSample> {
    yield* followMetrics(this.scope, opts);
  }

  // ---- snapshots and forks (the isolate backend) ----

  /**
   * Makes template `name` from this sandbox's files as they are now (`POST /v1/sandboxes/{id}/snapshots`): a
   * layer over the sandbox's own template, owned by its tenant; `Sandbox.create({ template: name })` starts from
   * it. The sandbox keeps running (frozen for `frozenMs` while the last changes are copied). `/tmp` and
   * `/dev/shm` are memory file systems and not part of it; nor are running processes.
   */
  async snapshot(name: string): Promise<SnapshotInfo> {
    return snapshotInfoFromWire(await this.client.json<WireSnapshotInfo>("POST", `${this.scope.base}/snapshots`, { json: { name } }));
  }

  /**
   * Makes `count` (1-100, default 1) running sandboxes whose files start as this one's are now
   * (`POST /v1/sandboxes/{id}/fork`), with the options of {@link Sandbox.create} but `template`; they share a
   * snapshot the daemon deletes with the last of them. Processes and memory are not copied, nor are the
   * source's volumes (a fork mounts those its own `volumes` name). Each new sandbox is a {@link Sandbox} on this
   * one's connection, with its own `accessToken`.
   */
  async fork(opts: ForkOpts = {}): Promise<ForkResult> {
    const json = createRequest(opts);
    if (opts.count !== undefined) json.count = opts.count;
    const r = await this.client.json<{ snapshot: WireSnapshotInfo; sandboxes: WireSandboxInfo[] }>(
      "POST",
      `${this.scope.base}/fork`,
      { json },
    );
    return { snapshot: snapshotInfoFromWire(r.snapshot), sandboxes: r.sandboxes.map((info) => new Sandbox(this.client, info)) };
  }

  // ---- network ----

  /**
   * E2B's name: the host of `port`'s preview URL, `{port}-{id}.{preview-domain}` (e.g.
   * `8000-ab12.localhost:7070`). No request is made; the port stays private until {@link Sandbox.exposePort}.
   */
  getHost(port: number): string {
    return hostOf(this.id, port, this.lastInfo.previewDomain, this.client.config.url);
  }

  /** Exposes `port`: its URL and a token for that port only. `{ public: true }` opens it to anyone with the URL. */
  async exposePort(port: number, opts: ExposePortOpts = {}): Promise<ExposedPort> {
    const json: Record<string, unknown> = { public: opts.public ?? false };
    if (opts.expiresIn !== undefined) json.expires_in = Math.ceil(opts.expiresIn);
    const w = await this.client.json<WireExposedPort>("POST", `${this.scope.base}/ports/${port}`, { json });
    return exposedPortFromWire(w);
  }

  /** Makes `port` private again and revokes every token for it. */
  async closePort(port: number): Promise<void> {
    await this.client.send("DELETE", `${this.scope.base}/ports/${port}`);
  }

  /** The exposed ports (tokens are only shown when created). */
  async ports(): Promise<ExposedPort[]> {
    const r = await this.client.json<{ ports: WireExposedPort[] }>("GET", `${this.scope.base}/ports`);
    return r.ports.map(exposedPortFromWire);
  }

  /** The outbound network policy in force. */
  /**
   * The end of the sandbox agent's own log (at most `tailBytes`, default 64 KiB; the log lives inside the
   * sandbox and is rotated at 1 MiB): what to read when a sandbox misbehaves.
   */
  async logs(opts: { tailBytes?: number } = {}): Promise<string> {
    const resp = await this.client.fetch("GET", `${this.scope.base}/logs`, { query: { tail_bytes: opts.tailBytes } });
    return await resp.text();
  }

  async getNetwork(): Promise<NetworkPolicy> {
    return policyFromWire(await this.client.json<WireNetworkPolicy>("GET", `${this.scope.base}/network`));
  }

  /** Replaces the policy while the sandbox runs; open connections it forbids are cut. */
  async setNetwork(policy: NetworkPolicy & WireNetworkPolicy): Promise<NetworkPolicy> {
    const w = await this.client.json<WireNetworkPolicy>("PUT", `${this.scope.base}/network`, { json: policyToWire(policy) });
    return policyFromWire(w);
  }

  // ---- microsandbox / Hyperbrowser: exec ----

  /**
   * Runs a command and waits for it. Two spellings:
   * - microsandbox: `exec("python3", ["-c", "print(1)"])` runs a program with arguments (no shell);
   * - Hyperbrowser: `exec("pwd && echo $FOO", { cwd, env, timeoutMs, runAs })` runs a shell command.
   *
   * The {@link ExecOutput} answers both: `code`/`exitCode`, `stdout()` or `stdout.trim()`, ...
   * A non-zero exit is a result, never an error.
   */
  async exec(cmd: string, argsOrOpts?: Iterable<string> | ExecOpts): Promise<ExecOutput> {
    let req: WireStartRequest;
    let signal: AbortSignal | undefined;
    if (isArgs(argsOrOpts)) req = { argv: [cmd, ...argsOrOpts] };
    else {
      req = startRequest(cmd, argsOrOpts ?? {});
      signal = argsOrOpts?.signal;
    }
    return ExecOutput.fromWire(await runToCompletion(this.scope, req, { signal }));
  }

  /** Runs a program with per-call options from an {@link ExecOptionsBuilder} callback, and waits. */
  async execWith(cmd: string, configure: (b: ExecOptionsBuilder) => ExecOptionsBuilder | ExecOptions | void): Promise<ExecOutput> {
    const o = runBuilder<ExecOptionsBuilder, ExecOptions>(new ExecOptionsBuilder(), configure);
    if (o.stdin.kind === "pipe") {
      throw new InvalidArgumentError("stdinPipe() needs a streaming call: use execStreamWith() and takeStdin()", {
        code: "invalid_argument",
      });
    }
    return ExecOutput.fromWire(await runToCompletion(this.scope, execRequest(cmd, o)));
  }

  /** Runs a program and returns at once an {@link ExecHandle} streaming its events. */
  execStream(cmd: string, args?: Iterable<string>): Promise<ExecHandle> {
    return this.startStream({ argv: [cmd, ...(args ?? [])] });
  }

  /** Streaming variant of {@link Sandbox.execWith}. */
  execStreamWith(cmd: string, configure: (b: ExecOptionsBuilder) => ExecOptionsBuilder | ExecOptions | void): Promise<ExecHandle> {
    return this.startStream(execRequest(cmd, runBuilder<ExecOptionsBuilder, ExecOptions>(new ExecOptionsBuilder(), configure)));
  }

  /** Runs a script through the sandbox's shell (`/bin/sh -c`) and waits. */
  async shell(script: string): Promise<ExecOutput> {
    return ExecOutput.fromWire(await runToCompletion(this.scope, { cmd: script }));
  }

  /** Shell command with streaming output. */
  shellStream(script: string): Promise<ExecHandle> {
    return this.startStream({ cmd: script });
  }

  private async startStream(req: WireStartRequest): Promise<ExecHandle> {
    const info = await startProcess(this.scope, req);
    const socket = await ProcessSocket.open(this.scope, info.id);
    return new ExecHandle(this.scope, info, socket, req.stdin === "pipe");
  }

  /** Hyperbrowser: a handle for an existing process by id (or pid). */
  getProcess(id: string | number): Promise<ProcessHandle> {
    return this.processes.get(id);
  }

  // ---- microsandbox: attach (Node only) ----

  /**
   * Node only. Bridges this terminal to a program in a PTY in the sandbox until it exits (resolves with its
   * exit code) or you press the detach keys (`ctrl-]`; resolves with -1, the process keeps running).
   */
  attach(cmd: string, args?: Iterable<string>): Promise<number> {
    return this.attachWith(cmd, (b) => b.args(args ?? []));
  }

  /** Node only. {@link Sandbox.attach} to the sandbox user's shell (`$SHELL`, else `/bin/sh`). */
  async attachShell(): Promise<number> {
    const mod = await loadAttach();
    return mod.attachProcess(this.scope, { cmd: 'exec "${SHELL:-/bin/sh}"' }, new AttachOptionsBuilder().build());
  }

  /** Node only. {@link Sandbox.attach} with options (cwd, env, user, detach keys, rlimits). */
  async attachWith(cmd: string, configure: (b: AttachOptionsBuilder) => AttachOptionsBuilder | AttachOptions | void): Promise<number> {
    const o = runBuilder<AttachOptionsBuilder, AttachOptions>(new AttachOptionsBuilder(), configure);
    const mod = await loadAttach();
    return mod.attachProcess(this.scope, { argv: [cmd, ...o.args] }, o);
  }
}

/** The Node-only attach module's surface. */
interface AttachModule {
  attachProcess(scope: SandboxScope, req: WireStartRequest, o: AttachOptions): Promise<number>;
}

async function loadAttach(): Promise<AttachModule> {
  if (!isNode()) throw new SandboxError("attach needs a terminal: it works on Node only", { code: "unsupported" });
  return importDynamic<AttachModule>("./node/attach.js");
}

/** The body of `POST /v1/sandboxes` (and of a fork, which takes the same options but `template`). */
function createRequest(o: SandboxOpts): Record<string, unknown> {
  const body: Record<string, unknown> = {};
  if (o.template !== undefined) body.template = o.template;
  if (o.cpu !== undefined) body.cpu = o.cpu;
  if (o.memoryMb !== undefined) body.memory_mb = o.memoryMb;
  if (o.pids !== undefined) body.pids = o.pids;
  if (o.diskMb !== undefined) body.disk_mb = o.diskMb;
  const env = { ...(o.envs ?? {}), ...(o.env ?? {}) };
  if (Object.keys(env).length) body.env = env;
  if (o.metadata && Object.keys(o.metadata).length) body.metadata = o.metadata;
  if (o.timeout !== undefined) body.timeout = Math.ceil(o.timeout);
  else if (o.timeoutMs !== undefined) body.timeout = Math.ceil(o.timeoutMs / 1000);
  if (o.onTimeout !== undefined) body.on_timeout = o.onTimeout;
  if (o.network !== undefined) body.network = policyToWire(o.network);
  if (o.volumes !== undefined) body.volumes = o.volumes.map(volumeMountToWire);
  return body;
}

async function deleteSandbox(client: HttpClient, id: string): Promise<boolean> {
  try {
    await client.send("DELETE", `/v1/sandboxes/${encodeURIComponent(id)}`);
    return true;
  } catch (e) {
    if (e instanceof SandboxError && e.code === "not_found") return false;
    throw e;
  }
}
