/**
 * Webhooks (`/v1/webhooks`, admin keys only: the daemon makes the outbound requests): the daemon POSTs each
 * lifecycle event a webhook subscribes to, signed with its secret, and retries failed deliveries with
 * exponential backoff. Check a delivery's signature with `verifyWebhook` from `sandpit/node`.
 *
 * Browser-safe (make webhooks from a back end all the same: an admin key does not belong in a page).
 */
import { HttpClient } from "./client.js";
import type { ConnectionOptions } from "./config.js";
import type { LifecycleEventType } from "./events.js";

/** A webhook as the daemon reports it: never its secret. */
export interface WebhookInfo {
  /** `wh_…` */
  id: string;
  url: string;
  /** The event types it receives; `["*"]` for all. */
  events: string[];
  description: string | null;
  createdAt: Date;
}

/** What {@link Webhooks.create} makes. */
export interface CreateWebhookOpts {
  /** Where deliveries are POSTed: an `http` or `https` URL. */
  url: string;
  /** At least one: lifecycle event types (`sandbox.created`, ...) or `"*"` for all. */
  events: string[];
  /** 8 to 256 characters; signs every delivery (`Sandpit-Signature`). Never returned. */
  secret: string;
  description?: string;
}

/** How one delivery attempt ended. */
export type DeliveryOutcome = "delivered" | "failed" | "retrying";

/** One attempt at delivering one event. */
export interface WebhookDelivery {
  /** `whd_…`: the delivery, the same for every attempt at one event (the `Sandpit-Delivery` header). */
  id: string;
  eventId: number;
  eventType: LifecycleEventType;
  /** 1 for the first attempt. */
  attempt: number;
  at: Date;
  /** `delivered` (a 2xx), `retrying` (failed; another attempt is scheduled) or `failed` (failed, the last). */
  outcome: DeliveryOutcome;
  /** The receiver's HTTP status; `null` when there was no answer. */
  statusCode: number | null;
  /** Why the attempt failed, when it did. */
  error: string | null;
  durationMs: number;
}

/** Options of {@link Webhooks.deliveries}. */
export interface DeliveriesOpts {
  /** At most this many attempts, newest first (default 100). */
  limit?: number;
}

interface WireWebhook {
  id: string;
  url: string;
  events: string[];
  description?: string | null;
  created_at: string;
}

interface WireDelivery {
  id: string;
  event_id: number;
  event_type: LifecycleEventType;
  attempt: number;
  at: string;
  outcome: DeliveryOutcome;
  status_code?: number | null;
  error?: string | null;
  duration_ms: number;
}

function webhookFromWire(w: WireWebhook): WebhookInfo {
  return { id: w.id, url: w.url, events: w.events, description: w.description ?? null, createdAt: new Date(w.created_at) };
}

function deliveryFromWire(w: WireDelivery): WebhookDelivery {
  return {
    id: w.id,
    eventId: w.event_id,
    eventType: w.event_type,
    attempt: w.attempt,
    at: new Date(w.at),
    outcome: w.outcome,
    statusCode: w.status_code ?? null,
    error: w.error ?? null,
    durationMs: w.duration_ms,
  };
}

function webhookPath(id: string): string {
  return `/v1/webhooks/${encodeURIComponent(id)}`;
}

/** The webhook calls; they need an `admin` key ({@link PermissionDeniedError} otherwise). */
export class Webhooks {
  private constructor() {}

  /**
   * `POST /v1/webhooks`: from now on each event of `events` is POSTed to `url`. A bad URL, event type or secret
   * is an {@link InvalidArgumentError}.
   */
  static async create(webhook: CreateWebhookOpts, opts: ConnectionOptions = {}): Promise<WebhookInfo> {
    const client = await HttpClient.create(opts);
    const json: Record<string, unknown> = { url: webhook.url, events: webhook.events, secret: webhook.secret };
    if (webhook.description !== undefined) json.description = webhook.description;
    return webhookFromWire(await client.json<WireWebhook>("POST", "/v1/webhooks", { json }));
  }

  /** `GET /v1/webhooks`: every webhook, without secrets. */
  static async list(opts: ConnectionOptions = {}): Promise<WebhookInfo[]> {
    const client = await HttpClient.create(opts);
    const r = await client.json<{ webhooks: WireWebhook[] }>("GET", "/v1/webhooks");
    return r.webhooks.map(webhookFromWire);
  }

  /** `GET /v1/webhooks/{id}` ({@link NotFoundError} for an unknown id). */
  static async get(id: string, opts: ConnectionOptions = {}): Promise<WebhookInfo> {
    const client = await HttpClient.create(opts);
    return webhookFromWire(await client.json<WireWebhook>("GET", webhookPath(id)));
  }

  /** `DELETE /v1/webhooks/{id}`: no more deliveries ({@link NotFoundError} for an unknown id). */
  static async delete(id: string, opts: ConnectionOptions = {}): Promise<void> {
    const client = await HttpClient.create(opts);
    await client.send("DELETE", webhookPath(id));
  }

  /** `GET /v1/webhooks/{id}/deliveries`: the delivery attempts, one per row, newest first. */
  static async deliveries(id: string, query: DeliveriesOpts = {}, opts: ConnectionOptions = {}): Promise<WebhookDelivery[]> {
    const client = await HttpClient.create(opts);
    const r = await client.json<{ deliveries: WireDelivery[] }>("GET", `${webhookPath(id)}/deliveries`, {
      query: { limit: query.limit },
    });
    return r.deliveries.map(deliveryFromWire);
  }
}
