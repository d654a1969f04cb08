"""Output streams with resume: SSE (``/events``; the loop reading them is in ``_async/process.py``) and the
WebSocket session (``/ws``: :class:`WsEventStream` on asyncio, :class:`SyncWsEventStream` blocking).

Both transports deliver the same :class:`~sandpit.ExecEvent` values. Every output chunk has a ``seq``; when a
stream is cut before the final ``exited`` event, it is reopened from the last ``seq`` seen (SSE
``Last-Event-ID``, WebSocket ``?from_seq=``) with a short backoff, duplicates are dropped, and only after
:data:`MAX_RESUME_ATTEMPTS` failed reopenings in a row does it give up with :class:`~sandpit.StreamError`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import time
from dataclasses import dataclass, field
from typing import Any, AsyncGenerator, Callable, Dict, Generator, Generic, List, Optional, Tuple, TypeVar, Union

from ._async.transport import AsyncTransport
from ._sync.transport import SyncTransport
from ._client import error_from_response
from ._errors import InternalError, SandboxError, StreamError, UnavailableError
from ._types import ExecEvent, LostOutput, ProcessInfo

__all__ = [
    "MAX_RESUME_ATTEMPTS",
    "ClosingAsyncIterator",
    "SseMessage",
    "SseParser",
    "SyncWsEventStream",
    "WsEventStream",
    "closing_iter",
    "resume_delay",
]

#: How many times in a row a cut stream is reopened before :class:`StreamError` is raised. With the backoff
#: (0.1 s doubling up to 2 s) that is about 9 s: enough to ride out a daemon restart.
MAX_RESUME_ATTEMPTS = 8
_WS_HEADER = struct.Struct(">BQ")
_RETRYABLE = (UnavailableError, InternalError)
T = TypeVar("T")


def _backoff(attempt: int) -> float:
    return float(min(0.1 * (2 ** (attempt - 1)), 2.0))


@dataclass
class SseMessage:
    """One dispatched Server-Sent Event."""

    event: str = "message"
    data: str = ""
    id: Optional[str] = None


@dataclass
class SseParser:
    """An incremental SSE parser: feed it lines (without their line ending), get messages back."""

    _event: Optional[str] = None
    _data: List[str] = field(default_factory=list)
    _id: Optional[str] = None

    def feed(self, line: str) -> Optional[SseMessage]:
        """Consume one line; return a message when this (blank) line completes one."""
        if line == "":
            if not self._data and self._event is None:
                return None
            msg = SseMessage(self._event or "message", "\n".join(self._data), self._id)
            self._event, self._data, self._id = None, [], None
            return msg
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            self._id = value
        return None


def _output_event(kind: str, d: Dict[str, Any]) -> ExecEvent:
    if d.get("data") is not None:
        data = str(d["data"]).encode()
    else:
        data = base64.b64decode(d.get("data_b64") or "")
    return ExecEvent(kind=kind, data=data, seq=int(d["seq"]))


def _info_event(kind: str, d: Dict[str, Any]) -> ExecEvent:
    info = ProcessInfo.from_json(d)
    return ExecEvent(kind=kind, pid=info.pid, code=info.exit_code if kind == "exited" else None, info=info)


def decode_sse(msg: SseMessage) -> Optional[ExecEvent]:
    """Decode one SSE message of ``/events``; keepalives and event kinds this SDK does not know give ``None``."""
    if msg.event in ("stdout", "stderr"):
        return _output_event(msg.event, json.loads(msg.data))
    if msg.event in ("started", "exited"):
        return _info_event(msg.event, json.loads(msg.data))
    if msg.event == "lost":
        d = json.loads(msg.data)
        return ExecEvent(kind="lost", lost=LostOutput(int(d["from_seq"]), int(d["to_seq"]), int(d["bytes"])))
    if msg.event == "error":
        # The daemon ended the stream on purpose (the sandbox's agent stopped answering): raised as the
        # matching error; an ``unavailable`` one is a cut like any other, resumed once the agent answers.
        raise error_from_response(0, json.dumps({"error": json.loads(msg.data)}))
    return None


def decode_ws(message: Union[str, bytes]) -> Union[ExecEvent, SandboxError, None]:
    """Decode one WebSocket message of ``/ws``: output frames and ``started``/``lost``/``exited`` become
    events, an ``error`` control frame becomes the matching (unraised) exception, anything else ``None``."""
    if isinstance(message, (bytes, bytearray, memoryview)):
        raw = bytes(message)
        if len(raw) < _WS_HEADER.size:
            return None
        channel, seq = _WS_HEADER.unpack_from(raw)
        kind = {1: "stdout", 2: "stderr"}.get(channel)
        if kind is None:
            return None
        return ExecEvent(kind=kind, data=raw[_WS_HEADER.size :], seq=seq)
    d = json.loads(message)
    kind = d.get("type")
    if kind in ("started", "exited"):
        return _info_event(kind, d["process"])
    if kind == "lost":
        return ExecEvent(kind="lost", lost=LostOutput(int(d["from_seq"]), int(d["to_seq"]), int(d["bytes"])))
    if kind == "error":
        body = json.dumps({"error": {"code": d.get("code", "unknown"), "message": d.get("message", "")}})
        return error_from_response(0, body)
    return None


class _Cursor:
    """Where a stream is: the last seq delivered, and whether ``started`` was already delivered."""

    def __init__(self, from_seq: int) -> None:
        self.from_seq = max(1, from_seq)
        self.last_seq = self.from_seq - 1
        self.started = False
        self.connections = 0

    def accept(self, ev: ExecEvent) -> bool:
        """Whether to deliver ``ev`` (drops replays after a resume) and advance."""
        if ev.kind == "started":
            if self.started:
                return False
            self.started = True
        elif ev.seq is not None:
            if ev.seq <= self.last_seq:
                return False
            self.last_seq = ev.seq
        elif ev.lost is not None:
            self.last_seq = max(self.last_seq, ev.lost.to_seq)
        return True

    def sse_request(self) -> Dict[str, Any]:
        """Query/headers of the next SSE connection: ``from_seq`` the first time, ``Last-Event-ID`` on resume."""
        self.connections += 1
        if self.connections > 1 and self.last_seq > 0:
            return {"headers": {"Last-Event-ID": str(self.last_seq)}}
        if self.from_seq > 1:
            return {"params": {"from_seq": self.from_seq}}
        return {}


def _give_up(path: str, cur: _Cursor, cause: BaseException) -> StreamError:
    return StreamError(
        f"stream {path} was cut after seq {cur.last_seq} and could not be resumed "
        f"({MAX_RESUME_ATTEMPTS} attempts; last error: {cause!r}); the process keeps running",
    )


def resume_delay(path: str, cur: _Cursor, failures: int, cause: BaseException) -> float:
    """The pause before reopening a stream cut ``failures`` times in a row (the last time by ``cause``); raises
    :class:`StreamError` once that is more than :data:`MAX_RESUME_ATTEMPTS`."""
    if failures > MAX_RESUME_ATTEMPTS:
        raise _give_up(path, cur, cause)
    return _backoff(failures)


class ClosingAsyncIterator(Generic[T]):
    """Wraps an async generator and closes it as soon as it has produced its last item, so that a consumer
    that ``break``s on that item leaves no suspended generator (and no open connection) behind."""

    def __init__(self, agen: AsyncGenerator[T, None], is_last: Callable[[T], bool]) -> None:
        self._agen = agen
        self._is_last = is_last

    def __aiter__(self) -> ClosingAsyncIterator[T]:
        return self

    async def __anext__(self) -> T:
        item = await self._agen.__anext__()
        if self._is_last(item):
            await self._agen.aclose()
        return item

    async def aclose(self) -> None:
        """Close the underlying generator (and its connection)."""
        await self._agen.aclose()


def closing_iter(gen: Generator[T, None, None], is_last: Callable[[T], bool]) -> Generator[T, None, None]:
    """The blocking counterpart of :class:`ClosingAsyncIterator`: ``gen`` itself, since dropping a generator
    closes it at once."""
    return gen


class _WsSession:
    """What both WebSocket readers share: where the stream is, the URL and headers of the next connection, and
    what to make of one message."""

    def __init__(self, transport: Union[AsyncTransport, SyncTransport], path: str, from_seq: int) -> None:
        self._transport = transport
        self._path = path
        self._cur = _Cursor(from_seq)
        self._ws: Any = None
        self._done = False
        #: Errors the agent reported for control messages it could not apply (``{"type": "error"}`` frames).
        self.errors: List[SandboxError] = []

    @property
    def last_seq(self) -> int:
        """The seq of the last output chunk delivered."""
        return self._cur.last_seq

    def _target(self) -> Tuple[str, Dict[str, str]]:
        """The next connection's URL (at the next seq) and headers."""
        url = self._transport.ws_url(self._path) + f"?from_seq={self._cur.last_seq + 1}"
        return url, {k: v for k, v in self._transport.headers.items() if k != "User-Agent"}

    def _take(self, message: Union[str, bytes]) -> Optional[ExecEvent]:
        """The event to deliver for ``message``, if any (control errors are kept in :attr:`errors`, replays
        after a resume dropped)."""
        decoded = decode_ws(message)
        if isinstance(decoded, SandboxError):
            self.errors.append(decoded)
            return None
        if decoded is None or not self._cur.accept(decoded):
            return None
        return decoded


