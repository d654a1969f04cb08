"""``AsyncSandbox``: the same surface with ``await``, plus ``commands.spawn`` sessions over WebSocket."""

from __future__ import annotations

import asyncio
from typing import List

import pytest

from sandpit import (
    AsyncCommandHandle,
    AsyncExecHandle,
    AsyncSandbox,
    CommandExitError,
    CommandSession,
    ConflictError,
    ExitStatus,
    NotFoundError,
    SandboxTimeoutError,
)

# Every test here uses the daemon through the environment (SANDPIT_URL, SANDPIT_STATE_DIR).
pytestmark = pytest.mark.usefixtures("sandpit_env")


async def test_lifecycle() -> None:
    async with AsyncSandbox.create(metadata={"case": "async-lifecycle"}, envs={"V": "1"}) as sbx:
        info = await sbx.info()
        assert info.state == "running" and info.env == {"V": "1"} and await sbx.is_running()
        assert [s.id for s in await AsyncSandbox.list(metadata={"case": "async-lifecycle"})] == [sbx.id]
        assert sbx.id in [s.id for s in await AsyncSandbox.list(state="running")]
        assert (await sbx.pause()).state == "paused"
        assert (await sbx.resume()).state == "running"
        await sbx.pause()
        assert (await sbx.commands.run("echo $V")).stdout == "1\n"  # resumes on its own
        assert "agent listening" in await sbx.logs()
        assert len(await sbx.logs(tail_bytes=10)) == 10
        expires = (await sbx.set_timeout(1200)).expires_at
        assert expires is not None
        await sbx.pause()
        looked_up = await AsyncSandbox.get(sbx.id)  # does not resume it
        assert (await looked_up.info()).state == "paused"
        await looked_up.close()
        await sbx.resume()
        async with AsyncSandbox.connect(sbx.id) as again:
            assert (await again.get_info()).id == sbx.id
        # Leaving the connect block killed the sandbox.
        assert not await sbx.is_running()
        assert await sbx.kill() is False
    with pytest.raises(NotFoundError):
        await AsyncSandbox.connect(sbx.id)
    plain = await AsyncSandbox.create()
    assert await plain.kill() is True
    await plain.close()


async def test_run_result_timeout_and_streaming(asbx: AsyncSandbox) -> None:
    r = await asbx.commands.run("echo out; echo err >&2; exit 2", cwd="/tmp", envs={"A": "b"})
    assert (r.stdout, r.stderr, r.exit_code) == ("out\n", "err\n", 2)
    with pytest.raises(SandboxTimeoutError):
        await asbx.commands.run("sleep 10", timeout=0.3)

    seen: List[str] = []

    async def on_stdout(chunk: str) -> None:  # coroutine callbacks are awaited
        seen.append(chunk)

    err: List[str] = []
    streamed = await asbx.commands.run(
        "for i in 1 2 3; do echo $i; echo e >&2; sleep 0.1; done", on_stdout=on_stdout, on_stderr=err.append
    )
    assert "".join(seen) == streamed.stdout == "1\n2\n3\n" and "".join(err) == "e\ne\ne\n"
    chunks: List[str] = []
    declaw = await asbx.commands.run_stream("echo a; sleep 0.1; echo b", on_stdout=chunks.append)
    assert declaw.stdout == "a\nb\n" and len(chunks) == 2


async def test_background_handles(asbx: AsyncSandbox) -> None:
    handle = await asbx.commands.run("cat", background=True)
    assert isinstance(handle, AsyncCommandHandle)
    await asbx.commands.send_stdin(handle.pid, "hello\n")
    await handle.send_stdin(b"bytes\n")
    await asbx.commands.close_stdin(handle.pid)
    lines: List[str] = []
    assert (await handle.wait(on_stdout=lines.append)).stdout == "hello\nbytes\n"
    assert "".join(lines) == "hello\nbytes\n"

    failing = await asbx.commands.run("exit 9", background=True)
    with pytest.raises(CommandExitError) as exc:
        await asbx.commands.connect(failing.pid).wait()
    assert exc.value.exit_code == 9

    sleeper = await asbx.commands.run("sleep 30", background=True)
    assert sleeper.pid in [p.pid for p in await asbx.commands.list()]
    assert await asbx.commands.kill(sleeper.pid) is True
    assert await sleeper.kill() is False
    await sleeper.disconnect()


async def test_spawn_python_repl_superserve_example(asbx: AsyncSandbox) -> None:
    out: List[str] = []
    session = await asbx.commands.spawn("python3 -i", on_stdout=out.append)
    assert isinstance(session, CommandSession) and session.pid is not None
    await session.stdin.write("print(2 + 2)\n")
    await session.stdin.close()  # EOF, so the REPL exits
    result = await session.wait()
    assert result.exit_code == 0 and "4" in "".join(out) and result.stdout == "4\n"
    assert session.exit_code == 0
    await session.close()


