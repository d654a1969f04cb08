"""Warm pools (``Templates.pool`` / ``set_pool``), sync and async, against a real ``isolate`` daemon (templates need
it; root only).

The module starts its own daemon and builds a tiny busybox template (as ``tests/test_snapshots.py`` does). Whether
a create was served from the pool is read inside the sandbox: a waiting sandbox's first process (pid 1) started
before the create was sent, a cold sandbox's during it (``/proc/1/stat`` against ``/proc/uptime``).
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from conftest import Daemon, DaemonProcess, build_busybox, import_root, isolate_daemon
from sandpit import (
    AsyncKeys,
    AsyncSandbox,
    AsyncTemplates,
    ConflictError,
    InvalidArgumentError,
    Keys,
    NotFoundError,
    PermissionDeniedError,
    PoolInfo,
    Sandbox,
    SandboxInfo,
    TemplateInfo,
    Templates,
    Tenants,
)

#: How long a pool may take to fill (one sandbox at a time) or empty.
FILL_S = 30.0
#: How long the test waits between a pool being full and taking from it: a pooled sandbox's pid 1 is older.
AGE_S = 1.5
#: The env, metadata and timeout every create of the module asks for; the pooled sandbox must get them.
ENV = {"POOL_VAR": "from-the-create", "OTHER": "two words"}
META = {"suite": "pools", "flavour": "python"}
TIMEOUT = 120
#: The command that shows the env, and pid 1's start time against the uptime (both in clock ticks/seconds).
PROBE = 'echo "$POOL_VAR|$OTHER"; cat /proc/uptime /proc/1/stat'
CLK_TCK = os.sysconf("SC_CLK_TCK")


@pytest.fixture(scope="module")
def process() -> Iterator[DaemonProcess]:
    """The isolate daemon's process (a test restarts it on the same port and state)."""
    needs_root = "warm pools are of templates, which need the isolate backend, which needs root"
    with isolate_daemon("sp-pool-", needs_root) as proc:
        yield proc


@pytest.fixture(scope="module")
def isolate(process: DaemonProcess) -> Daemon:
    return process.start()


def conn(d: Daemon) -> Dict[str, Any]:
    return {"url": d.url, "api_key": d.api_key}


@pytest.fixture(scope="module")
def tiny(isolate: Daemon) -> Iterator[TemplateInfo]:
    """Template ``tiny`` (busybox alone). At the end its pool is emptied whatever a test left (a failed test must
    not fail the next ones), no sandbox may be left, and it is deleted."""
    c = conn(isolate)
    with Templates(**c) as templates:
        yield build_busybox(templates, isolate, "tiny")
        templates.set_pool("tiny", 0)
        wait_pool(templates, "tiny", 0)
        assert Sandbox.list(**c) == [], "a test left a sandbox behind"
        templates.delete("tiny")


@pytest.fixture
def emptied(isolate: Daemon) -> Iterator[List[str]]:
    """Templates whose pool a test sets: emptied after it, whether it passed or not."""
    names: List[str] = []
    yield names
    with Templates(**conn(isolate)) as templates:
        for name in names:
            try:
                templates.set_pool(name, 0)
                wait_pool(templates, name, 0)
            except NotFoundError:
                pass


class PoolWait:
    """A wait for pool ``name`` to have ``ready`` sandboxes waiting and none being made, within ``timeout``
    seconds: :meth:`reached` is handed each ``pool(name)`` read in turn (by :func:`wait_pool`, :func:`await_pool`)."""

    def __init__(self, name: str, ready: int, timeout: float) -> None:
        self.name, self.ready, self.timeout = name, ready, timeout
        self.deadline = time.monotonic() + timeout
        self.seen: List[PoolInfo] = []

    def reached(self, p: PoolInfo) -> bool:
        """Whether ``p`` is what is waited for; raises once the time is up (with every distinct read seen)."""
        if not self.seen or self.seen[-1] != p:
            self.seen.append(p)
        if p.ready == self.ready and p.filling == 0:
            return True
        if time.monotonic() > self.deadline:
            raise AssertionError(
                f"pool {self.name!r} not at ready={self.ready}, filling=0 after {self.timeout} s: {self.seen}"
            )
        return False


def wait_pool(templates: Templates, name: str, ready: int, timeout: float = FILL_S) -> PoolInfo:
    """Polls ``templates.pool(name)`` until ``ready`` sandboxes wait and none is being made."""
    wait = PoolWait(name, ready, timeout)
    while not wait.reached(p := templates.pool(name)):
        time.sleep(0.1)
    return p


async def await_pool(templates: AsyncTemplates, name: str, ready: int, timeout: float = FILL_S) -> PoolInfo:
    """:func:`wait_pool` with an :class:`AsyncTemplates`."""
    wait = PoolWait(name, ready, timeout)
    while not wait.reached(p := await templates.pool(name)):
        await asyncio.sleep(0.1)
    return p


