//! What every test of the real `sandpit` binary shares, so that it is written once:
//!
//! * [`skip`]: the skip policy. A suite that cannot run here (no root, no tool) says so loudly and passes,
//!   except under CI (`CI` set and not `false`/`0`, as CI sets it), where a skip is a failure: the escape,
//!   isolation, TLS and `OpenAPI` suites can never silently stop running.
//! * [`binary`] / [`sandpit_bin`]: where the built binaries are (`$SANDPIT_BIN`, `$SANDPIT_PROBE_BIN`, else
//!   the workspace's `target/debug`), never built by a test.
//! * [`Serve`]: a spawned `sandpit serve` on a loopback port with its own state directory, its output in a
//!   log file, killed when dropped.
//! * [`free_port`], and [`eventually`] / [`eventually_blocking`]: poll a condition until it holds or a
//!   deadline passes, instead of sleeping a fixed time.
//!
//! It owns no knowledge of the API beyond `GET /health` and the generated key file; API helpers live with
//! the suites (each crate's own client or SDK).

use std::fmt::Display;
use std::future::Future;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether this is a CI run: `CI` is set to anything but an empty string, `false` or `0`.
#[must_use]
pub fn under_ci() -> bool {
    means_ci(std::env::var("CI").ok().as_deref())
}

fn means_ci(value: Option<&str>) -> bool {
    value.is_some_and(|v| !matches!(v.trim(), "" | "false" | "0"))
}

/// Whether the tests run as root.
#[must_use]
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Reports that a test cannot run here. Prints a loud `SKIPPED` line; under CI (see [`under_ci`]) it
/// panics instead, so that a suite that stops running fails the build. Call it and `return`.
///
/// # Panics
/// Under CI, always.
pub fn skip(reason: impl Display) {
    assert!(
        !under_ci(),
        "a test would be SKIPPED under CI ({reason}); CI runs as root with every tool installed by \
         scripts/setup.sh, so a skip there means a suite silently stopped running"
    );
    eprintln!("\n*** SKIPPED: {reason} ***\n");
}

/// [`skip`]s unless the tests run as root; returns whether they do.
#[must_use]
pub fn require_root(what: &str) -> bool {
    if is_root() {
        return true;
    }
    skip(format_args!("{what} needs root (CI runs it as root)"));
    false
}

/// The workspace's target directory: `$CARGO_TARGET_DIR`, else `<workspace>/target`.
#[must_use]
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"),
        PathBuf::from,
    )
}

/// A built binary of the workspace: `$ENV_VAR` when set, else `target/debug/NAME`. `None` (after
/// [`skip`]) when it does not exist: tests never build it themselves.
#[must_use]
pub fn binary(name: &str, env_var: &str) -> Option<PathBuf> {
    let bin = std::env::var_os(env_var)
        .map_or_else(|| target_dir().join("debug").join(name), PathBuf::from);
    if bin.exists() {
        return Some(bin);
    }
    skip(format_args!(
        "{} not found; run `cargo build --workspace` first (or set {env_var})",
        bin.display()
    ));
    None
}

/// The `sandpit` binary (`$SANDPIT_BIN`, else `target/debug/sandpit`), or `None` after [`skip`].
///
/// # Panics
/// When the static agent the daemon would pick up beside it (`sandpit-agent-static`) is older than it:
/// the sandboxes would run an agent built from older code (run `scripts/build-agent.sh`).
#[must_use]
pub fn sandpit_bin() -> Option<PathBuf> {
    let bin = binary("sandpit", "SANDPIT_BIN")?;
    let agent = bin.with_file_name("sandpit-agent-static");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(a), Some(b)) = (modified(&agent), modified(&bin)) {
        assert!(
            a >= b,
            "{} is older than {}: sandboxes would run a stale agent; rebuild it with \
             scripts/build-agent.sh (or remove it to use the sandpit binary as the agent)",
            agent.display(),
            bin.display()
        );
    }
    Some(bin)
}

