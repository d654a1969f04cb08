"""API keys end to end against the real daemon: made, scoped, listed, revoked; tenants see only their own."""

from __future__ import annotations

import pytest

from sandpit import (
    AsyncKeys,
    AsyncSandbox,
    AuthenticationError,
    InvalidArgumentError,
    Keys,
    NotFoundError,
    PermissionDeniedError,
    Sandbox,
)

pytestmark = pytest.mark.usefixtures("sandpit_env")


def test_keys_are_made_scoped_listed_and_revoked(daemon) -> None:
    with Keys() as keys:
        reader = keys.create("py-reader", ["read"])
        bot = keys.create("py-bot", ["sandboxes"], tenant="py-team", expires_in=3600)
        assert bot.key.startswith(f"sp_{bot.id}_")
        assert bot.tenant == "py-team" and bot.scopes == ["sandboxes"] and bot.expires_at is not None
        listed = {k.id: k for k in keys.list()}
        assert reader.id in listed and bot.id in listed
        assert listed[bot.id].name == "py-bot"
        assert not hasattr(listed[bot.id], "key"), "a listed key carries no secret"

        # A read key lists but cannot create.
        Sandbox.list(api_key=reader.key)
        with pytest.raises(PermissionDeniedError) as e:
            Sandbox.create(api_key=reader.key)
        assert "scope" in str(e.value)

        # A sandboxes key creates and runs, in its own tenant, but cannot manage keys.
        sbx = Sandbox.create(api_key=bot.key)
        try:
            assert sbx.info().tenant == "py-team"
            assert sbx.commands.run("echo hi").stdout == "hi\n"
            with pytest.raises(PermissionDeniedError):
                Keys(api_key=bot.key).list()
            # The default tenant's read key does not see py-team's sandbox.
            assert sbx.id not in [s.id for s in Sandbox.list(api_key=reader.key)]
            assert sbx.id in [s.id for s in Sandbox.list(api_key=bot.key)]
        finally:
            sbx.kill()

        # A sandbox's access token opens that sandbox only; rotation ends the old one.
        own = Sandbox.create()
        try:
            token = own.access_token
            assert token is not None and token.startswith(f"spa_{own.id}_")
            scoped = Sandbox.connect(own.id, api_key=token)
            assert scoped.commands.run("echo scoped").stdout == "scoped\n"
            with pytest.raises(PermissionDeniedError):
                Sandbox.list(api_key=token)
            fresh = own.rotate_access_token()
            assert fresh != token and own.access_token == fresh
            with pytest.raises(AuthenticationError):
                scoped.info()
            assert Sandbox.connect(own.id, api_key=fresh).info().id == own.id
        finally:
            own.kill()

        # Revocation: the very next call is refused.
        keys.revoke(bot.id)
        with pytest.raises(AuthenticationError):
            Sandbox.list(api_key=bot.key)
        with pytest.raises(NotFoundError):
            keys.revoke("k_nope")
        with pytest.raises(InvalidArgumentError):
            keys.create("bad name", ["read"])
        with pytest.raises(InvalidArgumentError):
            keys.create("x", ["root"])
        keys.revoke(reader.id)


async def test_async_keys(daemon) -> None:
    async with AsyncKeys() as keys:
        made = await keys.create("py-async", ["sandboxes"])
        assert made.id in [k.id for k in await keys.list()]
        sbx = await AsyncSandbox.create(api_key=made.key)
        try:
            assert (await sbx.commands.run("echo ok")).stdout == "ok\n"
        finally:
            await sbx.kill()
        await keys.revoke(made.id)
        with pytest.raises(AuthenticationError):
            await AsyncSandbox.list(api_key=made.key)
