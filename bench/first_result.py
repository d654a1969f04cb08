"""Times create -> first `commands.run("echo hi")` result through one SDK, against a running daemon.

Usage: first_result.py e2b|sandpit URL KEY N  -> prints a JSON list of milliseconds (after 3 warm-up runs).

``e2b``: the stock E2B SDK (compat/e2b/python/.venv), pointed at the daemon's E2B surface by E2B_API_URL and
E2B_SANDBOX_URL. ``sandpit``: sandpit's own Python SDK (sdk/python/.venv). Each sandbox is killed after its
sample, outside the timed part.
"""
import json
import os
import sys
import time

mode, url, key, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
if mode == "e2b":
    os.environ.update({"E2B_API_URL": f"{url}/e2b", "E2B_SANDBOX_URL": f"{url}/e2b/sandbox",
                       "E2B_API_KEY": key, "E2B_VALIDATE_API_KEY": "false"})
    from e2b import Sandbox

    def create():
        return Sandbox.create()
elif mode == "sandpit":
    from sandpit import Sandbox

    def create():
        return Sandbox.create(url=url, api_key=key)
else:
    sys.exit(f"unknown mode {mode!r}: expected e2b or sandpit")

samples = []
for i in range(n + 3):
    t = time.perf_counter()
    sbx = create()
    r = sbx.commands.run("echo hi")
    took = (time.perf_counter() - t) * 1000
    sbx.kill()
    if r.stdout != "hi\n":
        sys.exit(f"echo hi gave {r.stdout!r}")
    if i >= 3:
        samples.append(took)
print(json.dumps(samples))
