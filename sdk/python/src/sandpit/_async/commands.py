# unasync: sync
# """``sandbox.commands`` of the blocking :class:`~sandpit.Sandbox`: Superserve's and Declaw's spelling (``run``,
# background handles)."""
# unasync: async
"""``sandbox.commands`` of :class:`~sandpit.AsyncSandbox`: Superserve's and Declaw's spelling (``run``, background
handles, ``spawn`` sessions)."""
# unasync: end

from __future__ import annotations

# unasync: sync
# from typing import Any, Dict, Generator, Literal, Optional, Union, overload
#
# from .._commands import _SPAWN_HINT
# unasync: async
from typing import Any, Dict, Literal, Optional, Union, overload

from .._awaitable import AwaitableContext
from .._commands import CommandSession
from .._stream import ClosingAsyncIterator, WsEventStream
# unasync: end
from .._commands import (
    _BACKGROUND_CALLBACKS,
    DEFAULT_RUN_TIMEOUT,
    _body,
    _check_exit,
    _check_timed_out,
    _run_timeout_ms,
)
from .._errors import NotFoundError, StreamError
from .._process import OutputCallback, OutputCollector, ProcessRef
from .._types import CommandResult, ExecEvent, ProcessInfo, ProcessList
from .process import AsyncProcessApi

__all__ = ["AsyncCommandHandle", "AsyncCommands"]


class AsyncCommandHandle:
    # unasync: sync
    # """A background command (Declaw's ``CommandHandle``), from ``commands.run(..., background=True)`` or
    # ``commands.connect(pid)``."""
    # unasync: async
    """A background command (Declaw's ``CommandHandle``), from ``commands.run(..., background=True)`` or
    ``commands.connect(pid)``. The output callbacks of :meth:`wait` may be coroutine functions."""
    # unasync: end

    def __init__(self, api: AsyncProcessApi, ref: ProcessRef, info: Optional[ProcessInfo] = None) -> None:
        self._api = api
        self._ref = ref if info is None else info.id
        self.info = info
        self._events: Optional[ClosingAsyncIterator[ExecEvent]] = None

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
        """Wait for the command to end and return its result. With callbacks, all of its output (from the
        start) is streamed to them as it arrives. Raises :class:`CommandExitError` on a non-zero exit code and
        :class:`SandboxTimeoutError` when the command timed out (or ``timeout`` seconds passed first)."""
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


class AsyncCommands:
    # unasync: sync
    # """``sandbox.commands`` of the blocking :class:`~sandpit.Sandbox`."""
    # unasync: async
    """``sandbox.commands`` of :class:`~sandpit.AsyncSandbox`; adds :meth:`spawn`. Output callbacks may be
    coroutine functions."""
    # unasync: end

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
        """Run shell command ``cmd`` in the sandbox.

        By default it waits and returns a :class:`CommandResult`; a non-zero exit code is a result, not an
        exception. With ``on_stdout``/``on_stderr`` the output is streamed to the callbacks over SSE as it
        arrives and the timeout becomes an *idle* timeout (reset by every chunk). With ``background=True`` it
        returns a :class:`AsyncCommandHandle` at once (stdin is then a pipe: see :meth:`send_stdin`; give output
        callbacks to its :meth:`~AsyncCommandHandle.wait`).

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
        """Run ``cmd`` streaming its output chunks to the callbacks over SSE as they arrive (Declaw's
        ``runStream``); ``timeout`` (seconds, default 60) bounds the total run time. Returns the result with the
        accumulated output."""
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

    # unasync: sync
    # def spawn(self, *args: Any, **kwargs: Any) -> Any:
    #     """Not available on the blocking ``Sandbox``: always raises :class:`NotImplementedError` pointing to
    #     :class:`~sandpit.AsyncSandbox`, whose ``commands.spawn`` opens an interactive WebSocket session."""
    #     raise NotImplementedError(_SPAWN_HINT)
    # unasync: async
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
    # unasync: end

    async def list(self) -> ProcessList:
        """The sandbox's running processes (see ``processes.list`` for ended ones too)."""
        return await self._api.list(status="running")

    async def kill(self, pid: ProcessRef) -> bool:
        """SIGKILL process ``pid`` (and its descendants): True if it was killed, False if it had already ended
        (or is not known)."""
        try:
            killed, _ = await self._api.kill(pid)
        except NotFoundError:
            return False
        return killed

    async def send_stdin(self, pid: ProcessRef, data: Union[str, bytes]) -> None:
        """Write ``data`` (text or bytes; include ``\\n`` for newlines) to process ``pid``'s stdin."""
        await self._api.stdin(pid, data)

    async def close_stdin(self, pid: ProcessRef) -> None:
        """Close process ``pid``'s stdin (EOF)."""
        await self._api.stdin(pid, b"", eof=True)

    def connect(self, pid: ProcessRef) -> AsyncCommandHandle:
        """A :class:`AsyncCommandHandle` for an already-running process, without an API call."""
        return AsyncCommandHandle(self._api, pid)
