# unasync: sync
# """``Tenants``: tenant quotas (``/v1/tenants``), with blocking calls."""
# unasync: async
"""``AsyncTenants``: tenant quotas (``/v1/tenants``), with asyncio."""
# unasync: end

from __future__ import annotations

from typing import Any, List, Optional
from urllib.parse import quote

from .._types import TenantInfo, TenantQuotas
from .transport import AsyncTransport

__all__ = ["AsyncTenants"]


class AsyncTenants:
    """Read and set tenant quotas. Setting and listing need an ``admin`` key; any key reads its own tenant. A
    create over a quota raises :class:`~sandpit.ResourceExhaustedError` with ``code`` ``quota_exceeded`` or
    ``rate_limited``::

        tenants = AsyncTenants()
        await tenants.set_quotas("team-a", TenantQuotas(max_sandboxes=10, max_creates_per_second=2))
        print((await tenants.get("team-a")).usage.sandboxes)
    """

    def __init__(self, *, url: Optional[str] = None, api_key: Optional[str] = None) -> None:
        self._transport = AsyncTransport(url, api_key)

    async def get(self, name: str) -> TenantInfo:
        """``GET /v1/tenants/{name}``: quotas and usage (a non-admin key: its own tenant only)."""
        return TenantInfo.from_json(await self._transport.request("GET", "/v1/tenants/" + quote(name, safe="")))

    async def list(self) -> List[TenantInfo]:
        """``GET /v1/tenants`` (admin): every tenant with quotas, keys or sandboxes, by name."""
        d = await self._transport.request("GET", "/v1/tenants")
        return [TenantInfo.from_json(x) for x in d.get("tenants", [])]

    async def set_quotas(self, name: str, quotas: TenantQuotas) -> TenantInfo:
        """``PUT /v1/tenants/{name}`` (admin): replaces all four quotas (``None`` is no limit)."""
        path = "/v1/tenants/" + quote(name, safe="")
        return TenantInfo.from_json(await self._transport.request("PUT", path, json=quotas.to_json()))

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._transport.aclose()

    async def __aenter__(self) -> AsyncTenants:
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        await self.aclose()
