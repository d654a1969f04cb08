//! `sandpit cp` (docker's style: `ID:PATH` on either side, directories recursive, `-` for a tar on
//! stdin or stdout) and `sandpit fs ls|stat|rm|mkdir ID:PATH`, over the SDK's `sandbox.files()`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use futures_util::StreamExt as _;
use sandpit::{Client, Entry, EntryType, Files, Sandbox};
use tokio::io::AsyncWriteExt as _;

/// `ID:PATH` or a local path (or `-`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Spot {
    Sandbox(String, PathBuf),
    Local(PathBuf),
    Stdio,
}

/// Docker's rule: `ID:PATH` when the part before the first `:` is a plain id; a path starting with
/// `/` or `.` is always local.
fn spot(s: &str) -> Spot {
    if s == "-" {
        return Spot::Stdio;
    }
    if !s.starts_with('/') && !s.starts_with('.') {
        if let Some((id, path)) = s.split_once(':') {
            if !id.is_empty()
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                let path = if path.is_empty() { "." } else { path };
                return Spot::Sandbox(id.to_owned(), PathBuf::from(path));
            }
        }
    }
    Spot::Local(PathBuf::from(s))
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:
  sandpit cp ./app 3f2a9c0d:/home/user/app      # a directory, recursively
  sandpit cp 3f2a9c0d:/home/user/out.csv .       # a file into the current directory
  sandpit cp 3f2a9c0d:/var/log - | tar -t       # a tar to stdout
  tar -c src | sandpit cp - 3f2a9c0d:/work       # a tar from stdin, extracted into /work")]
pub struct CpArgs {
    /// What to copy: `ID:PATH`, a local path, or `-` (a tar on stdin).
    src: String,
    /// Where to: `ID:PATH`, a local path, or `-` (a tar on stdout).
    dst: String,
    /// The sandbox user to act as [default: the sandbox's default user].
    #[arg(long, short = 'u')]
    user: Option<String>,
}

/// The file verbs under `sandpit fs`.
#[derive(Debug, Subcommand)]
pub enum FsCommand {
    /// List a directory.
    Ls(FsLsArgs),
    /// Show one entry as JSON.
    Stat(FsTarget),
    /// Remove a file, link or (with -r) a directory.
    Rm(FsRmArgs),
    /// Create a directory (and its parents).
    Mkdir(FsTarget),
    /// Print a signed URL that downloads (or, with --write, uploads) one file with no other credential.
    Url(FsUrlArgs),
}

