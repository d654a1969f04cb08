//! Sandbox lifecycle verbs: `create`, `ls`, `info`, `pause`, `resume`, `rm`, and `run` (create, exec,
//! delete in one go).

use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use sandpit::{Client, OnTimeout, Sandbox, SandboxInfo, SandboxState};

use super::process::{ExecOpts, exec_in};
use super::{key_value, print_json, print_table};

/// Options of a new sandbox, shared by `create` and `run`.
#[derive(Debug, Args)]
pub struct SandboxOpts {
    /// Template to start from [default: base].
    #[arg(long, value_name = "NAME")]
    template: Option<String>,
    /// Memory limit in MiB.
    #[arg(long, value_name = "MB")]
    memory: Option<u64>,
    /// CPU limit in cores (fractions allowed).
    #[arg(long, value_name = "CORES")]
    cpu: Option<f64>,
    /// Maximum number of processes and threads.
    #[arg(long, value_name = "N")]
    pids: Option<u64>,
    /// Size cap of the writable layer in MiB.
    #[arg(long, value_name = "MB")]
    disk: Option<u64>,
    /// Time to live in seconds [default: the daemon's, 300].
    #[arg(long, value_name = "SECS")]
    timeout: Option<u64>,
    /// What happens at the deadline.
    #[arg(long, value_name = "WHAT", value_parser = ["kill", "pause"])]
    on_timeout: Option<String>,
    /// Environment variable for every process (repeatable).
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE", value_parser = key_value)]
    env: Vec<(String, String)>,
    /// Metadata entry (repeatable; filter with `sandpit ls --metadata`).
    #[arg(long, short = 'm', value_name = "KEY=VALUE", value_parser = key_value)]
    metadata: Vec<(String, String)>,
    /// Mount a volume: NAME:PATH, or NAME:PATH:ro read-only (repeatable; `sandpit volume create` makes one).
    #[arg(long = "volume", short = 'v', value_name = "NAME:PATH[:ro]", value_parser = super::volume::parse_mount)]
    volumes: Vec<sandpit::VolumeMount>,
    #[command(flatten)]
    network: super::net::PolicyOpts,
}

impl SandboxOpts {
    async fn create(self, client: &Client) -> anyhow::Result<Sandbox> {
        self.builder(client)
            .await
            .context("cannot create the sandbox")
    }

    /// Whether a template was named (a fork refuses one).
    pub(super) fn names_template(&self) -> bool {
        self.template.is_some()
    }

    /// The create request these options make.
    pub(super) fn builder(self, client: &Client) -> sandpit::SandboxBuilder {
        let mut b = Sandbox::create().client(client).envs(self.env);
        for m in self.volumes {
            b = if m.read_only {
                b.volume_read_only(m.name, m.path)
            } else {
                b.volume(m.name, m.path)
            };
        }
        if let Some(p) = self.network.policy() {
            b = b.network(p);
        }
        for (k, v) in self.metadata {
            b = b.metadata(k, v);
        }
        if let Some(t) = self.template {
            b = b.template(t);
        }
        if let Some(m) = self.memory {
            b = b.memory_mb(m);
        }
        if let Some(c) = self.cpu {
            b = b.cpu(c);
        }
        if let Some(p) = self.pids {
            b = b.pids(p);
        }
        if let Some(d) = self.disk {
            b = b.disk_mb(d);
        }
        if let Some(t) = self.timeout {
            b = b.timeout_secs(t);
        }
        if let Some(w) = self.on_timeout {
            b = b.on_timeout(if w == "pause" {
                OnTimeout::Pause
            } else {
                OnTimeout::Kill
            });
        }
        b
    }
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    sandpit create\n  \
    sandpit create --template base --memory 512 --timeout 3600 -e LANG=C.UTF-8 -m owner=me\n  \
    id=$(sandpit create) && sandpit exec \"$id\" -- uname -a")]
