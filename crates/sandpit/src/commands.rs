//! `sandbox.commands()`: the Superserve and Declaw surfaces. `run` (a result, streamed over SSE when
//! callbacks are given), `run_stream`, `run(..).background()` → [`CommandHandle`], `spawn` →
//! [`CommandSession`] over a WebSocket, and the by-pid calls `list`, `kill`, `send_stdin`, `connect`.
//! Both seeds' spellings are accepted; everything maps onto the one process API in [`crate::api`].

use std::collections::BTreeMap;
use std::future::IntoFuture;

use futures_util::StreamExt;
use sandpit_types::{
    ErrorCode, ExecResult, ProcessEvent, ProcessInfo, ProcessStatus, StartRequest, Stdin,
};

use crate::api::SandboxRef;
use crate::error::{ApiError, Error, Result};
use crate::options::{Signal, start_setters};
use crate::sandbox::BoxFuture;
use crate::ws::{Incoming, Outgoing, WsSession};
use crate::{EventStream, Sandbox};

/// A callback receiving output chunks as text (invalid UTF-8 is replaced).
pub type OutputCallback = Box<dyn FnMut(&str) + Send + 'static>;

/// The most of each output stream a result collected from a stream keeps: the agent's per-process cap
/// (64 MiB). A longer stream drops its oldest output from the result, as the daemon's own results do
/// (`info.lost_bytes`); every chunk was still handed to the caller as it came. (Unbounded, a long stream's
/// result grew without limit in memory.)
pub const STREAM_KEEP_BYTES: usize = 64 << 20;

/// One output stream as collected for a result: the last [`STREAM_KEEP_BYTES`] of it, trimmed in bulk so
/// that each byte is moved at most once.
#[derive(Debug, Default)]
pub(crate) struct OutputTail(Vec<u8>);

impl OutputTail {
    pub(crate) fn push(&mut self, data: &[u8]) {
        self.0.extend_from_slice(data);
        if self.0.len() > 2 * STREAM_KEEP_BYTES {
            self.0.drain(..self.0.len() - STREAM_KEEP_BYTES);
        }
    }

    pub(crate) fn take(&mut self) -> Vec<u8> {
        let mut v = std::mem::take(&mut self.0);
        if v.len() > STREAM_KEEP_BYTES {
            v.drain(..v.len() - STREAM_KEEP_BYTES);
        }
        v
    }
}

/// The outcome of a finished command: its output, exit code and final process info.
///
/// A non-zero exit code is a result, not an error, except where a method says otherwise
/// ([`CommandHandle::wait`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandResult {
    /// All stdout, as text (invalid UTF-8 replaced; see `stdout_bytes` for the raw bytes).
    pub stdout: String,
    /// All stderr, as text.
    pub stderr: String,
    /// Exit code by shell convention (128 + n when killed by signal n; -1 when unknown).
    pub exit_code: i32,
    /// `exited`, `failed`, `killed` or `timed_out`.
    pub status: ProcessStatus,
    /// Why it failed or timed out, when it did.
    pub error: Option<String>,
    /// Raw stdout bytes.
    pub stdout_bytes: Vec<u8>,
    /// Raw stderr bytes.
    pub stderr_bytes: Vec<u8>,
    /// The process's final info.
    pub info: ProcessInfo,
}

impl CommandResult {
    pub(crate) fn new(info: ProcessInfo, stdout: Vec<u8>, stderr: Vec<u8>) -> Self {
        Self {
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            exit_code: info.exit_code.unwrap_or(-1),
            status: info.status,
            error: info.error.clone(),
            stdout_bytes: stdout,
            stderr_bytes: stderr,
            info,
        }
    }

    pub(crate) fn from_exec(r: ExecResult) -> Self {
        let (out, err) = (r.stdout_bytes(), r.stderr_bytes());
        Self::new(r.process, out, err)
    }

    /// True when the command exited with code 0.
    pub fn success(&self) -> bool {
        self.status == ProcessStatus::Exited && self.exit_code == 0
    }

    /// `Err(Error::Timeout)` when the command was ended by its timeout, else the result.
    pub(crate) fn timeout_as_error(self) -> Result<Self> {
        if self.status == ProcessStatus::TimedOut {
            return Err(Error::Timeout(ApiError {
                status: 0,
                retry_after: None,
                code: ErrorCode::Timeout,
                message: self
                    .error
                    .clone()
                    .unwrap_or_else(|| format!("command {:?} timed out", self.info.cmd)),
            }));
        }
        Ok(self)
    }
}

