"""What the blocking and the asyncio process APIs share (``_sync/process.py``, ``_async/process.py``): output
collection, request paths and bodies."""

from __future__ import annotations

import codecs
import inspect
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple, Union
from urllib.parse import quote

from ._options import Stdin, build_start_request, timeout_ms
from ._types import CommandResult, ExecEvent, ProcessInfo, StreamEvent

__all__ = ["OutputCallback", "OutputCollector", "ProcessRef", "Signal", "start_body"]

#: A process reference: its string ``id`` or its numeric ``pid``.
ProcessRef = Union[str, int]
#: A signal: ``"TERM"``, ``"SIGTERM"``, ``15``, ``"RTMIN+1"`` ...
Signal = Union[str, int]
#: An output callback; async variants also accept coroutine functions.
OutputCallback = Callable[[str], Any]

_LONG_POLL_MS = 30_000
# The most of each stream a collected result keeps: the agent's per-process cap (64 MiB). A longer stream
# drops its oldest output from the result, as the daemon's own results do (``lost_bytes``); every chunk was
# still handed to the caller as it came. Unbounded, a long stream's result grew without limit in memory.
STREAM_KEEP_BYTES = 64 * 1024 * 1024


def _data(data: Union[str, bytes]) -> bytes:
    return data.encode() if isinstance(data, str) else bytes(data)


class _Tail:
    """The last ``STREAM_KEEP_BYTES`` of a stream, kept as the chunks that came (no copy per chunk: whole chunks
    are dropped from the front once the rest still holds the limit)."""

    def __init__(self) -> None:
        self._chunks: Deque[bytes] = deque()
        self._size = 0

    def add(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        while self._size - len(self._chunks[0]) >= STREAM_KEEP_BYTES:
            self._size -= len(self._chunks.popleft())

    def value(self) -> bytes:
        whole = b"".join(self._chunks)
        return whole[-STREAM_KEEP_BYTES:] if len(whole) > STREAM_KEEP_BYTES else whole


class OutputCollector:
    """Collects a process's stdout and stderr from events (the last ``STREAM_KEEP_BYTES`` of each) and forwards
    decoded text to callbacks."""

    def __init__(self, on_stdout: Optional[OutputCallback] = None, on_stderr: Optional[OutputCallback] = None) -> None:
        self._stdout = _Tail()
        self._stderr = _Tail()
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
        (self._stdout if ev.kind == "stdout" else self._stderr).add(ev.data)
        callback = self.on_stdout if ev.kind == "stdout" else self.on_stderr
        if callback is None:
            return None
        text = self._decoders[ev.kind].decode(ev.data)
        if not text:
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
        return CommandResult.build(info, self._stdout.value(), self._stderr.value())


class _Api:
    """Paths of the per-sandbox process API."""

    def __init__(self, sandbox_id: str) -> None:
        self.prefix = f"/v1/sandboxes/{quote(sandbox_id, safe='')}"

    def p(self, ref: Optional[ProcessRef] = None, tail: str = "") -> str:
        if ref is None:
            return f"{self.prefix}/processes"
        return f"{self.prefix}/processes/{quote(str(ref), safe='')}{tail}"


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
