"""What ``Volumes`` (``_sync/volumes.py``) and ``AsyncVolumes`` (``_async/volumes.py``) share: paths and the
create request."""

from __future__ import annotations

from typing import Any, Dict
from urllib.parse import quote


def _path(name: str) -> str:
    return f"/v1/volumes/{quote(name, safe='')}"


def _create_body(name: str, size_mb: int) -> Dict[str, Any]:
    """``POST /v1/volumes``'s JSON body."""
    return {"name": name, "size_mb": int(size_mb)}