/// The static agent beside the `sandpit` binary (`scripts/build-agent.sh` builds it), which templates
/// without a libc need; `None` after [`skip`] when it is missing.
#[must_use]
pub fn static_agent(sandpit_bin: &Path) -> Option<PathBuf> {
    let agent = sandpit_bin.with_file_name("sandpit-agent-static");
    if agent.is_file() {
        Some(agent)
    } else {
        skip(format!(
            "{} not found: build it with scripts/build-agent.sh",
            agent.display()
        ));
        None
    }
}

/// A free loopback port. There is a small window before the daemon binds it; tests accept that.
///
/// # Panics
/// When no loopback port can be bound at all.
#[must_use]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
        .port()
}

/// Polls `check` every 25 ms until it returns `Some`, and returns that value.
///
/// # Panics
/// When `timeout` passes first, naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// [`eventually`] for code that is not async.
///
/// # Panics
/// When `timeout` passes first, naming `what`.
pub fn eventually_blocking<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// How a [`Serve`] starts. Made by [`Serve::builder`].
#[derive(Debug, Clone)]
pub struct ServeBuilder {
    bin: PathBuf,
    state_dir: PathBuf,
    backend: Option<String>,
    port: Option<u16>,
    key: Option<String>,
    args: Vec<String>,
    log: Option<PathBuf>,
    ready_within: Duration,
}

impl ServeBuilder {
    /// `--backend NAME`; without it the daemon picks its default (isolate as root), and
    /// `$SANDPIT_BACKEND` is cleared.
    #[must_use]
    pub fn backend(mut self, name: &str) -> Self {
        self.backend = Some(name.to_owned());
        self
    }

    /// Listens on this port (a restarted daemon must be where its clients reconnect); else a free one.
    #[must_use]
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// The API key, given through `$SANDPIT_API_KEY`. Without it the daemon generates one in
    /// `STATE/api-key`, which [`Serve::key`] then holds.
    #[must_use]
    pub fn key(mut self, key: &str) -> Self {
        self.key = Some(key.to_owned());
        self
    }

    /// One more `sandpit serve` argument.
    #[must_use]
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// More `sandpit serve` arguments.
    #[must_use]
    pub fn args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Where its stdout and stderr go (appended); default `STATE.log` beside the state directory.
    #[must_use]
    pub fn log(mut self, path: impl Into<PathBuf>) -> Self {
        self.log = Some(path.into());
        self
    }

    /// How long it may take to answer `GET /health` (default 60 s: a daemon restarted under load
    /// re-attaches every surviving sandbox first).
    #[must_use]
    pub fn ready_within(mut self, d: Duration) -> Self {
        self.ready_within = d;
        self
    }

