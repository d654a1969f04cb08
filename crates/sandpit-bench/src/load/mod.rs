//! `sandpit-bench load`: many sandboxes, each with several streaming commands running at once, for a
//! fixed time; every byte every command wrote is checked against what it must have written.
//!
//! The generator starts its own `sandpit serve` (temporary state dir, free port, its own key) unless
//! `--url`/`--key` name one, creates the sandboxes at once through the Rust SDK, and keeps `--streams`
//! commands running in each: a slot starts a command, streams its output (over SSE with
//! `CommandHandle::events`, whose events carry `seq`, or over the WebSocket with `Commands::spawn`,
//! alternately by slot), checks it when it exits, and starts the next. At the end it deletes every
//! sandbox (also on error and on Ctrl-C / SIGTERM: sandboxes outlive the daemon by design, so a
//! generator that forgot them would leave them running), stops the daemon, prints a summary and writes
//! it as JSON. Any error or any byte out of place fails the run.

// Figures in the report are counts, bytes and milliseconds, far below 2^52.
#![allow(clippy::cast_precision_loss)]

mod stream;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt as _;
use sandpit::{Client, ProcessEvent, ProcessInfo, ProcessStatus, Sandbox};
use serde_json::{Value, json};
use tokio::sync::watch;

use self::stream::{Spec, compare};
use crate::stats::ms;

/// How the slots stream their commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// Server-Sent Events (`CommandHandle::events`).
    Sse,
    /// The WebSocket session (`Commands::spawn`).
    Ws,
    /// Even slots SSE, odd slots WebSocket.
    Mixed,
}

