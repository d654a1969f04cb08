"""Templates, snapshots and forks, sync and async, against a real ``isolate`` daemon (templates need it; root only).

The module starts its own daemon with an ``--import-root`` and builds a tiny busybox template from a directory
with the SDK (the default ``base`` template is the host's whole ``/usr``: too big to export in a test). Commands
run as ``user`` unless they say ``user="root"``; only ``sh echo cat sleep seq id true`` have applet links, the
rest is called as ``busybox <applet>``.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest

from conftest import Daemon, busybox_rootfs, import_root, isolate_daemon
from sandpit import (
    AsyncForkResult,
    AsyncSandbox,
    AsyncTemplates,
    ConflictError,
    ForkResult,
    InvalidArgumentError,
    Keys,
    NotFoundError,
    PermissionDeniedError,
    Sandbox,
    SnapshotInfo,
    StreamError,
    TemplateBuildError,
    TemplateInfo,
    Templates,
)

#: A 1 MiB file of random bytes in the user's home, and its checksum line.
BLOB = "busybox dd if=/dev/urandom of=/home/user/blob bs=64k count=16 2>/dev/null && busybox sha256sum /home/user/blob"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
#: An upload the daemon refuses (a name taken) is large: the daemon reads it to its end before answering, so that a
#: client still sending gets the answer rather than a reset connection, and the connection stays usable.
LARGE_BODY = ZSTD_MAGIC + b"\x00" * (16 << 20)


@pytest.fixture(scope="module")
def isolate() -> Iterator[Daemon]:
    needs_root = "templates, snapshots and forks need the isolate backend, which needs root"
    with isolate_daemon("sp-snap-", needs_root) as process:
        yield process.start()


@pytest.fixture(scope="module")
def imports(isolate: Daemon) -> Path:
    """The daemon's ``--import-root``: where the template directories are made."""
    return import_root(isolate)


def conn(d: Daemon) -> Dict[str, Any]:
    return {"url": d.url, "api_key": d.api_key}


@pytest.fixture(scope="module")
def tiny(isolate: Daemon, imports: Path) -> Iterator[TemplateInfo]:
    """Template ``tiny``, built with ``Templates.create`` + ``wait``; deleted at the end (so every test must
    have deleted what it made from it)."""
    with Templates(**conn(isolate)) as templates:
        build = templates.create("tiny", {"dir": busybox_rootfs(imports / "tiny")})
        assert (build.name, build.state, build.source) == ("tiny", "building", {"dir": str(imports / "tiny")})
        lines: List[str] = []
        info = templates.wait("tiny", lines.append, timeout=120)
        assert (info.name, info.parent, info.tenant, info.auto_remove) == ("tiny", None, None, False)
        assert info.source and info.created_at is not None
        assert lines, "the build's progress lines reach the callback"
        assert templates.build_status("tiny").state == "ready"
        yield info
        templates.delete("tiny")
        assert [t.name for t in templates.list() if t.name != "base"] == [], "a test left a template behind"
        assert Sandbox.list(**conn(isolate)) == [], "a test left a sandbox behind"


@pytest.fixture
def made(isolate: Daemon) -> Iterator[List[str]]:
    """Templates a test makes: whichever are still there after it (it failed before deleting them) are deleted,
    newest first, so that one failure does not fail the next tests too."""
    names: List[str] = []
    yield names
    with Templates(**conn(isolate)) as templates:
        for name in reversed(names):
            try:
                templates.delete(name)
            except (NotFoundError, ConflictError):
                pass


def sh(sbx: Sandbox, cmd: str, user: Optional[str] = None) -> str:
    """Runs ``cmd``, asserting exit 0; its stdout."""
    r = sbx.commands.run(cmd, user=user)
    assert r.exit_code == 0, f"{cmd}: exit {r.exit_code}: {r.stdout}{r.stderr}"
    return r.stdout


