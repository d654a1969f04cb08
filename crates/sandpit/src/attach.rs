//! Terminal attach (microsandbox's `attach`, `attach_shell`, `attach_with`): bridges this process's
//! terminal, in raw mode, to a PTY process in the sandbox over its WebSocket session. Keystrokes go to
//! the process except the detach sequence (default `ctrl-]`), which disconnects and leaves the process
//! running; SIGWINCH resizes the remote PTY. Works without a local terminal too (piped stdin is sent
//! as is, its EOF closes the remote stdin).

use std::io::{IsTerminal, Write};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sandpit_types::{ProcessEvent, Rlimit, RlimitResource, StartRequest, Stdin, TtySize};
use tokio::sync::mpsc;

use crate::Sandbox;
use crate::api::SandboxRef;
use crate::error::{Error, Result};
use crate::options::command_line;
use crate::ws::{Incoming, Outgoing, WsSession};

/// The default detach sequence.
pub const DEFAULT_DETACH_KEYS: &str = "ctrl-]";

/// How an attach ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachOutcome {
    /// The process exited with this code.
    Exited(i32),
    /// The user pressed the detach keys; the process keeps running.
    Detached {
        /// The process's id, to attach again or inspect it.
        id: String,
        /// Its PID inside the sandbox.
        pid: u32,
    },
}

impl AttachOutcome {
    /// The exit code, when the process exited.
    pub fn code(&self) -> Option<i32> {
        match self {
            Self::Exited(c) => Some(*c),
            Self::Detached { .. } => None,
        }
    }
}

/// Options of [`Sandbox::attach_with`] (microsandbox's `AttachOptionsBuilder`).
///
/// ```
/// let opts = sandpit::AttachOptionsBuilder::default()
///     .arg("-l")
///     .cwd("/app")
///     .env("EDITOR", "vim")
///     .detach_keys("ctrl-p,ctrl-q")
///     .build();
/// assert_eq!(opts.detach_keys.as_deref(), Some("ctrl-p,ctrl-q"));
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct AttachOptionsBuilder {
    opts: AttachOptions,
}

/// The immutable result of [`AttachOptionsBuilder::build`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AttachOptions {
    /// Command arguments.
    pub args: Vec<String>,
    /// Working directory.
    pub cwd: Option<String>,
    /// User to run as.
    pub user: Option<String>,
    /// Environment variables.
    pub env: Vec<(String, String)>,
    /// Detach sequence, e.g. `"ctrl-]"` (the default) or `"ctrl-p,ctrl-q"`.
    pub detach_keys: Option<String>,
    /// Resource limits.
    pub rlimits: Vec<Rlimit>,
}

impl AttachOptionsBuilder {
    /// Appends one argument.
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.opts.args.push(a.into());
        self
    }

    /// Appends arguments.
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.opts.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Working directory.
    pub fn cwd(mut self, dir: impl Into<String>) -> Self {
        self.opts.cwd = Some(dir.into());
        self
    }

    /// User to run as.
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.opts.user = Some(user.into());
        self
    }

    /// One environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.opts.env.push((key.into(), value.into()));
        self
    }

    /// Many environment variables.
    pub fn envs<K: Into<String>, V: Into<String>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.opts
            .env
            .extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// The detach sequence: comma-separated keys, each `ctrl-<c>` or a single character.
    pub fn detach_keys(mut self, spec: impl Into<String>) -> Self {
        self.opts.detach_keys = Some(spec.into());
        self
    }

    /// Soft and hard limit of a resource.
    pub fn rlimit(self, resource: RlimitResource, limit: u64) -> Self {
        self.rlimit_range(resource, limit, limit)
    }

    /// Distinct soft and hard limits.
    pub fn rlimit_range(mut self, resource: RlimitResource, soft: u64, hard: u64) -> Self {
        self.opts.rlimits.push(Rlimit {
            resource,
            soft,
            hard: Some(hard),
        });
        self
    }

    /// The options.
    pub fn build(self) -> AttachOptions {
        self.opts
    }
}

/// Parses a detach sequence such as `ctrl-]` or `ctrl-p,ctrl-q` into the bytes a terminal sends.
///
/// Comma-separated keys, each `ctrl-<c>` (`c` a letter in either case or one of `@[\\]^_`) or one ASCII
/// character; spaces, tabs and line breaks around a key are ignored; an empty key is an error. The
/// same rules in every SDK (docs/api.md, "Detach keys"; `sdk/testdata/vectors.json`).
///
/// ```
/// assert_eq!(sandpit::parse_detach_keys("ctrl-]").unwrap(), vec![0x1d]);
/// assert_eq!(sandpit::parse_detach_keys("ctrl-p,ctrl-q").unwrap(), vec![0x10, 0x11]);
/// assert!(sandpit::parse_detach_keys("ctrl-").is_err());
/// ```
pub fn parse_detach_keys(spec: &str) -> Result<Vec<u8>> {
    let bad = |k: &str| {
        Error::invalid(format!(
            "detach key {k:?} in {spec:?}: use ctrl-<letter or one of @[\\]^_>, or a single ASCII character, \
             comma-separated (e.g. \"ctrl-p,ctrl-q\")"
        ))
    };
    let mut out = Vec::new();
    for key in spec.split(',') {
        let k = key.trim_matches([' ', '\t', '\r', '\n']);
        let lower = k.to_ascii_lowercase();
        if let Some(c) = lower.strip_prefix("ctrl-") {
            let mut chars = c.chars();
            let (Some(ch), None) = (chars.next(), chars.next()) else {
                return Err(bad(k));
            };
            let b = match ch {
                'a'..='z' => ch as u8 - b'a' + 1,
                '@' => 0,
                '[' => 0x1b,
                '\\' => 0x1c,
                ']' => 0x1d,
                '^' => 0x1e,
                '_' => 0x1f,
                _ => return Err(bad(k)),
            };
            out.push(b);
        } else if k.len() == 1 {
            // One byte of UTF-8: an ASCII character.
            out.push(k.as_bytes()[0]);
        } else {
            return Err(bad(k));
        }
    }
    Ok(out)
}