class WsEventStream(_WsSession):
    """A resumable WebSocket session on ``.../processes/{pid}/ws``: an async iterator of events that ends
    after ``exited``, reopening the socket at the next ``seq`` when it drops."""

    def __init__(self, transport: AsyncTransport, path: str, from_seq: int = 1) -> None:
        super().__init__(transport, path, from_seq)

    async def connect(self) -> None:
        """Open (or reopen) the socket at the next seq. API errors (404, 401 ...) are raised as exceptions."""
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidStatus

        url, headers = self._target()
        try:
            self._ws = await connect(
                url, additional_headers=headers, user_agent_header="sandpit-python", max_size=None, open_timeout=10
            )
        except InvalidStatus as exc:
            raise error_from_response(exc.response.status_code, exc.response.body) from exc

    def __aiter__(self) -> WsEventStream:
        return self

    async def __anext__(self) -> ExecEvent:
        from websockets.exceptions import ConnectionClosed, InvalidHandshake

        failures = 0
        while not self._done:
            cause: BaseException
            try:
                if self._ws is None:
                    await self.connect()
                while True:
                    ev = self._take(await self._ws.recv())
                    if ev is None:
                        continue
                    if ev.kind == "exited":
                        await self.close()
                    return ev
            except (ConnectionClosed, InvalidHandshake, OSError, asyncio.TimeoutError, *_RETRYABLE) as exc:
                cause = exc
            if self._done:
                break
            self._ws = None
            failures += 1
            await asyncio.sleep(resume_delay(self._path, self._cur, failures, cause))
        raise StopAsyncIteration

    async def close(self) -> None:
        """Close the socket and end the iteration (the process is not affected)."""
        self._done = True
        ws, self._ws = self._ws, None
        if ws is not None:
            try:
                await ws.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass


