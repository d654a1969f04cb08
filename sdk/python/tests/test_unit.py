"""Unit tests of the pure parts: error mapping, SSE/WS decoding, request building, configuration."""

from __future__ import annotations

import io
import json
import os
import socket
import ssl
import struct
import threading
import time
from datetime import timezone
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import httpx
import pytest

import sandpit
from sandpit import (
    AuthenticationError,
    CommandExitError,
    CommandResult,
    ConflictError,
    ExecOptionsBuilder,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    PayloadTooLargeError,
    ResourceExhaustedError,
    InsufficientStorageError,
    SandboxError,
    SandboxTimeoutError,
    UnavailableError,
    error_from_response,
    resolve_api_key,
    resolve_url,
)
from sandpit._options import build_start_request, timeout_ms
from sandpit._quick import QuickClient, encode_query
from sandpit._stream import SseParser, decode_sse, decode_ws
from sandpit._types import LifecycleEvent, MetricSample, ProcessInfo, parse_time

INFO = {
    "id": "p1", "pid": 42, "cmd": "echo hi", "args": ["/bin/sh", "-c", "echo hi"], "cwd": "/", "user": "root",
    "env": {}, "is_pty": False, "status": "exited", "exit_code": 3, "signal": None,
    "started_at": "2026-01-02T03:04:05.6Z", "ended_at": None, "error": None, "stdout_bytes": 3,
    "stderr_bytes": 0, "lost_bytes": 0, "last_seq": 1, "future_field": True,
}


@pytest.mark.parametrize(
    "code,status,cls",
    [
        ("invalid_argument", 400, InvalidArgumentError),
        ("unauthenticated", 401, AuthenticationError),
        ("not_found", 404, NotFoundError),
        ("timeout", 408, SandboxTimeoutError),
        ("conflict", 409, ConflictError),
        ("payload_too_large", 413, PayloadTooLargeError),
        ("resource_exhausted", 429, ResourceExhaustedError),
        ("insufficient_storage", 507, InsufficientStorageError),
        ("unavailable", 503, UnavailableError),
        ("internal", 500, InternalError),
    ],
)
def test_error_mapping_carries_code_and_message(code: str, status: int, cls: type) -> None:
    body = json.dumps({"error": {"code": code, "message": "why"}}).encode()
    err = error_from_response(status, body)
    assert type(err) is cls and isinstance(err, SandboxError)
    assert (err.code, err.message, err.status_code) == (code, "why", status)
    assert str(err) == f"{code}: why"


def test_error_mapping_without_json_body_uses_the_status() -> None:
    assert isinstance(error_from_response(404, b"<html>nope</html>"), NotFoundError)
    assert isinstance(error_from_response(502, b"bad gateway"), UnavailableError)
    err = error_from_response(418, b"")
    assert type(err) is SandboxError and err.message == "HTTP 418"
    # A code this SDK does not know keeps its code and gets the class of its status (sdk/testdata/vectors.json).
    unknown = error_from_response(400, b'{"error": {"code": "brand_new", "message": "m"}}')
    assert type(unknown) is InvalidArgumentError and unknown.code == "brand_new"


def test_timeout_error_is_also_the_builtin_one() -> None:
    assert sandpit.TimeoutError is SandboxTimeoutError
    err = SandboxTimeoutError("late")
    assert isinstance(err, TimeoutError) and isinstance(err, SandboxError)
    with pytest.raises(TimeoutError):
        raise err


def test_command_exit_error_carries_the_result() -> None:
    result = CommandResult.from_json({**INFO, "stdout": "out", "stderr": "boom\n"})
    err = CommandExitError(result)
    assert (err.exit_code, err.stdout, err.stderr) == (3, "out", "boom\n")
    assert "code 3" in str(err) and "boom" in str(err)


