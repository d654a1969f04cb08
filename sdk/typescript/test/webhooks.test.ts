/**
 * Webhooks end to end against the real daemon (retry backoff 100 ms) and a receiver on 127.0.0.1 in this
 * process: signed deliveries `verifyWebhook` accepts, retries of a failing receiver and their delivery rows,
 * validation, deletion, and that only admin keys may manage webhooks.
 */
import assert from "node:assert/strict";
import { type IncomingHttpHeaders, type Server, createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, test } from "node:test";
import {
  InvalidArgumentError,
  Keys,
  NotFoundError,
  PermissionDeniedError,
  Sandbox,
  type WebhookDelivery,
  Webhooks,
} from "sandpit";
import { verifyWebhook } from "sandpit/node";
import { type Daemon, eventually, rejectsWith, startDaemon } from "./helpers.js";

/** One request the receiver got. */
interface Received {
  path: string;
  headers: IncomingHttpHeaders;
  body: string;
  /** What the receiver answered. */
  status: number;
  /** The event in the body. */
  event: { id: number; type: string; sandbox_id: string; tenant: string; at: string; data: Record<string, unknown> };
}

const SECRET = "ts-webhook-secret";
let daemon: Daemon;
let server: Server;
let base = "";
const received: Received[] = [];
/** Attempts per delivery id at `/flaky`, which answers 500 twice, then 200. */
const flaky = new Map<string, number>();

before(async () => {
  server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks).toString("utf8");
      let status = 200;
      if (req.url === "/flaky") {
        const id = String(req.headers["sandpit-delivery"]);
        const n = (flaky.get(id) ?? 0) + 1;
        flaky.set(id, n);
        if (n <= 2) status = 500;
      }
      let event: Received["event"];
      try {
        event = JSON.parse(body) as Received["event"];
      } catch {
        event = { id: -1, type: "", sandbox_id: "", tenant: "", at: "", data: {} };
      }
      received.push({ path: req.url ?? "", headers: req.headers, body, status, event });
      res.statusCode = status;
      res.end(status === 200 ? "ok" : "try again");
    });
  });
  await new Promise<void>((res) => server.listen(0, "127.0.0.1", res));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  daemon = await startDaemon(["--webhook-backoff-ms", "100"]);
});
after(async () => {
  await daemon?.stop();
  server?.closeAllConnections();
  await new Promise((r) => server?.close(r));
});

/** What the receiver got at `path` about `sandbox`. */
function about(path: string, sandbox: Sandbox): Received[] {
  return received.filter((r) => r.path === path && r.event.sandbox_id === sandbox.id);
}

test("a webhook for every event receives signed deliveries of a sandbox's creation and deletion", async () => {
  const hook = await Webhooks.create({ url: `${base}/all`, events: ["*"], secret: SECRET, description: "every event" });
  try {
    assert.match(hook.id, /^wh_/);
    assert.deepEqual([hook.url, hook.events, hook.description], [`${base}/all`, ["*"], "every event"]);
    assert.ok(hook.createdAt instanceof Date && !Number.isNaN(hook.createdAt.getTime()));
    assert.ok(!("secret" in hook));
    assert.deepEqual(await Webhooks.get(hook.id), hook);
    assert.ok((await Webhooks.list()).some((w) => w.id === hook.id && w.url === hook.url));

    const sandbox = await Sandbox.create();
    await sandbox.kill();
    await eventually(
      () => about("/all", sandbox).some((r) => r.event.type === "sandbox.killed"),
      10_000,
      "the sandbox.killed delivery",
    );
    await eventually(() => about("/all", sandbox).length >= 2, 10_000, "both deliveries");
    const got = about("/all", sandbox);
    assert.deepEqual(got.map((r) => r.event.type).sort(), ["sandbox.created", "sandbox.killed"]);
    for (const r of got) {
      assert.equal(r.headers["content-type"], "application/json");
      assert.equal(r.headers["sandpit-event"], r.event.type);
      assert.match(String(r.headers["sandpit-delivery"]), /^whd_/);
      assert.match(String(r.headers["sandpit-signature"]), /^v1=[0-9a-f]{64}$/);
      assert.ok(verifyWebhook(r.body, r.headers, SECRET), `signature of ${r.event.type} rejected`);
      assert.ok(!verifyWebhook(r.body, r.headers, "not-the-secret"), "a wrong secret is accepted");
      assert.ok(!verifyWebhook(r.body.replace(sandbox.id, "sb_other"), r.headers, SECRET), "a changed body is accepted");
      assert.equal(r.event.tenant, "default");
      assert.equal(typeof r.event.id, "number");
    }
    assert.notEqual(got[0].headers["sandpit-delivery"], got[1].headers["sandpit-delivery"]);

    // One delivered row per event, newest first, naming the same delivery ids and events.
    let rows: WebhookDelivery[] = [];
    await eventually(
      async () => {
        rows = (await Webhooks.deliveries(hook.id)).filter((d) => got.some((r) => r.event.id === d.eventId));
        return rows.length >= 2;
      },
      10_000,
      "the delivery rows",
    );
    assert.equal(rows.length, 2, JSON.stringify(rows));
    for (const d of rows) {
      const r = got.find((x) => x.event.id === d.eventId)!;
      assert.deepEqual(
        [d.id, d.eventType, d.attempt, d.outcome, d.statusCode, d.error],
        [r.headers["sandpit-delivery"], r.event.type, 1, "delivered", 200, null],
      );
      assert.ok(d.at instanceof Date && d.durationMs >= 0);
    }
    const all = await Webhooks.deliveries(hook.id);
    for (let i = 1; i < all.length; i++) assert.ok(all[i - 1].at >= all[i].at, "newest first");
    assert.equal((await Webhooks.deliveries(hook.id, { limit: 1 })).length, 1);
  } finally {
    await Webhooks.delete(hook.id);
  }
});

