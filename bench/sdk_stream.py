"""Times 1 GiB (or SIZE bytes) of text output read through the Python SDK's async stream
(`AsyncSandbox` → `processes.start` → `async for ev in handle.stream()`) against a running daemon.

Usage: sdk_stream.py URL KEY SIZE RUNS  -> prints a JSON list of MiB/s, one per run.

The command prints a marker, then waits for a line on stdin before writing (the same gate as the Rust
benchmark's rows: the stream is attached before the first byte of the payload).
"""
import asyncio
import json
import sys
import time

from sandpit import AsyncSandbox

LINE = "sandpit stream benchmark: the quick brown fox jumps over the lazy dog 0123456789"


async def one(sbx: AsyncSandbox, size: int) -> float:
    t = time.perf_counter()
    h = await sbx.processes.start(f"echo ready; read _gate; yes '{LINE}' | head -c {size}")
    got, lost, gate_open = 0, 0, False
    async for ev in h.stream():
        if ev.type == "stdout":
            if not gate_open:
                # The marker: the stream is attached, let the payload go.
                await h.write_stdin("go\n", eof=True)
                gate_open = True
                got -= len("ready\n")
            got += len(ev.data)  # ASCII text: characters are bytes
        elif ev.type == "lost":
            lost += 1
        elif ev.type == "exit":
            break
    took = time.perf_counter() - t
    if got != size:
        sys.exit(f"python sdk stream delivered {got} of {size} bytes ({lost} lost events)")
    return size / took / 1048576


async def main() -> None:
    url, key, size, runs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    async with AsyncSandbox.create(url=url, api_key=key) as sbx:
        rates = [await one(sbx, size) for _ in range(runs)]
    print(json.dumps(rates))


asyncio.run(main())