/// Finds the detach sequence in typed input, holding back a partial match until it is decided.
#[derive(Debug)]
struct DetachMatcher {
    seq: Vec<u8>,
    matched: usize,
}

impl DetachMatcher {
    /// The bytes to forward, and whether the sequence was completed.
    fn feed(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut fwd = Vec::with_capacity(input.len());
        for &b in input {
            if self.seq.is_empty() {
                fwd.push(b);
                continue;
            }
            if b == self.seq[self.matched] {
                self.matched += 1;
                if self.matched == self.seq.len() {
                    self.matched = 0;
                    return (fwd, true);
                }
                continue;
            }
            fwd.extend_from_slice(&self.seq[..self.matched]);
            self.matched = 0;
            if b == self.seq[0] {
                self.matched = 1;
                if self.seq.len() == 1 {
                    return (fwd, true);
                }
            } else {
                fwd.push(b);
            }
        }
        (fwd, false)
    }
}

/// Restores the terminal on drop.
struct RawGuard(bool);

impl Drop for RawGuard {
    fn drop(&mut self) {
        if self.0 {
            let _ = crossterm::terminal::disable_raw_mode();
        }
    }
}

enum Input {
    Bytes(Vec<u8>),
    Eof,
}

/// Reads fd 0 on a thread (polling, so that it can be told to stop) into a channel.
fn spawn_reader(stop: Arc<AtomicBool>) -> mpsc::Receiver<Input> {
    let (tx, rx) = mpsc::channel(64);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let fd = stdin.as_fd();
        let mut buf = [0u8; 4096];
        while !stop.load(Ordering::Relaxed) {
            let mut fds = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
            match nix::poll::poll(&mut fds, 100u16) {
                Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
                Ok(_) => {}
                Err(_) => break,
            }
            match nix::unistd::read(fd, &mut buf) {
                Ok(0) => {
                    let _ = tx.blocking_send(Input::Eof);
                    break;
                }
                Ok(n) => {
                    if tx.blocking_send(Input::Bytes(buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
                Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => {}
                Err(_) => {
                    let _ = tx.blocking_send(Input::Eof);
                    break;
                }
            }
        }
    });
    rx
}

fn terminal_size() -> TtySize {
    match crossterm::terminal::size() {
        Ok((cols, rows)) if cols > 0 && rows > 0 => TtySize { cols, rows },
        _ => TtySize { cols: 80, rows: 24 },
    }
}

impl Sandbox {
    /// Runs `cmd args…` on a PTY bridged to this terminal until it exits or `ctrl-]` detaches.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: sandpit::Sandbox) -> sandpit::Result<()> {
    /// let outcome = sandbox.attach("python3", ["-q"]).await?;
    /// println!("{outcome:?}");
    /// # Ok(()) }
    /// ```
    pub async fn attach<I: IntoIterator<Item = S>, S: Into<String>>(
        &self,
        cmd: impl Into<String>,
        args: I,
    ) -> Result<AttachOutcome> {
        self.attach_with(cmd, |b| b.args(args)).await
    }

    /// Attaches to the sandbox user's login shell (`$SHELL`, else `/bin/sh`).
    ///
    /// ```no_run
    /// # async fn demo(sandbox: sandpit::Sandbox) -> sandpit::Result<()> {
    /// let outcome = sandbox.attach_shell().await?;
    /// # Ok(()) }
    /// ```
    pub async fn attach_shell(&self) -> Result<AttachOutcome> {
        self.attach_with("exec \"${SHELL:-/bin/sh}\"", |b| b).await
    }

    /// [`attach`](Self::attach) with options: cwd, user, env, rlimits, detach keys. With no
    /// arguments `cmd` is a shell command line.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: sandpit::Sandbox) -> sandpit::Result<()> {
    /// let outcome = sandbox
    ///     .attach_with("bash", |a| a.cwd("/tmp").env("EDITOR", "vim").detach_keys("ctrl-p,ctrl-q"))
    ///     .await?;
    /// if let Some(code) = outcome.code() {
    ///     std::process::exit(code);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn attach_with(
        &self,
        cmd: impl Into<String>,
        configure: impl FnOnce(AttachOptionsBuilder) -> AttachOptionsBuilder,
    ) -> Result<AttachOutcome> {
        let opts = configure(AttachOptionsBuilder::default()).build();
        let keys = parse_detach_keys(opts.detach_keys.as_deref().unwrap_or(DEFAULT_DETACH_KEYS))?;
        let mut req = StartRequest {
            cwd: opts.cwd,
            user: opts.user,
            env: opts.env.into_iter().collect(),
            stdin: Stdin::Pipe,
            tty: Some(terminal_size()),
            rlimits: opts.rlimits,
            ..StartRequest::default()
        };
        command_line(&mut req, cmd.into(), opts.args);
        let info = self.target.start(&req).await?;
        bridge(&self.target, &info.id, info.pid.unwrap_or(0), keys).await
    }

    /// Attaches this terminal to a process that is already running (on a PTY, typically), replaying
    /// its output so far. `detach_keys`: `None` for `ctrl-]`.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: sandpit::Sandbox) -> sandpit::Result<()> {
    /// let outcome = sandbox.attach_process("p4", None).await?;
    /// # Ok(()) }
    /// ```
    pub async fn attach_process(
        &self,
        id: impl ToString,
        detach_keys: Option<&str>,
    ) -> Result<AttachOutcome> {
        let keys = parse_detach_keys(detach_keys.unwrap_or(DEFAULT_DETACH_KEYS))?;
        let info = self.target.get(&id.to_string()).await?;
        if info.is_pty {
            let TtySize { cols, rows } = terminal_size();
            // Best effort: an ended process refuses, and the replay below still shows its output.
            let _ = self.target.resize(&info.id, cols, rows).await;
        }
        bridge(&self.target, &info.id, info.pid.unwrap_or(0), keys).await
    }
}

