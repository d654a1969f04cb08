/**
 * `sandbox.files`: the files API with E2B's names (`read`, `write`, `writeFiles`, `list`, `exists`, `getInfo`,
 * `makeDir`, `rename`, `remove`, `watchDir`).
 *
 * Content streams both ways: `read(path, {format: "stream"})` is a `ReadableStream`, `"blob"` a `Blob`; `write`
 * takes a string, bytes, a `Blob`, a `ReadableStream` or any async iterable of bytes (a Node `Readable`), and
 * sends it as it is read (on Node; browsers stream a `Blob` natively). `writeFiles` sends many files as one tar
 * request built while it is sent. `watchDir` follows a directory over SSE and resumes after a dropped
 * connection from the last event it delivered.
 *
 * Browser-safe: fetch, streams and Blob only.
 */
import type { SandboxScope } from "./client.js";
import { isNode } from "./config.js";
import { SandboxError, errorFromBody } from "./errors.js";
import { parseSse } from "./sse.js";

/** One file, directory or link. */
export interface EntryInfo {
  path: string;
  name: string;
  type: "file" | "dir" | "symlink" | "other";
  size: number;
  /** Octal permission bits, e.g. `"0644"`. */
  mode: string;
  /** As `ls` shows them: `"rw-r--r--"`. */
  permissions: string;
  owner: string;
  group: string;
  /** RFC 3339. */
  modifiedAt: string;
  symlinkTarget: string | null;
  /** The path's bytes (base64) when it is not UTF-8. */
  pathB64?: string;
}

/** A change seen by a watch. */
export interface FilesystemEvent {
  seq: number;
  type: "create" | "write" | "remove" | "rename" | "chmod" | "lost" | string;
  /** The path concerned (for `rename`, the new one); E2B calls it `name`. */
  path?: string;
  /** Alias of `path` (E2B spelling). */
  name?: string;
  from?: string;
  to?: string;
  isDir: boolean;
  /** For `lost`: the seqs whose events are gone, and why. */
  fromSeq?: number;
  toSeq?: number;
  reason?: string;
  at: string;
}

/** Data a file can be written from. */
export type FileData = string | Uint8Array | ArrayBuffer | Blob | ReadableStream<Uint8Array> | AsyncIterable<Uint8Array>;

/** One file for {@link Files.writeFiles}. */
/** A signed file URL: needs no other credential. */
export interface SignedUrl {
  /** Absolute, built from the `Host` the daemon was reached by. */
  url: string;
  /** The same from `/v1/` on, for a client that reaches the daemon under another name. */
  path: string;
  /** `GET` (read; `HEAD` works too) or `PUT` (write). */
  method: string;
  expiresAt: Date;
}

export interface WriteEntry {
  path: string;
  data: string | Uint8Array | ArrayBuffer | Blob;
  /** Permission bits (default 0o644). */
  mode?: number;
}

/** Options most calls take. */
export interface FileOpts {
  /** Act as this sandbox user (default: the sandbox's default user). */
  user?: string;
  /** Abort the request. */
  signal?: AbortSignal;
}

interface WireEntry {
  path: string;
  name: string;
  path_b64?: string;
  type: EntryInfo["type"];
  size: number;
  mode: string;
  permissions: string;
  owner: string;
  group: string;
  modified_at: string;
  symlink_target: string | null;
}

function entry(w: WireEntry): EntryInfo {
  const e: EntryInfo = {
    path: w.path,
    name: w.name,
    type: w.type,
    size: w.size,
    mode: w.mode,
    permissions: w.permissions,
    owner: w.owner,
    group: w.group,
    modifiedAt: w.modified_at,
    symlinkTarget: w.symlink_target ?? null,
  };
  if (w.path_b64 !== undefined) e.pathB64 = w.path_b64;
  return e;
}

function event(w: Record<string, unknown>): FilesystemEvent {
  const e: FilesystemEvent = {
    seq: Number(w.seq),
    type: String(w.type),
    isDir: Boolean(w.is_dir),
    at: String(w.at ?? ""),
  };
  if (typeof w.path === "string") {
    e.path = w.path;
    e.name = w.path;
  }
  if (typeof w.from === "string") e.from = w.from;
  if (typeof w.to === "string") e.to = w.to;
  if (typeof w.from_seq === "number") e.fromSeq = w.from_seq;
  if (typeof w.to_seq === "number") e.toSeq = w.to_seq;
  if (typeof w.reason === "string") e.reason = w.reason;
  return e;
}


