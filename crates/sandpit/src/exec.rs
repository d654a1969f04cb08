//! The microsandbox and Hyperbrowser `exec` surfaces: `exec`/`exec_with`/`shell` collect a finished
//! command into an [`ExecOutput`]; `exec_stream`/`shell_stream` give an [`ExecHandle`] that is a
//! `Stream` of [`ExecEvent`]s (over resumable SSE) with stdin, signal and kill on the side.

use std::future::IntoFuture;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::{Stream, StreamExt};
use sandpit_types::{
    ExecResult, ProcessEvent, ProcessInfo, ProcessStatus, Rlimit, RlimitResource, StartRequest,
    Stdin, TtySize,
};

use crate::api::SandboxRef;
use crate::error::{Error, Result};
use crate::options::{Signal, command_line, start_setters};
use crate::sandbox::BoxFuture;
use crate::{EventStream, Sandbox};

/// How a process ended: microsandbox's `ExitStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    /// Exit code by shell convention (128 + n when killed by signal n; -1 when unknown).
    pub code: i32,
    /// True when `code` is 0 and the process exited on its own.
    pub success: bool,
    /// The final status.
    pub status: ProcessStatus,
}

impl ExitStatus {
    fn of(info: &ProcessInfo) -> Self {
        let code = info.exit_code.unwrap_or(-1);
        Self {
            code,
            success: code == 0 && info.status == ProcessStatus::Exited,
            status: info.status,
        }
    }
}

/// A finished command's output and exit status.
///
/// ```no_run
/// # async fn demo(sandbox: sandpit::Sandbox) -> sandpit::Result<()> {
/// let out = sandbox.exec("python3", ["-c", "print(1 + 1)"]).await?;
/// assert_eq!(out.stdout(), "2\n");
/// assert_eq!(out.code(), 0);
/// assert!(out.success());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    info: Option<ProcessInfo>,
}

impl ExecOutput {
    pub(crate) fn from_exec(r: ExecResult) -> Self {
        Self {
            status: ExitStatus::of(&r.process),
            stdout: r.stdout_bytes(),
            stderr: r.stderr_bytes(),
            info: Some(r.process),
        }
    }

    /// The exit code.
    pub fn code(&self) -> i32 {
        self.status.code
    }

    /// Same as [`code`](Self::code): the Hyperbrowser spelling.
    pub fn exit_code(&self) -> i32 {
        self.status.code
    }

    /// True when the exit code is 0.
    pub fn success(&self) -> bool {
        self.status.success
    }

    /// The exit status.
    pub fn status(&self) -> ExitStatus {
        self.status
    }

    /// Stdout as text (invalid UTF-8 replaced).
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Stderr as text (invalid UTF-8 replaced).
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Raw stdout.
    pub fn stdout_bytes(&self) -> &[u8] {
        &self.stdout
    }

    /// Raw stderr.
    pub fn stderr_bytes(&self) -> &[u8] {
        &self.stderr
    }

    /// The process's final info (absent only for outputs collected from a stream that never started).
    pub fn info(&self) -> Option<&ProcessInfo> {
        self.info.as_ref()
    }
}

fn args_vec<I, S>(args: I) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    args.into_iter().map(Into::into).collect()
}

/// An empty argument list, for [`Sandbox::exec`] with a command line: `exec("node -v", NO_ARGS)`.
pub const NO_ARGS: [&str; 0] = [];