/// One process as [`Commands::list`] reports it (the Declaw shape), with the full info alongside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandInfo {
    /// PID inside the sandbox (0 if it never started).
    pub pid: u32,
    /// The process's string id.
    pub id: String,
    /// The command as given.
    pub cmd: String,
    /// Whether it runs on a PTY.
    pub is_pty: bool,
    /// Its environment.
    pub envs: BTreeMap<String, String>,
    /// Everything else.
    pub info: ProcessInfo,
}

/// Runs the events of a process to its end, feeding callbacks and collecting the output.
pub(crate) async fn collect_stream(
    mut events: EventStream,
    mut on_stdout: Option<OutputCallback>,
    mut on_stderr: Option<OutputCallback>,
) -> Result<CommandResult> {
    let (mut out, mut err) = (OutputTail::default(), OutputTail::default());
    while let Some(ev) = events.next().await {
        match ev? {
            ProcessEvent::Stdout { data, .. } => {
                if let Some(cb) = on_stdout.as_mut() {
                    cb(&String::from_utf8_lossy(&data));
                }
                out.push(&data);
            }
            ProcessEvent::Stderr { data, .. } => {
                if let Some(cb) = on_stderr.as_mut() {
                    cb(&String::from_utf8_lossy(&data));
                }
                err.push(&data);
            }
            ProcessEvent::Exited(info) => {
                return Ok(CommandResult::new(info, out.take(), err.take()));
            }
            ProcessEvent::Started(_) | ProcessEvent::Lost(_) => {}
        }
    }
    Err(Error::cut(
        "the output stream ended without an exited event",
    ))
}

/// The command surface of one sandbox (Superserve's and Declaw's `sandbox.commands`).
///
/// ```no_run
/// # async fn demo(sandbox: sandpit::Sandbox) -> sandpit::Result<()> {
/// let r = sandbox.commands().run("echo hello").await?;
/// assert_eq!(r.stdout, "hello\n");
/// assert_eq!(r.exit_code, 0);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Commands {
    target: SandboxRef,
}

impl Sandbox {
    /// The Superserve/Declaw command surface.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: sandpit::Sandbox) -> sandpit::Result<()> {
    /// let running = sandbox.commands().list().await?;
    /// # Ok(()) }
    /// ```
    pub fn commands(&self) -> Commands {
        Commands {
            target: self.target.clone(),
        }
    }
}

impl Commands {
    /// Runs a shell command line and returns its result once it finished. With
    /// [`on_stdout`](Run::on_stdout)/[`on_stderr`](Run::on_stderr) the output streams over SSE as it
    /// arrives and the timeout becomes an idle timeout (reset by every chunk). A non-zero exit is a
    /// result; a timeout is [`Error::Timeout`].
    ///
    /// ```no_run
    /// # async fn demo(sandbox: sandpit::Sandbox) -> sandpit::Result<()> {
    /// let r = sandbox
    ///     .commands()
    ///     .run("for i in 1 2 3; do echo $i; sleep 0.1; done")
    ///     .on_stdout(|chunk| print!("{chunk}"))
    ///     .timeout_secs(5)
    ///     .await?;
    /// assert_eq!(r.stdout, "1\n2\n3\n");
    /// # Ok(()) }
    /// ```
    pub fn run(&self, cmd: impl Into<String>) -> Run {
        Run {
            target: self.target.clone(),
            req: StartRequest {
                cmd: Some(cmd.into()),
                ..StartRequest::default()
            },
            on_stdout: None,
            on_stderr: None,
            stream: false,
        }
    }