    fn spawn(&self) -> Serve {
        let port = self.port.unwrap_or_else(free_port);
        let log_path = self
            .log
            .clone()
            .unwrap_or_else(|| self.state_dir.with_extension("log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap_or_else(|e| panic!("open {}: {e}", log_path.display()));
        let mut cmd = Command::new(&self.bin);
        cmd.arg("serve");
        if let Some(b) = &self.backend {
            cmd.args(["--backend", b]);
        }
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--state-dir")
            .arg(&self.state_dir)
            .args(&self.args)
            // Hermetic: nothing from the developer's environment configures the daemon under test.
            .env_remove("SANDPIT_API_KEY")
            .env_remove("SANDPIT_CONFIG")
            .env_remove("SANDPIT_BACKEND")
            .env_remove("SANDPIT_URL")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup the log file"))
            .stderr(log);
        if let Some(k) = &self.key {
            cmd.env("SANDPIT_API_KEY", k);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {} serve: {e}", self.bin.display()));
        Serve {
            child,
            base: format!("http://127.0.0.1:{port}"),
            port,
            log: log_path,
            key: self.key.clone().unwrap_or_default(),
            state_dir: self.state_dir.clone(),
        }
    }

    /// Spawns it and waits (blocking this thread) until it answers `GET /health`.
    ///
    /// # Panics
    /// When it exits or does not answer in time; the message holds its log.
    #[must_use]
    pub fn start_blocking(self) -> Serve {
        let mut serve = self.spawn();
        let deadline = Instant::now() + self.ready_within;
        while !serve.poll_ready() {
            assert!(
                Instant::now() < deadline,
                "sandpit serve did not come up: {}",
                serve.log_text()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
        serve
    }

    /// Spawns it and waits until it answers `GET /health`, without blocking the runtime.
    ///
    /// # Panics
    /// When it exits or does not answer in time; the message holds its log.
    pub async fn start(self) -> Serve {
        let mut serve = self.spawn();
        let deadline = Instant::now() + self.ready_within;
        loop {
            let (s, ready) = tokio::task::spawn_blocking(move || {
                let mut s = serve;
                let ready = s.poll_ready();
                (s, ready)
            })
            .await
            .expect("readiness poll");
            serve = s;
            if ready {
                return serve;
            }
            assert!(
                Instant::now() < deadline,
                "sandpit serve did not come up: {}",
                serve.log_text()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// A spawned `sandpit serve`, killed (not stopped) when dropped unless [`Serve::stop`]ped first.
#[derive(Debug)]
pub struct Serve {
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    pub port: u16,
    /// Its stdout and stderr.
    pub log: PathBuf,
    /// The API key: the one given, or the one it generated.
    pub key: String,
    pub state_dir: PathBuf,
}

impl Serve {
    /// A daemon of binary `bin` with state directory `state_dir` (created by the daemon if missing).
    #[must_use]
    pub fn builder(bin: impl Into<PathBuf>, state_dir: impl Into<PathBuf>) -> ServeBuilder {
        ServeBuilder {
            bin: bin.into(),
            state_dir: state_dir.into(),
            backend: None,
            port: None,
            key: None,
            args: Vec::new(),
            log: None,
            ready_within: Duration::from_secs(60),
        }
    }

    /// One readiness attempt: `GET /health` answered 200 (and, for a generated key, the key file is
    /// written). A 2 s timeout: a port held by something that never answers must fail the test, not
    /// hang it.
    fn poll_ready(&mut self) -> bool {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("sandpit serve exited ({status}): {}", self.log_text());
        }
        if !health_ok(self.port) {
            return false;
        }
        if self.key.is_empty() {
            match std::fs::read_to_string(self.state_dir.join("api-key")) {
                Ok(k) if !k.trim().is_empty() => k.trim().clone_into(&mut self.key),
                _ => return false,
            }
        }
        true
    }

    /// `BASE` + `path`.
    #[must_use]
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `127.0.0.1:PORT`, for raw TCP clients.
    #[must_use]
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its output so far.
    #[must_use]
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL and reap.
    ///
    /// # Panics
    /// When it cannot be killed or reaped.
    pub fn sigkill(mut self) {
        self.child.kill().expect("kill sandpit serve");
        self.child.wait().expect("reap sandpit serve");
    }

    /// SIGTERM (a graceful stop) and wait up to `grace`, then SIGKILL. Returns whether it stopped in
    /// time.
    pub fn stop(&mut self, grace: Duration) -> bool {
        // SAFETY: kill(2) with a pid of our own child, which has not been reaped (we hold it).
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Volumes stay mounted on the host after their daemon (by design); a test that failed before
        // deleting its volumes must not leave loop mounts under a directory that is then removed. A
        // daemon started again on the same state directory mounts them again when they are used.
        for e in std::fs::read_dir(self.state_dir.join("isolate/volumes"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(e.path().join("mnt"))
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Whether `GET /health` on the port answers 200 within 2 s.
fn health_ok(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ci_is_recognised_the_way_ci_systems_set_it() {
        for v in ["true", "1", "yes", "TRUE"] {
            assert!(means_ci(Some(v)), "{v}");
        }
        for v in [None, Some(""), Some("false"), Some("0"), Some(" ")] {
            assert!(!means_ci(v), "{v:?}");
        }
    }

    #[test]
    fn eventually_returns_the_first_value_and_times_out_with_the_name() {
        let mut n = 0;
        let v = eventually_blocking("n to reach 3", Duration::from_secs(5), || {
            n += 1;
            (n == 3).then_some(n)
        });
        assert_eq!(v, 3);
        let err = std::panic::catch_unwind(|| {
            eventually_blocking::<()>("never", Duration::from_millis(50), || None);
        })
        .unwrap_err();
        let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains("waiting for never"), "{msg}");
    }

    #[test]
    fn health_is_false_on_a_port_nobody_serves() {
        assert!(!health_ok(free_port()));
    }
}
