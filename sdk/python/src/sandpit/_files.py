"""``sandbox.files``: the files API with E2B's names (``read``, ``write``, ``write_files``, ``list``, ``exists``,
``get_info``, ``make_dir``, ``rename``, ``remove``, ``watch_dir``), blocking (:class:`Files`) and asyncio
(:class:`AsyncFiles`).

Content streams both ways: ``read(path, format="stream")`` yields chunks, ``write`` takes bytes, text, a binary
file object or an iterator of chunks and sends it as it is read, and ``write_files`` sends many files as one tar
request built while it is sent. Nothing holds a whole file unless the caller asked for ``text`` or ``bytes``.
Paths are ``str``, ``bytes`` or ``os.PathLike``; names that are not UTF-8 work (``bytes``, or ``str`` with
surrogate escapes); relative paths start at the user's home.

``watch_dir`` follows a directory over Server-Sent Events and reconnects by itself after a dropped connection,
resuming from the last event it delivered: the server replays what happened meanwhile, or sends a ``lost`` event
saying what it no longer has.
"""

from __future__ import annotations

import asyncio
import io
import os
import queue
import tarfile
import threading
import time
from dataclasses import dataclass
from typing import (
    IO,
    Any,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Literal,
    Optional,
    Sequence,
    Union,
    cast,
    overload,
)
from urllib.parse import quote, quote_from_bytes

import httpx

from ._client import AsyncTransport, SyncTransport, error_from_response
from ._errors import NotFoundError, SandboxError, StreamError
from ._stream import SseParser

__all__ = ["AsyncFiles", "AsyncWatchHandle", "EntryInfo", "Files", "FilesystemEvent", "WatchHandle", "WriteEntry"]

PathArg = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]
Data = Union[str, bytes, bytearray, memoryview, IO[bytes], Iterable[bytes]]
CHUNK = 256 * 1024
#: Reconnection attempts of a watch before it gives up.
WATCH_RETRIES = 5


@dataclass
class EntryInfo:
    """One file, directory or link (E2B's ``EntryInfo``, with sandpit's field names)."""

    path: str
    name: str
    type: str
    size: int
    mode: str
    permissions: str
    owner: str
    group: str
    modified_at: str
    symlink_target: Optional[str] = None
    path_b64: Optional[str] = None

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "EntryInfo":
        """Decode the API's entry object."""
        return cls(
            path=d["path"],
            name=d["name"],
            type=d["type"],
            size=int(d["size"]),
            mode=d["mode"],
            permissions=d["permissions"],
            owner=d["owner"],
            group=d["group"],
            modified_at=d["modified_at"],
            symlink_target=d.get("symlink_target"),
            path_b64=d.get("path_b64"),
        )


@dataclass
class FilesystemEvent:
    """A change seen by a watch: ``type`` is ``create``, ``write``, ``remove``, ``rename`` (``from_path`` →
    ``to_path``), ``chmod`` or ``lost`` (events ``from_seq``..``to_seq`` are gone; ``reason`` says why)."""

    seq: int
    type: str
    path: Optional[str]
    at: str
    is_dir: bool = False
    from_path: Optional[str] = None
    to_path: Optional[str] = None
    from_seq: Optional[int] = None
    to_seq: Optional[int] = None
    reason: Optional[str] = None

    @property
    def name(self) -> Optional[str]:
        """E2B's spelling: the path concerned."""
        return self.path

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "FilesystemEvent":
        """Decode the API's event object."""
        return cls(
            seq=int(d["seq"]),
            type=d["type"],
            path=d.get("path"),
            at=d.get("at", ""),
            is_dir=bool(d.get("is_dir", False)),
            from_path=d.get("from"),
            to_path=d.get("to"),
            from_seq=d.get("from_seq"),
            to_seq=d.get("to_seq"),
            reason=d.get("reason"),
        )


@dataclass
class WriteEntry:
    """One file for ``write_files``: where, what (bytes, text or a binary file object of known size) and,
    optionally, its permission bits."""

    path: str
    data: Union[str, bytes, IO[bytes]]
    mode: Optional[int] = None


def _path_bytes(path: PathArg) -> bytes:
    p = os.fsencode(path)
    if not p:
        raise SandboxError("the path is empty", code="invalid_argument")
    return p