function toStream(data: AsyncIterable<Uint8Array>): ReadableStream<Uint8Array> {
  const it = data[Symbol.asyncIterator]();
  return new ReadableStream<Uint8Array>({
    async pull(ctrl) {
      const { value, done } = await it.next();
      if (done) ctrl.close();
      else ctrl.enqueue(value instanceof Uint8Array ? value : new Uint8Array(value as ArrayBufferLike));
    },
    async cancel() {
      await it.return?.();
    },
  });
}

/** A request body, and whether it is a stream (which fetch must be told about). Every upload (files, template
 * archives) turns its data into a body here. */
export async function requestBody(data: FileData): Promise<{ body: BodyInit; streamed: boolean }> {
  if (typeof data === "string") return { body: new TextEncoder().encode(data), streamed: false };
  if (data instanceof Uint8Array || data instanceof ArrayBuffer) return { body: data as BodyInit, streamed: false };
  if (data instanceof Blob) return { body: data, streamed: false };
  const stream = data instanceof ReadableStream ? data : toStream(data);
  if (isNode()) return { body: stream, streamed: true };
  // Browsers stream request bodies only over HTTP/2: collect into a Blob (what the caller handed us was a
  // stream; pass a Blob to avoid this copy).
  return { body: await new Response(stream).blob(), streamed: false };
}

const te = new TextEncoder();

function octal(n: number, width: number): Uint8Array {
  const s = n.toString(8).padStart(width - 1, "0") + "\0";
  return te.encode(s);
}

/** A ustar header (with a PAX record first when the name does not fit in 100 bytes). */
function tarHeader(name: string, size: number, mode: number, type: string = "0"): Uint8Array {
  const h = new Uint8Array(512);
  const nameBytes = te.encode(name);
  h.set(nameBytes.slice(0, 100), 0);
  h.set(octal(mode, 8), 100);
  h.set(octal(0, 8), 108);
  h.set(octal(0, 8), 116);
  h.set(octal(size, 12), 124);
  h.set(octal(Math.floor(Date.now() / 1000), 12), 136);
  h.set(te.encode("        "), 148);
  h.set(te.encode(type), 156);
  h.set(te.encode("ustar\u000000"), 257);
  let sum = 0;
  for (const b of h) sum += b;
  h.set(te.encode(sum.toString(8).padStart(6, "0") + "\0 "), 148);
  return h;
}

function paxRecord(key: string, value: string): Uint8Array {
  const body = ` ${key}=${value}\n`;
  let len = te.encode(body).length;
  let total = len + String(len).length;
  if (String(total).length !== String(len).length) total = len + String(total).length;
  len = total;
  return te.encode(`${len}${body}`);
}

function pad(n: number): Uint8Array {
  return new Uint8Array((512 - (n % 512)) % 512);
}

/** A tar of `entries` as a stream (each member's bytes are produced when the request reads them). */
export function tarStream(entries: WriteEntry[]): ReadableStream<Uint8Array> {
  const members = entries[Symbol.iterator]();
  let current: ReadableStreamDefaultReader<Uint8Array> | undefined;
  let trailer: Uint8Array | undefined;
  return new ReadableStream<Uint8Array>({
    async pull(ctrl) {
      if (current) {
        const { value, done } = await current.read();
        if (!done) {
          ctrl.enqueue(value);
          return;
        }
        current = undefined;
        if (trailer) ctrl.enqueue(trailer);
        return;
      }
      const next = members.next();
      if (next.done) {
        ctrl.enqueue(new Uint8Array(1024));
        ctrl.close();
        return;
      }
      const e = next.value;
      const name = e.path.replace(/^\/+/, "");
      if (!name) throw new SandboxError("a file to write has an empty path", { code: "invalid_argument" });
      const data = typeof e.data === "string" ? te.encode(e.data) : e.data instanceof ArrayBuffer ? new Uint8Array(e.data) : e.data;
      const size = data instanceof Uint8Array ? data.length : data.size;
      const parts: Uint8Array[] = [];
      if (te.encode(name).length > 100) {
        const rec = paxRecord("path", name);
        parts.push(tarHeader("PaxHeader", rec.length, 0o644, "x"), rec, pad(rec.length));
      }
      parts.push(tarHeader(name, size, e.mode ?? 0o644));
      for (const p of parts) ctrl.enqueue(p);
      if (data instanceof Uint8Array) {
        ctrl.enqueue(data);
        ctrl.enqueue(pad(size));
      } else {
        current = data.stream().getReader();
        trailer = pad(size);
      }
    },
  });
}