    /// Declaw's `runStream`: [`run`](Self::run) that always streams over SSE.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: sandpit::Sandbox) -> sandpit::Result<()> {
    /// let mut chunks = Vec::new();
    /// let r = sandbox
    ///     .commands()
    ///     .run_stream("for i in $(seq 1 5); do echo \"step $i\"; sleep 0.1; done")
    ///     .on_stdout(move |c| chunks.push(c.to_owned()))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn run_stream(&self, cmd: impl Into<String>) -> Run {
        let mut r = self.run(cmd);
        r.stream = true;
        r
    }

    /// Superserve's `spawn`: starts the command with a stdin pipe and returns a [`CommandSession`] (over a
    /// WebSocket) once it runs.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: sandpit::Sandbox) -> sandpit::Result<()> {
    /// let session = sandbox.commands().spawn("cat").on_stdout(|d| print!("{d}")).await?;
    /// session.stdin().write("hi\n").await?;
    /// session.stdin().close().await?;
    /// let result = session.wait().await?;
    /// assert_eq!(result.stdout, "hi\n");
    /// # Ok(()) }
    /// ```
    pub fn spawn(&self, cmd: impl Into<String>) -> Spawn {
        Spawn {
            target: self.target.clone(),
            req: StartRequest {
                cmd: Some(cmd.into()),
                stdin: Stdin::Pipe,
                ..StartRequest::default()
            },
            on_stdout: None,
            on_stderr: None,
        }
    }

    /// The sandbox's running processes (Declaw's `list`).
    ///
    /// ```no_run
    /// # async fn demo(sandbox: sandpit::Sandbox) -> sandpit::Result<()> {
    /// for p in sandbox.commands().list().await? {
    ///     println!("{} {} pty={} {:?}", p.pid, p.cmd, p.is_pty, p.envs.get("PATH"));
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn list(&self) -> Result<Vec<CommandInfo>> {
        let list = self.target.list(Some(ProcessStatus::Running), None).await?;
        Ok(list
            .into_iter()
            .map(|info| CommandInfo {
                pid: info.pid.unwrap_or(0),
                id: info.id.clone(),
                cmd: info.cmd.clone(),
                is_pty: info.is_pty,
                envs: info.env.clone(),
                info,
            })
            .collect())
    }

    /// SIGKILLs a process and all its descendants; `false` when it had already ended.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: sandpit::Sandbox) -> sandpit::Result<()> {
    /// let killed = sandbox.commands().kill(1234).await?;
    /// # Ok(()) }
    /// ```
    pub async fn kill(&self, pid: impl ToString) -> Result<bool> {
        Ok(self.target.kill(&pid.to_string()).await?.killed)
    }

    /// Writes to a running process's stdin (it must have been started with a pipe, as background
    /// commands are).
    ///
    /// ```no_run
    /// # async fn demo(sandbox: sandpit::Sandbox) -> sandpit::Result<()> {
    /// let handle = sandbox.commands().run("cat").background().await?;
    /// sandbox.commands().send_stdin(handle.pid(), "hello\n").await?;
    /// # Ok(()) }
    /// ```
    pub async fn send_stdin(&self, pid: impl ToString, data: impl AsRef<[u8]>) -> Result<()> {
        self.target
            .stdin(&pid.to_string(), data.as_ref().to_vec(), false)
            .await
    }

    /// A handle to an existing process by pid or id, without any request. Its
    /// [`wait`](CommandHandle::wait) with callbacks replays the output from the start, so a client that
    /// dropped a session picks up what it missed.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: sandpit::Sandbox) -> sandpit::Result<()> {
    /// let result = sandbox.commands().connect(5678).wait().await?;
    /// # Ok(()) }
    /// ```
    #[allow(clippy::needless_pass_by_value)] // `5678` and `"p7"` read best by value
    pub fn connect(&self, pid: impl ToString) -> CommandHandle {
        let key = pid.to_string();
        CommandHandle {
            target: self.target.clone(),
            pid: key.parse().ok(),
            key,
        }
    }
}

/// A command to run; `.await` it for its [`CommandResult`]. See [`Commands::run`].
#[must_use = "a builder does nothing until awaited"]
pub struct Run {
    target: SandboxRef,
    req: StartRequest,
    on_stdout: Option<OutputCallback>,
    on_stderr: Option<OutputCallback>,
    stream: bool,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Run")
            .field("req", &self.req)
            .finish_non_exhaustive()
    }
}

impl Run {
    start_setters!();

    /// Streams stdout chunks to `f` as they arrive.
    pub fn on_stdout(mut self, f: impl FnMut(&str) + Send + 'static) -> Self {
        self.on_stdout = Some(Box::new(f));
        self
    }

