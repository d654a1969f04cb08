# unasync: sync
# """Processes, blocking: the per-sandbox process API, Hyperbrowser's ``processes`` / ``ProcessHandle`` and
# microsandbox's ``ExecHandle`` / ``ExecSink``."""
# unasync: async
"""Processes, asyncio: the per-sandbox process API, Hyperbrowser's ``processes`` / ``ProcessHandle`` and
microsandbox's ``ExecHandle`` / ``ExecSink``."""
# unasync: end

from __future__ import annotations

# unasync: sync
# import time
# from typing import Any, Dict, Generator, Iterator, List, Optional, Tuple, Union
# unasync: async
import asyncio
import time
from typing import Any, AsyncGenerator, Dict, List, Optional, Tuple, Union
# unasync: end

import httpx

from .._errors import NotFoundError, SandboxTimeoutError
from .._options import Stdin
from .._process import _LONG_POLL_MS, OutputCollector, ProcessRef, Signal, _Api, _data, _stream_event, start_body
# unasync: sync
# from .._stream import _RETRYABLE, closing_iter, SseParser, SyncWsEventStream, _Cursor, decode_sse, resume_delay
# unasync: async
from .._stream import _RETRYABLE, ClosingAsyncIterator, SseParser, WsEventStream, _Cursor, decode_sse, resume_delay
# unasync: end
from .._types import CommandResult, ExecEvent, ExitStatus, ProcessInfo, ProcessList, StreamEvent
from .transport import AsyncTransport

__all__ = ["AsyncExecHandle", "AsyncExecSink", "AsyncProcessApi", "AsyncProcessHandle", "AsyncProcesses"]


async def _events(transport: AsyncTransport, path: str, from_seq: int) -> AsyncGenerator[ExecEvent, None]:
    """The SSE events of ``path`` (``.../processes/{pid}/events``) until ``exited``, resuming cut connections.
    Raises :class:`StreamError` when resuming keeps failing; other API errors propagate."""
    cur = _Cursor(from_seq)
    failures = 0
    while True:
        cause: BaseException
        try:
            async with transport.stream(path, **cur.sse_request()) as resp:
                parser = SseParser()
                async for line in resp.aiter_lines():
                    msg = parser.feed(line)
                    ev = decode_sse(msg) if msg is not None else None
                    if ev is None or not cur.accept(ev):
                        continue
                    failures = 0
                    yield ev
                    if ev.kind == "exited":
                        return
            cause = EOFError("the stream ended before the exited event")
        except (httpx.HTTPError, *_RETRYABLE) as exc:
            cause = exc
        failures += 1
        await asyncio.sleep(resume_delay(path, cur, failures, cause))


# unasync: sync
# def _follow(
#     transport: SyncTransport, ws_path: str, sse_path: str, from_seq: int
# ) -> Generator[ExecEvent, None, None]:
#     """A process's events until ``exited`` over its WebSocket session (``ws_path``): binary frames, no JSON or
#     base64 to decode, and held back by the socket's own flow control when the caller reads slowly. When the
#     socket cannot be opened (a proxy that drops ``Upgrade``, an old daemon, an API error, a ``websockets``
#     before 14.0) the events come over SSE (``sse_path``) instead, which reports any API error itself. Both
#     resume a cut connection."""
#     ws = SyncWsEventStream(transport, ws_path, from_seq)
#     try:
#         ws.connect()
#     except Exception:  # noqa: BLE001 - any failure to open the socket: SSE serves, or reports the error
#         yield from _events(transport, sse_path, from_seq)
#         return
#     try:
#         yield from ws
#     finally:
#         ws.close()
# unasync: async
async def _follow(
    transport: AsyncTransport, ws_path: str, sse_path: str, from_seq: int
) -> AsyncGenerator[ExecEvent, None]:
    """A process's events until ``exited`` over its WebSocket session (``ws_path``): binary frames, no JSON or
    base64 to decode, and held back by the socket's own flow control when the caller reads slowly. When the
    socket cannot be opened (a proxy that drops ``Upgrade``, an old daemon, an API error) the events come over
    SSE (``sse_path``) instead, which reports any API error itself. Both resume a cut connection."""
    ws = WsEventStream(transport, ws_path, from_seq)
    try:
        await ws.connect()
    except Exception:  # noqa: BLE001 - any failure to open the socket: SSE serves, or reports the error
        async for ev in _events(transport, sse_path, from_seq):
            yield ev
        return
    try:
        async for ev in ws:
            yield ev
    finally:
        await ws.close()
