//! The daemon's configuration: one plain struct that the library consumes, with the defaults and the
//! TOML loading here. Layering (flags over `SANDPIT_*` env over the file over defaults) is the CLI's job; the
//! library only sees the result, so tests build a [`Config`] directly.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The default listen address: loopback only, so that a fresh install is not reachable from the network.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 7070);

/// Which isolation layer creates sandboxes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// Linux namespaces, cgroups and an overlay rootfs (crate `sandpit-isolate`). The default.
    #[default]
    Isolate,
    /// NO ISOLATION: the agent runs as a plain child process of the daemon's user. For development and tests
    /// on machines without namespaces; never chosen unless asked for by name.
    Process,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Isolate => "isolate",
            Self::Process => "process",
        }
    }
}

impl std::str::FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "isolate" => Ok(Self::Isolate),
            "process" => Ok(Self::Process),
            other => Err(format!(
                "unknown backend {other:?}: expected \"isolate\" or \"process\""
            )),
        }
    }
}

/// How log lines are written (the CLI installs the subscriber; kept here so the TOML file can set it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!(
                "unknown log format {other:?}: expected \"text\" or \"json\""
            )),
        }
    }
}

/// Everything `sandpitd` can be configured with. Field names are the TOML keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the CLI binds. [`crate::run`] takes an already bound listener and ignores this.
    pub listen: SocketAddr,
    /// Holds `sandpit.db`, `api-key`, and one directory per sandbox.
    pub state_dir: PathBuf,
    /// The API key. When unset, the key in `STATE_DIR/api-key` is used, generated on first start.
    pub api_key: Option<String>,
    pub backend: BackendKind,
    /// The binary started as each sandbox's agent (`sandpit-agent` or `sandpit`); when unset,
    /// [`STATIC_AGENT_NAME`] beside the running executable if it is there, else the running executable.
    pub agent_binary: Option<PathBuf>,
    /// PEM certificate chain; TLS is served when both this and `tls_key` are set.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// A sandbox's time to live when the create request gives none.
    pub default_timeout_secs: u64,
    /// The largest `timeout` a request may ask for.
    pub max_timeout_secs: u64,
    /// Largest JSON request body the daemon itself parses (proxied bodies are the agent's business).
    pub max_body_bytes: usize,
    /// How long a starting sandbox's init may go without doing anything (no CPU, no I/O, no wait on the
    /// disk) before its create fails with a 503 to retry; an init that keeps working gets up to four of
    /// these (a slow host is not a stuck sandbox).
    pub agent_start_timeout_secs: u64,
    /// After a shutdown signal, how long open requests (streams included) may run before they are cut.
    pub shutdown_grace_secs: u64,
    /// How long a client has to send a whole request head (and, on a kept-alive connection, the next
    /// one); a connection that takes longer is closed (slowloris). HTTP/2: the time to answer a ping.
    pub header_timeout_secs: u64,
    /// How long a request body may go without a byte arriving before the request is cut (a body that
    /// trickles or never finishes cannot hold a handler, a proxied agent connection or a file write).
    pub body_idle_timeout_secs: u64,
    /// How often the daemon asks every running sandbox's agent `GET /health`.
    pub health_interval_ms: u64,
    /// How long an agent has to answer that probe.
    pub health_timeout_ms: u64,
    /// How long an agent that is not stopped (a slow one on a loaded host) may keep failing the probe
    /// before its sandbox is reported `unhealthy`; a stopped agent is reported at once.
    pub unhealthy_grace_secs: u64,
    /// How long the audit log (`GET /v1/audit`) keeps a row, in days.
    pub audit_retention_days: u64,
    /// How long lifecycle events (`GET /v1/events`) and the webhook delivery log are kept, in days.
    pub events_retention_days: u64,
    /// How often each running sandbox's cpu, memory, disk and pids are sampled
    /// (`GET /v1/sandboxes/{id}/metrics`).
    pub metrics_interval_ms: u64,
    /// How long samples are kept (in memory), in seconds.
    pub metrics_window_secs: u64,
    /// Most sandboxes given per-sandbox gauges on `/metrics` (the busiest first).
    pub metrics_max_series: u64,
    /// Most attempts at one webhook delivery.
    pub webhook_max_attempts: u64,
    /// The wait after a webhook delivery's first failed attempt, doubled after each further one.
    pub webhook_backoff_ms: u64,
    /// One webhook attempt's limit (connect, send, answer).
    pub webhook_timeout_ms: u64,
    pub log_format: LogFormat,
    /// Origins whose web pages may call the API (CORS), e.g. `https://app.example.com`; `*` allows every
    /// origin (development only: any page the user visits could then use a key it gets hold of). Empty:
    /// no CORS headers at all, so browsers keep other origins out.
    pub cors_origins: Vec<String>,
    /// Directories under which `POST /v1/templates` may name a host path (`dir`, `tar`, `oci` sources).
    /// Those paths are read with the daemon's privileges, so by default (empty) host-path imports are
    /// refused and only `debian` builds work: list where template sources live, e.g. `/srv/templates`.
    pub import_roots: Vec<PathBuf>,
    /// Give `isolate` sandboxes a network link out (veth + the host's nftables firewall + a DNS
    /// resolver). Off: sandboxes have loopback only and `network` policies are refused.
    pub network: bool,
    /// The policy of a sandbox created without one: `allow` (everything but the always-denied ranges)
    /// or `deny` (nothing).
    pub default_egress: sandpit_types::network::Egress,
    /// The IPv4 range daemons on this host lease their /22 sandbox blocks from (a host-wide lease under
    /// `/run/sandpit/net`, so concurrent daemons never overlap). Always denied to sandboxes.
    pub network_pool: String,
    /// CIDRs taken out of the always-denied ranges (private networks, 100.64/10, link-local, the host's
    /// own addresses, other sandboxes) so that a sandbox policy may reach them: e.g. an internal package
    /// mirror. Empty by default.
    pub egress_opt_in: Vec<String>,
    /// Most concurrent outbound connections (TCP and UDP flows) per sandbox.
    pub max_connections: u32,
    /// DNS servers (`IP` or `IP:PORT`) the sandboxes' resolver forwards to; the host's
    /// `/etc/resolv.conf` when empty.
    pub dns_upstream: Vec<String>,
    /// Preview URLs are `{port}-{id}.{preview_domain}` on the daemon's listener. The default,
    /// `localhost`, needs no DNS: browsers resolve every `*.localhost` name to loopback.
    pub preview_domain: String,
    /// Remove the `Origin` header from WebSocket upgrades to preview URLs (some servers refuse an
    /// origin that is not theirs); by default it is passed through unchanged.
    pub preview_strip_origin: bool,
    /// Warm pools a template gets when it has none yet, as `TEMPLATE=SIZE` (e.g. `base=8`): that many
    /// sandboxes of it wait ready, so a create takes one instead of starting one. `PUT
    /// /v1/templates/{name}/pool` changes a pool later; that choice is kept across restarts.
    pub pools: Vec<String>,
    /// With the `isolate` backend, remount the host's cgroup2 hierarchy with `favordynmods` at start
    /// (host-wide, until reboot): moving a process between cgroups (every create, every command's own
    /// cgroup) then stops waiting for an RCU grace period, 10-20 ms on an idle host. Off leaves the host's
    /// mount alone.
    pub cgroup_favordynmods: bool,
    /// A second listener serving only the E2B surface, at its root (the E2B surface is always at `/e2b`
    /// on the main listener too): for E2B SDK calls that cannot carry a path prefix (signed file URLs).
    pub e2b_listen: Option<std::net::SocketAddr>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN,
            state_dir: default_state_dir(),
            api_key: None,
            backend: BackendKind::default(),
            agent_binary: None,
            tls_cert: None,
            tls_key: None,
            default_timeout_secs: 300,
            max_timeout_secs: 86_400,
            max_body_bytes: 1024 * 1024,
            agent_start_timeout_secs: 15,
            shutdown_grace_secs: 10,
            header_timeout_secs: 30,
            body_idle_timeout_secs: 60,
            health_interval_ms: 1000,
            health_timeout_ms: 2000,
            unhealthy_grace_secs: 20,
            audit_retention_days: 30,
            events_retention_days: 30,
            metrics_interval_ms: 5000,
            metrics_window_secs: 3600,
            metrics_max_series: 100,
            webhook_max_attempts: 6,
            webhook_backoff_ms: 1000,
            webhook_timeout_ms: 10_000,
            log_format: LogFormat::default(),
            cors_origins: Vec::new(),
            import_roots: Vec::new(),
            network: true,
            default_egress: sandpit_types::network::Egress::Allow,
            network_pool: "10.212.0.0/15".into(),
            egress_opt_in: Vec::new(),
            max_connections: 2500,
            dns_upstream: Vec::new(),
            preview_domain: "localhost".into(),
            preview_strip_origin: false,
            pools: Vec::new(),
            cgroup_favordynmods: true,
            e2b_listen: None,
        }
    }
}