    /// Streams stderr chunks to `f` as they arrive.
    pub fn on_stderr(mut self, f: impl FnMut(&str) + Send + 'static) -> Self {
        self.on_stderr = Some(Box::new(f));
        self
    }

    /// Declaw's `background: true`: start and return a [`CommandHandle`] at once. The process gets a
    /// stdin pipe, so [`Commands::send_stdin`] works.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: sandpit::Sandbox) -> sandpit::Result<()> {
    /// let handle = sandbox.commands().run("sleep 30").background().await?;
    /// println!("PID: {}", handle.pid());
    /// handle.kill().await?;
    /// # Ok(()) }
    /// ```
    pub fn background(self) -> Background {
        let mut req = self.req;
        if req.stdin.is_null() {
            req.stdin = Stdin::Pipe;
        }
        Background {
            target: self.target,
            req,
        }
    }

    /// Runs it (what `.await` does).
    pub async fn send(self) -> Result<CommandResult> {
        let Self {
            target,
            mut req,
            on_stdout,
            on_stderr,
            stream,
        } = self;
        if !stream && on_stdout.is_none() && on_stderr.is_none() {
            return CommandResult::from_exec(target.exec(&req).await?).timeout_as_error();
        }
        if req.idle_timeout_ms == 0 {
            req.idle_timeout_ms = std::mem::take(&mut req.timeout_ms);
        }
        let info = target.start(&req).await?;
        let events = target.events(&info.id, 1);
        collect_stream(events, on_stdout, on_stderr)
            .await?
            .timeout_as_error()
    }
}

impl IntoFuture for Run {
    type Output = Result<CommandResult>;
    type IntoFuture = BoxFuture<'static, Self::Output>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.send())
    }
}

/// A background command to start; `.await` it for a [`CommandHandle`]. See [`Run::background`].
#[derive(Debug)]
#[must_use = "a builder does nothing until awaited"]
pub struct Background {
    target: SandboxRef,
    req: StartRequest,
}

impl Background {
    /// Starts it.
    pub async fn send(self) -> Result<CommandHandle> {
        let info = self.target.start(&self.req).await?;
        Ok(CommandHandle {
            target: self.target,
            key: info.id.clone(),
            pid: info.pid,
        })
    }
}

impl IntoFuture for Background {
    type Output = Result<CommandHandle>;
    type IntoFuture = BoxFuture<'static, Self::Output>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.send())
    }
}

/// A background process (Declaw's `CommandHandle`): wait for it, kill it, write to it. Holding or
/// dropping it changes nothing in the sandbox.
#[derive(Debug, Clone)]
pub struct CommandHandle {
    target: SandboxRef,
    key: String,
    pid: Option<u32>,
}

impl CommandHandle {
    /// The PID inside the sandbox (0 if unknown: connected by id, or it never started).
    pub fn pid(&self) -> u32 {
        self.pid.unwrap_or(0)
    }

    /// The process's id (or the pid it was connected with).
    pub fn id(&self) -> &str {
        &self.key
    }

    /// Waits for the end; `.await` it. Fails with [`Error::CommandExit`] on a non-zero exit code.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: sandpit::Sandbox) -> sandpit::Result<()> {
    /// let handle = sandbox.commands().run("python3 train.py").background().await?;
    /// let result = handle
    ///     .wait()
    ///     .on_stdout(|line| println!("> {line}"))
    ///     .on_stderr(|line| eprintln!("! {line}"))
    ///     .await?;
    /// println!("finished with exit code {}", result.exit_code);
    /// # Ok(()) }
    /// ```
    pub fn wait(&self) -> Wait {
        Wait {
            target: self.target.clone(),
            key: self.key.clone(),
            on_stdout: None,
            on_stderr: None,
            timeout: None,
        }
    }

    /// SIGKILLs the process tree; `false` when it had already ended.
    ///
    /// ```no_run
    /// # async fn demo(handle: sandpit::CommandHandle) -> sandpit::Result<()> {
    /// assert!(handle.kill().await?);
    /// # Ok(()) }
    /// ```
    pub async fn kill(&self) -> Result<bool> {
        Ok(self.target.kill(&self.key).await?.killed)
    }

