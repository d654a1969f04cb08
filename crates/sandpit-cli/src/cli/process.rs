//! Process verbs: `exec` (output streamed live, exit code passed through), `attach` (interactive PTY),
//! `ps`, `logs` (replay and follow by `seq`) and `kill`.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use futures_util::StreamExt;
use sandpit::{AttachOutcome, Client, ExecEvent, ProcessEvent, ProcessStatus, Sandbox};
use tokio::io::AsyncReadExt;

use super::{exit_code, key_value, print_json, print_table};

/// Per-command options, shared by `exec` and `run`.
#[derive(Debug, Args)]
pub struct ExecOpts {
    /// Working directory [default: the user's home].
    #[arg(long, short = 'w', value_name = "DIR")]
    pub cwd: Option<String>,
    /// Environment variable for the command (repeatable).
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE", value_parser = key_value)]
    pub env: Vec<(String, String)>,
    /// User to run as.
    #[arg(long, short = 'u', value_name = "USER")]
    pub user: Option<String>,
    /// Kill the command after this many seconds (fractions allowed).
    #[arg(long = "cmd-timeout", value_name = "SECS")]
    pub cmd_timeout: Option<f64>,
    /// Allocate a pseudo-terminal (stderr is then merged into stdout).
    #[arg(long, short = 't')]
    pub tty: bool,
    /// Forward this terminal's stdin to the command (EOF closes it).
    #[arg(long, short = 'i')]
    pub interactive: bool,
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    sandpit exec 3f2a9c0d11e4b7a8 -- ls -la /\n  \
    sandpit exec 3f2a9c0d11e4b7a8 -- 'echo $HOME && make test'    # one word: a shell command line\n  \
    echo hi | sandpit exec -i 3f2a9c0d11e4b7a8 -- cat\n  \
    sandpit exec -w /tmp -e FOO=bar -u root 3f2a9c0d11e4b7a8 -- env\n\n\
    The exit code is the command's (128+n when it was killed by signal n).")]
pub struct ExecArgs {
    /// The sandbox's id.
    id: String,
    #[command(flatten)]
    opts: ExecOpts,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true, value_name = "CMD")]
    cmd: Vec<String>,
}

pub async fn exec(client: &Client, a: ExecArgs) -> anyhow::Result<ExitCode> {
    let sbx = Sandbox::get(client, &a.id)
        .await
        .with_context(|| format!("cannot use sandbox {}", a.id))?;
    exec_in(&sbx, a.opts, a.cmd).await
}

