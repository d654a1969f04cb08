/**
 * Templates (`/v1/templates`): the read-only root filesystems sandboxes start from (`Sandbox.create({ template })`).
 * An admin key builds them from a path on the daemon's host ({@link Templates.create}, then
 * {@link Templates.wait}: a build runs in the daemon and can take minutes) or imports an uploaded archive
 * ({@link Templates.importArchive}); any key lists them, reads them and exports them as a `tar.zst`
 * ({@link Templates.export}). An admin key keeps a warm pool of a template's sandboxes made ahead
 * ({@link Templates.setPool}), which creates of it take at once. A snapshot (`sandbox.snapshot(name)`,
 * `sandbox.fork()`) is a template too, layered
 * over its sandbox's and owned by its tenant: a non-admin key sees the global templates and its own tenant's
 * snapshots. Templates need the daemon's `isolate` backend; with `process` every call rejects with
 * {@link ConflictError} (409).
 *
 * Browser-safe: a path given to {@link Templates.importArchive} is read by a Node-only module loaded on demand.
 */
import { HttpClient } from "./client.js";
import { type ConnectionOptions, importDynamic, isNode } from "./config.js";
import { InvalidArgumentError, SandboxError, TemplateBuildError } from "./errors.js";
import { type FileData, requestBody } from "./files.js";
import { sleep } from "./sse.js";

/** A template as the SDK reports it. */
export interface TemplateInfo {
  name: string;
  /** Where it came from: `directory /srv/rootfs`, `tarball …`, `snapshot of sandbox 3f2a…`, `fork of sandbox …`. */
  source: string;
  createdAt: Date;
  /** The template a snapshot is a layer over (it stores only its own changes); `null` otherwise. */
  parent: string | null;
  /** The tenant owning a snapshot (only its keys and admin keys see it); `null` for a template every tenant uses. */
  tenant: string | null;
  /** Made by a fork: the daemon deletes it with the last sandbox using it. */
  autoRemove: boolean;
}

/** What {@link Templates.create} builds from. Paths are on the daemon's host, under one of its `--import-root`s. */
export type TemplateSource =
  /** A directory holding a root filesystem (copied). */
  | { dir: string }
  /** A root filesystem tarball, optionally gzipped (e.g. `docker export`). */
  | { tar: string }
  /** An OCI image layout (directory or tar) or a `docker save` archive. */
  | { oci: string }
  /** `debootstrap --variant=minbase` (`suite` default `bookworm`; needs network access). */
  | { debian: { suite?: string; mirror?: string } };

/** Where a build stands: `building`, then `ready` or `failed`. */
export type TemplateBuildState = "building" | "ready" | "failed";

/** A template build ({@link Templates.create}, {@link Templates.buildStatus}). */
export interface TemplateBuild {
  name: string;
  source: TemplateSource;
  state: TemplateBuildState;
  startedAt: Date;
  finishedAt: Date | null;
  /** Why it failed. */
  error: string | null;
  /** The last progress lines, oldest first. */
  log: string[];
  /** The template, once `ready`. */
  template: TemplateInfo | null;
}

/** What `sandbox.snapshot(name)` made (and `sandbox.fork()` started from). */
export interface SnapshotInfo {
  /** The new template: `Sandbox.create({ template: snapshot.template.name })`. */
  template: TemplateInfo;
  /** How long the sandbox's processes were frozen for the last changes to be copied (0 if it was paused). */
  frozenMs: number;
  /** Bytes of file content the snapshot holds (what the sandbox wrote over its template). */
  bytes: number;
  /** Files, directories and links it holds. */
  entries: number;
}

/**
 * A template's warm pool ({@link Templates.pool}, {@link Templates.setPool}): sandboxes made ahead, waiting ready
 * for a create of the template to take one.
 */
export interface PoolInfo {
  template: string;
  /** How many should wait (0: no pool). */
  size: number;
  /** How many wait now. */
  ready: number;
  /** How many are being made (the pool fills one at a time). */
  filling: number;
}

/** Options of {@link Templates.wait}. */
export interface TemplateWaitOpts extends ConnectionOptions {
  /** Called once for every new line of the build's log. */
  onLog?: (line: string) => void;
  /** Time between polls in milliseconds (default 300). */
  intervalMs?: number;
  /** Stops waiting (the build goes on in the daemon); the call rejects with the signal's reason. */
  signal?: AbortSignal;
}

/** Options of {@link Templates.export} and {@link Templates.importArchive}. */
export interface TemplateTransferOpts extends ConnectionOptions {
  /** Aborts the transfer. */
  signal?: AbortSignal;
}

/**
 * An archive for {@link Templates.importArchive}: its bytes, a `Blob`, a `ReadableStream` or an async iterable of
 * bytes (a Node `Readable`, or another daemon's {@link Templates.export}), or (Node only) a string naming a file on
 * this machine. Streams and files are sent as they are read.
 */
export type ArchiveData = string | Exclude<FileData, string>;

/** `TemplateInfo` as the daemon sends it. */
export interface WireTemplateInfo {
  name: string;
  source: string;
  created_at: string;
  parent?: string | null;
  tenant?: string | null;
  auto_remove?: boolean;
}

