"""Lifecycle events, per-sandbox metrics, webhooks and per-process resource use, end to end against the real daemon
(issue 20). Traffic stays on loopback: the webhook receivers are local HTTP servers."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.server
import json
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Tuple

import pytest

from sandpit import (
    AsyncEvents,
    AsyncSandbox,
    Events,
    InvalidArgumentError,
    Keys,
    NotFoundError,
    PermissionDeniedError,
    Sandbox,
    Webhooks,
    verify_webhook,
)

pytestmark = pytest.mark.usefixtures("sandpit_env")


def eventually(what: str, f: Callable[[], Any], timeout: float = 15) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = f()
        if v:
            return v
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_sandbox_life_is_one_event_per_transition_in_order() -> None:
    sbx = Sandbox.create()
    sbx.pause()
    sbx.resume()
    sbx.set_timeout(600)
    with Events() as events:
        # The stream replays from before the kill and then follows it.
        first = sbx.events().events[0]
        stream = events.stream(sandbox=sbx.id, after=first.id - 1)
        sbx.kill()
        want = ["sandbox.created", "sandbox.paused", "sandbox.resumed", "sandbox.timeout_extended", "sandbox.killed"]
        got = [next(stream) for _ in want]
        stream.close()
        assert [e.type for e in got] == want
        page = events.list(sandbox=sbx.id)
        assert [e.type for e in page.events] == want and page.next_after is None
        assert page.events == got
        assert page.events[0].data == {"template": "base", "pooled": False}
        assert page.events[1].data == {"reason": "api"} and page.events[3].data["timeout_s"] == 600
        assert all(e.sandbox_id == sbx.id and e.tenant == "default" and e.at is not None for e in page.events)
        two = events.list(sandbox=sbx.id, limit=2)
        assert [e.type for e in two.events] == want[:2] and two.next_after is not None
        rest = events.list(sandbox=sbx.id, after=two.next_after)
        assert [e.type for e in rest.events] == want[2:]
        paused = events.list(sandbox=sbx.id, type=["sandbox.paused", "sandbox.killed"])
        assert [e.type for e in paused.events] == ["sandbox.paused", "sandbox.killed"]
        for bad in ({"type": "sandbox.exploded"}, {"limit": 0}, {"since": "yesterday"}):
            with pytest.raises(InvalidArgumentError):
                events.list(**bad)  # type: ignore[arg-type]
    # The sandbox's own path is gone with it; its history is not.
    with pytest.raises(NotFoundError):
        sbx.events()


async def test_async_streams_follow_live_events_and_metrics() -> None:
    async with await AsyncSandbox.create() as sbx, AsyncEvents() as events:
        stream = events.stream(sandbox=sbx.id)
        pause = asyncio.get_running_loop().call_later(0.3, lambda: asyncio.ensure_future(sbx.pause()))
        try:
            e = await asyncio.wait_for(stream.__anext__(), 15)
        finally:
            pause.cancel()
            await stream.aclose()
        assert (e.type, e.sandbox_id, e.data) == ("sandbox.paused", sbx.id, {"reason": "api"})
        await sbx.resume()
        samples = sbx.metrics_stream()
        s = await asyncio.wait_for(samples.__anext__(), 15)
        await samples.aclose()
        assert s.pids >= 1 and s.mem_used > 0, s
        page = await sbx.events()
        assert [x.type for x in page.events][-2:] == ["sandbox.paused", "sandbox.resumed"]
        await sbx.kill()


def test_metrics_show_a_spinning_cpu_and_filter_by_time() -> None:
    with Sandbox.create() as sbx:
        sbx.commands.run("while :; do :; done", background=True)
        busy = eventually(
            "a sample over 50 % of a cpu",
            lambda: next((m for m in sbx.metrics() if m.cpu_used_pct > 50), None),
        )
        assert busy.cpu_used_pct <= 100 * busy.cpu_count + 10, busy
        assert busy.mem_used > 0 and busy.pids >= 2 and busy.cpu_count > 0, busy
        all_ = sbx.metrics()
        assert all(a.timestamp < b.timestamp for a, b in zip(all_, all_[1:]))  # type: ignore[operator]
        mid = all_[len(all_) // 2].timestamp
        assert mid is not None
        later = sbx.metrics(start=mid)
        assert later and later[0].timestamp == mid
        assert sbx.metrics(end=mid)[-1].timestamp == mid
        assert sbx.metrics(start="2999-01-01T00:00:00Z") == []
        with pytest.raises(InvalidArgumentError):
            sbx.metrics(start="soon")


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


class _Receiver:
    """A webhook receiver on loopback that answers ``codes`` in turn (then 200) and keeps what it got."""

    def __init__(self, codes: List[int]) -> None:
        self.codes = list(codes)
        self.got: List[Tuple[Dict[str, str], bytes]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.got.append(({k: v for k, v in self.headers.items()}, body))
                self.send_response(outer.codes.pop(0) if outer.codes else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Callable[[List[int]], _Receiver]]:
    made: List[_Receiver] = []

    def make(codes: List[int]) -> _Receiver:
        made.append(_Receiver(codes))
        return made[-1]

    yield make
    for r in made:
        r.close()


def test_webhooks_deliver_signed_events_and_retry(receiver: Callable[[List[int]], _Receiver]) -> None:
    ok, flaky = receiver([]), receiver([500, 500])
    secret = "py-webhook-secret"
    with Webhooks() as hooks:
        everything = hooks.create(ok.url, ["*"], secret, description="all")
        created = hooks.create(flaky.url, ["sandbox.created"], secret)
        assert everything.events == ["*"] and everything.description == "all"
        assert {w.id for w in hooks.list()} >= {everything.id, created.id}
        sbx = Sandbox.create()
        sbx.kill()
        mine = lambda r: [json.loads(b) for _, b in r.got if json.loads(b)["sandbox_id"] == sbx.id]  # noqa: E731
        eventually("created and killed at the receiver", lambda: len(mine(ok)) >= 2)
        assert [e["type"] for e in mine(ok)][:2] == ["sandbox.created", "sandbox.killed"]
        for headers, body in ok.got:
            assert verify_webhook(body, headers, secret)
            assert not verify_webhook(body, headers, "another-secret")
            assert not verify_webhook(body + b" ", headers, secret)
            assert not verify_webhook(body, headers, secret, now=time.time() + 3600)
        # Failed twice, delivered on the third attempt, under one delivery id.
        def three() -> Any:
            d = hooks.deliveries(created.id)
            return d if len(d) >= 3 else None

        rows = eventually("three attempts", three)
        assert [r.outcome for r in rows[:3]] == ["delivered", "retrying", "retrying"]
        assert [r.attempt for r in rows[:3]] == [3, 2, 1] and [r.status_code for r in rows[:3]] == [200, 500, 500]
        assert len({r.id for r in rows[:3]}) == 1 and rows[0].event_type == "sandbox.created"
        assert len(flaky.got) == 3 and all(verify_webhook(b, h, secret) for h, b in flaky.got)
        with pytest.raises(InvalidArgumentError):
            hooks.create(ok.url, ["sandbox.nope"], secret)
        with pytest.raises(InvalidArgumentError):
            hooks.create(ok.url, ["*"], "short")
        for w in (everything, created):
            hooks.delete(w.id)
        with pytest.raises(NotFoundError):
            hooks.get(created.id)
    with Keys() as keys:
        bot = keys.create("py-webhook-bot", ["sandboxes"])
        try:
            with pytest.raises(PermissionDeniedError), Webhooks(api_key=bot.key) as theirs:
                theirs.list()
        finally:
            keys.revoke(bot.id)


def test_verify_webhook_checks_a_known_vector() -> None:
    body = b'{"a":1}'
    sig = "v1=" + hmac.new(b"s3cret-key", b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
    headers = {"Sandpit-Timestamp": "1700000000", "Sandpit-Signature": sig}
    assert verify_webhook(body, headers, "s3cret-key", now=1_700_000_100)
    assert verify_webhook(body.decode(), {k.lower(): v for k, v in headers.items()}, "s3cret-key", now=1_700_000_100)
    assert not verify_webhook(body, headers, "s3cret-key", now=1_700_001_000)
    assert not verify_webhook(body, {"Sandpit-Timestamp": "1700000000"}, "s3cret-key", now=1_700_000_100)
