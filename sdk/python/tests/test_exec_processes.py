"""microsandbox's ``exec*``/``shell*`` and Hyperbrowser's ``exec``/``processes`` with the blocking client."""

from __future__ import annotations

import time

import pytest

from sandpit import (
    ConflictError,
    ExecHandle,
    ExecOptionsBuilder,
    ExitStatus,
    InvalidArgumentError,
    NotFoundError,
    Sandbox,
    SandboxTimeoutError,
)


def test_exec_program_with_args_microsandbox_example(sbx: Sandbox) -> None:
    result = sbx.exec("python3", ["-c", "print(1 + 1)"])
    assert result.stdout == "2\n" and result.code == 0 and result.success
    assert result.exit_status == ExitStatus(0, True)
    assert result.stdout_bytes == b"2\n" and result.stderr_bytes == b""


def test_exec_shell_string_hyperbrowser_example(sbx: Sandbox) -> None:
    result = sbx.exec("pwd && echo $FOO && whoami", cwd="/tmp", env={"FOO": "bar"}, timeout_ms=5_000, run_as="root")
    assert (result.exit_code, result.stdout, result.stderr.strip()) == (0, "/tmp\nbar\nroot\n", "")
    slow = sbx.exec("sleep 5", timeout_ms=300)
    assert slow.status == "timed_out" and slow.exit_code == 137 and slow.error
    missing = sbx.exec("no-such-program-xyz", [])
    assert missing.status == "failed" and missing.exit_code == 127 and "no-such-program-xyz" in (missing.error or "")
    binary = sbx.exec("printf '\\377\\376'")
    assert binary.stdout_bytes == b"\xff\xfe"
    with pytest.raises(InvalidArgumentError):
        sbx.exec("cat", stdin="pipe")
    with pytest.raises(ValueError):
        sbx.exec("id", user="root", run_as="nobody")


def test_exec_with_builder(sbx: Sandbox) -> None:
    out = sbx.exec_with(
        "sh",
        lambda e: e.args(["-c", "cd; pwd; echo $PYTHONPATH $X; ulimit -n; ulimit -Hn; cat"])
        .arg("ignored-arg0")
        .cwd("/tmp")
        .env("PYTHONPATH", "/app/lib")
        .envs({"X": "y"})
        .user("root")
        .timeout(30_000)
        .stdin_bytes("from-stdin")
        .rlimit_range("nofile", 100, 200),
    )
    assert out.stdout.splitlines() == [
        out.stdout.splitlines()[0], "/app/lib y", "100", "200", "from-stdin"
    ] and out.success
    limited = sbx.exec_with("sh", lambda e: e.args(["-c", "ulimit -n"]).rlimit("nofile", 64))
    assert limited.stdout == "64\n"
    tty = sbx.exec_with("sh", ExecOptionsBuilder().args(["-c", "test -t 1 && echo tty"]).tty(True).build())
    assert tty.stdout.strip() == "tty" and tty.info is not None and tty.info.is_pty
    timed = sbx.exec_with("sleep", lambda e: e.arg("5").timeout(200))
    assert timed.status == "timed_out"
    null = sbx.exec_with("cat", lambda e: e.stdin_pipe().stdin_null())
    assert null.stdout == ""
    with pytest.raises(ValueError):
        sbx.exec_with("cat", lambda e: e.stdin_pipe())


def test_shell(sbx: Sandbox) -> None:
    result = sbx.shell("echo one | tr a-z A-Z && echo two >&2")
    assert (result.stdout, result.stderr) == ("ONE\n", "two\n")


def test_exec_stream_events_and_collect(sbx: Sandbox) -> None:
    with sbx.exec_stream("sh", ["-c", "echo out; sleep 0.1; echo err >&2; exit 5"]) as handle:
        assert isinstance(handle, ExecHandle)
        events = list(handle)
    assert [e.kind for e in events] == ["started", "stdout", "stderr", "exited"]
    assert events[0].pid == handle.pid and events[1].data == b"out\n" and events[2].data == b"err\n"
    assert events[-1].code == 5 and handle.recv() is None

    handle = sbx.shell_stream("echo a; echo b")
    first = handle.recv()
    assert first is not None and first.kind == "started"
    collected = handle.collect()
    assert collected.stdout == "a\nb\n" and collected.exit_code == 0
    assert handle.wait() == ExitStatus(0, True)


