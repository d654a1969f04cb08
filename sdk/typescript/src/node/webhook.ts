/**
 * Node only: checks that a webhook delivery came from the daemon. Each delivery carries `Sandpit-Timestamp:
 * <unix seconds>` and `Sandpit-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
 */
import { createHmac, timingSafeEqual } from "node:crypto";

/** Request headers as Node's `http` (`req.headers`, lower-case names) or fetch (`Headers`) give them. */
export type WebhookHeaders = Headers | Record<string, string | string[] | undefined>;

/** Options of {@link verifyWebhook}. */
export interface VerifyWebhookOpts {
  /** How far (seconds) `Sandpit-Timestamp` may be from now, either way (default 300). Older is a replay. */
  toleranceS?: number;
}

function header(headers: WebhookHeaders, name: string): string[] {
  if (typeof (headers as Headers).get === "function" && typeof (headers as Headers).has === "function") {
    const v = (headers as Headers).get(name);
    return v === null ? [] : [v];
  }
  const out: string[] = [];
  for (const [k, v] of Object.entries(headers as Record<string, string | string[] | undefined>)) {
    if (k.toLowerCase() !== name.toLowerCase() || v === undefined) continue;
    out.push(...(Array.isArray(v) ? v : [v]));
  }
  return out;
}

/**
 * Whether a webhook delivery is genuine: `body` exactly as received (the raw bytes or text, not re-serialized
 * JSON), its headers, and the webhook's secret. False when a header is missing or malformed, the timestamp is
 * more than `toleranceS` seconds away from now, or no `v1=` signature matches.
 */
export function verifyWebhook(
  body: string | Uint8Array,
  headers: WebhookHeaders,
  secret: string,
  { toleranceS = 300 }: VerifyWebhookOpts = {},
): boolean {
  const stamps = header(headers, "sandpit-timestamp");
  if (stamps.length !== 1) return false;
  const stamp = stamps[0]!.trim();
  if (!/^\d{1,15}$/.test(stamp)) return false;
  if (Math.abs(Date.now() / 1000 - Number(stamp)) > toleranceS) return false;
  const expected = createHmac("sha256", secret)
    .update(`${stamp}.`)
    .update(typeof body === "string" ? Buffer.from(body, "utf8") : body)
    .digest();
  const given = header(headers, "sandpit-signature")
    .flatMap((v) => v.split(","))
    .map((s) => s.trim());
  let ok = false;
  for (const sig of given) {
    const m = /^v1=([0-9a-fA-F]{64})$/.exec(sig);
    if (m && timingSafeEqual(Buffer.from(m[1]!, "hex"), expected)) ok = true;
  }
  return ok;
}
