"""microsandbox's ``attach``: a process on a PTY in the sandbox, bridged to the local terminal.

The local terminal is put in raw mode; its input goes to the process's stdin, the process's output to the local
terminal, window size changes (SIGWINCH) to the remote PTY, until the process exits or the detach keys
(``ctrl-]`` by default) are pressed, which leaves the process running.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

from ._async.process import AsyncProcessApi
from ._async.transport import AsyncTransport
from ._client import _BaseTransport
from ._options import EnvLike, _env_dict, build_start_request
from ._stream import WsEventStream
from ._types import Rlimit

__all__ = [
    "AttachOptions",
    "AttachOptionsBuilder",
    "attach",
    "attach_blocking",
    "attach_command",
    "attach_options",
    "parse_detach_keys",
]

#: The default detach sequence.
DEFAULT_DETACH_KEYS = "ctrl-]"
#: Runs the user's login shell, or ``/bin/sh``.
DEFAULT_SHELL = 'exec "${SHELL:-/bin/sh}"'


#: What ``ctrl-X`` types, for the X that are not letters.
_CTRL_PUNCT = {"@": 0x00, "[": 0x1B, "\\": 0x1C, "]": 0x1D, "^": 0x1E, "_": 0x1F}


def parse_detach_keys(spec: str) -> bytes:
    """The bytes of a detach key spec: comma-separated keys, each ``ctrl-X`` (X a letter in either case or one of
    ``@[\\]^_``) or one ASCII character; spaces, tabs and line breaks around a key are ignored
    (``"ctrl-]"`` → ``b"\\x1d"``, ``"ctrl-p,ctrl-q"`` → ``b"\\x10\\x11"``). The same rules in every SDK (docs/api.md,
    "Detach keys"; ``sdk/testdata/vectors.json``). Raises :class:`ValueError` for anything else."""
    out = bytearray()
    for key in (k.strip(" \t\r\n") for k in spec.split(",")):
        if key[:5].lower() == "ctrl-" and len(key) == 6 and key[5].isascii():
            char = key[5].lower()
            if "a" <= char <= "z":
                out.append(ord(char) - ord("a") + 1)
            elif char in _CTRL_PUNCT:
                out.append(_CTRL_PUNCT[char])
            else:
                raise ValueError(f"cannot type ctrl-{key[5]} in a terminal: use a letter or one of @[\\]^_")
        elif len(key) == 1 and key.isascii():
            out += key.encode()
        else:
            raise ValueError(f"bad detach key {key!r}: use e.g. 'ctrl-]' or 'ctrl-p,ctrl-q'")
    return bytes(out)


@dataclass(frozen=True)
class AttachOptions:
    """The immutable options produced by :meth:`AttachOptionsBuilder.build`."""

    args: Tuple[str, ...] = ()
    cwd: Optional[str] = None
    user: Optional[str] = None
    env: Tuple[Tuple[str, str], ...] = ()
    detach_keys: Optional[str] = None
    rlimits: Tuple[Rlimit, ...] = ()


class AttachOptionsBuilder:
    """Fluent builder for :meth:`Sandbox.attach_with`; every setter returns the builder."""

    def __init__(self) -> None:
        self._args: List[str] = []
        self._cwd: Optional[str] = None
        self._user: Optional[str] = None
        self._env: Dict[str, str] = {}
        self._detach_keys: Optional[str] = None
        self._rlimits: List[Rlimit] = []

    def arg(self, arg: str) -> AttachOptionsBuilder:
        """Append one argument."""
        self._args.append(str(arg))
        return self

    def args(self, args: Iterable[str]) -> AttachOptionsBuilder:
        """Append several arguments."""
        self._args.extend(str(a) for a in args)
        return self

    def cwd(self, path: str) -> AttachOptionsBuilder:
        """Working directory."""
        self._cwd = path
        return self

    def user(self, user: str) -> AttachOptionsBuilder:
        """User to run as."""
        self._user = user
        return self

    def env(self, key: str, value: str) -> AttachOptionsBuilder:
        """Add one environment variable."""
        self._env[str(key)] = str(value)
        return self

    def envs(self, env: EnvLike) -> AttachOptionsBuilder:
        """Add many environment variables."""
        self._env.update(_env_dict(env))
        return self

    def detach_keys(self, spec: str) -> AttachOptionsBuilder:
        """The key sequence that detaches (e.g. ``"ctrl-]"`` or ``"ctrl-p,ctrl-q"``)."""
        parse_detach_keys(spec)
        self._detach_keys = spec
        return self

    def rlimit(self, resource: str, limit: int) -> AttachOptionsBuilder:
        """Set both the soft and hard limit of ``resource``."""
        self._rlimits.append(Rlimit(resource, int(limit), int(limit)))
        return self

    def rlimit_range(self, resource: str, soft: int, hard: int) -> AttachOptionsBuilder:
        """Set distinct soft and hard limits of ``resource``."""
        self._rlimits.append(Rlimit(resource, int(soft), int(hard)))
        return self

    def build(self) -> AttachOptions:
        """Freeze the options."""
        return AttachOptions(
            tuple(self._args), self._cwd, self._user, tuple(self._env.items()), self._detach_keys,
            tuple(self._rlimits),
        )


AttachConfigure = Union[Callable[[AttachOptionsBuilder], AttachOptionsBuilder], AttachOptions, None]


def attach_options(configure: AttachConfigure) -> AttachOptions:
    """Resolve a builder callback (or ready options) into :class:`AttachOptions`."""
    if configure is None:
        return AttachOptions()
    if isinstance(configure, AttachOptions):
        return configure
    return configure(AttachOptionsBuilder()).build()


def _terminal_size(fd: int) -> Tuple[int, int]:
    try:
        size = os.get_terminal_size(fd)
        return size.columns or 80, size.lines or 24
    except OSError:
        return 80, 24


class _DetachMatcher:
    """Finds the detach sequence in a stream of input chunks, holding back a partial match."""

    def __init__(self, keys: bytes) -> None:
        self.keys = keys
        self.held = b""

    def feed(self, chunk: bytes) -> Tuple[bytes, bool]:
        """Return the bytes to forward and whether the sequence was typed."""
        data = self.held + chunk
        self.held = b""
        at = data.find(self.keys)
        if at >= 0:
            return data[:at], True
        for n in range(min(len(self.keys) - 1, len(data)), 0, -1):
            if data.endswith(self.keys[:n]):
                self.held = data[-n:]
                return data[:-n], False
        return data, False


async def attach(
    api: AsyncProcessApi,
    cmd: Optional[str],
    argv: Optional[List[str]],
    options: AttachOptions,
    stdin_fd: Optional[int] = None,
    stdout_fd: Optional[int] = None,
) -> Optional[int]:
    """Run a process on a PTY and bridge it to the local terminal; the process's exit code, or ``None`` when
    the detach keys were pressed (the process keeps running)."""
    in_fd = sys.stdin.fileno() if stdin_fd is None else stdin_fd
    out_fd = sys.stdout.fileno() if stdout_fd is None else stdout_fd
    keys = parse_detach_keys(options.detach_keys or DEFAULT_DETACH_KEYS)
    body = build_start_request(
        cmd=cmd, argv=argv, cwd=options.cwd, env=options.env, user=options.user, stdin="pipe",
        tty=_terminal_size(out_fd), rlimits=options.rlimits,
    )
    info = await api.start(body)
    ws = WsEventStream(api.t, api.p(info.id, "/ws"))
    await ws.connect()

    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[Optional[bytes]] = asyncio.Queue()
    detached = asyncio.Event()
    matcher = _DetachMatcher(keys)

    def on_input(chunk: bytes) -> None:
        if not chunk:
            inbox.put_nowait(None)
            return
        data, hit = matcher.feed(chunk)
        if data:
            inbox.put_nowait(data)
        if hit:
            detached.set()

    def readable() -> None:
        try:
            on_input(os.read(in_fd, 4096))
        except OSError:
            on_input(b"")

    async def pump_input() -> None:
        while True:
            data = await inbox.get()
            if data is None:
                await api.stdin(info.id, b"", eof=True)
                return
            await api.stdin(info.id, data)

    async def pump_output() -> Optional[int]:
        async for ev in ws:
            if ev.kind in ("stdout", "stderr") and ev.data:
                os.write(out_fd, ev.data)
            elif ev.kind == "exited":
                return ev.code
        return None

    def on_resize() -> None:
        cols, rows = _terminal_size(out_fd)
        asyncio.ensure_future(api.resize(info.id, cols, rows))

    saved_mode: Any = None
    if os.isatty(in_fd):
        import termios
        import tty

        saved_mode = termios.tcgetattr(in_fd)
        tty.setraw(in_fd, termios.TCSANOW)  # keep what was typed before the bridge was up
    reader_installed = False
    try:
        loop.add_reader(in_fd, readable)
        reader_installed = True
    except (ValueError, OSError, NotImplementedError, PermissionError):
        def read_in_thread() -> None:
            while not detached.is_set():
                try:
                    chunk = os.read(in_fd, 4096)
                except OSError:
                    chunk = b""
                loop.call_soon_threadsafe(on_input, chunk)
                if not chunk:
                    return

        threading.Thread(target=read_in_thread, daemon=True).start()
    resize_installed = False
    if hasattr(signal, "SIGWINCH"):
        try:
            loop.add_signal_handler(signal.SIGWINCH, on_resize)
            resize_installed = True
        except (ValueError, RuntimeError, NotImplementedError):
            pass
    input_task = asyncio.ensure_future(pump_input())
    output_task = asyncio.ensure_future(pump_output())
    detach_task = asyncio.ensure_future(detached.wait())
    try:
        await asyncio.wait({output_task, detach_task}, return_when=asyncio.FIRST_COMPLETED)
        if output_task.done():
            return output_task.result()
        return None
    finally:
        if reader_installed:
            loop.remove_reader(in_fd)
        if resize_installed:
            loop.remove_signal_handler(signal.SIGWINCH)
        if saved_mode is not None:
            import termios

            termios.tcsetattr(in_fd, termios.TCSADRAIN, saved_mode)
        for task in (input_task, output_task, detach_task):
            task.cancel()
        await asyncio.gather(input_task, output_task, detach_task, return_exceptions=True)
        await ws.close()


async def attach_command(
    api: AsyncProcessApi, cmd: str, args: Optional[List[str]], options: AttachOptions
) -> Optional[int]:
    """:func:`attach` as ``AsyncSandbox.attach_with`` spells it: with ``args`` (given here or in ``options``)
    ``cmd`` is a program, else a shell string."""
    all_args = [*(args or []), *options.args]
    if args is None and not options.args:
        return await attach(api, cmd, None, options)
    return await attach(api, None, [cmd, *all_args], options)


def attach_blocking(
    transport: _BaseTransport, sandbox_id: str, cmd: str, args: Optional[List[str]], options: AttachOptions
) -> Optional[int]:
    """:func:`attach_command` for ``Sandbox.attach_with``: on an event loop and a connection pool of its own."""

    async def run() -> Optional[int]:
        t = AsyncTransport(transport.url, transport.api_key, transport.request_timeout)
        try:
            return await attach_command(AsyncProcessApi(t, sandbox_id), cmd, args, options)
        finally:
            await t.aclose()

    return asyncio.run(run())