def test_exec_stream_stdin_signal_and_kill(sbx: Sandbox) -> None:
    handle = sbx.exec_stream_with("cat", lambda e: e.stdin_pipe())
    sink = handle.take_stdin()
    assert sink is not None and handle.take_stdin() is None
    with sink:
        sink.write("hello ")
        sink.write(b"world")
    assert handle.collect().stdout == "hello world"

    term = sbx.exec_stream("sleep", ["30"])
    assert term.take_stdin() is None
    term.signal("TERM")
    status = term.wait()
    assert status == ExitStatus(143, False)

    killed = sbx.exec_stream("sleep 30")
    killed.kill()
    assert killed.wait().code == 137

    # Leaving the with block kills a process that still runs.
    with sbx.exec_stream("sleep 30") as left:
        pid = left.id
    assert sbx.get_process(pid).info.status == "killed"


def test_processes_start_write_stdin_wait_hyperbrowser_example(sbx: Sandbox) -> None:
    process = sbx.processes.start("read line; echo stdout:$line; echo stderr:$line 1>&2", run_as="root")
    process.write_stdin(data="hello\n", eof=True)
    result = process.wait()
    assert (result.stdout, result.stderr) == ("stdout:hello\n", "stderr:hello\n")
    assert process.result().stdout == result.stdout


def test_processes_get_list_signal_hyperbrowser_example(sbx: Sandbox) -> None:
    process = sbx.processes.start("sleep 30", run_as="root")
    fetched = sbx.get_process(process.id)
    assert fetched.pid == process.pid and fetched.info.status == "running"
    by_pid = sbx.processes.get(process.pid or 0)
    assert by_pid.id == process.id
    listing = sbx.processes.list(status="running", limit=20)
    assert process.id in [entry.id for entry in listing.data]
    assert len(sbx.processes.list(limit=1)) == 1
    fetched.signal("TERM")
    result = fetched.wait()
    assert result.status == "killed" and result.signal == "SIGTERM" and result.exit_code == 143
    assert process.refresh().status == "killed"
    with pytest.raises(ConflictError):
        fetched.signal("TERM")
    with pytest.raises(InvalidArgumentError):
        sbx.processes.list(status="sleepy")


def test_processes_stream_hyperbrowser_example(sbx: Sandbox) -> None:
    process = sbx.processes.start("echo stream-out; echo stream-err 1>&2")
    seen = []
    for event in process.stream():
        if event.type == "exit":
            assert event.result is not None and event.result.exit_code == 0
            assert event.result.stdout == "stream-out\n"
            break
        seen.append((event.type, event.data))
    assert ("stdout", "stream-out\n") in seen and ("stderr", "stream-err\n") in seen


def test_processes_resume_from_seq_idempotent_ids_and_errors(sbx: Sandbox) -> None:
    script = "for i in 1 2 3 4; do echo $i; sleep 0.05; done"
    process = sbx.processes.start(script, id="idem-1", stdin=None)
    again = sbx.processes.start(script, id="idem-1", stdin=None)  # a retry returns the same process
    assert again.id == process.id and again.pid == process.pid
    with pytest.raises(ConflictError):  # the same id for a different request is refused
        sbx.processes.start("something else entirely", id="idem-1")
    process.wait()
    tail = [e for e in process.events(from_seq=3) if e.kind == "stdout"]
    assert [e.seq for e in tail] == [3, 4] and b"".join(e.data for e in tail) == b"3\n4\n"
    with pytest.raises(ConflictError):
        process.write_stdin("x")  # stdin is not a pipe
    with pytest.raises(NotFoundError):
        sbx.get_process("no-such-process")
    with pytest.raises(ConflictError):
        process.resize(100, 40)  # no tty
    slow = sbx.processes.start("sleep 5")
    with pytest.raises(SandboxTimeoutError):
        slow.wait(timeout=0.3)
    assert slow.kill() is True and slow.kill() is False


def test_processes_tty_resize(sbx: Sandbox) -> None:
    process = sbx.processes.start("stty -echo; read go; stty size", tty=(80, 24))
    process.resize(120, 40)
    process.write_stdin("go\n")  # only after the resize was applied
    assert process.wait().stdout.strip().endswith("40 120")


def test_processes_timeout_seconds(sbx: Sandbox) -> None:
    started = time.monotonic()
    result = sbx.processes.start("sleep 10", timeout=0.3).wait()
    assert result.status == "timed_out" and time.monotonic() - started < 5


def test_output_dropped_by_the_cap_is_reported_as_lost(sbx: Sandbox) -> None:
    process = sbx.processes.start("head -c 68000000 /dev/zero", stdin=None)  # over the 64 MiB cap
    deadline = time.monotonic() + 30
    while process.refresh().is_running:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert process.info.lost_bytes > 0
    events = process.events()
    assert next(events).kind == "started"
    lost = next(events)
    assert lost.kind == "lost" and lost.lost is not None
    assert lost.lost.from_seq == 1 and lost.lost.bytes == process.info.lost_bytes
    events.close()
    stream = process.stream(from_seq=lost.lost.to_seq + 1)
    assert [next(stream).type, next(stream).type] == ["started", "stdout"]
    stream.close()