pub struct CreateArgs {
    #[command(flatten)]
    opts: SandboxOpts,
    /// Print the sandbox's full info as JSON instead of its id.
    #[arg(long)]
    json: bool,
}

pub async fn create(client: &Client, a: CreateArgs) -> anyhow::Result<ExitCode> {
    let sbx = a.opts.create(client).await?;
    if a.json {
        return print_json(sbx.cached_info());
    }
    println!("{}", sbx.id());
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    sandpit ls\n  \
    sandpit ls --state running -m owner=me\n  \
    sandpit ls --json | jq -r '.[].id'")]
pub struct LsArgs {
    /// Only sandboxes in this state: starting, running, paused, stopped, failed or unhealthy.
    #[arg(long, value_parser = clap::value_parser!(SandboxState))]
    state: Option<SandboxState>,
    /// Only sandboxes with this metadata (repeatable: all must match).
    #[arg(long, short = 'm', value_name = "KEY=VALUE", value_parser = key_value)]
    metadata: Vec<(String, String)>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub async fn ls(client: &Client, a: LsArgs) -> anyhow::Result<ExitCode> {
    let mut q = client.list_sandboxes();
    if let Some(s) = a.state {
        q = q.state(s);
    }
    for (k, v) in a.metadata {
        q = q.metadata(k, v);
    }
    let list = q.await.context("cannot list sandboxes")?;
    if a.json {
        return print_json(&list);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            vec![
                s.id.clone(),
                s.state.as_str().to_owned(),
                s.template.clone(),
                s.created_at.clone(),
                s.expires_at.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    print_table(&["ID", "STATE", "TEMPLATE", "CREATED", "EXPIRES"], &rows);
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  sandpit info 3f2a9c0d11e4b7a8\n  sandpit info 3f2a9c0d11e4b7a8 --json\n  \
        sandpit pause 3f2a9c0d11e4b7a8\n  sandpit resume 3f2a9c0d11e4b7a8 --json"
)]
pub struct IdArgs {
    /// The sandbox's id.
    id: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn print_info(info: &SandboxInfo) {
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    println!("id:          {}", info.id);
    println!("state:       {}", info.state.as_str().to_owned());
    println!("template:    {}", info.template);
    println!("cpu:         {}", opt(info.cpu.map(|c| c.to_string())));
    println!(
        "memory_mb:   {}",
        opt(info.memory_mb.map(|c| c.to_string()))
    );
    println!("pids:        {}", opt(info.pids.map(|c| c.to_string())));
    println!("disk_mb:     {}", opt(info.disk_mb.map(|c| c.to_string())));
    println!("created_at:  {}", info.created_at);
    println!("expires_at:  {}", opt(info.expires_at.clone()));
    let on_timeout = serde_json::to_value(info.on_timeout).unwrap_or_default();
    println!("on_timeout:  {}", on_timeout.as_str().unwrap_or("-"));
    for (k, v) in &info.env {
        println!("env:         {k}={v}");
    }
    for (k, v) in &info.metadata {
        println!("metadata:    {k}={v}");
    }
    if let Some(e) = &info.error {
        println!("error:       {e}");
    }
}

pub async fn info(client: &Client, a: IdArgs) -> anyhow::Result<ExitCode> {
    let sbx = Sandbox::get(client, &a.id)
        .await
        .with_context(|| format!("cannot read sandbox {}", a.id))?;
    if a.json {
        return print_json(sbx.cached_info());
    }
    print_info(sbx.cached_info());
    Ok(ExitCode::SUCCESS)
}

pub async fn pause(client: &Client, a: IdArgs) -> anyhow::Result<ExitCode> {
    let mut sbx = Sandbox::get(client, &a.id)
        .await
        .with_context(|| format!("cannot pause sandbox {}", a.id))?;
    let info = sbx
        .pause()
        .await
        .with_context(|| format!("cannot pause sandbox {}", a.id))?;
    if a.json {
        return print_json(&info);
    }
    println!("{} {}", info.id, info.state.as_str().to_owned());
    Ok(ExitCode::SUCCESS)
}

pub async fn resume(client: &Client, a: IdArgs) -> anyhow::Result<ExitCode> {
    let mut sbx = Sandbox::get(client, &a.id)
        .await
        .with_context(|| format!("cannot resume sandbox {}", a.id))?;
    let info = sbx
        .resume()
        .await
        .with_context(|| format!("cannot resume sandbox {}", a.id))?;
    if a.json {
        return print_json(&info);
    }
    println!("{} {}", info.id, info.state.as_str().to_owned());
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  sandpit rm 3f2a9c0d11e4b7a8\n  sandpit rm $(sandpit ls --json | jq -r '.[].id')"
)]
pub struct RmArgs {
    /// The sandboxes' ids.
    #[arg(required = true)]
    ids: Vec<String>,
}

pub async fn rm(client: &Client, a: RmArgs) -> anyhow::Result<ExitCode> {
    let mut failed = 0;
    for id in &a.ids {
        let r = match Sandbox::get(client, id).await {
            Ok(sbx) => sbx.kill().await,
            Err(e) => Err(e),
        };
        match r {
            Ok(()) => println!("{id}"),
            Err(e) => {
                eprintln!("sandpit: error: cannot delete sandbox {id}: {e}");
                failed += 1;
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    sandpit run -- python3 -c 'print(1 + 1)'\n  \
    sandpit run --memory 256 --timeout 60 -- sh -c 'make test'\n  \
    sandpit run -e GREETING=hi -- 'echo $GREETING'   # -e sets the sandbox's environment\n  \
    sandpit run --keep -- 'echo $HOME'   # keep the sandbox; its id goes to stderr\n\n\
    With a single word after `--`, it is run as a shell command line.")]
pub struct RunArgs {
    #[command(flatten)]
    sandbox: SandboxOpts,
    /// Working directory of the command [default: the user's home].
    #[arg(long, short = 'w', value_name = "DIR")]
    cwd: Option<String>,
    /// User to run the command as.
    #[arg(long, short = 'u', value_name = "USER")]
    user: Option<String>,
    /// Kill the command after this many seconds (fractions allowed).
    #[arg(long = "cmd-timeout", value_name = "SECS")]
    cmd_timeout: Option<f64>,
    /// Allocate a pseudo-terminal.
    #[arg(long, short = 't')]
    tty: bool,
    /// Forward this terminal's stdin to the command.
    #[arg(long, short = 'i')]
    interactive: bool,
    /// Keep the sandbox afterwards (its id is printed on stderr).
    #[arg(long)]
    keep: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    cmd: Vec<String>,
}

pub async fn run(client: &Client, a: RunArgs) -> anyhow::Result<ExitCode> {
    let sbx = a.sandbox.create(client).await?;
    if a.keep {
        eprintln!("sandpit: sandbox {}", sbx.id());
    }
    let opts = ExecOpts {
        cwd: a.cwd,
        env: Vec::new(),
        user: a.user,
        cmd_timeout: a.cmd_timeout,
        tty: a.tty,
        interactive: a.interactive,
    };
    let result = exec_in(&sbx, opts, a.cmd).await;
    if !a.keep {
        if let Err(e) = sbx.kill().await {
            eprintln!("sandpit: warning: cannot delete sandbox {}: {e}", sbx.id());
        }
    }
    result
}

/// `sandpit access-token ID`: a new access token for one sandbox (the old one stops working).
pub async fn access_token(client: &Client, a: IdArgs) -> anyhow::Result<ExitCode> {
    let sbx = Sandbox::get(client, &a.id)
        .await
        .with_context(|| format!("cannot find sandbox {}", a.id))?;
    let token = sbx
        .rotate_access_token()
        .await
        .with_context(|| format!("cannot issue an access token for sandbox {}", a.id))?;
    if a.json {
        return print_json(&serde_json::json!({ "access_token": token }));
    }
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}
