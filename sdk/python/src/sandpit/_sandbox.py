"""What ``Sandbox`` (``_sync/sandbox.py``) and ``AsyncSandbox`` (``_async/sandbox.py``) share: request bodies and
paths, and the ``exec_with`` configuration."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union
from urllib.parse import quote

from ._network import NetworkPolicy, policy_body
from ._options import ExecOptions, ExecOptionsBuilder
from ._types import VolumeMount, VolumeMountLike

__all__ = ["Configure"]

#: ``exec_with``'s configuration: a builder callback, or options built already.
Configure = Union[Callable[[ExecOptionsBuilder], ExecOptionsBuilder], ExecOptions, None]
_START_WAIT_S = 60.0


def _options(configure: Configure) -> ExecOptions:
    if configure is None:
        return ExecOptions()
    if isinstance(configure, ExecOptions):
        return configure
    built = configure(ExecOptionsBuilder())
    if not isinstance(built, ExecOptionsBuilder):
        raise TypeError("the exec_with callback must return the builder it was given")
    return built.build()


def _create_body(
    template: Optional[str],
    timeout: Optional[int],
    cpu: Optional[float],
    memory_mb: Optional[int],
    pids: Optional[int],
    disk_mb: Optional[int],
    env: Optional[Dict[str, str]],
    envs: Optional[Dict[str, str]],
    metadata: Optional[Dict[str, str]],
    on_timeout: Optional[str],
    network: Optional[NetworkPolicy] = None,
    volumes: Optional[Sequence[VolumeMountLike]] = None,
) -> Dict[str, Any]:
    body: Dict[str, Any] = {}
    for key, value in (
        ("template", template),
        ("timeout", None if timeout is None else int(timeout)),
        ("cpu", cpu),
        ("memory_mb", memory_mb),
        ("pids", pids),
        ("disk_mb", disk_mb),
        ("on_timeout", on_timeout),
    ):
        if value is not None:
            body[key] = value
    merged = {**(env or {}), **(envs or {})}
    if merged:
        body["env"] = merged
    if metadata:
        body["metadata"] = dict(metadata)
    if network is not None:
        body["network"] = policy_body(network)
    if volumes is not None:
        body["volumes"] = _volumes_body(volumes)
    return body


def _volumes_body(volumes: Sequence[VolumeMountLike]) -> List[Dict[str, Any]]:
    """``volumes`` as the daemon takes it: a :class:`VolumeMount` in its wire form, a mapping as it is (the daemon
    refuses an unknown key, a missing one, a bad path: nothing is checked twice here)."""
    if isinstance(volumes, (str, bytes, Mapping, VolumeMount)):
        raise TypeError("volumes= takes a list of mounts: [VolumeMount(name, path)] or [{'name': ..., 'path': ...}]")
    return [m.to_json() if isinstance(m, VolumeMount) else dict(m) for m in volumes]


def _fork_body(
    count: int,
    timeout: Optional[int],
    cpu: Optional[float],
    memory_mb: Optional[int],
    pids: Optional[int],
    disk_mb: Optional[int],
    env: Optional[Dict[str, str]],
    envs: Optional[Dict[str, str]],
    metadata: Optional[Dict[str, str]],
    on_timeout: Optional[str],
    network: Optional[NetworkPolicy],
    volumes: Optional[Sequence[VolumeMountLike]] = None,
) -> Dict[str, Any]:
    """``POST /v1/sandboxes/{id}/fork``'s body: ``count`` and the options of a create but ``template``."""
    body = _create_body(
        None, timeout, cpu, memory_mb, pids, disk_mb, env, envs, metadata, on_timeout, network, volumes
    )
    return {"count": int(count), **body}


def _list_params(state: Optional[str], metadata: Optional[Dict[str, str]]) -> List[Tuple[str, str]]:
    params: List[Tuple[str, str]] = []
    if state is not None:
        params.append(("state", state))
    for k, v in (metadata or {}).items():
        params.append(("metadata", f"{k}={v}"))
    return params


def _path(sandbox_id: str, tail: str = "") -> str:
    return f"/v1/sandboxes/{quote(sandbox_id, safe='')}{tail}"