def pid1_age(probe: str) -> float:
    """Seconds pid 1 had run when :data:`PROBE` printed ``probe`` (its 2nd line is ``/proc/uptime``, its 3rd
    ``/proc/1/stat``, whose 22nd field is the start time in clock ticks since boot)."""
    lines = probe.splitlines()
    uptime = float(lines[1].split()[0])
    after_comm = lines[2].rsplit(")", 1)[1].split()  # fields 3 ... of /proc/1/stat
    return uptime - int(after_comm[19]) / CLK_TCK


def check_created(info: SandboxInfo, probe: str, before: datetime, after: datetime) -> None:
    """What a create of :data:`ENV`, :data:`META`, :data:`TIMEOUT`, ``on_timeout="pause"`` must give, pooled or
    cold: the env in its commands, the metadata, and a deadline counted from the create."""
    assert probe.splitlines()[0] == f"{ENV['POOL_VAR']}|{ENV['OTHER']}", probe
    assert (info.template, info.state, info.tenant) == ("tiny", "running", "default")
    assert info.metadata == META
    assert info.on_timeout == "pause"
    assert {k: info.env.get(k) for k in ENV} == ENV, info.env
    assert info.created_at is not None and info.expires_at is not None
    slack = timedelta(seconds=1)
    assert before - slack <= info.created_at <= after + slack, (before, info.created_at, after)
    assert abs(info.expires_at - info.created_at - timedelta(seconds=TIMEOUT)) <= slack, info
    assert (info.cpu, info.memory_mb, info.pids, info.disk_mb) == (None, None, None, None)


def create_and_probe(c: Dict[str, Any], **kw: Any) -> Tuple[Sandbox, SandboxInfo, str, float, datetime, datetime]:
    """Creates a ``tiny`` sandbox with ``kw``, runs :data:`PROBE` in it; the sandbox, its info, the probe's output,
    the seconds from before the create to after the probe, and the wall clock before the create and after it."""
    before = datetime.now(timezone.utc)
    start = time.monotonic()
    sbx = Sandbox.create("tiny", **kw, **c)
    after = datetime.now(timezone.utc)
    try:
        r = sbx.commands.run(PROBE)
        assert r.exit_code == 0, r
        return sbx, sbx.info(), r.stdout, time.monotonic() - start, before, after
    except BaseException:
        sbx.kill()
        raise


def test_a_pool_fills_and_serves_a_create(isolate: Daemon, tiny: TemplateInfo, emptied: List[str]) -> None:
    c = conn(isolate)
    emptied.append("tiny")
    with Templates(**c) as templates, Tenants(**c) as tenants:
        assert templates.pool("tiny") == PoolInfo("tiny", 0, 0, 0)

        # Cold first (no pool): what a create of env, metadata and timeout gives; pid 1 starts during it.
        cold, info, probe, elapsed, before, after = create_and_probe(
            c, env=ENV, metadata=META, timeout=TIMEOUT, on_timeout="pause"
        )
        with cold:
            check_created(info, probe, before, after)
            assert pid1_age(probe) <= elapsed + 0.05, (pid1_age(probe), elapsed)
        assert Sandbox.list(**c) == []

        set_to = templates.set_pool("tiny", 2)
        assert isinstance(set_to, PoolInfo)
        assert (set_to.template, set_to.size) == ("tiny", 2) and set_to.ready + set_to.filling <= 2, set_to
        full = wait_pool(templates, "tiny", 2)
        assert full == PoolInfo("tiny", 2, 2, 0)

        # Waiting sandboxes are in no list and count toward no tenant.
        assert Sandbox.list(**c) == []
        assert tenants.get("default").usage.sandboxes == 0

        time.sleep(AGE_S)
        warm, info, probe, elapsed, before, after = create_and_probe(
            c, env=ENV, metadata=META, timeout=TIMEOUT, on_timeout="pause"
        )
        with warm:
            right_after = templates.pool("tiny")
            assert right_after.size == 2 and right_after.ready + right_after.filling == 2, right_after
            # Served from the pool: its pid 1 was up before the create was sent, ...
            assert pid1_age(probe) >= AGE_S + elapsed - 0.05, (pid1_age(probe), elapsed)
            # ... and it got the create's env, metadata and deadline all the same.
            check_created(info, probe, before, after)
            assert [s.id for s in Sandbox.list(**c)] == [warm.id]
            assert Sandbox.list(metadata={"suite": "pools"}, **c)[0].id == warm.id
            assert tenants.get("default").usage.sandboxes == 1
            assert wait_pool(templates, "tiny", 2) == full, "the pool refills"
            assert [s.id for s in Sandbox.list(**c)] == [warm.id], "the refill is not listed"

            # A create naming a limit is made cold: the pool keeps its sandboxes.
            time.sleep(AGE_S)
            for limits in ({"memory_mb": 256}, {"pids": 128}):
                limited, linfo, lprobe, lelapsed, _, _ = create_and_probe(c, env=ENV, **limits)
                with limited:
                    assert templates.pool("tiny") == full, limits
                    assert pid1_age(lprobe) <= lelapsed + 0.05, (limits, pid1_age(lprobe), lelapsed)
                    assert lprobe.splitlines()[0] == f"{ENV['POOL_VAR']}|{ENV['OTHER']}"
                    assert (linfo.memory_mb, linfo.pids) == (limits.get("memory_mb"), limits.get("pids")), linfo
                assert templates.pool("tiny") == full
        assert Sandbox.list(**c) == []

        # Size 0 removes the pool: its sandboxes go, and a create is cold again, with the same result.
        emptied_to = templates.set_pool("tiny", 0)
        assert (emptied_to.template, emptied_to.size) == ("tiny", 0)
        assert wait_pool(templates, "tiny", 0) == PoolInfo("tiny", 0, 0, 0)
        time.sleep(AGE_S)
        again, info, probe, elapsed, before, after = create_and_probe(
            c, env=ENV, metadata=META, timeout=TIMEOUT, on_timeout="pause"
        )
        with again:
            check_created(info, probe, before, after)
            assert pid1_age(probe) <= elapsed + 0.05, (pid1_age(probe), elapsed)
        assert Sandbox.list(**c) == [] and templates.pool("tiny") == PoolInfo("tiny", 0, 0, 0)


