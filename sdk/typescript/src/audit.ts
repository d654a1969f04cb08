/**
 * The audit log (`GET /v1/audit`, admin keys only): which key did what to which sandbox, when, and how it
 * ended — never a secret. Read it from a back end; a page should never hold an admin key.
 */
import { HttpClient } from "./client.js";
import type { ConnectionOptions } from "./config.js";

/** One recorded call. */
export interface AuditEntry {
  id: number;
  at: Date;
  /** `k_…`, `file` (the key file's key) or `access-token:<sandbox id>`. */
  keyId: string;
  tenant: string;
  /** `sandbox.create`, `process.exec`, `file.write`, `key.create`, `tenant.quotas`, … */
  action: string;
  sandbox: string | null;
  /** The command line of an exec, the path of a file call, a key's id and scopes, a tenant's quotas. */
  detail: string | null;
  status: number;
  /** `ok`, `denied` or `failed`. */
  outcome: string;
}

/** A page of rows, oldest first; `nextAfter` reads the next one when there are more. */
export interface AuditPage {
  entries: AuditEntry[];
  nextAfter: number | null;
}

/** Which rows {@link Audit.list} reads. */
export interface AuditQuery {
  /** Rows at or after this time (a `Date`, RFC 3339 text, or epoch milliseconds). */
  since?: Date | string | number;
  /** Rows after this id: a previous page's `nextAfter`. */
  after?: number;
  tenant?: string;
  sandbox?: string;
  /** At most this many (default 100, at most 1000). */
  limit?: number;
}

interface WireEntry {
  id: number;
  at: string;
  key_id: string;
  tenant: string;
  action: string;
  sandbox?: string;
  detail?: string;
  status: number;
  outcome: string;
}

/** The audit calls; they need an `admin` key. */
export class Audit {
  private constructor() {}

  /** `GET /v1/audit`: one page of rows, oldest first. */
  static async list(query: AuditQuery = {}, opts: ConnectionOptions = {}): Promise<AuditPage> {
    const client = await HttpClient.create(opts);
    const since = query.since instanceof Date ? query.since.getTime() : query.since;
    const r = await client.json<{ entries: WireEntry[]; next_after?: number }>("GET", "/v1/audit", {
      query: { since, after: query.after, tenant: query.tenant, sandbox: query.sandbox, limit: query.limit },
    });
    return {
      entries: r.entries.map((w) => ({
        id: w.id,
        at: new Date(w.at),
        keyId: w.key_id,
        tenant: w.tenant,
        action: w.action,
        sandbox: w.sandbox ?? null,
        detail: w.detail ?? null,
        status: w.status,
        outcome: w.outcome,
      })),
      nextAfter: r.next_after ?? null,
    };
  }
}
