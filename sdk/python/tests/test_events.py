"""Lifecycle events (``/v1/events``, ``/v1/sandboxes/{id}/events`` and their SSE streams) end to end against the real
daemon: one event per transition, in order; filters, paging and bad parameters; live streams; tenants."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import datetime, timedelta
from typing import Any, AsyncIterator, Callable, Dict, Iterator, List, TypeVar
from urllib.parse import urlparse

import pytest
from conftest import Daemon
from test_resume import CuttingRelay

import sandpit._stream
from sandpit import (
    AsyncEvents,
    AsyncSandbox,
    Events,
    InvalidArgumentError,
    Keys,
    LifecycleEvent,
    NotFoundError,
    Sandbox,
    StreamError,
)

pytestmark = pytest.mark.usefixtures("sandpit_env")

T = TypeVar("T")
LIFE = ["sandbox.created", "sandbox.paused", "sandbox.resumed", "sandbox.timeout_extended", "sandbox.killed"]


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


def types(events: List[LifecycleEvent]) -> List[str]:
    return [e.type for e in events]


def test_a_sandbox_life_is_one_event_per_transition_in_order() -> None:
    sbx = Sandbox.create()
    try:
        sbx.pause()
        sbx.resume()
        sbx.set_timeout(600)
        own = sbx.events()
        assert types(own.events) == LIFE[:4] and own.next_after is None
    finally:
        sbx.kill()
    with Events() as events:
        page = events.list(sandbox=sbx.id)
    assert types(page.events) == LIFE and page.next_after is None
    assert page.events[:4] == own.events
    created, paused, resumed, extended, killed = page.events
    assert all(a.id < b.id for a, b in zip(page.events, page.events[1:]))
    assert all(e.sandbox_id == sbx.id and e.tenant == "default" and isinstance(e.at, datetime) for e in page.events)
    assert all(a.at <= b.at for a, b in zip(page.events, page.events[1:]))  # type: ignore[operator]
    assert created.data["template"] == "base" and created.data["pooled"] is False
    assert paused.data["reason"] == "api" and resumed.data["reason"] == "api" and killed.data["reason"] == "api"
    assert extended.data["timeout_s"] == 600 and isinstance(extended.data["expires_at"], str)
    # The sandbox's own path goes with it; its history stays readable through /v1/events.
    with pytest.raises(NotFoundError):
        sbx.events()


def test_events_are_filtered_paged_and_bad_parameters_refused() -> None:
    sbx = Sandbox.create()
    try:
        sbx.pause()
        sbx.resume()
        assert types(sbx.events(type="sandbox.paused").events) == ["sandbox.paused"]
        first = sbx.events(limit=1)
        assert types(first.events) == ["sandbox.created"] and first.next_after == first.events[0].id
        assert types(sbx.events(after=first.next_after).events) == ["sandbox.paused", "sandbox.resumed"]
        with pytest.raises(InvalidArgumentError):
            sbx.events(limit=0)
    finally:
        sbx.kill()
    want = ["sandbox.created", "sandbox.paused", "sandbox.resumed", "sandbox.killed"]
    with Events() as events:
        every = events.list(sandbox=sbx.id).events
        assert types(every) == want
        # Paging one at a time walks the same events.
        walked: List[LifecycleEvent] = []
        page = events.list(sandbox=sbx.id, limit=1)
        while True:
            assert len(page.events) == 1
            walked += page.events
            if page.next_after is None:
                break
            page = events.list(sandbox=sbx.id, limit=1, after=page.next_after)
        assert walked == every
        assert types(events.list(sandbox=sbx.id, type="sandbox.killed").events) == ["sandbox.killed"]
        both = events.list(sandbox=sbx.id, type=["sandbox.killed", "sandbox.paused"]).events
        assert types(both) == ["sandbox.paused", "sandbox.killed"]
        assert events.list(sandbox=sbx.id, type="sandbox.forked").events == []
        # since: a datetime, epoch milliseconds or RFC 3339 text.
        created, paused = every[0].at, every[1].at
        assert created is not None and paused is not None
        assert events.list(sandbox=sbx.id, since=created - timedelta(milliseconds=1)).events == every
        later = types(events.list(sandbox=sbx.id, since=paused).events)
        assert later[-2:] == ["sandbox.resumed", "sandbox.killed"]
        assert ("sandbox.created" in later) == (created == paused)
        assert events.list(sandbox=sbx.id, since=int(time.time() * 1000) + 3_600_000).events == []
        assert events.list(sandbox=sbx.id, since="2999-01-01T00:00:00Z").events == []
        # Without a sandbox, everything this key sees: this sandbox's events among them, oldest first.
        recent = events.list(since=created, limit=1000).events
        assert [e for e in recent if e.sandbox_id == sbx.id] == every
        assert all(a.id < b.id for a, b in zip(recent, recent[1:]))
        bad: List[Dict[str, Any]] = [
            {"type": "sandbox.exploded"}, {"type": ["sandbox.paused", "nope"]}, {"limit": 0}, {"limit": 1001},
            {"since": "yesterday"},
        ]
        for params in bad:
            with pytest.raises(InvalidArgumentError):
                events.list(**params)
        with pytest.raises(InvalidArgumentError) as e:
            events._transport.request("GET", "/v1/events", params={"bogus": "1"})
        assert e.value.status_code == 400


def test_a_key_sees_its_own_tenants_events() -> None:
    with Keys() as keys:
        bot = keys.create("py-events-bot", ["sandboxes"], tenant="py-events")
        try:
            sbx = Sandbox.create(api_key=bot.key)
            sbx.kill()
            with Events(api_key=bot.key) as theirs, Events() as admin:
                mine = theirs.list(sandbox=sbx.id).events
                assert types(mine) == ["sandbox.created", "sandbox.killed"]
                assert {e.tenant for e in mine} == {"py-events"}
                assert admin.list(sandbox=sbx.id).events == mine
            # Another tenant's key does not see them.
            other = Sandbox.create()
            other.kill()
            with Events(api_key=bot.key) as theirs:
                assert theirs.list(sandbox=other.id).events == []
        finally:
            keys.revoke(bot.id)


def test_the_stream_delivers_a_live_event() -> None:
    """Opened first, the stream gets the pause made afterwards (``Events.stream`` sends only new events without
    ``after``; the pause is repeated until one lands after the connection is up)."""
    sbx = Sandbox.create()
    try:
        with Events() as events:
            stream = events.stream(sandbox=sbx.id, type="sandbox.paused")
            got: List[LifecycleEvent] = []
            reader = threading.Thread(target=lambda: got.append(next(stream)), daemon=True)
            reader.start()
            deadline = time.monotonic() + 20
            while not got and time.monotonic() < deadline:
                time.sleep(0.3)
                sbx.pause()
                reader.join(3)
                if not got:
                    sbx.resume()
            assert got, "no sandbox.paused event on the stream in 20 s"
            stream.close()
        e = got[0]
        assert (e.type, e.sandbox_id, e.data["reason"]) == ("sandbox.paused", sbx.id, "api")
        assert e == sbx.events(type="sandbox.paused").events[-1]
    finally:
        sbx.kill()


def test_a_sandbox_stream_replays_and_ends_after_the_kill(sbx: Sandbox) -> None:
    """(``sbx``, the suite's shared sandbox, is only there to be another live sandbox, as a daemon usually has.)"""
    other, sbx = sbx, Sandbox.create()
    sbx.pause()
    sbx.resume()
    sbx.set_timeout(600)
    stream = sbx.events_stream(after=0)
    first = in_thread(lambda: [next(stream) for _ in range(4)])
    assert types(first) == LIFE[:4]
    sbx.kill()
    # The daemon ends the stream after sandbox.killed.
    rest = in_thread(lambda: list(stream), what="end of the sandbox's event stream after sandbox.killed")
    assert types(rest) == ["sandbox.killed"] and other.is_running()
    with Events() as events:
        assert first + rest == events.list(sandbox=sbx.id).events
    # Replay from an id, and a type filter, on the global stream (it follows until closed).
    with Events() as events:
        replay = events.stream(sandbox=sbx.id, after=first[1].id, type=["sandbox.resumed", "sandbox.killed"])
        assert types(in_thread(lambda: [next(replay) for _ in range(2)])) == ["sandbox.resumed", "sandbox.killed"]
        replay.close()


async def test_async_streams_follow_live_events() -> None:
    sbx = await AsyncSandbox.create()
    try:
        async with AsyncEvents() as events:
            stream = events.stream(sandbox=sbx.id, type="sandbox.paused")
            first = asyncio.ensure_future(stream.__anext__())
            try:
                for _ in range(10):
                    await asyncio.sleep(0.3)
                    await sbx.pause()
                    done, _pending = await asyncio.wait({first}, timeout=3)
                    if done:
                        break
                    await sbx.resume()
                e = await asyncio.wait_for(first, 1)
            finally:
                first.cancel()
                await stream.aclose()
            assert (e.type, e.sandbox_id) == ("sandbox.paused", sbx.id)
            page = await events.list(sandbox=sbx.id, type="sandbox.paused")
            assert page.events[-1] == e
        # The sandbox's own stream: after an id, then live, ending after the kill.
        last = (await sbx.events()).events[-1]
        own = sbx.events_stream(type=["sandbox.resumed", "sandbox.killed"], after=last.id)
        nxt = asyncio.ensure_future(own.__anext__())
        await asyncio.sleep(0.3)
        await sbx.resume()
        await sbx.kill()
        got = [await asyncio.wait_for(nxt, 15)] + [x async for x in _bounded(own, 15)]
        assert types(got) == ["sandbox.resumed", "sandbox.killed"]
    finally:
        await sbx.kill()
        await sbx.close()


async def _bounded(it: Any, timeout: float) -> AsyncIterator[Any]:
    """The rest of the async iterator ``it``, each item within ``timeout`` seconds."""
    while True:
        try:
            yield await asyncio.wait_for(it.__anext__(), timeout)
        except StopAsyncIteration:
            return



@pytest.fixture
def relay(daemon: Daemon) -> Iterator[CuttingRelay]:
    """A TCP relay to the daemon that drops connections on demand (see ``test_resume.py``)."""
    parsed = urlparse(daemon.url)
    r = CuttingRelay((parsed.hostname or "127.0.0.1", parsed.port or 80))
    yield r
    r.close()


def test_a_cut_stream_resumes_after_the_last_event(relay: CuttingRelay) -> None:
    """The connection is dropped between events: the stream reopens with ``Last-Event-ID`` and delivers what
    happened meanwhile, once."""
    sbx = Sandbox.create()
    try:
        sbx.pause()
        with Events(url=relay.url) as events:
            stream = events.stream(sandbox=sbx.id, after=0)
            first = in_thread(lambda: [next(stream) for _ in range(2)])
            relay.cut()
            sbx.resume()
            sbx.kill()
            rest = in_thread(lambda: [next(stream) for _ in range(2)], what="events after the cut")
            stream.close()
    finally:
        sbx.kill()
    assert types(first + rest) == ["sandbox.created", "sandbox.paused", "sandbox.resumed", "sandbox.killed"]
    assert relay.accepted >= 2


def test_a_stream_that_cannot_reopen_raises_stream_error(relay: CuttingRelay, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandpit._stream, "MAX_RESUME_ATTEMPTS", 3)
    sbx = Sandbox.create()
    try:
        with Events(url=relay.url) as events:
            stream = events.stream(sandbox=sbx.id, after=0)
            assert in_thread(lambda: next(stream)).type == "sandbox.created"
            relay.refuse = True
            relay.cut()
            with pytest.raises(StreamError):
                in_thread(lambda: next(stream), what="StreamError")
    finally:
        sbx.kill()