async def ash(sbx: AsyncSandbox, cmd: str, user: Optional[str] = None) -> str:
    """:func:`sh` for an :class:`AsyncSandbox`."""
    r = await sbx.commands.run(cmd, user=user)
    assert r.exit_code == 0, f"{cmd}: exit {r.exit_code}: {r.stdout}{r.stderr}"
    return r.stdout


def missing(sbx: Sandbox, path: str) -> bool:
    r = sbx.commands.run(f"cat {path}")
    return r.exit_code != 0 and "No such file" in r.stderr


async def amissing(sbx: AsyncSandbox, path: str) -> bool:
    r = await sbx.commands.run(f"cat {path}")
    return r.exit_code != 0 and "No such file" in r.stderr


def test_a_snapshot_holds_what_was_written_before_it(isolate: Daemon, tiny: TemplateInfo, made: List[str]) -> None:
    c = conn(isolate)
    made.append("py-snap")
    with Templates(**c) as templates:
        with Sandbox.create("tiny", **c) as a:
            sh(a, "echo mine > /home/user/before.txt")
            checksum = sh(a, BLOB)
            sh(a, "echo changed > /etc/motd", user="root")
            snap = a.snapshot("py-snap")
            assert isinstance(snap, SnapshotInfo)
            t = snap.template
            assert (t.name, t.parent, t.tenant, t.auto_remove) == ("py-snap", "tiny", "default", False)
            assert snap.bytes >= 1 << 20 and snap.entries >= 3 and snap.frozen_ms >= 0
            assert a.info().state == "running"
            sh(a, "echo later > /home/user/after.txt")  # not in the snapshot
            assert templates.get("py-snap") == t
            assert "py-snap" in [x.name for x in templates.list()]

            with Sandbox.create("py-snap", **c) as b:
                assert b.info().template == "py-snap"
                assert sh(b, "cat /home/user/before.txt /etc/motd") == "mine\nchanged\n"
                assert sh(b, "busybox stat -c %U:%G /home/user/before.txt") == "user:user\n"
                assert sh(b, "busybox sha256sum /home/user/blob") == checksum
                assert missing(b, "/home/user/after.txt")
                sh(b, "echo more >> /home/user/before.txt")  # still the user's to write

                # In use (and, for tiny, a parent): not deleted.
                for name in ("py-snap", "tiny"):
                    with pytest.raises(ConflictError) as e:
                        templates.delete(name)
                    assert (e.value.status_code, e.value.code) == (409, "conflict"), name

            with pytest.raises(ConflictError) as e:
                a.snapshot("py-snap")
            assert e.value.status_code == 409
            with pytest.raises(InvalidArgumentError) as bad:
                a.snapshot("Bad Name")
            assert bad.value.status_code == 400 and "Bad Name" in bad.value.message

        # Another tenant sees neither the snapshot nor its way to global templates.
        with Keys(**c) as keys:
            bot = keys.create("py-snap-bot", ["sandboxes"], tenant="py-other")
            with Templates(url=isolate.url, api_key=bot.key) as theirs:
                names = [x.name for x in theirs.list()]
                assert "tiny" in names and "py-snap" not in names
                with pytest.raises(NotFoundError):
                    theirs.get("py-snap")
                with pytest.raises(PermissionDeniedError) as denied:
                    theirs.delete("tiny")
                assert denied.value.status_code == 403
                with pytest.raises(PermissionDeniedError):
                    theirs.import_archive("py-theirs", LARGE_BODY)  # an import needs an admin key
            keys.revoke(bot.id)

        templates.delete("py-snap")
        with pytest.raises(NotFoundError) as gone:
            templates.get("py-snap")
        assert gone.value.status_code == 404
    with pytest.raises(NotFoundError):
        Sandbox.connect(a.id, **c)


