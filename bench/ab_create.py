#!/usr/bin/env python3
"""Builds of the daemon side by side: create -> first `echo hi` -> delete, interleaved.

Starts `BIN serve` for every binary given (isolate backend: run as root; each beside its
`sandpit-agent-static`), each on its own port and temporary state directory, then for every round makes one
create -> `exec("echo hi")` -> delete on each daemon in turn (the order alternating between rounds), so
that every build sees the same moments of a machine whose speed drifts within minutes. Prints, per build,
the medians of the create, of the first command and of both (ms), after three warm-up rounds (the first
builds the `base` template). With `--pool`, each daemon keeps a warm pool of 2 and every create waits for it
to be full first: the pooled path instead.

    sudo bench/ab_create.py /tmp/before/sandpit /tmp/after/sandpit [--rounds 80] [--pool]

docs/benchmarks.md ("Cold creates, round 3") has the last figures.
"""

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time

KEY = "bench-ab-create-key-0123456789"


def request(conn, method, path, body=None):
    conn.request(
        method,
        path,
        body=json.dumps(body) if body is not None else None,
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    resp = conn.getresponse()
    return resp.status, resp.read()


def wait_for_pool(conn, size):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        _, body = request(conn, "GET", "/v1/templates/base/pool")
        pool = json.loads(body)
        if pool["ready"] >= size and pool["filling"] == 0:
            return
        time.sleep(0.02)
    raise SystemExit(f"the pool never filled: {pool}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bins", nargs="+", help="sandpit binaries to compare")
    ap.add_argument("--rounds", type=int, default=80)
    ap.add_argument(
        "--pool", action="store_true", help="measure creates served by a warm pool of 2"
    )
    args = ap.parse_args()
    daemons, dirs = [], []
    try:
        for i, bin_path in enumerate(args.bins):
            state = tempfile.mkdtemp(prefix="sandpit-ab-")
            dirs.append(state)
            port = 17600 + i
            env = dict(os.environ, SANDPIT_LOG="warn", SANDPIT_API_KEY=KEY)
            proc = subprocess.Popen(
                [
                    bin_path,
                    "serve",
                    "--listen",
                    f"127.0.0.1:{port}",
                    "--state-dir",
                    state,
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            conn = http.client.HTTPConnection("127.0.0.1", port)
            for _ in range(200):
                try:
                    request(conn, "GET", "/v1/health")
                    break
                except OSError:
                    conn.close()
                    time.sleep(0.05)
            else:
                raise SystemExit(f"{bin_path} did not start")
            if args.pool:
                request(conn, "PUT", "/v1/templates/base/pool", {"size": 2})
            daemons.append(
                (bin_path, proc, conn, {"create": [], "exec": [], "both": []})
            )
        for rnd in range(args.rounds + 3):
            for bin_path, _, conn, res in daemons if rnd % 2 == 0 else daemons[::-1]:
                if args.pool:
                    wait_for_pool(conn, 2)
                t0 = time.perf_counter()
                status, body = request(conn, "POST", "/v1/sandboxes", {})
                t1 = time.perf_counter()
                if status != 201:
                    raise SystemExit(f"{bin_path}: create answered {status}: {body!r}")
                sid = json.loads(body)["id"]
                status, body = request(
                    conn, "POST", f"/v1/sandboxes/{sid}/exec", {"cmd": "echo hi"}
                )
                t2 = time.perf_counter()
                if status != 200 or json.loads(body)["stdout"] != "hi\n":
                    raise SystemExit(f"{bin_path}: echo hi answered {status}: {body!r}")
                request(conn, "DELETE", f"/v1/sandboxes/{sid}")
                if rnd >= 3:
                    res["create"].append((t1 - t0) * 1000)
                    res["exec"].append((t2 - t1) * 1000)
                    res["both"].append((t2 - t0) * 1000)
    finally:
        for _, proc, conn, _ in daemons:
            if args.pool:
                # Pooled sandboxes would outlive a daemon that is only stopped.
                try:
                    request(conn, "PUT", "/v1/templates/base/pool", {"size": 0})
                    wait_for_pool_empty(conn)
                except (OSError, SystemExit):
                    pass
            proc.terminate()
        for _, proc, _, _ in daemons:
            proc.wait()
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)
    med = statistics.median
    for bin_path, _, _, res in daemons:
        print(
            f"{bin_path}: create {med(res['create']):.3f} ms, first exec {med(res['exec']):.3f} ms, "
            f"both {med(res['both']):.3f} ms ({len(res['both'])} rounds)"
        )


def wait_for_pool_empty(conn):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        _, body = request(conn, "GET", "/v1/templates/base/pool")
        pool = json.loads(body)
        if pool["ready"] == 0 and pool["filling"] == 0:
            return
        time.sleep(0.05)


if __name__ == "__main__":
    main()