/** `SnapshotInfo` as the daemon sends it. */
export interface WireSnapshotInfo {
  template: WireTemplateInfo;
  frozen_ms: number;
  bytes: number;
  entries: number;
}

interface WireTemplateBuild {
  name: string;
  source: TemplateSource;
  state: TemplateBuildState;
  started_at: string;
  finished_at?: string | null;
  error?: string | null;
  log?: string[];
  template?: WireTemplateInfo | null;
}

/** Converts the daemon's `TemplateInfo`. */
export function templateInfoFromWire(w: WireTemplateInfo): TemplateInfo {
  return {
    name: w.name,
    source: w.source,
    createdAt: new Date(w.created_at),
    parent: w.parent ?? null,
    tenant: w.tenant ?? null,
    autoRemove: w.auto_remove ?? false,
  };
}

/** Converts the daemon's `SnapshotInfo`. */
export function snapshotInfoFromWire(w: WireSnapshotInfo): SnapshotInfo {
  return { template: templateInfoFromWire(w.template), frozenMs: w.frozen_ms, bytes: w.bytes, entries: w.entries };
}

function buildFromWire(w: WireTemplateBuild): TemplateBuild {
  return {
    name: w.name,
    source: w.source,
    state: w.state,
    startedAt: new Date(w.started_at),
    finishedAt: w.finished_at ? new Date(w.finished_at) : null,
    error: w.error ?? null,
    log: w.log ?? [],
    template: w.template ? templateInfoFromWire(w.template) : null,
  };
}

/** The daemon's `PoolInfo` (its fields need no renaming), taken field by field. */
function poolInfoFromWire(w: PoolInfo): PoolInfo {
  return { template: w.template, size: w.size, ready: w.ready, filling: w.filling };
}

function templatePath(name: string, suffix = ""): string {
  return `/v1/templates/${encodeURIComponent(name)}${suffix}`;
}

/** The lines of `log` that follow its longest overlap with the end of `seen` (the daemon keeps the last lines only). */
function newLines(seen: string[], log: string[]): string[] {
  for (let k = Math.min(seen.length, log.length); k > 0; k--) {
    if (log.slice(0, k).every((line, i) => line === seen[seen.length - k + i])) return log.slice(k);
  }
  return log;
}

/** The body of an archive upload: a path (Node) becomes a stream of the file. */
async function archiveBody(data: ArchiveData): Promise<BodyInit> {
  if (typeof data !== "string") return (await requestBody(data)).body;
  if (!isNode()) {
    throw new SandboxError("an archive named by a path needs Node: pass its bytes, a Blob or a stream", {
      code: "unsupported",
    });
  }
  const mod = await importDynamic<{ readFileStream(path: string): Promise<AsyncIterable<Uint8Array>> }>("./node/localfile.js");
  let file: AsyncIterable<Uint8Array>;
  try {
    file = await mod.readFileStream(data);
  } catch (e) {
    throw new InvalidArgumentError(`cannot read the archive ${data}: ${e instanceof Error ? e.message : String(e)}`, {
      code: "invalid_argument",
      cause: e,
    });
  }
  return (await requestBody(file)).body;
}

/** The template calls. Reading needs any key; building, importing and deleting global templates an `admin` key. */
export class Templates {
  private constructor() {}

  /** `GET /v1/templates`: the templates this key sees, by name. */
  static async list(opts: ConnectionOptions = {}): Promise<TemplateInfo[]> {
    const client = await HttpClient.create(opts);
    const r = await client.json<{ templates: WireTemplateInfo[] }>("GET", "/v1/templates");
    return r.templates.map(templateInfoFromWire);
  }

  /** `GET /v1/templates/{name}` ({@link NotFoundError} for an unknown name or another tenant's snapshot). */
  static async get(name: string, opts: ConnectionOptions = {}): Promise<TemplateInfo> {
    const client = await HttpClient.create(opts);
    return templateInfoFromWire(await client.json<WireTemplateInfo>("GET", templatePath(name)));
  }

  /**
   * `DELETE /v1/templates/{name}`. {@link ConflictError} (409) while a sandbox uses it, a snapshot is layered
   * over it or it is being built; {@link PermissionDeniedError} (403) for a tenant's key and a global template.
   */
  static async delete(name: string, opts: ConnectionOptions = {}): Promise<void> {
    const client = await HttpClient.create(opts);
    await client.send("DELETE", templatePath(name));
  }

  /**
   * `POST /v1/templates` (admin): starts building template `name` from `source` and returns at once with the
   * build (`building`); {@link Templates.wait} follows it. A name in use is {@link ConflictError}; a path outside
   * the daemon's import roots, or missing, {@link InvalidArgumentError}.
   */
  static async create(name: string, source: TemplateSource, opts: ConnectionOptions = {}): Promise<TemplateBuild> {
    const client = await HttpClient.create(opts);
    return buildFromWire(await client.json<WireTemplateBuild>("POST", "/v1/templates", { json: { name, source } }));
  }

