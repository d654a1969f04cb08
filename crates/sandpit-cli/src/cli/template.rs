//! `sandpit template ls|import|build`: the template calls of the daemon (`GET/POST /v1/templates`).

use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use sandpit::Client;

use super::{print_json, print_table};

#[derive(Debug, Subcommand)]
pub enum TemplateCommand {
    /// List templates.
    #[command(after_help = "Examples:\n  sandpit template ls\n  sandpit template ls --json")]
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Import a root filesystem (a directory, a tarball such as `docker export` output, an OCI image
    /// layout or a debootstrap tree) from a path on the daemon's host.
    #[command(after_help = "Examples:\n  \
        sandpit template import alpine /srv/alpine-rootfs.tar\n  \
        sandpit template import debian /srv/bookworm --format debootstrap\n  \
        sandpit template import app /srv/app-oci --format oci")]
    Import {
        /// The new template's name.
        name: String,
        /// Path on the daemon's host.
        source: String,
        /// Source format [default: guessed by the daemon].
        #[arg(long, value_parser = ["dir", "tar", "oci", "debootstrap"])]
        format: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Build a template from another by running shell commands in it.
    #[command(after_help = "Examples:\n  \
        sandpit template build py --from debian --run 'apt-get update' --run 'apt-get install -y python3'")]
    Build {
        /// The new template's name.
        name: String,
        /// The template to start from.
        #[arg(long, default_value = "base", value_name = "TEMPLATE")]
        from: String,
        /// A shell command to run, as root (repeatable, in order).
        #[arg(long, value_name = "CMD")]
        run: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(client: &Client, cmd: TemplateCommand) -> anyhow::Result<ExitCode> {
    let t = client.templates();
    match cmd {
        TemplateCommand::Ls { json } => {
            let list = t.list().await.context("cannot list templates")?;
            if json {
                return print_json(&list);
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|t| {
                    let extra = t
                        .extra
                        .iter()
                        .map(|(k, v)| {
                            format!(
                                "{k}={}",
                                v.as_str().map_or_else(|| v.to_string(), str::to_owned)
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(" ");
                    vec![t.name.clone(), extra]
                })
                .collect();
            print_table(&["NAME", "DETAILS"], &rows);
            Ok(ExitCode::SUCCESS)
        }
        TemplateCommand::Import {
            name,
            source,
            format,
            json,
        } => {
            let info = t
                .import(&name, &source, format.as_deref())
                .await
                .with_context(|| format!("cannot import template {name} from {source}"))?;
            if json {
                return print_json(&info);
            }
            println!("{}", info.name);
            Ok(ExitCode::SUCCESS)
        }
        TemplateCommand::Build {
            name,
            from,
            run,
            json,
        } => {
            let info = t
                .build(&name, &from, &run)
                .await
                .with_context(|| format!("cannot build template {name} from {from}"))?;
            if json {
                return print_json(&info);
            }
            println!("{}", info.name);
            Ok(ExitCode::SUCCESS)
        }
    }
}
