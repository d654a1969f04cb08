//! Daemon benchmarks through the Rust SDK over loopback: time to interactive (create a sandbox and get
//! the result of `echo hi`) one at a time and many at once, beside `unshare`, `bwrap`, `runc` and gVisor
//! running the same command with the same namespaces; a warm `exec("true")` beside a bare fork/exec;
//! pause, resume and auto-resume; and host memory per idle sandbox.

use std::io::Read as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sandpit::{Client, NO_ARGS, Sandbox};

use crate::stats::{Row, ms, summarize};

/// A `sandpit serve` on a free loopback port with a temporary state dir, stopped on drop.
pub(crate) struct Daemon {
    pub(crate) child: Child,
    pub(crate) url: String,
    pub(crate) key: String,
    pub(crate) backend: &'static str,
    pub(crate) state: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

pub(crate) fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
}

pub(crate) fn start_daemon(bin: &Path) -> anyhow::Result<Daemon> {
    start_daemon_with(bin, &[])
}

/// [`start_daemon`] with extra `sandpit serve` flags.
pub(crate) fn start_daemon_with(bin: &Path, extra: &[&str]) -> anyhow::Result<Daemon> {
    // A short path: agent sockets live under the state dir and unix socket paths are limited.
    let state = tempfile::Builder::new().prefix("spb-").tempdir_in("/tmp")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let backend = if is_root() { "isolate" } else { "process" };
    let child = Command::new(bin)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--backend",
            backend,
            "--state-dir",
        ])
        .arg(state.path())
        .args(extra)
        .env("SANDPIT_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let url = format!("http://127.0.0.1:{port}");
    let key_path = state.path().join("api-key");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(key_path.exists() && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()) {
        if Instant::now() > deadline {
            bail!("sandpit serve did not come up on {url}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let key = std::fs::read_to_string(&key_path)?.trim().to_owned();
    Ok(Daemon {
        child,
        url,
        key,
        backend,
        state,
    })
}

async fn time_to_interactive(client: &Client) -> anyhow::Result<(f64, Sandbox)> {
    let t = Instant::now();
    let sbx = Sandbox::create().client(client).await?;
    let out = sbx.exec("echo", ["hi"]).await?;
    let took = ms(t.elapsed());
    if out.stdout() != "hi\n" {
        bail!("echo hi gave {:?}", out.stdout());
    }
    Ok((took, sbx))
}

fn run_timed(cmd: &mut Command) -> anyhow::Result<f64> {
    let t = Instant::now();
    let out = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).output()?;
    let took = ms(t.elapsed());
    if !out.status.success() || out.stdout != b"hi\n" {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(took)
}

fn unshare_cmd() -> Command {
    let mut c = Command::new("unshare");
    c.args([
        "--user",
        "--map-root-user",
        "--pid",
        "--fork",
        "--mount",
        "--uts",
        "--ipc",
        "--net",
        "--cgroup",
    ]);
    c.args(["echo", "hi"]);
    c
}

pub(crate) fn installed(bin: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
}

/// A comparison point: what a user would pick instead, running the same `echo hi`.
struct Baseline {
    name: &'static str,
    note: &'static str,
    make: Option<Box<dyn Fn(usize) -> Command>>,
    samples: Vec<f64>,
    skip: Option<String>,
}

fn baselines(bundle: Option<&Path>) -> Vec<Baseline> {
    let mut v = vec![Baseline {
        name: "unshare (same namespaces) echo hi",
        note: "unshare has no rootfs, cgroups, seccomp or agent: the floor, not a peer",
        make: Some(Box::new(|_| unshare_cmd())),
        samples: Vec::new(),
        skip: None,
    }];
    let bw = installed("bwrap").then(|| -> Box<dyn Fn(usize) -> Command> {
        Box::new(|_| {
            let mut c = Command::new("bwrap");
            c.args([
                "--unshare-all",
                "--ro-bind",
                "/usr",
                "/usr",
                "--symlink",
                "usr/bin",
                "/bin",
            ]);
            c.args([
                "--symlink",
                "usr/lib",
                "/lib",
                "--symlink",
                "usr/lib64",
                "/lib64",
            ]);
            c.args(["--proc", "/proc", "--dev", "/dev", "echo", "hi"]);
            c
        })
    });
    v.push(Baseline {
        name: "bwrap --unshare-all echo hi",
        note: "",
        make: bw,
        samples: Vec::new(),
        skip: None,
    });
    let root = is_root();
    for (name, bin, extra) in [
        ("runc run (OCI bundle, busybox echo hi)", "runc", &[][..]),
        (
            "gVisor runsc --platform=ptrace run",
            "runsc",
            &["--platform=ptrace", "--network=none"][..],
        ),
    ] {
        let make = match bundle {
            Some(dir) if root && installed(bin) => {
                let dir = dir.to_owned();
                let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
                Some(Box::new(move |round: usize| {
                    let mut c = Command::new(bin);
                    c.args(&extra).args(["run", "--bundle"]).arg(&dir);
                    c.arg(format!("spb-{}-{round}", std::process::id()));
                    c
                }) as Box<dyn Fn(usize) -> Command>)
            }
            _ => None,
        };
        let skip = (!root).then(|| "needs root".to_owned());
        v.push(Baseline {
            name,
            note: "",
            make,
            samples: Vec::new(),
            skip,
        });
    }
    v
}

/// An OCI bundle whose process is `busybox echo hi` (from busybox-static), for runc and runsc.
fn oci_bundle() -> anyhow::Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new()
        .prefix("spb-oci-")
        .tempdir_in("/tmp")?;
    std::fs::create_dir_all(dir.path().join("rootfs/bin"))?;
    std::fs::copy("/bin/busybox", dir.path().join("rootfs/bin/busybox"))
        .context("busybox-static")?;
    let st = Command::new("runc")
        .arg("spec")
        .current_dir(dir.path())
        .status()
        .context("runc spec")?;
    if !st.success() {
        bail!("runc spec failed");
    }
    let path = dir.path().join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    cfg["process"]["terminal"] = false.into();
    cfg["process"]["args"] = serde_json::json!(["/bin/busybox", "echo", "hi"]);
    cfg["root"]["readonly"] = true.into();
    std::fs::write(&path, serde_json::to_vec(&cfg)?)?;
    Ok(dir)
}

/// `(count, total PSS in KiB)` of the agents running inside sandboxes (as `/.sandpit/sandpit agent` in
/// the isolate backend, `sandpit agent --listen unix:` in the process backend).
fn sandbox_agents_pss_kib() -> (usize, u64) {
    let (mut n, mut total) = (0, 0);
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if !(cmd.starts_with("/.sandpit/sandpit agent") || cmd.contains("agent --listen unix:")) {
            continue;
        }
        let mut s = String::new();
        let _ = std::fs::File::open(e.path().join("smaps_rollup"))
            .and_then(|mut f| f.read_to_string(&mut s));
        if let Some(kib) = s
            .lines()
            .find(|l| l.starts_with("Pss:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        {
            n += 1;
            total += kib;
        }
    }
    (n, total)
}

pub(crate) fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

pub async fn run(bin: &Path, quick: bool) -> anyhow::Result<Vec<Row>> {
    let d = start_daemon(bin)?;
    let client = Client::new(&d.url, &d.key)?;
    let group = format!("daemon ({} backend)", d.backend);
    let mut rows = Vec::new();
    // The first create builds the `base` template (seconds, once): keep it out of the figures.
    let (_, warm) = time_to_interactive(&client)
        .await
        .context("first sandbox")?;
    warm.kill().await?;

    // One at a time, interleaved with the baselines.
    let n = if quick { 3 } else { 40 };
    let bundle = oci_bundle().ok();
    let mut baselines = baselines(bundle.as_ref().map(tempfile::TempDir::path));
    let mut ours = Vec::new();
    for round in 0..n {
        let (t, sbx) = time_to_interactive(&client).await?;
        ours.push(t);
        sbx.kill().await?;
        for b in &mut baselines {
            let Some(make) = b.make.as_ref() else {
                continue;
            };
            let mut cmd = make(round);
            let r = tokio::task::spawn_blocking(move || run_timed(&mut cmd)).await?;
            match r {
                Ok(ms) => b.samples.push(ms),
                Err(e) => {
                    b.skip = Some(format!("failed: {e}"));
                    b.make = None;
                }
            }
        }
    }
    let ours_s = summarize(&ours);
    let unshare_s = summarize(&baselines[0].samples);
    for b in &baselines {
        let row = Row::new(
            &group,
            "create + exec(\"echo hi\"), one at a time",
            "ms",
            ours_s,
        );
        rows.push(match (&b.skip, b.samples.is_empty()) {
            (None, false) => row.against(b.name, summarize(&b.samples)).note(b.note),
            (skip, _) => row.note(format!(
                "{} not measured: {}",
                b.name,
                skip.as_deref().unwrap_or("not installed")
            )),
        });
    }

    // Many at once.
    let burst = if quick { 5 } else { 100 };
    let mut tasks = Vec::new();
    for _ in 0..burst {
        let c = client.clone();
        tasks.push(tokio::spawn(async move { time_to_interactive(&c).await }));
    }
    let mut times = Vec::new();
    let mut sandboxes = Vec::new();
    for t in tasks {
        let (ms, sbx) = t.await??;
        times.push(ms);
        sandboxes.push(sbx);
    }
    rows.push(
        Row::new(
            &group,
            &format!("create + exec(\"echo hi\"), {burst} at once"),
            "ms",
            summarize(&times),
        )
        .against("unshare echo hi (one)", unshare_s),
    );
    // Memory per idle sandbox, with the burst still alive: the proportional set size of every process
    // running the agent binary inside a sandbox (shared pages split between them), plus the daemon's
    // growth. Kernel objects (namespaces, page tables of the writable layer) are not in it.
    let daemon_rss = rss_kib(d.child.id());
    let (agents, pss) = sandbox_agents_pss_kib();
    for s in sandboxes.drain(..) {
        s.kill().await?;
    }
    let per = if agents > 0 {
        pss as f64 / 1024.0 / agents as f64
    } else {
        0.0
    };
    rows.push(
        Row::new(&group, "memory per idle sandbox (agent PSS)", "MiB", summarize(&[per])).note(format!(
            "{agents} sandbox agents, {:.1} MiB PSS in all; daemon RSS {} MiB with {burst} sandboxes",
            pss as f64 / 1024.0,
            daemon_rss / 1024
        )),
    );

    // Warm command round trip.
    let (warm_rows, warm_s) = warm_commands(&client, &d, &group, quick).await?;
    rows.extend(warm_rows);

    // Pause, resume, and a command that resumes a paused sandbox on its own.
    let mut sbx = Sandbox::create().client(&client).await?;
    let k = if quick { 3 } else { 30 };
    let (mut pause, mut resume, mut auto) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..k {
        let t = Instant::now();
        sbx.pause().await?;
        pause.push(ms(t.elapsed()));
        let t = Instant::now();
        sbx.resume().await?;
        resume.push(ms(t.elapsed()));
        sbx.pause().await?;
        let t = Instant::now();
        sbx.exec("true", NO_ARGS).await?;
        auto.push(ms(t.elapsed()));
    }
    rows.push(Row::new(&group, "pause", "ms", summarize(&pause)));
    rows.push(Row::new(&group, "resume", "ms", summarize(&resume)));
    rows.push(
        Row::new(
            &group,
            "exec(\"true\") on a paused sandbox (auto-resume)",
            "ms",
            summarize(&auto),
        )
        .against("warm exec(\"true\")", warm_s),
    );
    sbx.kill().await?;

    rows.push(noisy_neighbour(&client, &group, quick).await?);
    rows.extend(streams(&client, &d, &group, quick).await?);
    rows.extend(flood(&client, &d.key, &group, quick).await?);
    rows.extend(scale(&client, &group, d.child.id(), quick).await?);
    Ok(rows)
}

/// A warm `exec("true")` through the Rust SDK, and `run("true")` through the Python and TypeScript SDKs
/// (each in its own interpreter), beside a bare fork/exec of `true`; also the Rust figure, for rows that
/// compare against it.
async fn warm_commands(
    client: &Client,
    d: &Daemon,
    group: &str,
    quick: bool,
) -> anyhow::Result<(Vec<Row>, crate::stats::Summary)> {
    let mut rows = Vec::new();
    let sbx = Sandbox::create().client(client).await?;
    let m = if quick { 20 } else { 300 };
    let (mut warm_t, mut bare) = (Vec::new(), Vec::new());
    for _ in 0..m {
        let t = Instant::now();
        let out = sbx.exec("true", NO_ARGS).await?;
        warm_t.push(ms(t.elapsed()));
        if !out.success() {
            bail!("true failed in the sandbox");
        }
        let t = Instant::now();
        tokio::task::spawn_blocking(|| Command::new("true").status()).await??;
        bare.push(ms(t.elapsed()));
    }
    let bare_s = summarize(&bare);
    rows.push(
        Row::new(
            group,
            "warm exec(\"true\") via Rust SDK (daemon + agent)",
            "ms",
            summarize(&warm_t),
        )
        .against("fork/exec+wait of true", bare_s),
    );
    // The same round trip through the Python and TypeScript SDKs, each in its own interpreter.
    for lang in SdkLang::BOTH {
        let name = format!("warm run(\"true\") via {} SDK", lang.label());
        match run_sdk_script(lang, "sdk_roundtrip", d, &[m.to_string()])? {
            None => rows.push(Row::new(group, &name, "ms", bare_s).note(format!(
                "not measured: {} SDK not installed/built (bench/run prepares it); row shows fork/exec",
                lang.label()
            ))),
            Some(samples) => rows.push(
                Row::new(group, &name, "ms", summarize(&samples))
                    .against("fork/exec+wait of true", bare_s),
            ),
        }
    }

    sbx.kill().await?;
    Ok((rows, summarize(&warm_t)))
}

/// The SDKs measured by a script of their own under `bench/` (each in its own interpreter).
#[derive(Debug, Clone, Copy)]
enum SdkLang {
    Python,
    TypeScript,
}

impl SdkLang {
    const BOTH: [Self; 2] = [Self::Python, Self::TypeScript];

    fn label(self) -> &'static str {
        match self {
            Self::Python => "Python",
            Self::TypeScript => "TypeScript",
        }
    }
}

/// Runs `bench/{stem}.py` or `bench/{stem}.mjs` with the daemon's URL and key, then `args`; the JSON
/// array of numbers it prints. `None` when that SDK is not prepared (`bench/run` prepares both).
fn run_sdk_script(
    lang: SdkLang,
    stem: &str,
    d: &Daemon,
    args: &[String],
) -> anyhow::Result<Option<Vec<f64>>> {
    let (program, script, ready) = match lang {
        SdkLang::Python => (
            "sdk/python/.venv/bin/python",
            format!("bench/{stem}.py"),
            Path::new("sdk/python/.venv/bin/python").exists(),
        ),
        SdkLang::TypeScript => (
            "node",
            format!("bench/{stem}.mjs"),
            Path::new("sdk/typescript/dist/index.js").exists(),
        ),
    };
    if !ready {
        return Ok(None);
    }
    let out = Command::new(program)
        .arg(&script)
        .args([&d.url, &d.key])
        .args(args)
        .output()
        .with_context(|| format!("running {script}"))?;
    if !out.status.success() {
        bail!("{script} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(Some(
        serde_json::from_slice(&out.stdout).with_context(|| format!("{script}'s output"))?,
    ))
}

/// A daemon with `base` built (the first create builds it: seconds, once), a client, and the group name:
/// where a subset of the daemon group starts.
async fn started(bin: &Path) -> anyhow::Result<(Daemon, Client, String)> {
    let d = start_daemon(bin)?;
    let client = Client::new(&d.url, &d.key)?;
    let group = format!("daemon ({} backend)", d.backend);
    let (_, first) = time_to_interactive(&client)
        .await
        .context("first sandbox")?;
    first.kill().await?;
    Ok((d, client, group))
}

/// Only the warm command rows of the daemon group (`bench/run warm`, never part of "all": the daemon
/// group has them), for work on the command round trip.
pub async fn run_warm(bin: &Path, quick: bool) -> anyhow::Result<Vec<Row>> {
    let (d, client, group) = started(bin).await?;
    Ok(warm_commands(&client, &d, &group, quick).await?.0)
}

/// Only the output-stream rows of the daemon group (`bench/run streams`, never part of "all": the daemon
/// group has them), for work on stream speed.
pub async fn run_streams(bin: &Path, quick: bool) -> anyhow::Result<Vec<Row>> {
    let (d, client, group) = started(bin).await?;
    streams(&client, &d, &group, quick).await
}

/// A warm `exec("true")` in one sandbox while its neighbour (128 MiB, 64 pids, half a core, 64 MiB of
/// disk) runs a memory bomb, a disk fill, an output flood, a CPU spin and a fork bomb at once,
/// beside the same call with the neighbour idle (measured before and after the abuse, in the same run).
async fn noisy_neighbour(client: &Client, group: &str, quick: bool) -> anyhow::Result<Row> {
    let n = if quick { 10 } else { 100 };
    let quiet = Sandbox::create().client(client).await?;
    let mut idle = Vec::new();
    let sample = async |into: &mut Vec<f64>| -> anyhow::Result<()> {
        for _ in 0..n {
            let t = Instant::now();
            if !quiet.exec("true", NO_ARGS).await?.success() {
                bail!("true failed in the quiet sandbox");
            }
            into.push(ms(t.elapsed()));
        }
        Ok(())
    };
    sample(&mut idle).await?;
    let noisy = Sandbox::create()
        .client(client)
        .memory_mb(128)
        .pids(64)
        .cpu(0.5)
        .disk_mb(64)
        .await?;
    // The fork bomb last: once it holds every pid the limit allows, nothing else starts.
    for script in [
        "python3 -c 'x = []\nwhile True: x.append(bytearray(1 << 20))'",
        "dd if=/dev/zero of=$HOME/fill bs=1M count=1000 2>&1",
        "yes flood",
        "while :; do :; done",
        "f(){ f | f & }; f; sleep 600",
    ] {
        // Started and left running: the sandbox's deletion ends them.
        drop(noisy.shell_stream(script).await?);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut busy = Vec::new();
    sample(&mut busy).await?;
    noisy.kill().await?;
    sample(&mut idle).await?;
    quiet.kill().await?;
    Ok(Row::new(
        group,
        "warm exec(\"true\") beside a sandbox abusing its limits",
        "ms",
        summarize(&busy),
    )
    .against("the same, neighbour idle", summarize(&idle))
    .note("neighbour: memory bomb, disk fill, output flood, CPU spin, fork bomb at once (128 MiB, 64 pids, 0.5 CPU, 64 MiB disk)"))
}

/// Output of a process in a sandbox, read through the daemon's proxy over WebSocket and SSE, beside a
/// plain pipe on the host (`crate::agent::stream_rows`).
async fn streams(
    client: &Client,
    d: &Daemon,
    group: &str,
    quick: bool,
) -> anyhow::Result<Vec<Row>> {
    let sbx = Sandbox::create().client(client).await?;
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("authorization", format!("Bearer {}", d.key).parse()?);
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .build()?;
    let base = format!("{}/v1/sandboxes/{}", d.url, sbx.id());
    let ws_base = base.replacen("http://", "ws://", 1);
    let rows = crate::agent::stream_rows(&http, &base, &ws_base, Some(&d.key), quick, |l, t| {
        (
            group.to_owned(),
            format!("{l} in a sandbox, {t} via daemon"),
        )
    })
    .await;
    let sdk_rows = match &rows {
        Ok(_) => sdk_streams(&sbx, d, group, quick).await,
        Err(_) => Ok(Vec::new()),
    };
    sbx.kill().await?;
    let mut rows = rows?;
    rows.extend(sdk_rows?);
    Ok(rows)
}

/// The text source through each SDK's streaming API (Rust `Stream`, Python async iterator, TypeScript
/// async iterator), beside the same command through a plain pipe: an SDK must not be the bottleneck.
async fn sdk_streams(
    sbx: &Sandbox,
    d: &Daemon,
    group: &str,
    quick: bool,
) -> anyhow::Result<Vec<Row>> {
    use crate::agent::Source;
    use futures_util::StreamExt as _;
    let size: u64 = if quick { 64 << 20 } else { 1 << 30 };
    let runs = if quick { 1 } else { 3 };
    let label = Source::Text.label(size);
    let mut pipe = Vec::new();
    let mut rust = Vec::new();
    for _ in 0..runs {
        pipe.push(
            tokio::task::spawn_blocking(move || crate::agent::pipe_throughput(Source::Text, size))
                .await??,
        );
        let t = Instant::now();
        let p = sbx
            .processes()
            .start(format!(
                "echo ready; read _gate; {}",
                Source::Text.command(size)
            ))
            .send()
            .await
            .context("starting the Rust SDK's stream source")?;
        let mut s = std::pin::pin!(p.stream());
        let (mut got, mut gate_open) = (0u64, false);
        while let Some(ev) = s.next().await {
            match ev.context("the Rust SDK's stream")? {
                sandpit::ProcessStreamEvent::Stdout { data, .. } => {
                    if !gate_open {
                        // The marker: the stream is attached, let the payload go.
                        p.write_stdin("go\n", true)
                            .await
                            .context("opening the gate")?;
                        gate_open = true;
                        got = got.wrapping_sub("ready\n".len() as u64);
                    }
                    got = got.wrapping_add(data.len() as u64);
                }
                sandpit::ProcessStreamEvent::Exit { .. } => break,
                _ => {}
            }
        }
        if got != size {
            bail!("the Rust SDK's stream delivered {got} of {size} bytes");
        }
        rust.push(size as f64 / t.elapsed().as_secs_f64() / 1_048_576.0);
    }
    let pipe_s = summarize(&pipe);
    let mut rows = vec![
        Row::new(
            group,
            &format!("{label} via Rust SDK stream"),
            "MiB/s",
            summarize(&rust),
        )
        .against("plain pipe, same text", pipe_s)
        .note("Process::stream (WebSocket session), every chunk decoded"),
    ];
    for lang in SdkLang::BOTH {
        let name = format!("{label} via {} SDK stream", lang.label());
        match run_sdk_script(lang, "sdk_stream", d, &[size.to_string(), runs.to_string()])? {
            None => rows.push(Row::new(group, &name, "MiB/s", pipe_s).note(format!(
                "not measured: {} SDK not installed/built (bench/run prepares it); row shows the pipe",
                lang.label()
            ))),
            Some(rates) => rows.push(
                Row::new(group, &name, "MiB/s", summarize(&rates))
                    .against("plain pipe, same text", pipe_s)
                    .note(match lang {
                        SdkLang::Python => "async for over handle.stream() (AsyncSandbox, WebSocket session)",
                        SdkLang::TypeScript => "for await over handle.stream() (Node: WebSocket session)",
                    }),
            ),
        }
    }
    Ok(rows)
}

/// A process writes a lot with nobody reading: the agent's peak memory (PID 1's `VmHWM`, read inside
/// the sandbox) and the daemon's must stay bounded, whatever the volume.
async fn flood(client: &Client, key: &str, group: &str, quick: bool) -> anyhow::Result<Vec<Row>> {
    let gib = if quick { 0.25 } else { 10.0 };
    let bytes = (gib * 1_073_741_824.0) as u64;
    let sbx = Sandbox::create().client(client).await?;
    // Started in the background and waited for without its output: collecting the kept 64 MiB as a
    // JSON result would measure the result, not the agent.
    let base = format!("{}/v1/sandboxes/{}", client.url(), sbx.id());
    let http = reqwest::Client::new();
    let t = Instant::now();
    let p: serde_json::Value = http
        .post(format!("{base}/processes"))
        .bearer_auth(key)
        .json(&serde_json::json!({"argv": ["head", "-c", bytes.to_string(), "/dev/zero"]}))
        .send()
        .await?
        .json()
        .await?;
    let id = p["id"].as_str().context("process id")?;
    let w: serde_json::Value = http
        .get(format!("{base}/processes/{id}/wait?output=false"))
        .bearer_auth(key)
        .send()
        .await?
        .json()
        .await?;
    let took = t.elapsed().as_secs_f64();
    let hwm = sbx
        .exec("grep VmHWM /proc/1/status", NO_ARGS)
        .run_as("root")
        .await?
        .stdout();
    let agent_kib: f64 = hwm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    sbx.kill().await?;
    let kept = w["stdout_bytes"].as_u64().unwrap_or(0) - w["lost_bytes"].as_u64().unwrap_or(0);
    Ok(vec![
        Row::new(
            group,
            &format!("agent peak RSS while a process writes {gib} GiB, no reader"),
            "MiB",
            summarize(&[agent_kib / 1024.0]),
        )
        .note(format!(
            "took {took:.1} s; status {}; kept {} MiB of {} MiB (cap 64 MiB), the rest reported lost",
            w["status"],
            kept >> 20,
            bytes >> 20
        )),
    ])
}

/// How create time, exec latency and daemon memory grow with the number of live sandboxes.
async fn scale(
    client: &Client,
    group: &str,
    daemon_pid: u32,
    quick: bool,
) -> anyhow::Result<Vec<Row>> {
    let levels: &[usize] = if quick { &[1, 5] } else { &[1, 10, 100, 1000] };
    let mut live: Vec<Sandbox> = Vec::new();
    let mut rows = Vec::new();
    for &level in levels {
        // Fill up to `level`, a few at a time.
        while live.len() < level {
            let want = (level - live.len()).min(20);
            let mut tasks = Vec::new();
            for _ in 0..want {
                let c = client.clone();
                tasks.push(tokio::spawn(
                    async move { Sandbox::create().client(&c).await },
                ));
            }
            for t in tasks {
                live.push(t.await??);
            }
        }
        let (mut create, mut exec) = (Vec::new(), Vec::new());
        for i in 0..(if quick { 3 } else { 10 }) {
            let t = Instant::now();
            let extra = Sandbox::create().client(client).await?;
            extra.exec("true", NO_ARGS).await?;
            create.push(ms(t.elapsed()));
            extra.kill().await?;
            let target = &live[(i * 7919) % live.len()];
            let t = Instant::now();
            target.exec("true", NO_ARGS).await?;
            exec.push(ms(t.elapsed()));
        }
        let rss = rss_kib(daemon_pid) as f64 / 1024.0;
        let (agents, pss) = sandbox_agents_pss_kib();
        let note = format!(
            "daemon RSS {rss:.0} MiB; {agents} agents, {:.0} MiB PSS",
            pss as f64 / 1024.0
        );
        rows.push(
            Row::new(
                group,
                &format!("{level} live: create + exec(\"true\")"),
                "ms",
                summarize(&create),
            )
            .note(note),
        );
        rows.push(Row::new(
            group,
            &format!("{level} live: exec(\"true\") in one of them"),
            "ms",
            summarize(&exec),
        ));
    }
    for s in live {
        s.kill().await?;
    }
    Ok(rows)
}