def _text_path(path: PathArg) -> str:
    p = os.fsdecode(path)
    if not p:
        raise SandboxError("the path is empty", code="invalid_argument")
    return p


def _query(path: PathArg, user: Optional[str], **extra: Any) -> str:
    q = "path=" + quote_from_bytes(_path_bytes(path), safe="/")
    if user:
        q += "&user=" + quote(user, safe="")
    for k, v in extra.items():
        if v is None:
            continue
        if isinstance(v, bool):
            v = "true" if v else "false"
        q += f"&{k}={quote(str(v), safe='')}"
    return q


def _chunks(data: Data) -> Union[bytes, Iterator[bytes]]:
    """Bytes as they are; text as UTF-8; file objects and iterables as a lazy iterator of chunks."""
    if isinstance(data, str):
        return data.encode()
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    if hasattr(data, "read"):
        f = data

        def gen() -> Iterator[bytes]:
            while True:
                b = f.read(CHUNK)
                if not b:
                    return
                yield b if isinstance(b, bytes) else str(b).encode()

        return gen()
    return iter(data)


def _size_of(data: Union[str, bytes, IO[bytes]]) -> "tuple[int, IO[bytes]]":
    if isinstance(data, str):
        b = data.encode()
        return len(b), io.BytesIO(b)
    if isinstance(data, (bytes, bytearray, memoryview)):
        return len(data), io.BytesIO(bytes(data))
    try:
        size = os.fstat(data.fileno()).st_size - data.tell()
    except (AttributeError, OSError, io.UnsupportedOperation):
        pos = data.tell()
        data.seek(0, os.SEEK_END)
        size = data.tell() - pos
        data.seek(pos)
    return size, data