def test_forks_see_the_source_and_diverge(isolate: Daemon, tiny: TemplateInfo, made: List[str]) -> None:
    c = conn(isolate)
    with Templates(**c) as templates, Sandbox.create("tiny", metadata={"role": "source"}, **c) as src:
        sh(src, "echo shared > /home/user/shared.txt")
        with src.fork(count=2, metadata={"branch": "x"}, env={"WHO": "fork"}) as fork:
            assert isinstance(fork, ForkResult)
            assert len(fork.sandboxes) == 2 and all(isinstance(f, Sandbox) for f in fork.sandboxes)
            t = fork.snapshot.template
            assert t.auto_remove and t.parent == "tiny" and t.name in [x.name for x in templates.list()]
            assert len({src.id, *(f.id for f in fork.sandboxes)}) == 3
            for i, f in enumerate(fork.sandboxes):
                info = f.info()
                assert (info.state, info.template, info.metadata) == ("running", t.name, {"branch": "x"})
                assert f.access_token
                assert sh(f, "cat /home/user/shared.txt; echo $WHO") == "shared\nfork\n"
                sh(f, f"echo {i} > /home/user/mine")
            for i, f in enumerate(fork.sandboxes):
                assert sh(f, "cat /home/user/mine") == f"{i}\n"
            assert missing(src, "/home/user/mine")
            # A fork works with its own access token alone.
            alone = Sandbox.connect(fork.sandboxes[0].id, url=isolate.url, api_key=fork.sandboxes[0].access_token)
            assert sh(alone, "cat /home/user/mine") == "0\n"
            alone.close()
        # Leaving the block killed the forks; their snapshot went with the last one.
        assert [s.id for s in Sandbox.list(**c)] == [src.id]
        assert t.name not in [x.name for x in templates.list()]
        assert src.is_running()

        # A fork without the block; kill() says which were still there.
        one = src.fork()
        assert len(one.sandboxes) == 1 and one.sandboxes[0].info().metadata == {}
        assert one.kill() == [True]
        assert one.kill() == [False]
        one.close()

        for count in (0, 101):
            with pytest.raises(InvalidArgumentError) as e:
                src.fork(count)
            assert (e.value.status_code, e.value.code) == (400, "invalid_argument")
            assert "count" in e.value.message


def test_export_then_import_archive(isolate: Daemon, tiny: TemplateInfo, tmp_path: Path, made: List[str]) -> None:
    c = conn(isolate)
    made += ["py-keep", "py-moved", "py-bytes", "py-fileobj", "py-junk"]
    with Templates(**c) as templates:
        with Sandbox.create("tiny", **c) as a:
            checksum = sh(a, BLOB)
            a.pause()
            snap = a.snapshot("py-keep")
            assert snap.frozen_ms == 0.0 and a.info().state == "paused"  # a paused sandbox stays so

        archive = tmp_path / "keep.tar.zst"
        size = templates.export("py-keep", archive)
        assert size == archive.stat().st_size and size > 1 << 20
        assert archive.read_bytes()[:4] == ZSTD_MAGIC

        moved = templates.import_archive("py-moved", archive)
        assert isinstance(moved, TemplateInfo)
        assert (moved.name, moved.parent, moved.tenant) == ("py-moved", None, None)  # an import is whole
        with Sandbox.create("py-moved", **c) as b:
            assert sh(b, "busybox sha256sum /home/user/blob") == checksum
            assert sh(b, "busybox stat -c %U /home/user/blob") == "user\n"

        # The streaming variant, and an import from bytes and from a file object.
        streamed = b"".join(templates.export_stream("py-moved"))
        assert streamed[:4] == ZSTD_MAGIC and len(streamed) > 1 << 20
        assert templates.import_archive("py-bytes", streamed).name == "py-bytes"
        with open(archive, "rb") as f:
            assert templates.import_archive("py-fileobj", f).name == "py-fileobj"
        with Sandbox.create("py-bytes", **c) as b:
            assert sh(b, "busybox sha256sum /home/user/blob") == checksum

        with pytest.raises(ConflictError) as taken:
            templates.import_archive("py-moved", LARGE_BODY)
        assert (taken.value.status_code, taken.value.code) == (409, "conflict") and "exists" in taken.value.message
        with pytest.raises(ConflictError):
            templates.import_archive("py-moved", archive)  # the same, streamed from disk
        with pytest.raises(InvalidArgumentError) as junk:
            templates.import_archive("py-junk", ZSTD_MAGIC + b"\x01\x02\x03")
        assert junk.value.status_code == 400 and "archive" in junk.value.message
        with pytest.raises(NotFoundError):
            templates.export("py-nope", tmp_path / "nope.tar.zst")
        assert not (tmp_path / "nope.tar.zst").exists() and not (tmp_path / "nope.tar.zst.part").exists()
        assert "py-junk" not in [t.name for t in templates.list()]

        for name in ("py-fileobj", "py-bytes", "py-moved", "py-keep"):
            templates.delete(name)


