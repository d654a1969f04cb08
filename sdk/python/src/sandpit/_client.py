"""HTTP transport: where the daemon is, how to authenticate, and how its error answers become exceptions."""

from __future__ import annotations

import json
import os
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Dict, Iterator, List, Mapping, Optional, Tuple, Type, Union

import httpx

from ._errors import (
    AlreadyExistsError,
    AuthenticationError,
    IsADirError,
    NotADirError,
    NotEmptyError,
    PermissionDeniedError,
    ConflictError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    PayloadTooLargeError,
    ResourceExhaustedError,
    InsufficientStorageError,
    SandboxError,
    SandboxTimeoutError,
    UnavailableError,
)

__all__ = ["AsyncTransport", "DEFAULT_URL", "SyncTransport", "error_from_response", "resolve_api_key", "resolve_url"]

#: Where ``sandpit serve`` listens by default.
DEFAULT_URL = "http://127.0.0.1:7070"
#: Timeout of ordinary (non-waiting) requests, in seconds.
DEFAULT_REQUEST_TIMEOUT = 30.0
#: Read timeout of event streams: the daemon sends a keepalive every 15 s, so silence this long means a dead link.
STREAM_READ_TIMEOUT = 60.0

QueryParams = Union[Mapping[str, Any], List[Tuple[str, str]]]

_CODE_TO_ERROR: Dict[str, Type[SandboxError]] = {
    "invalid_argument": InvalidArgumentError,
    "unauthenticated": AuthenticationError,
    "not_found": NotFoundError,
    "timeout": SandboxTimeoutError,
    "conflict": ConflictError,
    "payload_too_large": PayloadTooLargeError,
    "resource_exhausted": ResourceExhaustedError,
    "unavailable": UnavailableError,
    "insufficient_storage": InsufficientStorageError,
    "permission_denied": PermissionDeniedError,
    "already_exists": AlreadyExistsError,
    "not_empty": NotEmptyError,
    "is_a_directory": IsADirError,
    "not_a_directory": NotADirError,
    "internal": InternalError,
}
_STATUS_TO_CODE: Dict[int, str] = {
    400: "invalid_argument",
    401: "unauthenticated",
    403: "permission_denied",
    404: "not_found",
    408: "timeout",
    409: "conflict",
    413: "payload_too_large",
    429: "resource_exhausted",
    503: "unavailable",
    507: "insufficient_storage",
}


def error_from_response(status_code: int, body: Union[bytes, str, None]) -> SandboxError:
    """Turn an HTTP error answer into the matching :class:`SandboxError` subclass.

    The body is the API's ``{"error": {"code": ..., "message": ...}}``; the code decides the class. A body that
    is not that shape (a proxy's error page, say) is classified by the HTTP status instead.
    """
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else (body or "")
    code: Optional[str] = None
    message = ""
    try:
        detail = json.loads(text)["error"]
        code = str(detail["code"])
        message = str(detail.get("message", ""))
    except (ValueError, KeyError, TypeError):
        message = text.strip()[:500] or f"HTTP {status_code}"
    if code is None:
        code = _STATUS_TO_CODE.get(status_code, "internal" if status_code >= 500 else "unknown")
    cls = _CODE_TO_ERROR.get(code)
    if cls is None:
        cls = InternalError if status_code >= 500 else SandboxError
    return cls(message, code=code, status_code=status_code)


def _transport_error(exc: httpx.HTTPError, url: str) -> SandboxError:
    if isinstance(exc, httpx.TimeoutException):
        return SandboxTimeoutError(f"request to {url} timed out ({type(exc).__name__})", code="timeout")
    return UnavailableError(f"cannot reach sandpit at {url}: {exc or type(exc).__name__}", code="unavailable")


def resolve_url(url: Optional[str] = None) -> str:
    """The daemon's base URL: the argument, else ``SANDPIT_URL``, else ``http://127.0.0.1:7070``."""
    return (url or os.environ.get("SANDPIT_URL") or DEFAULT_URL).rstrip("/")


def _key_files() -> Iterator[Path]:
    state_dir = os.environ.get("SANDPIT_STATE_DIR")
    if state_dir:
        yield Path(state_dir) / "api-key"
    yield Path("/var/lib/sandpit/api-key")
    xdg = os.environ.get("XDG_DATA_HOME")
    if xdg:
        yield Path(xdg) / "sandpit" / "api-key"
    yield Path.home() / ".local" / "share" / "sandpit" / "api-key"


def resolve_api_key(api_key: Optional[str] = None) -> Optional[str]:
    """The API key: the argument, else ``SANDPIT_API_KEY``, else the first readable key file among
    ``$SANDPIT_STATE_DIR/api-key``, ``/var/lib/sandpit/api-key``, ``$XDG_DATA_HOME/sandpit/api-key`` and
    ``~/.local/share/sandpit/api-key`` (where a local ``sandpit serve`` writes it). ``None`` if none is found."""
    if api_key:
        return api_key
    env = os.environ.get("SANDPIT_API_KEY")
    if env:
        return env.strip()
    for path in _key_files():
        try:
            key = path.read_text().strip()
        except OSError:
            continue
        if key:
            return key
    return None


def _timeout(seconds: Optional[float]) -> httpx.Timeout:
    return httpx.Timeout(seconds, connect=min(seconds or 10.0, 10.0))