#[derive(Debug, clap::Args)]
// A later flag wins, so that `scripts/load.sh --out X` overrides what the script passes.
#[command(
    args_override_self = true,
    after_help = "Example:\n  sandpit-bench load --sandboxes 100 --streams 10 --duration 10s \
                        --bin target/debug/sandpit --out bench/results/load-quick.json"
)]
pub struct LoadArgs {
    /// Sandboxes, created at once.
    #[arg(long, default_value_t = 100)]
    sandboxes: usize,
    /// Streaming commands kept running in each sandbox.
    #[arg(long, default_value_t = 10)]
    streams: usize,
    /// How long the streams run (`10s`, `2m`, `500ms`, or seconds): commands are cut to end by then
    /// (one late under load still finishes and is checked).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// The `sandpit` binary to start the daemon with (ignored with `--url`).
    #[arg(long, default_value = "target/release/sandpit")]
    bin: PathBuf,
    /// Use this daemon instead of starting one (then RSS and per-sandbox memory are not measured).
    #[arg(long, requires = "key")]
    url: Option<String>,
    /// The API key of `--url`.
    #[arg(long, requires = "url")]
    key: Option<String>,
    /// Backend of the daemon this starts.
    #[arg(long, default_value = "isolate")]
    backend: String,
    /// Pause between two bursts of lines of one command.
    #[arg(long, default_value_t = 500)]
    tick_ms: u64,
    /// Lines a command writes per tick (each line about 50 bytes, one `write` each).
    #[arg(long, default_value_t = 2)]
    lines_per_tick: u32,
    /// Ticks per command: a command lasts about `ticks × tick-ms`.
    #[arg(long, default_value_t = 40)]
    ticks: u32,
    /// The first commands start spread over this long: a thousand spawns in the same instant would
    /// measure a burst, not a steady load. Latencies of this first wave are reported apart.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    ramp: Duration,
    /// A command still running this long after its expected length counts as hung.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    hang_after: Duration,
    /// How commands are streamed.
    #[arg(long, value_enum, default_value = "mixed")]
    transport: Transport,
    /// Where to write the JSON summary.
    #[arg(long)]
    out: Option<PathBuf>,
    /// A name for this run, written into the JSON (e.g. `quick`, `long`).
    #[arg(long, default_value = "")]
    profile: String,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = num
        .parse()
        .map_err(|_| format!("bad duration {s:?}: expected e.g. 10s, 2m, 500ms"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("bad duration unit {unit:?}: use ms, s or m")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// Everything counted during a run.
#[derive(Debug, Default)]
struct Record {
    started: u64,
    /// Commands started, by transport (`sse`, `ws`), finished or not.
    starts: BTreeMap<&'static str, u64>,
    /// Commands cut short by a stop (Ctrl-C), neither checked nor counted as failed.
    cancelled: u64,
    ok: u64,
    failed: u64,
    by_transport: BTreeMap<&'static str, [u64; 2]>,
    stdout_bytes: u64,
    stderr_bytes: u64,
    lines: u64,
    /// Expected bytes from the first divergence on, over all mismatched streams.
    bad_bytes: u64,
    extra_bytes: u64,
    /// Bytes reported by `lost` events or `lost_bytes`.
    lost_bytes: u64,
    /// Latencies of each slot's later commands, and of its first (started during the ramp).
    steady: Latencies,
    first_wave: Latencies,
    errors: BTreeMap<String, (u64, Vec<String>)>,
}

impl Record {
    fn error(&mut self, kind: &str, example: impl Into<String>) {
        let e = self.errors.entry(kind.to_owned()).or_default();
        e.0 += 1;
        if e.1.len() < 3 {
            e.1.push(example.into());
        }
    }

    fn error_count(&self) -> u64 {
        self.errors.values().map(|e| e.0).sum()
    }
}

/// Latency samples of one group of commands, in milliseconds.
#[derive(Debug, Default)]
struct Latencies {
    /// Start request sent → first stdout byte received.
    ttfb: Vec<f64>,
    /// Start request sent → `exited` received.
    rtt: Vec<f64>,
    /// The round trip minus the command's nominal length (ticks × tick): what sandpit added.
    overhead: Vec<f64>,
    /// The process's end as the agent recorded it (`ended_at`) → `exited` received.
    exit_delivery: Vec<f64>,
}

impl Latencies {
    fn json(&self) -> Value {
        json!({
            "time_to_first_byte": percentiles(&self.ttfb),
            "command_round_trip": percentiles(&self.rtt),
            "round_trip_minus_nominal_length": percentiles(&self.overhead),
            "exit_to_client": percentiles(&self.exit_delivery),
        })
    }
}

/// What the slots share.
struct Ctx {
    rec: Mutex<Record>,
    stop: watch::Sender<bool>,
    /// When slots stop starting commands; set once the sandboxes are ready.
    deadline: OnceLock<Instant>,
    ticks: u32,
    lines_per_tick: u32,
    tick_ms: u64,
    ramp: Duration,
    hang_after: Duration,
    transport: Transport,
}

impl Ctx {
    fn rec(&self) -> std::sync::MutexGuard<'_, Record> {
        self.rec
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    async fn cancelled(&self) {
        let mut rx = self.stop.subscribe();
        let _ = rx.wait_for(|v| *v).await;
    }
}

/// A `sandpit serve` this run started; its sandboxes must be deleted before it is stopped.
struct Daemon {
    child: Child,
    bin: PathBuf,
    port: u16,
    key: String,
    backend: String,
    state: tempfile::TempDir,
}

impl Daemon {
    fn start(bin: &Path, backend: &str) -> anyhow::Result<Self> {
        // A short path: agent sockets live under the state dir and unix socket paths are limited.
        let state = tempfile::Builder::new().prefix("spl-").tempdir_in("/tmp")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut key = [0u8; 16];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
        let key = key.iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        });
        let mut d = Self {
            child: spawn_serve(bin, backend, port, &key, state.path())?,
            bin: bin.to_owned(),
            port,
            key,
            backend: backend.to_owned(),
            state,
        };
        d.wait_ready()?;
        Ok(d)
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(st) = self.child.try_wait()? {
                bail!(
                    "sandpit serve exited ({st}) before listening; log: {}",
                    tail(&self.log_path(), 20)
                );
            }
            if Instant::now() > deadline {
                bail!("sandpit serve did not come up on {}", self.url());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn log_path(&self) -> PathBuf {
        self.state.path().join("daemon.log")
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Starts it again on the same state dir: it re-attaches to the sandboxes still running, so that
    /// they can be deleted after a crash.
    fn restart(&mut self) -> anyhow::Result<()> {
        let _ = self.child.wait();
        self.child = spawn_serve(
            &self.bin,
            &self.backend,
            self.port,
            &self.key,
            self.state.path(),
        )?;
        self.wait_ready()
    }

    /// SIGTERM, then SIGKILL after 20 s.
    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The init pid and the cgroup directories of every sandbox with a directory in the state dir.
    fn sandbox_handles(&self) -> Vec<(i32, Vec<PathBuf>)> {
        handles_in(self.state.path())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.stop();
        }
    }
}

fn spawn_serve(
    bin: &Path,
    backend: &str,
    port: u16,
    key: &str,
    state: &Path,
) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(state.join("daemon.log"))?;
    Command::new(bin)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--backend", backend, "--state-dir"])
        .arg(state)
        .env("SANDPIT_API_KEY", key)
        .env("SANDPIT_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))
}

fn collect_paths(v: &Value, out: &mut Vec<PathBuf>) {
    match v {
        Value::String(s) if s.starts_with('/') => out.push(PathBuf::from(s)),
        Value::Array(a) => a.iter().for_each(|x| collect_paths(x, out)),
        Value::Object(o) => o.values().for_each(|x| collect_paths(x, out)),
        _ => {}
    }
}

fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// User + system CPU seconds of a process (`/proc/PID/stat`; 100 ticks a second on Linux).
pub(crate) fn cpu_secs(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // Fields after the command: state is [0], utime [11], stime [12].
    (f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)) as f64 / 100.0
}

/// (busy, total) jiffies of the whole host.
fn host_jiffies() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = s
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let total: u64 = v.iter().sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

fn pss_kib(pid: i32) -> u64 {
    let mut s = String::new();
    let _ = std::fs::File::open(format!("/proc/{pid}/smaps_rollup"))
        .and_then(|mut f| f.read_to_string(&mut s));
    s.lines()
        .find(|l| l.starts_with("Pss:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Memory charged to a sandbox's cgroup (v2 `memory.current`, v1 `memory.usage_in_bytes`).
fn cgroup_bytes(dirs: &[PathBuf]) -> Option<u64> {
    dirs.iter().find_map(|d| {
        ["memory.current", "memory.usage_in_bytes"]
            .iter()
            .find_map(|f| std::fs::read_to_string(d.join(f)).ok()?.trim().parse().ok())
    })
}

/// `sandpit_http_requests_total` by (method, route, status).
async fn scrape(client: &reqwest::Client, url: &str, key: &str) -> BTreeMap<String, u64> {
    let Ok(resp) = client
        .get(format!("{url}/metrics"))
        .bearer_auth(key)
        .send()
        .await
    else {
        return BTreeMap::new();
    };
    let text = resp.text().await.unwrap_or_default();
    text.lines()
        .filter_map(|l| l.strip_prefix("sandpit_http_requests_total"))
        .filter_map(|l| {
            let (labels, n) = l.rsplit_once(' ')?;
            Some((labels.to_owned(), n.parse().ok()?))
        })
        .collect()
}

fn percentiles(v: &[f64]) -> Value {
    if v.is_empty() {
        return Value::Null;
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let pick =
        |q: f64| (v[(((v.len() - 1) as f64) * q).round() as usize] * 1000.0).round() / 1000.0;
    json!({"n": v.len(), "p50": pick(0.5), "p95": pick(0.95), "p99": pick(0.99), "max": pick(1.0)})
}

/// What one command produced, as received.
#[derive(Debug, Default)]
struct Outcome {
    ttfb: Option<Duration>,
    rtt: Duration,
    /// When the `exited` event arrived (wall clock, to compare with the agent's `ended_at`).
    exited_at: Option<std::time::SystemTime>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    info: Option<ProcessInfo>,
    lost: u64,
    /// The first `seq` that did not follow its predecessor (SSE only: the WebSocket API of the SDK
    /// does not hand out seqs).
    seq_break: Option<String>,
    last_seq: u64,
    /// The text the SDK passed to the callbacks, concatenated (WebSocket only).
    callback_stdout: Option<String>,
}

type Failure = (&'static str, String);

async fn run_sse(sbx: &Sandbox, spec: &Spec) -> Result<Outcome, Failure> {
    let t0 = Instant::now();
    let h = sbx
        .commands()
        .run(spec.command())
        .background()
        .await
        .map_err(|e| ("start", format!("{}: {e}", spec.prefix)))?;
    let mut events = h.events(1);
    let mut o = Outcome::default();
    while let Some(ev) = events.next().await {
        let ev = ev.map_err(|e| ("stream", format!("{}: {e}", spec.prefix)))?;
        let (seq, data, out) = match ev {
            ProcessEvent::Stdout { seq, data } => (seq, data, true),
            ProcessEvent::Stderr { seq, data } => (seq, data, false),
            ProcessEvent::Lost(l) => {
                o.lost += l.bytes;
                continue;
            }
            ProcessEvent::Exited(info) => {
                o.exited_at = Some(std::time::SystemTime::now());
                o.info = Some(info);
                break;
            }
            ProcessEvent::Started(_) => continue,
        };
        if seq != o.last_seq + 1 && o.seq_break.is_none() {
            o.seq_break = Some(format!("seq {seq} after {}", o.last_seq));
        }
        o.last_seq = seq;
        if out {
            o.ttfb.get_or_insert_with(|| t0.elapsed());
            o.stdout.extend_from_slice(&data);
        } else {
            o.stderr.extend_from_slice(&data);
        }
    }
    o.rtt = t0.elapsed();
    if o.info.is_none() {
        return Err((
            "stream",
            format!("{}: the stream ended without an exited event", spec.prefix),
        ));
    }
    Ok(o)
}

async fn run_ws(sbx: &Sandbox, spec: &Spec) -> Result<Outcome, Failure> {
    let t0 = Instant::now();
    let first = Arc::new(OnceLock::new());
    let text = Arc::new(Mutex::new(String::new()));
    let (f, t) = (first.clone(), text.clone());
    let session = sbx
        .commands()
        .spawn(spec.command())
        .on_stdout(move |s| {
            f.get_or_init(|| t0.elapsed());
            t.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push_str(s);
        })
        .await
        .map_err(|e| ("start", format!("{}: {e}", spec.prefix)))?;
    let r = session
        .wait()
        .await
        .map_err(|e| ("stream", format!("{}: {e}", spec.prefix)))?;
    let rtt = t0.elapsed();
    let exited_at = Some(std::time::SystemTime::now());
    let callback = std::mem::take(
        &mut *text
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    Ok(Outcome {
        ttfb: first.get().copied(),
        rtt,
        exited_at,
        lost: r.info.lost_bytes,
        last_seq: r.info.last_seq,
        stdout: r.stdout_bytes,
        stderr: r.stderr_bytes,
        info: Some(r.info),
        seq_break: None,
        callback_stdout: Some(callback),
    })
}

/// Checks one finished command and records it.
#[allow(clippy::too_many_lines)] // one list of checks, read top to bottom
fn check(
    ctx: &Ctx,
    spec: &Spec,
    transport: &'static str,
    first_wave: bool,
    res: Result<Outcome, Failure>,
) {
    let mut rec = ctx.rec();
    let o = match res {
        Ok(o) => o,
        Err((kind, msg)) => {
            rec.failed += 1;
            rec.by_transport.entry(transport).or_default()[1] += 1;
            rec.error(kind, format!("[{transport}] {msg}"));
            return;
        }
    };
    let info = o.info.as_ref().expect("checked by the runners");
    let p = &spec.prefix;
    let mut problems: Vec<(&str, String)> = Vec::new();
    if info.status != ProcessStatus::Exited || info.exit_code != Some(0) {
        problems.push((
            "exit",
            format!(
                "{p}: status {:?}, exit code {:?}, error {:?}, stderr {:?}",
                info.status,
                info.exit_code,
                info.error,
                String::from_utf8_lossy(&o.stderr[o.stderr.len().saturating_sub(200)..])
            ),
        ));
    }
    let lost = o.lost.max(info.lost_bytes);
    if lost > 0 {
        rec.lost_bytes += lost;
        problems.push(("lost", format!("{p}: {lost} bytes reported lost")));
    }
    if let Some(s) = &o.seq_break {
        problems.push(("seq", format!("{p}: {s}")));
    }
    if info.last_seq != o.last_seq {
        problems.push((
            "seq",
            format!(
                "{p}: last seq received {}, the agent says {}",
                o.last_seq, info.last_seq
            ),
        ));
    }
    let (want_out, want_err) = (spec.stdout(), spec.stderr());
    for (what, want, got, counted) in [
        ("stdout", &want_out, &o.stdout, info.stdout_bytes),
        ("stderr", &want_err, &o.stderr, info.stderr_bytes),
    ] {
        if let Some(m) = compare(what, want, got) {
            rec.bad_bytes += m.bad_bytes;
            rec.extra_bytes += m.extra_bytes;
            problems.push((
                if what == "stdout" {
                    "stdout_mismatch"
                } else {
                    "stderr_mismatch"
                },
                format!("{p}: {}", m.detail),
            ));
        }
        if counted != got.len() as u64 {
            problems.push((
                "count_mismatch",
                format!(
                    "{p}: {what}: received {} bytes, the agent counted {counted}",
                    got.len()
                ),
            ));
        }
    }
    if let Some(cb) = &o.callback_stdout {
        if let Some(m) = compare("stdout callbacks", &want_out, cb.as_bytes()) {
            problems.push(("callback_text", format!("{p}: {}", m.detail)));
        }
    }
    if problems.is_empty() {
        rec.ok += 1;
        rec.by_transport.entry(transport).or_default()[0] += 1;
        rec.stdout_bytes += want_out.len() as u64;
        rec.stderr_bytes += want_err.len() as u64;
        rec.lines += spec.lines();
        let nominal = Duration::from_millis(u64::from(spec.ticks.saturating_sub(1)) * spec.tick_ms);
        let delivery = info
            .ended_at
            .as_deref()
            .and_then(parse_rfc3339)
            .zip(o.exited_at)
            .and_then(|(end, got)| got.duration_since(end).ok());
        let l = if first_wave {
            &mut rec.first_wave
        } else {
            &mut rec.steady
        };
        if let Some(t) = o.ttfb {
            l.ttfb.push(ms(t));
        }
        l.rtt.push(ms(o.rtt));
        l.overhead.push(ms(o.rtt.saturating_sub(nominal)));
        if let Some(d) = delivery {
            l.exit_delivery.push(ms(d));
        }
    } else {
        rec.failed += 1;
        rec.by_transport.entry(transport).or_default()[1] += 1;
        for (kind, msg) in problems {
            rec.error(kind, format!("[{transport}] {msg}"));
        }
    }
}

/// One stream slot: commands one after the other until the deadline (or a stop).
async fn slot(ctx: Arc<Ctx>, sbx: Sandbox, si: usize, k: usize, g: usize, total: usize) {
    // Starting all slots in the same instant would measure a burst of a thousand spawns, and then
    // the commands would end (and restart) in waves. Spread the first starts over the ramp and the
    // first commands' lengths over one command length: from then on commands start at an even rate.
    let delay = ctx.ramp.mul_f64(g as f64 / total.max(1) as f64);
    tokio::select! {
        () = tokio::time::sleep(delay) => {}
        () = ctx.cancelled() => return,
    }
    let transport = match (ctx.transport, g % 2) {
        (Transport::Ws, _) | (Transport::Mixed, 1) => Transport::Ws,
        _ => Transport::Sse,
    };
    let deadline = *ctx.deadline.get().expect("set before the slots start");
    let mut n = 0u64;
    while !ctx.stopped() {
        // A command is cut short to end by the deadline, so the run lasts `--duration`, not up to a
        // command length more. Past the first, none starts with less than a quarter of a command to
        // go: a stream of ever shorter commands would end the run in a burst of spawns.
        let left = deadline
            .saturating_duration_since(Instant::now())
            .as_millis() as u64;
        let fit = (left / ctx.tick_ms.max(1)) as u32;
        if fit == 0 || (n > 0 && fit < (ctx.ticks / 4).max(1)) {
            break;
        }
        n += 1;
        let ticks = if n == 1 {
            (u64::from(ctx.ticks) * (g as u64 + 1) / total as u64).max(1) as u32
        } else {
            ctx.ticks
        }
        .min(fit);
        let spec = Spec::new(si, k, n, ticks, ctx.lines_per_tick, ctx.tick_ms);
        // A command that has not ended long after its length is a hang, not a slow machine.
        let limit = Duration::from_millis(u64::from(ticks) * ctx.tick_ms) + ctx.hang_after;
        let name = if transport == Transport::Ws {
            "ws"
        } else {
            "sse"
        };
        {
            let mut rec = ctx.rec();
            rec.started += 1;
            *rec.starts.entry(name).or_default() += 1;
        }
        let run = async {
            match transport {
                Transport::Ws => run_ws(&sbx, &spec).await,
                _ => run_sse(&sbx, &spec).await,
            }
        };
        let res = tokio::select! {
            r = tokio::time::timeout(limit, run) => r.unwrap_or_else(|_| {
                Err(("hang", format!("{}: not ended after {} s", spec.prefix, limit.as_secs())))
            }),
            () = ctx.cancelled() => {
                ctx.rec().cancelled += 1;
                return;
            }
        };
        check(&ctx, &spec, name, n == 1, res);
    }
}

/// Stops the run on Ctrl-C or SIGTERM (cleanup still runs).
fn watch_signals(ctx: &Arc<Ctx>, interrupted: &Arc<AtomicBool>) {
    let (ctx, interrupted) = (ctx.clone(), interrupted.clone());
    tokio::spawn(async move {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("load: interrupted; deleting the sandboxes");
        interrupted.store(true, Ordering::SeqCst);
        let _ = ctx.stop.send(true);
    });
}

/// Runs the load test; `Ok(false)` when it ran and failed (the summary says why).
pub fn main(args: &LoadArgs) -> anyhow::Result<bool> {
    if args.sandboxes == 0 || args.streams == 0 || args.ticks == 0 || args.lines_per_tick == 0 {
        bail!("--sandboxes, --streams, --ticks and --lines-per-tick must be at least 1");
    }
    let rt = tokio::runtime::Runtime::new()?;
    let report = rt.block_on(run(args))?;
    let text = serde_json::to_string_pretty(&report)?;
    if let Some(out) = &args.out {
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(out, format!("{text}\n"))?;
        eprintln!("load: wrote {}", out.display());
    }
    print_summary(&report);
    Ok(report["passed"] == true)
}

#[allow(clippy::too_many_lines)] // one scenario, read top to bottom
async fn run(args: &LoadArgs) -> anyhow::Result<Value> {
    let run_id = format!("{}-{}", std::process::id(), now_secs());
    let mut daemon = if args.url.is_some() {
        None
    } else {
        if args.backend == "isolate" && !crate::daemon::is_root() {
            bail!("the isolate backend needs root (or pass --backend process)");
        }
        Some(Daemon::start(&args.bin, &args.backend)?)
    };
    let (url, key) = match (&args.url, &daemon) {
        (Some(u), _) => (u.clone(), args.key.clone().unwrap_or_default()),
        (None, Some(d)) => (d.url(), d.key.clone()),
        (None, None) => unreachable!(),
    };
    let client = Client::new(&url, &key)?;
    let http = reqwest::Client::new();
    let ctx = Arc::new(Ctx {
        rec: Mutex::new(Record::default()),
        stop: watch::channel(false).0,
        deadline: OnceLock::new(),
        ticks: args.ticks,
        lines_per_tick: args.lines_per_tick,
        tick_ms: args.tick_ms,
        ramp: args.ramp,
        hang_after: args.hang_after,
        transport: args.transport,
    });
    let interrupted = Arc::new(AtomicBool::new(false));
    watch_signals(&ctx, &interrupted);
    let created: Arc<Mutex<Vec<(usize, Sandbox)>>> = Arc::default();
    let mut report = json!({
        "profile": args.profile,
        "sandboxes": args.sandboxes,
        "streams_per_sandbox": args.streams,
        "duration_s": args.duration.as_secs_f64(),
        "transport": format!("{:?}", args.transport).to_lowercase(),
        "pacing": {
            "tick_ms": args.tick_ms,
            "lines_per_tick": args.lines_per_tick,
            "ticks_per_command": args.ticks,
            "command_s": (u64::from(args.ticks) * args.tick_ms) as f64 / 1000.0,
            "ramp_s": args.ramp.as_secs_f64(),
            "stdout_bytes_per_line_avg": 49.5,
            "writes": "one write(2) per stdout line, one stderr line per tick; no fork per line",
            "nominal_stdout_lines_per_s_all_streams": (args.sandboxes * args.streams) as f64 * f64::from(args.lines_per_tick) * 1000.0 / args.tick_ms as f64,
            "nominal_command_starts_per_s": (args.sandboxes * args.streams) as f64 * 1000.0 / (u64::from(args.ticks) * args.tick_ms) as f64,
        },
        "daemon": if daemon.is_some() { format!("started: {} serve --backend {}", args.bin.display(), args.backend) } else { format!("given: {url}") },
        "host": {
            "cpus": std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            "loadavg_at_start": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        },
    });

    // The scenario runs in its own task so that whatever happens in it (an error, a panic, Ctrl-C),
    // the cleanup below still runs.
    let task = {
        let (ctx, created, client, http) =
            (ctx.clone(), created.clone(), client.clone(), http.clone());
        let (url, key, run_id) = (url.clone(), key.clone(), run_id.clone());
        let (n, s, duration) = (args.sandboxes, args.streams, args.duration);
        let daemon_pid = daemon.as_ref().map(|d| d.child.id());
        let state_dir = daemon.as_ref().map(|d| d.state.path().to_owned());
        tokio::spawn(async move {
            scenario(
                &ctx, &created, &client, &http, &url, &key, &run_id, n, s, duration, daemon_pid,
                state_dir,
            )
            .await
        })
    };
    let mut fatal: Option<String> = None;
    match task.await {
        Ok(Ok(v)) => merge(&mut report, v),
        Ok(Err(e)) => fatal = Some(format!("{e:#}")),
        Err(e) => fatal = Some(format!("the scenario panicked: {e}")),
    }

    // Cleanup: every sandbox this run created goes, whatever happened.
    let _ = ctx.stop.send(true);
    let mut cleanup = serde_json::Map::new();
    if let Some(d) = daemon.as_mut() {
        if !d.alive() {
            ctx.rec().error(
                "daemon_exit",
                format!(
                    "the daemon exited during the run; log tail: {}",
                    tail(&d.log_path(), 10)
                ),
            );
            if let Err(e) = d.restart() {
                ctx.rec()
                    .error("cleanup", format!("cannot restart the daemon: {e:#}"));
            }
        }
    }
    let t = Instant::now();
    let sandboxes: Vec<(usize, Sandbox)> = std::mem::take(
        &mut *created
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    let deleted = delete_all(&ctx, sandboxes).await;
    // Anything created by a request that was cut short (Ctrl-C during the creates) is found by its
    // metadata.
    let leftovers = Sandbox::list()
        .client(&client)
        .metadata("sandpit-load", &run_id)
        .send()
        .await;
    match leftovers {
        Ok(list) => {
            if !list.is_empty() && !interrupted.load(Ordering::SeqCst) {
                // Outside a Ctrl-C, every create either failed or handed back its sandbox.
                ctx.rec().error(
                    "orphan_sandbox",
                    format!(
                        "{} sandboxes of this run that no create returned",
                        list.len()
                    ),
                );
            }
            for info in &list {
                let r = Sandbox::get(&client, info.id.clone()).await;
                if let Ok(sbx) = r {
                    if let Err(e) = sbx.kill().await {
                        ctx.rec()
                            .error("delete", format!("leftover {}: {e}", info.id));
                    }
                }
            }
            cleanup.insert("leftovers_found_by_metadata".into(), json!(list.len()));
        }
        Err(e) => ctx
            .rec()
            .error("cleanup", format!("cannot list sandboxes: {e}")),
    }
    cleanup.insert("deleted".into(), json!(deleted.0));
    cleanup.insert("delete_ms".into(), percentiles(&deleted.1));
    cleanup.insert(
        "delete_all_s".into(),
        json!((t.elapsed().as_secs_f64() * 1000.0).round() / 1000.0),
    );
    if let Some(d) = daemon.as_mut() {
        // The isolate backend keeps one directory per sandbox; none may be left, nor any process.
        let left = d.sandbox_handles();
        let alive: Vec<i32> = left
            .iter()
            .map(|h| h.0)
            .filter(|&p| p > 0 && Path::new(&format!("/proc/{p}")).exists())
            .collect();
        if !left.is_empty() {
            ctx.rec().error(
                "cleanup",
                format!(
                    "{} sandbox directories left in the state dir, init pids alive: {alive:?}",
                    left.len()
                ),
            );
        }
        cleanup.insert("sandbox_dirs_left".into(), json!(left.len()));
        let daemon_log_warnings: Vec<String> = std::fs::read_to_string(d.log_path())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .take(10)
            .map(str::to_owned)
            .collect();
        d.stop();
        cleanup.insert("daemon_log_warnings".into(), json!(daemon_log_warnings));
        cleanup.insert("daemon_stopped".into(), json!(true));
    }
    report["cleanup"] = Value::Object(cleanup);

    if let Some(f) = fatal {
        ctx.rec().error("fatal", f);
    }
    if interrupted.load(Ordering::SeqCst) {
        ctx.rec()
            .error("interrupted", "stopped by a signal before the end");
    }
    let rec = ctx.rec();
    let errors: serde_json::Map<String, Value> = rec
        .errors
        .iter()
        .map(|(k, (n, ex))| (k.clone(), json!({"count": n, "first": ex})))
        .collect();
    let passed = rec.error_count() == 0
        && rec.bad_bytes == 0
        && rec.extra_bytes == 0
        && rec.lost_bytes == 0
        && rec.ok > 0;
    merge(
        &mut report,
        json!({
            "passed": passed,
            "commands": {
                "started": rec.started,
                "cancelled_by_a_stop": rec.cancelled,
                "completed_ok": rec.ok,
                "failed": rec.failed,
                "by_transport": rec.by_transport.iter().map(|(k, v)| (k.to_string(), json!({"ok": v[0], "failed": v[1]}))).collect::<serde_json::Map<_, _>>(),
            },
            "bytes_verified": {"stdout": rec.stdout_bytes, "stderr": rec.stderr_bytes, "total": rec.stdout_bytes + rec.stderr_bytes, "stdout_lines": rec.lines},
            "bytes_bad": {"mismatched_from_first_divergence": rec.bad_bytes, "extra": rec.extra_bytes, "lost_reported": rec.lost_bytes},
            "errors_total": rec.error_count(),
            "errors": errors,
            "latency_ms": {
                "steady": rec.steady.json(),
                "first_wave": rec.first_wave.json(),
                "what": "steady: commands started after each slot's first; first_wave: each slot's first command, started during the ramp",
            },
        }),
    );
    Ok(report)
}

/// Memory per sandbox now: the agent's proportional set size, and what the sandbox's cgroup is charged.
fn sandbox_memory(state_dir: &Path) -> Value {
    let hs = handles_in(state_dir);
    let agents: u64 = hs.iter().map(|(p, _)| pss_kib(*p)).sum();
    let cg: Vec<u64> = hs.iter().filter_map(|(_, d)| cgroup_bytes(d)).collect();
    let mib = |total: f64, n: usize| (total / n.max(1) as f64 * 100.0).round() / 100.0;
    json!({
        "sandboxes": hs.len(),
        "agent_pss_mib_per_sandbox": mib(agents as f64 / 1024.0, hs.len()),
        "cgroup_memory_mib_per_sandbox": if cg.is_empty() {
            Value::Null
        } else {
            json!(mib(cg.iter().sum::<u64>() as f64 / 1_048_576.0, cg.len()))
        },
        "what": "agent: proportional set size of each sandbox's agent (PID 1); cgroup: memory charged \
                 to the sandbox's cgroup (its processes, page cache, kernel memory); mid-run, every stream busy",
    })
}

/// The init pid and the cgroup directories of every sandbox with a directory in a state dir (the
/// isolate backend's `handle.json`).
fn handles_in(state: &Path) -> Vec<(i32, Vec<PathBuf>)> {
    let d = state.join("isolate/sandboxes");
    let mut v = Vec::new();
    for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
        let Ok(text) = std::fs::read_to_string(e.path().join("handle.json")) else {
            continue;
        };
        let Ok(h) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        let mut dirs = Vec::new();
        collect_paths(&h["cgroups"], &mut dirs);
        v.push((h["init_pid"].as_i64().unwrap_or(0) as i32, dirs));
    }
    v
}

/// Seconds since the epoch of an RFC 3339 UTC time as the agent writes it
/// (`2026-11-23T17:48:42.970Z`); `None` for anything else.
fn parse_rfc3339(s: &str) -> Option<std::time::SystemTime> {
    let bytes = s.as_bytes();
    if bytes.len() < 20 || bytes[4] != b'-' || bytes[10] != b'T' || !s.ends_with('Z') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let frac = s.get(19..s.len() - 1).unwrap_or("");
    let nanos = match frac.strip_prefix('.') {
        Some(f) if !f.is_empty() && f.len() <= 9 => {
            f.parse::<u64>().ok()? * 10u64.pow(9 - f.len() as u32)
        }
        _ => 0,
    };
    // Days from civil (Howard Hinnant's algorithm).
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    let secs = u64::try_from(days * 86_400 + hour * 3600 + minute * 60 + second).ok()?;
    Some(std::time::UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_nanos(nanos))
}

fn merge(into: &mut Value, from: Value) {
    if let (Some(a), Value::Object(b)) = (into.as_object_mut(), from) {
        a.extend(b);
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Deletes every sandbox, 16 at a time; returns (deleted, per-delete ms).
async fn delete_all(ctx: &Arc<Ctx>, sandboxes: Vec<(usize, Sandbox)>) -> (usize, Vec<f64>) {
    let mut done = 0;
    let mut times = Vec::new();
    let mut it = sandboxes.into_iter();
    loop {
        let batch: Vec<(usize, Sandbox)> = it.by_ref().take(16).collect();
        if batch.is_empty() {
            break;
        }
        let tasks: Vec<_> = batch
            .into_iter()
            .map(|(i, sbx)| {
                tokio::spawn(async move {
                    let t = Instant::now();
                    let r = sbx.kill().await;
                    (i, sbx.id().to_owned(), r, ms(t.elapsed()))
                })
            })
            .collect();
        for t in tasks {
            match t.await {
                Ok((_, _, Ok(()), took)) => {
                    done += 1;
                    times.push(took);
                }
                Ok((i, id, Err(e), _)) => {
                    ctx.rec()
                        .error("delete", format!("sandbox {i} ({id}): {e}"));
                }
                Err(e) => ctx.rec().error("delete", format!("delete task: {e}")),
            }
        }
    }
    (done, times)
}

#[allow(clippy::too_many_arguments, clippy::too_many_lines)]
async fn scenario(
    ctx: &Arc<Ctx>,
    created: &Arc<Mutex<Vec<(usize, Sandbox)>>>,
    client: &Client,
    http: &reqwest::Client,
    url: &str,
    key: &str,
    run_id: &str,
    n: usize,
    streams: usize,
    duration: Duration,
    daemon_pid: Option<u32>,
    state_dir: Option<PathBuf>,
) -> anyhow::Result<Value> {
    // A sandbox TTL well past the run: if this process is killed with SIGKILL, the daemon still
    // removes the sandboxes in the end.
    let ttl = duration + Duration::from_secs(600);
    let create = {
        let (client, run_id) = (client.clone(), run_id.to_owned());
        move || {
            Sandbox::create()
                .client(&client)
                .metadata("sandpit-load", run_id.clone())
                .timeout(ttl)
        }
    };
    // The first sandbox of a fresh state dir builds the `base` template (seconds, once): not part
    // of the burst.
    let t = Instant::now();
    let warm = create().await.context("the first sandbox")?;
    let warm_ms = ms(t.elapsed());
    warm.kill().await.context("deleting the first sandbox")?;
    if ctx.stopped() {
        bail!("interrupted");
    }

    // The burst: all at once, each tracked the moment it exists so that cleanup finds it.
    let t = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (make, created, ctx) = (create.clone(), created.clone(), ctx.clone());
            tokio::spawn(async move {
                let t = Instant::now();
                let r = tokio::select! {
                    r = make() => r,
                    () = ctx.cancelled() => return None,
                };
                let took = ms(t.elapsed());
                match r {
                    Ok(sbx) => {
                        created
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push((i, sbx));
                        Some(took)
                    }
                    Err(e) => {
                        ctx.rec().error("create", format!("sandbox {i}: {e}"));
                        None
                    }
                }
            })
        })
        .collect();
    let mut create_ms = Vec::new();
    for task in tasks {
        if let Ok(Some(took)) = task.await {
            create_ms.push(took);
        }
    }
    let create_all = t.elapsed();
    let ready: Vec<(usize, Sandbox)> = created
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .map(|(i, s)| (*i, s.clone()))
        .collect();
    if ctx.stopped() {
        bail!("interrupted during the creates");
    }

    // The pacing FIFO in each sandbox (also proves each answers a command).
    let setups: Vec<_> = ready
        .iter()
        .map(|(i, sbx)| {
            let (sbx, i, ctx) = (sbx.clone(), *i, ctx.clone());
            tokio::spawn(async move {
                match sbx.shell(stream::SETUP).await {
                    Ok(o) if o.success() => true,
                    Ok(o) => {
                        ctx.rec()
                            .error("setup", format!("sandbox {i}: {} {}", o.code(), o.stderr()));
                        false
                    }
                    Err(e) => {
                        ctx.rec().error("setup", format!("sandbox {i}: {e}"));
                        false
                    }
                }
            })
        })
        .collect();
    let mut usable = Vec::new();
    for ((i, sbx), t) in ready.into_iter().zip(setups) {
        if matches!(t.await, Ok(true)) {
            usable.push((i, sbx));
        }
    }
    let daemon_rss_before = daemon_pid.map(|p| proc_status_kib(p, "VmRSS:"));

    // The streaming phase.
    let before = scrape(http, url, key).await;
    let (busy0, total0) = host_jiffies();
    let gen_cpu0 = cpu_secs(std::process::id());
    let daemon_cpu0 = daemon_pid.map_or(0.0, cpu_secs);
    let start = Instant::now();
    let _ = ctx.deadline.set(start + duration);
    let total = usable.len() * streams;
    let mut slots = Vec::new();
    for (si, (i, sbx)) in usable.iter().enumerate() {
        for k in 0..streams {
            let g = k * usable.len() + si;
            slots.push(tokio::spawn(slot(
                ctx.clone(),
                sbx.clone(),
                *i,
                k,
                g,
                total,
            )));
        }
    }
    // Meanwhile: the daemon's RSS every half second, and the sandboxes' memory at mid-run.
    let monitor = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let mut peak = 0u64;
            let mut mid: Option<Value> = None;
            let half = start + duration / 2;
            loop {
                if let Some(p) = daemon_pid {
                    peak = peak.max(proc_status_kib(p, "VmRSS:"));
                }
                if mid.is_none() && Instant::now() >= half {
                    mid = state_dir.as_deref().map(sandbox_memory);
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    () = ctx.cancelled() => return (peak, mid),
                }
            }
        })
    };
    for s in slots {
        if let Err(e) = s.await {
            ctx.rec().error("panic", format!("a slot task failed: {e}"));
        }
    }
    let streaming = start.elapsed();
    let (busy1, total1) = host_jiffies();
    let gen_cpu = cpu_secs(std::process::id()) - gen_cpu0;
    let daemon_cpu = daemon_pid.map_or(0.0, cpu_secs) - daemon_cpu0;
    let after = scrape(http, url, key).await;
    let _ = ctx.stop.send(true);
    let (peak_kib, mid) = monitor.await.unwrap_or((0, None));
    let daemon_hwm = daemon_pid.map(|p| proc_status_kib(p, "VmHWM:"));

    // What the daemon answered during the streaming phase, by route and status: every proxied
    // request must have succeeded, and the SDK must not have had to resume a cut stream (it would
    // hide the cut from the byte checks: one more `events`/`ws` request than commands).
    let mut routes = serde_json::Map::new();
    let (mut events_reqs, mut ws_reqs) = (0u64, 0u64);
    for (labels, n) in &after {
        let d = n - before.get(labels).copied().unwrap_or(0);
        if d == 0 {
            continue;
        }
        let status: u16 = labels
            .rsplit_once("status=\"")
            .and_then(|(_, s)| s.trim_end_matches("\"}").parse().ok())
            .unwrap_or(0);
        if labels.contains("/events\"") {
            events_reqs += d;
        }
        if labels.contains("/ws\"") {
            ws_reqs += d;
        }
        if !(200..300).contains(&status) && status != 101 && !labels.contains("/metrics") {
            ctx.rec().error("http_status", format!("{d} × {labels}"));
        }
        routes.insert(labels.clone(), json!(d));
    }
    let starts = ctx.rec().starts.clone();
    let sse_cmds = starts.get("sse").copied().unwrap_or(0);
    let ws_cmds = starts.get("ws").copied().unwrap_or(0);
    let resumes = json!({
        "sse": events_reqs.saturating_sub(sse_cmds),
        "ws": ws_reqs.saturating_sub(ws_cmds),
    });
    if !after.is_empty() && (events_reqs > sse_cmds || ws_reqs > ws_cmds) {
        ctx.rec().error(
            "stream_resumed",
            format!(
                "the SDK reconnected cut streams: {events_reqs} events requests for {sse_cmds} SSE \
                 commands, {ws_reqs} ws requests for {ws_cmds} WebSocket commands"
            ),
        );
    }

    let busy_pct = if total1 > total0 {
        (busy1 - busy0) as f64 * 100.0 / (total1 - total0) as f64
    } else {
        0.0
    };
    let secs = streaming.as_secs_f64();
    let rec = ctx.rec();
    let rates = json!({
        "commands_per_s": (rec.ok + rec.failed) as f64 / secs,
        "stdout_lines_per_s": rec.lines as f64 / secs,
        "stdout_kib_per_s": rec.stdout_bytes as f64 / 1024.0 / secs,
    });
    drop(rec);
    Ok(json!({
        "create": {
            "first_sandbox_ms": warm_ms.round(),
            "what": "first_sandbox_ms: one sandbox alone first (on a fresh state dir it builds the base \
                     template); then all the others at once: all_at_once_s in total, each_ms each",
            "created": create_ms.len(),
            "usable": usable.len(),
            "all_at_once_s": (create_all.as_secs_f64() * 1000.0).round() / 1000.0,
            "each_ms": percentiles(&create_ms),
        },
        "streaming_phase_s": (secs * 1000.0).round() / 1000.0,
        "concurrent_streams": total,
        "rates": rates,
        "cpu": {
            "host_busy_pct": (busy_pct * 10.0).round() / 10.0,
            "daemon_cpu_s": (daemon_cpu * 100.0).round() / 100.0,
            "generator_cpu_s": (gen_cpu * 100.0).round() / 100.0,
        },
        "memory": {
            "daemon_rss_mib_before_streams": daemon_rss_before.map(|k| k / 1024),
            "daemon_rss_mib_peak_sampled": daemon_pid.map(|_| peak_kib / 1024),
            "daemon_vmhwm_mib": daemon_hwm.map(|k| k / 1024),
            "per_sandbox_mid_run": mid,
        },
        "daemon_requests_during_streaming": routes,
        "sdk_stream_resumes": resumes,
    }))
}

fn print_summary(r: &Value) {
    let get = |p: &str| r.pointer(p).cloned().unwrap_or(Value::Null);
    eprintln!(
        "load {}: {} sandboxes x {} streams for {} s ({} transport)",
        get("/profile"),
        get("/sandboxes"),
        get("/streams_per_sandbox"),
        get("/duration_s"),
        get("/transport").as_str().unwrap_or_default()
    );
    eprintln!(
        "  create: {} at once in {} s (each p50 {} ms, p99 {} ms)",
        get("/create/created"),
        get("/create/all_at_once_s"),
        get("/create/each_ms/p50"),
        get("/create/each_ms/p99")
    );
    eprintln!(
        "  commands: {} ok, {} failed; {} bytes verified ({} stdout lines); {} commands/s",
        get("/commands/completed_ok"),
        get("/commands/failed"),
        get("/bytes_verified/total"),
        get("/bytes_verified/stdout_lines"),
        get("/rates/commands_per_s")
            .as_f64()
            .map_or_else(String::new, |v| format!("{v:.1}"))
    );
    for wave in ["steady", "first_wave"] {
        let p = |m: &str| {
            let q = |k: &str| get(&format!("/latency_ms/{wave}/{m}/{k}"));
            format!("{}/{}/{}", q("p50"), q("p95"), q("p99"))
        };
        eprintln!(
            "  {wave} (ms, p50/p95/p99): first byte {}; round trip {} ({} over the nominal length); exit to client {}",
            p("time_to_first_byte"),
            p("command_round_trip"),
            p("round_trip_minus_nominal_length"),
            p("exit_to_client"),
        );
    }
    eprintln!(
        "  host CPU busy {}%; daemon RSS {} -> peak {} MiB; per sandbox mid-run: agent {} MiB PSS, cgroup {} MiB",
        get("/cpu/host_busy_pct"),
        get("/memory/daemon_rss_mib_before_streams"),
        get("/memory/daemon_rss_mib_peak_sampled"),
        get("/memory/per_sandbox_mid_run/agent_pss_mib_per_sandbox"),
        get("/memory/per_sandbox_mid_run/cgroup_memory_mib_per_sandbox"),
    );
    eprintln!(
        "  cleanup: {} deleted in {} s; sandbox dirs left {}",
        get("/cleanup/deleted"),
        get("/cleanup/delete_all_s"),
        get("/cleanup/sandbox_dirs_left"),
    );
    eprintln!(
        "  bad bytes {}, lost {}, errors {}",
        get("/bytes_bad/mismatched_from_first_divergence"),
        get("/bytes_bad/lost_reported"),
        get("/errors_total")
    );
    if let Some(errs) = r["errors"].as_object() {
        for (k, v) in errs {
            eprintln!("  error {k} × {}: {}", v["count"], v["first"]);
        }
    }
    eprintln!(
        "  {}",
        if r["passed"] == true {
            "PASSED"
        } else {
            "FAILED"
        }
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("3h").is_err());
    }

    #[test]
    fn agent_times_parse() {
        let t = parse_rfc3339("2026-11-23T17:48:42.970Z").unwrap();
        let d = t.duration_since(std::time::UNIX_EPOCH).unwrap();
        assert_eq!(d.as_millis(), 1_795_456_122_970);
        assert_eq!(
            parse_rfc3339("1970-01-01T00:00:00Z"),
            Some(std::time::UNIX_EPOCH)
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn percentiles_pick_ranks() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let p = percentiles(&v);
        assert_eq!(p["p50"], 51.0);
        assert_eq!(p["p99"], 99.0);
        assert_eq!(p["max"], 100.0);
        assert_eq!(percentiles(&[]), Value::Null);
    }
}
