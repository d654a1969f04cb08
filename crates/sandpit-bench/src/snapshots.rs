//! The `snapshots` group: what a snapshot of a sandbox that wrote a lot costs (wall time, and how long
//! the sandbox is frozen), and what a fork costs per new sandbox — each beside a baseline from the same
//! run: `cp -a` of the same bytes from a tmpfs to the state directory's disk (what any copy of the
//! data must pay), an explicit pause + resume (the cheapest freeze the daemon offers), and a cold
//! create to a first result.
//!
//! Needs the isolate backend (root); otherwise the rows say so.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use sandpit::{Client, NO_ARGS, Sandbox};

use crate::daemon::start_daemon;
use crate::stats::{Row, ms, summarize};

const GROUP: &str = "snapshots (isolate backend)";

pub async fn run(bin: &Path, quick: bool) -> anyhow::Result<Vec<Row>> {
    let d = start_daemon(bin)?;
    if d.backend != "isolate" {
        let none = summarize(&[]);
        return Ok(vec![
            Row::new(GROUP, "snapshot", "ms", none)
                .note("not measured: needs root (isolate backend)"),
        ]);
    }
    let client = Client::new(&d.url, &d.key)?;
    let mib: u64 = if quick { 8 } else { 100 };
    let rounds = if quick { 2 } else { 5 };

    // The sandbox writes `mib` MiB (in 4 files), then idles while it is snapshotted.
    let sbx = Sandbox::create()
        .client(&client)
        .disk_mb(mib * 2 + 64)
        .await
        .context("first sandbox (builds `base`)")?;
    let write = format!(
        "mkdir -p /home/user/data && for i in 1 2 3 4; do head -c {} /dev/urandom > /home/user/data/f$i; done",
        (mib << 20) / 4
    );
    let out = sbx.exec(&write, NO_ARGS).await?;
    if out.code() != 0 {
        bail!("writing the data failed: {}", out.stderr());
    }

    // The baseline copy: the same amount of data, tmpfs to the state directory's disk.
    let scratch = tempfile::Builder::new()
        .prefix("spb-src-")
        .tempdir_in("/dev/shm")?;
    for i in 1..=4 {
        let mut f = std::fs::File::create(scratch.path().join(format!("f{i}")))?;
        std::io::copy(
            &mut std::io::Read::take(std::fs::File::open("/dev/urandom")?, (mib << 20) / 4),
            &mut f,
        )?;
    }

    let (mut snap, mut frozen, mut copy, mut pause) = (vec![], vec![], vec![], vec![]);
    for round in 0..rounds {
        let t = Instant::now();
        let s = sbx.snapshot(&format!("bench-{round}")).await?;
        snap.push(ms(t.elapsed()));
        frozen.push(s.frozen_ms);

        let dst = d.state.path().join(format!("copy-{round}"));
        let t = Instant::now();
        let ok = Command::new("cp")
            .arg("-a")
            .arg(scratch.path())
            .arg(&dst)
            .status()?
            .success();
        copy.push(ms(t.elapsed()));
        if !ok {
            bail!("cp -a failed");
        }
        let _ = std::fs::remove_dir_all(&dst);

        let mut p = sbx.clone();
        let t = Instant::now();
        p.pause().await?;
        p.resume().await?;
        pause.push(ms(t.elapsed()));
    }
    let mut rows = vec![
        Row::new(
            GROUP,
            &format!("snapshot of a sandbox that wrote {mib} MiB"),
            "ms",
            summarize(&snap),
        )
        .against(
            &format!("cp -a of {mib} MiB tmpfs → disk"),
            summarize(&copy),
        )
        .note("neither is fsynced: both are on disk at the kernel's writeback"),
        Row::new(
            GROUP,
            "… of which the sandbox was frozen",
            "ms",
            summarize(&frozen),
        )
        .against("pause + resume", summarize(&pause)),
    ];

    // Forks: 10 at once from the sandbox, per new sandbox (wall time / 10), against cold creates.
    let count = if quick { 3 } else { 10 };
    let (mut fork_each, mut cold) = (vec![], vec![]);
    for _ in 0..rounds {
        let t = Instant::now();
        let fork = sbx.fork(count, Sandbox::create()).await?;
        let first = fork.sandboxes[0].exec("true", NO_ARGS).await?;
        fork_each.push(ms(t.elapsed()) / f64::from(count));
        if first.code() != 0 {
            bail!("a forked sandbox failed to run true");
        }
        for f in &fork.sandboxes {
            f.kill().await?;
        }
        let t = Instant::now();
        let c = Sandbox::create().client(&client).await?;
        c.exec("true", NO_ARGS).await?;
        cold.push(ms(t.elapsed()));
        c.kill().await?;
    }
    rows.push(
        Row::new(
            GROUP,
            &format!("fork ×{count} of it, per new sandbox (to a first exec)"),
            "ms",
            summarize(&fork_each),
        )
        .against("cold create → exec(\"true\")", summarize(&cold))
        .note("each fork first snapshots the source (its data included), then creates from it"),
    );
    sbx.kill().await?;
    Ok(rows)
}
