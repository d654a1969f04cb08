"""microsandbox's ``attach``: a sandbox PTY bridged to a local terminal (a pseudo-terminal made by the test)."""

from __future__ import annotations

import fcntl
import os
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from conftest import Daemon
from sandpit import AttachOptionsBuilder, Sandbox
from sandpit._attach import _DetachMatcher, parse_detach_keys

SCRIPT = """
import asyncio, sys
from sandpit import AsyncSandbox, Sandbox
mode, sandbox_id = sys.argv[1], sys.argv[2]
if mode == "shell":
    code = Sandbox.connect(sandbox_id).attach_shell()
elif mode == "with":
    code = Sandbox.connect(sandbox_id).attach_with(
        "sh", lambda a: a.cwd("/tmp").env("GREETING", "hey").detach_keys("ctrl-p,ctrl-q")
    )
elif mode == "async":
    async def main():
        sbx = await AsyncSandbox.connect(sandbox_id)
        try:
            return await sbx.attach("sh", ["-c", "read x; echo got-$x; exit 5"])
        finally:
            await sbx.close()
    code = asyncio.run(main())
else:
    code = Sandbox.connect(sandbox_id).attach("sleep 30")
print(f"\\r\\nATTACH-EXIT {code}", flush=True)
"""


class Terminal:
    """A child process whose stdin/stdout/stderr is a local pseudo-terminal that the test types into."""

    def __init__(self, tmp: Path, daemon: Daemon, *args: str) -> None:
        script = tmp / "attach_script.py"
        script.write_text(SCRIPT)
        self.master, slave = os.openpty()
        self.set_size(90, 20)
        env = {**os.environ, "SANDPIT_URL": daemon.url, "SANDPIT_API_KEY": daemon.api_key}
        self.proc = subprocess.Popen(
            [sys.executable, str(script), *args], stdin=slave, stdout=slave, stderr=slave, env=env,
            start_new_session=True,
        )
        os.close(slave)
        self.output = b""

    def wait_raw(self, timeout: float = 15) -> None:
        """Wait until the attach put the terminal in raw mode (the bridge is up)."""
        deadline = time.monotonic() + timeout
        while termios.tcgetattr(self.master)[3] & termios.ICANON:
            assert time.monotonic() < deadline, f"the terminal never went raw: {self.output!r}"
            assert self.proc.poll() is None, f"attach exited early: {self.output!r}"
            self.drain()
            time.sleep(0.05)

    def drain(self) -> None:
        """Read whatever the terminal shows now."""
        while select.select([self.master], [], [], 0)[0]:
            try:
                self.output += os.read(self.master, 4096)
            except OSError:
                return

    def set_size(self, cols: int, rows: int) -> None:
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    def expect(self, needle: bytes, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.output:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{needle!r} not seen; terminal showed {self.output!r}")
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    self.output += os.read(self.master, 4096)
                except OSError:  # the child closed the terminal
                    time.sleep(0.05)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        os.close(self.master)


@pytest.fixture
def terminal(tmp_path: Path, daemon: Daemon) -> Iterator[Callable[..., Terminal]]:
    made = []

    def make(*args: str) -> Terminal:
        t = Terminal(tmp_path, daemon, *args)
        made.append(t)
        t.wait_raw()
        return t

    yield make
    for t in made:
        t.close()


def test_detach_keys() -> None:
    assert parse_detach_keys("ctrl-]") == b"\x1d"
    assert parse_detach_keys("ctrl-p,ctrl-q") == b"\x10\x11"
    assert parse_detach_keys("ctrl-a, x") == b"\x01x"
    with pytest.raises(ValueError):
        parse_detach_keys("ctrl-1")
    with pytest.raises(ValueError):
        AttachOptionsBuilder().detach_keys("meta-x")
    m = _DetachMatcher(b"\x10\x11")
    assert m.feed(b"ab\x10") == (b"ab", False)
    assert m.feed(b"c") == (b"\x10c", False)
    assert m.feed(b"\x10") == (b"", False)
    assert m.feed(b"\x11rest") == (b"", True)
    opts = AttachOptionsBuilder().arg("a").args(["b"]).user("root").envs({"K": "V"}).rlimit("nofile", 9).build()
    assert opts.args == ("a", "b") and opts.env == (("K", "V"),) and opts.rlimits[0].soft == 9


def test_attach_shell_runs_commands_and_returns_the_exit_code(sbx: Sandbox, terminal: Callable[..., Terminal]) -> None:
    term = terminal("shell", sbx.id)
    term.type(b"stty size; echo hi-$((6 * 7))\n")
    term.expect(b"hi-42")
    assert b"20 90" in term.output  # the PTY got the local terminal's size
    term.set_size(120, 33)
    term.proc.send_signal(signal.SIGWINCH)  # the resize is forwarded asynchronously: ask until it shows
    deadline = time.monotonic() + 15
    while b"33 120" not in term.output and time.monotonic() < deadline:
        term.type(b"stty size\n")
        time.sleep(0.3)
        term.drain()
    assert b"33 120" in term.output
    term.type(b"exit 3\n")
    term.expect(b"ATTACH-EXIT 3")
    assert term.proc.wait(10) == 0


def test_attach_with_options_and_custom_detach_keys(sbx: Sandbox, terminal: Callable[..., Terminal]) -> None:
    term = terminal("with", sbx.id)
    term.type(b"pwd; echo $GREETING\n")
    term.expect(b"hey\r\n")
    assert b"/tmp" in term.output
    term.type(b"\x10\x11")  # ctrl-p, ctrl-q
    term.expect(b"ATTACH-EXIT None")
    shells = [p for p in sbx.commands.list() if p.cmd == "sh" and p.cwd == "/tmp"]
    assert shells, "detaching must leave the process running"
    for p in shells:
        sbx.commands.kill(p.id)


def test_attach_detach_default_keys_and_async(sbx: Sandbox, terminal: Callable[..., Terminal]) -> None:
    term = terminal("sleep", sbx.id)
    term.type(b"\x1d")
    term.expect(b"ATTACH-EXIT None")
    sleepers = [p for p in sbx.commands.list() if p.cmd == "sleep 30"]
    assert sleepers
    for p in sleepers:
        sbx.commands.kill(p.id)

    term = terminal("async", sbx.id)
    term.type(b"abc\n")
    term.expect(b"ATTACH-EXIT 5")
    assert b"got-abc" in term.output