class SyncWsEventStream(_WsSession):
    """The blocking counterpart of :class:`WsEventStream` (``websockets.sync``, whose reader stops reading the
    socket while ``max_queue`` frames wait: a slow caller holds the process back). An iterator of events that
    ends after ``exited``, reopening the socket at the next ``seq`` when it drops."""

    def __init__(self, transport: SyncTransport, path: str, from_seq: int = 1) -> None:
        super().__init__(transport, path, from_seq)

    def connect(self) -> None:
        """Open (or reopen) the socket at the next seq. API errors (404, 401 ...) are raised as exceptions;
        so is a ``websockets`` too old for flow control in its blocking client (``max_queue``, 14.0)."""
        from websockets.exceptions import InvalidStatus
        from websockets.sync.client import connect

        url, headers = self._target()
        try:
            self._ws = connect(
                url,
                additional_headers=headers,
                user_agent_header="sandpit-python",
                max_size=None,
                max_queue=16,
                open_timeout=10,
            )
        except InvalidStatus as exc:
            raise error_from_response(exc.response.status_code, exc.response.body) from exc

    def __iter__(self) -> SyncWsEventStream:
        return self

    def __next__(self) -> ExecEvent:
        from websockets.exceptions import ConnectionClosed, InvalidHandshake

        failures = 0
        while not self._done:
            cause: BaseException
            try:
                if self._ws is None:
                    self.connect()
                while True:
                    ev = self._take(self._ws.recv())
                    if ev is None:
                        continue
                    if ev.kind == "exited":
                        self.close()
                    return ev
            except (ConnectionClosed, InvalidHandshake, OSError, TimeoutError, *_RETRYABLE) as exc:
                cause = exc
            if self._done:
                break
            self._ws = None
            failures += 1
            time.sleep(resume_delay(self._path, self._cur, failures, cause))
        raise StopIteration

    def close(self) -> None:
        """Close the socket and end the iteration (the process is not affected)."""
        self._done = True
        ws, self._ws = self._ws, None
        if ws is not None:
            try:
                ws.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
