"""Times `sbx.commands.run("true")` through the Python SDK against a running daemon.

Usage: sdk_roundtrip.py URL KEY N  -> prints a JSON list of milliseconds (after 5 warm-up runs).
"""
import json
import sys
import time

from sandpit import Sandbox

url, key, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
with Sandbox.create(url=url, api_key=key) as sbx:
    samples = []
    for i in range(n + 5):
        t = time.perf_counter()
        r = sbx.commands.run("true")
        took = (time.perf_counter() - t) * 1000
        if r.exit_code != 0:
            sys.exit(f"true exited {r.exit_code}")
        if i >= 5:
            samples.append(took)
print(json.dumps(samples))
