"""The stock E2B Python SDK (blocking ``Sandbox``), unchanged, against sandpit: every public method of
``Sandbox``, ``commands``, ``pty`` and ``files`` the way E2B's documentation uses them."""

from __future__ import annotations

import io
import threading
import time
import urllib.request

import httpx
import pytest
from e2b import (
    AuthenticationException,
    CommandExitException,
    FileType,
    FilesystemEventType,
    InvalidArgumentException,
    NotFoundException,
    PtySize,
    Sandbox,
    SandboxException,
)

from conftest import Daemon, poll


@pytest.fixture
def sb(daemon: Daemon):
    s = Sandbox.create(timeout=120)
    yield s
    s.kill()


def test_create_info_list_timeout_and_kill(daemon: Daemon) -> None:
    s = Sandbox.create(metadata={"suite": "e2b-sync", "n": "1"}, envs={"GREETING": "hola"}, timeout=60)
    try:
        assert s.sandbox_id
        assert s.commands.run("echo $GREETING").stdout == "hola\n"
        info = s.get_info()
        assert info.sandbox_id == s.sandbox_id
        assert info.template_id == "base"
        assert info.metadata == {"suite": "e2b-sync", "n": "1"}
        assert info.state.value == "running"
        before = info.end_at
        s.set_timeout(600)
        assert s.get_info().end_at > before
        listed = Sandbox.list(query=_query({"suite": "e2b-sync"})).next_items()
        assert [x.sandbox_id for x in listed] == [s.sandbox_id]
        assert Sandbox.list(query=_query({"suite": "nobody"})).next_items() == []
        assert s.is_running()
    finally:
        assert s.kill() is True
    assert not s.is_running()
    assert Sandbox.kill(s.sandbox_id) is False


def _query(metadata: dict):
    from e2b import SandboxQuery

    return SandboxQuery(metadata=metadata)


def test_list_pages_through_every_sandbox(daemon: Daemon) -> None:
    made = [Sandbox.create(metadata={"suite": "paging"}) for _ in range(3)]
    try:
        pager = Sandbox.list(query=_query({"suite": "paging"}), limit=2)
        first = pager.next_items()
        assert len(first) == 2 and pager.has_next
        second = pager.next_items()
        assert len(second) == 1 and not pager.has_next
        assert {x.sandbox_id for x in first + second} == {m.sandbox_id for m in made}
    finally:
        for m in made:
            m.kill()


def test_run_with_callbacks_and_a_failing_command(sb: Sandbox) -> None:
    out: list[str] = []
    err: list[str] = []
    r = sb.commands.run("echo one; echo two >&2; echo three", on_stdout=out.append, on_stderr=err.append)
    assert r.exit_code == 0
    assert r.stdout == "one\nthree\n" and r.stderr == "two\n"
    assert "".join(out) == "one\nthree\n" and "".join(err) == "two\n"
    with pytest.raises(CommandExitException) as e:
        sb.commands.run("echo bad >&2; exit 3")
    assert e.value.exit_code == 3
    assert e.value.stderr == "bad\n"
    r = sb.commands.run("pwd; echo $X", cwd="/tmp", envs={"X": "y"})
    assert r.stdout == "/tmp\ny\n"


def test_background_wait_list_and_kill(sb: Sandbox) -> None:
    h = sb.commands.run("sleep 300", background=True)
    assert h.pid > 0
    assert any(p.pid == h.pid and p.cmd == "/bin/bash" for p in sb.commands.list())
    assert sb.commands.kill(h.pid) is True
    with pytest.raises(CommandExitException) as e:
        h.wait()
    assert e.value.exit_code == -1
    assert poll(lambda: all(p.pid != h.pid for p in sb.commands.list()))
    assert sb.commands.kill(h.pid) is False
    done = sb.commands.run("echo quick", background=True)
    assert done.wait().stdout == "quick\n"


def test_stdin_send_stream_and_close(sb: Sandbox) -> None:
    h = sb.commands.run("cat", background=True, stdin=True)
    sb.commands.send_stdin(h.pid, "one\n")
    h.send_stdin("two\n")
    sb.commands.stream_input(h.pid, iter(["three\n", b"four\n"]))
    sb.commands.close_stdin(h.pid)
    assert h.wait().stdout == "one\ntwo\nthree\nfour\n"


