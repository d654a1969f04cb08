//! `sandpit volume create|ls|info|rm`: named, size-capped filesystems that outlive sandboxes
//! (`/v1/volumes`). Mount one with `--volume NAME:PATH[:ro]` on `create`, `run` or `fork`.

use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use sandpit::{Client, VolumeInfo, VolumeMount};

use super::{print_json, print_table};

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Make an empty volume of a fixed size.
    #[command(after_help = "Examples:\n  \
        sandpit volume create cache --size-mb 2048\n  \
        sandpit create --volume cache:/home/user/.cache")]
    Create {
        /// The volume's name (a-z 0-9 . _ -).
        name: String,
        /// Its size cap in MiB (16 to 1048576): writes past it fail with ENOSPC in the sandbox.
        #[arg(long, value_name = "MIB")]
        size_mb: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List volumes with their usage and the sandboxes that mount them.
    #[command(
        visible_alias = "list",
        after_help = "Examples:\n  sandpit volume ls\n  sandpit volume ls --json"
    )]
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one volume.
    #[command(
        after_help = "Examples:\n  sandpit volume info cache\n  sandpit volume info cache --json"
    )]
    Info {
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a volume and its data (refused while a sandbox mounts it).
    #[command(
        after_help = "Examples:\n  sandpit volume rm cache\n  sandpit volume rm cache scratch"
    )]
    Rm {
        /// Volume names.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

/// Parses `NAME:PATH` or `NAME:PATH:ro` (`--volume`).
pub fn parse_mount(s: &str) -> Result<VolumeMount, String> {
    let (name, rest) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: expected NAME:PATH or NAME:PATH:ro"))?;
    let (path, read_only) = match rest.strip_suffix(":ro") {
        Some(p) => (p, true),
        None => (rest.strip_suffix(":rw").unwrap_or(rest), false),
    };
    if name.is_empty() || path.is_empty() {
        return Err(format!("{s:?}: expected NAME:PATH or NAME:PATH:ro"));
    }
    Ok(VolumeMount {
        name: name.to_owned(),
        path: path.to_owned(),
        read_only,
    })
}

fn row(v: &VolumeInfo) -> Vec<String> {
    vec![
        v.name.clone(),
        format!("{}/{} MiB", v.used_mb, v.size_mb),
        v.tenant.clone(),
        if v.mounted_by.is_empty() {
            "-".into()
        } else {
            v.mounted_by.join(",")
        },
    ]
}

const HEADER: [&str; 4] = ["NAME", "USED", "TENANT", "MOUNTED BY"];

pub async fn run(client: &Client, cmd: VolumeCommand) -> anyhow::Result<ExitCode> {
    let volumes = client.volumes();
    match cmd {
        VolumeCommand::Create {
            name,
            size_mb,
            json,
        } => {
            let v = volumes
                .create(&name, size_mb)
                .await
                .with_context(|| format!("cannot create volume {name}"))?;
            if json {
                return print_json(&v);
            }
            println!("{}", v.name);
        }
        VolumeCommand::Ls { json } => {
            let list = volumes.list().await.context("cannot list volumes")?;
            if json {
                return print_json(&list);
            }
            print_table(&HEADER, &list.iter().map(row).collect::<Vec<_>>());
        }
        VolumeCommand::Info { name, json } => {
            let v = volumes
                .get(&name)
                .await
                .with_context(|| format!("cannot read volume {name}"))?;
            if json {
                return print_json(&v);
            }
            print_table(&HEADER, &[row(&v)]);
        }
        VolumeCommand::Rm { names } => {
            for name in names {
                volumes
                    .delete(&name)
                    .await
                    .with_context(|| format!("cannot delete volume {name}"))?;
                println!("{name}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_flags_parse() {
        let m = parse_mount("cache:/home/user/.cache").unwrap();
        assert_eq!(
            (m.name.as_str(), m.path.as_str(), m.read_only),
            ("cache", "/home/user/.cache", false)
        );
        assert!(parse_mount("data:/data:ro").unwrap().read_only);
        assert!(!parse_mount("data:/data:rw").unwrap().read_only);
        for bad in ["data", ":/x", "data:", "data::ro"] {
            assert!(parse_mount(bad).is_err(), "{bad}");
        }
    }
}