class _BaseTransport:
    """What both transports share: the base URL, the headers and how answers are decoded."""

    def __init__(self, url: Optional[str], api_key: Optional[str], request_timeout: Optional[float]) -> None:
        self.url = resolve_url(url)
        self.api_key = resolve_api_key(api_key)
        self.request_timeout = DEFAULT_REQUEST_TIMEOUT if request_timeout is None else request_timeout
        self.headers: Dict[str, str] = {"User-Agent": "sandpit-python"}
        if self.api_key:
            self.headers["Authorization"] = f"Bearer {self.api_key}"

    def ws_url(self, path: str) -> str:
        """The ``ws://`` / ``wss://`` URL of ``path`` on the daemon."""
        if self.url.startswith("https://"):
            return "wss://" + self.url[len("https://") :] + path
        if self.url.startswith("http://"):
            return "ws://" + self.url[len("http://") :] + path
        return self.url + path

    def _decode(self, resp: httpx.Response) -> Any:
        if resp.status_code >= 400:
            err = error_from_response(resp.status_code, resp.content)
            if isinstance(err, AuthenticationError) and not self.api_key:
                err.message += (
                    " (this client found no API key: pass api_key=, set SANDPIT_API_KEY, or make the daemon's"
                    " key file readable: $SANDPIT_STATE_DIR/api-key, /var/lib/sandpit/api-key,"
                    " ~/.local/share/sandpit/api-key)"
                )
            raise err
        if resp.status_code == 204 or not resp.content:
            return None
        return resp.json()

    def _build_kwargs(
        self,
        json_body: Any,
        params: Optional[QueryParams],
        content: Optional[bytes],
        timeout: Optional[float],
        wait: bool,
        headers: Optional[Mapping[str, str]],
    ) -> Dict[str, Any]:
        # Calls that wait for a process have no read timeout unless the caller bounds them.
        seconds = timeout if wait else (timeout or self.request_timeout)
        kw: Dict[str, Any] = {"timeout": _timeout(seconds)}
        if json_body is not None:
            kw["json"] = json_body
        if params is not None:
            kw["params"] = params
        if content is not None:
            kw["content"] = content
            kw["headers"] = {"Content-Type": "application/octet-stream"}
        if headers:
            kw.setdefault("headers", {}).update(headers)
        return kw


class SyncTransport(_BaseTransport):
    """Blocking transport on :class:`httpx.Client`."""

    def __init__(
        self, url: Optional[str] = None, api_key: Optional[str] = None, request_timeout: Optional[float] = None
    ) -> None:
        super().__init__(url, api_key, request_timeout)
        self._client = httpx.Client(base_url=self.url, headers=self.headers)

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Optional[QueryParams] = None,
        content: Optional[bytes] = None,
        timeout: Optional[float] = None,
        wait: bool = False,
    ) -> Any:
        """Send one request and return its decoded JSON (``None`` for 204). ``wait=True`` lifts the read timeout
        (or sets it to ``timeout``) for calls that block until a process ends."""
        kw = self._build_kwargs(json, params, content, timeout, wait, None)
        try:
            resp = self._client.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise _transport_error(exc, self.url + path) from exc
        return self._decode(resp)

    @contextmanager
    def stream(
        self, path: str, *, params: Optional[QueryParams] = None, headers: Optional[Mapping[str, str]] = None
    ) -> Iterator[httpx.Response]:
        """Open a ``GET`` whose body is read incrementally (SSE). Raises the mapped error for an error status;
        transport failures propagate as :class:`httpx.HTTPError` so that the caller can resume."""
        kw = self._build_kwargs(None, params, None, None, True, headers)
        kw["timeout"] = httpx.Timeout(STREAM_READ_TIMEOUT, connect=10.0)
        with self._client.stream("GET", path, **kw) as resp:
            if resp.status_code >= 400:
                resp.read()
                raise error_from_response(resp.status_code, resp.content)
            yield resp

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()


class AsyncTransport(_BaseTransport):
    """Asyncio transport on :class:`httpx.AsyncClient`."""

    def __init__(
        self, url: Optional[str] = None, api_key: Optional[str] = None, request_timeout: Optional[float] = None
    ) -> None:
        super().__init__(url, api_key, request_timeout)
        self._client = httpx.AsyncClient(base_url=self.url, headers=self.headers)

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Optional[QueryParams] = None,
        content: Optional[bytes] = None,
        timeout: Optional[float] = None,
        wait: bool = False,
    ) -> Any:
        """Send one request and return its decoded JSON (``None`` for 204); see :meth:`SyncTransport.request`."""
        kw = self._build_kwargs(json, params, content, timeout, wait, None)
        try:
            resp = await self._client.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise _transport_error(exc, self.url + path) from exc
        return self._decode(resp)

    @asynccontextmanager
    async def stream(
        self, path: str, *, params: Optional[QueryParams] = None, headers: Optional[Mapping[str, str]] = None
    ) -> AsyncIterator[httpx.Response]:
        """Open a ``GET`` whose body is read incrementally (SSE); see :meth:`SyncTransport.stream`."""
        kw = self._build_kwargs(None, params, None, None, True, headers)
        kw["timeout"] = httpx.Timeout(STREAM_READ_TIMEOUT, connect=10.0)
        async with self._client.stream("GET", path, **kw) as resp:
            if resp.status_code >= 400:
                await resp.aread()
                raise error_from_response(resp.status_code, resp.content)
            yield resp

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()