def test_connect_to_a_running_command_from_a_second_client(sb: Sandbox) -> None:
    h = sb.commands.run("sleep 1; echo later; sleep 0.3", background=True)
    other = Sandbox.connect(sb.sandbox_id)
    attached = other.commands.connect(h.pid)
    r = attached.wait()
    assert "later\n" in r.stdout
    assert r.exit_code == 0


def test_pty_create_input_resize_and_kill(sb: Sandbox) -> None:
    data = bytearray()
    lock = threading.Lock()

    def on_data(b: bytes) -> None:
        with lock:
            data.extend(b)

    h = sb.pty.create(PtySize(rows=24, cols=80))
    reader = threading.Thread(target=lambda: _wait_quietly(h, on_data), daemon=True)
    reader.start()
    sb.pty.send_stdin(h.pid, b"stty size; echo pty-$((40+2))\n")
    poll(lambda: b"pty-42" in bytes(data))
    assert b"24 80" in bytes(data)
    sb.pty.resize(h.pid, PtySize(rows=30, cols=100))
    sb.pty.stream_input(h.pid, iter([b"stty size\n"]))
    poll(lambda: b"30 100" in bytes(data))
    assert sb.pty.kill(h.pid) is True
    reader.join(10)
    assert not reader.is_alive()


def _wait_quietly(h, on_pty) -> None:
    try:
        h.wait(on_pty=on_pty)
    except CommandExitException:
        pass


def test_files_text_bytes_streams_and_many(sb: Sandbox) -> None:
    info = sb.files.write("/tmp/e2b/a.txt", "hello")
    assert info.path == "/tmp/e2b/a.txt" and info.name == "a.txt"
    assert sb.files.read("/tmp/e2b/a.txt") == "hello"
    blob = bytes(range(256)) * 1000
    sb.files.write("/tmp/e2b/blob.bin", blob)
    assert bytes(sb.files.read("/tmp/e2b/blob.bin", format="bytes")) == blob
    sb.files.write("/tmp/e2b/streamed.bin", io.BytesIO(blob))
    assert b"".join(sb.files.read("/tmp/e2b/streamed.bin", format="stream")) == blob
    written = sb.files.write_files(
        [{"path": "/tmp/e2b/m/one.txt", "data": "1"}, {"path": "/tmp/e2b/m/two.txt", "data": b"22"}]
    )
    assert sorted(w.path for w in written) == ["/tmp/e2b/m/one.txt", "/tmp/e2b/m/two.txt"]
    assert sb.commands.run("cat /tmp/e2b/m/one.txt /tmp/e2b/m/two.txt").stdout == "122"


def test_files_list_stat_mkdir_rename_remove(sb: Sandbox) -> None:
    sb.files.write("/tmp/tree/d/inner.txt", "x")
    sb.files.write("/tmp/tree/top.txt", "xyz")
    names = {(e.name, e.type) for e in sb.files.list("/tmp/tree")}
    assert names == {("d", FileType.DIR), ("top.txt", FileType.FILE)}
    deep = {e.path for e in sb.files.list("/tmp/tree", depth=2)}
    assert "/tmp/tree/d/inner.txt" in deep
    st = sb.files.get_info("/tmp/tree/top.txt")
    assert st.size == 3 and st.type == FileType.FILE and st.permissions.startswith("-")
    assert sb.files.exists("/tmp/tree/top.txt")
    assert not sb.files.exists("/tmp/tree/missing")
    assert sb.files.make_dir("/tmp/tree/new/deeper") is True
    assert sb.files.make_dir("/tmp/tree/new/deeper") is False
    moved = sb.files.rename("/tmp/tree/top.txt", "/tmp/tree/moved.txt")
    assert moved.path == "/tmp/tree/moved.txt"
    sb.files.remove("/tmp/tree/d")
    assert not sb.files.exists("/tmp/tree/d")


def test_file_errors_are_the_sdk_s_exceptions(sb: Sandbox) -> None:
    with pytest.raises(NotFoundException):
        sb.files.read("/tmp/definitely/missing.txt")
    with pytest.raises(NotFoundException):
        sb.files.get_info("/tmp/definitely/missing.txt")
    sb.files.make_dir("/tmp/a-dir")
    with pytest.raises((InvalidArgumentException, SandboxException)):
        sb.files.read("/tmp/a-dir")


