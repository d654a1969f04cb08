"""Processes: the per-sandbox process API, Hyperbrowser's ``processes`` / ``ProcessHandle`` and microsandbox's
``ExecHandle`` / ``ExecSink``, each in a blocking and an asyncio flavour."""

from __future__ import annotations

import codecs
import inspect
import time
from typing import Any, AsyncGenerator, Callable, Generator, Dict, Iterator, List, Optional, Tuple, Union
from urllib.parse import quote

from ._client import AsyncTransport, SyncTransport
from ._errors import NotFoundError, SandboxTimeoutError
from ._options import Stdin, build_start_request, timeout_ms
from ._stream import ClosingAsyncIterator, aiter_events, iter_events
from ._types import CommandResult, ExecEvent, ExitStatus, ProcessInfo, ProcessList, StreamEvent

__all__ = [
    "AsyncExecHandle",
    "AsyncExecSink",
    "AsyncProcessHandle",
    "AsyncProcesses",
    "ExecHandle",
    "ExecSink",
    "ProcessHandle",
    "Processes",
    "OutputCollector",
]

#: A process reference: its string ``id`` or its numeric ``pid``.
ProcessRef = Union[str, int]
#: A signal: ``"TERM"``, ``"SIGTERM"``, ``15``, ``"RTMIN+1"`` ...
Signal = Union[str, int]
#: An output callback; async variants also accept coroutine functions.
OutputCallback = Callable[[str], Any]

_LONG_POLL_MS = 30_000


def _data(data: Union[str, bytes]) -> bytes:
    return data.encode() if isinstance(data, str) else bytes(data)


class OutputCollector:
    """Collects a process's stdout and stderr from events and forwards decoded text to callbacks."""

    def __init__(self, on_stdout: Optional[OutputCallback] = None, on_stderr: Optional[OutputCallback] = None) -> None:
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.on_stdout = on_stdout
        self.on_stderr = on_stderr
        self._decoders = {
            "stdout": codecs.getincrementaldecoder("utf-8")("replace"),
            "stderr": codecs.getincrementaldecoder("utf-8")("replace"),
        }

    def add(self, ev: ExecEvent) -> Optional[Tuple[OutputCallback, str]]:
        """Record an output event; return the callback to call and its text, if any."""
        if ev.kind not in ("stdout", "stderr"):
            return None
        (self.stdout if ev.kind == "stdout" else self.stderr).extend(ev.data)
        callback = self.on_stdout if ev.kind == "stdout" else self.on_stderr
        text = self._decoders[ev.kind].decode(ev.data)
        if callback is None or not text:
            return None
        return callback, text

    def feed(self, ev: ExecEvent) -> None:
        """Record an event and call its callback synchronously."""
        call = self.add(ev)
        if call is not None:
            call[0](call[1])

    async def afeed(self, ev: ExecEvent) -> None:
        """Record an event and call its callback, awaiting it if it is a coroutine function."""
        call = self.add(ev)
        if call is not None:
            out = call[0](call[1])
            if inspect.isawaitable(out):
                await out

    def result(self, info: ProcessInfo) -> CommandResult:
        """The result of the process that ended as ``info``, with the collected output."""
        return CommandResult.build(info, bytes(self.stdout), bytes(self.stderr))


class _Api:
    """Paths of the per-sandbox process API."""

    def __init__(self, sandbox_id: str) -> None:
        self.prefix = f"/v1/sandboxes/{quote(sandbox_id, safe='')}"

    def p(self, ref: Optional[ProcessRef] = None, tail: str = "") -> str:
        if ref is None:
            return f"{self.prefix}/processes"
        return f"{self.prefix}/processes/{quote(str(ref), safe='')}{tail}"


