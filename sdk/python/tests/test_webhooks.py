"""Webhooks (``/v1/webhooks``) end to end against the real daemon (started with ``--webhook-backoff-ms 50``), and
:func:`verify_webhook`. Every receiver is a local HTTP server on 127.0.0.1: no traffic leaves the machine."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, TypeVar

import pytest

from conftest import free_port
from sandpit import (
    AsyncWebhooks,
    Events,
    InvalidArgumentError,
    Keys,
    LifecycleEvent,
    NotFoundError,
    PermissionDeniedError,
    Sandbox,
    WebhookDelivery,
    Webhooks,
    verify_webhook,
)

T = TypeVar("T")
SECRET = "py-webhook-secret"


def eventually(what: str, f: Callable[[], Optional[T]], timeout: float = 20) -> T:
    """Poll ``f`` until it returns something (not ``None``), failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = f()
        if v is not None:
            return v
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class Receiver:
    """A webhook receiver on loopback that answers the statuses ``codes`` in turn (then 200) and keeps each request's
    headers (names in lower case) and body."""

    def __init__(self, codes: List[int]) -> None:
        self.codes = list(codes)
        self.got: List[Tuple[Dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with outer.lock:
                    outer.got.append(({k.lower(): v for k, v in self.headers.items()}, body))
                    code = outer.codes.pop(0) if outer.codes else 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def of(self, sandbox_id: str) -> List[Tuple[Dict[str, str], bytes, Dict[str, Any]]]:
        """What was delivered about one sandbox: headers, raw body and decoded body."""
        with self.lock:
            got = list(self.got)
        return [(h, b, json.loads(b)) for h, b in got if json.loads(b).get("sandbox_id") == sandbox_id]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Callable[[List[int]], Receiver]]:
    made: List[Receiver] = []

    def make(codes: List[int]) -> Receiver:
        made.append(Receiver(codes))
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.fixture
def hooks(sandpit_env: None) -> Iterator[Webhooks]:
    """An admin's :class:`Webhooks`; every webhook left at the end of the test is deleted."""
    with Webhooks() as w:
        before = {h.id for h in w.list()}
        yield w
        for h in w.list():
            if h.id not in before:
                w.delete(h.id)


def test_verify_webhook_checks_a_known_vector() -> None:
    body = b'{"id":17,"type":"sandbox.paused"}'
    sig = "v1=" + hmac.new(b"s3cret-key", b"1700000000." + body, hashlib.sha256).hexdigest()
    headers = {"Sandpit-Timestamp": "1700000000", "Sandpit-Signature": sig, "Sandpit-Event": "sandbox.paused"}
    assert verify_webhook(body, headers, "s3cret-key", now=1_700_000_100)
    # Header names in any case, a str body, the default tolerance of 300 s either way.
    assert verify_webhook(body.decode(), {k.lower(): v for k, v in headers.items()}, "s3cret-key", now=1_699_999_800)
    assert verify_webhook(body, {k.upper(): v for k, v in headers.items()}, "s3cret-key", now=1_700_000_300)
    assert not verify_webhook(body, headers, "s3cret-key", now=1_700_000_301)
    assert verify_webhook(body, headers, "s3cret-key", now=1_700_000_301, tolerance_s=600)
    assert not verify_webhook(body, headers, "another-key", now=1_700_000_100)
    assert not verify_webhook(body + b" ", headers, "s3cret-key", now=1_700_000_100)
    assert not verify_webhook(body, {**headers, "Sandpit-Timestamp": "1700000001"}, "s3cret-key", now=1_700_000_100)
    assert not verify_webhook(body, {"Sandpit-Timestamp": "1700000000"}, "s3cret-key", now=1_700_000_100)
    assert not verify_webhook(body, {"Sandpit-Signature": sig}, "s3cret-key", now=1_700_000_100)
    assert not verify_webhook(body, {**headers, "Sandpit-Timestamp": "soon"}, "s3cret-key", now=1_700_000_100)
    assert not verify_webhook(body, {**headers, "Sandpit-Signature": sig[3:]}, "s3cret-key", now=1_700_000_100)
    # Against the clock by default: a fresh signature passes, an old one does not.
    now = str(int(time.time()))
    fresh = "v1=" + hmac.new(b"s3cret-key", now.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert verify_webhook(body, {"Sandpit-Timestamp": now, "Sandpit-Signature": fresh}, "s3cret-key")
    assert not verify_webhook(body, headers, "s3cret-key")


def test_webhooks_are_created_listed_read_and_deleted(hooks: Webhooks) -> None:
    everything = hooks.create("http://127.0.0.1:9/all", ["*"], SECRET, description="all of them")
    some = hooks.create("https://127.0.0.1:9/some", ["sandbox.created", "sandbox.killed"], SECRET)
    assert everything.id.startswith("wh_") and everything.url == "http://127.0.0.1:9/all"
    assert everything.events == ["*"] and everything.description == "all of them"
    assert everything.created_at is not None
    assert some.events == ["sandbox.created", "sandbox.killed"] and some.description is None
    listed = {w.id: w for w in hooks.list()}
    assert listed[everything.id] == everything and listed[some.id] == some
    assert hooks.get(some.id) == some
    assert hooks.deliveries(some.id) == []
    for url, events, secret in [
        ("http://127.0.0.1:9/x", ["sandbox.nope"], SECRET),
        ("http://127.0.0.1:9/x", [], SECRET),
        ("http://127.0.0.1:9/x", ["*"], "short"),
        ("http://127.0.0.1:9/x", ["*"], "x" * 257),
        ("ftp://127.0.0.1/x", ["*"], SECRET),
        ("not a url", ["*"], SECRET),
    ]:
        with pytest.raises(InvalidArgumentError):
            hooks.create(url, events, secret)
    with pytest.raises(InvalidArgumentError):
        body = {"url": "http://127.0.0.1:9/x", "events": ["*"], "secret": SECRET, "color": "red"}
        hooks._transport.request("POST", "/v1/webhooks", json=body)
    hooks.delete(some.id)
    with pytest.raises(NotFoundError):
        hooks.get(some.id)
    with pytest.raises(NotFoundError):
        hooks.delete(some.id)
    with pytest.raises(NotFoundError):
        hooks.deliveries(some.id)
    assert some.id not in {w.id for w in hooks.list()}
    hooks.delete(everything.id)


def test_deliveries_are_signed_events(hooks: Webhooks, receiver: Callable[[List[int]], Receiver]) -> None:
    ok = receiver([])
    hook = hooks.create(ok.url, ["*"], SECRET)
    sbx = Sandbox.create()
    sbx.kill()
    got = eventually("created and killed at the receiver", lambda: ok.of(sbx.id) if len(ok.of(sbx.id)) >= 2 else None)
    assert [d["type"] for _, _, d in got] == ["sandbox.created", "sandbox.killed"]
    with Events() as events:
        assert [LifecycleEvent.from_json(d) for _, _, d in got] == events.list(sandbox=sbx.id).events
    for h, body, event in got:
        assert h["content-type"].startswith("application/json")
        assert h["sandpit-event"] == event["type"] and h["sandpit-delivery"].startswith("whd_")
        assert abs(int(h["sandpit-timestamp"]) - time.time()) < 60
        assert h["sandpit-signature"].startswith("v1=")
        assert verify_webhook(body, h, SECRET)
        assert not verify_webhook(body, h, "another-secret")
        assert not verify_webhook(body.replace(b"sandbox.", b"sandbox!"), h, SECRET)
        assert not verify_webhook(body, h, SECRET, now=time.time() + 3600)
    # One delivered attempt per event, under the id the receiver was sent.
    ids = {d["id"]: h["sandpit-delivery"] for h, _, d in got}

    def rows() -> Optional[List[WebhookDelivery]]:
        mine = [r for r in hooks.deliveries(hook.id) if r.event_id in ids]
        return mine if len(mine) == 2 else None

    done = eventually("two delivery rows", rows)
    assert [(r.event_type, r.attempt, r.outcome, r.status_code, r.error) for r in done] == [
        ("sandbox.killed", 1, "delivered", 200, None), ("sandbox.created", 1, "delivered", 200, None)
    ]
    assert all(r.id == ids[r.event_id] and r.duration_ms >= 0 and r.at is not None for r in done)
    assert len(hooks.deliveries(hook.id, limit=1)) == 1


def test_a_failed_delivery_is_retried(hooks: Webhooks, receiver: Callable[[List[int]], Receiver]) -> None:
    flaky = receiver([500, 500])
    hook = hooks.create(flaky.url, ["sandbox.created"], SECRET)
    # Nothing listens here: every attempt fails to connect, the last one gives up.
    dead = hooks.create(f"http://127.0.0.1:{free_port()}/gone", ["sandbox.created"], SECRET)
    sbx = Sandbox.create()
    sbx.kill()
    got = eventually("three attempts", lambda: flaky.of(sbx.id) if len(flaky.of(sbx.id)) >= 3 else None)
    time.sleep(0.3)
    assert len(flaky.of(sbx.id)) == 3
    assert all(verify_webhook(b, h, SECRET) for h, b, _ in got)
    assert len({h["sandpit-delivery"] for h, _, _ in got}) == 1
    created = got[0][2]["id"]

    def attempts(hook_id: str, n: int) -> Optional[List[WebhookDelivery]]:
        mine = [r for r in hooks.deliveries(hook_id) if r.event_id == created]
        return mine if len(mine) >= n and mine[0].outcome != "retrying" else None

    rows = eventually("three delivery rows", lambda: attempts(hook.id, 3))
    # Newest first: failed twice, then delivered, all one delivery.
    assert [(r.attempt, r.outcome, r.status_code) for r in rows] == [
        (3, "delivered", 200), (2, "retrying", 500), (1, "retrying", 500)
    ]
    assert {r.id for r in rows} == {got[0][0]["sandpit-delivery"]} and rows[0].event_type == "sandbox.created"
    # --webhook-max-attempts is 6 by default; 50 ms doubled five times is 1.55 s of waiting.
    gone = eventually("six failed attempts", lambda: attempts(dead.id, 6))
    assert [(r.attempt, r.outcome, r.status_code) for r in gone] == [(6, "failed", None)] + [
        (n, "retrying", None) for n in range(5, 0, -1)
    ]
    assert all(r.error for r in gone) and len({r.id for r in gone}) == 1


def test_webhooks_are_for_admin_keys_only(hooks: Webhooks) -> None:
    with Keys() as keys:
        bot = keys.create("py-webhook-bot", ["sandboxes"])
        try:
            with Webhooks(api_key=bot.key) as theirs:
                with pytest.raises(PermissionDeniedError):
                    theirs.list()
                with pytest.raises(PermissionDeniedError):
                    theirs.create("http://127.0.0.1:9/x", ["*"], SECRET)
        finally:
            keys.revoke(bot.id)


async def test_async_webhooks(hooks: Webhooks) -> None:
    async with AsyncWebhooks() as w:
        made = await w.create("http://127.0.0.1:9/async", ["sandbox.paused"], SECRET, description="async")
        assert made in await w.list() and await w.get(made.id) == made
        assert await w.deliveries(made.id, limit=5) == []
        await w.delete(made.id)
        with pytest.raises(NotFoundError):
            await w.get(made.id)
