"""What ``Templates`` (``_sync/templates.py``) and ``AsyncTemplates`` (``_async/templates.py``) share: paths, the
build request, how a build's log is followed, and how an archive is uploaded."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import IO, Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple, Union
from urllib.parse import quote

from ._files import Data
from ._types import TemplateSource

__all__ = ["Archive", "ProgressCallback"]

#: An archive to import: a path on this machine (``str`` or ``os.PathLike``, streamed from disk), its bytes, a
#: binary file object, or an iterator of chunks.
Archive = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, IO[bytes], Iterable[bytes]]
#: Called with every new line of a build's log (in ``AsyncTemplates.wait``, a coroutine function is awaited).
ProgressCallback = Callable[[str], Any]
#: Content type of a template archive (``GET .../export`` answers with it; ``POST /v1/templates`` takes it).
ARCHIVE_TYPE = "application/zstd"
#: Seconds between two polls of a build.
BUILD_POLL_S = 0.3


def _path(name: str, tail: str = "") -> str:
    return f"/v1/templates/{quote(name, safe='')}{tail}"


def _create_body(name: str, source: TemplateSource) -> Dict[str, Any]:
    """``POST /v1/templates``'s JSON body; a host path may be given as an ``os.PathLike``."""
    body = {k: os.fsdecode(v) if k in ("dir", "tar", "oci") else v for k, v in source.items()}
    return {"name": name, "source": body}


def _new_lines(seen: List[str], log: List[str]) -> List[str]:
    """The lines of ``log`` not shown yet: the daemon keeps the last lines only, so what follows the longest
    overlap of the end of ``seen`` with the start of ``log``."""
    for k in range(min(len(seen), len(log)), 0, -1):
        if seen[len(seen) - k :] == log[:k]:
            return log[k:]
    return list(log)


@contextmanager
def _archive(archive: Archive) -> Iterator[Tuple[Data, Dict[str, str]]]:
    """The body to upload and its headers; a path is opened here (and closed after), read as it is sent. (The
    daemon reads a refused upload, a name taken, to its end before answering: the answer arrives and the connection
    is kept for the next request.)"""
    headers = {"Content-Type": ARCHIVE_TYPE}
    if isinstance(archive, (str, os.PathLike)):
        with open(archive, "rb") as f:
            headers["Content-Length"] = str(os.fstat(f.fileno()).st_size)
            yield f, headers
    else:
        yield archive, headers


def _open_dest(dest: Union[str, "os.PathLike[str]", IO[bytes]]) -> Tuple[IO[bytes], Optional[str]]:
    """The file an export is written to, and the path it is for when this module opened it: then it is
    ``<path>.part``, renamed over the path once complete (see :func:`_close_dest`)."""
    if isinstance(dest, (str, os.PathLike)):
        path = os.fspath(dest)
        return open(path + ".part", "wb"), path
    return dest, None


def _close_dest(f: IO[bytes], path: Optional[str], complete: bool) -> None:
    """Close an export's file this module opened: a complete one replaces ``path``; an incomplete one is removed,
    leaving ``path`` as it was."""
    if path is None:
        return
    f.close()
    if complete:
        os.replace(path + ".part", path)
        return
    try:
        os.unlink(path + ".part")
    except OSError:
        pass
