//! The `pools` group: creates served by a warm pool against cold ones, in the same run — one at a time,
//! and a burst of 100 at once, each to its first `echo hi` result (the computesdk/benchmarks measure);
//! and a neighbour's warm `exec` while a pool refills after such a burst, against the same exec idle.
//!
//! Needs the isolate backend (root); otherwise the rows say so.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sandpit::{Client, NO_ARGS, Sandbox};

use crate::daemon::start_daemon;
use crate::stats::{Row, ms, summarize};

const GROUP: &str = "warm pools (isolate backend)";

/// Create → first `echo hi` result, and the sandbox.
async fn to_first_result(client: &Client) -> anyhow::Result<(f64, Sandbox)> {
    let t = Instant::now();
    let sbx = Sandbox::create().client(client).await?;
    let out = sbx.exec("echo", ["hi"]).await?;
    let took = ms(t.elapsed());
    if out.stdout() != "hi\n" {
        bail!("echo hi gave {:?}", out.stdout());
    }
    Ok((took, sbx))
}

/// `n` creates at once, each timed from the burst's start to its first result.
async fn burst(client: &Client, n: usize) -> anyhow::Result<Vec<f64>> {
    let start = Instant::now();
    let all = futures_util::future::join_all((0..n).map(|_| async move {
        let sbx = Sandbox::create().client(client).await?;
        let out = sbx.exec("echo", ["hi"]).await?;
        let took = ms(start.elapsed());
        anyhow::ensure!(out.stdout() == "hi\n", "echo hi gave {:?}", out.stdout());
        Ok::<_, anyhow::Error>((took, sbx))
    }))
    .await;
    let mut times = Vec::with_capacity(n);
    let mut failure = None;
    for r in all {
        match r {
            Ok((t, sbx)) => {
                times.push(t);
                sbx.kill().await?;
            }
            Err(e) => failure = Some(e),
        }
    }
    if let Some(e) = failure {
        return Err(e.context("a create of the burst failed"));
    }
    Ok(times)
}

/// The smallest x86-64 Linux program: one ELF header, one loadable segment, and `exit(0)` (`mov eax, 60;
/// xor edi, edi; syscall`) at 0x400078. No libc, so starting it runs no start-up code at all.
#[cfg(target_arch = "x86_64")]
fn no_libc_program() -> Vec<u8> {
    const BASE: u64 = 0x40_0000;
    const CODE: [u8; 9] = [0xb8, 0x3c, 0, 0, 0, 0x31, 0xff, 0x0f, 0x05];
    let size = (64 + 56 + CODE.len()) as u64;
    let mut elf = Vec::with_capacity(size as usize);
    // ELF header: 64-bit, little-endian, version 1, System V; an executable for x86-64.
    elf.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // e_type: EXEC
    elf.extend_from_slice(&0x3eu16.to_le_bytes()); // e_machine: x86-64
    elf.extend_from_slice(&1u32.to_le_bytes()); // e_version
    elf.extend_from_slice(&(BASE + 120).to_le_bytes()); // e_entry: just past the two headers
    elf.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
    elf.extend_from_slice(&0u64.to_le_bytes()); // e_shoff: no sections
    elf.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    for v in [64u16, 56, 1, 64, 0, 0] {
        // e_ehsize, e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx
        elf.extend_from_slice(&v.to_le_bytes());
    }
    // Program header: the whole file loaded read + execute at BASE.
    elf.extend_from_slice(&1u32.to_le_bytes()); // p_type: LOAD
    elf.extend_from_slice(&5u32.to_le_bytes()); // p_flags: R | X
    for v in [0, BASE, BASE, size, size, 0x1000u64] {
        // p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align
        elf.extend_from_slice(&v.to_le_bytes());
    }
    elf.extend_from_slice(&CODE);
    elf
}

/// The machine's floor under every exec, and so under every create (the agent is one exec, the first
/// command another): spawn → exit of a glibc program (`/bin/true`), against the same for a program with
/// no libc. The difference is glibc's start-up, which on a virtual machine is mostly `CPUID` (glibc
/// probes the CPU's features and cache sizes with dozens of them, each a trap to the hypervisor).
#[cfg(target_arch = "x86_64")]
fn exec_floor(n: usize) -> anyhow::Result<Row> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().context("a temporary directory")?;
    let bare = dir.path().join("exit0");
    std::fs::write(&bare, no_libc_program()).context("writing the no-libc program")?;
    std::fs::set_permissions(&bare, std::fs::Permissions::from_mode(0o755))?;
    let run = |p: &Path| -> anyhow::Result<f64> {
        let t = Instant::now();
        let st = std::process::Command::new(p)
            .status()
            .with_context(|| format!("running {}", p.display()))?;
        anyhow::ensure!(st.success(), "{} exited with {st}", p.display());
        Ok(ms(t.elapsed()))
    };
    let glibc = Path::new("/bin/true");
    let (mut with, mut without) = (Vec::with_capacity(n), Vec::with_capacity(n));
    // Alternated, so that both see the same machine.
    for _ in 0..n {
        with.push(run(glibc)?);
        without.push(run(&bare)?);
    }
    Ok(Row::new(
        GROUP,
        "spawn → exit of a glibc program (/bin/true): the floor under each exec",
        "ms",
        summarize(&with),
    )
    .against("the same, a program with no libc", summarize(&without))
    .note("the difference is glibc's start-up (CPU feature probing, slow under a hypervisor); the agent's start and the first command each pay it once"))
}

