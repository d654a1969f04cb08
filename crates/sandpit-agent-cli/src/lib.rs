//! The agent's command line: parse `sandpit agent`'s flags, bind the listener, run the agent until
//! SIGTERM/SIGINT (from outside the sandbox when the agent is its PID 1).
//!
//! Shared by the `sandpit` binary (`sandpit agent`) and the `sandpit-agent` binary, which holds only the
//! agent and is built statically (`scripts/build-agent.sh`): the daemon binds it into every sandbox, where
//! it must run whatever the template holds, a template with no libc at all included.

use std::collections::BTreeMap;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use sandpit_agent::{Agent, AgentConfig, Listener};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  sandpit agent --listen 127.0.0.1:7071\n  \
    sandpit agent --listen unix:/run/sandpit/agent.sock --default-user user --ready-fd 3")]
pub struct AgentArgs {
    /// `HOST:PORT` for TCP (no isolation: development and tests), `unix:/PATH` for a unix socket, or
    /// `fd:N` for a listening unix socket inherited on fd N (how sandboxes start the agent).
    #[arg(long, env = "SANDPIT_AGENT_LISTEN")]
    listen: String,
    /// Directory for per-process output spill files [default: a new directory under $TMPDIR].
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// User that processes run as when a request names none [default: the agent's own user].
    #[arg(long)]
    default_user: Option<String>,
    /// Sandbox-wide environment variable for every process (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Output kept per process, memory plus disk; the oldest is dropped (and reported) beyond it.
    #[arg(long, default_value_t = 64 << 20, value_name = "BYTES")]
    output_cap: u64,
    /// How long finished processes stay queryable.
    #[arg(long, default_value_t = 600, value_name = "SECS")]
    retention_secs: u64,
    /// Write one byte to this inherited fd and close it once listening (readiness for the daemon).
    #[arg(long, value_name = "FD")]
    ready_fd: Option<i32>,
    /// A cgroup directory in which to create one child cgroup per process.
    #[arg(long)]
    cgroup: Option<PathBuf>,
    /// An inherited `cgroup.procs` descriptor (opened by the host) each process writes itself into
    /// first (repeatable): how it enters the subtree `--cgroup` is in.
    #[arg(long, value_name = "FD", requires = "cgroup")]
    cgroup_entry_fd: Vec<i32>,
    /// An inherited descriptor to hold open, untouched, for the agent's whole life (repeatable): the host
    /// takes it back with `pidfd_getfd` (the isolate backend keeps the sandbox's writable layer here).
    #[arg(long, value_name = "FD")]
    keep_fd: Vec<i32>,
    /// Seconds between SIGTERM and SIGKILL for processes at shutdown.
    #[arg(long, default_value_t = 2)]
    shutdown_grace_secs: u64,
    /// Log format.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Log to this file (rotated to FILE.1 at --log-max-bytes; served at `GET /logs`) instead of stderr.
    #[arg(long, value_name = "FILE")]
    log_file: Option<PathBuf>,
    /// Size at which --log-file is rotated.
    #[arg(long, default_value_t = sandpit_agent::log::DEFAULT_MAX_BYTES, value_name = "BYTES")]
    log_max_bytes: u64,
}

/// Runs the agent with `args` until it is told to stop.
///
/// # Errors
/// Bad flags, a listener that cannot be bound, or a failed start.
pub fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    init_tracing(
        &args.log_format,
        args.log_file.as_deref(),
        args.log_max_bytes,
    )?;
    let mut env = BTreeMap::new();
    for kv in &args.env {
        let Some((k, v)) = kv.split_once('=') else {
            bail!("--env {kv:?}: expected KEY=VALUE")
        };
        if k.is_empty() {
            bail!("--env {kv:?}: empty variable name");
        }
        env.insert(k.to_owned(), v.to_owned());
    }
    if args.output_cap < 64 * 1024 {
        bail!(
            "--output-cap {} is too small: use at least 65536 bytes",
            args.output_cap
        );
    }
    let mut config = AgentConfig {
        default_user: args.default_user,
        env,
        output_cap: args.output_cap,
        retention: Duration::from_secs(args.retention_secs),
        cgroup: args.cgroup,
        cgroup_entry_fds: args.cgroup_entry_fd,
        kept_fds: args.keep_fd,
        log_file: args.log_file.clone(),
        ..AgentConfig::default()
    };
    if let Some(dir) = args.log_dir {
        config.log_dir = dir;
    }
    // Before the runtime's threads exist, so that they inherit the mask (see `shutdown_signal`).
    let signals = ShutdownSignals::new().context("cannot set up the shutdown signals")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = bind(&args.listen).await?;
        if let Listener::Tcp(l) = &listener {
            // Tests and scripts that ask for port 0 learn the real port from this line.
            println!("listening on {}", l.local_addr().context("local address")?);
        }
        let agent = Agent::new(config).context("cannot start the agent")?;
        tracing::info!(listen = %args.listen, pid = std::process::id(), "agent listening");
        if let Some(fd) = args.ready_fd {
            signal_ready(fd).with_context(|| format!("--ready-fd {fd}"))?;
        }
        // While the daemon answers the create: the first command's path lookups, done now.
        let warm = agent.clone();
        tokio::task::spawn_blocking(move || warm.warm_up());
        sandpit_agent::run(
            agent,
            listener,
            signals.wait(),
            Duration::from_secs(args.shutdown_grace_secs),
        )
        .await
        .context("serving the agent API")?;
        Ok(ExitCode::SUCCESS)
    })
}