/// A configuration file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("invalid config file {path}: {cause}")]
    Parse {
        path: PathBuf,
        cause: Box<toml::de::Error>,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// A configuration with every default but the state directory: what tests and embedders usually want.
    pub fn with_state_dir(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: state_dir.into(),
            ..Self::default()
        }
    }

    /// Reads a TOML file; keys it does not set keep their defaults, unknown keys are an error.
    pub fn from_toml_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: path.to_owned(),
            cause,
        })?;
        toml::from_str(&text).map_err(|cause| ConfigError::Parse {
            path: path.to_owned(),
            cause: Box::new(cause),
        })
    }

    /// Checks what can be checked before anything is started.
    /// [`Config::pools`] parsed: `(template, size)`.
    pub fn pool_defaults(&self) -> Result<Vec<(String, u64)>, ConfigError> {
        self.pools
            .iter()
            .map(|p| {
                let bad = || {
                    ConfigError::Invalid(format!(
                        "pool {p:?}: expected TEMPLATE=SIZE with a template name and a size of 0 to {}",
                        crate::pools::MAX_POOL
                    ))
                };
                let (t, n) = p.split_once('=').ok_or_else(bad)?;
                let n: u64 = n.trim().parse().map_err(|_| bad())?;
                if !sandpit_types::sandbox::valid_template_name(t.trim()) || n > crate::pools::MAX_POOL {
                    return Err(bad());
                }
                Ok((t.trim().to_owned(), n))
            })
            .collect()
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.pool_defaults()?;
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError::Invalid(
                "tls_cert and tls_key must be given together".into(),
            ));
        }
        if self.default_timeout_secs == 0 || self.default_timeout_secs > self.max_timeout_secs {
            return Err(ConfigError::Invalid(format!(
                "default_timeout_secs must be between 1 and max_timeout_secs ({})",
                self.max_timeout_secs
            )));
        }
        if self.header_timeout_secs == 0 || self.header_timeout_secs > 3600 {
            return Err(ConfigError::Invalid(format!(
                "header_timeout_secs must be between 1 and 3600 (got {})",
                self.header_timeout_secs
            )));
        }
        for (name, v, lo, hi) in [
            (
                "body_idle_timeout_secs",
                self.body_idle_timeout_secs,
                1,
                3600,
            ),
            ("health_interval_ms", self.health_interval_ms, 100, 60_000),
            ("health_timeout_ms", self.health_timeout_ms, 100, 60_000),
            ("unhealthy_grace_secs", self.unhealthy_grace_secs, 0, 3600),
            ("audit_retention_days", self.audit_retention_days, 1, 36_500),
            (
                "events_retention_days",
                self.events_retention_days,
                1,
                36_500,
            ),
            (
                "metrics_interval_ms",
                self.metrics_interval_ms,
                100,
                3_600_000,
            ),
            (
                "metrics_window_secs",
                self.metrics_window_secs,
                10,
                7 * 86_400,
            ),
            ("metrics_max_series", self.metrics_max_series, 0, 10_000),
            ("webhook_max_attempts", self.webhook_max_attempts, 1, 50),
            ("webhook_backoff_ms", self.webhook_backoff_ms, 10, 3_600_000),
            ("webhook_timeout_ms", self.webhook_timeout_ms, 100, 300_000),
        ] {
            if !(lo..=hi).contains(&v) {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be between {lo} and {hi} (got {v})"
                )));
            }
        }
        crate::api::cors::Cors::new(&self.cors_origins)
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if let Some(r) = self.import_roots.iter().find(|r| !r.is_absolute()) {
            return Err(ConfigError::Invalid(format!(
                "import root {} must be an absolute path",
                r.display()
            )));
        }
        crate::network::NetSettings::from_config(self).map_err(ConfigError::Invalid)?;
        if self.api_key.as_ref().is_some_and(|k| k.len() < 16) {
            return Err(ConfigError::Invalid(
                "api_key must be at least 16 characters".into(),
            ));
        }
        Ok(())
    }

    /// The agent binary to start: the configured one; else the static agent beside the running
    /// executable ([`STATIC_AGENT_NAME`]); else the running executable (the `sandpit` binary itself, which
    /// runs only in templates that hold the glibc it was linked against).
    pub fn resolved_agent_binary(&self) -> std::io::Result<PathBuf> {
        if let Some(p) = &self.agent_binary {
            return Ok(p.clone());
        }
        let exe = std::env::current_exe()?;
        let beside = exe.with_file_name(STATIC_AGENT_NAME);
        Ok(if beside.is_file() { beside } else { exe })
    }
}

