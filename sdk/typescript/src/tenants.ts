/**
 * Tenant quotas (`/v1/tenants`): an admin key sets a tenant's quotas and lists every tenant; any key reads
 * its own tenant. A create over a quota rejects with {@link ResourceExhaustedError} whose `code` is
 * `quota_exceeded` or `rate_limited` (HTTP 429).
 */
import { HttpClient } from "./client.js";
import type { ConnectionOptions } from "./config.js";

/** A tenant's quotas; `null` (or absent) is no limit. */
export interface TenantQuotas {
  /** Sandboxes that may exist at once (`0` stops the tenant creating any). */
  maxSandboxes?: number | null;
  /** Creates per second (a burst of `max(1, floor(rate))`), may be fractional. */
  maxCreatesPerSecond?: number | null;
  /** The sum of the tenant's sandboxes' `memoryMb` (under it, every create names `memoryMb`). */
  maxMemoryMb?: number | null;
  /** The sum of the tenant's sandboxes' `diskMb` (1024 for one without). */
  maxDiskMb?: number | null;
}

/** What a tenant holds now, counted the way its quotas are. */
export interface TenantUsage {
  sandboxes: number;
  memoryMb: number;
  diskMb: number;
}

/** A tenant: its quotas and usage. */
export interface TenantInfo {
  name: string;
  quotas: Required<{ [K in keyof TenantQuotas]: number | null }>;
  usage: TenantUsage;
}

interface WireTenant {
  name: string;
  quotas: {
    max_sandboxes: number | null;
    max_creates_per_second: number | null;
    max_memory_mb: number | null;
    max_disk_mb: number | null;
  };
  usage: { sandboxes: number; memory_mb: number; disk_mb: number };
}

function fromWire(w: WireTenant): TenantInfo {
  return {
    name: w.name,
    quotas: {
      maxSandboxes: w.quotas.max_sandboxes ?? null,
      maxCreatesPerSecond: w.quotas.max_creates_per_second ?? null,
      maxMemoryMb: w.quotas.max_memory_mb ?? null,
      maxDiskMb: w.quotas.max_disk_mb ?? null,
    },
    usage: { sandboxes: w.usage.sandboxes, memoryMb: w.usage.memory_mb, diskMb: w.usage.disk_mb },
  };
}

/** The tenant calls. */
export class Tenants {
  private constructor() {}

  /** `GET /v1/tenants/{name}`: quotas and usage (a non-admin key: its own tenant only). */
  static async get(name: string, opts: ConnectionOptions = {}): Promise<TenantInfo> {
    const client = await HttpClient.create(opts);
    return fromWire(await client.json<WireTenant>("GET", `/v1/tenants/${encodeURIComponent(name)}`));
  }

  /** `GET /v1/tenants` (admin): every tenant with quotas, keys or sandboxes, by name. */
  static async list(opts: ConnectionOptions = {}): Promise<TenantInfo[]> {
    const client = await HttpClient.create(opts);
    const r = await client.json<{ tenants: WireTenant[] }>("GET", "/v1/tenants");
    return r.tenants.map(fromWire);
  }

  /** `PUT /v1/tenants/{name}` (admin): replaces all four quotas (absent or `null` is no limit). */
  static async setQuotas(name: string, quotas: TenantQuotas, opts: ConnectionOptions = {}): Promise<TenantInfo> {
    const client = await HttpClient.create(opts);
    const json = {
      max_sandboxes: quotas.maxSandboxes ?? null,
      max_creates_per_second: quotas.maxCreatesPerSecond ?? null,
      max_memory_mb: quotas.maxMemoryMb ?? null,
      max_disk_mb: quotas.maxDiskMb ?? null,
    };
    return fromWire(await client.json<WireTenant>("PUT", `/v1/tenants/${encodeURIComponent(name)}`, { json }));
  }
}