def test_pool_refusals_and_a_template_with_a_pool_is_not_deleted(
    isolate: Daemon, tiny: TemplateInfo, emptied: List[str]
) -> None:
    c = conn(isolate)
    emptied += ["tiny", "py-pool-del"]
    with Templates(**c) as templates, Keys(**c) as keys:
        # Any key reads a pool; only an admin key sets one.
        bot = keys.create("py-pool-bot", ["sandboxes"])
        try:
            with Templates(url=isolate.url, api_key=bot.key) as theirs:
                assert theirs.pool("tiny") == PoolInfo("tiny", 0, 0, 0)
                with pytest.raises(PermissionDeniedError) as denied:
                    theirs.set_pool("tiny", 1)
                assert (denied.value.status_code, denied.value.code) == (403, "permission_denied")
                assert "admin" in denied.value.message
        finally:
            keys.revoke(bot.id)
        assert templates.pool("tiny").size == 0, "a refused set changed nothing"

        with pytest.raises(InvalidArgumentError) as big:
            templates.set_pool("tiny", 257)
        assert (big.value.status_code, big.value.code) == (400, "invalid_argument")
        assert "257" in big.value.message
        with pytest.raises(InvalidArgumentError) as negative:
            templates.set_pool("tiny", -1)
        assert negative.value.status_code == 400
        with pytest.raises(InvalidArgumentError) as bad_name:
            templates.set_pool("Bad Name", 1)
        assert bad_name.value.status_code == 400
        with pytest.raises(NotFoundError) as unknown:
            templates.set_pool("py-no-such-template", 1)
        assert (unknown.value.status_code, unknown.value.code) == (404, "not_found")
        assert templates.pool("py-no-such-template") == PoolInfo("py-no-such-template", 0, 0, 0)
        assert templates.pool("tiny") == PoolInfo("tiny", 0, 0, 0)

        # A template with a pool is not deleted until its size is 0; then it is.
        templates.create("py-pool-del", {"dir": str(import_root(isolate) / "tiny")})
        templates.wait("py-pool-del", timeout=120)
        assert templates.set_pool("py-pool-del", 1).size == 1
        wait_pool(templates, "py-pool-del", 1)
        with pytest.raises(ConflictError) as busy:
            templates.delete("py-pool-del")
        assert (busy.value.status_code, busy.value.code) == (409, "conflict")
        assert templates.get("py-pool-del").name == "py-pool-del"
        assert Sandbox.list(**c) == []
        templates.set_pool("py-pool-del", 0)
        wait_pool(templates, "py-pool-del", 0)
        templates.delete("py-pool-del")
        with pytest.raises(NotFoundError):
            templates.get("py-pool-del")
        assert templates.pool("py-pool-del") == PoolInfo("py-pool-del", 0, 0, 0)


