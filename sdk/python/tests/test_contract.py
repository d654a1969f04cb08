"""The SDK's shapes against the daemon's own OpenAPI document (generated from the Rust wire types)."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Set

import httpx
import pytest

from conftest import Daemon
from sandpit import (
    EventPage,
    LifecycleEvent,
    MetricSample,
    PoolInfo,
    ProcessInfo,
    ProcessResources,
    SandboxInfo,
    SnapshotInfo,
    TemplateBuild,
    TemplateInfo,
    VolumeInfo,
    VolumeMount,
    Webhook,
    WebhookDelivery,
)
from sandpit._observe import event_params, metric_params, webhook_body
from sandpit._options import build_start_request
from sandpit._types import LostOutput, Rlimit


@pytest.fixture(scope="module")
def spec(daemon: Daemon) -> Dict[str, Any]:
    resp = httpx.get(daemon.url + "/openapi.json", headers={"Authorization": f"Bearer {daemon.api_key}"})
    resp.raise_for_status()
    return dict(resp.json())


def props(spec: Dict[str, Any], name: str) -> Set[str]:
    return set(spec["components"]["schemas"][name]["properties"])


def query(spec: Dict[str, Any], path: str) -> Set[str]:
    """The query parameters of ``GET path``."""
    return {p["name"] for p in spec["paths"][path]["get"].get("parameters", []) if p.get("in") == "query"}


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
    assert fields(LifecycleEvent) == props(spec, "LifecycleEvent")
    assert fields(EventPage) == props(spec, "EventList")
    assert fields(MetricSample) == props(spec, "MetricSample")
    assert fields(Webhook) == props(spec, "Webhook")
    assert fields(WebhookDelivery) == props(spec, "WebhookDelivery")


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
    assert set(webhook_body("http://h/", ["*"], "secret-1", "d")) == props(spec, "CreateWebhookRequest")
    assert set(event_params(sandbox="s", type="t", since=1, after=1, limit=1)) == query(spec, "/v1/events")
    assert set(event_params(type="t", since=1, after=1, limit=1)) == query(spec, "/v1/sandboxes/{id}/events")
    assert set(event_params(sandbox="s", type="t", after=1)) == query(spec, "/v1/events/stream")
    assert set(metric_params(1, 1)) == query(spec, "/v1/sandboxes/{id}/metrics")
    assert query(spec, "/v1/webhooks/{id}/deliveries") == {"limit"}
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
        "/v1/volumes/{name}", "/v1/events", "/v1/events/stream", "/v1/sandboxes/{id}/events",
        "/v1/sandboxes/{id}/events/stream", "/v1/sandboxes/{id}/metrics", "/v1/sandboxes/{id}/metrics/stream",
        "/v1/webhooks", "/v1/webhooks/{id}", "/v1/webhooks/{id}/deliveries",
    }
    assert used <= set(spec["paths"])
