//! `sandpit tenants ls|get|set`: tenant quotas (`/v1/tenants`; `ls` and `set` need an admin key).

use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use sandpit::{Client, TenantInfo, TenantQuotas};

use super::{print_json, print_table};

#[derive(Debug, Subcommand)]
pub enum TenantsCommand {
    /// List tenants with their quotas and what they hold.
    #[command(
        visible_alias = "list",
        after_help = "Examples:\n  sandpit tenants ls\n  sandpit tenants ls --json"
    )]
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one tenant's quotas and usage (any key may read its own tenant).
    #[command(after_help = "Example:\n  sandpit tenants get team-a")]
    Get {
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Change a tenant's quotas. Quotas not named keep their value; `none` lifts one.
    #[command(after_help = "Examples:\n  \
        sandpit tenants set team-a --max-sandboxes 10 --max-creates-per-second 2\n  \
        sandpit tenants set team-a --max-memory-mb 8192 --max-disk-mb none")]
    Set {
        name: String,
        /// Sandboxes that may exist at once (`none`: no limit).
        #[arg(long, value_name = "N|none", value_parser = parse_u64_or_none)]
        max_sandboxes: Option<Limit<u64>>,
        /// Creates per second, may be fractional (`none`: no limit).
        #[arg(long, value_name = "RATE|none", value_parser = parse_f64_or_none)]
        max_creates_per_second: Option<Limit<f64>>,
        /// The sum of the tenant's sandboxes' memory limits, MiB (`none`: no limit).
        #[arg(long, value_name = "MIB|none", value_parser = parse_u64_or_none)]
        max_memory_mb: Option<Limit<u64>>,
        /// The sum of the tenant's sandboxes' disk sizes, MiB (`none`: no limit).
        #[arg(long, value_name = "MIB|none", value_parser = parse_u64_or_none)]
        max_disk_mb: Option<Limit<u64>>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// A quota flag's value: a number, or `none` for no limit.
#[derive(Debug, Clone, Copy)]
pub struct Limit<T>(Option<T>);

fn parse_u64_or_none(s: &str) -> Result<Limit<u64>, String> {
    if s == "none" {
        return Ok(Limit(None));
    }
    s.parse()
        .map(|v| Limit(Some(v)))
        .map_err(|_| format!("{s:?} is not a whole number or `none`"))
}

fn parse_f64_or_none(s: &str) -> Result<Limit<f64>, String> {
    if s == "none" {
        return Ok(Limit(None));
    }
    s.parse()
        .map(|v| Limit(Some(v)))
        .map_err(|_| format!("{s:?} is not a number or `none`"))
}

fn show<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

fn table(tenants: &[TenantInfo]) {
    let rows: Vec<Vec<String>> = tenants
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                format!("{}/{}", t.usage.sandboxes, show(t.quotas.max_sandboxes)),
                format!("{}/{}", t.usage.memory_mb, show(t.quotas.max_memory_mb)),
                format!("{}/{}", t.usage.disk_mb, show(t.quotas.max_disk_mb)),
                show(t.quotas.max_creates_per_second),
            ]
        })
        .collect();
    print_table(
        &["TENANT", "SANDBOXES", "MEMORY_MB", "DISK_MB", "CREATES/S"],
        &rows,
    );
}

pub async fn run(client: &Client, cmd: TenantsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TenantsCommand::Ls { json } => {
            let tenants = client
                .tenants()
                .list()
                .await
                .context("cannot list tenants")?;
            if json {
                return print_json(&tenants);
            }
            table(&tenants);
        }
        TenantsCommand::Get { name, json } => {
            let t = client
                .tenants()
                .get(&name)
                .await
                .with_context(|| format!("cannot read tenant {name}"))?;
            if json {
                return print_json(&t);
            }
            table(&[t]);
        }
        TenantsCommand::Set {
            name,
            max_sandboxes,
            max_creates_per_second,
            max_memory_mb,
            max_disk_mb,
            json,
        } => {
            let tenants = client.tenants();
            let now = tenants
                .get(&name)
                .await
                .with_context(|| format!("cannot read tenant {name}"))?
                .quotas;
            let quotas = TenantQuotas {
                max_sandboxes: max_sandboxes.map_or(now.max_sandboxes, |l| l.0),
                max_creates_per_second: max_creates_per_second
                    .map_or(now.max_creates_per_second, |l| l.0),
                max_memory_mb: max_memory_mb.map_or(now.max_memory_mb, |l| l.0),
                max_disk_mb: max_disk_mb.map_or(now.max_disk_mb, |l| l.0),
            };
            let t = tenants
                .set_quotas(&name, &quotas)
                .await
                .with_context(|| format!("cannot set the quotas of tenant {name}"))?;
            if json {
                return print_json(&t);
            }
            table(&[t]);
        }
    }
    Ok(ExitCode::SUCCESS)
}
