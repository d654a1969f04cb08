"""HTTP transport: where the daemon is, how to authenticate, and how its error answers become exceptions."""

from __future__ import annotations

import functools
import os
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Mapping, Optional, Tuple, Union

import httpx

from ._errors import AuthenticationError, SandboxError, SandboxTimeoutError, UnavailableError, error_from_response

if TYPE_CHECKING:
    from ._quick import Answer

__all__ = ["DEFAULT_URL", "error_from_response", "resolve_api_key", "resolve_url"]

#: Where ``sandpit serve`` listens by default.
DEFAULT_URL = "http://127.0.0.1:7070"
#: Timeout of ordinary (non-waiting) requests, in seconds.
DEFAULT_REQUEST_TIMEOUT = 30.0
#: Read timeout of event streams: the daemon sends a keepalive every 15 s, so silence this long means a dead link.
STREAM_READ_TIMEOUT = 60.0

QueryParams = Union[Mapping[str, Any], List[Tuple[str, str]]]

def transport_failure(exc: BaseException, url: str, timed_out: bool) -> SandboxError:
    """The SDK error for a request to ``url`` that got no answer: what both transports (httpx, and
    ``_quick``'s ``http.client``) raise."""
    if timed_out:
        return SandboxTimeoutError(f"request to {url} timed out ({type(exc).__name__})", code="timeout")
    return UnavailableError(f"cannot reach sandpit at {url}: {exc or type(exc).__name__}", code="unavailable")


def _transport_error(exc: httpx.HTTPError, url: str) -> SandboxError:
    return transport_failure(exc, url, isinstance(exc, httpx.TimeoutException))


def resolve_url(url: Optional[str] = None) -> str:
    """The daemon's base URL: the argument, else ``SANDPIT_URL``, else ``http://127.0.0.1:7070``."""
    return (url or os.environ.get("SANDPIT_URL") or DEFAULT_URL).rstrip("/")


#: Where a system-wide daemon (``sandpit serve`` as root with the default state directory) keeps its key.
SYSTEM_KEY_FILE = Path("/var/lib/sandpit/api-key")


def _key_files() -> Iterator[Path]:
    state_dir = os.environ.get("SANDPIT_STATE_DIR")
    if state_dir:
        yield Path(state_dir) / "api-key"
    yield SYSTEM_KEY_FILE
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


@functools.lru_cache(maxsize=None)
def tls_context() -> ssl.SSLContext:
    """The TLS settings every client of this process shares (httpx's defaults). Making them loads the CA bundle,
    ~30 ms: paid once per process instead of by every ``Sandbox.create()`` (it was half of a create's time to
    its first result)."""
    return httpx.create_ssl_context()


class _BaseTransport:
    """What both transports (``_async/transport.py``, ``_sync/transport.py``) share: the base URL, the headers
    and how answers are decoded."""

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

    def _decode(self, resp: Union[httpx.Response, "Answer"]) -> Any:
        if resp.status_code >= 400:
            err = error_from_response(resp.status_code, resp.content, resp.headers)
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
        content: Any,
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
