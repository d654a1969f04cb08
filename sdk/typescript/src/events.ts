/**
 * Lifecycle events (`GET /v1/events`, `GET /v1/sandboxes/{id}/events` and their `/stream` SSE feeds): what
 * happened to which sandbox, when — created, paused, resumed, timed out, killed, ... A key reads its own
 * tenant's events (an admin key: all); a sandbox's access token reads that sandbox's.
 *
 * Browser-safe.
 */
import { HttpClient } from "./client.js";
import type { ConnectionOptions } from "./config.js";
import { followFeed } from "./sse.js";

/** The kinds of lifecycle event (a newer daemon may add more). */
export type LifecycleEventType =
  | "sandbox.created"
  | "sandbox.paused"
  | "sandbox.resumed"
  | "sandbox.timeout_extended"
  | "sandbox.timed_out"
  | "sandbox.killed"
  | "sandbox.failed"
  | "sandbox.unhealthy"
  | "sandbox.snapshot_created"
  | "sandbox.forked";

/** One lifecycle event. */
export interface LifecycleEvent {
  /** Increasing; pass it as `after` to read on from it. */
  id: number;
  type: LifecycleEventType;
  sandboxId: string;
  tenant: string;
  at: Date;
  /**
   * Details by type, as the daemon sent them (snake_case; more fields may come): `created` `{template, pooled}`,
   * `paused` `{reason: "api" | "timeout"}`, `resumed` `{reason: "api" | "auto"}`, `timeout_extended`
   * `{timeout_s, expires_at}`, `timed_out` `{action}`, `killed` `{reason}`, `failed` / `unhealthy` `{error}`,
   * `snapshot_created` `{template, frozen_ms}`, `forked` `{template, sandboxes}`.
   */
  data: Record<string, unknown>;
}

/** A page of events, oldest first; `nextAfter` reads the next one when there are more. */
export interface EventPage {
  events: LifecycleEvent[];
  nextAfter: number | null;
}

/** Which events {@link Events.list} and `sandbox.events()` read. */
export interface SandboxEventQuery {
  /** One type, or several (any of them). */
  type?: string | string[];
  /** Events at or after this time (a `Date`, RFC 3339 text, or epoch milliseconds). */
  since?: Date | string | number;
  /** Events after this id: a previous page's `nextAfter`. */
  after?: number;
  /** At most this many (default 100, at most 1000). */
  limit?: number;
}

/** Which events {@link Events.list} reads. */
export interface EventQuery extends SandboxEventQuery {
  /** One sandbox's only. */
  sandbox?: string;
}

/** Which events `sandbox.eventsStream()` follows. */
export interface SandboxEventStreamOpts {
  /** One type, or several (any of them). */
  type?: string | string[];
  /** First replays the stored events after this id, then follows; without it, only events from now on. */
  after?: number;
  /** Stops the stream (the iteration then throws the abort reason). */
  signal?: AbortSignal;
}

/** Which events {@link Events.stream} follows. */
export interface EventStreamOpts extends SandboxEventStreamOpts {
  /** One sandbox's only. */
  sandbox?: string;
}

/** @internal The event as the daemon sends it. */
export interface WireLifecycleEvent {
  id: number;
  type: LifecycleEventType;
  sandbox_id: string;
  tenant: string;
  at: string;
  data?: Record<string, unknown> | null;
}

/** @internal */
export function lifecycleEventFromWire(w: WireLifecycleEvent): LifecycleEvent {
  return { id: w.id, type: w.type, sandboxId: w.sandbox_id, tenant: w.tenant, at: new Date(w.at), data: w.data ?? {} };
}

function typeParam(type: SandboxEventQuery["type"]): string | undefined {
  return Array.isArray(type) ? type.join(",") : type;
}

/** @internal `GET {path}` with the list parameters. */
export async function listEvents(client: HttpClient, path: string, query: EventQuery): Promise<EventPage> {
  const since = query.since instanceof Date ? query.since.getTime() : query.since;
  const r = await client.json<{ events: WireLifecycleEvent[]; next_after?: number | null }>("GET", path, {
    query: { sandbox: query.sandbox, type: typeParam(query.type), since, after: query.after, limit: query.limit },
  });
  return { events: r.events.map(lifecycleEventFromWire), nextAfter: r.next_after ?? null };
}

/**
 * @internal Follows `GET {path}` (an events `/stream`): replays, then live events. A cut connection resumes
 * from the last event seen (`Last-Event-ID`); an event already delivered is never delivered again.
 * `oneSandbox` (`/v1/sandboxes/{id}/events/stream`): ends after `sandbox.killed`, or once the sandbox is gone.
 */
export async function* followLifecycle(
  client: HttpClient,
  path: string,
  opts: EventStreamOpts,
  oneSandbox = false,
): AsyncGenerator<LifecycleEvent> {
  let last = opts.after ?? -1;
  const query = { sandbox: opts.sandbox, type: typeParam(opts.type), after: opts.after };
  const feed = followFeed(client, path, query, { signal: opts.signal, what: "the event stream", endsWithSandbox: oneSandbox });
  for await (const msg of feed) {
    if (!msg.data) continue;
    const w = JSON.parse(msg.data) as WireLifecycleEvent;
    if (typeof w?.id !== "number") continue; // not an event: a newer daemon's other message
    const ev = lifecycleEventFromWire(w);
    if (ev.id <= last) continue;
    last = ev.id;
    yield ev;
    if (oneSandbox && ev.type === "sandbox.killed") return; // its last event
  }
}

/** The lifecycle event calls (any key; it reads its own tenant's events, an admin key everyone's). */
export class Events {
  private constructor() {}

  /** `GET /v1/events`: one page of events, oldest first. A bad parameter is an {@link InvalidArgumentError}. */
  static async list(query: EventQuery = {}, opts: ConnectionOptions = {}): Promise<EventPage> {
    return listEvents(await HttpClient.create(opts), "/v1/events", query);
  }

  /**
   * `GET /v1/events/stream`: the events after `after` (when given), then each new one as it happens, until
   * `signal` aborts or the loop breaks. A dropped connection is reopened where it stopped.
   */
  static async *stream(query: EventStreamOpts = {}, opts: ConnectionOptions = {}): AsyncGenerator<LifecycleEvent> {
    yield* followLifecycle(await HttpClient.create(opts), "/v1/events/stream", query);
  }
}