class _Pipe(io.RawIOBase):
    """A write-only file object that hands what is written to a generator."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: List[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.parts.append(bytes(b))
        return len(b)

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts = []
        return out


def _tar_chunks(entries: Sequence[Union[WriteEntry, Dict[str, Any]]]) -> Iterator[bytes]:
    """A tar of ``entries``, produced member by member (each file is read in chunks as it is sent)."""
    pipe = _Pipe()
    tar = tarfile.open(fileobj=pipe, mode="w|", format=tarfile.PAX_FORMAT)  # noqa: SIM115
    now = time.time()
    for e in entries:
        if isinstance(e, dict):
            e = WriteEntry(path=e["path"], data=e["data"], mode=e.get("mode"))
        name = os.fsdecode(e.path).lstrip("/")
        if not name:
            raise SandboxError("a file to write has an empty path", code="invalid_argument")
        size, f = _size_of(e.data)
        info = tarfile.TarInfo(name)
        info.size = size
        info.mode = 0o644 if e.mode is None else e.mode
        info.mtime = int(now)
        tar.addfile(info, f)
        chunk = pipe.take()
        if chunk:
            yield chunk
    tar.close()
    yield pipe.take()


def _split(entries: Sequence[Union[WriteEntry, Dict[str, Any]]]) -> Dict[str, List[Union[WriteEntry, Dict[str, Any]]]]:
    """Absolute paths are extracted at ``/``, relative ones at the home: one request each."""
    groups: Dict[str, List[Union[WriteEntry, Dict[str, Any]]]] = {}
    for e in entries:
        p = os.fsdecode(e["path"] if isinstance(e, dict) else e.path)
        groups.setdefault("/" if p.startswith("/") else ".", []).append(e)
    return groups


def _written(result: Dict[str, Any]) -> List[EntryInfo]:
    skipped = result.get("skipped") or []
    if skipped:
        s = skipped[0]
        raise SandboxError(f"{s['path']} was not written: {s['reason']}", code="invalid_argument")
    return [EntryInfo.from_json(e) for e in result["entries"] if e["type"] == "file"]


def _timeout(t: Optional[float]) -> httpx.Timeout:
    return httpx.Timeout(t if t is not None else 60.0, connect=10.0)


class Files:
    """The files of one sandbox (blocking). ``user=`` on every call acts as another user (default: the
    sandbox's default user)."""

    def __init__(self, transport: SyncTransport, sandbox_id: str) -> None:
        self._t = transport
        self._base = f"/v1/sandboxes/{quote(sandbox_id, safe='')}"

    def _url(self, endpoint: str, path: PathArg, user: Optional[str], **extra: Any) -> str:
        return f"{self._base}{endpoint}?{_query(path, user, **extra)}"

    def _send(self, method: str, url: str, **kw: Any) -> httpx.Response:
        try:
            resp = self._t._client.request(method, url, **kw)
        except httpx.HTTPError as exc:
            raise SandboxError(f"cannot reach sandpit at {self._t.url}: {exc}", code="unavailable") from exc
        if resp.status_code >= 400:
            raise error_from_response(resp.status_code, resp.content)
        return resp

    @overload
    def read(self, path: PathArg, format: Literal["text"] = "text", *, user: Optional[str] = None) -> str: ...
    @overload
    def read(self, path: PathArg, format: Literal["bytes"], *, user: Optional[str] = None) -> bytes: ...
    @overload
    def read(self, path: PathArg, format: Literal["stream"], *, user: Optional[str] = None) -> Iterator[bytes]: ...

    def read(
        self, path: PathArg, format: str = "text", *, user: Optional[str] = None
    ) -> Union[str, bytes, Iterator[bytes]]:
        """The file as ``text`` (UTF-8), ``bytes``, or a ``stream`` of chunks (never held whole)."""
        url = self._url("/files", path, user)
        if format == "stream":
            return self._stream(url)
        body = self._send("GET", url, timeout=_timeout(None)).content
        if format == "bytes":
            return body
        if format != "text":
            raise SandboxError(f"format {format!r}: use 'text', 'bytes' or 'stream'", code="invalid_argument")
        return body.decode()

    def _stream(self, url: str) -> Iterator[bytes]:
        # Opened at once, so that a missing file raises here and not at the first chunk.
        req = self._t._client.build_request("GET", url, timeout=_timeout(None))
        resp = self._t._client.send(req, stream=True)
        if resp.status_code >= 400:
            resp.read()
            resp.close()
            raise error_from_response(resp.status_code, resp.content)

        def gen() -> Iterator[bytes]:
            try:
                yield from resp.iter_bytes(CHUNK)
            finally:
                resp.close()

        return gen()

    def write(
        self,
        path: Union[PathArg, Sequence[Union[WriteEntry, Dict[str, Any]]]],
        data: Optional[Data] = None,
        *,
        user: Optional[str] = None,
        mode: Optional[int] = None,
    ) -> Union[EntryInfo, List[EntryInfo]]:
        """Writes ``data`` (text, bytes, a binary file object or an iterator of chunks, streamed) to ``path``,
        atomically, creating parents; returns its entry. A list of entries instead of a path is
        :meth:`write_files`."""
        if isinstance(path, (list, tuple)):
            return self.write_files(path, user=user)
        if data is None:
            raise SandboxError("write needs data", code="invalid_argument")
        url = self._url("/files", cast(PathArg, path), user, mode=None if mode is None else f"{mode:04o}")
        resp = self._send(
            "PUT", url, content=_chunks(data), headers={"Content-Type": "application/octet-stream"},
            timeout=_timeout(None),
        )
        return EntryInfo.from_json(resp.json())

    def write_files(
        self, files: Sequence[Union[WriteEntry, Dict[str, Any]]], *, user: Optional[str] = None
    ) -> List[EntryInfo]:
        """Writes many files in one request (a tar built while it is sent); returns their entries."""
        out: List[EntryInfo] = []
        for root, group in _split(files).items():
            url = self._url("/files/tar", root, user)
            resp = self._send(
                "POST", url, content=_tar_chunks(group), headers={"Content-Type": "application/x-tar"},
                timeout=_timeout(None),
            )
            out.extend(_written(resp.json()))
        return out

    def list(self, path: PathArg, depth: int = 1, *, user: Optional[str] = None) -> List[EntryInfo]:
        """The entries under a directory, ``depth`` levels deep."""
        resp = self._send("GET", self._url("/fs/list", path, user, depth=depth))
        return [EntryInfo.from_json(e) for e in resp.json()["entries"]]

    def get_info(self, path: PathArg, *, user: Optional[str] = None) -> EntryInfo:
        """One entry (a symlink is reported as one)."""
        return EntryInfo.from_json(self._send("GET", self._url("/fs/stat", path, user)).json())

    def exists(self, path: PathArg, *, user: Optional[str] = None) -> bool:
        """Whether ``path`` exists."""
        try:
            self.get_info(path, user=user)
            return True
        except NotFoundError:
            return False

    def make_dir(self, path: PathArg, *, user: Optional[str] = None, mode: Optional[int] = None) -> bool:
        """Creates a directory and its parents; ``False`` if it existed."""
        body: Dict[str, Any] = {"path": _text_path(path), "parents": True}
        if user:
            body["user"] = user
        if mode is not None:
            body["mode"] = f"{mode:04o}"
        return self._send("POST", f"{self._base}/fs/mkdir", json=body).status_code == 201

    def rename(
        self, old_path: PathArg, new_path: PathArg, *, user: Optional[str] = None, overwrite: bool = False
    ) -> EntryInfo:
        """Moves ``old_path`` to ``new_path`` (refused if it exists, unless ``overwrite``)."""
        body: Dict[str, Any] = {"from": _text_path(old_path), "to": _text_path(new_path), "overwrite": overwrite}
        if user:
            body["user"] = user
        return EntryInfo.from_json(self._send("POST", f"{self._base}/fs/move", json=body).json())

    def remove(self, path: PathArg, *, user: Optional[str] = None, recursive: bool = True) -> None:
        """Removes a file, link or directory (with everything in it unless ``recursive=False``)."""
        self._send("DELETE", self._url("/fs", path, user, recursive=recursive))

    def chmod(self, path: PathArg, mode: int, *, user: Optional[str] = None) -> EntryInfo:
        """Sets permission bits."""
        body: Dict[str, Any] = {"path": _text_path(path), "mode": f"{mode:04o}"}
        if user:
            body["user"] = user
        return EntryInfo.from_json(self._send("POST", f"{self._base}/fs/chmod", json=body).json())

    def chown(
        self, path: PathArg, owner: Optional[str] = None, group: Optional[str] = None, *, user: Optional[str] = None
    ) -> EntryInfo:
        """Sets owner and/or group (names or numbers in the sandbox); done as root unless ``user`` is given."""
        body: Dict[str, Any] = {"path": _text_path(path)}
        for k, v in (("owner", owner), ("group", group), ("user", user)):
            if v is not None:
                body[k] = v
        return EntryInfo.from_json(self._send("POST", f"{self._base}/fs/chown", json=body).json())

    def watch_dir(
        self,
        path: PathArg,
        on_event: Optional[Callable[[FilesystemEvent], None]] = None,
        recursive: bool = False,
        *,
        user: Optional[str] = None,
        on_exit: Optional[Callable[[Optional[Exception]], None]] = None,
    ) -> "WatchHandle":
        """Watches ``path``; events go to ``on_event`` (on a background thread) and are also kept for
        :meth:`WatchHandle.get_new_events`. Returns once the watch is in place; resumes after a dropped
        connection."""
        handle = WatchHandle(self._t, self._url("/fs/watch", path, user, recursive=recursive), on_event, on_exit)
        handle._start()
        return handle


class WatchHandle:
    """A running watch (blocking SDK). ``stop()`` ends it; ``get_new_events()`` returns what arrived since the
    last call."""

    def __init__(
        self,
        transport: SyncTransport,
        url: str,
        on_event: Optional[Callable[[FilesystemEvent], None]],
        on_exit: Optional[Callable[[Optional[Exception]], None]],
    ) -> None:
        self._t = transport
        self._url = url
        self._on_event = on_event
        self._on_exit = on_exit
        self._events: "queue.Queue[FilesystemEvent]" = queue.Queue()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: Optional[Exception] = None
        self._last: Optional[int] = None
        self._resp: Optional[httpx.Response] = None
        self._thread = threading.Thread(target=self._run, name="sandpit-watch", daemon=True)

    def _start(self) -> None:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        failures = 0
        error: Optional[Exception] = None
        while not self._stop.is_set():
            headers = {"Accept": "text/event-stream"}
            if self._last is not None:
                headers["Last-Event-ID"] = str(self._last)
            try:
                with self._t._client.stream(
                    "GET", self._url, headers=headers, timeout=httpx.Timeout(60.0, connect=10.0)
                ) as resp:
                    if resp.status_code >= 400:
                        resp.read()
                        raise error_from_response(resp.status_code, resp.content)
                    self._resp = resp
                    parser = SseParser()
                    for line in resp.iter_lines():
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
                            break
                        elif msg.event != "keepalive":
                            import json

                            ev = FilesystemEvent.from_json(json.loads(msg.data))
                            if self._last is not None and ev.seq <= self._last:
                                continue
                            self._last = ev.seq
                            self._events.put(ev)
                            if self._on_event is not None:
                                self._on_event(ev)
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
                time.sleep(min(0.1 * 2 ** (failures - 1), 2.0))
        self._ready.set()
        if self._on_exit is not None:
            self._on_exit(error)

    def get_new_events(self) -> List[FilesystemEvent]:
        """The events that arrived since the last call."""
        out: List[FilesystemEvent] = []
        while True:
            try:
                out.append(self._events.get_nowait())
            except queue.Empty:
                return out

    def stop(self) -> None:
        """Ends the watch."""
        self._stop.set()
        resp = self._resp
        if resp is not None:
            try:
                resp.close()
            except Exception:  # noqa: BLE001 - closing a stream another thread reads may fail harmlessly
                pass
        self._thread.join(timeout=5)


class AsyncFiles:
    """The files of one sandbox (asyncio); the same surface as :class:`Files` with ``await``."""

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
            raise error_from_response(resp.status_code, resp.content)
        return resp

    async def read(
        self, path: PathArg, format: str = "text", *, user: Optional[str] = None
    ) -> Union[str, bytes, AsyncIterator[bytes]]:
        """The file as ``text``, ``bytes``, or a ``stream`` (an async iterator of chunks)."""
        url = self._url("/files", path, user)
        if format == "stream":
            req = self._t._client.build_request("GET", url, timeout=_timeout(None))
            resp = await self._t._client.send(req, stream=True)
            if resp.status_code >= 400:
                await resp.aread()
                await resp.aclose()
                raise error_from_response(resp.status_code, resp.content)

            async def gen() -> AsyncIterator[bytes]:
                try:
                    async for c in resp.aiter_bytes(CHUNK):
                        yield c
                finally:
                    await resp.aclose()

            return gen()
        body = (await self._send("GET", url, timeout=_timeout(None))).content
        if format == "bytes":
            return body
        if format != "text":
            raise SandboxError(f"format {format!r}: use 'text', 'bytes' or 'stream'", code="invalid_argument")
        return body.decode()

    async def write(
        self,
        path: Union[PathArg, Sequence[Union[WriteEntry, Dict[str, Any]]]],
        data: Optional[Union[Data, AsyncIterable[bytes]]] = None,
        *,
        user: Optional[str] = None,
        mode: Optional[int] = None,
    ) -> Union[EntryInfo, List[EntryInfo]]:
        """Writes ``data`` (text, bytes, a binary file object, or a sync or async iterator of chunks,
        streamed) to ``path`` atomically; returns its entry. A list of entries is :meth:`write_files`."""
        if isinstance(path, (list, tuple)):
            return await self.write_files(path, user=user)
        if data is None:
            raise SandboxError("write needs data", code="invalid_argument")
        content: Any = data if hasattr(data, "__aiter__") else _chunks(data)
        if isinstance(content, Iterator):
            content = _aiter(content)
        url = self._url("/files", cast(PathArg, path), user, mode=None if mode is None else f"{mode:04o}")
        resp = await self._send(
            "PUT", url, content=content, headers={"Content-Type": "application/octet-stream"},
            timeout=_timeout(None),
        )
        return EntryInfo.from_json(resp.json())

    async def write_files(
        self, files: Sequence[Union[WriteEntry, Dict[str, Any]]], *, user: Optional[str] = None
    ) -> List[EntryInfo]:
        """Writes many files in one request (a tar built while it is sent); returns their entries."""
        out: List[EntryInfo] = []
        for root, group in _split(files).items():
            resp = await self._send(
                "POST", self._url("/files/tar", root, user), content=_aiter(_tar_chunks(group)),
                headers={"Content-Type": "application/x-tar"}, timeout=_timeout(None),
            )
            out.extend(_written(resp.json()))
        return out

    async def list(self, path: PathArg, depth: int = 1, *, user: Optional[str] = None) -> List[EntryInfo]:
        """The entries under a directory, ``depth`` levels deep."""
        resp = await self._send("GET", self._url("/fs/list", path, user, depth=depth))
        return [EntryInfo.from_json(e) for e in resp.json()["entries"]]

    async def get_info(self, path: PathArg, *, user: Optional[str] = None) -> EntryInfo:
        """One entry."""
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
        """Moves ``old_path`` to ``new_path``."""
        body: Dict[str, Any] = {"from": _text_path(old_path), "to": _text_path(new_path), "overwrite": overwrite}
        if user:
            body["user"] = user
        return EntryInfo.from_json((await self._send("POST", f"{self._base}/fs/move", json=body)).json())

    async def remove(self, path: PathArg, *, user: Optional[str] = None, recursive: bool = True) -> None:
        """Removes a file, link or directory."""
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
        """Sets owner and/or group."""
        body: Dict[str, Any] = {"path": _text_path(path)}
        for k, v in (("owner", owner), ("group", group), ("user", user)):
            if v is not None:
                body[k] = v
        return EntryInfo.from_json((await self._send("POST", f"{self._base}/fs/chown", json=body)).json())

    async def watch_dir(
        self,
        path: PathArg,
        on_event: Callable[[FilesystemEvent], Union[None, Awaitable[None]]],
        recursive: bool = False,
        *,
        user: Optional[str] = None,
        on_exit: Optional[Callable[[Optional[Exception]], Union[None, Awaitable[None]]]] = None,
    ) -> "AsyncWatchHandle":
        """Watches ``path``, calling ``on_event`` for each event; returns once the watch is in place and
        resumes after a dropped connection."""
        handle = AsyncWatchHandle(self._t, self._url("/fs/watch", path, user, recursive=recursive), on_event, on_exit)
        await handle._start()
        return handle


async def _aiter(it: Iterator[bytes]) -> AsyncIterator[bytes]:
    for chunk in it:
        yield chunk


class AsyncWatchHandle:
    """A running watch (asyncio). ``await stop()`` ends it."""

    def __init__(
        self,
        transport: AsyncTransport,
        url: str,
        on_event: Callable[[FilesystemEvent], Union[None, Awaitable[None]]],
        on_exit: Optional[Callable[[Optional[Exception]], Union[None, Awaitable[None]]]],
    ) -> None:
        self._t = transport
        self._url = url
        self._on_event = on_event
        self._on_exit = on_exit
        self._last: Optional[int] = None
        self._ready: "asyncio.Future[None]" = asyncio.get_running_loop().create_future()
        self._task: Optional["asyncio.Task[None]"] = None

    async def _start(self) -> None:
        self._task = asyncio.create_task(self._run())
        await self._ready

    async def _call(self, f: Callable[..., Any], arg: Any) -> None:
        r = f(arg)
        if asyncio.iscoroutine(r):
            await r

    async def _run(self) -> None:
        import json

        failures = 0
        error: Optional[Exception] = None
        while True:
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
                    parser = SseParser()
                    ended = False
                    async for line in resp.aiter_lines():
                        msg = parser.feed(line)
                        if msg is None:
                            continue
                        if msg.event == "started":
                            if self._last is None:
                                self._last = int(msg.id or 0)
                            failures = 0
                            if not self._ready.done():
                                self._ready.set_result(None)
                        elif msg.event == "ended":
                            ended = True
                            break
                        elif msg.event != "keepalive":
                            ev = FilesystemEvent.from_json(json.loads(msg.data))
                            if self._last is not None and ev.seq <= self._last:
                                continue
                            self._last = ev.seq
                            await self._call(self._on_event, ev)
                    if ended:
                        break
            except SandboxError as exc:
                if not self._ready.done():
                    self._ready.set_exception(exc)
                    return
                error = exc
                break
            except (httpx.HTTPError, OSError) as exc:
                failures += 1
                if failures > WATCH_RETRIES or not self._ready.done():
                    error = StreamError(f"the watch could not be resumed: {exc}")
                    if not self._ready.done():
                        self._ready.set_exception(error)
                        return
                    break
                await asyncio.sleep(min(0.1 * 2 ** (failures - 1), 2.0))
        if self._on_exit is not None:
            await self._call(self._on_exit, error)

    async def stop(self) -> None:
        """Ends the watch."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - a cancelled watch ends quietly
                pass
