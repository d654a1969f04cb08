# unasync: sync
# """``Volumes``: the daemon's volumes (``/v1/volumes``): create, list, read, delete, with blocking calls."""
# unasync: async
"""``AsyncVolumes``: the daemon's volumes (``/v1/volumes``): create, list, read, delete, with asyncio."""
# unasync: end

from __future__ import annotations

from typing import Any, List, Optional

from .._types import VolumeInfo
from .._volumes import _create_body, _path
from .transport import AsyncTransport

__all__ = ["AsyncVolumes"]


class AsyncVolumes:
    """Named, size-capped filesystems that outlive sandboxes: a sandbox mounts them when it is made
    (``AsyncSandbox.create(volumes=[VolumeMount("data", "/data")])``, and ``fork(volumes=...)``), several
    sandboxes may mount one at once, read-write or read-only. A volume belongs to the tenant of the key that made
    it. Its root directory belongs to ``user`` (uid 1000, the default user of commands); a write past its size
    fails inside the sandbox with "No space left on device". Volumes need the ``isolate`` backend: with
    ``process`` every call raises :class:`~sandpit.ConflictError`::

        async with AsyncVolumes() as volumes:
            await volumes.create("data", size_mb=256)
            async with AsyncSandbox.create(volumes=[VolumeMount("data", "/data")]) as sbx:
                await sbx.commands.run("echo hi > /data/hello.txt")
            print((await volumes.get("data")).used_mb)
            await volumes.delete("data")  # the files are gone with it
    """

    def __init__(self, *, url: Optional[str] = None, api_key: Optional[str] = None) -> None:
        self._transport = AsyncTransport(url, api_key)

    async def create(self, name: str, size_mb: int) -> VolumeInfo:
        """``POST /v1/volumes``: a new empty volume of ``size_mb`` MiB (16 to 1048576). Names are 1-64
        characters from ``a-z 0-9 . _ -``, not starting with ``.``. :class:`~sandpit.ConflictError` (409) if the
        name is taken (or the backend has no volumes), :class:`~sandpit.InvalidArgumentError` (400) for a bad
        name or size."""
        d = await self._transport.request("POST", "/v1/volumes", json=_create_body(name, size_mb), wait=True)
        return VolumeInfo.from_json(d)

    async def list(self) -> List[VolumeInfo]:
        """``GET /v1/volumes``: the volumes of this key's tenant (an admin key sees every tenant's)."""
        d = await self._transport.request("GET", "/v1/volumes")
        return [VolumeInfo.from_json(x) for x in d.get("volumes") or []]

    async def get(self, name: str) -> VolumeInfo:
        """``GET /v1/volumes/{name}``: its size, use and the sandboxes mounting it now;
        :class:`~sandpit.NotFoundError` if there is none (or it is another tenant's)."""
        return VolumeInfo.from_json(await self._transport.request("GET", _path(name)))

    async def delete(self, name: str) -> None:
        """``DELETE /v1/volumes/{name}``: the volume and its files; :class:`~sandpit.ConflictError` (409) while
        a sandbox mounts it, :class:`~sandpit.NotFoundError` if there is none."""
        await self._transport.request("DELETE", _path(name))

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._transport.aclose()

    async def __aenter__(self) -> AsyncVolumes:
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        await self.aclose()
