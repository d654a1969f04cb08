# unasync: sync
# """Lifecycle events and webhooks, blocking: :class:`Events`, :class:`Webhooks`, and the resuming SSE reader the
# sandbox's ``events_stream`` and ``metrics_stream`` use."""
# unasync: async
"""Lifecycle events and webhooks, asyncio: :class:`AsyncEvents`, :class:`AsyncWebhooks`, and the resuming SSE reader
the sandbox's ``events_stream`` and ``metrics_stream`` use."""
# unasync: end

from __future__ import annotations

import json

# unasync: sync
# import time
# from typing import Any, Callable, Dict, Generator, Iterable, List, Optional, TypeVar, Union
# unasync: async
import asyncio
from typing import Any, AsyncGenerator, Callable, Dict, Iterable, List, Optional, TypeVar, Union
# unasync: end

from urllib.parse import quote

import httpx

from .._errors import StreamError
from .._observe import Time, event_key, event_params, webhook_body
from .. import _stream
from .._stream import _RETRYABLE, SseParser, _backoff
from .._types import EventPage, LifecycleEvent, Webhook, WebhookDelivery
from .transport import AsyncTransport

__all__ = ["AsyncEvents", "AsyncWebhooks"]

T = TypeVar("T")


async def sse_items(
    transport: AsyncTransport,
    path: str,
    params: Dict[str, Any],
    decode: Callable[[Dict[str, Any]], T],
    key: Callable[[T], Any],
    *,
    ends: bool = True,
    by_id: bool = True,
) -> AsyncGenerator[T, None]:
    """The JSON items of the SSE stream ``path``, reopening a cut connection with a short backoff: with ``by_id``
    the reopened stream starts after the last message id delivered (``Last-Event-ID``, as the process output
    streams do), and an item whose ``key`` is not above the last one's (one the daemon sends again) is dropped,
    so nothing is repeated. Stops when the daemon ends the stream when ``ends`` (else that is a cut like any
    other). Raises :class:`StreamError` after :data:`MAX_RESUME_ATTEMPTS` failed reopenings in a row; API errors
    (a 404 once the sandbox is deleted, ...) propagate."""
    params = dict(params)
    headers: Dict[str, str] = {}
    last: Any = None
    failures = 0
    while True:
        cause: BaseException
        try:
            async with transport.stream(path, params=params, headers=headers) as resp:
                parser = SseParser()
                async for line in resp.aiter_lines():
                    msg = parser.feed(line)
                    if msg is None or not msg.data:
                        continue
                    failures = 0
                    if by_id and msg.id:
                        # Where a reopened stream starts: after this message (the header replaces ``after``).
                        headers["Last-Event-ID"] = msg.id
                        params.pop("after", None)
                    item = decode(json.loads(msg.data))
                    k = key(item)
                    if last is not None and k is not None and k <= last:
                        continue
                    last = k if k is not None else last
                    yield item
            if ends:
                return
            cause = EOFError(f"the daemon ended the stream {path}")
        except (httpx.HTTPError, *_RETRYABLE) as exc:
            cause = exc
        failures += 1
        if failures > _stream.MAX_RESUME_ATTEMPTS:
            raise StreamError(f"the stream {path} was cut and could not be resumed: {cause}") from cause
        await asyncio.sleep(_backoff(failures))


class AsyncEvents:
    """Lifecycle events of the sandboxes this key's tenant owns (every tenant's with an admin key)::

        async with AsyncEvents() as events:
            page = await events.list(type="sandbox.killed", limit=50)
            async for e in events.stream():
                print(e.at, e.type, e.sandbox_id, e.data)
    """

    def __init__(self, *, url: Optional[str] = None, api_key: Optional[str] = None) -> None:
        self._transport = AsyncTransport(url, api_key)

    async def list(
        self,
        *,
        sandbox: Optional[str] = None,
        type: Union[str, Iterable[str], None] = None,
        since: Time = None,
        after: Optional[int] = None,
        limit: Optional[int] = None,
    ) -> EventPage:
        """``GET /v1/events``: events of one sandbox or all, of one type or several (a list), at or after ``since``
        (a datetime, RFC 3339 text or epoch ms), after the id ``after`` (a page's ``next_after``), at most
        ``limit`` (default 100, at most 1000), oldest first."""
        params = event_params(sandbox=sandbox, type=type, since=since, after=after, limit=limit)
        return EventPage.from_json(await self._transport.request("GET", "/v1/events", params=params))

    def stream(
        self,
        *,
        sandbox: Optional[str] = None,
        type: Union[str, Iterable[str], None] = None,
        after: Optional[int] = None,
    ) -> AsyncGenerator[LifecycleEvent, None]:
        """``GET /v1/events/stream``: events as they happen (with ``after``, the stored ones after that id first),
        until the caller stops reading (``aclose()`` it, or leave the ``async for``); a cut connection is reopened
        after the last event delivered (``Last-Event-ID``), so none is missed or repeated."""
        params = event_params(sandbox=sandbox, type=type, after=after)
        path = "/v1/events/stream"
        return sse_items(self._transport, path, params, LifecycleEvent.from_json, event_key, ends=False)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._transport.aclose()

    async def __aenter__(self) -> AsyncEvents:
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        await self.aclose()


class AsyncWebhooks:
    """Webhooks: every lifecycle event of the listed types ``POST``-ed, signed, to a URL (needs an ``admin`` key);
    check deliveries with :func:`verify_webhook`::

        async with AsyncWebhooks() as hooks:
            hook = await hooks.create("https://example.com/hook", ["*"], secret=secret)
    """

    def __init__(self, *, url: Optional[str] = None, api_key: Optional[str] = None) -> None:
        self._transport = AsyncTransport(url, api_key)

    async def create(
        self, url: str, events: Iterable[str], secret: str, *, description: Optional[str] = None
    ) -> Webhook:
        """``POST /v1/webhooks``: ``events`` are types (``sandbox.created``, …) or ``["*"]``; ``secret`` (8-256
        characters) signs every delivery and is never shown again."""
        body = webhook_body(url, events, secret, description)
        return Webhook.from_json(await self._transport.request("POST", "/v1/webhooks", json=body))

    async def list(self) -> List[Webhook]:
        """``GET /v1/webhooks``."""
        d = await self._transport.request("GET", "/v1/webhooks")
        return [Webhook.from_json(w) for w in d.get("webhooks") or []]

    async def get(self, id: str) -> Webhook:
        """``GET /v1/webhooks/{id}``; :class:`NotFoundError` when there is none."""
        return Webhook.from_json(await self._transport.request("GET", "/v1/webhooks/" + quote(id, safe="")))

    async def delete(self, id: str) -> None:
        """``DELETE /v1/webhooks/{id}``: its delivery log and pending retries go too."""
        await self._transport.request("DELETE", "/v1/webhooks/" + quote(id, safe=""))

    async def deliveries(self, id: str, *, limit: Optional[int] = None) -> List[WebhookDelivery]:
        """``GET /v1/webhooks/{id}/deliveries``: one row per attempt, newest first."""
        params = {} if limit is None else {"limit": limit}
        d = await self._transport.request("GET", "/v1/webhooks/" + quote(id, safe="") + "/deliveries", params=params)
        return [WebhookDelivery.from_json(x) for x in d.get("deliveries") or []]

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._transport.aclose()

    async def __aenter__(self) -> AsyncWebhooks:
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        await self.aclose()
