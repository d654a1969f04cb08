"""The audit log end to end against the real daemon: who ran what, filters, pages, bad parameters."""

from __future__ import annotations

import time

import pytest

from sandpit import AsyncAudit, Audit, InvalidArgumentError, Keys, PermissionDeniedError, Sandbox

pytestmark = pytest.mark.usefixtures("sandpit_env")


def test_the_audit_log_names_who_ran_what(daemon) -> None:
    sbx = Sandbox.create()
    try:
        sbx.commands.run("echo 'audited words'")
        with Audit() as audit:
            page = audit.list(sandbox=sbx.id)
            deadline = time.monotonic() + 5
            while not any("audited words" in (e.detail or "") for e in page.entries) and time.monotonic() < deadline:
                time.sleep(0.02)  # written off the request path
                page = audit.list(sandbox=sbx.id)
            ran = [e for e in page.entries if "audited words" in (e.detail or "")]
            assert ran, page
            assert ran[0].key_id == "file" and ran[0].outcome == "ok" and ran[0].sandbox == sbx.id
            assert page.entries[0].action == "sandbox.create"
            first = audit.list(limit=1)
            assert len(first.entries) == 1 and first.next_after is not None
            rest = audit.list(after=first.next_after)
            assert all(e.id > first.entries[0].id for e in rest.entries)
            assert audit.list(since="2999-01-01T00:00:00Z").entries == []
            with pytest.raises(InvalidArgumentError):
                audit.list(since="yesterday")
            with Keys() as keys:
                bot = keys.create("py-audit-bot", ["sandboxes"])
                with pytest.raises(PermissionDeniedError), Audit(api_key=bot.key) as theirs:
                    theirs.list()
                keys.revoke(bot.id)
    finally:
        sbx.kill()


async def test_async_audit(daemon) -> None:
    async with AsyncAudit() as audit:
        page = await audit.list(limit=5)
        assert len(page.entries) <= 5
