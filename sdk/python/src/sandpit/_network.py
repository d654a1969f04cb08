"""A sandbox's network: its egress policy and its exposed ports (preview URLs).

Shared by :class:`~sandpit.Sandbox` and :class:`~sandpit.AsyncSandbox`: the request shapes and answers are
built here once; the sandbox classes only send them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union
from urllib.parse import urlsplit

from ._types import parse_time

#: A policy as the daemon takes it: ``{"egress": "allow"|"deny", "allow_out": [...], "deny_out": [...]}``.
NetworkPolicy = Dict[str, Any]


@dataclass(frozen=True)
class ExposedPort:
    """An exposed port: its preview URL and, in the answer that created it, its port-scoped token."""

    port: int
    url: str
    public: bool
    token: Optional[str] = None
    expires_at: Optional[datetime] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ExposedPort:
        """Decode an ``ExposedPort`` JSON object."""
        return cls(
            port=int(d["port"]),
            url=str(d["url"]),
            public=bool(d.get("public", False)),
            token=d.get("token"),
            expires_at=parse_time(d.get("expires_at")),
            raw=dict(d),
        )

    @property
    def browser_url(self) -> str:
        """The URL a browser can open as is: a private port's carries its token once (the daemon swaps it for
        an HttpOnly cookie and removes it from the address bar)."""
        if self.public or not self.token:
            return self.url
        return f"{self.url}?sandpit_token={self.token}"


def policy_body(
    policy: Optional[Mapping[str, Any]] = None,
    *,
    egress: Optional[str] = None,
    allow_out: Optional[Sequence[str]] = None,
    deny_out: Optional[Sequence[str]] = None,
) -> NetworkPolicy:
    """A policy from a mapping and/or keywords (keywords win)."""
    body: NetworkPolicy = dict(policy or {})
    if egress is not None:
        body["egress"] = egress
    if allow_out is not None:
        body["allow_out"] = list(allow_out)
    if deny_out is not None:
        body["deny_out"] = list(deny_out)
    return body


def expose_body(public: bool, expires_in: Optional[int]) -> Dict[str, Any]:
    body: Dict[str, Any] = {"public": bool(public)}
    if expires_in is not None:
        body["expires_in"] = int(expires_in)
    return body


def host_of(sandbox_id: str, port: int, preview_domain: Optional[str], base_url: str) -> str:
    """``{port}-{id}.{preview-domain}``; without the daemon's word on its domain, ``localhost`` and the port
    of the daemon's URL."""
    domain = preview_domain
    if not domain:
        netloc = urlsplit(base_url).netloc
        domain = "localhost" + (":" + netloc.rsplit(":", 1)[1] if ":" in netloc else "")
    return f"{int(port)}-{sandbox_id}.{domain}"


def ports_of(d: Mapping[str, Any]) -> List[ExposedPort]:
    return [ExposedPort.from_json(p) for p in d.get("ports", [])]


Policy = Union[Mapping[str, Any], None]