impl Sandbox {
    /// Runs `cmd args…` and collects its output. With no arguments `cmd` is a shell command line
    /// (`/bin/sh -c`), so a lone program name works too. The returned builder takes per-call options
    /// (`cwd`, `env`, `timeout_ms`, `run_as`, …: the Hyperbrowser spelling) before `.await`.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: sandpit::Sandbox) -> sandpit::Result<()> {
    /// let r = sandbox.exec("python3", ["-c", "print(1 + 1)"]).await?;
    /// assert_eq!(r.stdout(), "2\n");
    /// let r = sandbox
    ///     .exec("pwd && echo $FOO && whoami", sandpit::NO_ARGS)
    ///     .cwd("/tmp")
    ///     .env("FOO", "bar")
    ///     .timeout_ms(5_000)
    ///     .run_as("root")
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn exec<I, S>(&self, cmd: impl Into<String>, args: I) -> Exec
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut req = StartRequest::default();
        command_line(&mut req, cmd.into(), args_vec(args));
        Exec {
            target: self.target.clone(),
            opts: ExecOptionsBuilder { req, tty: false },
        }
    }

    /// Runs `cmd` with options set by `configure` on an [`ExecOptionsBuilder`].
    ///
    /// ```no_run
    /// # async fn demo(sandbox: sandpit::Sandbox) -> sandpit::Result<()> {
    /// let out = sandbox
    ///     .exec_with("python3", |e| {
    ///         e.args(["script.py"]).cwd("/app").env("PYTHONPATH", "/app/lib").timeout_ms(30_000)
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn exec_with(
        &self,
        cmd: impl Into<String>,
        configure: impl FnOnce(ExecOptionsBuilder) -> ExecOptionsBuilder,
    ) -> Result<ExecOutput> {
        self.exec_stream_with(cmd, configure).await?.collect().await
    }

    /// Runs a shell command line (pipes, redirects, `&&` work) and collects its output.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: sandpit::Sandbox) -> sandpit::Result<()> {
    /// let out = sandbox.shell("ls -la / | head -3 && echo done").await?;
    /// assert!(out.stdout().ends_with("done\n"));
    /// # Ok(()) }
    /// ```
    pub fn shell(&self, script: impl Into<String>) -> Exec {
        self.exec(script, NO_ARGS)
    }

    /// Starts `cmd args…` and returns an [`ExecHandle`] streaming its events.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: sandpit::Sandbox) -> sandpit::Result<()> {
    /// use sandpit::ExecEvent;
    /// let mut handle = sandbox.exec_stream("tail", ["-f", "/var/log/app.log"]).await?;
    /// while let Some(event) = handle.recv().await {
    ///     match event {
    ///         ExecEvent::Stdout(data) => print!("{}", String::from_utf8_lossy(&data)),
    ///         ExecEvent::Exited { .. } => break,
    ///         _ => {}
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn exec_stream<I, S>(&self, cmd: impl Into<String>, args: I) -> Result<ExecHandle>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let args = args_vec(args);
        self.exec_stream_with(cmd, |b| b.args(args)).await
    }

    /// Streaming variant of [`exec_with`](Self::exec_with).
    ///
    /// ```no_run
    /// # async fn demo(sandbox: sandpit::Sandbox) -> sandpit::Result<()> {
    /// let mut h = sandbox.exec_stream_with("cat", |b| b.stdin_pipe()).await?;
    /// let stdin = h.take_stdin().unwrap();
    /// stdin.write("hi\n").await?;
    /// stdin.close().await?;
    /// assert_eq!(h.collect().await?.stdout(), "hi\n");
    /// # Ok(()) }
    /// ```
    pub async fn exec_stream_with(
        &self,
        cmd: impl Into<String>,
        configure: impl FnOnce(ExecOptionsBuilder) -> ExecOptionsBuilder,
    ) -> Result<ExecHandle> {
        let mut b = configure(ExecOptionsBuilder::default());
        let args = b.req.argv.take().unwrap_or_default();
        let mut req = b.build();
        command_line(&mut req, cmd.into(), args);
        ExecHandle::start(self.target.clone(), req).await
    }

    /// Streaming variant of [`shell`](Self::shell).
    ///
    /// ```no_run
    /// # async fn demo(sandbox: sandpit::Sandbox) -> sandpit::Result<()> {
    /// let h = sandbox.shell_stream("for i in 1 2 3; do echo $i; sleep 1; done").await?;
    /// let out = h.collect().await?;
    /// # Ok(()) }
    /// ```
    pub async fn shell_stream(&self, script: impl Into<String>) -> Result<ExecHandle> {
        self.exec_stream_with(script, |b| b).await
    }
}

/// Per-execution options (microsandbox's `ExecOptionsBuilder`). Arguments are kept aside until the
/// command is known.
///
/// ```
/// use sandpit::{ExecOptionsBuilder, RlimitResource};
/// let req = ExecOptionsBuilder::default()
///     .cwd("/app")
///     .env("A", "1")
///     .timeout_ms(30_000)
///     .stdin_bytes("input")
///     .tty(true)
///     .rlimit(RlimitResource::Nofile, 256)
///     .build();
/// assert_eq!(req.timeout_ms, 30_000);
/// assert_eq!(req.tty.unwrap().cols, 80);
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct ExecOptionsBuilder {
    req: StartRequest,
    tty: bool,
}