    /// Sends any signal.
    ///
    /// ```no_run
    /// # async fn demo(handle: sandpit::CommandHandle) -> sandpit::Result<()> {
    /// handle.signal("TERM").await?;
    /// # Ok(()) }
    /// ```
    pub async fn signal(&self, signal: impl Into<Signal>) -> Result<()> {
        self.target.signal(&self.key, signal.into().0).await
    }

    /// Writes to the process's stdin.
    ///
    /// ```no_run
    /// # async fn demo(handle: sandpit::CommandHandle) -> sandpit::Result<()> {
    /// handle.send_stdin("hello\n").await?;
    /// handle.close_stdin().await?;
    /// # Ok(()) }
    /// ```
    pub async fn send_stdin(&self, data: impl AsRef<[u8]>) -> Result<()> {
        self.target
            .stdin(&self.key, data.as_ref().to_vec(), false)
            .await
    }

    /// Closes the process's stdin (EOF).
    ///
    /// ```no_run
    /// # async fn demo(handle: sandpit::CommandHandle) -> sandpit::Result<()> {
    /// handle.close_stdin().await?;
    /// # Ok(()) }
    /// ```
    pub async fn close_stdin(&self) -> Result<()> {
        self.target.stdin(&self.key, Vec::new(), true).await
    }

    /// The process's current info.
    ///
    /// ```no_run
    /// # async fn demo(handle: sandpit::CommandHandle) -> sandpit::Result<()> {
    /// println!("{:?}", handle.info().await?.status);
    /// # Ok(()) }
    /// ```
    pub async fn info(&self) -> Result<ProcessInfo> {
        self.target.get(&self.key).await
    }

    /// All its events from output chunk `from_seq` (1: everything kept), resumed after cuts.
    ///
    /// ```no_run
    /// # async fn demo(handle: sandpit::CommandHandle) -> sandpit::Result<()> {
    /// use futures_util::StreamExt;
    /// let mut events = handle.events(1);
    /// while let Some(ev) = events.next().await {
    ///     println!("{:?}", ev?);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn events(&self, from_seq: u64) -> EventStream {
        self.target.events(&self.key, from_seq)
    }

    /// Opens an interactive [`CommandSession`] on this process, replaying its output from the start.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: sandpit::Sandbox) -> sandpit::Result<()> {
    /// let session = sandbox.commands().connect("p7").session().await?;
    /// session.stdin().write("more input\n").await?;
    /// # Ok(()) }
    /// ```
    pub async fn session(&self) -> Result<CommandSession> {
        let info = self.target.get(&self.key).await?;
        CommandSession::open(self.target.clone(), info, None, None).await
    }

    /// Forgets the handle; the process goes on.
    pub fn disconnect(self) {}
}

/// Waiting for a [`CommandHandle`]; `.await` it. See [`CommandHandle::wait`].
#[must_use = "a builder does nothing until awaited"]
pub struct Wait {
    target: SandboxRef,
    key: String,
    on_stdout: Option<OutputCallback>,
    on_stderr: Option<OutputCallback>,
    timeout: Option<std::time::Duration>,
}

impl std::fmt::Debug for Wait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wait")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl Wait {
    /// Streams stdout (from the first chunk kept) to `f`.
    pub fn on_stdout(mut self, f: impl FnMut(&str) + Send + 'static) -> Self {
        self.on_stdout = Some(Box::new(f));
        self
    }

    /// Streams stderr (from the first chunk kept) to `f`.
    pub fn on_stderr(mut self, f: impl FnMut(&str) + Send + 'static) -> Self {
        self.on_stderr = Some(Box::new(f));
        self
    }

    /// Gives up after `t` with [`Error::Timeout`]; the process keeps running.
    pub fn timeout(mut self, t: std::time::Duration) -> Self {
        self.timeout = Some(t);
        self
    }

    /// Waits.
    pub async fn send(self) -> Result<CommandResult> {
        let r = if self.on_stdout.is_none() && self.on_stderr.is_none() {
            CommandResult::from_exec(self.target.wait(&self.key, self.timeout, true).await?)
        } else {
            let events = self.target.events(&self.key, 1);
            let collect = collect_stream(events, self.on_stdout, self.on_stderr);
            match self.timeout {
                None => collect.await?,
                Some(t) => tokio::time::timeout(t, collect).await.map_err(|_| {
                    Error::Timeout(ApiError {
                        status: 0,
                        retry_after: None,
                        code: ErrorCode::Timeout,
                        message: format!(
                            "process {} still running after {} ms",
                            self.key,
                            t.as_millis()
                        ),
                    })
                })??,
            }
        };
        let r = r.timeout_as_error()?;
        if r.exit_code == 0 {
            Ok(r)
        } else {
            Err(Error::CommandExit(Box::new(r)))
        }
    }
}

