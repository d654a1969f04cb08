# unasync: sync
# """``Audit``: the daemon's audit log (``/v1/audit``, admin keys only), with blocking calls."""
# unasync: async
"""``AsyncAudit``: the daemon's audit log (``/v1/audit``, admin keys only), with asyncio."""
# unasync: end

from __future__ import annotations

from datetime import datetime
from typing import Any, Dict, Optional, Union

from .._types import AuditPage
from .transport import AsyncTransport

__all__ = ["AsyncAudit"]


class AsyncAudit:
    """Read the audit log: which key did what to which sandbox, when, and how it ended (never a secret). Needs an
    ``admin`` key::

        async with AsyncAudit() as audit:
            page = await audit.list(tenant="team-a", limit=50)
            for e in page.entries:
                print(e.at, e.key_id, e.action, e.detail, e.outcome)
    """

    def __init__(self, *, url: Optional[str] = None, api_key: Optional[str] = None) -> None:
        self._transport = AsyncTransport(url, api_key)

    async def list(
        self,
        *,
        since: Union[datetime, str, int, None] = None,
        after: Optional[int] = None,
        tenant: Optional[str] = None,
        sandbox: Optional[str] = None,
        limit: Optional[int] = None,
    ) -> AuditPage:
        """``GET /v1/audit``: rows at or after ``since`` (a datetime, RFC 3339 text or epoch milliseconds), after
        the id ``after`` (a previous page's ``next_after``), of one tenant or sandbox, at most ``limit`` (default
        100, at most 1000), oldest first."""
        params: Dict[str, Any] = {}
        if since is not None:
            params["since"] = str(int(since.timestamp() * 1000)) if isinstance(since, datetime) else str(since)
        if after is not None:
            params["after"] = after
        if tenant is not None:
            params["tenant"] = tenant
        if sandbox is not None:
            params["sandbox"] = sandbox
        if limit is not None:
            params["limit"] = limit
        return AuditPage.from_json(await self._transport.request("GET", "/v1/audit", params=params))

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._transport.aclose()

    async def __aenter__(self) -> AsyncAudit:
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        await self.aclose()
