//! `sandpit template ls|import|build|export|upload|pool|rm`: the daemon's template calls (`/v1/templates`).
//!
//! Imports and builds run in the daemon; these verbs start one and follow its progress until it is
//! ready, printing each progress line (debootstrap's included) so a long build shows it is alive.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use sandpit::{Client, DebianSource, TemplateSource};

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
    /// Import a root filesystem from a path on the daemon's host: a directory, a tarball (e.g. `docker
    /// export` output) or an OCI image layout / `docker save` archive. The path must lie under one of
    /// the daemon's `--import-root` directories.
    #[command(after_help = "Examples:\n  \
        sandpit template import alpine /srv/alpine-rootfs.tar\n  \
        sandpit template import tools /srv/rootfs-dir\n  \
        sandpit template import app /srv/app-image.tar --format oci")]
    Import {
        /// The new template's name (a-z 0-9 . _ -).
        name: String,
        /// Path on the daemon's host.
        source: String,
        /// Source format [default: `dir` for a directory name ending in `/`, `tar` for .tar/.tgz/.tar.gz,
        /// else `dir`]. `oci` must be given explicitly.
        #[arg(long, value_parser = ["dir", "tar", "oci"])]
        format: Option<String>,
        /// Return as soon as the daemon accepted the import, without following it.
        #[arg(long)]
        no_wait: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Build a Debian template with debootstrap (minbase) in the daemon, following its progress.
    #[command(after_help = "Examples:\n  \
        sandpit template build debian\n  \
        sandpit template build trixie --suite trixie --mirror http://deb.debian.org/debian")]
    Build {
        /// The new template's name (a-z 0-9 . _ -).
        name: String,
        /// Debian release [default: bookworm].
        #[arg(long)]
        suite: Option<String>,
        /// Debian mirror URL [default: debootstrap's].
        #[arg(long)]
        mirror: Option<String>,
        /// Return as soon as the daemon accepted the build.
        #[arg(long)]
        no_wait: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a template to a file: a zstd-compressed tar of the root filesystem a sandbox made from it
    /// starts with (a snapshot's layers merged), for `sandpit template upload` on this host or another.
    #[command(after_help = "Examples:\n  \
        sandpit template export deps-installed\n  \
        sandpit template export deps-installed -o /backups/deps.tar.zst")]
    Export {
        /// The template's name.
        name: String,
        /// The file to write [default: NAME.tar.zst].
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<std::path::PathBuf>,
    },
    /// Import a template from a file on this machine (an export, or any root filesystem tar: plain,
    /// gzip or zstd), sent to the daemon. Needs an admin key.
    #[command(after_help = "Examples:\n  \
        sandpit template upload deps-installed deps-installed.tar.zst\n  \
        sandpit template upload alpine alpine-minirootfs.tar.gz")]
    Upload {
        /// The new template's name (a-z 0-9 . _ -).
        name: String,
        /// The archive on this machine.
        file: std::path::PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a template's warm pool, or set its size with --size (admin): that many sandboxes wait ready
    /// and a create that names no limit, disk size, network policy or volume takes one.
    #[command(after_help = "Examples:\n  \
        sandpit template pool base\n  \
        sandpit template pool base --size 8\n  \
        sandpit template pool base --size 0")]
    Pool {
        /// The template's name.
        name: String,
        /// How many sandboxes should wait (0-256; 0 removes the pool).
        #[arg(long)]
        size: Option<u64>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a template no sandbox uses.
    #[command(after_help = "Example:\n  sandpit template rm alpine")]
    Rm {
        /// The template's name.
        name: String,
    },
}

fn guess_source(path: String, format: Option<&str>) -> TemplateSource {
    let tarball = [".tar", ".tar.gz", ".tgz"]
        .iter()
        .any(|s| path.ends_with(s));
    match format {
        Some("oci") => TemplateSource::Oci(path),
        Some("tar") => TemplateSource::Tar(path),
        None if tarball => TemplateSource::Tar(path),
        Some(_) | None => TemplateSource::Dir(path),
    }
}

async fn follow(
    client: &Client,
    name: &str,
    source: TemplateSource,
    no_wait: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let t = client.templates();
    let build = t
        .start(name, source)
        .await
        .with_context(|| format!("cannot start building template {name}"))?;
    if no_wait {
        return if json {
            print_json(&build)
        } else {
            println!("{name}: building (follow with: sandpit template ls)");
            Ok(ExitCode::SUCCESS)
        };
    }
    let started = std::time::Instant::now();
    let info = t
        .wait(name, |line| {
            let secs = started.elapsed().as_secs();
            let _ = writeln!(
                std::io::stderr(),
                "[{:>3}:{:02}] {line}",
                secs / 60,
                secs % 60
            );
        })
        .await
        .with_context(|| format!("template {name} was not built"))?;
    if json {
        return print_json(&info);
    }
    println!(
        "{} (built in {:.1} s)",
        info.name,
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn run(client: &Client, cmd: TemplateCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TemplateCommand::Ls { json } => {
            let list = client
                .templates()
                .list()
                .await
                .context("cannot list templates")?;
            if json {
                return print_json(&list);
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|t| {
                    vec![
                        t.name.clone(),
                        t.created_at.clone(),
                        t.parent.clone().unwrap_or_else(|| "-".into()),
                        t.source.clone(),
                    ]
                })
                .collect();
            print_table(&["NAME", "CREATED", "PARENT", "SOURCE"], &rows);
            Ok(ExitCode::SUCCESS)
        }
        TemplateCommand::Import {
            name,
            source,
            format,
            no_wait,
            json,
        } => {
            let src = guess_source(source, format.as_deref());
            follow(client, &name, src, no_wait, json).await
        }
        TemplateCommand::Build {
            name,
            suite,
            mirror,
            no_wait,
            json,
        } => {
            let src = TemplateSource::Debian(DebianSource { suite, mirror });
            follow(client, &name, src, no_wait, json).await
        }
        TemplateCommand::Export { name, output } => {
            let out = output.unwrap_or_else(|| format!("{name}.tar.zst").into());
            let started = std::time::Instant::now();
            let bytes = client
                .templates()
                .export_to_file(&name, &out)
                .await
                .with_context(|| format!("cannot export template {name}"))?;
            eprintln!(
                "exported {name}: {bytes} bytes in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            println!("{}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        TemplateCommand::Upload { name, file, json } => {
            let info = client
                .templates()
                .import_archive(&name, &file)
                .await
                .with_context(|| format!("cannot import {} as template {name}", file.display()))?;
            if json {
                return print_json(&info);
            }
            println!("{}", info.name);
            Ok(ExitCode::SUCCESS)
        }
        TemplateCommand::Pool { name, size, json } => {
            let t = client.templates();
            let p = match size {
                Some(n) => t.set_pool(&name, n).await,
                None => t.pool(&name).await,
            }
            .with_context(|| format!("cannot read or set the pool of template {name}"))?;
            if json {
                return print_json(&p);
            }
            print_table(
                &["TEMPLATE", "SIZE", "READY", "FILLING"],
                &[vec![
                    p.template,
                    p.size.to_string(),
                    p.ready.to_string(),
                    p.filling.to_string(),
                ]],
            );
            Ok(ExitCode::SUCCESS)
        }
        TemplateCommand::Rm { name } => {
            client
                .templates()
                .delete(&name)
                .await
                .with_context(|| format!("cannot delete template {name}"))?;
            println!("{name}");
            Ok(ExitCode::SUCCESS)
        }
    }
}
