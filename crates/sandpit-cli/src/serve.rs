//! `sandpit serve`: resolve the daemon's configuration (flags, then `SANDPIT_*` environment, then the
//! `--config` TOML file, then defaults), bind the listener and run `sandpit_server::run` until SIGTERM or
//! SIGINT. Sandboxes keep running when the daemon stops.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use sandpit_server::{BackendKind, Config, LogFormat};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  sandpit serve\n  \
    sandpit serve --listen 0.0.0.0:7070 --tls-cert cert.pem --tls-key key.pem\n  \
    sandpit serve --backend process --state-dir /tmp/sandpit   # NO isolation: development only\n\n\
    Every option can also come from SANDPIT_<OPTION> (e.g. SANDPIT_LISTEN) or from the TOML file given \
    with --config (keys: listen, state_dir, api_key, backend, agent_binary, tls_cert, tls_key, \
    default_timeout_secs, max_timeout_secs, max_body_bytes, agent_start_timeout_secs, \
    shutdown_grace_secs, header_timeout_secs, body_idle_timeout_secs, health_interval_ms, health_timeout_ms, \
    unhealthy_grace_secs, audit_retention_days, log_format, cors_origins, import_roots, network, default_egress, network_pool, \
    egress_opt_in, max_connections, dns_upstream, preview_domain, preview_strip_origin, pools, \
    cgroup_favordynmods, e2b_listen, events_retention_days, metrics_interval_ms, metrics_window_secs, \
    metrics_max_series, webhook_max_attempts, webhook_backoff_ms, webhook_timeout_ms). Flags win over the environment, which wins over the \
    file.")]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:7070].
    #[arg(long, env = "SANDPIT_LISTEN", value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Where the database, the API key and per-sandbox files live [default: /var/lib/sandpit as root,
    /// else $`XDG_DATA_HOME/sandpit` or ~/.local/share/sandpit].
    #[arg(long, env = "SANDPIT_STATE_DIR", value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// A TOML configuration file.
    #[arg(long, env = "SANDPIT_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Isolation backend: `isolate` (Linux namespaces, the default) or `process` (NO isolation: the
    /// sandbox's processes run as this user on this host; for development only).
    #[arg(long, env = "SANDPIT_BACKEND", value_name = "NAME")]
    backend: Option<BackendKind>,
    /// The agent binary started in each sandbox (`sandpit-agent` or `sandpit`) [default:
    /// sandpit-agent-static beside this executable (static: runs in any template), else this executable].
    #[arg(long, env = "SANDPIT_AGENT_BINARY", value_name = "PATH")]
    agent_binary: Option<PathBuf>,
    /// PEM certificate chain; serve HTTPS (with --tls-key).
    #[arg(
        long,
        env = "SANDPIT_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(
        long,
        env = "SANDPIT_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
    /// A sandbox's time to live when its create request gives none [default: 300].
    #[arg(long, env = "SANDPIT_DEFAULT_TIMEOUT", value_name = "SECS")]
    default_timeout: Option<u64>,
    /// Log format on stderr: `text` or `json` [default: text].
    #[arg(long, env = "SANDPIT_LOG_FORMAT", value_name = "FORMAT")]
    log_format: Option<LogFormat>,
    /// A web origin allowed to call the API from a browser (CORS), e.g. `https://app.example.com`;
    /// repeatable; `*` allows any origin (development only). `SANDPIT_CORS_ORIGINS` takes a comma-separated
    /// list. Replaces the config file's `cors_origins` when given.
    #[arg(
        long = "cors-origin",
        env = "SANDPIT_CORS_ORIGINS",
        value_name = "ORIGIN",
        value_delimiter = ','
    )]
    cors_origins: Vec<String>,
    /// A directory under which template imports (`sandpit template import`, `POST /v1/templates` with a
    /// `dir`, `tar` or `oci` source) may name host paths; repeatable. Without one, host-path imports are
    /// refused: the daemon reads them with its own privileges. `SANDPIT_IMPORT_ROOTS` takes a `:`-separated
    /// list. Replaces the config file's `import_roots` when given.
    #[arg(
        long = "import-root",
        env = "SANDPIT_IMPORT_ROOTS",
        value_name = "DIR",
        value_delimiter = ':'
    )]
    import_roots: Vec<std::path::PathBuf>,
    /// A warm pool for a template that has none yet, TEMPLATE=SIZE (e.g. `base=8`): that many sandboxes
    /// wait ready and a create takes one; repeatable. `SANDPIT_POOLS` takes a comma-separated list.
    /// Replaces the config file's `pools` when given; `PUT /v1/templates/{name}/pool` changes it later.
    #[arg(
        long = "pool",
        env = "SANDPIT_POOLS",
        value_name = "TEMPLATE=SIZE",
        value_delimiter = ','
    )]
    pools: Vec<String>,
    /// Remount the host's cgroup2 hierarchy with `favordynmods` at start (`on`, the default; host-wide,
    /// until reboot): cgroup moves, which every create and command makes, stop waiting for an RCU grace
    /// period. `off` leaves the host's mount alone.
    #[arg(long, env = "SANDPIT_CGROUP_FAVORDYNMODS", value_name = "on|off", value_parser = parse_on_off)]
    cgroup_favordynmods: Option<bool>,
    /// Sandbox networking: `on` (a veth per sandbox behind the host's nftables firewall, and a DNS
    /// resolver; the default with the isolate backend) or `off` (loopback only).
    #[arg(long, env = "SANDPIT_NETWORK", value_name = "on|off", value_parser = parse_on_off)]
    network: Option<bool>,
    /// The egress policy of a sandbox created without one: `allow` or `deny` [default: allow].
    #[arg(long, env = "SANDPIT_DEFAULT_EGRESS", value_name = "allow|deny")]
    default_egress: Option<sandpit_types::network::Egress>,
    /// The IPv4 range daemons on this host lease their /22 sandbox blocks from [default: 10.212.0.0/15].
    #[arg(long, env = "SANDPIT_NETWORK_POOL", value_name = "CIDR")]
    network_pool: Option<String>,
    /// A CIDR taken out of the always-denied ranges (private networks, link-local, the host, other
    /// sandboxes), so that sandbox policies may reach it; repeatable.
    #[arg(
        long = "egress-opt-in",
        env = "SANDPIT_EGRESS_OPT_IN",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    egress_opt_in: Vec<String>,
    /// Most concurrent outbound connections per sandbox [default: 2500].
    #[arg(long, env = "SANDPIT_MAX_CONNECTIONS", value_name = "N")]
    max_connections: Option<u32>,
    /// How many days the audit log (`GET /v1/audit`) keeps a row [default: 30].
    #[arg(long, env = "SANDPIT_AUDIT_RETENTION_DAYS", value_name = "DAYS")]
    audit_retention_days: Option<u64>,
    /// A DNS server (`IP` or `IP:PORT`) the sandboxes' resolver forwards to; repeatable [default: the
    /// host's /etc/resolv.conf].
    #[arg(
        long = "dns-upstream",
        env = "SANDPIT_DNS_UPSTREAM",
        value_name = "ADDR",
        value_delimiter = ','
    )]
    dns_upstream: Vec<String>,
    /// Preview URLs are `{port}-{id}.DOMAIN` on this listener [default: localhost].
    #[arg(long, env = "SANDPIT_PREVIEW_DOMAIN", value_name = "DOMAIN")]
    preview_domain: Option<String>,
    /// Remove `Origin` from WebSocket upgrades to preview URLs (by default it passes unchanged).
    #[arg(long, env = "SANDPIT_PREVIEW_STRIP_ORIGIN")]
    preview_strip_origin: bool,
    /// Also serve the E2B surface at the root of this address (it is always at /e2b on --listen): for
    /// the E2B SDKs' signed file URLs, which cannot carry a path prefix (docs/e2b.md).
    #[arg(long, env = "SANDPIT_E2B_LISTEN", value_name = "ADDR")]
    e2b_listen: Option<SocketAddr>,
    /// How many days lifecycle events (`GET /v1/events`) and webhook delivery logs are kept [default: 30].
    #[arg(long, env = "SANDPIT_EVENTS_RETENTION_DAYS", value_name = "DAYS")]
    events_retention_days: Option<u64>,
    /// How often each running sandbox's cpu, memory, disk and pids are sampled [default: 5000].
    #[arg(long, env = "SANDPIT_METRICS_INTERVAL_MS", value_name = "MS")]
    metrics_interval_ms: Option<u64>,
    /// How long samples are kept, in memory [default: 3600].
    #[arg(long, env = "SANDPIT_METRICS_WINDOW_SECS", value_name = "SECS")]
    metrics_window_secs: Option<u64>,
    /// Most sandboxes given their own gauges on /metrics, the busiest first [default: 100].
    #[arg(long, env = "SANDPIT_METRICS_MAX_SERIES", value_name = "N")]
    metrics_max_series: Option<u64>,
    /// Most attempts at one webhook delivery [default: 6].
    #[arg(long, env = "SANDPIT_WEBHOOK_MAX_ATTEMPTS", value_name = "N")]
    webhook_max_attempts: Option<u64>,
    /// Wait after a webhook delivery's first failed attempt, doubled after each further one [default: 1000].
    #[arg(long, env = "SANDPIT_WEBHOOK_BACKOFF_MS", value_name = "MS")]
    webhook_backoff_ms: Option<u64>,
    /// One webhook attempt's limit: connect, send, answer [default: 10000].
    #[arg(long, env = "SANDPIT_WEBHOOK_TIMEOUT_MS", value_name = "MS")]
    webhook_timeout_ms: Option<u64>,
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        other => Err(format!("{other:?}: expected on or off")),
    }
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = resolve(args)?;
    init_tracing(config.log_format);
    if config.api_key.is_none() {
        eprintln!(
            "sandpit: API key: {} (created on first start; send it as `Authorization: Bearer <key>`)",
            config.state_dir.join("api-key").display()
        );
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        sandpit_server::run(config, listener, shutdown_signal())
            .await
            .context("sandpit serve")?;
        Ok(ExitCode::SUCCESS)
    });
    // Dropping the runtime would wait for every blocking task, and a template build can run for minutes:
    // give short backend calls a moment, then exit (an unfinished build is discarded, as documented).
    runtime.shutdown_timeout(std::time::Duration::from_secs(3));
    result
}

