/**
 * Lifecycle events end to end against the real daemon: a sandbox's life as events (once each, in order),
 * filters, pages, bad parameters, tenants, and the SSE streams (replay, live events, resume after a cut).
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Events, InvalidArgumentError, Keys, type LifecycleEvent, NotFoundError, Sandbox } from "sandpit";
import { type Daemon, eventually, rejectsWith, startDaemon } from "./helpers.js";

let daemon: Daemon;

before(async () => {
  daemon = await startDaemon();
});
after(async () => {
  await daemon?.stop();
});

const LIFE = ["sandbox.created", "sandbox.paused", "sandbox.resumed", "sandbox.timeout_extended", "sandbox.killed"];

/** Creates a sandbox, then pauses, resumes and extends it; returns it and its events once all four are in. */
async function live(): Promise<{ sandbox: Sandbox; events: LifecycleEvent[] }> {
  const sandbox = await Sandbox.create();
  try {
    await sandbox.pause();
    await sandbox.resume();
    await sandbox.setTimeout(600_000);
    let events: LifecycleEvent[] = [];
    await eventually(
      async () => {
        events = (await sandbox.events()).events;
        return events.length >= 4;
      },
      10_000,
      "four events",
    );
    return { sandbox, events };
  } catch (e) {
    await sandbox.kill();
    throw e;
  }
}

/** {@link live}, then kills the sandbox; returns its events once `killed` is in (read through /v1/events). */
async function liveAndDie(): Promise<{ sandbox: Sandbox; events: LifecycleEvent[] }> {
  const { sandbox } = await live();
  await sandbox.kill();
  let events: LifecycleEvent[] = [];
  await eventually(
    async () => {
      events = (await Events.list({ sandbox: sandbox.id })).events;
      return events.some((e) => e.type === "sandbox.killed");
    },
    10_000,
    "the sandbox.killed event",
  );
  return { sandbox, events };
}

/** The first `n` events a stream yields. */
async function take(stream: AsyncIterable<LifecycleEvent>, n: number): Promise<LifecycleEvent[]> {
  const got: LifecycleEvent[] = [];
  for await (const ev of stream) {
    got.push(ev);
    if (got.length === n) break;
  }
  return got;
}

test("a sandbox's life shows as created, paused, resumed, timeout_extended, killed: once each, in order", async () => {
  const { sandbox, events: before } = await live();
  assert.deepEqual(
    before.map((e) => e.type),
    LIFE.slice(0, 4),
  );
  await sandbox.kill();
  let events: LifecycleEvent[] = [];
  await eventually(
    async () => {
      events = (await Events.list({ sandbox: sandbox.id })).events;
      return events.some((e) => e.type === "sandbox.killed");
    },
    10_000,
    "the sandbox.killed event",
  );
  assert.deepEqual(
    events.map((e) => e.type),
    LIFE,
  );
  assert.deepEqual(events.slice(0, 4), before);
  for (const [i, e] of events.entries()) {
    assert.equal(e.sandboxId, sandbox.id);
    assert.equal(e.tenant, "default");
    assert.ok(e.at instanceof Date && !Number.isNaN(e.at.getTime()), String(e.at));
    if (i > 0) {
      assert.ok(e.id > events[i - 1].id, "ids increase");
      assert.ok(e.at >= events[i - 1].at, "times do not go back");
    }
  }
  const [created, paused, resumed, extended, killed] = events;
  assert.equal(created.data.template, "base");
  assert.equal(created.data.pooled, false);
  assert.equal(paused.data.reason, "api");
  assert.equal(resumed.data.reason, "api");
  assert.equal(extended.data.timeout_s, 600);
  assert.equal(killed.data.reason, "api");
  assert.equal((await Events.list({ sandbox: sandbox.id })).nextAfter, null);
  // A deleted sandbox's own path is gone (the daemon's choice); its history stays on /v1/events.
  await rejectsWith(sandbox.events(), NotFoundError, 404, "not_found");
});