def test_a_pooled_sandbox_gets_the_tenant_of_the_key(isolate: Daemon, tiny: TemplateInfo, emptied: List[str]) -> None:
    c = conn(isolate)
    emptied.append("tiny")
    with Templates(**c) as templates, Keys(**c) as keys:
        templates.set_pool("tiny", 1)
        full = wait_pool(templates, "tiny", 1)
        bot = keys.create("py-pool-team-bot", ["sandboxes"], tenant="py-pool-team")
        try:
            mine = {"url": isolate.url, "api_key": bot.key}
            time.sleep(AGE_S)
            sbx, info, probe, elapsed, _, _ = create_and_probe(mine, env=ENV, metadata=META)
            with sbx:
                assert pid1_age(probe) >= AGE_S + elapsed - 0.05, "served from the pool"
                assert info.tenant == "py-pool-team" and info.metadata == META
                assert [s.id for s in Sandbox.list(**mine)] == [sbx.id]
                assert wait_pool(templates, "tiny", 1) == full
                assert [s.id for s in Sandbox.list(**mine)] == [sbx.id], "the refill is not the tenant's"
        finally:
            keys.revoke(bot.id)
        templates.set_pool("tiny", 0)
        wait_pool(templates, "tiny", 0)


def test_a_pool_survives_a_restart(
    process: DaemonProcess, isolate: Daemon, tiny: TemplateInfo, emptied: List[str]
) -> None:
    c = conn(isolate)
    emptied.append("tiny")
    with Templates(**c) as templates:
        templates.set_pool("tiny", 1)
        wait_pool(templates, "tiny", 1)
    process.stop()
    assert process.start().url == isolate.url
    with Templates(**c) as templates:
        assert templates.pool("tiny").size == 1
        wait_pool(templates, "tiny", 1)
        assert Sandbox.list(**c) == []
        with Sandbox.create("tiny", env=ENV, **c) as sbx:
            assert sbx.commands.run("echo $POOL_VAR").stdout == ENV["POOL_VAR"] + "\n"
            now = templates.pool("tiny")
            assert now.size == 1 and now.ready + now.filling == 1, now
        templates.set_pool("tiny", 0)
        assert wait_pool(templates, "tiny", 0) == PoolInfo("tiny", 0, 0, 0)


async def test_async_pool(isolate: Daemon, tiny: TemplateInfo, emptied: List[str]) -> None:
    c = conn(isolate)
    emptied.append("tiny")
    async with AsyncTemplates(**c) as templates, AsyncKeys(**c) as keys:
        assert await templates.pool("tiny") == PoolInfo("tiny", 0, 0, 0)
        set_to = await templates.set_pool("tiny", 2)
        assert (set_to.template, set_to.size) == ("tiny", 2)
        full = await await_pool(templates, "tiny", 2)
        assert full == PoolInfo("tiny", 2, 2, 0)
        assert await AsyncSandbox.list(**c) == []

        await asyncio.sleep(AGE_S)
        before = datetime.now(timezone.utc)
        start = time.monotonic()
        async with AsyncSandbox.create(
            "tiny", env=ENV, metadata=META, timeout=TIMEOUT, on_timeout="pause", **c
        ) as warm:
            after = datetime.now(timezone.utc)
            right_after = await templates.pool("tiny")
            assert right_after.size == 2 and right_after.ready + right_after.filling == 2, right_after
            r = await warm.commands.run(PROBE)
            elapsed = time.monotonic() - start
            assert r.exit_code == 0, r
            assert pid1_age(r.stdout) >= AGE_S + elapsed - 0.05, (pid1_age(r.stdout), elapsed)
            check_created(await warm.info(), r.stdout, before, after)
            assert [s.id for s in await AsyncSandbox.list(**c)] == [warm.id]
            assert await await_pool(templates, "tiny", 2) == full

            async with AsyncSandbox.create("tiny", memory_mb=256, **c) as limited:
                assert await templates.pool("tiny") == full
                assert (await limited.info()).memory_mb == 256
            async with AsyncSandbox.create("tiny", pids=128, **c):
                assert await templates.pool("tiny") == full

        bot = await keys.create("py-pool-async-bot", ["sandboxes"])
        try:
            async with AsyncTemplates(url=isolate.url, api_key=bot.key) as theirs:
                assert (await theirs.pool("tiny")).size == 2
                with pytest.raises(PermissionDeniedError) as denied:
                    await theirs.set_pool("tiny", 0)
                assert denied.value.status_code == 403
        finally:
            await keys.revoke(bot.id)
        with pytest.raises(InvalidArgumentError) as big:
            await templates.set_pool("tiny", 257)
        assert big.value.status_code == 400
        with pytest.raises(NotFoundError) as unknown:
            await templates.set_pool("py-no-such-template", 2)
        assert unknown.value.status_code == 404
        with pytest.raises(ConflictError) as busy:
            await templates.delete("tiny")
        assert busy.value.status_code == 409

        emptied_to = await templates.set_pool("tiny", 0)
        assert emptied_to.size == 0
        assert await await_pool(templates, "tiny", 0) == PoolInfo("tiny", 0, 0, 0)
        assert await AsyncSandbox.list(**c) == []
