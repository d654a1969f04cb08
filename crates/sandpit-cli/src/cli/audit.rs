//! `sandpit audit`: read the audit log (`GET /v1/audit`; needs an admin key).

use std::process::ExitCode;

use anyhow::Context;
use sandpit::{AuditQuery, Client};

use super::{print_json, print_table};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    sandpit audit\n  \
    sandpit audit --tenant team-a --since 2026-12-04T10:00:00Z\n  \
    sandpit audit --sandbox 3f9a0c1d2e4b5a69 --json")]
pub struct AuditArgs {
    /// Rows at or after this time (RFC 3339, or milliseconds since the epoch).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Rows after this id (the `next_after` of a previous page).
    #[arg(long, value_name = "ID")]
    after: Option<u64>,
    /// Only this tenant's keys' calls.
    #[arg(long)]
    tenant: Option<String>,
    /// Only calls on this sandbox.
    #[arg(long, value_name = "ID")]
    sandbox: Option<String>,
    /// At most this many rows [default: 100; at most 1000].
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Print the whole answer as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(client: &Client, a: AuditArgs) -> anyhow::Result<ExitCode> {
    let page = client
        .audit()
        .list(&AuditQuery {
            since: a.since,
            after: a.after,
            tenant: a.tenant,
            sandbox: a.sandbox,
            limit: a.limit,
        })
        .await
        .context("cannot read the audit log")?;
    if a.json {
        return print_json(&page);
    }
    let rows: Vec<Vec<String>> = page
        .entries
        .iter()
        .map(|e| {
            vec![
                e.id.to_string(),
                e.at.clone(),
                e.key_id.clone(),
                e.tenant.clone(),
                e.action.clone(),
                e.sandbox.clone().unwrap_or_else(|| "-".into()),
                format!("{} {}", e.status, e.outcome),
                e.detail.clone().unwrap_or_default(),
            ]
        })
        .collect();
    print_table(
        &[
            "ID", "AT", "KEY", "TENANT", "ACTION", "SANDBOX", "STATUS", "DETAIL",
        ],
        &rows,
    );
    if let Some(next) = page.next_after {
        eprintln!("more: sandpit audit --after {next}");
    }
    Ok(ExitCode::SUCCESS)
}