impl ExecOptionsBuilder {
    start_setters!();

    /// Appends one argument.
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.req.argv.get_or_insert_with(Vec::new).push(a.into());
        self
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.req
            .argv
            .get_or_insert_with(Vec::new)
            .extend(args.into_iter().map(Into::into));
        self
    }

    /// Stdin is `/dev/null` (the default).
    pub fn stdin_null(mut self) -> Self {
        self.req.stdin = Stdin::Null;
        self
    }

    /// Stdin is a pipe: write it through [`ExecHandle::take_stdin`] (streaming calls only).
    pub fn stdin_pipe(mut self) -> Self {
        self.req.stdin = Stdin::Pipe;
        self
    }

    /// Stdin is these bytes, then EOF.
    pub fn stdin_bytes(mut self, data: impl AsRef<[u8]>) -> Self {
        self.req.stdin = Stdin::Bytes(data.as_ref().to_vec());
        self
    }

    /// Allocates an 80×24 pseudo-terminal (stderr is then merged into stdout).
    pub fn tty(mut self, enabled: bool) -> Self {
        self.tty = enabled;
        self
    }

    /// A PTY of this size.
    pub fn tty_size(mut self, cols: u16, rows: u16) -> Self {
        self.tty = true;
        self.req.tty = Some(TtySize { cols, rows });
        self
    }

    /// Sets soft and hard limit of a resource.
    pub fn rlimit(self, resource: RlimitResource, limit: u64) -> Self {
        self.rlimit_range(resource, limit, limit)
    }

    /// Sets distinct soft and hard limits.
    pub fn rlimit_range(mut self, resource: RlimitResource, soft: u64, hard: u64) -> Self {
        self.req.rlimits.push(Rlimit {
            resource,
            soft,
            hard: Some(hard),
        });
        self
    }

    /// The request body (its `argv` holds only the arguments so far).
    pub fn build(self) -> StartRequest {
        let mut req = self.req;
        if self.tty && req.tty.is_none() {
            req.tty = Some(TtySize { cols: 80, rows: 24 });
        } else if !self.tty {
            req.tty = None;
        }
        req
    }
}

/// A command to execute; `.await` it for its [`ExecOutput`]. See [`Sandbox::exec`].
#[derive(Debug)]
#[must_use = "a builder does nothing until awaited"]
pub struct Exec {
    target: SandboxRef,
    opts: ExecOptionsBuilder,
}

impl Exec {
    /// Changes any option of the [`ExecOptionsBuilder`].
    pub fn with(
        mut self,
        configure: impl FnOnce(ExecOptionsBuilder) -> ExecOptionsBuilder,
    ) -> Self {
        self.opts = configure(self.opts);
        self
    }

    /// Working directory.
    pub fn cwd(self, dir: impl Into<String>) -> Self {
        self.with(|b| b.cwd(dir))
    }

    /// One environment variable.
    pub fn env(self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.with(|b| b.env(key, value))
    }

    /// Many environment variables.
    pub fn envs<K: Into<String>, V: Into<String>>(
        self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.with(|b| b.envs(vars))
    }

    /// Total timeout in milliseconds (Hyperbrowser's `timeoutMs`).
    pub fn timeout_ms(self, ms: u64) -> Self {
        self.with(|b| b.timeout_ms(ms))
    }

    /// Total timeout.
    pub fn timeout(self, t: std::time::Duration) -> Self {
        self.with(|b| b.timeout(t))
    }

    /// User to run as (Hyperbrowser's `runAs`).
    pub fn run_as(self, user: impl Into<String>) -> Self {
        self.with(|b| b.user(user))
    }

    /// Same as [`run_as`](Self::run_as).
    pub fn user(self, user: impl Into<String>) -> Self {
        self.with(|b| b.user(user))
    }