async fn until_ready(client: &Client, size: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let p = client.templates().pool("base").await?;
        if p.ready >= size && p.filling == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the pool never filled: {p:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn run(bin: &Path, quick: bool) -> anyhow::Result<Vec<Row>> {
    let d = start_daemon(bin)?;
    if d.backend != "isolate" {
        return Ok(vec![
            Row::new(GROUP, "create from a pool", "ms", summarize(&[]))
                .note("not measured: needs root (isolate backend)"),
        ]);
    }
    let client = Client::new(&d.url, &d.key)?;
    // The first create builds `base` (seconds, once).
    let (_, warm) = to_first_result(&client).await.context("first sandbox")?;
    warm.kill().await?;
    let (n, burst_n) = if quick { (3, 10) } else { (20, 100) };

    // One at a time: cold, then from a pool that is refilled (and waited for) between two.
    let mut cold = Vec::new();
    // What each step of the isolator's create took (`create_steps` in the sandbox's handle).
    let mut steps: Vec<(String, Vec<f64>)> = Vec::new();
    for _ in 0..n {
        let (t, sbx) = to_first_result(&client).await?;
        cold.push(t);
        let handle = d
            .state
            .path()
            .join("isolate/sandboxes")
            .join(sbx.id())
            .join("handle.json");
        let h: serde_json::Value = serde_json::from_slice(&std::fs::read(&handle)?)?;
        for (i, step) in h["create_steps"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let name = step[0].as_str().unwrap_or("?").to_owned();
            let us = step[1].as_f64().unwrap_or(0.0);
            match steps.get_mut(i) {
                Some((_, v)) => v.push(us / 1000.0),
                None => steps.push((name, vec![us / 1000.0])),
            }
        }
        sbx.kill().await?;
    }
    client.templates().set_pool("base", 2).await?;
    let mut pooled = Vec::new();
    for _ in 0..n {
        until_ready(&client, 2).await?;
        let (t, sbx) = to_first_result(&client).await?;
        pooled.push(t);
        sbx.kill().await?;
    }
    let mut rows = vec![
        Row::new(
            GROUP,
            "create → first `echo hi`, from a pool",
            "ms",
            summarize(&pooled),
        )
        .against("the same, cold", summarize(&cold)),
    ];
    let cold_s = summarize(&cold);
    for (name, v) in steps {
        rows.push(
            Row::new(
                GROUP,
                &format!("cold create step: {name}"),
                "ms",
                summarize(&v),
            )
            .against("cold create → first `echo hi`", cold_s),
        );
    }

    #[cfg(target_arch = "x86_64")]
    rows.push(exec_floor(if quick { 20 } else { 200 })?);

    // A burst: first with no pool, then with a full pool of the burst's size.
    client.templates().set_pool("base", 0).await?;
    until_ready(&client, 0).await?;
    let cold_burst = burst(&client, burst_n).await?;
    client.templates().set_pool("base", burst_n as u64).await?;
    until_ready(&client, burst_n as u64).await?;
    let pooled_burst = burst(&client, burst_n).await?;
    rows.push(
        Row::new(
            GROUP,
            &format!("{burst_n} creates at once, each to its first `echo hi`, pool of {burst_n}"),
            "ms",
            summarize(&pooled_burst),
        )
        .against("the same burst with no pool", summarize(&cold_burst)),
    );

    // A neighbour's warm exec while the pool refills the burst, against the same exec with the pool
    // full and quiet.
    let neighbour = Sandbox::create().client(&client).await?;
    let sample = |k: usize| {
        let neighbour = neighbour.clone();
        async move {
            let mut v = Vec::with_capacity(k);
            for _ in 0..k {
                let t = Instant::now();
                neighbour.exec("true", NO_ARGS).await?;
                v.push(ms(t.elapsed()));
            }
            Ok::<_, anyhow::Error>(v)
        }
    };
    until_ready(&client, burst_n as u64).await?;
    let k = if quick { 10 } else { 100 };
    let idle = sample(k).await?;
    // Claim the whole pool so that it refills, then measure while it does.
    let claimed = futures_util::future::join_all(
        (0..burst_n).map(|_| Sandbox::create().client(&client).into_future()),
    )
    .await;
    let mut busy = Vec::new();
    let refill_start = Instant::now();
    while client.templates().pool("base").await?.ready < burst_n as u64 && busy.len() < 10 * k {
        busy.extend(sample(5).await?);
    }
    let refill = refill_start.elapsed();
    rows.push(
        Row::new(
            GROUP,
            "warm exec(\"true\") while the pool refills",
            "ms",
            summarize(&busy),
        )
        .against("the same with the pool full", summarize(&idle))
        .note(format!(
            "{burst_n} pooled sandboxes refilled one at a time in {:.1} s",
            refill.as_secs_f64()
        )),
    );
    for c in claimed.into_iter().flatten() {
        c.kill().await?;
    }
    neighbour.kill().await?;
    client.templates().set_pool("base", 0).await?;
    Ok(rows)
}