/// The effective configuration: flags and environment over the file over defaults.
fn resolve(args: ServeArgs) -> anyhow::Result<Config> {
    let mut config = match &args.config {
        Some(path) => Config::from_toml_file(path)?,
        None => Config::default(),
    };
    // The key is deliberately not a flag (flags are visible in `ps`): environment or config file only.
    if let Some(key) = std::env::var("SANDPIT_API_KEY")
        .ok()
        .filter(|k| !k.is_empty())
    {
        config.api_key = Some(key);
    }
    overlay(&mut config, args);
    config.validate()?;
    Ok(config)
}

/// Flags and environment (clap has already merged those two) over whatever the file said.
fn overlay(config: &mut Config, args: ServeArgs) {
    if let Some(v) = args.listen {
        config.listen = v;
    }
    if let Some(v) = args.state_dir {
        config.state_dir = v;
    }
    if let Some(v) = args.backend {
        config.backend = v;
    }
    if let Some(v) = args.agent_binary {
        config.agent_binary = Some(v);
    }
    if let Some(v) = args.tls_cert {
        config.tls_cert = Some(v);
    }
    if let Some(v) = args.tls_key {
        config.tls_key = Some(v);
    }
    if let Some(v) = args.default_timeout {
        config.default_timeout_secs = v;
    }
    if let Some(v) = args.log_format {
        config.log_format = v;
    }
    let origins: Vec<String> = args
        .cors_origins
        .into_iter()
        .map(|o| o.trim().to_owned())
        .filter(|o| !o.is_empty())
        .collect();
    if !origins.is_empty() {
        config.cors_origins = origins;
    }
    let roots: Vec<std::path::PathBuf> = args
        .import_roots
        .into_iter()
        .filter(|r| !r.as_os_str().is_empty())
        .collect();
    if !roots.is_empty() {
        config.import_roots = roots;
    }
    if !args.pools.is_empty() {
        config.pools = args.pools;
    }
    if let Some(v) = args.cgroup_favordynmods {
        config.cgroup_favordynmods = v;
    }
    if let Some(v) = args.network {
        config.network = v;
    }
    if let Some(v) = args.default_egress {
        config.default_egress = v;
    }
    if let Some(v) = args.network_pool {
        config.network_pool = v;
    }
    let opt_in: Vec<String> = args
        .egress_opt_in
        .into_iter()
        .filter(|o| !o.trim().is_empty())
        .collect();
    if !opt_in.is_empty() {
        config.egress_opt_in = opt_in;
    }
    if let Some(v) = args.max_connections {
        config.max_connections = v;
    }
    if let Some(v) = args.audit_retention_days {
        config.audit_retention_days = v;
    }
    if let Some(v) = args.events_retention_days {
        config.events_retention_days = v;
    }
    if let Some(v) = args.metrics_interval_ms {
        config.metrics_interval_ms = v;
    }
    if let Some(v) = args.metrics_window_secs {
        config.metrics_window_secs = v;
    }
    if let Some(v) = args.metrics_max_series {
        config.metrics_max_series = v;
    }
    if let Some(v) = args.webhook_max_attempts {
        config.webhook_max_attempts = v;
    }
    if let Some(v) = args.webhook_backoff_ms {
        config.webhook_backoff_ms = v;
    }
    if let Some(v) = args.webhook_timeout_ms {
        config.webhook_timeout_ms = v;
    }
    let dns: Vec<String> = args
        .dns_upstream
        .into_iter()
        .filter(|o| !o.trim().is_empty())
        .collect();
    if !dns.is_empty() {
        config.dns_upstream = dns;
    }
    if let Some(v) = args.preview_domain {
        config.preview_domain = v;
    }
    if args.preview_strip_origin {
        config.preview_strip_origin = true;
    }
    if let Some(v) = args.e2b_listen {
        config.e2b_listen = Some(v);
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SANDPIT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cmd {
        #[command(flatten)]
        args: ServeArgs,
    }

    #[test]
    fn flags_win_over_the_file_which_wins_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sandpit.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9999\"\nbackend = \"process\"\ndefault_timeout_secs = 60\n",
        )
        .unwrap();
        let cmd = Cmd::try_parse_from([
            "serve".as_ref(),
            "--config".as_ref(),
            file.as_os_str(),
            "--listen".as_ref(),
            "127.0.0.1:8888".as_ref(),
        ])
        .unwrap();
        let config = resolve(cmd.args).unwrap();
        assert_eq!(config.listen.port(), 8888);
        assert_eq!(config.backend, BackendKind::Process);
        assert_eq!(config.default_timeout_secs, 60);
        assert_eq!(config.max_timeout_secs, Config::default().max_timeout_secs);
    }

    #[test]
    fn cors_origins_repeat_and_split_on_commas() {
        let cmd = Cmd::try_parse_from([
            "serve",
            "--cors-origin",
            "http://localhost:5173",
            "--cors-origin",
            "https://a.example, https://b.example",
        ])
        .unwrap();
        let config = resolve(cmd.args).unwrap();
        assert_eq!(
            config.cors_origins,
            [
                "http://localhost:5173",
                "https://a.example",
                "https://b.example"
            ]
        );
        let bad = Cmd::try_parse_from(["serve", "--cors-origin", "a.example"]).unwrap();
        assert!(resolve(bad.args).is_err());
    }

    #[test]
    fn a_bad_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "lisen = 1\n").unwrap();
        let cmd =
            Cmd::try_parse_from(["serve".as_ref(), "--config".as_ref(), file.as_os_str()]).unwrap();
        assert!(resolve(cmd.args).is_err());
    }
}