def test_watch_dir_sees_changes(sb: Sandbox) -> None:
    sb.files.make_dir("/tmp/watched")
    handle = sb.files.watch_dir("/tmp/watched", recursive=True)
    try:
        sb.files.write("/tmp/watched/new.txt", "data")
        sb.commands.run("mkdir -p /tmp/watched/sub && echo x > /tmp/watched/sub/f && mv /tmp/watched/new.txt /tmp/watched/renamed.txt")
        seen: list = []

        def all_seen():
            seen.extend(handle.get_new_events())
            names = {(e.name, e.type) for e in seen}
            # A file the files API writes appears at once, whole (sandpit writes a hidden temporary file and
            # renames it into place): it may show as a write only.
            made = {("new.txt", FilesystemEventType.CREATE), ("new.txt", FilesystemEventType.WRITE)} & names
            return made and {("sub/f", FilesystemEventType.CREATE), ("renamed.txt", FilesystemEventType.CREATE),
                             ("new.txt", FilesystemEventType.RENAME)} <= names

        try:
            poll(all_seen)
        except AssertionError:
            raise AssertionError(f"saw {seen}")
    finally:
        handle.stop()


def test_signed_upload_and_download_urls(sb: Sandbox, daemon: Daemon) -> None:
    # The SDK makes these URLs root-relative: they are served by the E2B listener (--e2b-listen).
    e2b_sb = Sandbox.connect(sb.sandbox_id, sandbox_url=daemon.e2b_url)
    up = e2b_sb.upload_url("/tmp/signed.txt", use_signature_expiration=60)
    r = httpx.post(up, files={"file": ("signed.txt", b"signed bytes")})
    assert r.status_code == 200, r.text
    down = e2b_sb.download_url("/tmp/signed.txt")
    with urllib.request.urlopen(down) as resp:
        assert resp.read() == b"signed bytes"
    # A URL for another path, or a changed signature, opens nothing.
    assert httpx.get(down.replace("signed.txt", "other.txt")).status_code == 401
    assert httpx.get(down[:-3] + "AAA").status_code == 401


def test_get_host_reaches_a_server_in_the_sandbox(sb: Sandbox, daemon: Daemon) -> None:
    sb.files.write("/tmp/www/index.html", "hello from the sandbox")
    sb.commands.run("cd /tmp/www && exec python3 -m http.server 8765 --bind 127.0.0.1", background=True)
    host = sb.get_host(8765)
    assert host == f"8765-{sb.sandbox_id}.localhost:{daemon.url.rsplit(':', 1)[1]}"
    port = host.rsplit(":", 1)[1]

    def fetch():
        try:
            r = httpx.get(f"http://127.0.0.1:{port}/index.html", headers={"Host": host})
        except httpx.HTTPError:
            return None
        return r if r.status_code == 200 else None

    assert poll(fetch, timeout=20).text == "hello from the sandbox"


def test_a_killed_sandbox_is_not_running(daemon: Daemon) -> None:
    s = Sandbox.create()
    s.kill()
    with pytest.raises(SandboxException) as e:
        s.commands.run("echo hi")
    assert "was not found" in str(e.value) or "not running" in str(e.value).lower()
    with pytest.raises(NotFoundException):
        Sandbox.connect(s.sandbox_id)


def test_a_wrong_api_key_is_an_authentication_error(daemon: Daemon) -> None:
    with pytest.raises(AuthenticationException):
        Sandbox.create(api_key="sp_nobody_0123456789")


def test_unsupported_options_fail_loudly(daemon: Daemon) -> None:
    with pytest.raises(SandboxException) as e:
        Sandbox.create(network={"allow_public_traffic": True, "mask_request_host": "x"})
    assert "not supported" in str(e.value)
    s = Sandbox.create()
    try:
        with pytest.raises(SandboxException) as e:
            s.get_metrics()
        assert "not support" in str(e.value)
    finally:
        s.kill()


def test_pause_and_connect_resumes(daemon: Daemon) -> None:
    s = Sandbox.create(timeout=60)
    try:
        h = s.commands.run("sleep 300", background=True)
        s.pause()
        assert s.get_info().state.value == "paused"
        again = Sandbox.connect(s.sandbox_id, timeout=120)
        assert again.get_info().state.value == "running"
        assert any(p.pid == h.pid for p in again.commands.list())
        assert again.commands.run("echo back").stdout == "back\n"
    finally:
        s.kill()


def test_create_to_first_command_is_quick(daemon: Daemon) -> None:
    # Not a benchmark (that is bench/run's e2b group): just that nothing waits on a timer.
    start = time.monotonic()
    s = Sandbox.create()
    try:
        assert s.commands.run("echo hi").stdout == "hi\n"
    finally:
        s.kill()
    assert time.monotonic() - start < 10