def test_sse_parser_and_decoding() -> None:
    lines = [
        "event: started", "data: " + json.dumps(INFO), "",
        ": comment", "id: 7", "event: stdout", 'data: {"seq": 7, "data": "hé"}', "",
        "event: stderr", 'data: {"seq": 8, "data_b64": "//4="}', "",
        "event: lost", 'data: {"from_seq": 1, "to_seq": 6, "bytes": 4096}', "",
        "event: keepalive", "", "event: novel", "data: {}", "",
        "event: exited", "data: " + json.dumps(INFO), "",
    ]
    parser = SseParser()
    msgs = [m for m in (parser.feed(line) for line in lines) if m is not None]
    assert msgs[1].id == "7"
    events = [e for e in (decode_sse(m) for m in msgs) if e is not None]
    assert [e.kind for e in events] == ["started", "stdout", "stderr", "lost", "exited"]
    assert events[0].pid == 42 and events[0].info is not None
    assert events[1].data == "hé".encode() and events[1].text == "hé" and events[1].seq == 7
    assert events[2].data == b"\xff\xfe"
    assert events[3].lost == sandpit.LostOutput(1, 6, 4096)
    assert events[4].code == 3


def test_an_sse_error_event_raises_the_daemons_error() -> None:
    # The daemon cuts a stream with an ``error`` event when the sandbox's agent stops answering.
    parser = SseParser()
    for line in ["event: error", 'data: {"code": "unavailable", "message": "agent stopped"}']:
        assert parser.feed(line) is None
    msg = parser.feed("")
    assert msg is not None
    with pytest.raises(sandpit.UnavailableError, match="agent stopped"):
        decode_sse(msg)


def test_ws_decoding() -> None:
    frame = struct.pack(">BQ", 2, 9) + b"oops"
    ev = decode_ws(frame)
    assert isinstance(ev, sandpit.ExecEvent) and (ev.kind, ev.seq, ev.data) == ("stderr", 9, b"oops")
    started = decode_ws(json.dumps({"type": "started", "process": INFO}))
    assert isinstance(started, sandpit.ExecEvent) and started.kind == "started"
    err = decode_ws(json.dumps({"type": "error", "code": "conflict", "message": "stdin closed"}))
    assert isinstance(err, ConflictError) and err.message == "stdin closed"
    assert decode_ws(json.dumps({"type": "novel"})) is None
    assert decode_ws(b"\x01") is None


def test_types_decode_and_ignore_unknown_fields() -> None:
    info = ProcessInfo.from_json(INFO)
    assert info.is_final and not info.is_running and info.envs == {}
    assert info.started_at is not None and info.started_at.tzinfo == timezone.utc
    assert info.started_at.microsecond == 600000
    r = CommandResult.from_json({**INFO, "stdout_b64": "aGk=", "stderr": "e"})
    assert (r.stdout, r.stdout_bytes, r.code, r.success, r.status) == ("hi", b"hi", 3, False, "exited")
    assert r.exit_status == sandpit.ExitStatus(3, False)
    assert parse_time(None) is None
    assert parse_time("2026-01-02T03:04:05+02:00") is not None
    listing = sandpit.ProcessList([info])
    assert listing.data == [info]


def test_start_request_building() -> None:
    body = build_start_request(
        cmd="echo", cwd="/tmp", env={"A": "1"}, envs={"B": "2"}, user="root", timeout_ms=5, idle_timeout_ms=6,
        stdin=b"hi", tty=(100, 30), rlimits=[sandpit.Rlimit("RLIMIT_NOFILE", 10)], id="x",
    )
    assert body == {
        "cmd": "echo", "cwd": "/tmp", "env": {"A": "1", "B": "2"}, "user": "root", "timeout_ms": 5,
        "idle_timeout_ms": 6, "stdin": {"bytes_b64": "aGk="}, "tty": {"cols": 100, "rows": 30},
        "rlimits": [{"resource": "nofile", "soft": 10}], "id": "x",
    }
    assert build_start_request(argv=["ls"], stdin="pipe", tty=True) == {
        "argv": ["ls"], "stdin": "pipe", "tty": {"cols": 80, "rows": 24}
    }
    with pytest.raises(ValueError):
        build_start_request()
    with pytest.raises(ValueError):
        build_start_request(cmd="x", argv=["x"])
    with pytest.raises(ValueError):
        build_start_request(cmd="x", stdin="text is bytes")
    assert timeout_ms(1.5) == 1500 and timeout_ms(1, 7) == 7 and timeout_ms() == 0
    with pytest.raises(ValueError):
        timeout_ms(-1)