# unasync: end


class AsyncProcessApi(_Api):
    """The calls of ``/v1/sandboxes/{id}/...`` (processes)."""

    def __init__(self, transport: AsyncTransport, sandbox_id: str) -> None:
        super().__init__(sandbox_id)
        self.t = transport

    async def exec(self, body: Dict[str, Any]) -> CommandResult:
        """``POST /exec``: run and wait."""
        limit = body.get("timeout_ms")
        d = await self.t.request(
            "POST", f"{self.prefix}/exec", json=body, wait=True, timeout=limit / 1000 + 30 if limit else None
        )
        return CommandResult.from_json(d)

    async def start(self, body: Dict[str, Any]) -> ProcessInfo:
        """``POST /processes``: start in the background."""
        return ProcessInfo.from_json(await self.t.request("POST", self.p(), json=body))

    async def get(self, ref: ProcessRef) -> ProcessInfo:
        """``GET /processes/{pid}``."""
        return ProcessInfo.from_json(await self.t.request("GET", self.p(ref)))

    async def list(self, status: Optional[str] = None, limit: Optional[int] = None) -> ProcessList:
        """``GET /processes``."""
        params = {k: v for k, v in (("status", status), ("limit", limit)) if v is not None}
        d = await self.t.request("GET", self.p(), params=params)
        return ProcessList(ProcessInfo.from_json(x) for x in d.get("processes", []))

    async def wait(self, ref: ProcessRef, timeout: Optional[float] = None, output: bool = True) -> CommandResult:
        """``GET /processes/{pid}/wait``, long-polling in 30 s slices; ``timeout`` (seconds) bounds the total
        and raises :class:`SandboxTimeoutError` when it passes (the process keeps running)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            slice_ms = _LONG_POLL_MS
            if deadline is not None:
                slice_ms = max(0, min(slice_ms, int((deadline - time.monotonic()) * 1000)))
            params = {"timeout_ms": slice_ms, "output": "true" if output else "false"}
            try:
                d = await self.t.request(
                    "GET", self.p(ref, "/wait"), params=params, wait=True, timeout=slice_ms / 1000 + 30
                )
                return CommandResult.from_json(d)
            except SandboxTimeoutError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise

    async def stdin(self, ref: ProcessRef, data: Union[str, bytes], eof: bool = False) -> None:
        """``POST /processes/{pid}/stdin``."""
        params = {"eof": "true"} if eof else None
        await self.t.request("POST", self.p(ref, "/stdin"), content=_data(data), params=params)

    async def signal(self, ref: ProcessRef, signal: Signal) -> None:
        """``POST /processes/{pid}/signal``."""
        await self.t.request("POST", self.p(ref, "/signal"), json={"signal": signal})

    async def resize(self, ref: ProcessRef, cols: int, rows: int) -> None:
        """``POST /processes/{pid}/resize``."""
        await self.t.request("POST", self.p(ref, "/resize"), json={"cols": cols, "rows": rows})

    async def kill(self, ref: ProcessRef) -> Tuple[bool, ProcessInfo]:
        """``DELETE /processes/{pid}``: SIGKILL the process tree."""
        d = await self.t.request("DELETE", self.p(ref))
        return bool(d["killed"]), ProcessInfo.from_json(d["process"])

    def events(self, ref: ProcessRef, from_seq: int = 1) -> ClosingAsyncIterator[ExecEvent]:
        """The event stream, over the WebSocket session (SSE when no socket can be opened), resumed when cut."""
        gen = _follow(self.t, self.p(ref, "/ws"), self.p(ref, "/events"), from_seq)
        return ClosingAsyncIterator(gen, lambda ev: ev.kind == "exited")


class AsyncProcessHandle:
    """A background process (Hyperbrowser's process handle), from :meth:`AsyncProcesses.start` or
    :meth:`AsyncSandbox.get_process`."""

    def __init__(self, api: AsyncProcessApi, info: ProcessInfo) -> None:
        self._api = api
        self.info = info

    def __repr__(self) -> str:
        return f"AsyncProcessHandle(id={self.id!r}, pid={self.pid!r}, status={self.info.status!r})"

    @property
    def id(self) -> str:
        """The process's string id."""
        return self.info.id

    @property
    def pid(self) -> Optional[int]:
        """The process's pid inside the sandbox."""
        return self.info.pid

    async def refresh(self) -> ProcessInfo:
        """Fetch the process's current info (and keep it in :attr:`info`)."""
        self.info = await self._api.get(self.id)
        return self.info

    get_info = refresh

    async def write_stdin(self, data: Union[str, bytes] = b"", eof: bool = False) -> None:
        """Write ``data`` to the process's stdin; ``eof=True`` closes stdin afterwards."""
        await self._api.stdin(self.id, data, eof=eof)

    async def close_stdin(self) -> None:
        """Close stdin: the process reads EOF."""
        await self._api.stdin(self.id, b"", eof=True)

    async def signal(self, signal: Signal = "TERM") -> None:
        """Send a signal to the process's group (``"TERM"``, ``"SIGINT"``, ``9`` ...)."""
        await self._api.signal(self.id, signal)

    async def resize(self, cols: int, rows: int) -> None:
        """Resize the process's terminal (``tty`` processes only)."""
        await self._api.resize(self.id, cols, rows)

    async def kill(self) -> bool:
        """SIGKILL the whole process tree; False if it had already ended."""
        killed, self.info = await self._api.kill(self.id)
        return killed

    async def wait(self, timeout: Optional[float] = None) -> CommandResult:
        """Wait for the process to end and return its result (a non-zero exit is a result, not an error).
        ``timeout`` in seconds raises :class:`SandboxTimeoutError` if it passes first."""
        result = await self._api.wait(self.id, timeout=timeout)
        self.info = result.info or self.info
        return result

    async def result(self, timeout: Optional[float] = None) -> CommandResult:
        """Alias of :meth:`wait`."""
        return await self.wait(timeout)

    def events(self, from_seq: int = 1) -> ClosingAsyncIterator[ExecEvent]:
        """The process's raw events from ``from_seq`` (default: everything kept) until it exits."""
        return self._api.events(self.id, from_seq)

    def stream(self, from_seq: int = 1) -> ClosingAsyncIterator[StreamEvent]:
        """Stream the process's output as :class:`StreamEvent` values over SSE, ending with ``type == "exit"``
        (whose ``result`` holds the exit code and the output seen)."""
        return ClosingAsyncIterator(self._stream(from_seq), lambda ev: ev.type == "exit")

    async def _stream(self, from_seq: int) -> AsyncGenerator[StreamEvent, None]:
        collector = OutputCollector()
        events = self._api.events(self.id, from_seq)
        try:
            async for ev in events:
                yield _stream_event(ev, collector)
        finally:
            await events.aclose()


class AsyncProcesses:
    """``sandbox.processes`` (Hyperbrowser's spelling): start, list and look up background processes."""

    def __init__(self, api: AsyncProcessApi) -> None:
        self._api = api

    async def start(
        self,
        command: str,
        args: Optional[List[str]] = None,
        *,
        cwd: Optional[str] = None,
        env: Optional[Dict[str, str]] = None,
        envs: Optional[Dict[str, str]] = None,
        user: Optional[str] = None,
        run_as: Optional[str] = None,
        timeout: Optional[float] = None,
        timeout_ms: Optional[float] = None,
        stdin: Stdin = "pipe",
        tty: Any = None,
        id: Optional[str] = None,
    ) -> AsyncProcessHandle:
        """Start ``command`` (a shell string; or a program when ``args`` is given) in the background and return
        its handle at once. Stdin is a pipe by default (write it with :meth:`AsyncProcessHandle.write_stdin`).
        ``timeout`` is in seconds, ``timeout_ms`` in milliseconds; ``run_as`` is an alias of ``user``; ``id``
        makes the start idempotent."""
        body = start_body(
            command, args, cwd=cwd, env=env, envs=envs, user=user, run_as=run_as, timeout=timeout,
            timeout_in_ms=timeout_ms, stdin=stdin, tty=tty, id=id,
        )
        return AsyncProcessHandle(self._api, await self._api.start(body))

    async def list(self, status: Optional[str] = None, limit: Optional[int] = None) -> ProcessList:
        """The sandbox's processes, newest first, optionally only those in ``status`` and at most ``limit``."""
        return await self._api.list(status, limit)

    async def get(self, id: ProcessRef) -> AsyncProcessHandle:
        """The handle of process ``id`` (its string id or numeric pid); :class:`NotFoundError` if unknown."""
        return AsyncProcessHandle(self._api, await self._api.get(id))


class AsyncExecSink:
    # unasync: sync
    # """Writer of a streaming exec's stdin (microsandbox's ``ExecSink``); a context manager that closes it."""
    # unasync: async
    """Writer of a streaming exec's stdin (microsandbox's ``ExecSink``); an async context manager that closes
    it."""
    # unasync: end

    def __init__(self, api: AsyncProcessApi, ref: ProcessRef) -> None:
        self._api = api
        self._ref = ref

    async def write(self, data: Union[str, bytes]) -> None:
        """Write bytes (or UTF-8 text) to the process's stdin."""
        await self._api.stdin(self._ref, data)

    async def close(self) -> None:
        """Close stdin: the process reads EOF."""
        await self._api.stdin(self._ref, b"", eof=True)

    async def __aenter__(self) -> AsyncExecSink:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


class AsyncExecHandle:
    # unasync: sync
    # """A streaming execution (microsandbox's ``ExecHandle``) from :meth:`Sandbox.exec_stream`: iterate it for
    # :class:`ExecEvent` values (``started``, ``stdout``, ``stderr``, ``lost``, ``exited``), or ``recv()`` them one
    # at a time; ``wait()``/``collect()`` drain the rest. Leaving a ``with`` block kills the process if it still
    # runs."""
    # unasync: async
    """A streaming execution (microsandbox's ``ExecHandle``) from :meth:`AsyncSandbox.exec_stream`: ``async for
    event in handle`` gives :class:`ExecEvent` values (``started``, ``stdout``, ``stderr``, ``lost``, ``exited``),
    ``await handle.recv()`` one at a time; ``await handle.wait()``/``collect()`` drain the rest. Leaving an ``async
    with`` block kills the process if it still runs."""
    # unasync: end

    def __init__(self, api: AsyncProcessApi, info: ProcessInfo, stdin_pipe: bool) -> None:
        self._api = api
        self.info = info
        self._events: ClosingAsyncIterator[ExecEvent] = api.events(info.id)
        self._collector = OutputCollector()
        self._stdin: Optional[AsyncExecSink] = AsyncExecSink(api, info.id) if stdin_pipe else None
        self._exit: Optional[ProcessInfo] = None

    @property
    def id(self) -> str:
        """The process's string id."""
        return self.info.id

    @property
    def pid(self) -> Optional[int]:
        """The process's pid inside the sandbox."""
        return self.info.pid

    async def recv(self) -> Optional[ExecEvent]:
        """The next event, or ``None`` once the ``exited`` event has been delivered."""
        if self._exit is not None:
            return None
        try:
            ev = await self._events.__anext__()
        except StopAsyncIteration:
            return None
        self._collector.add(ev)
        if ev.kind == "exited":
            self._exit = ev.info
        return ev

    # unasync: sync
    # def __iter__(self) -> Iterator[ExecEvent]:
    #     while True:
    #         ev = self.recv()
    #         if ev is None:
    #             return
    #         yield ev
    # unasync: async
    def __aiter__(self) -> AsyncExecHandle:
        return self

    async def __anext__(self) -> ExecEvent:
        ev = await self.recv()
        if ev is None:
            raise StopAsyncIteration
        return ev
    # unasync: end

    async def take_stdin(self) -> Optional[AsyncExecSink]:
        """The stdin writer, once (``None`` after the first call, or when stdin is not a pipe)."""
        sink, self._stdin = self._stdin, None
        return sink

    async def _drain(self) -> ProcessInfo:
        while await self.recv() is not None:
            pass
        if self._exit is None:  # pragma: no cover - the stream always ends with exited or raises
            self._exit = (await self._api.wait(self.id, output=False)).info
        assert self._exit is not None
        return self._exit

    async def wait(self) -> ExitStatus:
        """Drain the remaining events and return the exit status."""
        info = await self._drain()
        code = -1 if info.exit_code is None else info.exit_code
        return ExitStatus(code, code == 0)

    async def collect(self) -> CommandResult:
        """Drain the remaining events and return the result with all output this handle received."""
        return self._collector.result(await self._drain())

    async def signal(self, signal: Signal) -> None:
        """Send a POSIX signal (name or number)."""
        await self._api.signal(self.id, signal)

    async def kill(self) -> None:
        """SIGKILL the process tree."""
        await self._api.kill(self.id)

    async def __aenter__(self) -> AsyncExecHandle:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._exit is None:
            try:
                await self._api.kill(self.id)
            except NotFoundError:
                pass
        await self._events.aclose()
