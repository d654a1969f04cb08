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

:class:`AsyncFiles` and :class:`AsyncWatchHandle` are in ``_async/``, :class:`Files` and :class:`WatchHandle` in
``_sync/`` (generated from them): this module holds what they share.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
import time
from dataclasses import dataclass
from typing import IO, Any, AsyncIterable, AsyncIterator, Dict, Iterable, Iterator, List, Optional, Sequence, Union
from urllib.parse import quote, quote_from_bytes

import httpx

from ._errors import SandboxError

__all__ = ["EntryInfo", "FilesystemEvent", "WriteEntry"]

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


def _known_length(data: object) -> Optional[int]:
    """The bytes left in a regular file object, sent ahead as ``Content-Length`` (with it the daemon hands large
    content to the sandbox without copying it through the agent); ``None`` for anything else (bytes carry their
    own length; pipes, sockets and iterators are sent chunked)."""
    if not hasattr(data, "fileno") or not hasattr(data, "tell"):
        return None
    try:
        st = os.fstat(data.fileno())
        if not stat.S_ISREG(st.st_mode):
            return None
        at: int = data.tell()
        return max(0, st.st_size - at)
    except (OSError, ValueError, io.UnsupportedOperation):
        return None


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


async def _aiter(it: Iterator[bytes]) -> AsyncIterator[bytes]:
    for chunk in it:
        yield chunk


def _achunks(data: Union[Data, AsyncIterable[bytes]]) -> Union[bytes, AsyncIterable[bytes]]:
    """:func:`_chunks` for :class:`httpx.AsyncClient`, which streams async iterators only: async iterables are
    passed as they are, the other iterables wrapped."""
    if isinstance(data, AsyncIterable):
        return data
    content = _chunks(data)
    return content if isinstance(content, bytes) else _aiter(content)
