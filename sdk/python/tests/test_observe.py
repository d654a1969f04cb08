"""Per-process resource use (issue 20), end to end against the real daemon. Lifecycle events, per-sandbox metrics and
webhooks are tested in ``test_events.py``, ``test_metrics.py`` and ``test_webhooks.py``."""

from __future__ import annotations

import pytest

from sandpit import Sandbox

pytestmark = pytest.mark.usefixtures("sandpit_env")


def test_an_ended_process_reports_its_cpu_time_and_peak_memory() -> None:
    with Sandbox.create() as sbx:
        p = sbx.processes.start(
            "python3 -c 'import time\nx = bytearray(64 << 20)\nt = time.process_time()\n"
            "while time.process_time() - t < 0.3: pass'"
        )
        assert p.info.resources is None
        p.wait()
        info = p.refresh()
        assert info.status == "exited" and info.resources is not None, info
        assert info.resources.cpu_user_ms + info.resources.cpu_system_ms >= 300, info.resources
        assert info.resources.max_rss_bytes >= 64 << 20, info.resources
