"""Test fixtures: a real ``sandpit serve --backend process`` daemon, built from this repository.

The binary is ``$SANDPIT_BIN`` or ``<repo>/target/debug/sandpit``; it must be built first
(``cargo build -p sandpit-cli``). The daemon listens on a free loopback port with a temporary state dir; the
tests reach it through ``SANDPIT_URL`` and ``SANDPIT_STATE_DIR`` (so the SDK's key-file lookup is exercised).
The daemon starts with the first test that asks for it (see :func:`sandpit_env`), so unit tests need none.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Iterator, Sequence

import httpx
import pytest

from sandpit import AsyncSandbox, Sandbox, TemplateInfo, Templates

REPO = Path(__file__).resolve().parents[3]


@dataclass
class Daemon:
    """A running daemon."""

    url: str
    api_key: str
    state_dir: Path
    log: Path


def sandpit_bin() -> Path:
    """The daemon binary: ``$SANDPIT_BIN`` or ``<repo>/target/debug/sandpit``."""
    return Path(os.environ.get("SANDPIT_BIN") or REPO / "target" / "debug" / "sandpit")


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DaemonProcess:
    """``sandpit serve --backend process`` on a free loopback port and a state dir; can be killed and restarted
    on the same port and state (its sandboxes and their processes outlive it). ``extra_args`` are added to the
    command line (e.g. ``["--import-root", dir]``)."""

    def __init__(self, state_dir: Path, log: Path, backend: str = "process", extra_args: Sequence[str] = ()) -> None:
        self.backend = backend
        self.extra_args = [str(a) for a in extra_args]
        self.state_dir = state_dir
        self.log = log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: "subprocess.Popen[bytes] | None" = None

    def start(self) -> Daemon:
        """Start it and wait until ``/health`` answers and the API key is written."""
        binary = sandpit_bin()
        if not binary.is_file():
            pytest.exit(f"sandpit binary not found at {binary}: run `cargo build -p sandpit-cli` or set SANDPIT_BIN", 2)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [str(binary), "serve", "--backend", self.backend, "--listen", f"127.0.0.1:{self.port}",
                 "--state-dir", str(self.state_dir), *self.extra_args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        key = self.state_dir / "api-key"
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                pytest.exit(f"sandpit serve exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}", 2)
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200 and key.exists():
                    return Daemon(self.url, key.read_text().strip(), self.state_dir, self.log)
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.exit(f"sandpit serve did not answer /health in 30 s:\n{self.log.read_text()[-3000:]}", 2)
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL it (no graceful shutdown)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        """Stop it gracefully (SIGTERM, then SIGKILL after 10 s)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


def busybox_rootfs(root: Path) -> Path:
    """A root filesystem of busybox alone, with ``root`` and ``user`` (uid 1000), for a small template of an
    ``isolate`` daemon (``Templates.create(name, {"dir": root})``): only ``sh echo cat sleep seq id true`` have
    applet links, the rest is called as ``busybox <applet>``."""
    for d in ("bin", "etc", "tmp", "home/user"):
        (root / d).mkdir(parents=True)
    shutil.copy("/bin/busybox", root / "bin" / "busybox")
    for applet in ("sh", "echo", "cat", "sleep", "seq", "id", "true"):
        (root / "bin" / applet).symlink_to("busybox")
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\nuser:x:1000:\n")
    return root


@contextmanager
def isolate_daemon(prefix: str, skip_reason: str) -> Iterator[DaemonProcess]:
    """For a module fixture: ``sandpit serve --backend isolate`` (not started: call ``.start()``) with its state,
    its log and an ``--import-root`` (see :func:`import_root`) in a new ``/tmp/<prefix>...`` dir; at the end it is
    stopped and the dir removed. Skips with ``skip_reason`` unless root (the isolate backend needs it)."""
    if os.geteuid() != 0:
        pytest.skip(skip_reason)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    imports = tmp / "imports"
    imports.mkdir()
    process = DaemonProcess(
        tmp / "state", tmp / "daemon.log", backend="isolate", extra_args=["--import-root", str(imports)]
    )
    try:
        yield process
    finally:
        process.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def import_root(d: Daemon) -> Path:
    """The ``--import-root`` of a daemon from :func:`isolate_daemon`."""
    return d.state_dir.parent / "imports"


def build_busybox(templates: Templates, d: Daemon, name: str) -> TemplateInfo:
    """Builds template ``name`` from a :func:`busybox_rootfs` made at ``import_root(d) / name``, and waits for it."""
    templates.create(name, {"dir": busybox_rootfs(import_root(d) / name)})
    return templates.wait(name, timeout=120)


@pytest.fixture(scope="session")
def daemon() -> Iterator[Daemon]:
    """Start the real daemon once for the whole session."""
    tmp = Path(tempfile.mkdtemp(prefix="sp-", dir="/tmp"))
    # Samples every 300 ms and webhook retries after 50 ms: tests of metrics and webhooks need not wait.
    process = DaemonProcess(
        tmp / "state", tmp / "daemon.log", extra_args=["--metrics-interval-ms", "300", "--webhook-backoff-ms", "50"]
    )
    try:
        yield process.start()
    finally:
        process.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def sandpit_env(daemon: Daemon) -> Iterator[None]:
    """Point the SDK at the test daemon through the environment (URL and state dir; the key is found in it).

    Not autouse, so that pure unit tests (``test_unit.py``) run without a daemon: a test that needs one asks for
    it, for this fixture, or for ``sbx``/``asbx``; a module of such tests can say
    ``pytestmark = pytest.mark.usefixtures("sandpit_env")``."""
    saved = {k: os.environ.get(k) for k in ("SANDPIT_URL", "SANDPIT_API_KEY", "SANDPIT_STATE_DIR")}
    os.environ["SANDPIT_URL"] = daemon.url
    os.environ["SANDPIT_STATE_DIR"] = str(daemon.state_dir)
    os.environ.pop("SANDPIT_API_KEY", None)
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def sbx(sandpit_env: None) -> Iterator[Sandbox]:
    """One sandbox shared by the tests that only run commands."""
    with Sandbox.create(timeout=1800, metadata={"suite": "shared"}) as s:
        yield s


@pytest.fixture
async def asbx(sbx: Sandbox) -> AsyncIterator[AsyncSandbox]:
    """The shared sandbox, connected from an async client (closed, not killed, after the test)."""
    a = await AsyncSandbox.connect(sbx.id)
    try:
        yield a
    finally:
        await a.close()


def _under_ci() -> bool:
    """CI sets ``CI`` (to ``true``); as in the Rust test kit, an empty value, ``false`` or ``0`` mean no."""
    return os.environ.get("CI", "").strip() not in ("", "false", "0")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Under CI a skipped test is a failure: CI runs as root with every tool installed, so a skip there
    means part of the suite silently stopped running (the same policy as ``sandpit_testkit::skip``)."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if _under_ci() and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under CI (CI={os.environ.get('CI')}): {reason}"
