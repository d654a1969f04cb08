"""Tenant quotas end to end against the real daemon: set, read, and a create over a quota refused with 429."""

from __future__ import annotations

import pytest

from sandpit import (
    AsyncSandbox,
    AsyncTenants,
    InvalidArgumentError,
    Keys,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    Sandbox,
    TenantQuotas,
    Tenants,
)

pytestmark = pytest.mark.usefixtures("sandpit_env")


def test_quotas_are_set_read_and_refuse_a_create(daemon) -> None:
    with Tenants() as tenants, Keys() as keys:
        t = tenants.set_quotas("py-quota", TenantQuotas(max_sandboxes=1, max_memory_mb=256))
        assert t.quotas.max_sandboxes == 1 and t.quotas.max_creates_per_second is None
        assert t.usage.sandboxes == 0
        bot = keys.create("py-quota-bot", ["sandboxes"], tenant="py-quota")
        sbx = Sandbox.create(api_key=bot.key, memory_mb=128)
        try:
            with pytest.raises(ResourceExhaustedError) as e:
                Sandbox.create(api_key=bot.key, memory_mb=64)
            assert e.value.code == "quota_exceeded" and "max_sandboxes quota (1)" in str(e.value)
            assert e.value.retry_after == 5
            # Under a memory quota a create names its memory.
            tenants.set_quotas("py-quota", TenantQuotas(max_sandboxes=5, max_memory_mb=256))
            with pytest.raises(InvalidArgumentError):
                Sandbox.create(api_key=bot.key)
            # Its own tenant reads; another is not found; setting is an admin's.
            with Tenants(api_key=bot.key) as mine:
                own = mine.get("py-quota")
                assert (own.usage.sandboxes, own.usage.memory_mb) == (1, 128)
                with pytest.raises(NotFoundError):
                    mine.get("default")
                with pytest.raises(PermissionDeniedError):
                    mine.set_quotas("py-quota", TenantQuotas())
            assert "py-quota" in [x.name for x in tenants.list()]
        finally:
            sbx.kill()
        # The rate: one create per 10 s; the second is rate_limited.
        tenants.set_quotas("py-quota", TenantQuotas(max_creates_per_second=0.1))
        first = Sandbox.create(api_key=bot.key)
        try:
            with pytest.raises(ResourceExhaustedError) as e:
                Sandbox.create(api_key=bot.key)
            assert e.value.code == "rate_limited" and e.value.retry_after is not None and 1 <= e.value.retry_after <= 10
        finally:
            first.kill()
        with pytest.raises(InvalidArgumentError):
            tenants.set_quotas("py-quota", TenantQuotas(max_creates_per_second=0))
        cleared = tenants.set_quotas("py-quota", TenantQuotas())
        assert cleared.quotas == TenantQuotas()
        keys.revoke(bot.id)


async def test_async_tenants(daemon) -> None:
    async with AsyncTenants() as tenants:
        t = await tenants.set_quotas("py-async-quota", TenantQuotas(max_sandboxes=0))
        assert t.quotas.max_sandboxes == 0
        assert (await tenants.get("py-async-quota")).name == "py-async-quota"
        await tenants.set_quotas("py-async-quota", TenantQuotas())
        # The default tenant is unaffected.
        sbx = await AsyncSandbox.create()
        await sbx.kill()
