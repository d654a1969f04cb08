"""Sandbox lifecycle with the blocking client, against the real daemon."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from conftest import Daemon
from sandpit import (
    AuthenticationError,
    InvalidArgumentError,
    NotFoundError,
    Sandbox,
    SandboxError,
    UnavailableError,
)

# Every test here uses the daemon through the environment (SANDPIT_URL, SANDPIT_STATE_DIR).
pytestmark = pytest.mark.usefixtures("sandpit_env")


def test_create_info_list_and_kill_with_context_manager() -> None:
    with Sandbox.create(metadata={"case": "lifecycle"}, env={"SB_VAR": "from-sandbox"}, timeout=120) as sbx:
        info = sbx.info()
        assert info.id == sbx.id == sbx.sandbox_id and info.state == "running"
        assert info.metadata == {"case": "lifecycle"} and info.env == {"SB_VAR": "from-sandbox"}
        assert info.created_at is not None and info.expires_at is not None
        assert sbx.is_running()
        listed = Sandbox.list(metadata={"case": "lifecycle"})
        assert [s.id for s in listed] == [sbx.id]
        assert sbx.id in [s.id for s in Sandbox.list(state="running")]
        assert Sandbox.list(metadata={"case": "nothing-has-this"}) == []
        assert sbx.commands.run("echo $SB_VAR").stdout == "from-sandbox\n"
        sandbox_id = sbx.id
    with pytest.raises(NotFoundError) as exc:
        Sandbox.connect(sandbox_id)
    assert exc.value.code == "not_found" and exc.value.status_code == 404 and sandbox_id in exc.value.message


def test_connect_pause_resume_set_timeout_and_kill() -> None:
    sbx = Sandbox.create()
    try:
        other = Sandbox.connect(sbx.id)
        assert other.id == sbx.id
        before = sbx.info().expires_at
        assert before is not None
        after = sbx.set_timeout(3600).expires_at
        assert after is not None and (after - before).total_seconds() > 3000

        handle = sbx.processes.start("for i in $(seq 1 50); do echo $i; sleep 0.05; done")
        assert sbx.pause().state == "paused"
        assert sbx.info().state == "paused"
        assert not sbx.is_running()
        assert sbx.resume().state == "running"
        assert handle.wait().exit_code == 0

        sbx.pause()
        # Any call on a paused sandbox resumes it first ...
        assert sbx.commands.run("echo awake").stdout == "awake\n"
        assert sbx.info().state == "running"
        # ... get does not; connect does.
        sbx.pause()
        looked_up = Sandbox.get(sbx.id)
        assert looked_up.id == sbx.id and looked_up.info().state == "paused"
        assert Sandbox.connect(sbx.id).info().state == "running"

        assert sbx.kill() is True
        assert sbx.kill() is False
        with pytest.raises(NotFoundError):
            other.info()
        with pytest.raises(NotFoundError):
            Sandbox.get(sbx.id)
        assert not other.is_running()
    finally:
        sbx.kill()
        sbx.close()


def test_the_agents_own_log_is_readable() -> None:
    with Sandbox.create() as sbx:
        assert "agent listening" in sbx.logs()
        assert len(sbx.logs(tail_bytes=10)) == 10
        with pytest.raises(InvalidArgumentError, match="tail_bytes"):
            sbx.logs(tail_bytes=1 << 40)


def test_errors_carry_the_servers_code_and_message(daemon: Daemon) -> None:
    with pytest.raises(AuthenticationError) as auth:
        Sandbox.list(api_key="wrong-key")
    assert auth.value.code == "unauthenticated" and auth.value.status_code == 401
    assert "found no API key" not in auth.value.message
    with pytest.raises(InvalidArgumentError) as bad:
        Sandbox.create(on_timeout="explode")
    assert bad.value.code == "invalid_argument" and "explode" in bad.value.message
    with pytest.raises(NotFoundError):
        Sandbox.connect("no-such-sandbox")
    with pytest.raises(UnavailableError):
        Sandbox.list(url="http://127.0.0.1:9")  # nothing listens on the discard port
    assert issubclass(UnavailableError, SandboxError)


def test_explicit_url_and_key_and_env_key(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SANDPIT_URL")
    monkeypatch.delenv("SANDPIT_STATE_DIR")
    monkeypatch.setenv("HOME", "/nonexistent")
    monkeypatch.setenv("XDG_DATA_HOME", "/nonexistent")
    if not Path("/var/lib/sandpit/api-key").is_file():
        with pytest.raises(AuthenticationError, match="found no API key"):
            Sandbox.list(url=daemon.url)
    assert isinstance(Sandbox.list(url=daemon.url, api_key=daemon.api_key), list)
    monkeypatch.setenv("SANDPIT_URL", daemon.url)
    monkeypatch.setenv("SANDPIT_API_KEY", daemon.api_key)
    with Sandbox.create() as sbx:
        assert sbx.commands.run("echo ok").stdout == "ok\n"


def test_on_timeout_kill_removes_the_sandbox() -> None:
    sbx = Sandbox.create(timeout=1, on_timeout="kill")
    try:
        deadline = time.monotonic() + 15
        while sbx.is_running() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not sbx.is_running()
    finally:
        sbx.kill()
        sbx.close()