test("events filter by type and time, page with limit and nextAfter, and refuse bad parameters", async () => {
  const { sandbox, events } = await live();
  try {
    const ids = events.map((e) => e.id);
    assert.deepEqual(
      (await Events.list({ sandbox: sandbox.id, type: "sandbox.paused" })).events.map((e) => e.id),
      [ids[1]],
    );
    assert.deepEqual(
      (await sandbox.events({ type: ["sandbox.resumed", "sandbox.created"] })).events.map((e) => e.type),
      ["sandbox.created", "sandbox.resumed"],
    );
    assert.deepEqual((await Events.list({ sandbox: sandbox.id, type: ["sandbox.failed"] })).events, []);

    // Pages of 3: 3 + 1, and `nextAfter` only while more match.
    for (const list of [
      (after?: number) => sandbox.events({ limit: 3, after }),
      (after?: number) => Events.list({ sandbox: sandbox.id, limit: 3, after }),
    ]) {
      const pages: number[][] = [];
      let after: number | undefined;
      for (;;) {
        const page = await list(after);
        pages.push(page.events.map((e) => e.id));
        if (page.nextAfter === null) break;
        assert.equal(page.nextAfter, page.events.at(-1)?.id);
        after = page.nextAfter;
        assert.ok(pages.length < 10, "paging does not end");
      }
      assert.deepEqual(pages, [ids.slice(0, 3), ids.slice(3)]);
    }
    assert.equal((await sandbox.events({ limit: 4 })).nextAfter, null, "exactly `limit` left: no next page");
    assert.deepEqual(
      (await sandbox.events({ after: ids[1] })).events.map((e) => e.id),
      ids.slice(2),
    );

    // `since` (inclusive), as a Date, RFC 3339 text and epoch milliseconds.
    const at = events[2].at;
    for (const since of [at, at.toISOString(), at.getTime()]) {
      const got = (await sandbox.events({ since })).events;
      assert.ok(
        got.every((e) => e.at >= at),
        String(since),
      );
      assert.deepEqual(
        got.map((e) => e.id).filter((id) => id >= ids[2]),
        ids.slice(2),
        String(since),
      );
    }
    assert.deepEqual((await Events.list({ since: new Date("2999-01-01T00:00:00Z") })).events, []);

    await rejectsWith(Events.list({ limit: 0 }), InvalidArgumentError, 400, "invalid_argument");
    await rejectsWith(Events.list({ limit: 1001 }), InvalidArgumentError, 400, "invalid_argument");
    await rejectsWith(Events.list({ since: "yesterday" }), InvalidArgumentError, 400, "invalid_argument");
    await rejectsWith(Events.list({ type: "sandbox.bogus" }), InvalidArgumentError, 400, "invalid_argument");
    await rejectsWith(sandbox.events({ limit: -1 }), InvalidArgumentError, 400, "invalid_argument");
  } finally {
    await sandbox.kill();
  }
});

test("a key reads its own tenant's events; an access token its sandbox's", async () => {
  const bot = await Keys.create({ name: "ts-events-bot", scopes: ["sandboxes"], tenant: "ts-events" });
  const theirs = await Sandbox.create({ apiKey: bot.key });
  const ours = await Sandbox.create();
  try {
    let seen: LifecycleEvent[] = [];
    await eventually(
      async () => {
        seen = (await Events.list({ limit: 1000 }, { apiKey: bot.key })).events;
        return seen.some((e) => e.sandboxId === theirs.id);
      },
      10_000,
      "the tenant's created event",
    );
    assert.ok(
      seen.every((e) => e.tenant === "ts-events"),
      JSON.stringify(seen),
    );
    assert.ok(!seen.some((e) => e.sandboxId === ours.id), "another tenant's events are hidden");
    // An admin key sees both.
    await eventually(
      async () => {
        const all = (await Events.list({ type: "sandbox.created", limit: 1000 })).events.map((e) => e.sandboxId);
        return all.includes(theirs.id) && all.includes(ours.id);
      },
      10_000,
      "both created events for the admin key",
    );
    // A sandbox's access token reads that sandbox's events.
    const scoped = await Sandbox.connect(ours.id, { apiKey: ours.accessToken! });
    const own = (await scoped.events()).events;
    assert.equal(own[0]?.type, "sandbox.created");
    assert.ok(own.every((e) => e.sandboxId === ours.id));
  } finally {
    await theirs.kill();
    await ours.kill();
    await Keys.revoke(bot.id);
  }
});