async def test_spawn_bytes_signals_and_cleanup(asbx: AsyncSandbox) -> None:
    async with asbx.commands.spawn("cat") as session:
        await session.stdin.write(b"\x00\x01raw")
        await session.stdin.close()
        result = await session.wait(timeout=10)
        assert result.stdout_bytes == b"\x00\x01raw"

    session = await asbx.commands.spawn("sleep 30")
    await session.kill()  # SIGTERM by default
    result = await session.wait()
    assert result.status == "killed" and result.signal == "SIGTERM" and result.exit_code == 143
    await session.kill()  # already ended: nothing happens
    await session.close()

    errors: List[str] = []
    session = await asbx.commands.spawn(
        "trap 'echo got-int; exit 7' INT; echo ready >&2; while :; do sleep 0.05; done", on_stderr=errors.append
    )
    while "ready" not in "".join(errors):
        await asyncio.sleep(0.02)
    await session.kill("SIGINT")
    result = await session.wait()
    assert result.exit_code == 7 and result.stdout == "got-int\n"

    # `async with` kills the process when the block ends.
    async with await asbx.commands.spawn("sleep 30") as session:
        pid = session.id
    assert (await asbx.get_process(pid)).info.status == "killed"

    session = await asbx.commands.spawn("sleep 30")
    with pytest.raises(SandboxTimeoutError):
        await session.wait(timeout=0.2)
    await session.close()


async def test_spawn_tty_resize_and_timeout(asbx: AsyncSandbox) -> None:
    async with asbx.commands.spawn("stty -echo; read go; stty size", tty=(80, 24)) as session:
        await session.resize(100, 30)
        await session.stdin.write("go\n")  # only after the resize was applied
        assert (await session.wait()).stdout.strip().endswith("30 100")
    async with asbx.commands.spawn("sleep 10", timeout_ms=200) as session:
        assert (await session.wait()).status == "timed_out"


async def test_exec_family(asbx: AsyncSandbox) -> None:
    assert (await asbx.exec("python3", ["-c", "print(1 + 1)"])).stdout == "2\n"
    r = await asbx.exec("pwd && echo $FOO && whoami", cwd="/tmp", env={"FOO": "bar"}, timeout_ms=5000, run_as="root")
    assert r.stdout == "/tmp\nbar\nroot\n"
    w = await asbx.exec_with("python3", lambda e: e.args(["-c", "import os; print(os.getcwd())"]).cwd("/tmp"))
    assert w.stdout == "/tmp\n"
    assert (await asbx.shell("echo a | tr a b")).stdout == "b\n"

    handle = await asbx.exec_stream("sh", ["-c", "echo out; echo err >&2; exit 3"])
    assert isinstance(handle, AsyncExecHandle)
    kinds = [e.kind async for e in handle]
    assert kinds[0] == "started" and kinds[-1] == "exited" and set(kinds) >= {"stdout", "stderr"}
    assert await handle.wait() == ExitStatus(3, False) and await handle.recv() is None

    piped = await asbx.exec_stream_with("cat", lambda e: e.stdin_pipe())
    sink = await piped.take_stdin()
    assert sink is not None and await piped.take_stdin() is None
    async with sink:
        await sink.write("streamed")
    assert (await piped.collect()).stdout == "streamed"

    sleeper = await asbx.shell_stream("sleep 30")
    await sleeper.signal("TERM")
    assert (await sleeper.wait()).code == 143
    killer = await asbx.exec_stream("sleep 30")
    await killer.kill()
    assert (await killer.collect()).exit_code == 137
    async with await asbx.exec_stream("sleep 30") as left:
        pid = left.id
    assert (await asbx.get_process(pid)).info.status == "killed"


async def test_processes(asbx: AsyncSandbox) -> None:
    process = await asbx.processes.start("read line; echo stdout:$line; echo stderr:$line 1>&2", run_as="root")
    await process.write_stdin(data="hello\n", eof=True)
    result = await process.wait()
    assert (result.stdout, result.stderr) == ("stdout:hello\n", "stderr:hello\n")
    assert (await process.result()).exit_code == 0

    sleeper = await asbx.processes.start("sleep 30")
    fetched = await asbx.get_process(sleeper.id)
    listing = await asbx.processes.list(status="running", limit=20)
    assert sleeper.id in [entry.id for entry in listing.data]
    await fetched.signal("TERM")
    assert (await fetched.wait()).status == "killed"
    assert (await sleeper.refresh()).status == "killed"
    with pytest.raises(ConflictError):
        await sleeper.signal("TERM")
    assert await sleeper.kill() is False

    streamed = await asbx.processes.start("echo stream-out; sleep 0.05; echo stream-err 1>&2")
    types = []
    async for event in streamed.stream():
        types.append(event.type)
        if event.type == "exit":
            assert event.result is not None and event.result.stdout == "stream-out\n"
            break
    assert types[-1] == "exit" and "stdout" in types and "stderr" in types
    raw = [e.kind async for e in streamed.events(from_seq=2)]
    assert raw == ["started", "stderr", "exited"]

    piped = await asbx.processes.start("cat")
    await piped.write_stdin("x")
    await piped.close_stdin()
    assert (await piped.wait(timeout=10)).stdout == "x"
    tty = await asbx.processes.start("stty -echo; read go; stty size", tty=True)
    await tty.resize(90, 20)
    await tty.write_stdin("go\n")
    assert (await tty.wait()).stdout.strip().endswith("20 90")
    with pytest.raises(NotFoundError):
        await asbx.processes.get("missing")