impl IntoFuture for Wait {
    type Output = Result<CommandResult>;
    type IntoFuture = BoxFuture<'static, Self::Output>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.send())
    }
}

/// A command to spawn; `.await` it for a [`CommandSession`]. See [`Commands::spawn`].
#[must_use = "a builder does nothing until awaited"]
pub struct Spawn {
    target: SandboxRef,
    req: StartRequest,
    on_stdout: Option<OutputCallback>,
    on_stderr: Option<OutputCallback>,
}

impl std::fmt::Debug for Spawn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spawn")
            .field("req", &self.req)
            .finish_non_exhaustive()
    }
}

impl Spawn {
    start_setters!();

    /// Streams stdout chunks to `f` as they arrive.
    pub fn on_stdout(mut self, f: impl FnMut(&str) + Send + 'static) -> Self {
        self.on_stdout = Some(Box::new(f));
        self
    }

    /// Streams stderr chunks to `f` as they arrive.
    pub fn on_stderr(mut self, f: impl FnMut(&str) + Send + 'static) -> Self {
        self.on_stderr = Some(Box::new(f));
        self
    }

    /// Starts the process and opens its session.
    pub async fn send(self) -> Result<CommandSession> {
        let info = self.target.start(&self.req).await?;
        CommandSession::open(self.target, info, self.on_stdout, self.on_stderr).await
    }
}

impl IntoFuture for Spawn {
    type Output = Result<CommandSession>;
    type IntoFuture = BoxFuture<'static, Self::Output>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.send())
    }
}

/// A live session with a running process over a WebSocket (Superserve's `CommandSession`).
///
/// Dropping it closes the connection and leaves the process running; pick it up again with
/// [`Sandbox::connect`] and [`Commands::connect`]. [`close`](Self::close) kills the process.
#[derive(Debug)]
pub struct CommandSession {
    target: SandboxRef,
    info: ProcessInfo,
    stdin: SessionStdin,
    done: Option<tokio::task::JoinHandle<Result<CommandResult>>>,
}

/// The stdin of a [`CommandSession`].
#[derive(Debug)]
pub struct SessionStdin {
    out: tokio::sync::mpsc::UnboundedSender<Outgoing>,
}

impl SessionStdin {
    /// Writes text or bytes.
    ///
    /// ```no_run
    /// # async fn demo(session: sandpit::CommandSession) -> sandpit::Result<()> {
    /// session.stdin().write("print(2 + 2)\n").await?;
    /// session.stdin().write(b"\x04".as_slice()).await?;
    /// # Ok(()) }
    /// ```
    #[allow(clippy::unused_async)] // async like every seed SDK, so back-pressure can come later
    pub async fn write(&self, data: impl AsRef<[u8]>) -> Result<()> {
        self.out
            .send(Outgoing::Stdin(data.as_ref().to_vec()))
            .map_err(|_| Error::cut("the session is closed"))
    }

    /// Closes stdin: the process reads EOF.
    ///
    /// ```no_run
    /// # async fn demo(session: sandpit::CommandSession) -> sandpit::Result<()> {
    /// session.stdin().close().await?;
    /// # Ok(()) }
    /// ```
    #[allow(clippy::unused_async)] // see `write`
    pub async fn close(&self) -> Result<()> {
        self.out
            .send(Outgoing::StdinEof)
            .map_err(|_| Error::cut("the session is closed"))
    }
}

impl Drop for CommandSession {
    fn drop(&mut self) {
        if let Some(t) = self.done.take() {
            t.abort();
        }
    }
}

