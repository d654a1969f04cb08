//! Network benchmarks (issue 16's targets), each beside its baseline in the same run:
//!
//! * create (and create + `echo hi`) on a daemon with sandbox networking beside a daemon started with
//!   `--network off`, interleaved one for one (target: ≤ +3 ms);
//! * TCP throughput from a sandbox to a test host beside the host to the same test host (target ≥ 50 %):
//!   the test host is a network namespace this benchmark makes (a veth from the host, an address in
//!   198.18.0.0/15, the range set aside for benchmarks), with a sink that reads to EOF and says `ok`;
//!   both sides run the same Python client, so only the path differs;
//! * HTTP requests per second through a preview URL (by host name, a public port; `wrk` on the host)
//!   beside `wrk` inside the sandbox straight to the same server on 127.0.0.1 (target ≥ 50 %). The
//!   server is Node's `http` module, single-threaded, answering `hello`.
//!
//! Needs root (the isolate backend, network namespaces); `wrk` comes from Debian (`bench/run` installs
//! it). Everything made on the host (namespace, veth, route, daemons) goes when the benchmark ends.
#![allow(clippy::cast_precision_loss, clippy::too_many_lines)]

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, TcpListener};
use std::os::fd::AsRawFd as _;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sandpit::{Client, Sandbox};

use crate::daemon::{Daemon, installed, is_root, start_daemon_with};
use crate::stats::{Row, ms, summarize};

/// Sends `argv[3]` bytes to `argv[1]:argv[2]` in 1 MiB writes, half-closes, waits for the sink's `ok`;
/// prints MiB/s.
const TCP_CLIENT: &str = r"
import socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
buf = memoryview(bytearray(1 << 20))
s = socket.create_connection((host, port))
t = time.perf_counter()
left = n
while left > 0:
    left -= s.send(buf[:min(left, len(buf))])
s.shutdown(socket.SHUT_WR)
s.recv(16)
print(n / (time.perf_counter() - t) / 1048576)
";

/// The HTTP server in the sandbox.
const HTTP_SERVER: &str =
    "require('http').createServer((q, s) => s.end('hello')).listen(8000, '127.0.0.1')";

const SINK_PORT: u16 = 5001;