/** Encodes a path for a query string (UTF-8). */
function q(path: string): string {
  return encodeURIComponent(path).replace(/%2F/g, "/");
}

/** Reconnection attempts of a watch before it gives up. */
const WATCH_RETRIES = 5;

/** A running watch; `stop()` ends it. */
export class WatchHandle {
  private readonly abort = new AbortController();
  private done: Promise<void> = Promise.resolve();
  /** The seq the watch started after. */
  startSeq = 0;

  /** @internal */
  constructor(
    private readonly scope: SandboxScope,
    private readonly url: string,
    private readonly onEvent: (e: FilesystemEvent) => void | Promise<void>,
    private readonly onExit?: (err?: Error) => void | Promise<void>,
  ) {}

  /** @internal Opens the stream; resolves once the watch is in place. */
  async start(): Promise<void> {
    let ready!: () => void;
    let failed!: (e: unknown) => void;
    const started = new Promise<void>((res, rej) => {
      ready = res;
      failed = rej;
    });
    let isReady = false;
    this.done = (async () => {
      let last: number | undefined;
      let failures = 0;
      let error: Error | undefined;
      for (;;) {
        if (this.abort.signal.aborted) break;
        const headers: Record<string, string> = { ...this.scope.client.authHeaders(), Accept: "text/event-stream" };
        if (last !== undefined) headers["Last-Event-ID"] = String(last);
        try {
          const resp = await this.scope.client.config.fetch(this.url, { headers, signal: this.abort.signal });
          if (!resp.ok) {
            const text = await resp.text();
            throw errorFromBody(resp.status, text, resp.statusText);
          }
          let ended = false;
          for await (const msg of parseSse(resp.body as ReadableStream<Uint8Array>)) {
            if (msg.event === "started") {
              if (last === undefined) last = Number(msg.id ?? 0);
              this.startSeq = this.startSeq || last;
              failures = 0;
              if (!isReady) {
                isReady = true;
                ready();
              }
            } else if (msg.event === "ended") {
              ended = true;
              break;
            } else if (msg.event !== "keepalive") {
              const ev = event(JSON.parse(msg.data) as Record<string, unknown>);
              if (last !== undefined && ev.seq <= last) continue;
              last = ev.seq;
              await this.onEvent(ev);
            }
          }
          if (ended) break;
          throw new Error("the watch stream closed");
        } catch (e) {
          if (this.abort.signal.aborted) break;
          if (e instanceof SandboxError) {
            if (!isReady) {
              failed(e);
              return;
            }
            error = e;
            break;
          }
          failures++;
          if (!isReady || failures > WATCH_RETRIES) {
            const err = new SandboxError(`the watch could not be resumed: ${e instanceof Error ? e.message : String(e)}`, {
              code: "stream_cut",
              cause: e,
            });
            if (!isReady) {
              failed(err);
              return;
            }
            error = err;
            break;
          }
          await new Promise((r) => setTimeout(r, Math.min(100 * 2 ** (failures - 1), 2000)));
        }
      }
      await this.onExit?.(error);
    })();
    await started;
  }

  /** Ends the watch. */
  async stop(): Promise<void> {
    this.abort.abort();
    await this.done.catch(() => undefined);
  }
}

/** The files of one sandbox. */
export class Files {
  /** @internal */
  constructor(private readonly scope: SandboxScope) {}

  private path(endpoint: string, path: string, opts: FileOpts = {}, extra: Record<string, string> = {}): string {
    if (!path) throw new SandboxError("the path is empty", { code: "invalid_argument" });
    let s = `${this.scope.base}${endpoint}?path=${q(path)}`;
    if (opts.user) s += `&user=${encodeURIComponent(opts.user)}`;
    for (const [k, v] of Object.entries(extra)) s += `&${k}=${encodeURIComponent(v)}`;
    return s;
  }

  private async raw(method: string, path: string, init: RequestInit & { duplex?: "half" } = {}): Promise<Response> {
    const headers = { ...this.scope.client.authHeaders(), ...(init.headers as Record<string, string> | undefined) };
    let resp: Response;
    try {
      resp = await this.scope.client.config.fetch(this.scope.client.config.url + path, { ...init, method, headers });
    } catch (e) {
      throw this.scope.client.transportError(e, method, path, undefined, undefined);
    }
    if (!resp.ok) throw errorFromBody(resp.status, await resp.text(), resp.statusText);
    return resp;
  }

