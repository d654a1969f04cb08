//! The client verbs of the `sandpit` binary (`create`, `ls`, `exec`, `attach`, …): argument parsing and
//! output formatting over the `sandpit` SDK, so the CLI and library users see the same behaviour. Each
//! group of verbs has its own module; this one holds the global connection flags and the dispatch.

mod audit;
mod files;
mod keys;
mod net;
mod observe;
mod process;
mod sandbox;
mod snapshot;
mod template;
mod tenants;
mod volume;

use std::fmt::Write as _;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

/// Examples shown by `sandpit --help`.
pub const EXAMPLES: &str = "Examples:
  sandpit serve --backend process --state-dir /tmp/sandpit &   # a development daemon
  export SANDPIT_STATE_DIR=/tmp/sandpit                       # where the client finds the API key
  id=$(sandpit create --memory 512)
  sandpit exec \"$id\" -- python3 -c 'print(1 + 1)'
  sandpit attach \"$id\"                                       # ctrl-] detaches
  sandpit cp ./src \"$id\":/home/user/src && sandpit fs ls \"$id\":src
  sandpit ps \"$id\" && sandpit logs --follow \"$id\" p1
  sandpit rm \"$id\"
  sandpit run -- uname -a                                     # create, exec, delete

Every verb has --help with examples; --url/--api-key (SANDPIT_URL/SANDPIT_API_KEY) choose the daemon.";

/// Where the daemon is; global flags, accepted before or after the verb.
#[derive(Debug, Clone, Args)]
pub struct ConnArgs {
    /// The daemon's URL, for the client verbs [default: <http://127.0.0.1:7070>].
    #[arg(long, global = true, env = "SANDPIT_URL", value_name = "URL")]
    url: Option<String>,
    /// The API key, for the client verbs (`serve` takes its key from `SANDPIT_API_KEY` or its config file
    /// only) [default: the daemon's key file: $SANDPIT_STATE_DIR/api-key, /var/lib/sandpit/api-key or
    /// ~/.local/share/sandpit/api-key].
    #[arg(
        long,
        global = true,
        env = "SANDPIT_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    api_key: Option<String>,
}

impl ConnArgs {
    fn client(&self) -> anyhow::Result<sandpit::Client> {
        let mut b = sandpit::Client::builder();
        if let Some(u) = &self.url {
            b = b.url(u);
        }
        if let Some(k) = &self.api_key {
            b = b.api_key(k);
        }
        b.build().context("cannot configure the client")
    }
}

/// The client verbs, flattened into the binary's top-level commands.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Create a sandbox and print its id.
    Create(sandbox::CreateArgs),
    /// List sandboxes.
    #[command(visible_alias = "list")]
    Ls(sandbox::LsArgs),
    /// Show one sandbox.
    Info(sandbox::IdArgs),
    /// Run a command in a sandbox, streaming its output; exits with the command's exit code.
    Exec(process::ExecArgs),
    /// Create a sandbox, run a command in it, delete the sandbox; exits with the command's exit code.
    Run(sandbox::RunArgs),
    /// Attach this terminal to a PTY process in a sandbox (`ctrl-]` detaches; the process keeps running).
    Attach(process::AttachArgs),
    /// List a sandbox's processes.
    Ps(process::PsArgs),
    /// Print a process's output (stdout to stdout, stderr to stderr).
    Logs(process::LogsArgs),
    /// Kill a process (SIGKILL to its whole tree), or send it a signal.
    Kill(process::KillArgs),
    /// Pause (freeze) a sandbox.
    Pause(sandbox::IdArgs),
    /// Resume a paused sandbox.
    Resume(sandbox::IdArgs),
    /// Delete sandboxes (kills every process in them).
    #[command(visible_alias = "delete")]
    Rm(sandbox::RmArgs),
    /// Copy files or directories between this machine and a sandbox (`ID:PATH` on one side).
    Cp(files::CpArgs),
    /// Look at and change a sandbox's files: ls, stat, rm, mkdir (`ID:PATH`).
    #[command(subcommand)]
    Fs(files::FsCommand),
    /// Manage templates (the root filesystems sandboxes start from).
    #[command(subcommand)]
    Template(template::TemplateCommand),
    /// Manage volumes: named, size-capped filesystems that outlive sandboxes (`--volume` mounts one).
    #[command(subcommand)]
    Volume(volume::VolumeCommand),
    /// Make a template from a sandbox's filesystem as it is now and print its name.
    Snapshot(snapshot::SnapshotArgs),
    /// Make sandboxes that start from a sandbox's filesystem as it is now; prints their ids.
    Fork(snapshot::ForkArgs),
    /// Expose a port of a sandbox and print its preview URL.
    Port(net::PortArgs),
    /// Show or replace a sandbox's outbound network policy.
    Network(net::NetworkArgs),
    /// Print a new access token for one sandbox (it opens that sandbox only; the old token stops working).
    #[command(
        name = "access-token",
        after_help = "Example:\n  sandpit access-token 3f9a0c1d2e4b5a69"
    )]
    AccessToken(sandbox::IdArgs),
    /// Manage API keys: create (with scopes and a tenant), ls, revoke. Needs an admin key.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Tenant quotas: ls, get, set (max sandboxes, creates per second, memory, disk).
    #[command(subcommand)]
    Tenants(tenants::TenantsCommand),
    /// Read the audit log: who did what to which sandbox, when (needs an admin key).
    Audit(audit::AuditArgs),
    /// Lifecycle events (created, paused, resumed, killed, …): a page, or followed live with -f.
    Events(observe::EventsArgs),
    /// A sandbox's cpu, memory, disk and pids samples (-f follows them live).
    Metrics(observe::MetricsArgs),
    /// A live table of sandboxes with their cpu and memory.
    Top(observe::TopArgs),
    /// Webhooks: lifecycle events sent, signed, to a URL as `POST`s (needs an admin key).
    #[command(subcommand)]
    Webhook(observe::WebhookCommand),
    /// The web console's address; with a sandbox id, a link that opens that sandbox alone.
    Console(observe::ConsoleArgs),
}

