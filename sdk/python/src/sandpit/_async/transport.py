# unasync: sync
# """HTTP transport, blocking: :class:`SyncTransport` on :class:`httpx.Client`."""
# unasync: async
"""HTTP transport, asyncio: :class:`AsyncTransport` on :class:`httpx.AsyncClient`."""
# unasync: end

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterable, AsyncIterator, Mapping, Optional, Union

import httpx

from .._client import (
    STREAM_READ_TIMEOUT,
    QueryParams,
    _BaseTransport,
    _transport_error,
    error_from_response,
    tls_context,
)
# unasync: sync
# from .._quick import QuickClient
# unasync: async
# unasync: end

__all__ = ["AsyncTransport"]


class AsyncTransport(_BaseTransport):
    """The daemon's HTTP API on :class:`httpx.AsyncClient`."""

    def __init__(
        self, url: Optional[str] = None, api_key: Optional[str] = None, request_timeout: Optional[float] = None
    ) -> None:
        super().__init__(url, api_key, request_timeout)
        self._client = httpx.AsyncClient(base_url=self.url, headers=self.headers, verify=tls_context())
        # unasync: sync
        # # Small calls (JSON or bytes in, an answer read whole) skip httpx's per-request overhead.
        # self._quick = QuickClient.for_url(self.url, self.headers, tls_context())
        # unasync: async
        # unasync: end

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Optional[QueryParams] = None,
        content: Optional[Union[bytes, AsyncIterable[bytes]]] = None,
        timeout: Optional[float] = None,
        wait: bool = False,
        headers: Optional[Mapping[str, str]] = None,
    ) -> Any:
        """Send one request and return its decoded JSON (``None`` for 204). ``wait=True`` lifts the read timeout
        (or sets it to ``timeout``) for calls that block until a process ends. ``content`` is a body sent as it is
        (bytes, or chunks streamed as they come; ``application/octet-stream`` unless ``headers`` say otherwise)."""
        kw = self._build_kwargs(json, params, content, timeout, wait, headers)
        # unasync: sync
        # if self._quick is not None and (content is None or isinstance(content, bytes)):
        #     t = kw["timeout"]
        #     answer = self._quick.request(
        #         method,
        #         path,
        #         json_body=json,
        #         params=params,
        #         content=content,
        #         headers=kw.get("headers"),
        #         connect_timeout=t.connect,
        #         read_timeout=t.read,
        #     )
        #     if answer is not None:
        #         return self._decode(answer)
        # unasync: async
        # unasync: end
        try:
            resp = await self._client.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise _transport_error(exc, self.url + path) from exc
        return self._decode(resp)

    @asynccontextmanager
    async def stream(
        self, path: str, *, params: Optional[QueryParams] = None, headers: Optional[Mapping[str, str]] = None
    ) -> AsyncIterator[httpx.Response]:
        """Open a ``GET`` whose body is read incrementally (SSE). Raises the mapped error for an error status;
        transport failures propagate as :class:`httpx.HTTPError` so that the caller can resume."""
        kw = self._build_kwargs(None, params, None, None, True, headers)
        kw["timeout"] = httpx.Timeout(STREAM_READ_TIMEOUT, connect=10.0)
        async with self._client.stream("GET", path, **kw) as resp:
            if resp.status_code >= 400:
                await resp.aread()
                raise error_from_response(resp.status_code, resp.content, resp.headers)
            yield resp

    async def aclose(self) -> None:
        """Close the connection pool."""
        # unasync: sync
        # if self._quick is not None:
        #     self._quick.close()
        # unasync: async
        # unasync: end
        await self._client.aclose()