test("the event streams replay from `after` and then yield live events", async () => {
  const sandbox = await Sandbox.create();
  const signal = AbortSignal.timeout(30_000);
  try {
    let known: LifecycleEvent[] = [];
    await eventually(
      async () => {
        known = (await sandbox.events()).events;
        return known.length > 0;
      },
      10_000,
      "the created event",
    );
    const lastKnown = known.at(-1)!.id;

    // Opened without `after`: only events from now on. Keep making one until the stream yields it: the first
    // it yields was made after it was opened.
    for (const stream of [
      Events.stream({ sandbox: sandbox.id, type: "sandbox.timeout_extended", signal }),
      sandbox.eventsStream({ type: ["sandbox.timeout_extended"], signal }),
    ]) {
      let done = false;
      const first = stream.next().finally(() => (done = true));
      while (!done && !signal.aborted) {
        await sandbox.setTimeout(600_000);
        await new Promise((r) => setTimeout(r, 200));
      }
      const r = await first; // rejects with the timeout's reason when nothing came in 30 s
      assert.ok(!r.done);
      assert.equal(r.value.type, "sandbox.timeout_extended");
      assert.equal(r.value.sandboxId, sandbox.id);
      assert.ok(r.value.id > lastKnown);
      assert.equal(r.value.data.timeout_s, 600);
      await stream.return(undefined);
    }

    // With `after`: the stored events after it, in order, then live ones.
    await sandbox.pause();
    await sandbox.resume();
    let stored: LifecycleEvent[] = [];
    await eventually(
      async () => {
        stored = (await sandbox.events()).events;
        return stored.at(-1)?.type === "sandbox.resumed";
      },
      10_000,
      "the resumed event",
    );
    const replayed = await take(sandbox.eventsStream({ after: 0, signal }), stored.length);
    assert.deepEqual(replayed, stored);
    const fromFirst = await take(Events.stream({ sandbox: sandbox.id, after: stored[0].id, signal }), stored.length - 1);
    assert.deepEqual(fromFirst, stored.slice(1));

    const tail = Events.stream({ sandbox: sandbox.id, after: stored.at(-1)!.id, signal });
    const next = tail.next();
    await sandbox.pause();
    const live = await next;
    assert.equal(live.value?.type, "sandbox.paused");
    assert.ok(live.value!.id > stored.at(-1)!.id, "a newer event");
    await tail.return(undefined);

    // A sandbox's stream ends by itself after `sandbox.killed`.
    const whole: LifecycleEvent[] = [];
    const reading = (async () => {
      for await (const ev of sandbox.eventsStream({ after: 0, signal })) whole.push(ev);
    })();
    await sandbox.kill();
    await reading;
    assert.deepEqual(
      whole.map((e) => e.type),
      [...stored.map((e) => e.type), "sandbox.paused", "sandbox.killed"],
    );
  } finally {
    await sandbox.kill();
  }
});

test("a cut event stream resumes with Last-Event-ID: nothing lost, nothing repeated", async () => {
  const { sandbox, events } = await liveAndDie();
  const seen: (string | null)[] = [];
  // Cuts the first event stream right after its first message.
  let cuts = 1;
  const cutting: typeof fetch = async (input, init) => {
    const resp = await fetch(input, init);
    if (!String(input).includes("/events/stream") || !resp.body) return resp;
    seen.push(new Headers(init?.headers).get("last-event-id"));
    if (cuts <= 0) return resp;
    cuts -= 1;
    const reader = resp.body.getReader();
    let text = "";
    const body = new ReadableStream<Uint8Array>({
      async pull(c) {
        const { value, done } = await reader.read();
        if (done) return c.close();
        text += new TextDecoder().decode(value);
        const end = text.indexOf("\n\n", text.indexOf("data:"));
        if (text.includes("data:") && end >= 0) {
          await reader.cancel();
          c.enqueue(new TextEncoder().encode(text.slice(0, end + 2)));
          c.close();
          return;
        }
      },
    });
    return new Response(body, { status: resp.status, headers: resp.headers });
  };
  const got = await take(
    Events.stream({ sandbox: sandbox.id, after: 0, signal: AbortSignal.timeout(30_000) }, { fetch: cutting }),
    events.length,
  );
  assert.deepEqual(got, events);
  assert.deepEqual(seen, [null, String(events[0].id)]);
});
