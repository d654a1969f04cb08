/**
 * API keys (`/v1/keys`, admin keys only): make keys with a name, a tenant and scopes for other programs,
 * list them, revoke them. A page should never hold an admin key: make keys in a back end.
 */
import { HttpClient } from "./client.js";
import type { ConnectionOptions } from "./config.js";

/** What a key may do: `admin` (everything), `sandboxes` (use sandboxes, not keys), `read` (look only). */
export type Scope = "admin" | "sandboxes" | "read";

/** A key as listed: never its secret. */
export interface KeyInfo {
  id: string;
  name: string;
  tenant: string;
  scopes: Scope[];
  createdAt: Date;
  /** `null` for a key that does not expire. */
  expiresAt: Date | null;
}

/** The answer to {@link Keys.create}: the key's record and, this once, its secret. */
export interface CreatedKey extends KeyInfo {
  /** Send as `Authorization: Bearer <key>` (the SDK's `apiKey`). Shown only here. */
  key: string;
}

/** What {@link Keys.create} makes. */
export interface CreateKeyOpts {
  /** A label for people: 1–64 of `A-Z a-z 0-9 . _ -`. */
  name: string;
  /** At least one. */
  scopes: Scope[];
  /** Defaults to `default`. */
  tenant?: string;
  /** Seconds until the key stops working; never when absent. */
  expiresIn?: number;
}

interface WireKeyInfo {
  id: string;
  name: string;
  tenant: string;
  scopes: Scope[];
  created_at: string;
  expires_at: string | null;
  key?: string;
}

function keyInfoFromWire(w: WireKeyInfo): KeyInfo {
  return {
    id: w.id,
    name: w.name,
    tenant: w.tenant,
    scopes: w.scopes,
    createdAt: new Date(w.created_at),
    expiresAt: w.expires_at ? new Date(w.expires_at) : null,
  };
}

/** The key calls; they need an `admin` key. */
export class Keys {
  private constructor() {}

  /** `POST /v1/keys`: the new key; its secret (`key`) is in this answer only. */
  static async create(key: CreateKeyOpts, opts: ConnectionOptions = {}): Promise<CreatedKey> {
    const client = await HttpClient.create(opts);
    const json: Record<string, unknown> = { name: key.name, scopes: key.scopes };
    if (key.tenant !== undefined) json.tenant = key.tenant;
    if (key.expiresIn !== undefined) json.expires_in = key.expiresIn;
    const w = await client.json<WireKeyInfo>("POST", "/v1/keys", { json });
    return { ...keyInfoFromWire(w), key: w.key ?? "" };
  }

  /** `GET /v1/keys`: every key made with {@link Keys.create}, oldest first, without secrets. */
  static async list(opts: ConnectionOptions = {}): Promise<KeyInfo[]> {
    const client = await HttpClient.create(opts);
    const r = await client.json<{ keys: WireKeyInfo[] }>("GET", "/v1/keys");
    return r.keys.map(keyInfoFromWire);
  }

  /** `DELETE /v1/keys/{id}`: the key stops working at its next request. */
  static async revoke(id: string, opts: ConnectionOptions = {}): Promise<void> {
    const client = await HttpClient.create(opts);
    await client.send("DELETE", `/v1/keys/${encodeURIComponent(id)}`);
  }
}
