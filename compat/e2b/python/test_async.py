"""The stock E2B Python SDK's ``AsyncSandbox``, unchanged, against sandpit: the async flavour streams watches
(``WatchDir``) where the blocking one polls, so both paths of the surface are covered."""

from __future__ import annotations

import asyncio

import pytest
from e2b import AsyncSandbox, CommandExitException, FilesystemEventType, NotFoundException, PtySize

from conftest import Daemon


async def wait_for(check, timeout: float = 10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.05)


async def test_async_sandbox_commands_files_and_kill(daemon: Daemon) -> None:
    sb = await AsyncSandbox.create(metadata={"suite": "e2b-async"}, timeout=120)
    try:
        out: list[str] = []
        r = await sb.commands.run("echo a; echo b", on_stdout=out.append)
        assert r.stdout == "a\nb\n" and "".join(out) == "a\nb\n"
        with pytest.raises(CommandExitException) as e:
            await sb.commands.run("exit 7")
        assert e.value.exit_code == 7
        h = await sb.commands.run("cat", background=True, stdin=True)
        await sb.commands.send_stdin(h.pid, "piped\n")
        await sb.commands.close_stdin(h.pid)
        assert (await h.wait()).stdout == "piped\n"
        await sb.files.write("/tmp/async/x.txt", "content")
        assert await sb.files.read("/tmp/async/x.txt") == "content"
        assert [e.name for e in await sb.files.list("/tmp/async")] == ["x.txt"]
        with pytest.raises(NotFoundException):
            await sb.files.read("/tmp/async/none")
        info = await sb.get_info()
        assert info.metadata == {"suite": "e2b-async"}
        other = await AsyncSandbox.connect(sb.sandbox_id)
        assert (await other.commands.run("cat /tmp/async/x.txt")).stdout == "content"
    finally:
        await sb.kill()
    assert not await sb.is_running()


async def test_async_watch_dir_streams_events(daemon: Daemon) -> None:
    sb = await AsyncSandbox.create(timeout=120)
    try:
        await sb.files.make_dir("/tmp/streamed")
        events: list = []
        handle = await sb.files.watch_dir("/tmp/streamed", on_event=events.append, recursive=True)
        try:
            await sb.commands.run("echo 1 > /tmp/streamed/one && mkdir /tmp/streamed/d && echo 2 > /tmp/streamed/d/two")
            await wait_for(lambda: {("one", FilesystemEventType.CREATE), ("d/two", FilesystemEventType.CREATE)}
                           <= {(e.name, e.type) for e in events})
        finally:
            await handle.stop()
    finally:
        await sb.kill()


async def test_async_pty(daemon: Daemon) -> None:
    sb = await AsyncSandbox.create(timeout=120)
    try:
        data = bytearray()
        h = await sb.pty.create(PtySize(rows=20, cols=60), on_data=data.extend)
        await sb.pty.send_stdin(h.pid, b"stty size; echo async-$((1+1))\n")
        await wait_for(lambda: b"async-2" in bytes(data))
        assert b"20 60" in bytes(data)
        await sb.pty.resize(h.pid, PtySize(rows=25, cols=70))
        await sb.pty.send_stdin(h.pid, b"stty size\n")
        await wait_for(lambda: b"25 70" in bytes(data))
        assert await sb.pty.kill(h.pid)
    finally:
        await sb.kill()
