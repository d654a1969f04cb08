"""``sandbox.commands``: Superserve's and Declaw's spelling (``run``, background handles, ``spawn`` sessions)."""

from __future__ import annotations

import asyncio
from typing import Any, Dict, Iterator, Literal, Optional, Union, overload


from ._awaitable import AwaitableContext
from ._errors import CommandExitError, ConflictError, NotFoundError, SandboxTimeoutError, StreamError
from ._options import build_start_request, timeout_ms
from ._process import AsyncProcessApi, OutputCallback, OutputCollector, ProcessApi, ProcessRef, Signal
from ._stream import WsEventStream
from ._types import CommandResult, ExecEvent, ProcessInfo, ProcessList

__all__ = ["AsyncCommandHandle", "AsyncCommands", "CommandHandle", "CommandSession", "Commands", "SessionStdin"]

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


class CommandHandle:
    """A background command (Declaw's ``CommandHandle``), from ``commands.run(..., background=True)`` or
    ``commands.connect(pid)``."""

    def __init__(self, api: ProcessApi, ref: ProcessRef, info: Optional[ProcessInfo] = None) -> None:
        self._api = api
        self._ref = ref if info is None else info.id
        self.info = info
        self._events: Optional[Iterator[ExecEvent]] = None

    def __repr__(self) -> str:
        return f"CommandHandle(pid={self.pid!r})"

    @property
    def pid(self) -> ProcessRef:
        """The process's pid in the sandbox (or the reference it was connected with, until known)."""
        if self.info is not None and self.info.pid is not None:
            return self.info.pid
        return self._ref

    def wait(
        self,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        timeout: Optional[float] = None,
    ) -> CommandResult:
        """Wait for the command to end and return its result. With callbacks, all of its output (from the
        start) is streamed to them as it arrives. Raises :class:`CommandExitError` on a non-zero exit code and
        :class:`SandboxTimeoutError` when the command timed out (or ``timeout`` seconds passed first)."""
        if on_stdout is None and on_stderr is None:
            result = self._api.wait(self._ref, timeout=timeout)
        else:
            collector = OutputCollector(on_stdout, on_stderr)
            self._events = self._api.events(self._ref)
            final: Optional[ProcessInfo] = None
            for ev in self._events:
                collector.feed(ev)
                if ev.kind == "exited":
                    final = ev.info
            self._events = None
            if final is None:
                raise StreamError("disconnected before the command ended; the process keeps running")
            result = collector.result(final)
        self.info = result.info
        return _check_exit(result)

    def kill(self) -> bool:
        """SIGKILL the command's process tree; False if it had already ended."""
        try:
            killed, self.info = self._api.kill(self._ref)
        except NotFoundError:
            return False
        return killed

    def send_stdin(self, data: Union[str, bytes]) -> None:
        """Write to the command's stdin."""
        self._api.stdin(self._ref, data)

    def close_stdin(self) -> None:
        """Close the command's stdin (EOF)."""
        self._api.stdin(self._ref, b"", eof=True)

    def disconnect(self) -> None:
        """Stop any output stream of this handle; the command keeps running."""
        events, self._events = self._events, None
        close = getattr(events, "close", None)
        if close is not None:
            close()


class AsyncCommandHandle:
    """Async :class:`CommandHandle`."""

    def __init__(self, api: AsyncProcessApi, ref: ProcessRef, info: Optional[ProcessInfo] = None) -> None:
        self._api = api
        self._ref = ref if info is None else info.id
        self.info = info
        self._events: Any = None

    def __repr__(self) -> str:
        return f"AsyncCommandHandle(pid={self.pid!r})"

    @property
    def pid(self) -> ProcessRef:
        """The process's pid in the sandbox (or the reference it was connected with, until known)."""
        if self.info is not None and self.info.pid is not None:
            return self.info.pid
        return self._ref

    async def wait(
        self,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        timeout: Optional[float] = None,
    ) -> CommandResult:
        """Wait for the command to end; see :meth:`CommandHandle.wait`. Callbacks may be coroutine functions."""
        if on_stdout is None and on_stderr is None:
            result = await self._api.wait(self._ref, timeout=timeout)
        else:
            collector = OutputCollector(on_stdout, on_stderr)
            self._events = self._api.events(self._ref)
            final: Optional[ProcessInfo] = None
            async for ev in self._events:
                await collector.afeed(ev)
                if ev.kind == "exited":
                    final = ev.info
            self._events = None
            if final is None:
                raise StreamError("disconnected before the command ended; the process keeps running")
            result = collector.result(final)
        self.info = result.info
        return _check_exit(result)

    async def kill(self) -> bool:
        """SIGKILL the command's process tree; False if it had already ended."""
        try:
            killed, self.info = await self._api.kill(self._ref)
        except NotFoundError:
            return False
        return killed

    async def send_stdin(self, data: Union[str, bytes]) -> None:
        """Write to the command's stdin."""
        await self._api.stdin(self._ref, data)

    async def close_stdin(self) -> None:
        """Close the command's stdin (EOF)."""
        await self._api.stdin(self._ref, b"", eof=True)

    async def disconnect(self) -> None:
        """Stop any output stream of this handle; the command keeps running."""
        events, self._events = self._events, None
        if events is not None:
            await events.aclose()