  /** `GET /v1/templates/{name}/build`: the latest build of `name` since the daemon started. */
  static async buildStatus(name: string, opts: ConnectionOptions = {}): Promise<TemplateBuild> {
    const client = await HttpClient.create(opts);
    return buildFromWire(await client.json<WireTemplateBuild>("GET", templatePath(name, "/build")));
  }

  /**
   * Polls the build of `name` until it ends, handing each new log line to `onLog`: the template once `ready`;
   * a `failed` build rejects with {@link TemplateBuildError} (its `build` holds the error and the log).
   */
  static async wait(name: string, opts: TemplateWaitOpts = {}): Promise<TemplateInfo> {
    const client = await HttpClient.create(opts);
    let seen: string[] = [];
    for (;;) {
      const b = buildFromWire(await client.json<WireTemplateBuild>("GET", templatePath(name, "/build"), { signal: opts.signal }));
      if (opts.onLog) for (const line of newLines(seen, b.log)) opts.onLog(line);
      seen = b.log;
      if (b.state === "ready") {
        return b.template ?? templateInfoFromWire(await client.json<WireTemplateInfo>("GET", templatePath(name), { signal: opts.signal }));
      }
      if (b.state === "failed") throw new TemplateBuildError(b);
      await sleep(opts.intervalMs ?? 300, opts.signal);
    }
  }

  /**
   * `GET /v1/templates/{name}/pool`: the template's warm pool (any key): its `size`, how many sandboxes are `ready`
   * and how many `filling`; `size` 0 (and no error) for a template without one, known or not.
   */
  static async pool(name: string, opts: ConnectionOptions = {}): Promise<PoolInfo> {
    const client = await HttpClient.create(opts);
    return poolInfoFromWire(await client.json<PoolInfo>("GET", templatePath(name, "/pool")));
  }

  /**
   * `PUT /v1/templates/{name}/pool` (admin): keeps `size` sandboxes of template `name` made ahead and ready (0 to
   * 256; 0 removes the pool), and resolves with the pool at once: it fills in the background, one sandbox at a time
   * (poll {@link Templates.pool}). A create of the template that names none of `cpu`, `memoryMb`, `pids`, `diskMb`,
   * `network`, `volumes` then takes a waiting sandbox, which gets the create's `env`, `metadata`, `timeout`,
   * `onTimeout` and tenant; any other create is made cold. Waiting sandboxes are in no list and count toward no
   * tenant; the pool survives daemon restarts, and the template cannot be deleted ({@link ConflictError}) until its
   * size is 0. {@link PermissionDeniedError} (403) for a key without `admin`, {@link NotFoundError} for an unknown
   * template, {@link InvalidArgumentError} for a size over 256.
   */
  static async setPool(name: string, size: number, opts: ConnectionOptions = {}): Promise<PoolInfo> {
    const client = await HttpClient.create(opts);
    return poolInfoFromWire(await client.json<PoolInfo>("PUT", templatePath(name, "/pool"), { json: { size } }));
  }

  /**
   * `GET /v1/templates/{name}/export`: the template's root filesystem (its layers merged) as a `tar.zst`, which
   * {@link Templates.importArchive} takes back here or on another daemon. A `ReadableStream` by default (never
   * held whole: the transfer is not subject to `requestTimeoutMs`), or `"bytes"` / a `"blob"`. A failure midway
   * errors the stream rather than ending it early.
   */
  static async export(name: string, opts?: TemplateTransferOpts & { format?: "stream" }): Promise<ReadableStream<Uint8Array>>;
  static async export(name: string, opts: TemplateTransferOpts & { format: "bytes" }): Promise<Uint8Array>;
  static async export(name: string, opts: TemplateTransferOpts & { format: "blob" }): Promise<Blob>;
  static async export(
    name: string,
    opts: TemplateTransferOpts & { format?: "stream" | "bytes" | "blob" } = {},
  ): Promise<ReadableStream<Uint8Array> | Uint8Array | Blob> {
    const client = await HttpClient.create(opts);
    const resp = await client.fetch("GET", templatePath(name, "/export"), { signal: opts.signal, timeoutMs: 0 });
    switch (opts.format ?? "stream") {
      case "bytes":
        return new Uint8Array(await resp.arrayBuffer());
      case "blob":
        return resp.blob();
      default:
        return resp.body as ReadableStream<Uint8Array>;
    }
  }

  /**
   * `POST /v1/templates?name=NAME` (admin): imports an archive as template `name` and resolves once it is ready.
   * The archive is an {@link Templates.export}, or any root filesystem tar (plain, gzip or zstd); it is streamed
   * ({@link ArchiveData}: a string is a path on this machine, Node only), of any size. A name in use is
   * {@link ConflictError}; a body that is not a usable archive {@link InvalidArgumentError}.
   */
  static async importArchive(name: string, data: ArchiveData, opts: TemplateTransferOpts = {}): Promise<TemplateInfo> {
    const client = await HttpClient.create(opts);
    const w = await client.json<WireTemplateInfo>("POST", "/v1/templates", {
      query: { name },
      body: await archiveBody(data),
      headers: { "Content-Type": "application/zstd" },
      signal: opts.signal,
      timeoutMs: 0,
    });
    return templateInfoFromWire(w);
  }
}