#[derive(Debug, Args)]
pub struct FsTarget {
    /// `ID:PATH`.
    target: String,
    /// The sandbox user to act as.
    #[arg(long, short = 'u')]
    user: Option<String>,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  sandpit fs ls 3f2a9c0d:/home/user\n  sandpit fs ls -d 3 --json 3f2a9c0d:src"
)]
pub struct FsLsArgs {
    #[command(flatten)]
    t: FsTarget,
    /// Levels to list (1: the directory's children).
    #[arg(long, short = 'd', default_value_t = 1)]
    depth: u32,
    /// Print the entries as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    sandpit fs url 3f2a9c0d:/home/user/report.pdf          # GET it from anywhere for an hour\n  \
    sandpit fs url --write --expires-in 600 3f2a9c0d:upload.bin   # PUT the new content to it")]
pub struct FsUrlArgs {
    #[command(flatten)]
    t: FsTarget,
    /// A URL that writes the file (PUT) instead of reading it (GET).
    #[arg(long)]
    write: bool,
    /// Seconds the URL works (1 to 604800) [default: 3600].
    #[arg(long, value_name = "SECS")]
    expires_in: Option<u64>,
}

#[derive(Debug, Args)]
pub struct FsRmArgs {
    #[command(flatten)]
    t: FsTarget,
    /// Remove a directory and everything in it.
    #[arg(long, short = 'r')]
    recursive: bool,
}

async fn files_of(client: &Client, id: &str, user: Option<&String>) -> anyhow::Result<Files> {
    let sbx = Sandbox::get(client, id)
        .await
        .with_context(|| format!("sandbox {id}"))?;
    let files = sbx.files();
    Ok(match user {
        Some(u) => files.user(u.clone()),
        None => files,
    })
}

fn target(t: &FsTarget) -> anyhow::Result<(String, PathBuf)> {
    match spot(&t.target) {
        Spot::Sandbox(id, p) => Ok((id, p)),
        _ => bail!(
            "{:?}: expected ID:PATH (a sandbox id, a colon, a path in it)",
            t.target
        ),
    }
}

pub async fn fs(client: &Client, cmd: FsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        FsCommand::Ls(a) => {
            let (id, path) = target(&a.t)?;
            let entries = files_of(client, &id, a.t.user.as_ref())
                .await?
                .list_depth(&path, a.depth)
                .await?;
            if a.json {
                return super::print_json(&entries);
            }
            let rows: Vec<Vec<String>> = entries.iter().map(row).collect();
            super::print_table(
                &["MODE", "OWNER", "GROUP", "SIZE", "MODIFIED", "PATH"],
                &rows,
            );
            Ok(ExitCode::SUCCESS)
        }
        FsCommand::Stat(t) => {
            let (id, path) = target(&t)?;
            let e = files_of(client, &id, t.user.as_ref())
                .await?
                .get_info(&path)
                .await?;
            super::print_json(&e)
        }
        FsCommand::Rm(a) => {
            let (id, path) = target(&a.t)?;
            files_of(client, &id, a.t.user.as_ref())
                .await?
                .remove_with(&path, a.recursive)
                .await?;
            Ok(ExitCode::SUCCESS)
        }
        FsCommand::Url(a) => {
            let (id, path) = target(&a.t)?;
            let op = if a.write {
                sandpit::SignedUrlOp::Write
            } else {
                sandpit::SignedUrlOp::Read
            };
            let signed = files_of(client, &id, a.t.user.as_ref())
                .await?
                .signed_url(&path, op, a.expires_in.map(std::time::Duration::from_secs))
                .await
                .context("cannot sign the URL")?;
            eprintln!("{} until {}", signed.method, signed.expires_at);
            println!("{}", signed.url);
            Ok(ExitCode::SUCCESS)
        }
        FsCommand::Mkdir(t) => {
            let (id, path) = target(&t)?;
            files_of(client, &id, t.user.as_ref())
                .await?
                .make_dir(&path)
                .await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn row(e: &Entry) -> Vec<String> {
    let kind = match e.kind {
        EntryType::Dir => 'd',
        EntryType::Symlink => 'l',
        EntryType::File => '-',
        EntryType::Other => '?',
    };
    let name = match &e.symlink_target {
        Some(t) => format!("{} -> {t}", e.path),
        None => e.path.clone(),
    };
    vec![
        format!("{kind}{}", e.permissions),
        e.owner.clone(),
        e.group.clone(),
        e.size.to_string(),
        e.modified_at.clone(),
        name,
    ]
}

fn base_name(p: &Path) -> anyhow::Result<&std::ffi::OsStr> {
    p.file_name()
        .with_context(|| format!("{} has no file name to copy under", p.display()))
}

pub async fn cp(client: &Client, a: CpArgs) -> anyhow::Result<ExitCode> {
    match (spot(&a.src), spot(&a.dst)) {
        (Spot::Stdio, Spot::Sandbox(id, dir)) => {
            let files = files_of(client, &id, a.user.as_ref()).await?;
            let stdin = tokio_util_reader(tokio::io::stdin());
            let r = files.upload_tar(&dir, stdin, false).await?;
            report_skipped(&r.skipped);
        }
        (Spot::Sandbox(id, path), Spot::Stdio) => {
            let files = files_of(client, &id, a.user.as_ref()).await?;
            let mut s = files.download_tar(&path).await?;
            let mut out = tokio::io::stdout();
            while let Some(c) = s.next().await {
                out.write_all(&c?).await.context("writing to stdout")?;
            }
            out.flush().await?;
        }
        (Spot::Local(local), Spot::Sandbox(id, dst)) => {
            let files = files_of(client, &id, a.user.as_ref()).await?;
            let meta = std::fs::metadata(&local).with_context(|| format!("{}", local.display()))?;
            // Into an existing directory (or a path ending in /): under the source's name.
            let into_dir = a.dst.ends_with('/')
                || files
                    .get_info(&dst)
                    .await
                    .is_ok_and(|e| e.kind == EntryType::Dir);
            let dest = if into_dir {
                dst.join(base_name(&local)?)
            } else {
                dst
            };
            if meta.is_dir() {
                let r = files.upload_dir(&local, &dest).await?;
                report_skipped(&r.skipped);
            } else {
                files.write_file(&dest, &local).await?;
            }
        }
        (Spot::Sandbox(id, src), Spot::Local(local)) => {
            let files = files_of(client, &id, a.user.as_ref()).await?;
            let info = files.get_info(&src).await?;
            let into_dir = local.is_dir();
            let dest = if into_dir {
                local.join(base_name(&src)?)
            } else {
                local
            };
            if info.kind == EntryType::Dir {
                files.download_dir(&src, &dest).await?;
            } else {
                files.read_file(&src, &dest).await?;
            }
        }
        (Spot::Sandbox(..), Spot::Sandbox(..)) => {
            bail!("copying between sandboxes is not supported: copy to a local path first")
        }
        _ => {
            bail!("one side of `sandpit cp` must be ID:PATH (a sandbox id, a colon, a path in it)")
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn report_skipped(skipped: &[sandpit::types::SkippedMember]) {
    for s in skipped {
        eprintln!("sandpit cp: skipped {}: {}", s.path, s.reason);
    }
}

/// stdin as a stream of chunks for a request body.
fn tokio_util_reader(
    r: impl tokio::io::AsyncRead + Send + 'static,
) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static {
    futures_util::stream::unfold(Box::pin(r), |mut r| async move {
        use tokio::io::AsyncReadExt as _;
        let mut buf = vec![0u8; 256 << 10];
        match r.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), r))
            }
            Err(e) => Some((Err(e), r)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_are_read_like_docker() {
        assert_eq!(spot("-"), Spot::Stdio);
        assert_eq!(spot("abc:/x"), Spot::Sandbox("abc".into(), "/x".into()));
        assert_eq!(spot("abc:"), Spot::Sandbox("abc".into(), ".".into()));
        assert_eq!(spot("./a:b"), Spot::Local("./a:b".into()));
        assert_eq!(spot("/tmp/a:b"), Spot::Local("/tmp/a:b".into()));
        assert_eq!(spot("plain"), Spot::Local("plain".into()));
    }
}