class Commands:
    """``sandbox.commands`` of the blocking :class:`~sandpit.Sandbox`."""

    def __init__(self, api: ProcessApi) -> None:
        self._api = api

    @overload
    def run(
        self,
        cmd: str,
        *,
        background: Literal[False] = False,
        cwd: Optional[str] = None,
        envs: Optional[Dict[str, str]] = None,
        env: Optional[Dict[str, str]] = None,
        user: Optional[str] = None,
        timeout: Optional[float] = DEFAULT_RUN_TIMEOUT,
        timeout_seconds: Optional[float] = None,
        timeout_ms: Optional[float] = None,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        stdin: Union[str, bytes, None] = None,
    ) -> CommandResult: ...

    @overload
    def run(
        self,
        cmd: str,
        *,
        background: Literal[True],
        cwd: Optional[str] = None,
        envs: Optional[Dict[str, str]] = None,
        env: Optional[Dict[str, str]] = None,
        user: Optional[str] = None,
        timeout: Optional[float] = DEFAULT_RUN_TIMEOUT,
        timeout_seconds: Optional[float] = None,
        timeout_ms: Optional[float] = None,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        stdin: Union[str, bytes, None] = None,
    ) -> CommandHandle: ...

    def run(
        self,
        cmd: str,
        *,
        background: bool = False,
        cwd: Optional[str] = None,
        envs: Optional[Dict[str, str]] = None,
        env: Optional[Dict[str, str]] = None,
        user: Optional[str] = None,
        timeout: Optional[float] = DEFAULT_RUN_TIMEOUT,
        timeout_seconds: Optional[float] = None,
        timeout_ms: Optional[float] = None,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        stdin: Union[str, bytes, None] = None,
    ) -> Union[CommandResult, CommandHandle]:
        """Run shell command ``cmd`` in the sandbox.

        By default it waits and returns a :class:`CommandResult`; a non-zero exit code is a result, not an
        exception. With ``on_stdout``/``on_stderr`` the output is streamed to the callbacks over SSE as it
        arrives and the timeout becomes an *idle* timeout (reset by every chunk). With ``background=True`` it
        returns a :class:`CommandHandle` at once (stdin is then a pipe: see :meth:`send_stdin`; give output
        callbacks to its :meth:`~CommandHandle.wait`).

        Args:
            cwd: working directory (default: the user's home).
            envs / env: environment variables for this command, merged over the sandbox's.
            user: the user to run as.
            timeout / timeout_seconds: seconds (default 60; ``None`` or 0 for none); ``timeout_ms`` in ms.
            stdin: bytes or text given to the command's stdin (then EOF).

        Raises:
            SandboxTimeoutError: the timeout passed (the result is in ``.result``).
        """
        limit = _run_timeout_ms(timeout, timeout_seconds, timeout_ms)
        if background:
            if on_stdout is not None or on_stderr is not None:
                raise ValueError(_BACKGROUND_CALLBACKS)
            body = _body(cmd, cwd=cwd, env=env, envs=envs, user=user, limit_ms=limit, stdin=stdin or "pipe")
            info = self._api.start(body)
            return CommandHandle(self._api, info.id, info)
        if on_stdout is None and on_stderr is None:
            body = _body(cmd, cwd=cwd, env=env, envs=envs, user=user, limit_ms=limit, stdin=stdin)
            return _check_timed_out(self._api.exec(body))
        body = _body(cmd, cwd=cwd, env=env, envs=envs, user=user, limit_ms=limit, idle=True, stdin=stdin)
        return self._stream(body, on_stdout, on_stderr)

    def run_stream(
        self,
        cmd: str,
        *,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        cwd: Optional[str] = None,
        envs: Optional[Dict[str, str]] = None,
        env: Optional[Dict[str, str]] = None,
        user: Optional[str] = None,
        timeout: Optional[float] = DEFAULT_RUN_TIMEOUT,
        timeout_ms: Optional[float] = None,
    ) -> CommandResult:
        """Run ``cmd`` streaming its output chunks to the callbacks over SSE as they arrive (Declaw's
        ``runStream``); ``timeout`` (seconds, default 60) bounds the total run time. Returns the result with the
        accumulated output."""
        limit = _run_timeout_ms(timeout, None, timeout_ms)
        body = _body(cmd, cwd=cwd, env=env, envs=envs, user=user, limit_ms=limit)
        return self._stream(body, on_stdout, on_stderr)

    def _stream(
        self, body: Dict[str, Any], on_stdout: Optional[OutputCallback], on_stderr: Optional[OutputCallback]
    ) -> CommandResult:
        info = self._api.start(body)
        collector = OutputCollector(on_stdout, on_stderr)
        try:
            for ev in self._api.events(info.id):
                collector.feed(ev)
                if ev.kind == "exited" and ev.info is not None:
                    info = ev.info
        except BaseException:
            if not info.is_final:
                try:
                    self._api.kill(info.id)
                except Exception:  # noqa: BLE001 - best effort while another error propagates
                    pass
            raise
        return _check_timed_out(collector.result(info))

    def spawn(self, *args: Any, **kwargs: Any) -> Any:
        """Not available on the blocking ``Sandbox``: always raises :class:`NotImplementedError` pointing to
        :class:`~sandpit.AsyncSandbox`, whose ``commands.spawn`` opens an interactive WebSocket session."""
        raise NotImplementedError(_SPAWN_HINT)

    def list(self) -> ProcessList:
        """The sandbox's running processes (see ``processes.list`` for ended ones too)."""
        return self._api.list(status="running")

    def kill(self, pid: ProcessRef) -> bool:
        """SIGKILL process ``pid`` (and its descendants): True if it was killed, False if it had already ended
        (or is not known)."""
        try:
            killed, _ = self._api.kill(pid)
        except NotFoundError:
            return False
        return killed

    def send_stdin(self, pid: ProcessRef, data: Union[str, bytes]) -> None:
        """Write ``data`` (text or bytes; include ``\\n`` for newlines) to process ``pid``'s stdin."""
        self._api.stdin(pid, data)

    def close_stdin(self, pid: ProcessRef) -> None:
        """Close process ``pid``'s stdin (EOF)."""
        self._api.stdin(pid, b"", eof=True)

    def connect(self, pid: ProcessRef) -> CommandHandle:
        """A :class:`CommandHandle` for an already-running process, without an API call."""
        return CommandHandle(self._api, pid)


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