test("a delivery the receiver fails is retried: retrying, retrying, delivered", async () => {
  const hook = await Webhooks.create({ url: `${base}/flaky`, events: ["sandbox.created"], secret: SECRET });
  try {
    const sandbox = await Sandbox.create();
    await sandbox.kill();
    let rows: WebhookDelivery[] = [];
    await eventually(
      async () => {
        rows = await Webhooks.deliveries(hook.id);
        return rows.some((d) => d.outcome === "delivered");
      },
      15_000,
      "the third attempt's success",
    );
    const attempts = [...rows].reverse();
    assert.deepEqual(
      attempts.map((d) => [d.attempt, d.outcome, d.statusCode]),
      [
        [1, "retrying", 500],
        [2, "retrying", 500],
        [3, "delivered", 200],
      ],
    );
    assert.equal(new Set(attempts.map((d) => d.id)).size, 1, "one delivery id for every attempt");
    assert.ok(attempts.every((d) => d.eventType === "sandbox.created"));
    assert.equal(new Set(attempts.map((d) => d.eventId)).size, 1);
    assert.ok(attempts[0].error !== null || attempts[0].statusCode === 500);

    const seen = about("/flaky", sandbox);
    assert.deepEqual(
      seen.map((r) => r.status),
      [500, 500, 200],
    );
    assert.ok(seen.every((r) => r.headers["sandpit-delivery"] === attempts[0].id));
    assert.ok(seen.every((r) => r.event.id === attempts[0].eventId && r.event.type === "sandbox.created"));
    assert.ok(seen.every((r) => verifyWebhook(r.body, r.headers, SECRET)));
  } finally {
    await Webhooks.delete(hook.id);
  }
});

test("webhooks refuse bad input, stop once deleted, and need an admin key", async () => {
  for (const bad of [
    { url: "ftp://127.0.0.1/hook", events: ["*"], secret: SECRET },
    { url: `${base}/bad`, events: [], secret: SECRET },
    { url: `${base}/bad`, events: ["sandbox.bogus"], secret: SECRET },
    { url: `${base}/bad`, events: ["*"], secret: "short" },
  ]) {
    await rejectsWith(Webhooks.create(bad), InvalidArgumentError, 400, "invalid_argument");
  }

  const gone = await Webhooks.create({ url: `${base}/gone`, events: ["*"], secret: SECRET });
  await Webhooks.delete(gone.id);
  await rejectsWith(Webhooks.get(gone.id), NotFoundError, 404, "not_found");
  await rejectsWith(Webhooks.delete(gone.id), NotFoundError, 404, "not_found");
  assert.ok(!(await Webhooks.list()).some((w) => w.id === gone.id));
  // A webhook made afterwards gets the events; the deleted one does not.
  const late = await Webhooks.create({ url: `${base}/late`, events: ["sandbox.created", "sandbox.killed"], secret: SECRET });
  try {
    const sandbox = await Sandbox.create();
    await sandbox.kill();
    await eventually(() => about("/late", sandbox).length >= 2, 10_000, "the deliveries to the new webhook");
    assert.deepEqual(about("/gone", sandbox), []);
  } finally {
    await Webhooks.delete(late.id);
  }

  const bot = await Keys.create({ name: "ts-webhook-bot", scopes: ["sandboxes"] });
  try {
    const as = { apiKey: bot.key };
    await rejectsWith(Webhooks.list(as), PermissionDeniedError, 403, "permission_denied");
    await rejectsWith(
      Webhooks.create({ url: `${base}/bot`, events: ["*"], secret: SECRET }, as),
      PermissionDeniedError,
      403,
      "permission_denied",
    );
  } finally {
    await Keys.revoke(bot.id);
  }
});