  /** The file as text (default), `bytes` (a `Uint8Array`), a `blob`, or a `stream` (never held whole). */
  async read(path: string, opts?: FileOpts & { format?: "text" }): Promise<string>;
  async read(path: string, opts: FileOpts & { format: "bytes" }): Promise<Uint8Array>;
  async read(path: string, opts: FileOpts & { format: "blob" }): Promise<Blob>;
  async read(path: string, opts: FileOpts & { format: "stream" }): Promise<ReadableStream<Uint8Array>>;
  async read(
    path: string,
    opts: FileOpts & { format?: "text" | "bytes" | "blob" | "stream" } = {},
  ): Promise<string | Uint8Array | Blob | ReadableStream<Uint8Array>> {
    const init: RequestInit = {};
    if (opts.signal) init.signal = opts.signal;
    const resp = await this.raw("GET", this.path("/files", path, opts), init);
    switch (opts.format ?? "text") {
      case "bytes":
        return new Uint8Array(await resp.arrayBuffer());
      case "blob":
        return resp.blob();
      case "stream":
        return resp.body as ReadableStream<Uint8Array>;
      default:
        return resp.text();
    }
  }

  /** Writes data (streamed) to `path` atomically, creating parents; returns its entry. With a list of entries,
   * it is {@link Files.writeFiles}. */
  async write(path: string, data: FileData, opts?: FileOpts & { mode?: number }): Promise<EntryInfo>;
  async write(files: WriteEntry[], opts?: FileOpts): Promise<EntryInfo[]>;
  async write(
    pathOrFiles: string | WriteEntry[],
    dataOrOpts?: FileData | FileOpts,
    maybeOpts: FileOpts & { mode?: number } = {},
  ): Promise<EntryInfo | EntryInfo[]> {
    if (Array.isArray(pathOrFiles)) return this.writeFiles(pathOrFiles, (dataOrOpts as FileOpts | undefined) ?? {});
    const extra: Record<string, string> = {};
    if (maybeOpts.mode !== undefined) extra.mode = maybeOpts.mode.toString(8).padStart(4, "0");
    const b = await requestBody(dataOrOpts as FileData);
    const init: RequestInit & { duplex?: "half" } = {
      body: b.body,
      headers: { "Content-Type": "application/octet-stream" },
    };
    if (b.streamed) init.duplex = "half";
    if (maybeOpts.signal) init.signal = maybeOpts.signal;
    const resp = await this.raw("PUT", this.path("/files", pathOrFiles, maybeOpts, extra), init);
    return entry((await resp.json()) as WireEntry);
  }

  /** Writes many files in one request (a tar built while it is sent); returns their entries. */
  async writeFiles(files: WriteEntry[], opts: FileOpts = {}): Promise<EntryInfo[]> {
    const groups = new Map<string, WriteEntry[]>();
    for (const f of files) {
      const root = f.path.startsWith("/") ? "/" : ".";
      groups.set(root, [...(groups.get(root) ?? []), f]);
    }
    const out: EntryInfo[] = [];
    for (const [root, group] of groups) {
      const b = await requestBody(tarStream(group));
      const init: RequestInit & { duplex?: "half" } = { body: b.body, headers: { "Content-Type": "application/x-tar" } };
      if (b.streamed) init.duplex = "half";
      if (opts.signal) init.signal = opts.signal;
      const resp = await this.raw("POST", this.path("/files/tar", root, opts), init);
      const r = (await resp.json()) as { entries: WireEntry[]; skipped: { path: string; reason: string }[] };
      const first = r.skipped[0];
      if (first) throw new SandboxError(`${first.path} was not written: ${first.reason}`, { code: "invalid_argument" });
      out.push(...r.entries.filter((e) => e.type === "file").map(entry));
    }
    return out;
  }

  /** The entries under a directory, `depth` levels deep (default 1). */
  async list(path: string, opts: FileOpts & { depth?: number } = {}): Promise<EntryInfo[]> {
    const resp = await this.raw("GET", this.path("/fs/list", path, opts, { depth: String(opts.depth ?? 1) }));
    return ((await resp.json()) as { entries: WireEntry[] }).entries.map(entry);
  }

  /** One entry (a symlink is reported as one). */
  async getInfo(path: string, opts: FileOpts = {}): Promise<EntryInfo> {
    return entry((await (await this.raw("GET", this.path("/fs/stat", path, opts))).json()) as WireEntry);
  }

  /** Whether `path` exists. */
  async exists(path: string, opts: FileOpts = {}): Promise<boolean> {
    try {
      await this.getInfo(path, opts);
      return true;
    } catch (e) {
      if (e instanceof SandboxError && e.code === "not_found") return false;
      throw e;
    }
  }

