"""What both flavours of the SDK share for watching sandboxes: the query of an event read, and
:func:`verify_webhook` for a webhook's receiving end."""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import datetime
from typing import Any, Dict, Iterable, Mapping, Optional, Union

from ._types import LifecycleEvent, MetricSample

__all__ = ["verify_webhook"]

Time = Union[datetime, str, int, None]


def _time(v: Union[datetime, str, int]) -> str:
    return str(int(v.timestamp() * 1000)) if isinstance(v, datetime) else str(v)


def event_params(
    *,
    sandbox: Optional[str] = None,
    type: Union[str, Iterable[str], None] = None,
    since: Time = None,
    after: Optional[int] = None,
    limit: Optional[int] = None,
) -> Dict[str, Any]:
    """The query of ``GET /v1/events`` (and of its stream, which takes no ``since`` or ``limit``)."""
    params: Dict[str, Any] = {}
    if sandbox is not None:
        params["sandbox"] = sandbox
    if type is not None:
        params["type"] = type if isinstance(type, str) else ",".join(type)
    if since is not None:
        params["since"] = _time(since)
    if after is not None:
        params["after"] = after
    if limit is not None:
        params["limit"] = limit
    return params


def metric_params(start: Time = None, end: Time = None) -> Dict[str, Any]:
    """The query of ``GET /v1/sandboxes/{id}/metrics``."""
    params: Dict[str, Any] = {}
    if start is not None:
        params["start"] = _time(start)
    if end is not None:
        params["end"] = _time(end)
    return params


def webhook_body(url: str, events: Iterable[str], secret: str, description: Optional[str] = None) -> Dict[str, Any]:
    """The body of ``POST /v1/webhooks``."""
    body: Dict[str, Any] = {"url": url, "events": list(events), "secret": secret}
    if description is not None:
        body["description"] = description
    return body


def event_key(e: LifecycleEvent) -> int:
    """What orders the events of a stream (their id): a reopened stream drops those not above the last one."""
    return e.id


def sample_key(s: MetricSample) -> Optional[datetime]:
    """What orders the samples of a stream (their time): a reopened stream sends the latest one again."""
    return s.timestamp


def verify_webhook(
    body: Union[bytes, str],
    headers: Mapping[str, str],
    secret: str,
    *,
    tolerance_s: float = 300,
    now: Optional[float] = None,
) -> bool:
    """Whether a webhook delivery is the daemon's: ``Sandpit-Signature`` is ``v1=<hex HMAC-SHA256(secret,
    "<Sandpit-Timestamp>.<body>")>`` and the timestamp is within ``tolerance_s`` of ``now`` (refuses replays).
    ``body`` is the raw request body; ``headers`` any mapping (names matched without regard to case)."""
    lower = {k.lower(): v for k, v in headers.items()}
    ts, sig = lower.get("sandpit-timestamp"), lower.get("sandpit-signature")
    if not ts or not sig:
        return False
    try:
        sent = int(ts.strip())
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - sent) > tolerance_s:
        return False
    raw = body.encode() if isinstance(body, str) else bytes(body)
    want = hmac.new(secret.encode(), ts.strip().encode() + b"." + raw, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(part.strip(), "v1=" + want) for part in sig.split(","))