/// Runs `cmd` in `sbx`, streaming its output to ours, and returns its exit code.
pub async fn exec_in(sbx: &Sandbox, o: ExecOpts, cmd: Vec<String>) -> anyhow::Result<ExitCode> {
    let mut cmd = cmd.into_iter();
    let prog = cmd.next().context("no command given")?;
    let args: Vec<String> = cmd.collect();
    let mut h = sbx
        .exec_stream_with(&prog, |mut b| {
            b = b.args(args).envs(o.env);
            if let Some(c) = o.cwd {
                b = b.cwd(c);
            }
            if let Some(u) = o.user {
                b = b.user(u);
            }
            if let Some(t) = o.cmd_timeout {
                b = b.timeout(std::time::Duration::from_secs_f64(t.max(0.001)));
            }
            if o.interactive {
                b = b.stdin_pipe();
            }
            b.tty(o.tty)
        })
        .await
        .with_context(|| format!("cannot start {prog:?}"))?;
    if let Some(sink) = h.take_stdin() {
        tokio::spawn(async move {
            let mut stdin = tokio::io::stdin();
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match stdin.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if sink.write(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = sink.close().await;
        });
    }
    while let Some(ev) = h.recv().await {
        match ev {
            ExecEvent::Stdout(d) => {
                let mut out = std::io::stdout().lock();
                out.write_all(&d)?;
                out.flush()?;
            }
            ExecEvent::Stderr(d) => {
                let mut err = std::io::stderr().lock();
                err.write_all(&d)?;
                err.flush()?;
            }
            ExecEvent::Lost { bytes } => {
                eprintln!(
                    "sandpit: warning: {bytes} bytes of output were dropped by the output cap"
                );
            }
            _ => {}
        }
    }
    let status = h.wait().await.context("lost the command's output stream")?;
    match status.status {
        ProcessStatus::Failed | ProcessStatus::TimedOut => {
            let info = h.info().await.ok();
            let why = info
                .and_then(|i| i.error)
                .unwrap_or_else(|| format!("{:?}", status.status));
            eprintln!("sandpit: {prog}: {why}");
        }
        _ => {}
    }
    Ok(exit_code(status.code))
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    sandpit attach 3f2a9c0d11e4b7a8                 # the user's shell\n  \
    sandpit attach 3f2a9c0d11e4b7a8 python3\n  \
    sandpit attach --detach-keys ctrl-p,ctrl-q 3f2a9c0d11e4b7a8 -- bash -l\n  \
    sandpit attach --pid p4 3f2a9c0d11e4b7a8        # back to a process you detached from\n\n\
    Press the detach keys (default ctrl-]) to leave; the process keeps running. Resizing this terminal \
    resizes the sandbox's PTY.")]
pub struct AttachArgs {
    /// The sandbox's id.
    id: String,
    /// Attach to this existing process (id or pid) instead of starting one.
    #[arg(long, value_name = "PID", conflicts_with = "cmd")]
    pid: Option<String>,
    /// Detach sequence: comma-separated `ctrl-<key>` or single characters.
    #[arg(long, value_name = "KEYS", default_value = sandpit::DEFAULT_DETACH_KEYS)]
    detach_keys: String,
    /// Working directory.
    #[arg(long, short = 'w', value_name = "DIR")]
    cwd: Option<String>,
    /// Environment variable (repeatable).
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE", value_parser = key_value)]
    env: Vec<(String, String)>,
    /// User to run as.
    #[arg(long, short = 'u', value_name = "USER")]
    user: Option<String>,
    /// The command [default: the user's shell].
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    cmd: Vec<String>,
}

pub async fn attach(client: &Client, a: AttachArgs) -> anyhow::Result<ExitCode> {
    sandpit::parse_detach_keys(&a.detach_keys)?;
    let sbx = Sandbox::get(client, &a.id)
        .await
        .with_context(|| format!("cannot use sandbox {}", a.id))?;
    let outcome = if let Some(pid) = &a.pid {
        sbx.attach_process(pid, Some(&a.detach_keys)).await
    } else {
        let mut cmd = a.cmd.into_iter();
        let prog = cmd
            .next()
            .unwrap_or_else(|| "exec \"${SHELL:-/bin/sh}\"".to_owned());
        let args: Vec<String> = cmd.collect();
        let (cwd, user, env, keys) = (a.cwd, a.user, a.env, a.detach_keys);
        sbx.attach_with(prog, move |mut b| {
            b = b.args(args).envs(env).detach_keys(keys);
            if let Some(c) = cwd {
                b = b.cwd(c);
            }
            if let Some(u) = user {
                b = b.user(u);
            }
            b
        })
        .await
    }
    .context("attach failed")?;
    match outcome {
        AttachOutcome::Exited(code) => Ok(exit_code(code)),
        AttachOutcome::Detached { id, pid } => {
            eprintln!(
                "\r\nsandpit: detached from process {id} (pid {pid}); it keeps running. \
                 Re-attach with: sandpit attach --pid {id} {}",
                a.id
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    sandpit ps 3f2a9c0d11e4b7a8\n  \
    sandpit ps 3f2a9c0d11e4b7a8 --status running --limit 20\n  \
    sandpit ps 3f2a9c0d11e4b7a8 --json")]
pub struct PsArgs {
    /// The sandbox's id.
    id: String,
    /// Only processes with this status.
    #[arg(long, value_parser = ["queued", "running", "exited", "failed", "killed", "timed_out"])]
    status: Option<String>,
    /// At most this many (newest first).
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub async fn ps(client: &Client, a: PsArgs) -> anyhow::Result<ExitCode> {
    let sbx = Sandbox::get(client, &a.id)
        .await
        .with_context(|| format!("cannot use sandbox {}", a.id))?;
    let mut q = sbx.processes().list();
    if let Some(s) = &a.status {
        let s: ProcessStatus = serde_json::from_value(serde_json::Value::from(s.as_str()))?;
        q = q.status(s);
    }
    if let Some(l) = a.limit {
        q = q.limit(l);
    }
    let list = q.await.context("cannot list processes")?;
    if a.json {
        return print_json(&list);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|p| {
            vec![
                p.id.clone(),
                p.pid.map_or_else(|| "-".into(), |n| n.to_string()),
                p.status.as_str().to_owned(),
                p.exit_code.map_or_else(|| "-".into(), |c| c.to_string()),
                if p.is_pty { "yes" } else { "no" }.to_owned(),
                p.started_at.clone().unwrap_or_else(|| "-".into()),
                p.cmd.clone(),
            ]
        })
        .collect();
    print_table(
        &["ID", "PID", "STATUS", "EXIT", "PTY", "STARTED", "CMD"],
        &rows,
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    sandpit logs 3f2a9c0d11e4b7a8 p3\n  \
    sandpit logs --follow 3f2a9c0d11e4b7a8 p3          # until the process exits\n  \
    sandpit logs --from-seq 120 --follow 3f2a9c0d11e4b7a8 1234\n  \
    sandpit logs 3f2a9c0d11e4b7a8                      # the sandbox agent's own log\n\n\
    Without --follow, prints the output produced so far and returns. Without a PID, prints the end of \
    the sandbox agent's own log (--tail-bytes of it).")]
pub struct LogsArgs {
    /// The sandbox's id.
    id: String,
    /// The process's id or pid; without one, the sandbox agent's own log.
    pid: Option<String>,
    /// With no PID: how much of the end of the agent's log to print [default: 65536].
    #[arg(long, value_name = "BYTES", conflicts_with_all = ["pid", "follow"])]
    tail_bytes: Option<u64>,
    /// Keep printing output until the process exits.
    #[arg(long, short = 'f')]
    follow: bool,
    /// Start at this output chunk (1: everything kept).
    #[arg(long, value_name = "SEQ", default_value_t = 1)]
    from_seq: u64,
}

pub async fn logs(client: &Client, a: LogsArgs) -> anyhow::Result<ExitCode> {
    let sbx = Sandbox::get(client, &a.id)
        .await
        .with_context(|| format!("cannot use sandbox {}", a.id))?;
    let Some(pid) = a.pid else {
        if a.follow {
            anyhow::bail!("--follow needs a PID: the agent's own log is printed once");
        }
        let text = sbx
            .logs(a.tail_bytes)
            .await
            .with_context(|| format!("cannot read the agent log of sandbox {}", a.id))?;
        print!("{text}");
        return Ok(ExitCode::SUCCESS);
    };
    let handle = sbx.commands().connect(&pid);
    let info = handle
        .info()
        .await
        .with_context(|| format!("cannot read process {pid}"))?;
    let until = info.last_seq;
    if !a.follow && (until == 0 || a.from_seq > until) {
        return Ok(ExitCode::SUCCESS);
    }
    let mut events = handle.events(a.from_seq);
    while let Some(ev) = events.next().await {
        let (seq, is_err, data) = match ev.context("lost the output stream")? {
            ProcessEvent::Stdout { seq, data } => (seq, false, data),
            ProcessEvent::Stderr { seq, data } => (seq, true, data),
            ProcessEvent::Lost(l) => {
                eprintln!(
                    "sandpit: warning: output chunks {}..={} ({} bytes) are no longer kept",
                    l.from_seq, l.to_seq, l.bytes
                );
                if !a.follow && l.to_seq >= until {
                    break;
                }
                continue;
            }
            ProcessEvent::Exited(_) => break,
            ProcessEvent::Started(_) => continue,
        };
        if is_err {
            let mut e = std::io::stderr().lock();
            e.write_all(&data)?;
            e.flush()?;
        } else {
            let mut o = std::io::stdout().lock();
            o.write_all(&data)?;
            o.flush()?;
        }
        if !a.follow && seq >= until {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    sandpit kill 3f2a9c0d11e4b7a8 p3                 # SIGKILL to the whole process tree\n  \
    sandpit kill --signal TERM 3f2a9c0d11e4b7a8 1234\n  \
    sandpit kill -s INT 3f2a9c0d11e4b7a8 p3")]
pub struct KillArgs {
    /// The sandbox's id.
    id: String,
    /// The process's id or pid.
    pid: String,
    /// Send this signal instead (a name such as TERM or SIGINT, or a number).
    #[arg(long, short = 's', value_name = "SIGNAL")]
    signal: Option<String>,
}

pub async fn kill(client: &Client, a: KillArgs) -> anyhow::Result<ExitCode> {
    let sbx = Sandbox::get(client, &a.id)
        .await
        .with_context(|| format!("cannot use sandbox {}", a.id))?;
    let handle = sbx.commands().connect(&a.pid);
    if let Some(sig) = a.signal {
        handle
            .signal(sig.as_str())
            .await
            .with_context(|| format!("cannot signal process {}", a.pid))?;
        return Ok(ExitCode::SUCCESS);
    }
    let killed = handle
        .kill()
        .await
        .with_context(|| format!("cannot kill process {}", a.pid))?;
    if !killed {
        eprintln!("sandpit: process {} had already ended", a.pid);
    }
    Ok(ExitCode::SUCCESS)
}
