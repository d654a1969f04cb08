/**
 * Volumes (`/v1/volumes`): named, size-capped filesystems that outlive every sandbox. A sandbox mounts them at
 * create (`Sandbox.create({ volumes: [{ name, path, readOnly }] })`, and `sandbox.fork({ volumes })`); two
 * sandboxes may mount one at once. A volume belongs to the tenant of the key that made it: only that tenant's
 * keys (and admin keys) see and mount it. Its root directory belongs to `user` (uid 1000, the default user of
 * commands); a write past its size fails inside the sandbox with "No space left on device". Volumes need the
 * daemon's `isolate` backend; with `process` every call rejects with {@link ConflictError} (409).
 *
 * Browser-safe: no Node built-ins.
 */
import { HttpClient } from "./client.js";
import type { ConnectionOptions } from "./config.js";

/** A volume as the SDK reports it. */
export interface VolumeInfo {
  name: string;
  /** The size cap in MiB. */
  sizeMb: number;
  /** MiB in use (files and the filesystem's own metadata). */
  usedMb: number;
  /** The tenant it belongs to. */
  tenant: string;
  createdAt: Date;
  /** Ids of the sandboxes that mount it now (it can be deleted only when this is empty). */
  mountedBy: string[];
}

/** One volume in a sandbox: `volumes` of {@link SandboxOpts} and of {@link SandboxInfo}. */
export interface VolumeMount {
  /** The volume's name. */
  name: string;
  /**
   * Where it appears in the sandbox: an absolute, normalised path (made if missing), not `/` and not under
   * `/proc`, `/sys`, `/dev`, `/run/sandpit` or `/.sandpit`.
   */
  path: string;
  /** Mounted read-only (default false). */
  readOnly?: boolean;
}

/** `VolumeInfo` as the daemon sends it. */
export interface WireVolumeInfo {
  name: string;
  size_mb: number;
  used_mb: number;
  tenant: string;
  created_at: string;
  mounted_by?: string[];
}

/** `VolumeMount` as the daemon takes and sends it. */
export interface WireVolumeMount {
  name: string;
  path: string;
  read_only?: boolean;
}

/** Converts the daemon's `VolumeInfo`. */
export function volumeInfoFromWire(w: WireVolumeInfo): VolumeInfo {
  return {
    name: w.name,
    sizeMb: w.size_mb,
    usedMb: w.used_mb,
    tenant: w.tenant,
    createdAt: new Date(w.created_at),
    mountedBy: w.mounted_by ?? [],
  };
}

/** Converts a mount of the daemon's `SandboxInfo` (`readOnly` always set). */
export function volumeMountFromWire(w: WireVolumeMount): Required<VolumeMount> {
  return { name: w.name, path: w.path, readOnly: w.read_only ?? false };
}

/** A mount as `POST /v1/sandboxes` takes it (`read_only` only when true, as the daemon sends it). */
export function volumeMountToWire(m: VolumeMount): WireVolumeMount {
  const w: WireVolumeMount = { name: m.name, path: m.path };
  if (m.readOnly) w.read_only = true;
  return w;
}

function volumePath(name: string): string {
  return `/v1/volumes/${encodeURIComponent(name)}`;
}

/** The volume calls. Any key with the `sandboxes` scope; a tenant's key sees and deletes its tenant's only. */
export class Volumes {
  private constructor() {}

  /**
   * `POST /v1/volumes`: an empty volume of `sizeMb` MiB (16 to 1048576) for this key's tenant. A bad name (1-64
   * characters from `a-z 0-9 . _ -`, not starting with `.`) or size is {@link InvalidArgumentError} (400); a
   * name in use {@link ConflictError} (409).
   */
  static async create(name: string, sizeMb: number, opts: ConnectionOptions = {}): Promise<VolumeInfo> {
    const client = await HttpClient.create(opts);
    return volumeInfoFromWire(await client.json<WireVolumeInfo>("POST", "/v1/volumes", { json: { name, size_mb: sizeMb } }));
  }

  /** `GET /v1/volumes`: this key's tenant's volumes (an admin key: all), by name, with usage and who mounts them. */
  static async list(opts: ConnectionOptions = {}): Promise<VolumeInfo[]> {
    const client = await HttpClient.create(opts);
    const r = await client.json<{ volumes: WireVolumeInfo[] }>("GET", "/v1/volumes");
    return r.volumes.map(volumeInfoFromWire);
  }

  /** `GET /v1/volumes/{name}` ({@link NotFoundError} for an unknown name or another tenant's volume). */
  static async get(name: string, opts: ConnectionOptions = {}): Promise<VolumeInfo> {
    const client = await HttpClient.create(opts);
    return volumeInfoFromWire(await client.json<WireVolumeInfo>("GET", volumePath(name)));
  }

  /**
   * `DELETE /v1/volumes/{name}`: the volume and its data. {@link ConflictError} (409) while a sandbox mounts
   * it (kill them first); {@link NotFoundError} for an unknown name or another tenant's volume.
   */
  static async delete(name: string, opts: ConnectionOptions = {}): Promise<void> {
    const client = await HttpClient.create(opts);
    await client.send("DELETE", volumePath(name));
  }
}