/// Runs a client verb on a fresh tokio runtime.
pub fn run(cmd: ClientCommand, conn: &ConnArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let client = conn.client()?;
    rt.block_on(async move {
        match cmd {
            ClientCommand::Create(a) => sandbox::create(&client, a).await,
            ClientCommand::Ls(a) => sandbox::ls(&client, a).await,
            ClientCommand::Info(a) => sandbox::info(&client, a).await,
            ClientCommand::Exec(a) => process::exec(&client, a).await,
            ClientCommand::Run(a) => sandbox::run(&client, a).await,
            ClientCommand::Attach(a) => process::attach(&client, a).await,
            ClientCommand::Ps(a) => process::ps(&client, a).await,
            ClientCommand::Logs(a) => process::logs(&client, a).await,
            ClientCommand::Kill(a) => process::kill(&client, a).await,
            ClientCommand::Pause(a) => sandbox::pause(&client, a).await,
            ClientCommand::Resume(a) => sandbox::resume(&client, a).await,
            ClientCommand::Rm(a) => sandbox::rm(&client, a).await,
            ClientCommand::Template(c) => template::run(&client, c).await,
            ClientCommand::Snapshot(a) => snapshot::snapshot(&client, a).await,
            ClientCommand::Volume(c) => volume::run(&client, c).await,
            ClientCommand::Fork(a) => snapshot::fork(&client, a).await,
            ClientCommand::Port(a) => net::port(&client, a).await,
            ClientCommand::Network(a) => net::network(&client, a).await,
            ClientCommand::Cp(a) => files::cp(&client, a).await,
            ClientCommand::Fs(c) => files::fs(&client, c).await,
            ClientCommand::Keys(c) => keys::run(&client, c).await,
            ClientCommand::Tenants(c) => tenants::run(&client, c).await,
            ClientCommand::Audit(a) => audit::run(&client, a).await,
            ClientCommand::Events(a) => observe::events(&client, a).await,
            ClientCommand::Metrics(a) => observe::metrics(&client, a).await,
            ClientCommand::Top(a) => observe::top(&client, a).await,
            ClientCommand::Webhook(c) => observe::webhook(&client, c).await,
            ClientCommand::Console(a) => observe::console(&client, a).await,
            ClientCommand::AccessToken(a) => sandbox::access_token(&client, a).await,
        }
    })
}

/// Parses `KEY=VALUE`.
fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

/// Prints `v` as pretty JSON.
fn print_json(v: &impl serde::Serialize) -> anyhow::Result<ExitCode> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(ExitCode::SUCCESS)
}

/// Prints rows as aligned columns under a header.
fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let n = cells.len();
        let mut s = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            if i + 1 == n {
                s.push_str(c);
            } else {
                let _ = write!(s, "{c:<w$}  ", w = widths[i]);
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// The exit code of a process's result, for passing through (shell convention, low 8 bits).
fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code.rem_euclid(256)).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use clap::Subcommand;

    /// clap's own consistency checks (unique names, valid defaults) for every verb.
    #[test]
    fn verbs_are_well_formed() {
        let cmd = super::ClientCommand::augment_subcommands(
            clap::Command::new("sandpit").args(
                <super::ConnArgs as clap::Args>::augment_args(clap::Command::new("x"))
                    .get_arguments()
                    .cloned()
                    .collect::<Vec<_>>(),
            ),
        );
        cmd.debug_assert();
    }

    #[test]
    fn exit_codes_wrap_like_a_shell() {
        assert_eq!(super::exit_code(0), std::process::ExitCode::SUCCESS);
        assert_eq!(super::exit_code(256 + 3), std::process::ExitCode::from(3));
        assert_eq!(
            super::key_value("A=b=c").unwrap(),
            ("A".into(), "b=c".into())
        );
        assert!(super::key_value("=x").is_err());
    }
}
