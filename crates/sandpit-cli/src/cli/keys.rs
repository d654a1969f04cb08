//! `sandpit keys create|ls|revoke`: API keys with scopes (`/v1/keys`; needs an admin key).

use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use sandpit::{Client, CreateKeyRequest, Scope};

use super::{print_json, print_table};

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make a key and print it (its secret is shown this once).
    #[command(after_help = "Examples:\n  \
        sandpit keys create --name ci-bot --scope sandboxes\n  \
        sandpit keys create --name dashboard --scope read --tenant team-a --expires-in 86400")]
    Create {
        /// A label for people (letters, digits, . _ -).
        #[arg(long)]
        name: String,
        /// What the key may do: admin, sandboxes or read (repeat for more than one).
        #[arg(long = "scope", required = true, value_parser = parse_scope)]
        scopes: Vec<Scope>,
        /// The key's tenant [default: default].
        #[arg(long)]
        tenant: Option<String>,
        /// Seconds until the key stops working [default: never].
        #[arg(long, value_name = "SECS")]
        expires_in: Option<u64>,
        /// Print the whole answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List keys (never their secrets).
    #[command(
        visible_alias = "list",
        after_help = "Examples:\n  sandpit keys ls\n  sandpit keys ls --json"
    )]
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke keys: they stop working at their next request.
    #[command(after_help = "Example:\n  sandpit keys revoke k_3f9a0c1d2e4b5a69")]
    Revoke {
        /// Key ids (`k_…`, from `sandpit keys ls`).
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

fn parse_scope(s: &str) -> Result<Scope, String> {
    s.parse()
}

pub async fn run(client: &Client, cmd: KeysCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KeysCommand::Create {
            name,
            scopes,
            tenant,
            expires_in,
            json,
        } => {
            let made = client
                .keys()
                .create(&CreateKeyRequest {
                    name,
                    scopes,
                    tenant,
                    expires_in,
                })
                .await
                .context("cannot create the key")?;
            if json {
                return print_json(&made);
            }
            eprintln!(
                "created key {} ({}, tenant {}); it is shown only now:",
                made.info.id, made.info.name, made.info.tenant
            );
            println!("{}", made.key);
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Ls { json } => {
            let keys = client.keys().list().await.context("cannot list keys")?;
            if json {
                return print_json(&keys);
            }
            let rows: Vec<Vec<String>> = keys
                .iter()
                .map(|k| {
                    vec![
                        k.id.clone(),
                        k.name.clone(),
                        k.tenant.clone(),
                        k.scopes
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(","),
                        k.created_at.clone(),
                        k.expires_at.clone().unwrap_or_else(|| "never".into()),
                    ]
                })
                .collect();
            print_table(
                &["ID", "NAME", "TENANT", "SCOPES", "CREATED", "EXPIRES"],
                &rows,
            );
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Revoke { ids } => {
            let mut failed = false;
            for id in ids {
                match client.keys().revoke(&id).await {
                    Ok(()) => println!("{id}"),
                    Err(e) => {
                        eprintln!("sandpit: error: cannot revoke {id}: {e}");
                        failed = true;
                    }
                }
            }
            Ok(if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}
