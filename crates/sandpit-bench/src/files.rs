//! Files benchmarks through the Rust SDK (issue 15's targets): a large file up and down beside `cat src >
//! dst` on the host, with the growth of the daemon's and the agent's RSS during the transfer; 1,000 files of 4
//! KiB in with `write_files` (one tar request) and out as one tar; and the latency from a writer's `close`
//! inside the sandbox to the watch event reaching the client.
#![allow(
    clippy::cast_precision_loss,
    clippy::too_many_lines,
    clippy::many_single_char_names
)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use futures_util::StreamExt as _;
use sandpit::{Client, Sandbox, WriteEntry};

use crate::daemon::{rss_kib, start_daemon};
use crate::stats::{Row, ms, summarize};

/// Highest RSS (KiB) of `pids` while `flag` is set, sampled every 10 ms, above the level before.
fn sample_rss(pids: Vec<u32>, flag: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    let before: u64 = pids.iter().map(|p| rss_kib(*p)).sum();
    let peak = Arc::new(AtomicU64::new(before));
    std::thread::spawn(move || {
        while flag.load(Ordering::SeqCst) {
            let now: u64 = pids.iter().map(|p| rss_kib(*p)).sum();
            peak.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(10));
        }
        peak.load(Ordering::SeqCst).saturating_sub(before)
    })
}

/// The host pid of a sandbox's agent (isolate backend), from its handle.
fn agent_pid(state: &Path, id: &str) -> Option<u32> {
    let h: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(state.join(format!("isolate/sandboxes/{id}/handle.json"))).ok()?,
    )
    .ok()?;
    h["init_pid"].as_u64().map(|p| p as u32)
}

/// CPU seconds of the daemon and the agent together.
fn server_cpu(pids: &[u32]) -> f64 {
    pids.iter().map(|p| crate::load::cpu_secs(*p)).sum()
}

/// CPU seconds of this process's finished children (`cat`).
fn children_cpu_secs() -> f64 {
    // SAFETY: getrusage writes one `rusage` into the zeroed struct it is given.
    let u = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &raw mut u);
        u
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(u.ru_utime) + secs(u.ru_stime)
}

fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / f64::from(1 << 20) / d.as_secs_f64()
}