    /// Runs it and collects the output.
    pub async fn send(self) -> Result<ExecOutput> {
        let req = self.opts.build();
        if matches!(req.stdin, Stdin::Pipe) {
            // `POST /exec` refuses a pipe, since nothing could write to it while it waits: start the
            // process, close its stdin at once (nobody will write) and collect the stream.
            let mut h = ExecHandle::start(self.target, req).await?;
            if let Some(sink) = h.take_stdin() {
                sink.close().await?;
            }
            return h.collect().await;
        }
        Ok(ExecOutput::from_exec(self.target.exec(&req).await?))
    }
}

impl IntoFuture for Exec {
    type Output = Result<ExecOutput>;
    type IntoFuture = BoxFuture<'static, Self::Output>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.send())
    }
}

/// One event of an [`ExecHandle`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    /// The process has started.
    Started {
        /// Its PID inside the sandbox.
        pid: u32,
    },
    /// A chunk of stdout.
    Stdout(Vec<u8>),
    /// A chunk of stderr.
    Stderr(Vec<u8>),
    /// Output that the per-process cap dropped before it was read.
    Lost {
        /// How many bytes.
        bytes: u64,
    },
    /// The process has exited; always the last event.
    Exited {
        /// Its exit code.
        code: i32,
    },
}

/// A running command's event stream and controls (microsandbox's `ExecHandle`). It is a
/// `Stream<Item = ExecEvent>`; an unrecoverable stream error ends the stream and is returned by
/// [`wait`](Self::wait) and [`collect`](Self::collect). Dropping it leaves the process running.
#[derive(Debug)]
pub struct ExecHandle {
    target: SandboxRef,
    info: ProcessInfo,
    events: EventStream,
    stdin: Option<ExecSink>,
    error: Option<Error>,
    exit: Option<ProcessInfo>,
}

/// Writer to a running process's stdin (microsandbox's `ExecSink`).
#[derive(Debug)]
pub struct ExecSink {
    target: SandboxRef,
    id: String,
}

impl ExecSink {
    /// Writes bytes or text.
    ///
    /// ```no_run
    /// # async fn demo(sink: sandpit::ExecSink) -> sandpit::Result<()> {
    /// sink.write("line\n").await?;
    /// # Ok(()) }
    /// ```
    pub async fn write(&self, data: impl AsRef<[u8]>) -> Result<()> {
        self.target
            .stdin(&self.id, data.as_ref().to_vec(), false)
            .await
    }

    /// Closes stdin: the process sees EOF.
    ///
    /// ```no_run
    /// # async fn demo(sink: sandpit::ExecSink) -> sandpit::Result<()> {
    /// sink.close().await?;
    /// # Ok(()) }
    /// ```
    pub async fn close(self) -> Result<()> {
        self.target.stdin(&self.id, Vec::new(), true).await
    }
}

impl ExecHandle {
    pub(crate) async fn start(target: SandboxRef, req: StartRequest) -> Result<Self> {
        let pipe = matches!(req.stdin, Stdin::Pipe);
        let info = target.start(&req).await?;
        let events = target.events(&info.id, 1);
        let stdin = pipe.then(|| ExecSink {
            target: target.clone(),
            id: info.id.clone(),
        });
        Ok(Self {
            target,
            info,
            events,
            stdin,
            error: None,
            exit: None,
        })
    }

    /// The process's id.
    pub fn id(&self) -> &str {
        &self.info.id
    }

    /// The process's PID inside the sandbox.
    pub fn pid(&self) -> u32 {
        self.info.pid.unwrap_or(0)
    }

    /// The next event; `None` once the stream ended (after `Exited`, or on an error kept for
    /// [`wait`](Self::wait)).
    ///
    /// ```no_run
    /// # async fn demo(sandbox: sandpit::Sandbox) -> sandpit::Result<()> {
    /// let mut h = sandbox.shell_stream("echo hi").await?;
    /// while let Some(ev) = h.recv().await {
    ///     println!("{ev:?}");
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn recv(&mut self) -> Option<ExecEvent> {
        self.next().await
    }

