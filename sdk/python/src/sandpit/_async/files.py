# unasync: sync
# """``sandbox.files`` of the blocking :class:`~sandpit.Sandbox`; see ``sandpit/_files.py``."""
# unasync: async
"""``sandbox.files`` of :class:`~sandpit.AsyncSandbox`; see ``sandpit/_files.py``."""
# unasync: end

from __future__ import annotations

# unasync: sync
# from typing import Any, Callable, Dict, Iterator, List, Literal, Optional, Sequence, Union, cast, overload
# unasync: async
from typing import (
    Any,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Dict,
    List,
    Literal,
    Optional,
    Sequence,
    Union,
    cast,
    overload,
)
# unasync: end
from urllib.parse import quote

import httpx

from .._client import error_from_response
from .._errors import NotFoundError, SandboxError
from .._types import SignedUrl
from .._files import (
    CHUNK,
    Data,
    EntryInfo,
    FilesystemEvent,
    PathArg,
    WriteEntry,
    _achunks,
    _known_length,
    _query,
    _split,
    _tar_chunks,
    _text_path,
    _timeout,
    _written,
)
from .transport import AsyncTransport
from .watch import AsyncWatchHandle

__all__ = ["AsyncFiles"]


class AsyncFiles:
    # unasync: sync
    # """The files of one sandbox (blocking). ``user=`` on every call acts as another user (default: the
    # sandbox's default user)."""
    # unasync: async
    """The files of one sandbox (asyncio): :class:`~sandpit.Files` with ``await``. ``user=`` on every call acts as
    another user (default: the sandbox's default user); ``write`` also takes an async iterator of chunks, and
    ``read(path, format="stream")`` gives one."""
    # unasync: end

    def __init__(self, transport: AsyncTransport, sandbox_id: str) -> None:
        self._t = transport
        self._base = f"/v1/sandboxes/{quote(sandbox_id, safe='')}"

    def _url(self, endpoint: str, path: PathArg, user: Optional[str], **extra: Any) -> str:
        return f"{self._base}{endpoint}?{_query(path, user, **extra)}"

    async def _send(self, method: str, url: str, **kw: Any) -> httpx.Response:
        try:
            resp = await self._t._client.request(method, url, **kw)
        except httpx.HTTPError as exc:
            raise SandboxError(f"cannot reach sandpit at {self._t.url}: {exc}", code="unavailable") from exc
        if resp.status_code >= 400:
            raise error_from_response(resp.status_code, resp.content, resp.headers)
        return resp

    @overload
    async def read(self, path: PathArg, format: Literal["text"] = "text", *, user: Optional[str] = None) -> str: ...
    @overload
    async def read(self, path: PathArg, format: Literal["bytes"], *, user: Optional[str] = None) -> bytes: ...
    @overload
    async def read(
        self, path: PathArg, format: Literal["stream"], *, user: Optional[str] = None
    ) -> AsyncIterator[bytes]: ...

    async def read(
        self, path: PathArg, format: str = "text", *, user: Optional[str] = None
    ) -> Union[str, bytes, AsyncIterator[bytes]]:
        """The file as ``text`` (UTF-8), ``bytes``, or a ``stream`` of chunks (never held whole)."""
        url = self._url("/files", path, user)
        if format == "stream":
            return await self._stream(url)
        body = (await self._send("GET", url, timeout=_timeout(None))).content
        if format == "bytes":
            return body
        if format != "text":
            raise SandboxError(f"format {format!r}: use 'text', 'bytes' or 'stream'", code="invalid_argument")
        return body.decode()

    async def _stream(self, url: str) -> AsyncIterator[bytes]:
        # Opened at once, so that a missing file raises here and not at the first chunk.
        req = self._t._client.build_request("GET", url, timeout=_timeout(None))
        resp = await self._t._client.send(req, stream=True)
        if resp.status_code >= 400:
            await resp.aread()
            await resp.aclose()
            raise error_from_response(resp.status_code, resp.content)

        async def gen() -> AsyncIterator[bytes]:
            try:
                async for chunk in resp.aiter_bytes(CHUNK):
                    yield chunk
            finally:
                await resp.aclose()

        return gen()

    async def write(
        self,
        path: Union[PathArg, Sequence[Union[WriteEntry, Dict[str, Any]]]],
        # unasync: sync
        # data: Optional[Data] = None,
        # unasync: async
        data: Optional[Union[Data, AsyncIterable[bytes]]] = None,
        # unasync: end
        *,
        user: Optional[str] = None,
        mode: Optional[int] = None,
    ) -> Union[EntryInfo, List[EntryInfo]]:
        """Writes ``data`` (text, bytes, a binary file object or an iterator of chunks, streamed) to ``path``,
        atomically, creating parents; returns its entry. A list of entries instead of a path is
        :meth:`write_files`."""
        if isinstance(path, (list, tuple)):
            return await self.write_files(path, user=user)
        if data is None:
            raise SandboxError("write needs data", code="invalid_argument")
        url = self._url("/files", cast(PathArg, path), user, mode=None if mode is None else f"{mode:04o}")
        headers = {"Content-Type": "application/octet-stream"}
        length = _known_length(data)
        if length is not None:
            headers["Content-Length"] = str(length)
        resp = await self._send("PUT", url, content=_achunks(data), headers=headers, timeout=_timeout(None))
        return EntryInfo.from_json(resp.json())

    async def write_files(
        self, files: Sequence[Union[WriteEntry, Dict[str, Any]]], *, user: Optional[str] = None
    ) -> List[EntryInfo]:
        """Writes many files in one request (a tar built while it is sent); returns their entries."""
        out: List[EntryInfo] = []
        for root, group in _split(files).items():
            url = self._url("/files/tar", root, user)
            resp = await self._send(
                "POST", url, content=_achunks(_tar_chunks(group)), headers={"Content-Type": "application/x-tar"},
                timeout=_timeout(None),
            )
            out.extend(_written(resp.json()))
        return out

    async def list(self, path: PathArg, depth: int = 1, *, user: Optional[str] = None) -> List[EntryInfo]:
        """The entries under a directory, ``depth`` levels deep."""
        resp = await self._send("GET", self._url("/fs/list", path, user, depth=depth))
        return [EntryInfo.from_json(e) for e in resp.json()["entries"]]

    async def get_info(self, path: PathArg, *, user: Optional[str] = None) -> EntryInfo:
        """One entry (a symlink is reported as one)."""
        return EntryInfo.from_json((await self._send("GET", self._url("/fs/stat", path, user))).json())

    async def exists(self, path: PathArg, *, user: Optional[str] = None) -> bool:
        """Whether ``path`` exists."""
        try:
            await self.get_info(path, user=user)
            return True
        except NotFoundError:
            return False

    async def make_dir(self, path: PathArg, *, user: Optional[str] = None, mode: Optional[int] = None) -> bool:
        """Creates a directory and its parents; ``False`` if it existed."""
        body: Dict[str, Any] = {"path": _text_path(path), "parents": True}
        if user:
            body["user"] = user
        if mode is not None:
            body["mode"] = f"{mode:04o}"
        return (await self._send("POST", f"{self._base}/fs/mkdir", json=body)).status_code == 201

    async def rename(
        self, old_path: PathArg, new_path: PathArg, *, user: Optional[str] = None, overwrite: bool = False
    ) -> EntryInfo:
        """Moves ``old_path`` to ``new_path`` (refused if it exists, unless ``overwrite``)."""
        body: Dict[str, Any] = {"from": _text_path(old_path), "to": _text_path(new_path), "overwrite": overwrite}
        if user:
            body["user"] = user
        return EntryInfo.from_json((await self._send("POST", f"{self._base}/fs/move", json=body)).json())

    async def signed_url(
        self,
        path: PathArg,
        op: Literal["read", "write"] = "read",
        *,
        expires_in: Optional[int] = None,
        user: Optional[str] = None,
    ) -> SignedUrl:
        """A URL that reads (``op="read"``: GET) or writes (``"write"``: PUT) ``path`` as ``user`` with no other
        credential, for ``expires_in`` seconds (default 3600, at most 604800): for a page's ``<a href download>``
        or upload. It stops working when the key that signed it is revoked."""
        body: Dict[str, Any] = {"path": _text_path(path), "op": op}
        if expires_in is not None:
            body["expires_in"] = expires_in
        if user:
            body["user"] = user
        return SignedUrl.from_json((await self._send("POST", f"{self._base}/files/signed-url", json=body)).json())

    async def download_url(
        self, path: PathArg, *, expires_in: Optional[int] = None, user: Optional[str] = None
    ) -> str:
        """The signed URL a browser downloads ``path`` from (see :meth:`signed_url`)."""
        return (await self.signed_url(path, "read", expires_in=expires_in, user=user)).url

    async def upload_url(self, path: PathArg, *, expires_in: Optional[int] = None, user: Optional[str] = None) -> str:
        """The signed URL a client ``PUT``s ``path``'s new content to (see :meth:`signed_url`)."""
        return (await self.signed_url(path, "write", expires_in=expires_in, user=user)).url

    async def remove(self, path: PathArg, *, user: Optional[str] = None, recursive: bool = True) -> None:
        """Removes a file, link or directory (with everything in it unless ``recursive=False``)."""
        await self._send("DELETE", self._url("/fs", path, user, recursive=recursive))

    async def chmod(self, path: PathArg, mode: int, *, user: Optional[str] = None) -> EntryInfo:
        """Sets permission bits."""
        body: Dict[str, Any] = {"path": _text_path(path), "mode": f"{mode:04o}"}
        if user:
            body["user"] = user
        return EntryInfo.from_json((await self._send("POST", f"{self._base}/fs/chmod", json=body)).json())

    async def chown(
        self, path: PathArg, owner: Optional[str] = None, group: Optional[str] = None, *, user: Optional[str] = None
    ) -> EntryInfo:
        """Sets owner and/or group (names or numbers in the sandbox); done as root unless ``user`` is given."""
        body: Dict[str, Any] = {"path": _text_path(path)}
        for k, v in (("owner", owner), ("group", group), ("user", user)):
            if v is not None:
                body[k] = v
        return EntryInfo.from_json((await self._send("POST", f"{self._base}/fs/chown", json=body)).json())

    # unasync: sync
    # def watch_dir(
    #     self,
    #     path: PathArg,
    #     on_event: Optional[Callable[[FilesystemEvent], None]] = None,
    #     recursive: bool = False,
    #     *,
    #     user: Optional[str] = None,
    #     on_exit: Optional[Callable[[Optional[Exception]], None]] = None,
    # ) -> "WatchHandle":
    #     """Watches ``path``; events go to ``on_event`` (on a background thread) and are also kept for
    #     :meth:`WatchHandle.get_new_events`. Returns once the watch is in place; resumes after a dropped
    #     connection."""
    #     handle = WatchHandle(self._t, self._url("/fs/watch", path, user, recursive=recursive), on_event, on_exit)
    #     handle._start()
    #     return handle
    # unasync: async
    async def watch_dir(
        self,
        path: PathArg,
        on_event: Callable[[FilesystemEvent], Union[None, Awaitable[None]]],
        recursive: bool = False,
        *,
        user: Optional[str] = None,
        on_exit: Optional[Callable[[Optional[Exception]], Union[None, Awaitable[None]]]] = None,
    ) -> "AsyncWatchHandle":
        """Watches ``path``, calling ``on_event`` for each event (a coroutine function is awaited); returns once
        the watch is in place and resumes after a dropped connection."""
        handle = AsyncWatchHandle(self._t, self._url("/fs/watch", path, user, recursive=recursive), on_event, on_exit)
        await handle._start()
        return handle
    # unasync: end
