/** The audit log end to end against the real daemon: who ran what, filters, pages, bad parameters. */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Audit, InvalidArgumentError, Keys, PermissionDeniedError, Sandbox } from "sandpit";
import { type Daemon, startDaemon } from "./helpers.js";

let daemon: Daemon;

before(async () => {
  daemon = await startDaemon();
});
after(async () => {
  await daemon?.stop();
});

test("the audit log names who ran what", async () => {
  const sandbox = await Sandbox.create();
  try {
    await sandbox.commands.run("echo 'audited words'");
    let page = await Audit.list({ sandbox: sandbox.sandboxId });
    const deadline = Date.now() + 5000;
    // Written off the request path: poll.
    while (!page.entries.some((e) => e.detail?.includes("audited words")) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
      page = await Audit.list({ sandbox: sandbox.sandboxId });
    }
    const ran = page.entries.find((e) => e.detail?.includes("audited words"));
    assert.ok(ran, JSON.stringify(page));
    assert.deepEqual([ran.keyId, ran.outcome, ran.sandbox], ["file", "ok", sandbox.sandboxId]);
    assert.ok(ran.at instanceof Date);
    assert.equal(page.entries[0]?.action, "sandbox.create");
    const first = await Audit.list({ limit: 1 });
    assert.equal(first.entries.length, 1);
    assert.ok(first.nextAfter !== null);
    const rest = await Audit.list({ after: first.nextAfter });
    assert.ok(rest.entries.every((e) => e.id > (first.entries[0]?.id ?? 0)));
    assert.deepEqual((await Audit.list({ since: new Date("2999-01-01T00:00:00Z") })).entries, []);
    await assert.rejects(Audit.list({ since: "yesterday" }), InvalidArgumentError);
    const bot = await Keys.create({ name: "ts-audit-bot", scopes: ["sandboxes"] });
    await assert.rejects(Audit.list({}, { apiKey: bot.key }), PermissionDeniedError);
    await Keys.revoke(bot.id);
  } finally {
    await sandbox.kill();
  }
});
