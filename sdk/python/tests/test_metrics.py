"""Per-sandbox metrics (``/v1/sandboxes/{id}/metrics`` and its SSE stream) end to end against the real daemon, which
the fixtures start with ``--metrics-interval-ms 300``.

The process backend (the session daemon) measures cpu, memory and pids of a sandbox's processes but has no memory
limit or disk accounting to report (``mem_limit`` and ``disk_used`` are 0 there): those are tested on an isolate
daemon (root only), whose sandboxes have cgroups and a disk of their own."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import timedelta
from typing import Any, Callable, Dict, Iterator, Optional, TypeVar

import pytest

from conftest import Daemon, isolate_daemon
from sandpit import AsyncSandbox, InvalidArgumentError, MetricSample, NotFoundError, Sandbox

T = TypeVar("T")
SPIN = "while :; do :; done"


def eventually(what: str, f: Callable[[], Optional[T]], timeout: float = 20) -> T:
    """Poll ``f`` until it returns something (not ``None``), failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = f()
        if v is not None:
            return v
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def in_thread(f: Callable[[], T], timeout: float = 20, what: str = "an answer") -> T:
    """``f()`` run in a thread, failing the test (instead of hanging it) when it takes longer than ``timeout``."""
    out: Dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = f()
        except BaseException as exc:  # noqa: B036 - handed to the test's thread
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"no {what} in {timeout} s"
    if "error" in out:
        raise out["error"]
    return out["value"]  # type: ignore[no-any-return]


def busy(sbx: Sandbox) -> MetricSample:
    """The first sample of ``sbx`` with more than half a cpu busy (it runs a spinner)."""
    return eventually(
        "a sample over 50 % of a cpu", lambda: next((m for m in sbx.metrics() if m.cpu_used_pct > 50), None)
    )


@pytest.mark.usefixtures("sandpit_env")
def test_a_spinning_cpu_shows_and_samples_filter_by_time() -> None:
    with Sandbox.create(disk_mb=64) as sbx:
        idle = eventually("a first sample", lambda: next(iter(sbx.metrics()), None))
        assert idle.mem_used > 0 and idle.pids >= 1 and idle.cpu_count > 0, idle
        assert idle.disk_limit == 64 << 20, idle
        sbx.commands.run(SPIN, background=True)
        hot = busy(sbx)
        assert hot.cpu_used_pct <= 100 * hot.cpu_count + 10, hot
        assert hot.mem_used > 0 and hot.pids >= 2, hot
        samples = eventually("five samples", lambda: (lambda m: m if len(m) >= 5 else None)(sbx.metrics()))
        assert all(m.timestamp is not None for m in samples)
        times = [m.timestamp for m in samples]
        assert all(a < b for a, b in zip(times, times[1:]))  # type: ignore[operator]
        # About one sample per --metrics-interval-ms (300 ms).
        gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:])]  # type: ignore[operator]
        assert 0.15 < sorted(gaps)[len(gaps) // 2] < 1.5, gaps
        # start and end are inclusive; a datetime, epoch milliseconds or RFC 3339 text.
        mid = times[len(times) // 2]
        assert mid is not None
        assert sbx.metrics(start=mid)[0].timestamp == mid
        assert sbx.metrics(end=mid)[-1].timestamp == mid
        assert sbx.metrics(start=mid, end=mid) == [m for m in samples if m.timestamp == mid]
        ms = int(mid.timestamp() * 1000)
        assert sbx.metrics(start=ms, end=ms)[0].timestamp == mid
        text = mid.isoformat().replace("+00:00", "Z")
        assert sbx.metrics(start=text, end=text)[0].timestamp == mid
        assert sbx.metrics(start=mid + timedelta(days=1)) == []
        assert sbx.metrics(start="2999-01-01T00:00:00Z") == []
        for bad in ({"start": "soon"}, {"end": "later"}):
            with pytest.raises(InvalidArgumentError):
                sbx.metrics(**bad)
        sbx.kill()
        with pytest.raises(NotFoundError):
            sbx.metrics()


def test_the_stream_sends_samples_and_ends_with_the_sandbox(sbx: Sandbox) -> None:
    """(``sbx``, the suite's shared sandbox, is only there to be another live sandbox, as a daemon usually has.)"""
    other, sbx = sbx, Sandbox.create()
    try:
        stream = sbx.metrics_stream()
        first, second = in_thread(lambda: (next(stream), next(stream)))
        assert first.timestamp is not None and second.timestamp is not None
        assert first.timestamp < second.timestamp and second.mem_used > 0 and second.pids >= 1, (first, second)
    finally:
        sbx.kill()
    # Deleted, the sandbox's stream ends (without an error) while the other sandbox keeps running.
    in_thread(lambda: list(stream), what="end of the metrics stream after its sandbox was deleted")
    assert other.is_running()


@pytest.mark.usefixtures("sandpit_env")
async def test_async_metrics_and_stream() -> None:
    sbx = await AsyncSandbox.create()
    try:
        stream = sbx.metrics_stream()
        try:
            s = await asyncio.wait_for(stream.__anext__(), 15)
        finally:
            await stream.aclose()
        assert s.mem_used > 0 and s.pids >= 1 and s.cpu_count > 0, s
        samples = await sbx.metrics(end=s.timestamp)
        assert samples and samples[-1] == s
        await sbx.kill()
        with pytest.raises(NotFoundError):
            await sbx.metrics()
    finally:
        await sbx.kill()
        await sbx.close()


@pytest.fixture(scope="module")
def isolate() -> Iterator[Daemon]:
    """An isolate daemon sampling every 300 ms (root only)."""
    with isolate_daemon("sp-metrics-", "memory limits and disk use are measured by the isolate backend (root)") as p:
        p.extra_args += ["--metrics-interval-ms", "300"]
        yield p.start()


def test_isolate_sandboxes_report_limits_disk_and_cpu(isolate: Daemon) -> None:
    with Sandbox.create(cpu=1, memory_mb=256, disk_mb=64, url=isolate.url, api_key=isolate.api_key) as sbx:
        first = eventually("a first sample", lambda: next(iter(sbx.metrics()), None))
        assert first.mem_limit == 256 << 20 and first.disk_limit == 64 << 20 and first.cpu_count == 1.0, first
        assert first.mem_used > 0 and first.pids >= 1, first
        sbx.commands.run("dd if=/dev/zero of=$HOME/blob bs=1M count=8 && sync")
        grown = eventually(
            "8 MiB more disk used", lambda: next((m for m in sbx.metrics() if m.disk_used >= 8 << 20), None)
        )
        assert grown.disk_used <= grown.disk_limit, grown
        sbx.commands.run(SPIN, background=True)
        hot = busy(sbx)
        # One cpu at most: the sandbox's cpu limit.
        assert hot.cpu_used_pct <= 100 * hot.cpu_count + 15, hot