async fn bridge(target: &SandboxRef, id: &str, pid: u32, keys: Vec<u8>) -> Result<AttachOutcome> {
    let mut ws = WsSession::open(target.clone(), id.to_owned(), 1).await?;
    let tty = std::io::stdin().is_terminal();
    let _raw = RawGuard(tty && crossterm::terminal::enable_raw_mode().is_ok());
    let stop = Arc::new(AtomicBool::new(false));
    let mut input = spawn_reader(stop.clone());
    let mut input_open = true;
    let mut winch = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        .map_err(|e| Error::io("cannot watch for terminal resizes", e))?;
    let mut matcher = DetachMatcher {
        seq: keys,
        matched: 0,
    };
    let result = loop {
        tokio::select! {
            inc = ws.events.recv() => {
                let Some(inc) = inc else {
                    break Err(Error::cut("the attach session ended without an exit"));
                };
                match inc {
                    Ok(Incoming::Event(ProcessEvent::Stdout { data, .. } | ProcessEvent::Stderr { data, .. })) => {
                        let mut out = std::io::stdout().lock();
                        let _ = out.write_all(&data);
                        let _ = out.flush();
                    }
                    Ok(Incoming::Event(ProcessEvent::Exited(info))) => {
                        break Ok(AttachOutcome::Exited(info.exit_code.unwrap_or(-1)));
                    }
                    Ok(_) => {}
                    Err(e) => break Err(e),
                }
            }
            i = input.recv(), if input_open => match i {
                Some(Input::Bytes(b)) => {
                    let (fwd, detach) = matcher.feed(&b);
                    if !fwd.is_empty() {
                        let _ = ws.out.send(Outgoing::Stdin(fwd));
                    }
                    if detach {
                        break Ok(AttachOutcome::Detached { id: id.to_owned(), pid });
                    }
                }
                Some(Input::Eof) | None => {
                    input_open = false;
                    let _ = ws.out.send(Outgoing::StdinEof);
                }
            },
            _ = winch.recv() => {
                let TtySize { cols, rows } = terminal_size();
                let _ = ws.out.send(Outgoing::Resize { cols, rows });
            }
        }
    };
    stop.store(true, Ordering::Relaxed);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_sequences_are_found_across_reads() {
        let mut m = DetachMatcher {
            seq: parse_detach_keys("ctrl-p,ctrl-q").unwrap(),
            matched: 0,
        };
        assert_eq!(m.feed(b"ab\x10"), (b"ab".to_vec(), false));
        assert_eq!(m.feed(b"x"), (b"\x10x".to_vec(), false));
        assert_eq!(m.feed(b"\x10"), (vec![], false));
        assert_eq!(m.feed(b"\x11rest"), (vec![], true));
        let mut m = DetachMatcher {
            seq: vec![0x1d],
            matched: 0,
        };
        assert_eq!(m.feed(b"ls\r\x1d"), (b"ls\r".to_vec(), true));
    }

    #[test]
    fn detach_key_specs_parse() {
        assert_eq!(parse_detach_keys("ctrl-a,x").unwrap(), vec![1, b'x']);
        assert_eq!(parse_detach_keys("CTRL-[").unwrap(), vec![0x1b]);
        assert!(parse_detach_keys("ctrl-ab").is_err());
        assert!(parse_detach_keys("alt-x").is_err());
    }
}