def test_a_failed_build_raises(isolate: Daemon, tiny: TemplateInfo, imports: Path, made: List[str]) -> None:
    made.append("py-broken")
    (imports / "not-a.tar").write_bytes(b"this is not a tar archive\n" * 100)
    with Templates(**conn(isolate)) as templates:
        templates.create("py-broken", {"tar": imports / "not-a.tar"})
        with pytest.raises(TemplateBuildError) as e:
            templates.wait("py-broken", timeout=60)
        assert e.value.build.state == "failed" and e.value.build.error
        assert e.value.code == "template_build_failed" and e.value.build.error in e.value.message
        with pytest.raises(NotFoundError):
            templates.get("py-broken")
        with pytest.raises(InvalidArgumentError):
            templates.create("py-outside", {"dir": "/etc"})  # not under the import root


async def test_async_snapshot_fork_export_import(
    isolate: Daemon, tiny: TemplateInfo, imports: Path, made: List[str]
) -> None:
    c = conn(isolate)
    made += ["py-async-tiny", "py-async-snap", "py-async-moved"]
    async with AsyncTemplates(**c) as templates:
        # A template built with the async client (a coroutine callback is awaited).
        lines: List[str] = []

        async def progress(line: str) -> None:
            lines.append(line)

        build = await templates.create("py-async-tiny", {"dir": str(imports / "tiny")})
        assert build.state == "building"
        base = await templates.wait("py-async-tiny", progress)
        assert base.name == "py-async-tiny" and lines

        async with AsyncSandbox.create("py-async-tiny", **c) as a:
            await ash(a, "echo before > /home/user/before.txt")
            checksum = await ash(a, BLOB)
            snap = await a.snapshot("py-async-snap")
            assert (snap.template.name, snap.template.parent) == ("py-async-snap", "py-async-tiny")
            assert snap.bytes >= 1 << 20
            await ash(a, "echo after > /home/user/after.txt")

            async with AsyncSandbox.create("py-async-snap", **c) as b:
                assert await ash(b, "cat /home/user/before.txt") == "before\n"
                assert await ash(b, "busybox sha256sum /home/user/blob") == checksum
                assert await amissing(b, "/home/user/after.txt")
                with pytest.raises(ConflictError) as e:
                    await templates.delete("py-async-snap")
                assert (e.value.status_code, e.value.code) == (409, "conflict")

            async with a.fork(count=2, metadata={"branch": "y"}) as fork:
                assert isinstance(fork, AsyncForkResult)
                assert all(isinstance(f, AsyncSandbox) for f in fork.sandboxes) and len(fork.sandboxes) == 2
                assert fork.snapshot.template.auto_remove
                for i, f in enumerate(fork.sandboxes):
                    assert (await f.info()).metadata == {"branch": "y"}
                    assert await ash(f, "cat /home/user/before.txt /home/user/after.txt") == "before\nafter\n"
                    await ash(f, f"echo {i} > /home/user/mine")
                for i, f in enumerate(fork.sandboxes):
                    assert await ash(f, "cat /home/user/mine") == f"{i}\n"
                assert await amissing(a, "/home/user/mine")
            assert [s.id for s in await AsyncSandbox.list(**c)] == [a.id]
            assert fork.snapshot.template.name not in [t.name for t in await templates.list()]

            plain = await a.fork()
            assert len(plain.sandboxes) == 1 and await plain.sandboxes[0].is_running()
            assert await plain.kill() == [True]
            await plain.close()

            with pytest.raises(InvalidArgumentError) as bad:
                await a.fork(0)
            assert bad.value.status_code == 400 and "count" in bad.value.message

        archive = imports.parent / "async.tar.zst"
        size = await templates.export("py-async-snap", archive)
        assert size == archive.stat().st_size and archive.read_bytes()[:4] == ZSTD_MAGIC
        chunks = [chunk async for chunk in await templates.export_stream("py-async-snap")]
        assert chunks and chunks[0][:4] == ZSTD_MAGIC
        with pytest.raises(NotFoundError):
            await templates.export_stream("py-nope")

        moved = await templates.import_archive("py-async-moved", archive)
        assert (moved.name, moved.parent) == ("py-async-moved", None)
        async with AsyncSandbox.create("py-async-moved", **c) as m:
            assert await ash(m, "busybox sha256sum /home/user/blob") == checksum
            assert await ash(m, "cat /home/user/before.txt") == "before\n"
            assert await amissing(m, "/home/user/after.txt")
        with pytest.raises(ConflictError):
            await templates.import_archive("py-async-moved", LARGE_BODY)

        with pytest.raises(ConflictError):
            await templates.delete("py-async-tiny")  # py-async-snap is layered over it
        for name in ("py-async-moved", "py-async-snap", "py-async-tiny"):
            await templates.delete(name)
        assert not {"py-async-moved", "py-async-snap", "py-async-tiny"} & {t.name for t in await templates.list()}


