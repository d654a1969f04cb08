"""The SDK's shapes against the daemon's own OpenAPI document (generated from the Rust wire types)."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Set

import httpx
import pytest

from conftest import Daemon
from sandpit import (
    PoolInfo,
    ProcessInfo,
    ProcessResources,
    SandboxInfo,
    SnapshotInfo,
    TemplateBuild,
    TemplateInfo,
    VolumeInfo,
    VolumeMount,
)
from sandpit._options import build_start_request
from sandpit._types import LostOutput, Rlimit


@pytest.fixture(scope="module")
def spec(daemon: Daemon) -> Dict[str, Any]:
    resp = httpx.get(daemon.url + "/openapi.json", headers={"Authorization": f"Bearer {daemon.api_key}"})
    resp.raise_for_status()
    return dict(resp.json())


def props(spec: Dict[str, Any], name: str) -> Set[str]:
    return set(spec["components"]["schemas"][name]["properties"])


def fields(cls: Any) -> Set[str]:
    return {f.name for f in dataclasses.fields(cls)} - {"raw"}


def test_response_types_match_the_spec(spec: Dict[str, Any]) -> None:
    assert fields(ProcessInfo) == props(spec, "ProcessInfo")
    assert fields(ProcessResources) == props(spec, "ProcessResources")
    assert fields(SandboxInfo) == props(spec, "SandboxInfo")
    assert fields(LostOutput) == props(spec, "LostEvent")
    assert fields(Rlimit) == props(spec, "Rlimit")
    assert fields(TemplateInfo) == props(spec, "TemplateInfo")
    assert fields(TemplateBuild) == props(spec, "TemplateBuild")
    assert fields(SnapshotInfo) == props(spec, "SnapshotInfo")
    assert fields(VolumeInfo) == props(spec, "VolumeInfo")
    assert fields(VolumeMount) == props(spec, "VolumeMount")
    assert fields(PoolInfo) == props(spec, "PoolInfo")


def test_request_bodies_use_only_known_fields(spec: Dict[str, Any]) -> None:
    body = build_start_request(
        cmd="x", cwd="/", env={"A": "1"}, user="u", timeout_ms=1, idle_timeout_ms=1, stdin=b"x", tty=True,
        rlimits=[Rlimit("nofile", 1, 2)], id="i",
    )
    assert set(body) | {"argv"} == props(spec, "StartRequest")
    from sandpit._sandbox import _create_body

    mounts = [VolumeMount("v", "/v", read_only=True)]
    create = _create_body("base", 1, 1.0, 1, 1, 1, {"A": "1"}, None, {"k": "v"}, "kill", {"egress": "deny"}, mounts)
    assert set(create) == props(spec, "CreateSandboxRequest")
    assert set(create["volumes"][0]) == props(spec, "VolumeMount")
    from sandpit._volumes import _create_body as _volume_body

    assert set(_volume_body("v", 16)) == props(spec, "CreateVolumeRequest")
    from sandpit._sandbox import _fork_body

    fork = _fork_body(2, 1, 1.0, 1, 1, 1, {"A": "1"}, None, {"k": "v"}, "kill", {"egress": "deny"}, mounts)
    base, extra = spec["components"]["schemas"]["ForkRequest"]["allOf"]
    assert base == {"$ref": "#/components/schemas/CreateSandboxRequest"}
    assert set(fork) == (props(spec, "CreateSandboxRequest") - {"template"}) | set(extra["properties"])
    statuses = spec["components"]["schemas"]["ProcessStatus"]["enum"]
    assert statuses == ["queued", "running", "exited", "failed", "killed", "timed_out"]


def test_every_path_the_sdk_calls_exists(spec: Dict[str, Any]) -> None:
    used = {
        "/v1/sandboxes", "/v1/sandboxes/{id}", "/v1/sandboxes/{id}/connect", "/v1/sandboxes/{id}/pause",
        "/v1/sandboxes/{id}/resume", "/v1/sandboxes/{id}/timeout", "/v1/sandboxes/{id}/exec",
        "/v1/sandboxes/{id}/processes", "/v1/sandboxes/{id}/processes/{pid}",
        "/v1/sandboxes/{id}/processes/{pid}/events", "/v1/sandboxes/{id}/processes/{pid}/ws",
        "/v1/sandboxes/{id}/processes/{pid}/stdin", "/v1/sandboxes/{id}/processes/{pid}/signal",
        "/v1/sandboxes/{id}/processes/{pid}/resize", "/v1/sandboxes/{id}/processes/{pid}/wait",
        "/v1/sandboxes/{id}/snapshots", "/v1/sandboxes/{id}/fork", "/v1/templates", "/v1/templates/{name}",
        "/v1/templates/{name}/build", "/v1/templates/{name}/export", "/v1/templates/{name}/pool", "/v1/volumes",
        "/v1/volumes/{name}",
    }
    assert used <= set(spec["paths"])
