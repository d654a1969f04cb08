"""A cut stream resumes from the last ``seq`` (SSE ``Last-Event-ID``, WebSocket ``?from_seq=``), and gives up
with ``StreamError`` when it cannot. The cuts are made by a small TCP relay between the SDK and the daemon."""

from __future__ import annotations

import asyncio
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator, List, Tuple
from urllib.parse import urlparse

import pytest
from conftest import Daemon, DaemonProcess

import sandpit._stream
from sandpit import AsyncSandbox, Sandbox, StreamError

SCRIPT = "for i in $(seq 1 12); do echo line $i; sleep 0.1; done"
EXPECTED = "".join(f"line {i}\n" for i in range(1, 13))


class CuttingRelay:
    """Relays TCP connections to the daemon; :meth:`cut` drops every open one, ``refuse`` drops new ones, and
    ``refuse_upgrades`` answers WebSocket handshakes with 502, as a proxy that cannot carry them does."""

    def __init__(self, upstream: Tuple[str, int]) -> None:
        self.upstream = upstream
        self.refuse = False
        self.refuse_upgrades = False
        self.refused_upgrades = 0
        self.accepted = 0
        self._conns: List[socket.socket] = []
        self._lock = threading.Lock()
        self._server = socket.socket()
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(64)
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            self.accepted += 1
            if self.refuse:
                client.close()
                continue
            if self.refuse_upgrades and self._is_upgrade(client):
                self.refused_upgrades += 1
                client.sendall(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    @staticmethod
    def _is_upgrade(client: socket.socket) -> bool:
        """Whether the connection's first request (peeked, left unread) asks for a WebSocket."""
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 65536:
            more = client.recv(65536, socket.MSG_PEEK)
            if len(more) == len(head):
                break
            head = more
        return b"upgrade: websocket" in head.lower()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        """Drop every open connection."""
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        """Stop listening and drop everything."""
        self._server.close()
        self.cut()


@pytest.fixture
def relay(daemon: Daemon) -> Iterator[CuttingRelay]:
    parsed = urlparse(daemon.url)
    r = CuttingRelay((parsed.hostname or "127.0.0.1", parsed.port or 80))
    yield r
    r.close()


@pytest.mark.parametrize("upgrades", ["websocket", "refused"])
def test_stream_resumes_after_cuts(sbx: Sandbox, relay: CuttingRelay, upgrades: str) -> None:
    """The blocking streams read the WebSocket session, or SSE where a proxy refuses WebSockets: either way a
    cut connection resumes with nothing lost or repeated."""
    relay.refuse_upgrades = upgrades == "refused"
    remote = Sandbox.connect(sbx.id, url=relay.url)
    try:
        process = remote.processes.start(SCRIPT, stdin=None)
        seqs: List[int] = []
        text = ""
        for event in process.events():
            if event.kind == "stdout":
                assert event.seq is not None
                seqs.append(event.seq)
                text += event.text
                if len(seqs) in (2, 5):
                    relay.cut()
        assert text == EXPECTED
        assert seqs == sorted(set(seqs)) and seqs[0] == 1  # no duplicate, no gap
        assert relay.accepted >= 3
        # The same through commands.run's streaming callbacks.
        chunks: List[str] = []

        def on_stdout(chunk: str) -> None:
            chunks.append(chunk)
            if len(chunks) == 3:
                relay.cut()

        assert remote.commands.run(SCRIPT, on_stdout=on_stdout).stdout == EXPECTED
        assert "".join(chunks) == EXPECTED
        # Refused, each stream asked for the socket once, then SSE served (and resumed) it.
        assert (relay.refused_upgrades > 0) == (upgrades == "refused")
    finally:
        remote.close()


@pytest.fixture
def few_attempts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Give up after 3 failed reopenings (about 0.7 s) instead of the default's ~9 s."""
    monkeypatch.setattr(sandpit._stream, "MAX_RESUME_ATTEMPTS", 3)


@pytest.mark.parametrize("upgrades", ["websocket", "refused"])
def test_stream_gives_up_with_stream_error(
    sbx: Sandbox, relay: CuttingRelay, few_attempts: None, upgrades: str
) -> None:
    relay.refuse_upgrades = upgrades == "refused"
    remote = Sandbox.connect(sbx.id, url=relay.url)
    try:
        process = remote.processes.start("echo first; sleep 30", stdin=None)
        events = process.events()
        assert next(events).kind == "started"
        assert next(events).kind == "stdout"
        relay.refuse = True
        relay.cut()
        with pytest.raises(StreamError) as exc:
            next(events)
        assert exc.value.code == "stream_cut" and "seq 1" in exc.value.message
        sbx.commands.kill(process.id)
    finally:
        remote.close()


@pytest.mark.parametrize("upgrades", ["websocket", "refused"])
async def test_async_stream_resumes_after_a_cut(sbx: Sandbox, relay: CuttingRelay, upgrades: str) -> None:
    """The async stream reads the WebSocket session; where a proxy refuses WebSockets it reads SSE. Either way
    a cut connection resumes with nothing lost or repeated."""
    relay.refuse_upgrades = upgrades == "refused"
    remote = await AsyncSandbox.connect(sbx.id, url=relay.url)
    try:
        process = await remote.processes.start(SCRIPT, stdin=None)
        text = ""
        async for event in process.stream():
            if event.type == "stdout":
                text += event.data
                if text.count("\n") == 3:
                    relay.cut()
            if event.type == "exit":
                assert event.result is not None and event.result.stdout == EXPECTED
        assert text == EXPECTED
        # Refused, the socket was asked for once, then SSE served (and resumed) the stream.
        assert relay.refused_upgrades == (1 if upgrades == "refused" else 0)
    finally:
        await remote.close()


def test_stream_holds_a_fast_process_back_for_a_slow_loop(sbx: Sandbox) -> None:
    """The blocking stream too: ``websockets``' reader stops reading the socket while frames wait."""
    total = 96 * 1024 * 1024
    process = sbx.processes.start(f"echo ready; read _gate; head -c {total} /dev/zero")
    got, written_while_paused = 0, None
    for event in process.stream():
        assert event.type != "lost"
        if event.type == "stdout" and event.data == "ready\n" and got == 0:
            process.write_stdin("go\n", eof=True)
        elif event.type == "stdout":
            got += len(event.data)
            if written_while_paused is None:
                time.sleep(1.5)
                written_while_paused = sbx.processes.get(process.id).info.stdout_bytes
    assert got == total
    assert written_while_paused is not None and written_while_paused < total // 2, written_while_paused


async def test_async_stream_holds_a_fast_process_back_for_a_slow_loop(sbx: Sandbox) -> None:
    """A loop slower than its process holds it back (the socket's flow control, through to the agent) instead
    of queueing the output in memory, and still gets every byte."""
    total = 96 * 1024 * 1024
    remote = await AsyncSandbox.connect(sbx.id)
    try:
        # Gated: the output starts once the stream is attached (a process nobody follows is never held back).
        process = await remote.processes.start(f"echo ready; read _gate; head -c {total} /dev/zero")
        got, written_while_paused = 0, None
        async for event in process.stream():
            assert event.type != "lost"
            if event.type == "stdout" and event.data == "ready\n" and got == 0:
                await process.write_stdin("go\n", eof=True)
            elif event.type == "stdout":
                got += len(event.data)
                if written_while_paused is None:
                    # Unheld, the process would write all 96 MiB meanwhile (hundreds of MiB/s).
                    await asyncio.sleep(1.5)
                    written_while_paused = (await remote.processes.get(process.id)).info.stdout_bytes
        assert got == total
        assert written_while_paused is not None and written_while_paused < total // 2, written_while_paused
    finally:
        await remote.close()


async def test_websocket_session_resumes_after_a_cut(sbx: Sandbox, relay: CuttingRelay, few_attempts: None) -> None:
    remote = await AsyncSandbox.connect(sbx.id, url=relay.url)
    try:
        chunks: List[str] = []
        session = await remote.commands.spawn("cat; " + SCRIPT, on_stdout=chunks.append)
        await session.stdin.write("before\n")
        while "before" not in "".join(chunks):
            await asyncio.sleep(0.02)
        relay.cut()
        # stdin is written over HTTP, so nothing is lost while the socket is down.
        await session.stdin.write("after\n")
        await session.stdin.close()
        result = await session.wait()
        assert result.stdout == "before\nafter\n" + EXPECTED
        assert "".join(chunks) == result.stdout
        await session.close()

        refused = await remote.commands.spawn("echo x; sleep 30")
        relay.refuse = True
        relay.cut()
        with pytest.raises(StreamError):
            await refused.wait()
        relay.refuse = False
        await sbx_kill(sbx, refused.id)
        await refused.close()
    finally:
        await remote.close()


async def sbx_kill(sbx: Sandbox, pid: str) -> None:
    """Kill a process through the direct (uncut) connection."""
    await asyncio.get_running_loop().run_in_executor(None, sbx.commands.kill, pid)


def test_streams_resume_across_a_daemon_crash_and_restart() -> None:
    """SIGKILL the daemon mid-stream and start it again: the SSE stream and the WebSocket session both pick
    up where they were (the processes live on in the sandbox's agent)."""
    # A short path under /tmp: agent sockets live in the state dir and unix socket paths max out at 107 bytes.
    tmp = Path(tempfile.mkdtemp(prefix="sp-", dir="/tmp"))
    process = DaemonProcess(tmp / "state", tmp / "daemon.log")
    d = process.start()
    try:
        with Sandbox.create(url=d.url, api_key=d.api_key) as sbx:
            handle = sbx.processes.start(SCRIPT, stdin=None)
            text = ""
            for event in handle.events():
                if event.kind == "stdout":
                    text += event.text
                    if text.count("\n") == 3:
                        process.kill()
                        process.start()
            assert text == EXPECTED

            async def spawn_across_restart() -> str:
                asbx = await AsyncSandbox.connect(sbx.id, url=d.url, api_key=d.api_key)
                try:
                    out: List[str] = []
                    async with asbx.commands.spawn(SCRIPT, on_stdout=out.append) as session:
                        while "line 3" not in "".join(out):
                            await asyncio.sleep(0.02)
                        await asyncio.get_running_loop().run_in_executor(None, process.kill)
                        await asyncio.get_running_loop().run_in_executor(None, process.start)
                        result = await session.wait()
                    assert "".join(out) == result.stdout
                    return result.stdout
                finally:
                    await asbx.close()

            assert asyncio.run(spawn_across_restart()) == EXPECTED
    finally:
        process.stop()