def test_exec_options_builder() -> None:
    opts = (
        ExecOptionsBuilder().arg("a").args(["b", "c"]).cwd("/app").user("root").env("K", "V")
        .envs({"L": "W"}).envs([("M", "X")]).timeout(30_000).stdin_pipe().tty(True, 100, 40)
        .rlimit("nofile", 64).rlimit_range("nproc", 10, 20).build()
    )
    body = opts.start_request("python3")
    assert body["argv"] == ["python3", "a", "b", "c"] and body["env"] == {"K": "V", "L": "W", "M": "X"}
    assert body["timeout_ms"] == 30_000 and body["stdin"] == "pipe" and body["tty"] == {"cols": 100, "rows": 40}
    assert body["rlimits"] == [
        {"resource": "nofile", "soft": 64, "hard": 64}, {"resource": "nproc", "soft": 10, "hard": 20}
    ]
    assert ExecOptionsBuilder().stdin_bytes("x").build().stdin == b"x"
    assert ExecOptionsBuilder().stdin_pipe().stdin_null().build().stdin == "null"


def test_url_and_key_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SANDPIT_URL", raising=False)
    assert resolve_url() == "http://127.0.0.1:7070"
    monkeypatch.setenv("SANDPIT_URL", "http://h:1/")
    assert resolve_url() == "http://h:1" and resolve_url("http://x:2") == "http://x:2"

    monkeypatch.delenv("SANDPIT_API_KEY", raising=False)
    monkeypatch.delenv("SANDPIT_STATE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    # A system daemon on this machine must not decide the test (it used to skip it).
    monkeypatch.setattr("sandpit._client.SYSTEM_KEY_FILE", tmp_path / "no-system-key")
    assert resolve_api_key() is None
    home_key = tmp_path / "home" / ".local" / "share" / "sandpit" / "api-key"
    home_key.parent.mkdir(parents=True)
    home_key.write_text("home-key\n")
    assert resolve_api_key() == "home-key"
    xdg_key = tmp_path / "xdg" / "sandpit" / "api-key"
    xdg_key.parent.mkdir(parents=True)
    xdg_key.write_text("xdg-key")
    assert resolve_api_key() == "xdg-key"
    state = tmp_path / "state"
    state.mkdir()
    (state / "api-key").write_text("state-key")
    monkeypatch.setenv("SANDPIT_STATE_DIR", str(state))
    assert resolve_api_key() == "state-key"
    monkeypatch.setenv("SANDPIT_API_KEY", "env-key")
    assert resolve_api_key() == "env-key"
    assert resolve_api_key("arg-key") == "arg-key"


def test_every_public_name_is_documented_and_annotated() -> None:
    import inspect

    missing = []
    for name in sandpit.__all__:
        obj = getattr(sandpit, name)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        if not inspect.getdoc(obj):
            missing.append(name)
        members = inspect.getmembers(obj) if inspect.isclass(obj) else [(name, obj)]
        for member_name, member in members:
            if member_name.startswith("_") and member_name != "__init__":
                continue
            fn = member.fget if isinstance(member, property) else member
            if not (inspect.isfunction(fn) or inspect.ismethod(fn)) or not fn.__module__.startswith("sandpit"):
                continue
            if member_name != "__init__" and not inspect.getdoc(member):
                missing.append(f"{name}.{member_name}: docstring")
            if "return" not in fn.__annotations__:
                missing.append(f"{name}.{member_name}: return annotation")
            params = inspect.signature(fn).parameters.values()
            for p in params:
                if p.name not in ("self", "cls") and p.name not in fn.__annotations__:
                    missing.append(f"{name}.{member_name}({p.name}): annotation")
    assert missing == []


def test_template_types_decode_and_a_build_log_is_followed() -> None:
    from sandpit import SnapshotInfo, TemplateBuild, TemplateBuildError
    from sandpit._templates import _create_body, _new_lines

    snap = SnapshotInfo.from_json({
        "template": {"name": "s", "source": "snapshot of sandbox a1", "created_at": "2026-01-02T03:04:05Z",
                     "parent": "tiny", "tenant": "t", "auto_remove": True, "future": 1},
        "frozen_ms": 1.5, "bytes": 10, "entries": 2,
    })
    t = snap.template
    assert (t.parent, t.tenant, t.auto_remove, snap.bytes, snap.frozen_ms) == ("tiny", "t", True, 10, 1.5)
    assert snap.template.created_at is not None and snap.template.created_at.tzinfo == timezone.utc
    build = TemplateBuild.from_json({
        "name": "x", "source": {"tar": "/i/x.tar"}, "state": "failed", "started_at": "2026-01-02T03:04:05Z",
        "finished_at": None, "error": "not a tar", "log": ["a"],
    })
    err = TemplateBuildError(build)
    assert err.code == "template_build_failed" and "not a tar" in str(err) and err.build is build
    # The daemon keeps the last lines only: what follows the overlap is new.
    assert _new_lines([], ["a", "b"]) == ["a", "b"]
    assert _new_lines(["a", "b"], ["a", "b", "c"]) == ["c"]
    assert _new_lines(["a", "b", "c"], ["b", "c", "d", "e"]) == ["d", "e"]
    assert _new_lines(["a", "b"], ["x"]) == ["x"]
    assert _new_lines(["a"], ["a"]) == []
    assert _create_body("n", {"dir": Path("/srv/r")}) == {"name": "n", "source": {"dir": "/srv/r"}}
    assert _create_body("n", {"debian": {}}) == {"name": "n", "source": {"debian": {}}}


def test_volume_types_decode_and_mounts_are_sent_as_given() -> None:
    from sandpit import SandboxInfo, VolumeInfo, VolumeMount
    from sandpit._sandbox import _create_body, _fork_body

    vol = VolumeInfo.from_json({
        "name": "v", "size_mb": 16, "used_mb": 1, "tenant": "t", "created_at": "2026-01-02T03:04:05Z",
        "mounted_by": ["a1", "b2"], "future": 1,
    })
    assert (vol.name, vol.size_mb, vol.used_mb, vol.tenant, vol.mounted_by) == ("v", 16, 1, "t", ["a1", "b2"])
    assert vol.created_at is not None and vol.created_at.tzinfo == timezone.utc
    assert VolumeInfo.from_json({"name": "v", "size_mb": 16, "used_mb": 0, "tenant": "t"}).mounted_by == []
    base = {"id": "a1", "state": "running", "template": "base"}
    assert SandboxInfo.from_json(base).volumes == []  # absent when none
    info = SandboxInfo.from_json({**base, "volumes": [{"name": "v", "path": "/d"}, {"name": "v", "path": "/r",
                                                                                     "read_only": True}]})
    assert info.volumes == [VolumeMount("v", "/d"), VolumeMount("v", "/r", read_only=True)]

    mounts = [VolumeMount("v", "/d"), VolumeMount("v", "/r", True), {"name": "v", "path": "/x", "readOnly": 1}]
    wire = [{"name": "v", "path": "/d"}, {"name": "v", "path": "/r", "read_only": True},
            {"name": "v", "path": "/x", "readOnly": 1}]  # a dict as it is: the daemon refuses the misspelling
    args: Any = (None,) * 10
    assert _create_body("tiny", *args, volumes=mounts) == {"template": "tiny", "volumes": wire}
    assert _create_body("tiny", *args) == {"template": "tiny"}
    assert _create_body("tiny", *args, volumes=[]) == {"template": "tiny", "volumes": []}
    assert _fork_body(2, *args, volumes=mounts) == {"count": 2, "volumes": wire}
    for bad in (VolumeMount("v", "/d"), {"name": "v", "path": "/d"}, "v:/d"):
        with pytest.raises(TypeError):
            _create_body(None, *args, volumes=bad)


# -- lifecycle events, metrics, webhooks (issue 20) ------------------------------------------------------------------

EVENT = {
    "id": 17, "type": "sandbox.paused", "sandbox_id": "sb1", "tenant": "default", "at": "2026-12-04T13:00:00.123Z",
    "data": {"reason": "api"}, "future_field": 1,
}
SAMPLE = {
    "timestamp": "2026-12-04T13:00:05.000Z", "cpu_used_pct": 99.2, "cpu_count": 1.5, "mem_used": 314572800,
    "mem_limit": 536870912, "disk_used": 4096, "disk_limit": 1073741824, "pids": 3, "future_field": 1,
}


def test_event_and_metric_queries() -> None:
    from datetime import datetime

    from sandpit._observe import event_params, metric_params

    at = datetime(2026, 12, 4, 13, 0, 0, 123000, tzinfo=timezone.utc)
    assert event_params() == {}
    assert event_params(sandbox="sb1", type=["sandbox.paused", "sandbox.killed"], since=at, after=4, limit=2) == {
        "sandbox": "sb1", "type": "sandbox.paused,sandbox.killed", "since": str(int(at.timestamp() * 1000)),
        "after": 4, "limit": 2,
    }
    assert event_params(type="sandbox.created", since="2026-12-04T13:00:00Z") == {
        "type": "sandbox.created", "since": "2026-12-04T13:00:00Z"
    }
    assert metric_params(start=1_700_000_000_000, end=at) == {"start": "1700000000000", "end": "1796389200123"}


def test_observe_types_decode_and_ignore_unknown_fields() -> None:
    e = sandpit.LifecycleEvent.from_json(EVENT)
    assert (e.id, e.type, e.sandbox_id, e.tenant, e.data) == (17, "sandbox.paused", "sb1", "default", {"reason": "api"})
    assert e.at is not None and e.at.tzinfo == timezone.utc and e.at.microsecond == 123000
    page = sandpit.EventPage.from_json({"events": [EVENT], "next_after": 17})
    assert page.events == [e] and page.next_after == 17
    assert sandpit.EventPage.from_json({"events": []}) == sandpit.EventPage([], None)
    s = sandpit.MetricSample.from_json(SAMPLE)
    assert (s.cpu_used_pct, s.cpu_count, s.mem_used, s.mem_limit, s.disk_used, s.disk_limit, s.pids) == (
        99.2, 1.5, 314572800, 536870912, 4096, 1073741824, 3
    )
    assert s.timestamp is not None and s.timestamp.second == 5
    w = sandpit.Webhook.from_json(
        {"id": "wh_1", "url": "http://h/x", "events": ["*"], "description": None, "created_at": EVENT["at"], "x": 1}
    )
    assert (w.id, w.url, w.events, w.description) == ("wh_1", "http://h/x", ["*"], None) and w.created_at == e.at
    d = sandpit.WebhookDelivery.from_json(
        {"id": "whd_1", "event_id": 17, "event_type": "sandbox.created", "attempt": 2, "at": EVENT["at"],
         "outcome": "retrying", "status_code": None, "error": "connection refused", "duration_ms": 3}
    )
    assert (d.id, d.event_id, d.event_type, d.attempt, d.outcome, d.status_code, d.error, d.duration_ms) == (
        "whd_1", 17, "sandbox.created", 2, "retrying", None, "connection refused", 3
    )


class _CutStream(httpx.SyncByteStream):
    """A response body that sends ``chunks`` and then, when ``cut``, fails like a dropped connection."""

    def __init__(self, chunks: List[bytes], cut: bool) -> None:
        self.chunks, self.cut = chunks, cut

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks
        if self.cut:
            raise httpx.ReadError("connection reset by peer")


def _sse(*messages: Tuple[Optional[int], str, Dict[str, Any]]) -> List[bytes]:
    out = [b": keep-alive\n\n"]
    for id_, event, data in messages:
        head = f"id: {id_}\n" if id_ is not None else ""
        out.append(f"{head}event: {event}\ndata: {json.dumps(data)}\n\n".encode())
    return out


def _mock(obj: Any, answers: List[Tuple[List[bytes], bool]], seen: List[httpx.Request]) -> None:
    """Route ``obj``'s transport to answers given in turn (an empty one after them: an idle stream that ends)."""

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        chunks, cut = answers.pop(0) if answers else ([], False)
        return httpx.Response(200, headers={"Content-Type": "text/event-stream"}, stream=_CutStream(chunks, cut))

    t = obj._transport
    t._client = httpx.Client(base_url=t.url, headers=t.headers, transport=httpx.MockTransport(handler))


def _ev(id_: int, type_: str = "sandbox.paused") -> Dict[str, Any]:
    return {**EVENT, "id": id_, "type": type_}


def test_an_event_stream_resumes_after_the_last_event_with_last_event_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sandpit._sync.observe._backoff", lambda failures: 0.0)
    seen: List[httpx.Request] = []
    events = sandpit.Events(url="http://sandpit.test", api_key="k")
    _mock(events, [
        (_sse((5, "sandbox.paused", _ev(5))), True),
        # The daemon replays from the header's id; a repeated event is dropped all the same.
        (_sse((5, "sandbox.paused", _ev(5)), (6, "sandbox.resumed", _ev(6, "sandbox.resumed"))), True),
        (_sse((7, "sandbox.killed", _ev(7, "sandbox.killed"))), False),
    ], seen)
    stream = events.stream(sandbox="sb1", type=["sandbox.paused", "sandbox.resumed", "sandbox.killed"], after=3)
    got = [next(stream).id for _ in range(3)]
    stream.close()
    assert got == [5, 6, 7]
    assert dict(seen[0].url.params) == {
        "sandbox": "sb1", "type": "sandbox.paused,sandbox.resumed,sandbox.killed", "after": "3"
    }
    assert "last-event-id" not in seen[0].headers
    assert dict(seen[1].url.params) == {"sandbox": "sb1", "type": "sandbox.paused,sandbox.resumed,sandbox.killed"}
    assert seen[1].headers["Last-Event-ID"] == "5" and seen[2].headers["Last-Event-ID"] == "6"
    assert all(r.url.path == "/v1/events/stream" and r.headers["Authorization"] == "Bearer k" for r in seen)


def test_a_sandbox_stream_ends_with_the_daemon_and_a_metrics_stream_repeats_no_sample(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sandpit._observe import event_key, sample_key
    from sandpit._sync.observe import sse_items

    monkeypatch.setattr("sandpit._sync.observe._backoff", lambda failures: 0.0)
    seen: List[httpx.Request] = []
    events = sandpit.Events(url="http://sandpit.test", api_key="k")
    t = events._transport
    at = [f"2026-12-04T13:00:0{i}.000Z" for i in range(4)]
    _mock(events, [
        (_sse(*[(None, "metrics", {**SAMPLE, "timestamp": x}) for x in at[:2]]), True),
        # Reopened, the daemon sends the latest sample first again.
        (_sse(*[(None, "metrics", {**SAMPLE, "timestamp": x}) for x in at[1:]]), False),
    ], seen)
    path = "/v1/sandboxes/sb1/metrics/stream"
    samples = list(sse_items(t, path, {}, MetricSample.from_json, sample_key, by_id=False))
    assert [s.timestamp for s in samples] == [parse_time(x) for x in at] and len(seen) == 2
    assert "last-event-id" not in seen[1].headers
    seen.clear()
    _mock(events, [(_sse((1, "sandbox.created", _ev(1)), (2, "sandbox.killed", _ev(2))), False)], seen)
    path = "/v1/sandboxes/sb1/events/stream"
    assert [e.id for e in sse_items(t, path, {}, LifecycleEvent.from_json, event_key)] == [1, 2] and len(seen) == 1


def test_a_stream_gives_up_after_repeated_cuts_and_api_errors_are_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    from sandpit._observe import event_key
    from sandpit._stream import MAX_RESUME_ATTEMPTS
    from sandpit._sync.observe import sse_items

    monkeypatch.setattr("sandpit._sync.observe._backoff", lambda failures: 0.0)
    seen: List[httpx.Request] = []
    events = sandpit.Events(url="http://sandpit.test", api_key="k")
    _mock(events, [([], True)] * (MAX_RESUME_ATTEMPTS + 1), seen)
    with pytest.raises(sandpit.StreamError, match="could not be resumed"):
        next(events.stream())
    assert len(seen) == MAX_RESUME_ATTEMPTS + 1

    def gone(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(404, json={"error": {"code": "not_found", "message": "no sandbox sb1"}})

    seen.clear()
    t = events._transport
    t._client = httpx.Client(base_url=t.url, transport=httpx.MockTransport(gone))
    with pytest.raises(NotFoundError, match="no sandbox sb1"):
        next(sse_items(t, "/v1/sandboxes/sb1/events/stream", {}, LifecycleEvent.from_json, event_key))
    assert len(seen) == 1


def test_a_collected_result_keeps_the_last_64_mib_of_a_long_stream() -> None:
    """Regression: a streamed process's result kept every byte it had seen, so a long stream grew without
    limit in memory (and the TypeScript SDK threw past V8's string limit)."""
    from sandpit._process import STREAM_KEEP_BYTES, OutputCollector

    c = OutputCollector()
    seen = []
    c.on_stdout = seen.append
    chunk = b"a" * (1 << 20)
    for i in range(200):
        c.feed(sandpit.ExecEvent(kind="stdout", data=chunk, seq=i + 1))
    assert sum(len(t) for t in seen) == 200 << 20  # every chunk was handed out
    kept = c._stdout._size  # whole chunks: the last 64 MiB and at most one chunk more
    assert STREAM_KEEP_BYTES <= kept < STREAM_KEEP_BYTES + len(chunk)
    c.feed(sandpit.ExecEvent(kind="stdout", data=b"end", seq=201))
    info = sandpit.ProcessInfo.from_json(INFO)
    out = c.result(info).stdout
    assert len(out) == STREAM_KEEP_BYTES and out.endswith("aend")


def test_only_regular_files_announce_a_length(tmp_path: Path) -> None:
    from sandpit._files import _known_length

    p = tmp_path / "f"
    p.write_bytes(b"x" * 1000)
    with open(p, "rb") as fh:
        assert _known_length(fh) == 1000
        fh.seek(400)
        assert _known_length(fh) == 600
    assert _known_length(b"bytes") is None
    assert _known_length(io.BytesIO(b"abc")) is None
    r, w = os.pipe()
    with os.fdopen(r, "rb") as pr, os.fdopen(w, "wb"):
        assert _known_length(pr) is None


# The blocking SDK's small calls (sandpit._quick): encoded as httpx encodes them, on connections that are reused
# only while the server keeps them open, and left to httpx where a proxy is configured.


@pytest.mark.parametrize(
    "params",
    [
        {"path": "/tmp/a b/ü&x=y", "depth": 2, "recursive": True, "user": None},
        [("metadata", "team=a"), ("metadata", "x y"), ("state", "running")],
        {"keys": ["a", "b/c"], "flag": False},
    ],
)
def test_quick_query_encoding_matches_httpx(params: Any) -> None:
    assert encode_query(params) == str(httpx.QueryParams(params))


def _one_answer_per_connection(answers: List[bytes]) -> Tuple[int, List[bytes]]:
    """A server that answers one request per connection (keep-alive promised) and then closes it: what a daemon
    that restarted, or dropped an idle connection, looks like to a pooled client. Returns its port and the
    requests it read."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    seen: List[bytes] = []

    def serve() -> None:
        for answer in answers:
            conn, _ = srv.accept()
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, rest = data.partition(b"\r\n\r\n")
            lengths = [int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")]
            length = lengths[0] if lengths else 0
            while len(rest) < length:
                rest += conn.recv(65536)
            seen.append(head + b"\r\n\r\n" + rest)
            conn.sendall(answer)
            conn.close()
        srv.close()

    threading.Thread(target=serve, daemon=True).start()
    return srv.getsockname()[1], seen


def test_quick_client_replaces_a_connection_the_server_closed() -> None:
    ok = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 8\r\n\r\n{"n": 1}'
    body = b'{"error":{"code":"resource_exhausted","message":"slow down"}}'
    busy = (
        b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 3\r\ncontent-type: application/json\r\n"
        + f"content-length: {len(body)}\r\n\r\n".encode()
        + body
    )
    port, seen = _one_answer_per_connection([ok, ok, busy])
    q = QuickClient(f"http://127.0.0.1:{port}", {"Authorization": "Bearer k"}, ssl.create_default_context())
    # A body too large for this path is not sent at all (the caller sends it on httpx).
    assert q.request("PUT", "/v1/big", content=b"x" * (64 * 1024 + 1), connect_timeout=5, read_timeout=5) is None
    first = q.request("POST", "/v1/x", json_body={"argv": ["true"]}, connect_timeout=5, read_timeout=5)
    assert first is not None
    assert (first.status_code, first.json()) == (200, {"n": 1})
    # The server closed that connection after answering; the next call must not fail on it.
    time.sleep(0.1)
    second = q.request("GET", "/v1/y", params={"a": True}, connect_timeout=5, read_timeout=5)
    assert second is not None and second.status_code == 200
    time.sleep(0.1)
    third = q.request("DELETE", "/v1/z", connect_timeout=5, read_timeout=5)
    assert third is not None and third.status_code == 429 and third.headers["retry-after"] == "3"
    err = error_from_response(third.status_code, third.content, third.headers)
    assert isinstance(err, ResourceExhaustedError) and err.retry_after == 3
    # One request per connection, each whole: headers and JSON body, the key, the query as httpx writes it.
    assert len(seen) == 3
    assert seen[0].startswith(b"POST /v1/x HTTP/1.1\r\n")
    assert b"\r\nAuthorization: Bearer k\r\n" in seen[0] and b"\r\nContent-Type: application/json\r\n" in seen[0]
    assert seen[0].endswith(b'\r\n\r\n{"argv":["true"]}')
    assert seen[1].startswith(b"GET /v1/y?a=true HTTP/1.1\r\n")
    q.close()


def test_quick_client_reports_an_unreachable_daemon_as_httpx_path_does() -> None:
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    q = QuickClient(f"http://127.0.0.1:{port}", {}, ssl.create_default_context())
    with pytest.raises(UnavailableError, match=f"cannot reach sandpit at http://127.0.0.1:{port}/v1/x"):
        q.request("GET", "/v1/x", connect_timeout=5, read_timeout=5)


def test_quick_path_is_not_taken_through_a_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    tls = ssl.create_default_context()
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    assert QuickClient.for_url("http://127.0.0.1:7070", {}, tls) is not None
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    assert QuickClient.for_url("http://sandpit.example:7070", {}, tls) is None
    monkeypatch.setenv("NO_PROXY", "sandpit.example")
    assert QuickClient.for_url("http://sandpit.example:7070", {}, tls) is not None
    assert QuickClient.for_url("unix:///run/sandpit.sock", {}, tls) is None
