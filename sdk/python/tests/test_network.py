"""Network policy and exposed ports (preview URLs), sync and async, against the real daemon.

Ports work with any backend (the session's daemon runs ``--backend process``); policies need the isolate
backend, so that part starts its own isolate daemon and is skipped when not root. Only loopback traffic.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from conftest import Daemon, DaemonProcess
from sandpit import AsyncSandbox, ConflictError, ExposedPort, InvalidArgumentError, Sandbox

# Every test here uses the daemon through the environment (SANDPIT_URL, SANDPIT_STATE_DIR).
pytestmark = pytest.mark.usefixtures("sandpit_env")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def preview_get(url: str, host: str, token: str | None = None) -> httpx.Response:
    """GET a preview URL: connect to the daemon, send the preview host name (glibc does not resolve
    ``*.localhost`` the way browsers do)."""
    daemon_port = host.rsplit(":", 1)[1]
    path = url.split(host, 1)[1]
    headers = {"Host": host}
    if token:
        headers["X-Sandpit-Token"] = token
    return httpx.get(f"http://127.0.0.1:{daemon_port}{path}", headers=headers, timeout=10)


def wait_ok(url: str, host: str, token: str | None) -> httpx.Response:
    deadline = time.monotonic() + 20
    while True:
        r = preview_get(url, host, token)
        if r.status_code != 502 or time.monotonic() > deadline:
            return r
        time.sleep(0.1)


def test_expose_port_get_host_and_close(daemon: Daemon) -> None:
    port = free_port()
    with Sandbox.create() as sbx:
        sbx.commands.run(f"python3 -m http.server {port} --bind 127.0.0.1", background=True)
        host = sbx.get_host(port)
        assert host == f"{port}-{sbx.id}.localhost:{daemon.url.rsplit(':', 1)[1]}"
        assert sbx.getHost(port) == host
        p = sbx.expose_port(port)
        assert isinstance(p, ExposedPort) and not p.public and p.token and p.token.startswith("spt_")
        assert p.url == f"http://{host}/" and p.browser_url == f"{p.url}?sandpit_token={p.token}"
        assert wait_ok(p.url, host, p.token).status_code == 200
        assert preview_get(p.url, host).status_code == 401
        assert [x.port for x in sbx.ports()] == [port]
        sbx.close_port(port)
        assert preview_get(p.url, host, p.token).status_code == 401
        with pytest.raises(ConflictError):
            sbx.get_network()  # the process backend has no network


async def test_async_expose_port_public(daemon: Daemon) -> None:
    port = free_port()
    sbx = await AsyncSandbox.create()
    try:
        await sbx.commands.run(f"python3 -m http.server {port} --bind 127.0.0.1", background=True)
        p = await sbx.expose_port(port, public=True)
        assert p.public and p.browser_url == p.url
        host = sbx.get_host(port)
        assert wait_ok(p.url, host, None).status_code == 200
        assert len(await sbx.ports()) == 1
        await sbx.close_port(port)
    finally:
        await sbx.kill()
        await sbx.close()


@pytest.fixture(scope="module")
def isolate_daemon() -> Iterator[Daemon]:
    if os.geteuid() != 0:
        pytest.skip("network policies need the isolate backend, which needs root")
    tmp = Path(tempfile.mkdtemp(prefix="sp-net-", dir="/tmp"))
    process = DaemonProcess(tmp / "state", tmp / "daemon.log", backend="isolate")
    try:
        yield process.start()
    finally:
        process.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def test_network_policy_on_create_get_and_set(isolate_daemon: Daemon) -> None:
    d = isolate_daemon
    with Sandbox.create(
        network={"egress": "deny", "allow_out": ["pypi.org", "*.pythonhosted.org"]}, url=d.url, api_key=d.api_key
    ) as sbx:
        assert sbx.get_network() == {"egress": "deny", "allow_out": ["pypi.org", "*.pythonhosted.org"], "deny_out": []}
        assert sbx.info().network == sbx.get_network()
        p = sbx.set_network(egress="allow", deny_out=["10.0.0.0/8"])
        assert p["egress"] == "allow" and p["deny_out"] == ["10.0.0.0/8"]
        with pytest.raises(InvalidArgumentError) as e:
            sbx.set_network(allow_out=["not a domain"])
        assert "not a domain" in e.value.message
    with pytest.raises(InvalidArgumentError):
        Sandbox.create(network={"allow_out": ["300.1.1.1"]}, url=d.url, api_key=d.api_key)


async def test_async_network_policy(isolate_daemon: Daemon) -> None:
    d = isolate_daemon
    sbx = await AsyncSandbox.create(network={"egress": "deny"}, url=d.url, api_key=d.api_key)
    try:
        assert (await sbx.get_network())["egress"] == "deny"
        assert (await sbx.set_network({"egress": "allow"}))["egress"] == "allow"
    finally:
        await sbx.kill()
        await sbx.close()
