//! `sandpit-bench`: runs sandpit's benchmarks and writes a JSON file and a markdown table.
//!
//! Every figure is a median (with p99) over repeated runs and stands beside a baseline measured in the
//! same run, because the machines are shared and noisy: ratios travel, absolute numbers do not.
//! `sandpit-bench load` is the load test instead: pass/fail, with figures (see `load`).

mod agent;
mod daemon;
mod e2b;
mod files;
mod load;
mod network;
mod observe;
mod pools;
mod snapshots;
mod stats;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    about = "Run sandpit's benchmarks",
    after_help = "Examples:\n  sandpit-bench --quick agent\n  sandpit-bench load --sandboxes 100 --streams 10 --duration 10s",
    // `load` is a subcommand; anything else is a benchmark group.
    args_conflicts_with_subcommands = true
)]
struct Args {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Small counts and sizes: seconds, for CI (numbers are not meaningful).
    #[arg(long)]
    quick: bool,
    /// The `sandpit` binary to measure.
    #[arg(long, default_value = "target/release/sandpit")]
    sandpit_bin: PathBuf,
    /// Where to write `latest.json` and `latest.md`.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// Benchmark groups to run (default: all): agent, daemon, files, … ; `streams` and `warm` (only when
    /// named) run just the daemon group's output-stream rows, or its warm command rows.
    groups: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Load test: many sandboxes × concurrent streaming commands, every byte checked; fails on any
    /// error.
    Load(load::LoadArgs),
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Cmd::Load(load)) = &args.cmd {
        if !load::main(load)? {
            // The summary said why; an error here would only add a backtrace.
            std::process::exit(1);
        }
        return Ok(());
    }
    let rt = tokio::runtime::Runtime::new()?;
    let all = args.groups.is_empty();
    let want = |g: &str| all || args.groups.iter().any(|x| x == g);
    let mut rows = Vec::new();
    if want("agent") {
        rows.extend(
            rt.block_on(agent::run(&args.sandpit_bin, args.quick))
                .context("agent benchmarks")?,
        );
    }
    if want("daemon") {
        rows.extend(
            rt.block_on(daemon::run(&args.sandpit_bin, args.quick))
                .context("daemon benchmarks")?,
        );
    }
    if args.groups.iter().any(|x| x == "warm") {
        rows.extend(
            rt.block_on(daemon::run_warm(&args.sandpit_bin, args.quick))
                .context("warm command benchmarks")?,
        );
    }
    if args.groups.iter().any(|x| x == "streams") {
        rows.extend(
            rt.block_on(daemon::run_streams(&args.sandpit_bin, args.quick))
                .context("stream benchmarks")?,
        );
    }
    if want("files") {
        rows.extend(
            rt.block_on(files::run(&args.sandpit_bin, args.quick))
                .context("files benchmarks")?,
        );
    }
    if want("pools") {
        rows.extend(
            rt.block_on(pools::run(&args.sandpit_bin, args.quick))
                .context("warm pool benchmarks")?,
        );
    }
    if want("snapshots") {
        rows.extend(
            rt.block_on(snapshots::run(&args.sandpit_bin, args.quick))
                .context("snapshot benchmarks")?,
        );
    }
    if want("e2b") {
        rows.extend(
            e2b::run(&args.sandpit_bin, args.quick).context("E2B compatibility benchmarks")?,
        );
    }
    if want("observe") {
        rows.extend(
            rt.block_on(observe::run(&args.sandpit_bin, args.quick))
                .context("events and webhooks benchmarks")?,
        );
    }
    if want("network") {
        rows.extend(
            rt.block_on(network::run(&args.sandpit_bin, args.quick))
                .context("network benchmarks")?,
        );
    }
    let md = stats::markdown(&rows);
    println!("{md}");
    std::fs::create_dir_all(&args.out)?;
    let json = serde_json::json!({
        "quick": args.quick,
        "host": {"cpus": std::thread::available_parallelism().map_or(1, std::num::NonZero::get)},
        "rows": rows,
    });
    std::fs::write(
        args.out.join("latest.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    std::fs::write(args.out.join("latest.md"), md)?;
    Ok(())
}
