# unasync: sync
# """``files.watch_dir`` of the blocking SDK: a watch read by a background thread."""
# unasync: async
"""``files.watch_dir`` of the asyncio SDK: a watch read by a task."""
# unasync: end

from __future__ import annotations

import json
# unasync: sync
# import queue
# import threading
# import time
# from typing import Any, Callable, List, Optional
# unasync: async
import asyncio
from typing import Any, Awaitable, Callable, Optional, Union
# unasync: end

import httpx

from .._client import error_from_response
from .._errors import SandboxError, StreamError
from .._files import WATCH_RETRIES, FilesystemEvent
from .._stream import SseParser
from .transport import AsyncTransport

__all__ = ["AsyncWatchHandle"]


class AsyncWatchHandle:
    # unasync: sync
    # """A running watch (blocking SDK). ``stop()`` ends it; ``get_new_events()`` returns what arrived since the
    # last call."""
    # unasync: async
    """A running watch (asyncio). ``await stop()`` ends it."""
    # unasync: end

    def __init__(
        self,
        transport: AsyncTransport,
        url: str,
        # unasync: sync
        # on_event: Optional[Callable[[FilesystemEvent], None]],
        # on_exit: Optional[Callable[[Optional[Exception]], None]],
        # unasync: async
        on_event: Callable[[FilesystemEvent], Union[None, Awaitable[None]]],
        on_exit: Optional[Callable[[Optional[Exception]], Union[None, Awaitable[None]]]],
        # unasync: end
    ) -> None:
        self._t = transport
        self._url = url
        self._on_event = on_event
        self._on_exit = on_exit
        self._stop = asyncio.Event()
        self._ready = asyncio.Event()
        self._error: Optional[Exception] = None
        self._last: Optional[int] = None
        self._resp: Optional[httpx.Response] = None
        # unasync: sync
        # self._events: "queue.Queue[FilesystemEvent]" = queue.Queue()
        # self._thread = threading.Thread(target=self._run, name="sandpit-watch", daemon=True)
        # unasync: async
        self._task: Optional["asyncio.Task[None]"] = None
        # unasync: end

    async def _start(self) -> None:
        # unasync: sync
        # self._thread.start()
        # unasync: async
        self._task = asyncio.create_task(self._run())
        # unasync: end
        await self._ready.wait()
        if self._error is not None:
            raise self._error

    # unasync: sync
    # def _call(self, f: Optional[Callable[[Any], None]], arg: Any) -> None:
    #     if f is not None:
    #         f(arg)
    # unasync: async
    async def _call(self, f: Optional[Callable[[Any], Any]], arg: Any) -> None:
        r = None if f is None else f(arg)
        if asyncio.iscoroutine(r):
            await r
    # unasync: end

    async def _run(self) -> None:
        failures = 0
        error: Optional[Exception] = None
        while not self._stop.is_set():
            headers = {"Accept": "text/event-stream"}
            if self._last is not None:
                headers["Last-Event-ID"] = str(self._last)
            try:
                async with self._t._client.stream(
                    "GET", self._url, headers=headers, timeout=httpx.Timeout(60.0, connect=10.0)
                ) as resp:
                    if resp.status_code >= 400:
                        await resp.aread()
                        raise error_from_response(resp.status_code, resp.content)
                    self._resp = resp
                    parser = SseParser()
                    async for line in resp.aiter_lines():
                        msg = parser.feed(line)
                        if msg is None:
                            continue
                        if msg.event == "started":
                            if self._last is None:
                                self._last = int(msg.id or 0)
                            failures = 0
                            self._ready.set()
                        elif msg.event == "ended":
                            self._stop.set()
                        elif msg.event != "keepalive":
                            ev = FilesystemEvent.from_json(json.loads(msg.data))
                            if self._last is not None and ev.seq <= self._last:
                                continue
                            self._last = ev.seq
                            # unasync: sync
                            # self._events.put(ev)
                            # unasync: end
                            await self._call(self._on_event, ev)
                        if self._stop.is_set():
                            break
            except SandboxError as exc:
                if not self._ready.is_set():
                    self._error = exc
                    self._ready.set()
                    return
                error = exc
                break
            except (httpx.HTTPError, OSError) as exc:
                if self._stop.is_set():
                    break
                failures += 1
                if failures > WATCH_RETRIES or not self._ready.is_set():
                    error = StreamError(f"the watch could not be resumed: {exc}")
                    if not self._ready.is_set():
                        self._error = error
                        self._ready.set()
                        return
                    break
                await asyncio.sleep(min(0.1 * 2 ** (failures - 1), 2.0))
        self._ready.set()
        await self._call(self._on_exit, error)

    # unasync: sync
    # def get_new_events(self) -> List[FilesystemEvent]:
    #     """The events that arrived since the last call."""
    #     out: List[FilesystemEvent] = []
    #     while True:
    #         try:
    #             out.append(self._events.get_nowait())
    #         except queue.Empty:
    #             return out
    #
    # unasync: end
    async def stop(self) -> None:
        """Ends the watch."""
        self._stop.set()
        # unasync: sync
        # resp = self._resp
        # if resp is not None:
        #     try:
        #         resp.close()
        #     except Exception:  # noqa: BLE001 - closing a stream another thread reads may fail harmlessly
        #         pass
        # self._thread.join(timeout=5)
        # unasync: async
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - a cancelled watch ends quietly
                pass
        # unasync: end