impl CommandSession {
    pub(crate) async fn open(
        target: SandboxRef,
        info: ProcessInfo,
        mut on_stdout: Option<OutputCallback>,
        mut on_stderr: Option<OutputCallback>,
    ) -> Result<Self> {
        let mut ws = WsSession::open(target.clone(), info.id.clone(), 1).await?;
        let stdin = SessionStdin {
            out: ws.out.clone(),
        };
        let done = tokio::spawn(async move {
            let (mut out, mut err) = (OutputTail::default(), OutputTail::default());
            while let Some(inc) = ws.events.recv().await {
                match inc? {
                    Incoming::Event(ProcessEvent::Stdout { data, .. }) => {
                        if let Some(cb) = on_stdout.as_mut() {
                            cb(&String::from_utf8_lossy(&data));
                        }
                        out.push(&data);
                    }
                    Incoming::Event(ProcessEvent::Stderr { data, .. }) => {
                        if let Some(cb) = on_stderr.as_mut() {
                            cb(&String::from_utf8_lossy(&data));
                        }
                        err.push(&data);
                    }
                    Incoming::Event(ProcessEvent::Exited(info)) => {
                        return Ok(CommandResult::new(info, out.take(), err.take()));
                    }
                    Incoming::Event(_) => {}
                }
            }
            Err(Error::cut("the session ended without an exited message"))
        });
        Ok(Self {
            target,
            info,
            stdin,
            done: Some(done),
        })
    }

    /// The process's PID inside the sandbox.
    pub fn pid(&self) -> u32 {
        self.info.pid.unwrap_or(0)
    }

    /// The process's id: save it to [`Commands::connect`] later.
    pub fn id(&self) -> &str {
        &self.info.id
    }

    /// The process info at spawn time.
    pub fn info(&self) -> &ProcessInfo {
        &self.info
    }

    /// The process's stdin.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: sandpit::Sandbox) -> sandpit::Result<()> {
    /// let session = sandbox.commands().spawn("cat").await?;
    /// println!("pid {} id {}", session.pid(), session.id());
    /// session.stdin().write("x").await?;
    /// session.stdin().close().await?;
    /// # Ok(()) }
    /// ```
    pub fn stdin(&self) -> &SessionStdin {
        &self.stdin
    }

    /// Sends a signal (`Signal::TERM` is Superserve's default).
    ///
    /// ```no_run
    /// # async fn demo(session: sandpit::CommandSession) -> sandpit::Result<()> {
    /// session.kill(sandpit::Signal::TERM).await?;
    /// session.kill("INT").await?;
    /// # Ok(()) }
    /// ```
    pub async fn kill(&self, signal: impl Into<Signal>) -> Result<()> {
        self.target.signal(&self.info.id, signal.into().0).await
    }

    /// Resolves with the result when the process exits; [`Error::Sandbox`] if the connection drops for
    /// good first (the process keeps running), [`Error::Timeout`] if its timeout ended it.
    ///
    /// ```no_run
    /// # async fn demo(session: sandpit::CommandSession) -> sandpit::Result<()> {
    /// let r = session.wait().await?;
    /// println!("exited {}", r.exit_code);
    /// # Ok(()) }
    /// ```
    pub async fn wait(mut self) -> Result<CommandResult> {
        let done = self.done.take().expect("wait consumes the session");
        match done.await {
            Ok(r) => r?.timeout_as_error(),
            Err(e) => Err(Error::cut(format!("session task failed: {e}"))),
        }
    }

    /// Kills the process (SIGKILL to its tree) and closes the connection.
    ///
    /// ```no_run
    /// # async fn demo(session: sandpit::CommandSession) -> sandpit::Result<()> {
    /// session.close().await?;
    /// # Ok(()) }
    /// ```
    pub async fn close(self) -> Result<()> {
        self.target.kill(&self.info.id).await.map(drop)
    }
}

#[cfg(test)]
mod output_tail_tests {
    use super::*;

    /// Regression: a streamed command's result kept every byte it had seen.
    #[test]
    fn a_result_keeps_the_last_64_mib_of_a_long_stream() {
        let mut t = OutputTail::default();
        let chunk = vec![b'a'; 1 << 20];
        for _ in 0..200 {
            t.push(&chunk);
            assert!(t.0.len() <= 2 * STREAM_KEEP_BYTES);
        }
        t.push(b"end");
        let v = t.take();
        assert_eq!(v.len(), STREAM_KEEP_BYTES);
        assert!(v.ends_with(b"aend"));
        let mut short = OutputTail::default();
        short.push(b"hi");
        assert_eq!(short.take(), b"hi");
    }
}