/// A network namespace standing for a host on the internet, with a TCP sink on [`SINK_PORT`].
struct TestHost {
    ns: String,
    host_if: String,
    addr: Ipv4Addr,
    stop: Arc<AtomicBool>,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip").args(args).output().context("ip")?;
    if !out.status.success() {
        bail!("ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

impl TestHost {
    /// Removes what an earlier run that was killed (no `Drop`) left: namespaces `spb<pid>` and veths
    /// `spb<pid>h` of processes that no longer exist.
    fn sweep_stale() {
        let names = std::fs::read_dir("/run/netns")
            .into_iter()
            .flatten()
            .chain(std::fs::read_dir("/sys/class/net").into_iter().flatten())
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok());
        for name in names {
            let Some(pid) = name
                .strip_prefix("spb")
                .map(|r| r.trim_end_matches('h'))
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            if name.ends_with('h') {
                let _ = ip(&["link", "del", &name]);
            } else {
                let _ = ip(&["netns", "del", &name]);
            }
        }
    }

    fn start() -> anyhow::Result<Self> {
        Self::sweep_stale();
        let pid = std::process::id();
        // Names and addresses unique to this process: other runs (and the test suites) hold others.
        let k = pid % 3000;
        let host = Self {
            ns: format!("spb{pid}"),
            host_if: format!("spb{pid}h"),
            // The last 3,072 addresses of 198.18.0.0/15 (the escape suite uses the ones below).
            addr: Ipv4Addr::from(0xc613_f400 + k),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (l3, l4) = (k / 64, (k % 64) * 4);
        let (h, p) = (
            format!("10.79.{l3}.{}", l4 + 1),
            format!("10.79.{l3}.{}", l4 + 2),
        );
        let (ns, hif, a) = (
            host.ns.as_str(),
            host.host_if.as_str(),
            host.addr.to_string(),
        );
        ip(&["netns", "add", ns])?;
        ip(&[
            "link", "add", hif, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ])?;
        ip(&["addr", "add", &format!("{h}/30"), "dev", hif])?;
        ip(&["link", "set", hif, "up"])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        ip(&["-n", ns, "addr", "add", &format!("{p}/30"), "dev", "eth0"])?;
        ip(&["-n", ns, "link", "set", "eth0", "up"])?;
        ip(&["-n", ns, "route", "add", "default", "via", &h])?;
        ip(&["-n", ns, "addr", "add", &format!("{a}/32"), "dev", "lo"])?;
        ip(&[
            "route",
            "replace",
            &format!("{a}/32"),
            "via",
            &p,
            "dev",
            hif,
        ])?;
        host.spawn_sink()?;
        Ok(host)
    }

    /// A thread that enters the namespace (only itself: `setns` is per thread) and serves the sink.
    fn spawn_sink(&self) -> anyhow::Result<()> {
        let f = std::fs::File::open(format!("/run/netns/{}", self.ns))?;
        let stop = self.stop.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // SAFETY: setns on this thread with a namespace descriptor we own.
            if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                let _ = tx.send(Err(std::io::Error::last_os_error()));
                return;
            }
            drop(f);
            let l = match TcpListener::bind(("0.0.0.0", SINK_PORT)) {
                Ok(l) => l,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let _ = l.set_nonblocking(true);
            let _ = tx.send(Ok(()));
            while !stop.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((mut c, _)) => {
                        let _ = c.set_nonblocking(false);
                        std::thread::spawn(move || {
                            let mut buf = vec![0u8; 1 << 20];
                            while matches!(c.read(&mut buf), Ok(n) if n > 0) {}
                            let _ = c.write_all(b"ok");
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        rx.recv()?.context("the test host's sink")
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Deleting the host end takes the pair (and the route) with it, whatever holds the namespace.
        let _ = ip(&["link", "del", &self.host_if]);
        let _ = ip(&["netns", "del", &self.ns]);
    }
}

/// Runs the Python client from the host; MiB/s.
fn host_throughput(addr: Ipv4Addr, bytes: u64) -> anyhow::Result<f64> {
    let out = Command::new("python3")
        .args(["-c", TCP_CLIENT, &addr.to_string()])
        .args([SINK_PORT.to_string(), bytes.to_string()])
        .output()?;
    if !out.status.success() {
        bail!("host client: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

async fn sandbox_throughput(sbx: &Sandbox, addr: Ipv4Addr, bytes: u64) -> anyhow::Result<f64> {
    let out = sbx
        .exec(
            "python3",
            [
                "-c".to_owned(),
                TCP_CLIENT.to_owned(),
                addr.to_string(),
                SINK_PORT.to_string(),
                bytes.to_string(),
            ],
        )
        .await?;
    if out.exit_code() != 0 {
        bail!("sandbox client: {} {}", out.stdout(), out.stderr());
    }
    Ok(out.stdout().trim().parse()?)
}

/// `Requests/sec:` from wrk's output.
fn wrk_rate(out: &str) -> anyhow::Result<f64> {
    out.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|r| r.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk's output: {out}"))
}

fn wrk_args(secs: u64) -> Vec<String> {
    ["-t1", "-c16", &format!("-d{secs}s")]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}

async fn create_rows(
    with: &Client,
    without: &Client,
    n: usize,
    group: &str,
) -> anyhow::Result<Vec<Row>> {
    // The first create of each daemon builds its `base` template: not measured.
    for c in [with, without] {
        Sandbox::create().client(c).await?.kill().await?;
    }
    let (mut on, mut off, mut tti_on, mut tti_off) = (vec![], vec![], vec![], vec![]);
    for _ in 0..n {
        for (c, create, tti) in [
            (with, &mut on, &mut tti_on),
            (without, &mut off, &mut tti_off),
        ] {
            let t = Instant::now();
            let sbx = Sandbox::create().client(c).await?;
            create.push(ms(t.elapsed()));
            let out = sbx.exec("echo", ["hi"]).await?;
            tti.push(ms(t.elapsed()));
            if out.stdout() != "hi\n" {
                bail!("echo hi gave {:?}", out.stdout());
            }
            sbx.kill().await?;
            // The kernel tears a network namespace (and a veth) down after the sandbox is gone, holding
            // locks a new namespace needs: without a pause that deferred work lands on the *other*
            // daemon's next create (networking-on creates measured 11 ms faster than networking-off).
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
    }
    let diff = |a: &[f64], b: &[f64]| summarize(a).median - summarize(b).median;
    Ok(vec![
        Row::new(group, "create, sandbox networking on", "ms", summarize(&on))
            .against("create, daemon --network off", summarize(&off))
            .note(format!(
                "{:+.2} ms; target ≤ +3 ms (veth, addresses, default policy)",
                diff(&on, &off)
            )),
        Row::new(
            group,
            "create + exec(\"echo hi\"), networking on",
            "ms",
            summarize(&tti_on),
        )
        .against("the same, --network off", summarize(&tti_off))
        .note(format!("{:+.2} ms", diff(&tti_on, &tti_off))),
    ])
}

pub async fn run(bin: &Path, quick: bool) -> anyhow::Result<Vec<Row>> {
    if !is_root() {
        eprintln!("network benchmarks: skipped (they need root: isolated sandboxes, namespaces)");
        return Ok(Vec::new());
    }
    let group = "network";
    let mut rows = Vec::new();
    let on: Daemon = start_daemon_with(bin, &[])?;
    let with = Client::new(&on.url, &on.key)?;
    {
        let off = start_daemon_with(bin, &["--network", "off"])?;
        let without = Client::new(&off.url, &off.key)?;
        rows.extend(create_rows(&with, &without, if quick { 3 } else { 30 }, group).await?);
    }

    // TCP throughput: sandbox → test host beside host → test host, interleaved.
    let host = TestHost::start().context("the test host namespace")?;
    let sbx = Sandbox::create().client(&with).await?;
    let bytes: u64 = if quick { 16 << 20 } else { 1 << 30 };
    let (mut from_host, mut from_sandbox) = (vec![], vec![]);
    for _ in 0..if quick { 1 } else { 5 } {
        let a = host.addr;
        from_host.push(tokio::task::spawn_blocking(move || host_throughput(a, bytes)).await??);
        from_sandbox.push(sandbox_throughput(&sbx, host.addr, bytes).await?);
    }
    rows.push(
        Row::new(
            group,
            &format!("TCP {} MiB sandbox → test host", bytes >> 20),
            "MiB/s",
            summarize(&from_sandbox),
        )
        .against("host → the same test host", summarize(&from_host))
        .note("target: ratio ≥ 0.5; veth + nftables policy + NAT on the way"),
    );
    drop(host);

    // HTTP requests/s through a preview URL beside straight to the server inside the sandbox.
    if installed("wrk") {
        sbx.commands()
            .run(format!("node -e \"{HTTP_SERVER}\" >/dev/null 2>&1 &"))
            .await?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while sbx
            .commands()
            .run("python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", 8000))'")
            .await?
            .exit_code
            != 0
        {
            if Instant::now() > deadline {
                bail!("the HTTP server in the sandbox did not come up");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        sbx.expose_port(8000, true).await?;
        let preview_host = sbx.get_host(8000);
        let secs = if quick { 1 } else { 5 };
        let daemon_port = on.url.rsplit(':').next().unwrap_or_default().to_owned();
        let (mut direct, mut preview) = (vec![], vec![]);
        for _ in 0..if quick { 1 } else { 3 } {
            let r = sbx
                .commands()
                .run(format!(
                    "wrk {} http://127.0.0.1:8000/",
                    wrk_args(secs).join(" ")
                ))
                .timeout_secs(secs + 30)
                .await?;
            direct.push(wrk_rate(&r.stdout)?);
            let out = tokio::task::spawn_blocking({
                let (h, p) = (preview_host.clone(), daemon_port.clone());
                move || {
                    Command::new("wrk")
                        .args(wrk_args(secs))
                        .args([
                            "-H",
                            &format!("Host: {h}"),
                            &format!("http://127.0.0.1:{p}/"),
                        ])
                        .output()
                }
            })
            .await??;
            let text = String::from_utf8_lossy(&out.stdout);
            if text.contains("Non-2xx") {
                bail!("wrk through the preview URL got errors: {text}");
            }
            preview.push(wrk_rate(&text)?);
        }
        rows.push(
            Row::new(
                group,
                "HTTP GET through a preview URL (wrk on the host, 16 connections)",
                "req/s",
                summarize(&preview),
            )
            .against(
                "wrk inside the sandbox to 127.0.0.1:8000",
                summarize(&direct),
            )
            .note("target: ratio ≥ 0.5; server: Node http, one thread"),
        );
    } else {
        eprintln!(
            "network benchmarks: HTTP rows skipped: wrk is not installed (apt-get install wrk)"
        );
    }
    sbx.kill().await?;
    Ok(rows)
}
