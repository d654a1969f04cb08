"""``sandbox.commands`` (Superserve and Declaw spellings) with the blocking client."""

from __future__ import annotations

import time
from typing import List

import pytest

from sandpit import CommandExitError, CommandHandle, CommandResult, Sandbox, SandboxTimeoutError


def test_run_returns_a_result_and_non_zero_is_not_an_error(sbx: Sandbox) -> None:
    result = sbx.commands.run("echo hello")
    assert isinstance(result, CommandResult)
    assert (result.stdout, result.stderr, result.exit_code) == ("hello\n", "", 0)
    failed = sbx.commands.run("echo out; echo err >&2; exit 3")
    assert (failed.stdout, failed.stderr, failed.exit_code, failed.status) == ("out\n", "err\n", 3, "exited")


def test_run_options_cwd_env_envs_user(sbx: Sandbox) -> None:
    r = sbx.commands.run("pwd; echo $A $B $SECRET; id -un", cwd="/tmp", env={"A": "1"}, envs={"B": "2"}, user="root")
    assert r.stdout == "/tmp\n1 2\nroot\n"
    # Declaw's example: envs.
    assert sbx.commands.run("echo $SECRET", envs={"SECRET": "supersecret"}).stdout == "supersecret\n"
    assert sbx.commands.run("cat", stdin="given\n").stdout == "given\n"


def test_run_timeout_raises_timeout_error_with_the_result(sbx: Sandbox) -> None:
    with pytest.raises(SandboxTimeoutError) as exc:
        sbx.commands.run("echo started; sleep 10", timeout=0.5)
    assert isinstance(exc.value, TimeoutError)
    assert exc.value.result is not None and exc.value.result.status == "timed_out"
    assert exc.value.result.stdout == "started\n"
    with pytest.raises(SandboxTimeoutError):
        sbx.commands.run("sleep 10", timeout_ms=300)
    with pytest.raises(SandboxTimeoutError):
        sbx.commands.run("sleep 10", timeout_seconds=0.3)
    assert sbx.commands.run("sleep 0.2", timeout=None).exit_code == 0


def test_run_streams_over_sse_with_an_idle_timeout(sbx: Sandbox) -> None:
    out: List[str] = []
    err: List[str] = []
    # 2 s of output, a chunk every 0.2 s: the 1 s idle timeout keeps being reset.
    result = sbx.commands.run(
        "for i in $(seq 1 10); do echo line $i; echo e$i >&2; sleep 0.2; done",
        timeout=1,
        on_stdout=out.append,
        on_stderr=err.append,
    )
    assert result.exit_code == 0
    assert "".join(out) == result.stdout == "".join(f"line {i}\n" for i in range(1, 11))
    assert "".join(err) == result.stderr and len(out) >= 5
    # A silent command trips it.
    with pytest.raises(SandboxTimeoutError):
        sbx.commands.run("echo x; sleep 5", timeout=0.5, on_stdout=lambda _: None)


def test_run_stream_declaw_example(sbx: Sandbox) -> None:
    chunks: List[str] = []
    result = sbx.commands.run_stream(
        'for i in $(seq 1 5); do echo "step $i"; sleep 0.1; done', on_stdout=chunks.append
    )
    assert result.exit_code == 0 and len(chunks) == 5 and result.stdout.count("step") == 5


def test_background_handle_wait_kill_and_exit_error(sbx: Sandbox) -> None:
    handle = sbx.commands.run("echo working; exit 4", background=True)
    assert isinstance(handle, CommandHandle) and isinstance(handle.pid, int)
    with pytest.raises(CommandExitError) as exc:
        handle.wait()
    assert exc.value.exit_code == 4 and exc.value.stdout == "working\n"

    lines: List[str] = []
    ok = sbx.commands.run("echo a; sleep 0.2; echo b", background=True)
    result = ok.wait(on_stdout=lines.append)
    assert result.stdout == "a\nb\n" and "".join(lines) == "a\nb\n"

    sleeper = sbx.commands.run("sleep 30", background=True)
    assert sleeper.kill() is True
    assert sleeper.kill() is False
    with pytest.raises(CommandExitError) as killed:
        sleeper.wait()
    assert killed.value.exit_code == 137 and killed.value.result.signal == "SIGKILL"
    sleeper.disconnect()
    with pytest.raises(ValueError, match="wait"):
        sbx.commands.run("true", background=True, on_stdout=print)


def test_background_process_with_stdin_declaw_example(sbx: Sandbox) -> None:
    handle = sbx.commands.run("cat", background=True)
    sbx.commands.send_stdin(handle.pid, "hello\n")
    sbx.commands.send_stdin(handle.pid, b"world\n")
    sbx.commands.close_stdin(handle.pid)
    assert handle.wait().stdout == "hello\nworld\n"

    upper = sbx.commands.run(
        "python3 -c \"import sys\nfor l in sys.stdin: print(l.upper(), end='', flush=True)\"", background=True
    )
    time.sleep(0.1)
    sbx.commands.send_stdin(upper.pid, "hello\n")
    handle2 = sbx.commands.connect(upper.pid)
    handle2.send_stdin("again\n")
    handle2.close_stdin()
    assert handle2.wait().stdout == "HELLO\nAGAIN\n"


def test_list_kill_and_connect(sbx: Sandbox) -> None:
    handle = sbx.commands.run("sleep 30", background=True)
    running = sbx.commands.list()
    assert handle.pid in [p.pid for p in running]
    entry = next(p for p in running if p.pid == handle.pid)
    assert entry.cmd == "sleep 30" and entry.is_pty is False and isinstance(entry.envs, dict)
    connected = sbx.commands.connect(handle.pid)
    assert connected.pid == handle.pid
    assert sbx.commands.kill(handle.pid) is True
    assert sbx.commands.kill(handle.pid) is False
    assert sbx.commands.kill(999_999_999) is False
    assert handle.pid not in [p.pid for p in sbx.commands.list()]
    with pytest.raises(CommandExitError):
        connected.wait()


def test_sync_spawn_points_to_async_sandbox(sbx: Sandbox) -> None:
    with pytest.raises(NotImplementedError, match="AsyncSandbox"):
        sbx.commands.spawn("python3 -i")
