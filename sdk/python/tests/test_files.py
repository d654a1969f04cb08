"""``sandbox.files`` (sync and async) against the real daemon. The test daemon uses the process backend, whose
agent runs on this host: every path is under the test's temporary directory."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import threading
import time
from pathlib import Path
from typing import List

import pytest

from sandpit import (
    AlreadyExistsError,
    AsyncSandbox,
    FilesystemEvent,
    IsADirError,
    NotEmptyError,
    NotFoundError,
    Sandbox,
    WriteEntry,
)


def test_round_trips_and_metadata(sbx: Sandbox, tmp_path: Path) -> None:
    f = sbx.files
    d = str(tmp_path)
    e = f.write(f"{d}/a/b.txt", "hello")
    assert e.type == "file" and e.size == 5 and e.path == f"{d}/a/b.txt"
    assert f.read(f"{d}/a/b.txt") == "hello"
    assert f.read(f"{d}/a/b.txt", format="bytes") == b"hello"
    # Streamed both ways: a file object in, chunks out.
    payload = os.urandom(3 * 1024 * 1024 + 17)
    f.write(f"{d}/big.bin", io.BytesIO(payload))
    h = hashlib.sha256()
    for chunk in f.read(f"{d}/big.bin", format="stream"):
        h.update(chunk)
    assert h.hexdigest() == hashlib.sha256(payload).hexdigest()
    # A regular file goes with its length (the daemon's fast path), from where it stands.
    local = tmp_path / "local.bin"
    local.write_bytes(payload)
    with open(local, "rb") as fh:
        fh.seek(17)
        assert f.write(f"{d}/sized.bin", fh).size == len(payload) - 17
    assert (tmp_path / "sized.bin").read_bytes() == payload[17:]
    f.write(f"{d}/gen.txt", (c for c in [b"a", b"b", b"c"]))
    assert f.read(f"{d}/gen.txt") == "abc"
    # A name that is not UTF-8 (bytes path), and an empty file.
    odd = os.fsencode(d) + b"/\xff\xfe.bin"
    f.write(odd, b"\x00\x01")
    assert f.read(odd, format="bytes") == b"\x00\x01"
    assert Path(os.fsdecode(odd)).read_bytes() == b"\x00\x01"
    f.write(f"{d}/empty", b"")
    assert f.read(f"{d}/empty", format="bytes") == b""
    # Many files in one request.
    written = f.write_files([WriteEntry(f"{d}/many/{i}.txt", str(i)) for i in range(50)]
                            + [WriteEntry(f"{d}/many/run.sh", "#!/bin/sh\n", mode=0o755)])
    assert len(written) == 51
    assert f.get_info(f"{d}/many/run.sh").mode == "0755"
    assert [e.name for e in f.list(f"{d}/many")][:3] == ["0.txt", "1.txt", "10.txt"]
    assert len(f.list(d, depth=2)) >= 51
    assert f.exists(f"{d}/many") and not f.exists(f"{d}/nope")
    assert f.make_dir(f"{d}/x/y") is True and f.make_dir(f"{d}/x/y") is False
    f.rename(f"{d}/a/b.txt", f"{d}/x/y/b.txt")
    with pytest.raises(AlreadyExistsError):
        f.rename(f"{d}/many/1.txt", f"{d}/many/2.txt")
    with pytest.raises(NotEmptyError):
        f.remove(f"{d}/x", recursive=False)
    f.remove(f"{d}/x")
    assert not f.exists(f"{d}/x")
    with pytest.raises(NotFoundError):
        f.read(f"{d}/nope")
    with pytest.raises(IsADirError):
        f.read(d)
    assert f.chmod(f"{d}/gen.txt", 0o600).permissions == "rw-------"


def test_watch_dir_sync(sbx: Sandbox, tmp_path: Path) -> None:
    seen: List[FilesystemEvent] = []
    got = threading.Event()

    def on_event(ev: FilesystemEvent) -> None:
        seen.append(ev)
        if ev.path and ev.path.endswith("done.txt"):
            got.set()

    h = sbx.files.watch_dir(str(tmp_path), on_event, recursive=True)
    try:
        sbx.files.write(f"{tmp_path}/sub/done.txt", "x")
        assert got.wait(10), seen
        assert any(e.type == "create" and e.path == f"{tmp_path}/sub" for e in seen), seen
        assert [e.seq for e in seen] == sorted(e.seq for e in seen)
        assert len(h.get_new_events()) == len(seen)
    finally:
        h.stop()


async def test_async_files_and_watch(asbx: AsyncSandbox, tmp_path: Path) -> None:
    f = asbx.files
    d = str(tmp_path)

    async def chunks():  # type: ignore[no-untyped-def]
        for i in range(3):
            yield f"part{i};".encode()

    await f.write(f"{d}/async.txt", chunks())
    assert await f.read(f"{d}/async.txt") == "part0;part1;part2;"
    stream = await f.read(f"{d}/async.txt", format="stream")
    assert b"".join([c async for c in stream]) == b"part0;part1;part2;"  # type: ignore[union-attr]
    assert len(await f.write_files([{"path": f"{d}/w/{i}", "data": b"x"} for i in range(10)])) == 10
    assert {e.name for e in await f.list(f"{d}/w")} == {str(i) for i in range(10)}
    events: List[FilesystemEvent] = []
    h = await f.watch_dir(d, events.append)
    await f.write(f"{d}/watched.txt", "1")
    await f.rename(f"{d}/watched.txt", f"{d}/renamed.txt")
    deadline = time.monotonic() + 10
    while not any(e.type == "rename" for e in events) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    await h.stop()
    rename = next(e for e in events if e.type == "rename")
    assert rename.from_path == f"{d}/watched.txt" and rename.to_path == f"{d}/renamed.txt"
    assert await f.exists(f"{d}/renamed.txt")
    await f.remove(f"{d}/w")
    assert not await f.exists(f"{d}/w")


def test_signed_urls_need_no_other_credential(sbx: Sandbox, tmp_path: Path) -> None:
    import httpx

    from sandpit import InvalidArgumentError

    report = tmp_path / "report.txt"
    sbx.files.write(str(report), "the report")
    url = sbx.files.download_url(str(report))
    r = httpx.get(url)
    assert (r.status_code, r.text) == (200, "the report")
    up = sbx.files.upload_url(str(tmp_path / "up.bin"), expires_in=60)
    assert httpx.put(up, content=b"from a page").status_code == 200
    assert (tmp_path / "up.bin").read_bytes() == b"from a page"
    signed = sbx.files.signed_url(str(report), "read", expires_in=120)
    assert signed.method == "GET" and signed.expires_at is not None and signed.url.endswith(signed.path)
    assert httpx.get(url.replace("report", "other")).status_code == 403
    with pytest.raises(InvalidArgumentError):
        sbx.files.signed_url(str(report), "read", expires_in=0)


async def test_async_signed_url(asbx: AsyncSandbox, tmp_path: Path) -> None:
    import httpx

    await asbx.files.write(str(tmp_path / "a.txt"), "async")
    url = await asbx.files.download_url(str(tmp_path / "a.txt"))
    async with httpx.AsyncClient() as c:
        assert (await c.get(url)).text == "async"
