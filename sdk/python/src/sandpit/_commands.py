"""What the blocking and the asyncio ``sandbox.commands`` share (``_sync/commands.py``, ``_async/commands.py``),
and the asyncio-only ``spawn`` sessions (:class:`CommandSession`)."""

from __future__ import annotations

import asyncio
from typing import Any, Dict, Optional, Union

from ._async.process import AsyncProcessApi
from ._errors import CommandExitError, ConflictError, NotFoundError, SandboxTimeoutError, StreamError
from ._options import build_start_request, timeout_ms
from ._process import OutputCallback, OutputCollector, Signal
from ._stream import WsEventStream
from ._types import CommandResult, ProcessInfo

__all__ = ["CommandSession", "SessionStdin"]

#: Declaw's default command timeout, in seconds.
DEFAULT_RUN_TIMEOUT = 60.0
_SPAWN_HINT = (
    "commands.spawn() needs a WebSocket session and is only available on AsyncSandbox: "
    "use `sbx = await AsyncSandbox.create()` (or AsyncSandbox.connect(id)) and `await sbx.commands.spawn(...)`; "
    "with the synchronous Sandbox use commands.run(..., background=True) and send_stdin() instead"
)
_BACKGROUND_CALLBACKS = (
    "on_stdout/on_stderr stream a foreground run; with background=True pass them to the handle's wait()"
)


def _run_timeout_ms(timeout: Optional[float], timeout_seconds: Optional[float], ms: Optional[float]) -> int:
    if ms is not None:
        return timeout_ms(ms=ms)
    if timeout_seconds is not None:
        return timeout_ms(timeout_seconds)
    return timeout_ms(timeout or None)


def _check_timed_out(result: CommandResult) -> CommandResult:
    if result.status == "timed_out":
        raise SandboxTimeoutError(result.error or "the command timed out", code="timeout", result=result)
    return result


def _check_exit(result: CommandResult) -> CommandResult:
    _check_timed_out(result)
    if result.exit_code != 0:
        raise CommandExitError(result)
    return result


def _body(
    cmd: str,
    *,
    cwd: Optional[str],
    env: Optional[Dict[str, str]],
    envs: Optional[Dict[str, str]],
    user: Optional[str],
    limit_ms: int,
    idle: bool = False,
    stdin: Union[str, bytes, None] = None,
    tty: Any = None,
) -> Dict[str, Any]:
    return build_start_request(
        cmd=cmd,
        cwd=cwd,
        env=env,
        envs=envs,
        user=user,
        timeout_ms=0 if idle else limit_ms,
        idle_timeout_ms=limit_ms if idle else 0,
        stdin=stdin.encode() if isinstance(stdin, str) and stdin not in ("pipe", "null") else stdin,
        tty=tty,
    )


class SessionStdin:
    """The stdin of a :class:`CommandSession`.

    Writes are acknowledged HTTP calls (``POST .../stdin``), not WebSocket frames: the WebSocket protocol does
    not acknowledge stdin, so a frame sent just as the socket drops would be lost without a trace, while an
    HTTP write either lands or raises. Output still streams over the WebSocket.
    """

    def __init__(self, session: CommandSession) -> None:
        self._session = session

    async def write(self, data: Union[str, bytes]) -> None:
        """Write a string (UTF-8) or raw bytes."""
        await self._session._api.stdin(self._session.id, data)

    async def close(self) -> None:
        """Close stdin: the process reads EOF (a REPL then exits)."""
        await self._session._api.stdin(self._session.id, b"", eof=True)


class CommandSession:
    """An interactive command (Superserve's ``CommandSession``) from ``AsyncSandbox.commands.spawn``: write
    its stdin, signal it, and ``await wait()`` for the result while its output streams over a WebSocket (which
    is reopened from the last ``seq`` if it drops). Stdin, signals and resizes are acknowledged HTTP calls, so
    that none is lost with a dropped socket. ``async with`` kills the process and closes the connection when
    the block ends."""

    def __init__(
        self,
        api: AsyncProcessApi,
        info: ProcessInfo,
        ws: WsEventStream,
        on_stdout: Optional[OutputCallback],
        on_stderr: Optional[OutputCallback],
    ) -> None:
        self._api = api
        self._ws = ws
        self.info = info
        #: The process's stdin: ``await session.stdin.write(...)``, ``await session.stdin.close()``.
        self.stdin = SessionStdin(self)
        self._collector = OutputCollector(on_stdout, on_stderr)
        self._done: asyncio.Future[CommandResult] = asyncio.get_running_loop().create_future()
        self._task = asyncio.ensure_future(self._read())

    def __repr__(self) -> str:
        return f"CommandSession(id={self.id!r}, pid={self.pid!r})"

    @property
    def id(self) -> str:
        """The process's string id (give it to ``commands.connect`` or ``get_process`` to pick it up again)."""
        return self.info.id

    @property
    def pid(self) -> Optional[int]:
        """The process's pid in the sandbox."""
        return self.info.pid

    @property
    def exit_code(self) -> Optional[int]:
        """The exit code once the process has ended, else ``None``."""
        if self._done.done() and not self._done.exception():
            return self._done.result().exit_code
        return None

    async def _read(self) -> None:
        try:
            async for ev in self._ws:
                await self._collector.afeed(ev)
                if ev.kind == "exited" and ev.info is not None:
                    self.info = ev.info
                    if not self._done.done():
                        self._done.set_result(self._collector.result(ev.info))
                    return
            if not self._done.done():
                self._done.set_exception(StreamError("the session was closed before the process exited"))
        except Exception as exc:  # noqa: BLE001 - handed to wait()
            if not self._done.done():
                self._done.set_exception(exc)

    async def wait(self, timeout: Optional[float] = None) -> CommandResult:
        """The :class:`CommandResult` once the process exits (a non-zero exit is a result). Raises
        :class:`StreamError` if the connection dropped and could not be resumed (the process keeps running),
        :class:`SandboxTimeoutError` if ``timeout`` seconds pass first."""
        try:
            return await asyncio.wait_for(asyncio.shield(self._done), timeout)
        except asyncio.TimeoutError:
            raise SandboxTimeoutError(f"the process did not exit within {timeout} s", code="timeout") from None

    async def kill(self, signal: Signal = "SIGTERM") -> None:
        """Send ``signal`` (default SIGTERM) to the process. Does nothing once it has exited."""
        if self._done.done():
            return
        try:
            await self._api.signal(self.id, signal)
        except ConflictError:
            pass  # it ended meanwhile

    async def resize(self, cols: int, rows: int) -> None:
        """Resize the process's terminal (``tty`` sessions)."""
        await self._api.resize(self.id, cols, rows)

    async def close(self) -> None:
        """Kill the process (SIGKILL to its tree) if it still runs, then close the connection."""
        if not self._done.done():
            try:
                await self._api.kill(self.id)
            except NotFoundError:
                pass
            try:
                await asyncio.wait_for(asyncio.shield(self._done), 5)
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
        await self._ws.close()
        if not self._task.done():
            self._task.cancel()
        if self._done.done() and not self._done.cancelled():
            self._done.exception()  # mark retrieved

    async def __aenter__(self) -> CommandSession:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