    /// The stdin writer, once (`None` after the first call, or when stdin is not a pipe).
    ///
    /// ```no_run
    /// # async fn demo(sandbox: sandpit::Sandbox) -> sandpit::Result<()> {
    /// let mut h = sandbox.exec_stream_with("wc -l", |b| b.stdin_pipe()).await?;
    /// let sink = h.take_stdin().expect("a pipe was asked for");
    /// sink.write("a\nb\n").await?;
    /// sink.close().await?;
    /// assert_eq!(h.collect().await?.stdout().trim(), "2");
    /// # Ok(()) }
    /// ```
    pub fn take_stdin(&mut self) -> Option<ExecSink> {
        self.stdin.take()
    }

    /// Drains the remaining events and returns the exit status.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: sandpit::Sandbox) -> sandpit::Result<()> {
    /// let mut h = sandbox.shell_stream("exit 3").await?;
    /// assert_eq!(h.wait().await?.code, 3);
    /// # Ok(()) }
    /// ```
    pub async fn wait(&mut self) -> Result<ExitStatus> {
        while self.next().await.is_some() {}
        self.finish().map(|i| ExitStatus::of(&i))
    }

    /// Drains the remaining output and waits: everything not yet received, with the exit status.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: sandpit::Sandbox) -> sandpit::Result<()> {
    /// let out = sandbox.exec_stream("ls", ["/"]).await?.collect().await?;
    /// println!("{} -> {}", out.code(), out.stdout());
    /// # Ok(()) }
    /// ```
    pub async fn collect(mut self) -> Result<ExecOutput> {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        while let Some(ev) = self.next().await {
            match ev {
                ExecEvent::Stdout(d) => out.extend(d),
                ExecEvent::Stderr(d) => err.extend(d),
                _ => {}
            }
        }
        let info = self.finish()?;
        Ok(ExecOutput {
            status: ExitStatus::of(&info),
            stdout: out,
            stderr: err,
            info: Some(info),
        })
    }

    fn finish(&mut self) -> Result<ProcessInfo> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        self.exit
            .clone()
            .ok_or_else(|| Error::cut("the event stream ended without an exit"))
    }

    /// Sends a signal by name or number.
    ///
    /// ```no_run
    /// # async fn demo(h: sandpit::ExecHandle) -> sandpit::Result<()> {
    /// h.signal(15).await?;
    /// # Ok(()) }
    /// ```
    pub async fn signal(&self, signal: impl Into<Signal>) -> Result<()> {
        self.target.signal(&self.info.id, signal.into().0).await
    }

    /// The process's current info.
    ///
    /// ```no_run
    /// # async fn demo(h: sandpit::ExecHandle) -> sandpit::Result<()> {
    /// println!("{:?}", h.info().await?.status);
    /// # Ok(()) }
    /// ```
    pub async fn info(&self) -> Result<ProcessInfo> {
        self.target.get(&self.info.id).await
    }

    /// SIGKILLs the process tree.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: sandpit::Sandbox) -> sandpit::Result<()> {
    /// let h = sandbox.exec_stream("sleep", ["100"]).await?;
    /// h.kill().await?;
    /// # Ok(()) }
    /// ```
    pub async fn kill(&self) -> Result<()> {
        self.target.kill(&self.info.id).await.map(drop)
    }
}

impl Stream for ExecHandle {
    type Item = ExecEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ExecEvent>> {
        if self.exit.is_some() || self.error.is_some() {
            return Poll::Ready(None);
        }
        let ev = match self.events.poll_next_unpin(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => {
                self.error = Some(Error::cut("the event stream ended without an exit"));
                return Poll::Ready(None);
            }
            Poll::Ready(Some(Err(e))) => {
                self.error = Some(e);
                return Poll::Ready(None);
            }
            Poll::Ready(Some(Ok(ev))) => ev,
        };
        Poll::Ready(Some(match ev {
            ProcessEvent::Started(i) => ExecEvent::Started {
                pid: i.pid.unwrap_or(0),
            },
            ProcessEvent::Stdout { data, .. } => ExecEvent::Stdout(data),
            ProcessEvent::Stderr { data, .. } => ExecEvent::Stderr(data),
            ProcessEvent::Lost(l) => ExecEvent::Lost { bytes: l.bytes },
            ProcessEvent::Exited(i) => {
                let code = i.exit_code.unwrap_or(-1);
                self.exit = Some(i);
                ExecEvent::Exited { code }
            }
        }))
    }
}