  private async post(endpoint: string, json: Record<string, unknown>): Promise<Response> {
    return this.raw("POST", `${this.scope.base}${endpoint}`, {
      body: JSON.stringify(json),
      headers: { "Content-Type": "application/json" },
    });
  }

  /** Creates a directory and its parents; `false` if it existed. */
  async makeDir(path: string, opts: FileOpts & { mode?: number } = {}): Promise<boolean> {
    const json: Record<string, unknown> = { path, parents: true };
    if (opts.user) json.user = opts.user;
    if (opts.mode !== undefined) json.mode = opts.mode.toString(8).padStart(4, "0");
    return (await this.post("/fs/mkdir", json)).status === 201;
  }

  /** Moves `oldPath` to `newPath` (refused if it exists, unless `overwrite`). */
  async rename(oldPath: string, newPath: string, opts: FileOpts & { overwrite?: boolean } = {}): Promise<EntryInfo> {
    const json: Record<string, unknown> = { from: oldPath, to: newPath, overwrite: opts.overwrite ?? false };
    if (opts.user) json.user = opts.user;
    return entry((await (await this.post("/fs/move", json)).json()) as WireEntry);
  }

  /**
   * A URL that reads (`op: "read"`: GET) or writes (`"write"`: PUT) `path` as `user` with no other
   * credential, for `expiresIn` seconds (default 3600, at most 604800): for a page's `<a href download>` or
   * upload. It stops working when the key that signed it is revoked.
   */
  async signedUrl(
    path: string,
    op: "read" | "write" = "read",
    opts: FileOpts & { expiresIn?: number } = {},
  ): Promise<SignedUrl> {
    const json: Record<string, unknown> = { path, op };
    if (opts.expiresIn !== undefined) json.expires_in = opts.expiresIn;
    if (opts.user) json.user = opts.user;
    const w = (await (await this.post("/files/signed-url", json)).json()) as {
      url: string;
      path: string;
      method: string;
      expires_at: string;
    };
    return { url: w.url, path: w.path, method: w.method, expiresAt: new Date(w.expires_at) };
  }

  /** The signed URL a browser downloads `path` from (see {@link signedUrl}). */
  async downloadUrl(path: string, opts: FileOpts & { expiresIn?: number } = {}): Promise<string> {
    return (await this.signedUrl(path, "read", opts)).url;
  }

  /** The signed URL a client `PUT`s `path`'s new content to (see {@link signedUrl}). */
  async uploadUrl(path: string, opts: FileOpts & { expiresIn?: number } = {}): Promise<string> {
    return (await this.signedUrl(path, "write", opts)).url;
  }

  /** Removes a file, link or directory (with its contents unless `recursive: false`). */
  async remove(path: string, opts: FileOpts & { recursive?: boolean } = {}): Promise<void> {
    const resp = await this.raw("DELETE", this.path("/fs", path, opts, { recursive: String(opts.recursive ?? true) }));
    await resp.body?.cancel().catch(() => undefined);
  }

  /** Sets permission bits. */
  async chmod(path: string, mode: number, opts: FileOpts = {}): Promise<EntryInfo> {
    const json: Record<string, unknown> = { path, mode: mode.toString(8).padStart(4, "0") };
    if (opts.user) json.user = opts.user;
    return entry((await (await this.post("/fs/chmod", json)).json()) as WireEntry);
  }

  /** Sets owner and/or group (names or numbers in the sandbox); as root unless `user` is given. */
  async chown(path: string, owner?: string, group?: string, opts: FileOpts = {}): Promise<EntryInfo> {
    const json: Record<string, unknown> = { path };
    if (owner !== undefined) json.owner = owner;
    if (group !== undefined) json.group = group;
    if (opts.user) json.user = opts.user;
    return entry((await (await this.post("/fs/chown", json)).json()) as WireEntry);
  }

  /** Watches `path`, calling `onEvent` per event; resolves once the watch is in place. Resumes after a
   * dropped connection. */
  async watchDir(
    path: string,
    onEvent: (e: FilesystemEvent) => void | Promise<void>,
    opts: FileOpts & { recursive?: boolean; onExit?: (err?: Error) => void | Promise<void> } = {},
  ): Promise<WatchHandle> {
    const url = this.scope.client.config.url + this.path("/fs/watch", path, opts, { recursive: String(opts.recursive ?? false) });
    const h = new WatchHandle(this.scope, url, onEvent, opts.onExit);
    await h.start();
    return h;
  }
}