class ProcessApi(_Api):
    """Blocking calls of ``/v1/sandboxes/{id}/...`` (processes)."""

    def __init__(self, transport: SyncTransport, sandbox_id: str) -> None:
        super().__init__(sandbox_id)
        self.t = transport

    def exec(self, body: Dict[str, Any]) -> CommandResult:
        """``POST /exec``: run and wait."""
        limit = body.get("timeout_ms")
        d = self.t.request(
            "POST", f"{self.prefix}/exec", json=body, wait=True, timeout=limit / 1000 + 30 if limit else None
        )
        return CommandResult.from_json(d)

    def start(self, body: Dict[str, Any]) -> ProcessInfo:
        """``POST /processes``: start in the background."""
        return ProcessInfo.from_json(self.t.request("POST", self.p(), json=body))

    def get(self, ref: ProcessRef) -> ProcessInfo:
        """``GET /processes/{pid}``."""
        return ProcessInfo.from_json(self.t.request("GET", self.p(ref)))

    def list(self, status: Optional[str] = None, limit: Optional[int] = None) -> ProcessList:
        """``GET /processes``."""
        params = {k: v for k, v in (("status", status), ("limit", limit)) if v is not None}
        d = self.t.request("GET", self.p(), params=params)
        return ProcessList(ProcessInfo.from_json(x) for x in d.get("processes", []))

    def wait(self, ref: ProcessRef, timeout: Optional[float] = None, output: bool = True) -> CommandResult:
        """``GET /processes/{pid}/wait``, long-polling in 30 s slices; ``timeout`` (seconds) bounds the total
        and raises :class:`SandboxTimeoutError` when it passes (the process keeps running)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            slice_ms = _LONG_POLL_MS
            if deadline is not None:
                slice_ms = max(0, min(slice_ms, int((deadline - time.monotonic()) * 1000)))
            params = {"timeout_ms": slice_ms, "output": "true" if output else "false"}
            try:
                d = self.t.request("GET", self.p(ref, "/wait"), params=params, wait=True, timeout=slice_ms / 1000 + 30)
                return CommandResult.from_json(d)
            except SandboxTimeoutError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise

    def stdin(self, ref: ProcessRef, data: Union[str, bytes], eof: bool = False) -> None:
        """``POST /processes/{pid}/stdin``."""
        params = {"eof": "true"} if eof else None
        self.t.request("POST", self.p(ref, "/stdin"), content=_data(data), params=params)

    def signal(self, ref: ProcessRef, signal: Signal) -> None:
        """``POST /processes/{pid}/signal``."""
        self.t.request("POST", self.p(ref, "/signal"), json={"signal": signal})

    def resize(self, ref: ProcessRef, cols: int, rows: int) -> None:
        """``POST /processes/{pid}/resize``."""
        self.t.request("POST", self.p(ref, "/resize"), json={"cols": cols, "rows": rows})

    def kill(self, ref: ProcessRef) -> Tuple[bool, ProcessInfo]:
        """``DELETE /processes/{pid}``: SIGKILL the process tree."""
        d = self.t.request("DELETE", self.p(ref))
        return bool(d["killed"]), ProcessInfo.from_json(d["process"])

    def events(self, ref: ProcessRef, from_seq: int = 1) -> Generator[ExecEvent, None, None]:
        """The SSE event stream, resumed when cut."""
        return iter_events(self.t, self.p(ref, "/events"), from_seq)


class AsyncProcessApi(_Api):
    """Async calls of ``/v1/sandboxes/{id}/...`` (processes); see :class:`ProcessApi`."""

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
        """``POST /processes``."""
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
        """``GET /processes/{pid}/wait``; see :meth:`ProcessApi.wait`."""
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
        """``DELETE /processes/{pid}``."""
        d = await self.t.request("DELETE", self.p(ref))
        return bool(d["killed"]), ProcessInfo.from_json(d["process"])

    def events(self, ref: ProcessRef, from_seq: int = 1) -> ClosingAsyncIterator[ExecEvent]:
        """The SSE event stream, resumed when cut."""
        return aiter_events(self.t, self.p(ref, "/events"), from_seq)


def _stream_event(ev: ExecEvent, collector: OutputCollector) -> StreamEvent:
    collector.add(ev)
    if ev.kind == "exited" and ev.info is not None:
        return StreamEvent(type="exit", result=collector.result(ev.info))
    return StreamEvent(type=ev.kind, data=ev.text, seq=ev.seq)


def start_body(
    command: Optional[str],
    args: Optional[List[str]],
    *,
    cwd: Optional[str] = None,
    env: Optional[Dict[str, str]] = None,
    envs: Optional[Dict[str, str]] = None,
    user: Optional[str] = None,
    run_as: Optional[str] = None,
    timeout: Optional[float] = None,
    timeout_in_ms: Optional[float] = None,
    stdin: Stdin = None,
    tty: Any = None,
    id: Optional[str] = None,
) -> Dict[str, Any]:
    """A start body from the option spellings shared by ``exec`` and ``processes.start``: ``args`` given means
    ``[command, *args]`` run without a shell, else ``command`` is a shell string."""
    if run_as is not None and user is not None and run_as != user:
        raise ValueError("give user or run_as, not both")
    return build_start_request(
        cmd=command if args is None else None,
        argv=None if args is None else [str(command), *args],
        cwd=cwd,
        env=env,
        envs=envs,
        user=user if user is not None else run_as,
        timeout_ms=timeout_ms(timeout, timeout_in_ms),
        stdin=stdin,
        tty=tty,
        id=id,
    )


class ProcessHandle:
    """A background process (Hyperbrowser's process handle), from :meth:`Processes.start` or
    :meth:`Sandbox.get_process`."""

    def __init__(self, api: ProcessApi, info: ProcessInfo) -> None:
        self._api = api
        self.info = info

    def __repr__(self) -> str:
        return f"ProcessHandle(id={self.id!r}, pid={self.pid!r}, status={self.info.status!r})"

    @property
    def id(self) -> str:
        """The process's string id."""
        return self.info.id

    @property
    def pid(self) -> Optional[int]:
        """The process's pid inside the sandbox."""
        return self.info.pid

    def refresh(self) -> ProcessInfo:
        """Fetch the process's current info (and keep it in :attr:`info`)."""
        self.info = self._api.get(self.id)
        return self.info

    get_info = refresh

    def write_stdin(self, data: Union[str, bytes] = b"", eof: bool = False) -> None:
        """Write ``data`` to the process's stdin; ``eof=True`` closes stdin afterwards."""
        self._api.stdin(self.id, data, eof=eof)

    def close_stdin(self) -> None:
        """Close stdin: the process reads EOF."""
        self._api.stdin(self.id, b"", eof=True)

    def signal(self, signal: Signal = "TERM") -> None:
        """Send a signal to the process's group (``"TERM"``, ``"SIGINT"``, ``9`` ...)."""
        self._api.signal(self.id, signal)

    def resize(self, cols: int, rows: int) -> None:
        """Resize the process's terminal (``tty`` processes only)."""
        self._api.resize(self.id, cols, rows)

    def kill(self) -> bool:
        """SIGKILL the whole process tree; False if it had already ended."""
        killed, self.info = self._api.kill(self.id)
        return killed

    def wait(self, timeout: Optional[float] = None) -> CommandResult:
        """Wait for the process to end and return its result (a non-zero exit is a result, not an error).
        ``timeout`` in seconds raises :class:`SandboxTimeoutError` if it passes first."""
        result = self._api.wait(self.id, timeout=timeout)
        self.info = result.info or self.info
        return result

    def result(self, timeout: Optional[float] = None) -> CommandResult:
        """Alias of :meth:`wait`."""
        return self.wait(timeout)

    def events(self, from_seq: int = 1) -> Generator[ExecEvent, None, None]:
        """The process's raw events from ``from_seq`` (default: everything kept) until it exits."""
        return self._api.events(self.id, from_seq)

    def stream(self, from_seq: int = 1) -> Generator[StreamEvent, None, None]:
        """Stream the process's output as :class:`StreamEvent` values over SSE, ending with ``type == "exit"``
        (whose ``result`` holds the exit code and the output seen)."""
        collector = OutputCollector()
        for ev in self._api.events(self.id, from_seq):
            yield _stream_event(ev, collector)


class AsyncProcessHandle:
    """Async :class:`ProcessHandle`."""

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
        """Write ``data`` to stdin; ``eof=True`` closes stdin afterwards."""
        await self._api.stdin(self.id, data, eof=eof)

    async def close_stdin(self) -> None:
        """Close stdin: the process reads EOF."""
        await self._api.stdin(self.id, b"", eof=True)

    async def signal(self, signal: Signal = "TERM") -> None:
        """Send a signal to the process's group."""
        await self._api.signal(self.id, signal)

    async def resize(self, cols: int, rows: int) -> None:
        """Resize the process's terminal (``tty`` processes only)."""
        await self._api.resize(self.id, cols, rows)

    async def kill(self) -> bool:
        """SIGKILL the whole process tree; False if it had already ended."""
        killed, self.info = await self._api.kill(self.id)
        return killed

    async def wait(self, timeout: Optional[float] = None) -> CommandResult:
        """Wait for the process to end and return its result; see :meth:`ProcessHandle.wait`."""
        result = await self._api.wait(self.id, timeout=timeout)
        self.info = result.info or self.info
        return result

    async def result(self, timeout: Optional[float] = None) -> CommandResult:
        """Alias of :meth:`wait`."""
        return await self.wait(timeout)

    def events(self, from_seq: int = 1) -> ClosingAsyncIterator[ExecEvent]:
        """The process's raw events from ``from_seq`` until it exits (``async for event in ...``)."""
        return self._api.events(self.id, from_seq)

    def stream(self, from_seq: int = 1) -> ClosingAsyncIterator[StreamEvent]:
        """Stream the output as :class:`StreamEvent` values (``async for event in process.stream()``); see
        :meth:`ProcessHandle.stream`."""
        return ClosingAsyncIterator(self._stream(from_seq), lambda ev: ev.type == "exit")

    async def _stream(self, from_seq: int) -> AsyncGenerator[StreamEvent, None]:
        collector = OutputCollector()
        events = self._api.events(self.id, from_seq)
        try:
            async for ev in events:
                yield _stream_event(ev, collector)
        finally:
            await events.aclose()


class Processes:
    """``sandbox.processes`` (Hyperbrowser's spelling): start, list and look up background processes."""

    def __init__(self, api: ProcessApi) -> None:
        self._api = api

    def start(
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
    ) -> ProcessHandle:
        """Start ``command`` (a shell string; or a program when ``args`` is given) in the background and return
        its handle at once. Stdin is a pipe by default (write it with :meth:`ProcessHandle.write_stdin`).
        ``timeout`` is in seconds, ``timeout_ms`` in milliseconds; ``run_as`` is an alias of ``user``; ``id``
        makes the start idempotent."""
        body = start_body(
            command, args, cwd=cwd, env=env, envs=envs, user=user, run_as=run_as, timeout=timeout,
            timeout_in_ms=timeout_ms, stdin=stdin, tty=tty, id=id,
        )
        return ProcessHandle(self._api, self._api.start(body))

    def list(self, status: Optional[str] = None, limit: Optional[int] = None) -> ProcessList:
        """The sandbox's processes, newest first, optionally only those in ``status`` and at most ``limit``."""
        return self._api.list(status, limit)

    def get(self, id: ProcessRef) -> ProcessHandle:
        """The handle of process ``id`` (its string id or numeric pid); :class:`NotFoundError` if unknown."""
        return ProcessHandle(self._api, self._api.get(id))


class AsyncProcesses:
    """Async :class:`Processes`."""

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
        """Start a background process; see :meth:`Processes.start`."""
        body = start_body(
            command, args, cwd=cwd, env=env, envs=envs, user=user, run_as=run_as, timeout=timeout,
            timeout_in_ms=timeout_ms, stdin=stdin, tty=tty, id=id,
        )
        return AsyncProcessHandle(self._api, await self._api.start(body))

    async def list(self, status: Optional[str] = None, limit: Optional[int] = None) -> ProcessList:
        """The sandbox's processes, newest first; see :meth:`Processes.list`."""
        return await self._api.list(status, limit)

    async def get(self, id: ProcessRef) -> AsyncProcessHandle:
        """The handle of process ``id``; :class:`NotFoundError` if unknown."""
        return AsyncProcessHandle(self._api, await self._api.get(id))


class ExecSink:
    """Writer of a streaming exec's stdin (microsandbox's ``ExecSink``); a context manager that closes it."""

    def __init__(self, api: ProcessApi, ref: ProcessRef) -> None:
        self._api = api
        self._ref = ref

    def write(self, data: Union[str, bytes]) -> None:
        """Write bytes (or UTF-8 text) to the process's stdin."""
        self._api.stdin(self._ref, data)

    def close(self) -> None:
        """Close stdin: the process reads EOF."""
        self._api.stdin(self._ref, b"", eof=True)

    def __enter__(self) -> ExecSink:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class AsyncExecSink:
    """Async :class:`ExecSink`; an async context manager that closes stdin."""

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


class ExecHandle:
    """A streaming execution (microsandbox's ``ExecHandle``) from :meth:`Sandbox.exec_stream`: iterate it for
    :class:`ExecEvent` values (``started``, ``stdout``, ``stderr``, ``lost``, ``exited``), or ``recv()`` them one
    at a time; ``wait()``/``collect()`` drain the rest. Leaving a ``with`` block kills the process if it still
    runs."""

    def __init__(self, api: ProcessApi, info: ProcessInfo, stdin_pipe: bool) -> None:
        self._api = api
        self.info = info
        self._events: Generator[ExecEvent, None, None] = api.events(info.id)
        self._collector = OutputCollector()
        self._stdin: Optional[ExecSink] = ExecSink(api, info.id) if stdin_pipe else None
        self._exit: Optional[ProcessInfo] = None

    @property
    def id(self) -> str:
        """The process's string id."""
        return self.info.id

    @property
    def pid(self) -> Optional[int]:
        """The process's pid inside the sandbox."""
        return self.info.pid

    def recv(self) -> Optional[ExecEvent]:
        """The next event, or ``None`` once the ``exited`` event has been delivered."""
        if self._exit is not None:
            return None
        ev = next(self._events, None)
        if ev is None:
            return None
        self._collector.add(ev)
        if ev.kind == "exited":
            self._exit = ev.info
        return ev

    def __iter__(self) -> Iterator[ExecEvent]:
        while True:
            ev = self.recv()
            if ev is None:
                return
            yield ev

    def take_stdin(self) -> Optional[ExecSink]:
        """The stdin writer, once (``None`` after the first call, or when stdin is not a pipe)."""
        sink, self._stdin = self._stdin, None
        return sink

    def _drain(self) -> ProcessInfo:
        for _ in self:
            pass
        if self._exit is None:  # pragma: no cover - the stream always ends with exited or raises
            self._exit = self._api.wait(self.id, output=False).info
        assert self._exit is not None
        return self._exit

    def wait(self) -> ExitStatus:
        """Drain the remaining events and return the exit status."""
        info = self._drain()
        code = -1 if info.exit_code is None else info.exit_code
        return ExitStatus(code, code == 0)

    def collect(self) -> CommandResult:
        """Drain the remaining events and return the result with all output this handle received."""
        return self._collector.result(self._drain())

    def signal(self, signal: Signal) -> None:
        """Send a POSIX signal (name or number)."""
        self._api.signal(self.id, signal)

    def kill(self) -> None:
        """SIGKILL the process tree."""
        self._api.kill(self.id)

    def __enter__(self) -> ExecHandle:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._exit is None:
            try:
                self._api.kill(self.id)
            except NotFoundError:
                pass
        self._events.close()


class AsyncExecHandle:
    """Async :class:`ExecHandle`: ``async for event in handle``, ``await handle.recv()``, ``await
    handle.collect()``; leaving an ``async with`` block kills the process if it still runs."""

    def __init__(self, api: AsyncProcessApi, info: ProcessInfo, stdin_pipe: bool) -> None:
        self._api = api
        self.info = info
        self._events = api.events(info.id)
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

    def __aiter__(self) -> AsyncExecHandle:
        return self

    async def __anext__(self) -> ExecEvent:
        ev = await self.recv()
        if ev is None:
            raise StopAsyncIteration
        return ev

    async def take_stdin(self) -> Optional[AsyncExecSink]:
        """The stdin writer, once (``None`` after the first call, or when stdin is not a pipe)."""
        sink, self._stdin = self._stdin, None
        return sink

    async def _drain(self) -> ProcessInfo:
        while await self.recv() is not None:
            pass
        if self._exit is None:  # pragma: no cover
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

