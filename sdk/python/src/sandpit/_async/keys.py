# unasync: sync
# """``Keys``: the daemon's API keys (``/v1/keys``, admin keys only), with blocking calls."""
# unasync: async
"""``AsyncKeys``: the daemon's API keys (``/v1/keys``, admin keys only), with asyncio."""
# unasync: end

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence
from urllib.parse import quote

from .._types import CreatedKey, KeyInfo
from .transport import AsyncTransport

__all__ = ["AsyncKeys"]


class AsyncKeys:
    """Make API keys with a name, a tenant and scopes (``admin``, ``sandboxes``, ``read``), list them, revoke
    them. The calls need an ``admin`` key (the daemon's key file holds one)::

        keys = AsyncKeys()
        made = await keys.create(name="ci-bot", scopes=["sandboxes"], tenant="team-a")
        print(made.key)  # shown only now
    """

    def __init__(self, *, url: Optional[str] = None, api_key: Optional[str] = None) -> None:
        self._transport = AsyncTransport(url, api_key)

    async def create(
        self,
        name: str,
        scopes: Sequence[str],
        *,
        tenant: Optional[str] = None,
        expires_in: Optional[int] = None,
    ) -> CreatedKey:
        """``POST /v1/keys``: the new key; its secret (``.key``) is in this answer only."""
        body: Dict[str, Any] = {"name": name, "scopes": list(scopes)}
        if tenant is not None:
            body["tenant"] = tenant
        if expires_in is not None:
            body["expires_in"] = expires_in
        return CreatedKey.from_json(await self._transport.request("POST", "/v1/keys", json=body))

    async def list(self) -> List[KeyInfo]:
        """``GET /v1/keys``: every key made with :meth:`create`, oldest first, without secrets."""
        d = await self._transport.request("GET", "/v1/keys")
        return [KeyInfo.from_json(x) for x in d.get("keys", [])]

    async def revoke(self, id: str) -> None:
        """``DELETE /v1/keys/{id}``: the key stops working at its next request."""
        await self._transport.request("DELETE", "/v1/keys/" + quote(id, safe=""))

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._transport.aclose()

    async def __aenter__(self) -> AsyncKeys:
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        await self.aclose()
