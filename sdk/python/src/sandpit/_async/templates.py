# unasync: sync
# """``Templates``: the daemon's templates (``/v1/templates``): build, wait, list, export, import, delete, warm
# pools, with blocking calls."""
# unasync: async
"""``AsyncTemplates``: the daemon's templates (``/v1/templates``): build, wait, list, export, import, delete, warm
pools, with asyncio."""
# unasync: end

from __future__ import annotations

import os

# unasync: sync
# import time
# unasync: async
import asyncio
import inspect
import time
# unasync: end
from typing import IO, Any, AsyncContextManager, AsyncGenerator, List, Optional, Union

import httpx

from .._client import _transport_error
from .._errors import SandboxTimeoutError, StreamError, TemplateBuildError
from .._files import _achunks
from .._templates import (
    BUILD_POLL_S,
    Archive,
    ProgressCallback,
    _archive,
    _close_dest,
    _create_body,
    _new_lines,
    _open_dest,
    _path,
)
from .._types import PoolInfo, TemplateBuild, TemplateInfo, TemplateSource
from .transport import AsyncTransport

__all__ = ["AsyncTemplates"]


class AsyncTemplates:
    """The root filesystems sandboxes start from (``AsyncSandbox.create(template=name)``): build one from a
    directory, tarball or OCI image on the daemon's host (admin keys), list and read them, export one as a
    ``.tar.zst`` file and import it on another daemon, delete them, keep a warm pool of sandboxes of one ready
    (:meth:`set_pool`). Snapshots (``sandbox.snapshot(name)``) are templates too, seen by their tenant only::

        async with AsyncTemplates() as templates:
            await templates.create("mini", {"dir": "/srv/rootfs"})
            info = await templates.wait("mini", print)  # progress lines as they come
            size = await templates.export("mini", "mini.tar.zst")
            await templates.import_archive("mini-copy", "mini.tar.zst")
    """

    def __init__(self, *, url: Optional[str] = None, api_key: Optional[str] = None) -> None:
        self._transport = AsyncTransport(url, api_key)

    async def list(self) -> List[TemplateInfo]:
        """``GET /v1/templates``: every template this key may use (the global ones, and its tenant's
        snapshots; an admin key sees all), by name."""
        d = await self._transport.request("GET", "/v1/templates")
        return [TemplateInfo.from_json(x) for x in d.get("templates", [])]

    async def get(self, name: str) -> TemplateInfo:
        """``GET /v1/templates/{name}``; :class:`~sandpit.NotFoundError` if there is none (or it is another
        tenant's snapshot)."""
        return TemplateInfo.from_json(await self._transport.request("GET", _path(name)))

    async def delete(self, name: str) -> None:
        """``DELETE /v1/templates/{name}``: :class:`~sandpit.ConflictError` (409) while a sandbox uses it, a
        snapshot is layered over it or it is being built; :class:`~sandpit.PermissionDeniedError` (403) for a
        tenant's key and a global template (a tenant deletes its own snapshots only)."""
        await self._transport.request("DELETE", _path(name))

    async def create(self, name: str, source: TemplateSource) -> TemplateBuild:
        """``POST /v1/templates`` (admin): starts building template ``name`` and returns at once (``state`` is
        ``building``); :meth:`wait` for it. ``source`` is one of ``{"dir": path}`` (a root filesystem directory,
        copied), ``{"tar": path}`` (a tarball, e.g. ``docker export``, optionally gzipped), ``{"oci": path}`` (an
        OCI image layout or ``docker save`` archive), paths on the daemon's host under one of its
        ``--import-root`` directories; or ``{"debian": {"suite": ..., "mirror": ...}}`` (debootstrap, both
        optional). Names are 1-64 characters from ``a-z 0-9 . _ -``; a name taken is a
        :class:`~sandpit.ConflictError`."""
        body = _create_body(name, source)
        return TemplateBuild.from_json(await self._transport.request("POST", "/v1/templates", json=body))

    async def build_status(self, name: str) -> TemplateBuild:
        """``GET /v1/templates/{name}/build``: where the latest build of ``name`` stands, with its last log
        lines."""
        return TemplateBuild.from_json(await self._transport.request("GET", _path(name, "/build")))

    async def wait(
        self, name: str, on_progress: Optional[ProgressCallback] = None, *, timeout: Optional[float] = None
    ) -> TemplateInfo:
        """Polls the build of ``name`` until it ends and returns the template. ``on_progress`` is called with
        every new log line (a coroutine function is awaited). A failed build raises
        :class:`~sandpit.TemplateBuildError`; one still building after ``timeout`` seconds (default: no limit)
        :class:`~sandpit.SandboxTimeoutError` (the build goes on)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        seen: List[str] = []
        while True:
            build = await self.build_status(name)
            if on_progress is not None:
                for line in _new_lines(seen, build.log):
                    # unasync: sync
                    # on_progress(line)
                    # unasync: async
                    out = on_progress(line)
                    if inspect.isawaitable(out):
                        await out
                    # unasync: end
            seen = build.log
            if build.state == "ready":
                return build.template if build.template is not None else await self.get(name)
            if build.state == "failed":
                raise TemplateBuildError(build)
            if deadline is not None and time.monotonic() >= deadline:
                raise SandboxTimeoutError(f"template {name!r} is still building after {timeout} s", code="timeout")
            await asyncio.sleep(BUILD_POLL_S)

    async def export(self, name: str, dest: Union[str, os.PathLike[str], IO[bytes]]) -> int:
        """``GET /v1/templates/{name}/export``: writes the template's root filesystem (its layers merged), a
        zstd-compressed tar, to ``dest`` (a path, or a binary file object) as it arrives, and returns the bytes
        written. :meth:`import_archive` takes the file back, here or on another daemon. A ``dest`` path is written
        as ``<dest>.part`` and renamed once complete: a failed export leaves it as it was."""
        f, path = _open_dest(dest)
        written, complete = 0, False
        try:
            chunks = await self.export_stream(name)
            try:
                async for chunk in chunks:
                    f.write(chunk)
                    written += len(chunk)
            finally:
                await chunks.aclose()
            complete = True
        finally:
            _close_dest(f, path, complete)
        return written

    async def export_stream(self, name: str) -> AsyncGenerator[bytes, None]:
        """:meth:`export` as an iterator of chunks (never held whole). The request is made at once, so that an
        unknown template raises here; a transfer cut off midway raises :class:`~sandpit.StreamError`."""
        path = _path(name, "/export")
        opened = self._transport.stream(path)
        try:
            resp = await opened.__aenter__()
        except httpx.HTTPError as exc:
            raise _transport_error(exc, self._transport.url + path) from exc
        return self._export_chunks(name, opened, resp)

    async def _export_chunks(
        self, name: str, opened: AsyncContextManager[httpx.Response], resp: httpx.Response
    ) -> AsyncGenerator[bytes, None]:
        got = 0
        try:
            async for chunk in resp.aiter_bytes():
                got += len(chunk)
                yield chunk
        except httpx.HTTPError as exc:
            raise StreamError(f"the export of template {name!r} was cut off after {got} bytes: {exc}") from exc
        finally:
            await opened.__aexit__(None, None, None)

    async def import_archive(self, name: str, archive: Archive, *, timeout: Optional[float] = None) -> TemplateInfo:
        """``POST /v1/templates?name={name}`` (admin): imports a template archive (one :meth:`export` wrote, or
        any root filesystem tar: plain, gzip or zstd) as template ``name`` and returns it once imported.
        ``archive`` is a path on this machine (streamed from disk: any size), the archive's bytes, a binary file
        object or an iterator of chunks. ``timeout`` bounds the wait for the daemon's answer (default: none).
        :class:`~sandpit.ConflictError` if the name is taken, :class:`~sandpit.InvalidArgumentError` if the
        archive is not a usable root filesystem."""
        with _archive(archive) as (data, headers):
            d = await self._transport.request(
                "POST", "/v1/templates", params={"name": name}, content=_achunks(data), headers=headers,
                timeout=timeout, wait=True,
            )
        return TemplateInfo.from_json(d)

    async def pool(self, name: str) -> PoolInfo:
        """``GET /v1/templates/{name}/pool``: the template's warm pool (any key): its ``size``, how many sandboxes
        are ``ready`` and how many ``filling``; ``size`` 0 (and no error) for a template without one, known or
        not."""
        return PoolInfo.from_json(await self._transport.request("GET", _path(name, "/pool")))

    async def set_pool(self, name: str, size: int) -> PoolInfo:
        """``PUT /v1/templates/{name}/pool`` (admin): keeps ``size`` sandboxes of template ``name`` made ahead and
        ready (0 to 256; 0 removes the pool), and returns the pool at once: it fills in the background, one
        sandbox at a time (poll :meth:`pool`). A create of the template that names none of ``cpu``,
        ``memory_mb``, ``pids``, ``disk_mb``, ``network``, ``volumes`` then takes a waiting sandbox, which gets the
        create's ``env``, ``metadata``, ``timeout``, ``on_timeout`` and tenant; any other create is made cold.
        Waiting sandboxes are in no list and count toward no tenant; the pool survives daemon restarts, and the
        template cannot be deleted (:class:`~sandpit.ConflictError`) until its size is 0.
        :class:`~sandpit.PermissionDeniedError` (403) for a key without ``admin``,
        :class:`~sandpit.NotFoundError` for an unknown template, :class:`~sandpit.InvalidArgumentError` for a size
        over 256."""
        body = {"size": size}
        return PoolInfo.from_json(await self._transport.request("PUT", _path(name, "/pool"), json=body))

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._transport.aclose()

    async def __aenter__(self) -> AsyncTemplates:
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        await self.aclose()