@pytest.fixture
def cut_off_export() -> Iterator[str]:
    """A server whose every answer is the start of an export, then a closed connection (a daemon failing
    midway cuts the transfer off rather than ending it cleanly)."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                request = b""
                while b"\r\n\r\n" not in request:
                    request += conn.recv(4096)
                head = b"HTTP/1.1 200 OK\r\nContent-Type: application/zstd\r\nTransfer-Encoding: chunked\r\n\r\n"
                conn.sendall(head + b"1000\r\n" + ZSTD_MAGIC + b"x" * 4092 + b"\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(5)
    server.close()


def test_an_export_cut_off_raises_and_leaves_no_file(cut_off_export: str, tmp_path: Path) -> None:
    with Templates(url=cut_off_export, api_key="k") as templates:
        with pytest.raises(StreamError) as e:
            templates.export("t", tmp_path / "t.tar.zst")
        assert "cut off after 4096 bytes" in e.value.message and e.value.code == "stream_cut"
        assert list(tmp_path.iterdir()) == []
        # A file already there is left as it was.
        (tmp_path / "t.tar.zst").write_bytes(b"old")
        with pytest.raises(StreamError):
            templates.export("t", str(tmp_path / "t.tar.zst"))
        assert list(tmp_path.iterdir()) == [tmp_path / "t.tar.zst"]
        assert (tmp_path / "t.tar.zst").read_bytes() == b"old"
        got: List[bytes] = []
        with pytest.raises(StreamError):
            for chunk in templates.export_stream("t"):
                got.append(chunk)
        assert b"".join(got)[:4] == ZSTD_MAGIC


async def test_async_export_cut_off(cut_off_export: str, tmp_path: Path) -> None:
    async with AsyncTemplates(url=cut_off_export, api_key="k") as templates:
        with pytest.raises(StreamError):
            await templates.export("t", tmp_path / "t.tar.zst")
        assert list(tmp_path.iterdir()) == []