/// The file name of the statically linked agent (`sandpit-agent`, built by `scripts/build-agent.sh`)
/// the daemon looks for beside its own binary: with it, a template needs no libc for the agent.
pub const STATIC_AGENT_NAME: &str = "sandpit-agent-static";

/// `/var/lib/sandpit` for root; otherwise `$XDG_DATA_HOME/sandpit`, `~/.local/share/sandpit`, or
/// `./sandpit-state` as a last resort.
pub fn default_state_dir() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/sandpit");
    }
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("sandpit");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home).join(".local/share/sandpit");
    }
    PathBuf::from("sandpit-state")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_sets_some_fields_and_rejects_unknown_ones() {
        let c: Config =
            toml::from_str("backend = \"process\"\ndefault_timeout_secs = 60\n").unwrap();
        assert_eq!(c.backend, BackendKind::Process);
        assert_eq!(c.default_timeout_secs, 60);
        assert_eq!(c.listen, DEFAULT_LISTEN);
        assert!(toml::from_str::<Config>("nope = 1").is_err());
        let c: Config = toml::from_str("cors_origins = [\"http://localhost:5173\"]\n").unwrap();
        assert_eq!(c.cors_origins, ["http://localhost:5173"]);
    }

    #[test]
    fn import_roots_must_be_absolute() {
        let mut c: Config = toml::from_str("import_roots = [\"/srv/templates\"]\n").unwrap();
        assert!(c.validate().is_ok());
        c.import_roots.push("relative".into());
        assert!(c.validate().unwrap_err().to_string().contains("absolute"));
    }

    #[test]
    fn validate_catches_a_bad_cors_origin() {
        let mut c = Config::with_state_dir("/tmp/x");
        c.cors_origins = vec!["localhost:5173".into()];
        assert!(c.validate().is_err());
        c.cors_origins = vec!["*".into(), "https://a.example".into()];
        assert!(c.validate().is_ok());
    }

    #[test]
    fn validate_catches_half_tls() {
        let mut c = Config::with_state_dir("/tmp/x");
        c.tls_cert = Some("/c".into());
        assert!(c.validate().is_err());
    }
}