async fn bind(addr: &str) -> anyhow::Result<Listener> {
    if let Some(fd) = addr.strip_prefix("fd:") {
        // A listening unix socket bound by whoever started us (the isolation layer does this, so
        // that the socket's path never exists inside the sandbox).
        let fd: i32 = fd
            .parse()
            .with_context(|| format!("--listen {addr:?}: expected fd:N"))?;
        if fd < 3 {
            bail!("--listen {addr:?}: refusing stdin/stdout/stderr as the listening socket");
        }
        // SAFETY: the fd number was handed to us for exactly this purpose; we take ownership. If it
        // is not a listening unix socket, set_nonblocking/accept fail and we report that.
        let std_listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) };
        std_listener
            .set_nonblocking(true)
            .with_context(|| format!("--listen {addr:?}: not an open socket"))?;
        let l = tokio::net::UnixListener::from_std(std_listener)
            .with_context(|| format!("--listen {addr:?}: not a unix socket"))?;
        return Ok(Listener::Unix(l));
    }
    if let Some(path) = addr.strip_prefix("unix:") {
        let _ = std::fs::remove_file(path);
        let l = tokio::net::UnixListener::bind(path)
            .with_context(|| format!("cannot listen on {path}"))?;
        return Ok(Listener::Unix(l));
    }
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr:?} (expected HOST:PORT or unix:/PATH)"))?;
    Ok(Listener::Tcp(l))
}

fn signal_ready(fd: i32) -> anyhow::Result<()> {
    use std::io::Write;
    if fd < 3 {
        bail!("refusing to use stdin/stdout/stderr as the ready fd");
    }
    // SAFETY: the fd number was handed to us by our parent for exactly this purpose; we take ownership
    // and close it after one write. If it is not open, the write fails and we report it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut f = std::fs::File::from(owned);
    f.write_all(b"R").context("cannot write the ready byte")?;
    Ok(())
}

/// SIGTERM and SIGINT, read from a `signalfd` so that the sender is known.
///
/// As a sandbox's PID 1 the agent receives from inside its pid namespace only the signals it handles
/// (the kernel drops the rest, SIGKILL and SIGSTOP included), so a plain handler would let any process
/// in the sandbox, root or not, stop the agent with `kill -TERM 1`. A signal sent from outside the
/// namespace (the daemon, an operator on the host) carries sender pid 0 there; only those end the agent.
/// Run as an ordinary process (not PID 1: development, tests), every SIGTERM/SIGINT counts.
struct ShutdownSignals {
    fd: nix::sys::signalfd::SignalFd,
}

impl ShutdownSignals {
    fn new() -> anyhow::Result<Self> {
        use nix::sys::signal::{SigSet, Signal};
        use nix::sys::signalfd::{SfdFlags, SignalFd};
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGTERM);
        mask.add(Signal::SIGINT);
        mask.thread_block().context("blocking SIGTERM/SIGINT")?;
        let fd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .context("signalfd")?;
        Ok(Self { fd })
    }

    async fn wait(self) {
        let only_from_outside = sandpit_agent::guard::active();
        // SAFETY: the SignalFd owns its descriptor and moves into the AsyncFd, which owns it from then on:
        // it stays open and the same for the AsyncFd's whole life.
        let fd = match unsafe { tokio::io::unix::AsyncFd::register(self.fd) } {
            Ok(fd) => fd,
            Err(e) => {
                let e = std::io::Error::from(e);
                tracing::error!(error = %e, "cannot watch the shutdown signals: SIGTERM will not stop the agent");
                return std::future::pending().await;
            }
        };
        // A loop of `kill -TERM 1` inside must not push everything else out of the capped log.
        let mut quiet = sandpit_agent::guard::RateLimit::new(std::time::Duration::from_secs(60));
        loop {
            let Ok(mut ready) = fd.readable().await else {
                return std::future::pending().await;
            };
            match ready.get_inner().read_signal() {
                Ok(Some(info)) => {
                    if !only_from_outside || info.ssi_pid == 0 {
                        return;
                    }
                    if let Some(suppressed) = quiet.allow() {
                        tracing::warn!(
                            signal = info.ssi_signo,
                            sender_pid = info.ssi_pid,
                            suppressed,
                            "ignoring a shutdown signal sent from inside the sandbox"
                        );
                    }
                }
                Ok(None) => ready.clear_ready(),
                Err(e) => {
                    tracing::error!(error = %e, "reading the shutdown signals failed");
                    ready.clear_ready();
                }
            }
        }
    }
}

fn init_tracing(
    format: &str,
    file: Option<&std::path::Path>,
    max_bytes: u64,
) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SANDPIT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if let Some(path) = file {
        let f = sandpit_agent::log::RotatingFile::open(path, max_bytes)
            .with_context(|| format!("--log-file {}", path.display()))?;
        let builder = builder
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(f));
        if format == "json" {
            builder.json().init();
        } else {
            builder.init();
        }
    } else {
        let builder = builder.with_writer(std::io::stderr);
        if format == "json" {
            builder.json().init();
        } else {
            builder.init();
        }
    }
    Ok(())
}
