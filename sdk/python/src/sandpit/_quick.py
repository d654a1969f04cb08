"""Small requests of the blocking SDK on :mod:`http.client`: the path of every call whose body is JSON or bytes
already in memory and whose answer is read whole (``commands.run``, ``exec``, create, list, kill ...).

Owns the keep-alive connections those calls share (a pool per transport, safe to use from several threads), the
encoding of a request the way :mod:`httpx` encodes it (query values, JSON), and the rule for when a connection may
be reused. Streams, uploads from iterators, downloads and WebSockets stay on :mod:`httpx`, as does the asyncio SDK.

Why: the daemon answers a warm ``exec("true")`` in about 2 ms on a small machine, and :mod:`httpx` spent 0.5-0.6 ms
of the client's CPU on each such call (URL merging, cookie jar, ``h11``, header models), a quarter of the round
trip; :mod:`http.client` does the same exchange for about a third of that, and sends the headers and a small body in
one write instead of two.
"""

from __future__ import annotations

import http.client
import json as jsonlib
import os
import select
import socket
import ssl
import threading
import urllib.parse
import urllib.request
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from ._client import transport_failure

__all__ = ["Answer", "QuickClient", "proxied"]

#: Idle connections kept per transport; more are closed when they come back.
MAX_IDLE = 8
#: Largest body sent on this path. A larger one goes on httpx, which reads the answer of a server that refused the
#: request before reading all of it (a 401, 403 or 413 sent while the body is still on its way).
MAX_BODY = 64 * 1024


class Answer:
    """What :meth:`QuickClient.request` got back: the parts of an :class:`httpx.Response` the SDK reads (header
    names in lower case)."""

    __slots__ = ("status_code", "content", "headers")

    def __init__(self, status_code: int, content: bytes, headers: Dict[str, str]) -> None:
        self.status_code = status_code
        self.content = content
        self.headers = headers

    def json(self) -> Any:
        return jsonlib.loads(self.content)


def proxied(url: str) -> bool:
    """Whether the environment sends requests to ``url`` through a proxy (``HTTP_PROXY``, ``ALL_PROXY`` ... and
    ``NO_PROXY``, as :mod:`httpx` reads them): such requests stay on :mod:`httpx`."""
    parts = urllib.parse.urlsplit(url)
    proxies = urllib.request.getproxies()
    if not (proxies.get(parts.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(parts.hostname or "")


def _value(v: Any) -> str:
    # httpx's rendering of query values: booleans lower-case, None empty.
    if v is True:
        return "true"
    if v is False:
        return "false"
    if v is None:
        return ""
    return str(v)


def encode_query(params: Union[Mapping[str, Any], List[Tuple[str, Any]], None]) -> str:
    """``params`` as a query string, value for value what :mod:`httpx` sends (a list value repeats the key)."""
    if not params:
        return ""
    items = params.items() if isinstance(params, Mapping) else params
    pairs: List[Tuple[str, str]] = []
    for k, v in items:
        if isinstance(v, (list, tuple)):
            pairs.extend((str(k), _value(x)) for x in v)
        else:
            pairs.append((str(k), _value(v)))
    return urllib.parse.urlencode(pairs)


class QuickClient:
    """Keep-alive :mod:`http.client` connections to one daemon. A connection is taken for one exchange and given
    back only when the answer was read to its end and the server keeps it open; one the server closed while idle
    is dropped before it is used."""

    def __init__(self, url: str, headers: Mapping[str, str], tls: ssl.SSLContext) -> None:
        parts = urllib.parse.urlsplit(url)  # http or https: see for_url
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")
        self._url = url
        self._tls = tls
        self._headers = dict(headers)
        self._idle: List[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()

    @classmethod
    def for_url(cls, url: str, headers: Mapping[str, str], tls: ssl.SSLContext) -> Optional["QuickClient"]:
        """A client for ``url``, or ``None`` where the calls must stay on :mod:`httpx`: a proxy configured for it,
        or a scheme other than ``http``/``https`` (httpx then reports it on the first call)."""
        if urllib.parse.urlsplit(url).scheme not in ("http", "https") or proxied(url):
            return None
        return cls(url, headers, tls)

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Any = None,
        content: Optional[bytes] = None,
        headers: Optional[Mapping[str, str]] = None,
        connect_timeout: Optional[float],
        read_timeout: Optional[float],
    ) -> Optional[Answer]:
        """One exchange, or ``None`` (nothing sent) when the body is larger than :data:`MAX_BODY`. Transport
        failures raise what the :mod:`httpx` path raises (``_client.transport_failure``)."""
        target = self._prefix + path
        query = encode_query(params)
        if query:
            target += ("&" if "?" in target else "?") + query
        hdrs: Dict[str, str] = dict(self._headers)
        body: Optional[bytes] = content
        if json_body is not None:
            body = jsonlib.dumps(json_body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
            hdrs["Content-Type"] = "application/json"
        if body is not None and len(body) > MAX_BODY:
            return None
        if headers:
            hdrs.update(headers)
        conn = self._take(connect_timeout)
        try:
            if conn.sock is None:
                conn.connect()
            conn.sock.settimeout(read_timeout)
            conn.request(method, target, body=body, headers=hdrs)
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise transport_failure(exc, self._url + path, isinstance(exc, socket.timeout)) from exc
        except BaseException:
            # Interrupted mid-exchange (KeyboardInterrupt ...): the connection's state is unknown.
            conn.close()
            raise
        if resp.will_close:
            conn.close()
        else:
            self._give_back(conn)
        # Lower-case names, as the SDK looks them up (httpx's headers are case-insensitive).
        return Answer(resp.status, data, {k.lower(): v for k, v in resp.getheaders()})

    def close(self) -> None:
        """Close every idle connection."""
        with self._lock:
            idle, self._idle = self._idle, []
        for c in idle:
            c.close()

    def _take(self, connect_timeout: Optional[float]) -> http.client.HTTPConnection:
        with self._lock:
            if self._pid != os.getpid():
                # A forked child must not share its parent's sockets.
                self._idle, self._pid = [], os.getpid()
            while self._idle:
                conn = self._idle.pop()
                if _usable(conn):
                    return conn
                conn.close()
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=connect_timeout, context=self._tls)
        return http.client.HTTPConnection(self._host, self._port, timeout=connect_timeout)

    def _give_back(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < MAX_IDLE and self._pid == os.getpid():
                self._idle.append(conn)
                return
        conn.close()


def _usable(conn: http.client.HTTPConnection) -> bool:
    """An idle connection with something to read has been closed (or spoken on) by the server: not reusable."""
    sock = conn.sock
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable

