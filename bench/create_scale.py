#!/usr/bin/env python3
"""How a create grows with the number of live sandboxes, step by step, and what idle sandboxes cost.

Starts `BIN serve` (isolate backend: run as root) on a temporary state directory, then for each level
(default 1 and 1000 live sandboxes): measures the host's and the agents' CPU while the sandboxes sit idle
for 10 s, then 15 times creates a sandbox, runs `true` in it (timed) and deletes it, and prints the
medians with the isolator's own step timings (`create_steps` in the sandbox's handle.json). At the first
level it also runs `--churn` create -> exec(`true`) -> delete cycles back to back and reports what one
cycle costs: wall time, the host's busy CPU, and the CPU of the daemon with everything it started and
reaped (sandboxes, `nft`), counted until 6 s after the last cycle (the daemon's network housekeeping
resets freed firewall slots in batches every 5 s).

    sudo bench/create_scale.py target/release/sandpit [--levels 1,1000]

For a before/after, run it once per binary (each beside its `sandpit-agent-static`), back to back.
docs/benchmarks.md ("Idle sandboxes and create cost at 1,000 live") has the last figures.
"""

import argparse
import glob
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def agents_cpu():
    """(total scheduled ns of every in-sandbox agent, how many there are)."""
    total, n = 0, 0
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                if not f.read().startswith(b"/.sandpit/sandpit\0agent"):
                    continue
        except OSError:
            continue
        n += 1
        for th in glob.glob(f"/proc/{p}/task/*/schedstat"):
            try:
                with open(th) as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError):
                pass
    return total, n


def host_ticks():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[0] + v[1] + v[2] + v[5] + v[6], v[3] + v[4]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bin")
    ap.add_argument("--levels", default="1,1000")
    ap.add_argument("--samples", type=int, default=15)
    ap.add_argument("--churn", type=int, default=150)
    args = ap.parse_args()
    levels = [int(x) for x in args.levels.split(",")]

    state = tempfile.mkdtemp(prefix="spb-", dir="/tmp")
    port = 7000 + os.getpid() % 1000
    daemon = subprocess.Popen(
        [args.bin, "serve", "--listen", f"127.0.0.1:{port}", "--backend", "isolate",
         "--state-dir", state],
        env={**os.environ, "SANDPIT_LOG": "warn"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        run(port, state, levels, args.samples, args.churn, daemon.pid)
    finally:
        daemon.terminate()
        daemon.wait()
        subprocess.run(["rm", "-rf", state], check=False)


def process_cpu_s(pid):
    """CPU seconds of `pid` and of the children it has reaped (utime, stime, cutime, cstime)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def run(port, state, levels, samples, churn, daemon_pid):
    deadline = time.time() + 60
    while not os.path.exists(f"{state}/api-key"):
        if time.time() > deadline:
            sys.exit("the daemon did not come up")
        time.sleep(0.2)
    time.sleep(0.5)
    with open(f"{state}/api-key") as f:
        key = f.read().strip()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    conn = http.client.HTTPConnection("127.0.0.1", port)

    def req(method, path, body=None):
        conn.request(method, path, body=json.dumps(body) if body is not None else None,
                     headers=headers)
        r = conn.getresponse()
        data = r.read()
        if r.status >= 300:
            sys.exit(f"{method} {path}: {r.status} {data[:300]!r}")
        return json.loads(data) if data else None

    def create_and_run():
        t = time.perf_counter()
        sid = req("POST", "/v1/sandboxes", {})["id"]
        t1 = time.perf_counter()
        req("POST", f"/v1/sandboxes/{sid}/exec", {"argv": ["true"]})
        return sid, (t1 - t) * 1000, (time.perf_counter() - t1) * 1000

    # The first create builds `base` (seconds, once).
    req("DELETE", f"/v1/sandboxes/{create_and_run()[0]}")
    live = []
    med = statistics.median
    for level in levels:
        while len(live) < level:
            live.append(create_and_run()[0])
        time.sleep(3)
        (a_ns, n), a_host = agents_cpu(), host_ticks()
        time.sleep(10)
        (b_ns, _), b_host = agents_cpu(), host_ticks()
        busy, idle = b_host[0] - a_host[0], b_host[1] - a_host[1]
        per_agent_us = (b_ns - a_ns) / 1e3 / 10 / max(n, 1)
        print(f"== {level} live, idle for 10 s: {per_agent_us:.0f} us of CPU per agent per second "
              f"({n} agents); host busy {100 * busy / max(busy + idle, 1):.0f}%")
        total, create, run_true, steps = [], [], [], {}
        for _ in range(samples):
            sid, c, r = create_and_run()
            total.append(c + r)
            create.append(c)
            run_true.append(r)
            with open(f"{state}/isolate/sandboxes/{sid}/handle.json") as f:
                for name, us in json.load(f).get("create_steps", []):
                    steps.setdefault(name, []).append(us / 1000)
            req("DELETE", f"/v1/sandboxes/{sid}")
        print(f"== {level} live: create + exec(true) {med(total):.2f} ms "
              f"(create {med(create):.2f}, exec {med(run_true):.2f})")
        for name, v in steps.items():
            print(f"   {name:55s} {med(v):7.3f} ms")
        if level == levels[0] and churn > 0:
            a_cpu, a_host, t = process_cpu_s(daemon_pid), host_ticks(), time.perf_counter()
            for _ in range(churn):
                req("DELETE", f"/v1/sandboxes/{create_and_run()[0]}")
            wall = time.perf_counter() - t
            time.sleep(6)
            b_cpu, b_host = process_cpu_s(daemon_pid), host_ticks()
            host_ms = (b_host[0] - a_host[0]) / os.sysconf("SC_CLK_TCK") * 1000
            print(f"== {level} live, churn of {churn} create -> exec(true) -> delete: "
                  f"{wall * 1000 / churn:.2f} ms wall per cycle; CPU per cycle: daemon and what it "
                  f"reaped {(b_cpu - a_cpu) * 1000 / churn:.2f} ms, host {host_ms / churn:.2f} ms")
        sys.stdout.flush()
    for sid in live:
        req("DELETE", f"/v1/sandboxes/{sid}")


if __name__ == "__main__":
    main()