pub async fn run(bin: &Path, quick: bool) -> anyhow::Result<Vec<Row>> {
    let d = start_daemon(bin)?;
    let client = Client::new(&d.url, &d.key)?;
    let group = format!("files ({} backend)", d.backend);
    let size: u64 = if quick { 32 << 20 } else { 1 << 30 };
    // The baseline writes to a disk whose page cache and writeback make single runs vary by 2x: five.
    let runs = if quick { 2 } else { 5 };
    let sbx = Sandbox::create()
        .client(&client)
        .disk_mb(size / (1 << 20) * 2 + 256)
        .await
        .context("creating the sandbox")?;
    let files = sbx.files().user("root");
    let mut rows = Vec::new();

    // A big file: host `cat` beside an upload and a download through the daemon.
    let dir = tempfile::Builder::new()
        .prefix("spb-files-")
        .tempdir_in("/var/tmp")?;
    let src = dir.path().join("src");
    {
        let mut f = std::fs::File::create(&src)?;
        let chunk: Vec<u8> = (0..1u32 << 20)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        for _ in 0..size >> 20 {
            std::io::Write::write_all(&mut f, &chunk)?;
        }
    }
    let mut cat = Vec::new();
    let mut cat_shm = Vec::new();
    let shm_dir = tempfile::Builder::new()
        .prefix("spb-files-")
        .tempdir_in("/dev/shm")?;
    let mut up = Vec::new();
    let mut down = Vec::new();
    let mut rss_up = Vec::new();
    let mut rss_down = Vec::new();
    let (mut cpu_cat, mut cpu_up, mut cpu_down) = (Vec::new(), Vec::new(), Vec::new());
    let gib = size as f64 / f64::from(1u32 << 30);
    let mut pids = vec![d.child.id()];
    pids.extend(agent_pid(d.state.path(), sbx.id()));
    for i in 0..runs {
        let dst = dir.path().join(format!("cat-{i}"));
        let children0 = children_cpu_secs();
        let t = Instant::now();
        let ok = Command::new("sh")
            .arg("-c")
            .arg(format!("cat '{}' > '{}'", src.display(), dst.display()))
            .status()?
            .success();
        if !ok {
            bail!("cat failed");
        }
        cat.push(mbps(size, t.elapsed()));
        cpu_cat.push((children_cpu_secs() - children0) / gib);
        std::fs::remove_file(&dst)?;
        // The same into tmpfs, the kind of file system a sandbox's writable layer is: what writing the
        // upload's pages costs on this host, whoever does it.
        let shm = shm_dir.path().join(format!("cat-{i}"));
        let t = Instant::now();
        let ok = Command::new("sh")
            .arg("-c")
            .arg(format!("cat '{}' > '{}'", src.display(), shm.display()))
            .status()?
            .success();
        if !ok {
            bail!("cat into tmpfs failed");
        }
        cat_shm.push(mbps(size, t.elapsed()));
        std::fs::remove_file(&shm)?;

        let flag = Arc::new(AtomicBool::new(true));
        let sampler = sample_rss(pids.clone(), flag.clone());
        let cpu0 = server_cpu(&pids);
        let t = Instant::now();
        let e = files.write_file("/tmp/big", &src).await?;
        up.push(mbps(size, t.elapsed()));
        cpu_up.push((server_cpu(&pids) - cpu0) / gib);
        flag.store(false, Ordering::SeqCst);
        rss_up.push(sampler.join().unwrap_or(0) as f64 / 1024.0);
        if e.size != size {
            bail!("uploaded {} bytes of {size}", e.size);
        }

        let back = dir.path().join(format!("down-{i}"));
        let flag = Arc::new(AtomicBool::new(true));
        let sampler = sample_rss(pids.clone(), flag.clone());
        let t = Instant::now();
        let cpu0 = server_cpu(&pids);
        let n = files.read_file("/tmp/big", &back).await?;
        down.push(mbps(size, t.elapsed()));
        cpu_down.push((server_cpu(&pids) - cpu0) / gib);
        flag.store(false, Ordering::SeqCst);
        rss_down.push(sampler.join().unwrap_or(0) as f64 / 1024.0);
        if n != size {
            bail!("downloaded {n} bytes of {size}");
        }
        std::fs::remove_file(&back)?;
    }
    let label = format!("{} MiB", size >> 20);
    let cat_s = summarize(&cat);
    rows.push(
        Row::new(
            &group,
            &format!("upload {label} (write_file)"),
            "MiB/s",
            summarize(&up),
        )
        .against("host cat src > dst", cat_s)
        .note("target: ratio ≥ 0.5"),
    );
    rows.push(
        Row::new(
            &group,
            &format!("upload {label} (write_file), against tmpfs"),
            "MiB/s",
            summarize(&up),
        )
        .against(
            "host cat src > dst on tmpfs (/dev/shm)",
            summarize(&cat_shm),
        )
        .note("the sandbox's writable layer is tmpfs: its page writes bound the upload"),
    );
    rows.push(
        Row::new(
            &group,
            &format!("download {label} (read_file)"),
            "MiB/s",
            summarize(&down),
        )
        .against("host cat src > dst", cat_s)
        .note("target: ratio ≥ 0.5"),
    );
    let cat_cpu = summarize(&cpu_cat);
    for (what, v) in [("upload", &cpu_up), ("download", &cpu_down)] {
        rows.push(
            Row::new(
                &group,
                &format!("daemon + agent CPU per GiB, {what}"),
                "s",
                summarize(v),
            )
            .against("host cat src > dst, CPU per GiB", cat_cpu)
            .note("user + system time; the client's own is not counted"),
        );
    }
    rows.push(
        Row::new(
            &group,
            "daemon + agent RSS growth during the upload",
            "MiB",
            summarize(&rss_up),
        )
        .note(format!("target ≤ 32 MiB; pids sampled: {}", pids.len())),
    );
    rows.push(
        Row::new(
            &group,
            "daemon + agent RSS growth during the download",
            "MiB",
            summarize(&rss_down),
        )
        .note("target ≤ 32 MiB"),
    );
    files.remove("/tmp/big").await?;

    // 1,000 small files in one request, and out as one tar.
    let n = if quick { 100 } else { 1000 };
    let payload = vec![b'x'; 4096];
    let mut tin = Vec::new();
    let mut tout = Vec::new();
    for i in 0..if quick { 2 } else { 5 } {
        let entries: Vec<_> = (0..n)
            .map(|k| WriteEntry::new(format!("/tmp/small{i}/d{}/f{k}", k % 20), payload.clone()))
            .collect();
        let t = Instant::now();
        let written = files.write_files(entries).await?;
        tin.push(ms(t.elapsed()));
        if written.len() != n {
            bail!("write_files wrote {} of {n}", written.len());
        }
        let t = Instant::now();
        let mut s = files.download_tar(format!("/tmp/small{i}")).await?;
        let mut bytes = 0usize;
        while let Some(c) = s.next().await {
            bytes += c?.len();
        }
        tout.push(ms(t.elapsed()));
        if bytes < n * 4096 {
            bail!("the tar of {n} files had {bytes} bytes");
        }
    }
    rows.push(
        Row::new(
            &group,
            &format!("{n} × 4 KiB in (write_files: one tar request)"),
            "ms",
            summarize(&tin),
        )
        .note("target ≤ 1000 ms"),
    );
    rows.push(
        Row::new(
            &group,
            &format!("{n} × 4 KiB out (GET /files/tar)"),
            "ms",
            summarize(&tout),
        )
        .note("target ≤ 1000 ms"),
    );

    // Watch latency: a writer in the sandbox prints the time of each close; the client notes arrivals.
    let count = if quick { 5 } else { 50 };
    sbx.files().make_dir("/tmp/w").await?;
    let arrivals: Arc<std::sync::Mutex<Vec<(String, SystemTime)>>> = Arc::default();
    let mut w = files.watch_dir("/tmp/w", false).await?;
    let seen = arrivals.clone();
    let reader = tokio::spawn(async move {
        while let Some(Ok(ev)) = w.next().await {
            if ev.kind == sandpit::FsEventType::Write {
                if let Some(p) = ev.path {
                    seen.lock().expect("lock").push((p, SystemTime::now()));
                }
            }
        }
    });
    let script = format!(
        "import time\nfor i in range({count}):\n    f = open('/tmp/w/f%d' % i, 'w')\n    f.write('x')\n    f.close()\n    print(i, time.time_ns(), flush=True)\n    time.sleep(0.05)\n"
    );
    let out = sbx.exec("python3", ["-c", script.as_str()]).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    reader.abort();
    let arrivals = arrivals.lock().expect("lock").clone();
    let mut lat = Vec::new();
    for line in out.stdout().lines() {
        let mut it = line.split_whitespace();
        let (Some(i), Some(ns)) = (it.next(), it.next().and_then(|s| s.parse::<u64>().ok())) else {
            continue;
        };
        let closed = SystemTime::UNIX_EPOCH + Duration::from_nanos(ns);
        let path = format!("/tmp/w/f{i}");
        if let Some((_, at)) = arrivals.iter().find(|(p, _)| *p == path) {
            // The event may even arrive before the close (the first write is reported): 0 then.
            lat.push(at.duration_since(closed).map_or(0.0, ms));
        }
    }
    if lat.is_empty() {
        bail!(
            "no watch event matched a write (stdout {:?}, stderr {:?}, {} events)",
            out.stdout(),
            out.stderr(),
            arrivals.len()
        );
    }
    rows.push(
        Row::new(
            &group,
            "watch: writer's close → event at the client",
            "ms",
            summarize(&lat),
        )
        .note(format!(
            "target median ≤ 10 ms; {} of {count} writes matched",
            lat.len()
        )),
    );
    sbx.kill().await?;
    Ok(rows)
}
