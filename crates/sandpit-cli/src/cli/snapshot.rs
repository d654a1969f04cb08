//! `sandpit snapshot` and `sandpit fork`: a template from a sandbox's filesystem as it is now, and new
//! sandboxes that start from it (`POST /v1/sandboxes/{id}/snapshots`, `POST /v1/sandboxes/{id}/fork`).

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use sandpit::{Client, Sandbox};

use super::print_json;
use super::sandbox::SandboxOpts;

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    sandpit snapshot 3f9a0c1d2e4b5a69 deps-installed\n  \
    sandpit create --template deps-installed")]
pub struct SnapshotArgs {
    /// The sandbox (it keeps running; it is frozen only for the last moment of the copy).
    id: String,
    /// The new template's name (a-z 0-9 . _ -).
    name: String,
    /// Print the snapshot's details as JSON instead of its template name.
    #[arg(long)]
    json: bool,
}

pub async fn snapshot(client: &Client, a: SnapshotArgs) -> anyhow::Result<ExitCode> {
    let sbx = Sandbox::get(client, &a.id)
        .await
        .with_context(|| format!("cannot find sandbox {}", a.id))?;
    let snap = sbx
        .snapshot(&a.name)
        .await
        .with_context(|| format!("cannot snapshot sandbox {}", a.id))?;
    if a.json {
        return print_json(&snap);
    }
    eprintln!(
        "snapshot {}: {} bytes in {} entries over template {}; sandbox frozen {:.1} ms",
        snap.template.name,
        snap.bytes,
        snap.entries,
        snap.template.parent.as_deref().unwrap_or("-"),
        snap.frozen_ms
    );
    println!("{}", snap.template.name);
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    sandpit fork 3f9a0c1d2e4b5a69\n  \
    sandpit fork 3f9a0c1d2e4b5a69 --count 3 -m try=a\n\n\
    Files are copied; running processes and memory are not: each new sandbox starts its own agent.")]
pub struct ForkArgs {
    /// The sandbox to fork.
    id: String,
    /// How many sandboxes to make (1-100).
    #[arg(long, short = 'n', default_value_t = 1)]
    count: u32,
    #[command(flatten)]
    opts: SandboxOpts,
    /// Print the fork's details as JSON instead of the new ids.
    #[arg(long)]
    json: bool,
}

pub async fn fork(client: &Client, a: ForkArgs) -> anyhow::Result<ExitCode> {
    if a.opts.names_template() {
        bail!("--template cannot be given: a fork starts from the source sandbox's filesystem");
    }
    let sbx = Sandbox::get(client, &a.id)
        .await
        .with_context(|| format!("cannot find sandbox {}", a.id))?;
    let fork = sbx
        .fork(a.count, a.opts.builder(client))
        .await
        .with_context(|| format!("cannot fork sandbox {}", a.id))?;
    if a.json {
        let infos: Vec<&sandpit::SandboxInfo> =
            fork.sandboxes.iter().map(Sandbox::cached_info).collect();
        return print_json(&serde_json::json!({
            "snapshot": fork.snapshot,
            "sandboxes": infos,
        }));
    }
    for s in &fork.sandboxes {
        println!("{}", s.id());
    }
    Ok(ExitCode::SUCCESS)
}
