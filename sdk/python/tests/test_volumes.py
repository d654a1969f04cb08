"""Volumes, sync and async, against a real ``isolate`` daemon (volumes need it; root only).

The module starts its own daemon and builds a tiny busybox template (as ``tests/test_snapshots.py`` does): commands
run as ``user`` (uid 1000) unless they say ``user="root"``; only ``sh echo cat sleep seq id true`` have applet
links, the rest is called as ``busybox <applet>``. The last test needs no root: a ``process`` daemon refuses
volumes.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional

import pytest

from conftest import Daemon, build_busybox, isolate_daemon
from sandpit import (
    AsyncSandbox,
    AsyncVolumes,
    ConflictError,
    InvalidArgumentError,
    Keys,
    NotFoundError,
    Sandbox,
    SandboxError,
    TemplateInfo,
    Templates,
    VolumeInfo,
    VolumeMount,
    Volumes,
)


@pytest.fixture(scope="module")
def isolate() -> Iterator[Daemon]:
    with isolate_daemon("sp-vol-", "volumes need the isolate backend, which needs root") as process:
        yield process.start()


def conn(d: Daemon) -> Dict[str, Any]:
    return {"url": d.url, "api_key": d.api_key}


@pytest.fixture(scope="module")
def tiny(isolate: Daemon) -> Iterator[TemplateInfo]:
    """Template ``tiny`` (busybox alone); at the end, no test may have left a volume or a sandbox behind."""
    c = conn(isolate)
    with Templates(**c) as templates:
        yield build_busybox(templates, isolate, "tiny")
        with Volumes(**c) as volumes:
            assert volumes.list() == [], "a test left a volume behind"
        assert Sandbox.list(**c) == [], "a test left a sandbox behind"
        templates.delete("tiny")


@pytest.fixture
def made(isolate: Daemon) -> Iterator[List[str]]:
    """Volumes a test makes: whichever are still there after it (it failed before deleting them) are deleted,
    with the sandboxes mounting them, so that one failure does not fail the next tests too."""
    names: List[str] = []
    yield names
    c = conn(isolate)
    with Volumes(**c) as volumes:
        for name in names:
            try:
                for sid in volumes.get(name).mounted_by:
                    try:
                        Sandbox.connect(sid, **c).kill()
                    except SandboxError:
                        pass
                volumes.delete(name)
            except NotFoundError:
                pass


def sh(sbx: Sandbox, cmd: str, user: Optional[str] = None) -> str:
    """Runs ``cmd``, asserting exit 0; its stdout."""
    r = sbx.commands.run(cmd, user=user)
    assert r.exit_code == 0, f"{cmd}: exit {r.exit_code}: {r.stdout}{r.stderr}"
    return r.stdout


def fails(sbx: Sandbox, cmd: str, user: Optional[str] = None) -> str:
    """Runs ``cmd``, asserting it fails; its stderr."""
    r = sbx.commands.run(cmd, user=user)
    assert r.exit_code != 0, f"{cmd}: succeeded: {r.stdout}"
    return r.stderr


async def ash(sbx: AsyncSandbox, cmd: str, user: Optional[str] = None) -> str:
    """:func:`sh` for an :class:`AsyncSandbox`."""
    r = await sbx.commands.run(cmd, user=user)
    assert r.exit_code == 0, f"{cmd}: exit {r.exit_code}: {r.stdout}{r.stderr}"
    return r.stdout


def test_two_sandboxes_share_a_volume(isolate: Daemon, tiny: TemplateInfo, made: List[str]) -> None:
    c = conn(isolate)
    made.append("py-vol")
    with Volumes(**c) as volumes:
        vol = volumes.create("py-vol", 16)
        assert isinstance(vol, VolumeInfo)
        assert (vol.name, vol.size_mb, vol.tenant, vol.mounted_by) == ("py-vol", 16, "default", [])
        assert vol.created_at is not None and 0 <= vol.used_mb < 16
        assert [v.name for v in volumes.list()] == ["py-vol"]
        assert volumes.get("py-vol") == vol

        rw = VolumeMount("py-vol", "/data")
        ro = {"name": "py-vol", "path": "/mnt/ro", "read_only": True}  # a plain dict works too
        with Sandbox.create("tiny", volumes=[rw], **c) as a, Sandbox.create("tiny", volumes=[ro], **c) as b:
            assert a.info().volumes == [VolumeMount("py-vol", "/data", read_only=False)]
            assert b.info().volumes == [VolumeMount("py-vol", "/mnt/ro", read_only=True)]
            assert sorted(volumes.get("py-vol").mounted_by) == sorted([a.id, b.id])

            # The volume's root is the user's; what the user writes in one sandbox the other sees at once.
            assert sh(a, "busybox stat -c %U:%G /data") == "user:user\n"
            sh(a, "echo hello > /data/hello.txt")
            assert sh(b, "cat /mnt/ro/hello.txt") == "hello\n"
            assert sh(b, "busybox stat -c %U:%G /mnt/ro/hello.txt") == "user:user\n"
            sh(a, "echo again >> /data/hello.txt")
            assert sh(b, "cat /mnt/ro/hello.txt") == "hello\nagain\n"

            # Read-only is read-only, for root too; the read-write mount is still writable.
            for user in (None, "root"):
                assert "Read-only file system" in fails(b, "echo x > /mnt/ro/other.txt", user=user)
            assert "Read-only file system" in fails(b, "busybox rm /mnt/ro/hello.txt")
            assert sh(a, "cat /data/hello.txt") == "hello\nagain\n"

            # The size is a hard cap; what was written up to it is counted, and freed by a delete.
            assert "No space left" in fails(a, "busybox dd if=/dev/zero of=/data/big bs=1M count=32")
            full = volumes.get("py-vol")
            assert 8 <= full.used_mb <= 16, full
            sh(a, "busybox rm /data/big")
            assert volumes.get("py-vol").used_mb < full.used_mb
            sh(a, "busybox dd if=/dev/zero of=/data/small bs=1M count=2 && busybox rm /data/small")

            with pytest.raises(ConflictError) as busy:
                volumes.delete("py-vol")
            assert (busy.value.status_code, busy.value.code) == (409, "conflict")

        # Both gone: nobody mounts it, and its files are still there for the next sandbox.
        assert volumes.get("py-vol").mounted_by == []
        with Sandbox.create("tiny", volumes=[VolumeMount("py-vol", "/srv/vol")], **c) as third:
            assert sh(third, "cat /srv/vol/hello.txt") == "hello\nagain\n"
            assert sh(third, "busybox stat -c %U /srv/vol/hello.txt") == "user\n"
            assert volumes.get("py-vol").mounted_by == [third.id]

        volumes.delete("py-vol")
        with pytest.raises(NotFoundError) as gone:
            volumes.get("py-vol")
        assert gone.value.status_code == 404
        assert volumes.list() == []
        with pytest.raises(NotFoundError):
            volumes.delete("py-vol")


def test_bad_requests_are_refused(isolate: Daemon, tiny: TemplateInfo, made: List[str]) -> None:
    c = conn(isolate)
    made.append("py-vol-bad")
    with Volumes(**c) as volumes:
        volumes.create("py-vol-bad", 32)
        with pytest.raises(ConflictError) as taken:
            volumes.create("py-vol-bad", 32)
        assert taken.value.status_code == 409
        for name, size in (("Bad Name", 16), (".hidden", 16), ("x" * 65, 16), ("py-small", 15), ("py-huge", 1 << 21)):
            with pytest.raises(InvalidArgumentError) as bad:
                volumes.create(name, size)
            assert bad.value.status_code == 400, (name, size)

        def refused(mounts: List[Any]) -> SandboxError:
            with pytest.raises(SandboxError) as e:
                Sandbox.create("tiny", volumes=mounts, **c)
            return e.value

        for path in ("/proc/x", "/", "relative", "/sys/x", "/dev/shm", "/run/sandpit/x", "/.sandpit", "/a/../b"):
            err = refused([VolumeMount("py-vol-bad", path)])
            assert isinstance(err, InvalidArgumentError) and err.status_code == 400, (path, err)
        twice = refused([VolumeMount("py-vol-bad", "/a"), VolumeMount("py-vol-bad", "/a", read_only=True)])
        assert isinstance(twice, InvalidArgumentError) and twice.status_code == 400
        unknown = refused([VolumeMount("py-no-such-volume", "/data")])
        assert isinstance(unknown, NotFoundError) and unknown.status_code == 404
        assert "py-no-such-volume" in unknown.message
        # A dict goes as it is: a misspelt key is the daemon's to refuse, not the SDK's to drop.
        misspelt = refused([{"name": "py-vol-bad", "path": "/data", "readOnly": True}])
        assert isinstance(misspelt, InvalidArgumentError) and misspelt.status_code == 400
        too_many = refused([VolumeMount("py-vol-bad", f"/v{i}") for i in range(17)])
        assert isinstance(too_many, InvalidArgumentError) and too_many.status_code == 400
        with pytest.raises(TypeError):
            Sandbox.create("tiny", volumes=VolumeMount("py-vol-bad", "/data"), **c)  # type: ignore[arg-type]

        assert Sandbox.list(**c) == [] and volumes.get("py-vol-bad").mounted_by == []
        volumes.delete("py-vol-bad")


def test_a_fork_mounts_the_volumes_it_is_given(isolate: Daemon, tiny: TemplateInfo, made: List[str]) -> None:
    c = conn(isolate)
    made.append("py-vol-fork")
    with Volumes(**c) as volumes:
        volumes.create("py-vol-fork", 16)
        with Sandbox.create("tiny", volumes=[VolumeMount("py-vol-fork", "/data")], **c) as src:
            sh(src, "echo from-src > /data/f.txt")
            with src.fork(count=2, volumes=[VolumeMount("py-vol-fork", "/shared", read_only=True)]) as fork:
                assert len(fork.sandboxes) == 2
                for f in fork.sandboxes:
                    assert f.info().volumes == [VolumeMount("py-vol-fork", "/shared", read_only=True)]
                    assert sh(f, "cat /shared/f.txt") == "from-src\n"
                    assert "Read-only file system" in fails(f, "echo x > /shared/g.txt")
                ids = {src.id, *(f.id for f in fork.sandboxes)}
                assert set(volumes.get("py-vol-fork").mounted_by) == ids
                sh(src, "echo later > /data/f.txt")  # shared, not copied
                assert sh(fork.sandboxes[0], "cat /shared/f.txt") == "later\n"
            assert volumes.get("py-vol-fork").mounted_by == [src.id]

            # Without volumes=, a fork mounts none: the source's are not carried over.
            with src.fork() as plain:
                assert plain.sandboxes[0].info().volumes == []
                assert volumes.get("py-vol-fork").mounted_by == [src.id]
            with pytest.raises(NotFoundError):
                src.fork(volumes=[VolumeMount("py-no-such-volume", "/data")])
            with pytest.raises(InvalidArgumentError):
                src.fork(volumes=[VolumeMount("py-vol-fork", "/proc/x")])
            assert [s.id for s in Sandbox.list(**c)] == [src.id]
        volumes.delete("py-vol-fork")


def test_a_volume_is_its_tenants(isolate: Daemon, tiny: TemplateInfo, made: List[str]) -> None:
    c = conn(isolate)
    made += ["py-vol-mine", "py-vol-theirs"]
    with Volumes(**c) as volumes, Keys(**c) as keys:
        volumes.create("py-vol-mine", 16)
        bot = keys.create("py-vol-bot", ["sandboxes"], tenant="py-vol-other")
        try:
            with Volumes(url=isolate.url, api_key=bot.key) as theirs:
                assert theirs.list() == []
                with pytest.raises(NotFoundError):
                    theirs.get("py-vol-mine")
                with pytest.raises(NotFoundError):
                    Sandbox.create("tiny", volumes=[VolumeMount("py-vol-mine", "/data")], url=isolate.url,
                                   api_key=bot.key)
                own = theirs.create("py-vol-theirs", 16)
                assert own.tenant == "py-vol-other"
                assert [v.name for v in theirs.list()] == ["py-vol-theirs"]
            # The admin key sees every tenant's.
            assert sorted(v.name for v in volumes.list()) == ["py-vol-mine", "py-vol-theirs"]
        finally:
            keys.revoke(bot.id)
        volumes.delete("py-vol-theirs")
        volumes.delete("py-vol-mine")


async def test_async_volumes(isolate: Daemon, tiny: TemplateInfo, made: List[str]) -> None:
    c = conn(isolate)
    made.append("py-vol-async")
    async with AsyncVolumes(**c) as volumes:
        vol = await volumes.create("py-vol-async", 24)
        assert (vol.name, vol.size_mb, vol.mounted_by) == ("py-vol-async", 24, [])
        assert [v.name for v in await volumes.list()] == ["py-vol-async"]

        mounts = [VolumeMount("py-vol-async", "/data")]
        async with AsyncSandbox.create("tiny", volumes=mounts, **c) as a:
            async with AsyncSandbox.create(
                "tiny", volumes=[{"name": "py-vol-async", "path": "/ro", "read_only": True}], **c
            ) as b:
                assert (await a.info()).volumes == mounts
                assert (await b.info()).volumes == [VolumeMount("py-vol-async", "/ro", read_only=True)]
                await ash(a, "echo async > /data/a.txt")
                assert await ash(b, "cat /ro/a.txt") == "async\n"
                assert await ash(b, "busybox stat -c %U /ro/a.txt") == "user\n"
                r = await b.commands.run("echo x > /ro/b.txt")
                assert r.exit_code != 0 and "Read-only file system" in r.stderr
                r = await a.commands.run("busybox dd if=/dev/zero of=/data/big bs=1M count=48")
                assert r.exit_code != 0 and "No space left" in r.stderr
                await ash(a, "busybox rm /data/big")
                assert sorted((await volumes.get("py-vol-async")).mounted_by) == sorted([a.id, b.id])
                with pytest.raises(ConflictError) as busy:
                    await volumes.delete("py-vol-async")
                assert busy.value.status_code == 409

            async with a.fork(volumes=[VolumeMount("py-vol-async", "/f")]) as fork:
                f = fork.sandboxes[0]
                assert (await f.info()).volumes == [VolumeMount("py-vol-async", "/f")]
                assert await ash(f, "cat /f/a.txt") == "async\n"
                await ash(f, "echo fork > /f/from-fork.txt")
            assert await ash(a, "cat /data/from-fork.txt") == "fork\n"

            with pytest.raises(InvalidArgumentError) as bad:
                await AsyncSandbox.create("tiny", volumes=[VolumeMount("py-vol-async", "/proc/x")], **c)
            assert bad.value.status_code == 400
            with pytest.raises(NotFoundError):
                await AsyncSandbox.create("tiny", volumes=[VolumeMount("py-no-such-volume", "/x")], **c)

        assert (await volumes.get("py-vol-async")).mounted_by == []
        async with AsyncSandbox.create("tiny", volumes=[VolumeMount("py-vol-async", "/again")], **c) as d:
            assert await ash(d, "cat /again/a.txt /again/from-fork.txt") == "async\nfork\n"
        await volumes.delete("py-vol-async")
        with pytest.raises(NotFoundError):
            await volumes.get("py-vol-async")


def test_the_process_backend_has_no_volumes(daemon: Daemon) -> None:
    c = conn(daemon)
    with Volumes(**c) as volumes:
        for call in (lambda: volumes.create("py-vol", 16), volumes.list, lambda: volumes.get("py-vol")):
            with pytest.raises(ConflictError) as e:
                call()
            assert e.value.status_code == 409 and "isolate" in e.value.message
    with pytest.raises(ConflictError) as e:
        Sandbox.create(volumes=[VolumeMount("py-vol", "/data")], **c)
    assert "isolate" in e.value.message
