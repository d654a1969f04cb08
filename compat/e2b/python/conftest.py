"""A real sandpit daemon for the stock E2B SDK, and the environment variables that point the SDK at it (docs/e2b.md): ``E2B_API_URL`` (the control API at ``/e2b``), ``E2B_SANDBOX_URL`` (envd at
``/e2b/sandbox``), ``E2B_API_KEY`` (a sandpit key) and ``E2B_VALIDATE_API_KEY=false``.

As root (CI) the daemon is ``--backend isolate`` with its ``base`` template (the host's ``/usr``: E2B runs commands
with ``/bin/bash -l``), what users run. Otherwise it is ``--backend process`` with ``HOME`` set to an empty directory,
so that the login shells E2B starts do not read the developer's own profile."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

REPO = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Daemon:
    def __init__(self, url: str, e2b_url: str, key: str, state: Path, log: Path) -> None:
        self.url, self.e2b_url, self.key, self.state, self.log = url, e2b_url, key, state, log


@pytest.fixture(scope="session")
def daemon() -> Iterator[Daemon]:
    binary = os.environ.get("SANDPIT_BIN") or str(REPO / "target" / "debug" / "sandpit")
    tmp = Path(tempfile.mkdtemp(prefix="sandpit-e2b-"))
    state, log = tmp / "state", tmp / "daemon.log"
    port, e2b_port = free_port(), free_port()
    backend = "isolate" if os.geteuid() == 0 else "process"
    home = tmp / "home"
    home.mkdir()
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [binary, "serve", "--backend", backend, "--listen", f"127.0.0.1:{port}",
             "--e2b-listen", f"127.0.0.1:{e2b_port}", "--state-dir", str(state)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "HOME": str(home)},
        )
    url = f"http://127.0.0.1:{port}"
    try:
        key = _wait_ready(proc, url, port, state, log, backend)
        os.environ.update({
            "E2B_API_URL": f"{url}/e2b",
            "E2B_SANDBOX_URL": f"{url}/e2b/sandbox",
            "E2B_API_KEY": key,
            "E2B_VALIDATE_API_KEY": "false",
        })
        yield Daemon(url, f"http://127.0.0.1:{e2b_port}", key, state, log)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        # The state dir holds the base template (hard links): remove it, unless something is still mounted there.
        with open("/proc/self/mounts") as m:
            mounted = str(tmp) in m.read()
        if not mounted:
            subprocess.run(["rm", "-rf", "--one-file-system", str(tmp)], check=False)


def _wait_ready(proc: subprocess.Popen, url: str, port: int, state: Path, log: Path, backend: str) -> str:
    """The API key, once the daemon answers (and, with the isolate backend, its base template is built: 5-15 s
    at first start, longer on a loaded machine)."""
    deadline = time.monotonic() + 60
    while not (state / "api-key").is_file() or not _answers(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the daemon did not start; its log:\n{log.read_text()}")
        time.sleep(0.05)
    key = (state / "api-key").read_text().strip()
    if backend != "isolate":
        return key
    deadline = time.monotonic() + 300
    while True:
        try:
            r = httpx.get(f"{url}/v1/templates/base", headers={"Authorization": f"Bearer {key}"}, timeout=30)
            if r.status_code == 200:
                return key
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the base template was not built; the daemon's log:\n{log.read_text()}")
        time.sleep(0.2)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def poll(check, timeout: float = 10.0, every: float = 0.05):
    """Calls ``check`` until it returns something truthy (returned) or ``timeout`` passes (AssertionError)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {check}")
        time.sleep(every)