class AsyncCommands:
    """``sandbox.commands`` of :class:`~sandpit.AsyncSandbox`; adds :meth:`spawn`."""

    def __init__(self, api: AsyncProcessApi) -> None:
        self._api = api

    @overload
    async def run(
        self,
        cmd: str,
        *,
        background: Literal[False] = False,
        cwd: Optional[str] = None,
        envs: Optional[Dict[str, str]] = None,
        env: Optional[Dict[str, str]] = None,
        user: Optional[str] = None,
        timeout: Optional[float] = DEFAULT_RUN_TIMEOUT,
        timeout_seconds: Optional[float] = None,
        timeout_ms: Optional[float] = None,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        stdin: Union[str, bytes, None] = None,
    ) -> CommandResult: ...

    @overload
    async def run(
        self,
        cmd: str,
        *,
        background: Literal[True],
        cwd: Optional[str] = None,
        envs: Optional[Dict[str, str]] = None,
        env: Optional[Dict[str, str]] = None,
        user: Optional[str] = None,
        timeout: Optional[float] = DEFAULT_RUN_TIMEOUT,
        timeout_seconds: Optional[float] = None,
        timeout_ms: Optional[float] = None,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        stdin: Union[str, bytes, None] = None,
    ) -> AsyncCommandHandle: ...

    async def run(
        self,
        cmd: str,
        *,
        background: bool = False,
        cwd: Optional[str] = None,
        envs: Optional[Dict[str, str]] = None,
        env: Optional[Dict[str, str]] = None,
        user: Optional[str] = None,
        timeout: Optional[float] = DEFAULT_RUN_TIMEOUT,
        timeout_seconds: Optional[float] = None,
        timeout_ms: Optional[float] = None,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        stdin: Union[str, bytes, None] = None,
    ) -> Union[CommandResult, AsyncCommandHandle]:
        """Run shell command ``cmd``; see :meth:`Commands.run`. Callbacks may be coroutine functions."""
        limit = _run_timeout_ms(timeout, timeout_seconds, timeout_ms)
        if background:
            if on_stdout is not None or on_stderr is not None:
                raise ValueError(_BACKGROUND_CALLBACKS)
            body = _body(cmd, cwd=cwd, env=env, envs=envs, user=user, limit_ms=limit, stdin=stdin or "pipe")
            info = await self._api.start(body)
            return AsyncCommandHandle(self._api, info.id, info)
        if on_stdout is None and on_stderr is None:
            body = _body(cmd, cwd=cwd, env=env, envs=envs, user=user, limit_ms=limit, stdin=stdin)
            return _check_timed_out(await self._api.exec(body))
        body = _body(cmd, cwd=cwd, env=env, envs=envs, user=user, limit_ms=limit, idle=True, stdin=stdin)
        return await self._stream(body, on_stdout, on_stderr)

    async def run_stream(
        self,
        cmd: str,
        *,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        cwd: Optional[str] = None,
        envs: Optional[Dict[str, str]] = None,
        env: Optional[Dict[str, str]] = None,
        user: Optional[str] = None,
        timeout: Optional[float] = DEFAULT_RUN_TIMEOUT,
        timeout_ms: Optional[float] = None,
    ) -> CommandResult:
        """Run ``cmd`` streaming its output to the callbacks; see :meth:`Commands.run_stream`."""
        limit = _run_timeout_ms(timeout, None, timeout_ms)
        body = _body(cmd, cwd=cwd, env=env, envs=envs, user=user, limit_ms=limit)
        return await self._stream(body, on_stdout, on_stderr)

    async def _stream(
        self, body: Dict[str, Any], on_stdout: Optional[OutputCallback], on_stderr: Optional[OutputCallback]
    ) -> CommandResult:
        info = await self._api.start(body)
        collector = OutputCollector(on_stdout, on_stderr)
        events = self._api.events(info.id)
        try:
            async for ev in events:
                await collector.afeed(ev)
                if ev.kind == "exited" and ev.info is not None:
                    info = ev.info
        except BaseException:
            if not info.is_final:
                try:
                    await self._api.kill(info.id)
                except Exception:  # noqa: BLE001 - best effort while another error propagates
                    pass
            raise
        finally:
            await events.aclose()
        return _check_timed_out(collector.result(info))

    def spawn(
        self,
        cmd: str,
        *,
        cwd: Optional[str] = None,
        env: Optional[Dict[str, str]] = None,
        envs: Optional[Dict[str, str]] = None,
        user: Optional[str] = None,
        timeout: Optional[float] = None,
        timeout_seconds: Optional[float] = None,
        timeout_ms: Optional[float] = None,
        on_stdout: Optional[OutputCallback] = None,
        on_stderr: Optional[OutputCallback] = None,
        tty: Any = None,
    ) -> AwaitableContext[CommandSession]:
        """Start shell command ``cmd`` with a stdin pipe and return a :class:`CommandSession` once it runs.

        Use ``session = await sbx.commands.spawn(...)`` or ``async with sbx.commands.spawn(...) as session:``
        (the block kills the process and closes the connection when it ends). Output is delivered to
        ``on_stdout``/``on_stderr`` over a WebSocket. No timeout by default (leave it off for long-lived
        processes); ``timeout``/``timeout_seconds`` in seconds or ``timeout_ms``.
        """
        limit = _run_timeout_ms(timeout, timeout_seconds, timeout_ms)
        body = _body(cmd, cwd=cwd, env=env, envs=envs, user=user, limit_ms=limit, stdin="pipe", tty=tty)
        return AwaitableContext(self._spawn(body, on_stdout, on_stderr), CommandSession.close)

    async def _spawn(
        self, body: Dict[str, Any], on_stdout: Optional[OutputCallback], on_stderr: Optional[OutputCallback]
    ) -> CommandSession:
        info = await self._api.start(body)
        ws = WsEventStream(self._api.t, self._api.p(info.id, "/ws"))
        try:
            await ws.connect()
        except BaseException:
            try:
                await self._api.kill(info.id)
            except Exception:  # noqa: BLE001
                pass
            raise
        return CommandSession(self._api, info, ws, on_stdout, on_stderr)

    async def list(self) -> ProcessList:
        """The sandbox's running processes."""
        return await self._api.list(status="running")

    async def kill(self, pid: ProcessRef) -> bool:
        """SIGKILL process ``pid``: True if killed, False if it had already ended (or is not known)."""
        try:
            killed, _ = await self._api.kill(pid)
        except NotFoundError:
            return False
        return killed

    async def send_stdin(self, pid: ProcessRef, data: Union[str, bytes]) -> None:
        """Write ``data`` to process ``pid``'s stdin."""
        await self._api.stdin(pid, data)

    async def close_stdin(self, pid: ProcessRef) -> None:
        """Close process ``pid``'s stdin (EOF)."""
        await self._api.stdin(pid, b"", eof=True)

    def connect(self, pid: ProcessRef) -> AsyncCommandHandle:
        """An :class:`AsyncCommandHandle` for an already-running process, without an API call."""
        return AsyncCommandHandle(self._api, pid)
