//! The Hyperbrowser process surface: `sandbox.processes().start/list`, `sandbox.get_process(id)` and the
//! [`Process`] handle (`write_stdin(data, eof)`, `signal`, `wait`/`result`, `stream()`, `kill`).

use std::future::IntoFuture;

use futures_util::{Stream, StreamExt};
use sandpit_types::{ProcessEvent, ProcessInfo, ProcessStatus, StartRequest, Stdin};

use crate::Sandbox;
use crate::api::SandboxRef;
use crate::commands::CommandResult;
use crate::error::Result;
use crate::options::{Signal, start_setters};
use crate::sandbox::BoxFuture;

/// `sandbox.processes()`.
#[derive(Debug, Clone)]
pub struct Processes {
    target: SandboxRef,
}

impl Sandbox {
    /// The Hyperbrowser process surface.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: sandpit::Sandbox) -> sandpit::Result<()> {
    /// let p = sandbox.processes().start("sleep 30").run_as("root").await?;
    /// println!("{}", p.id());
    /// # Ok(()) }
    /// ```
    pub fn processes(&self) -> Processes {
        Processes {
            target: self.target.clone(),
        }
    }

    /// A handle to an existing process by id or pid (checked with a request).
    ///
    /// ```no_run
    /// # async fn demo(sandbox: sandpit::Sandbox) -> sandpit::Result<()> {
    /// let p = sandbox.get_process("p3").await?;
    /// p.signal("TERM").await?;
    /// # Ok(()) }
    /// ```
    pub async fn get_process(&self, id: impl ToString) -> Result<Process> {
        let info = self.target.get(&id.to_string()).await?;
        Ok(Process {
            target: self.target.clone(),
            info,
        })
    }
}

impl Processes {
    /// Starts a shell command line in the background, with a stdin pipe; `.await` for a [`Process`].
    ///
    /// ```no_run
    /// # async fn demo(sandbox: sandpit::Sandbox) -> sandpit::Result<()> {
    /// let p = sandbox
    ///     .processes()
    ///     .start("read line; echo stdout:$line; echo stderr:$line 1>&2")
    ///     .run_as("root")
    ///     .await?;
    /// p.write_stdin("hello\n", true).await?;
    /// let r = p.wait().await?;
    /// assert_eq!(r.stdout, "stdout:hello\n");
    /// # Ok(()) }
    /// ```
    pub fn start(&self, cmd: impl Into<String>) -> StartProcess {
        StartProcess {
            target: self.target.clone(),
            req: StartRequest {
                cmd: Some(cmd.into()),
                stdin: Stdin::Pipe,
                ..StartRequest::default()
            },
        }
    }

    /// Lists processes, newest first; filter with the builder, `.await` for the list.
    ///
    /// ```no_run
    /// # async fn demo(sandbox: sandpit::Sandbox) -> sandpit::Result<()> {
    /// use sandpit::ProcessStatus;
    /// let listing = sandbox.processes().list().status(ProcessStatus::Running).limit(20).await?;
    /// let ids: Vec<&str> = listing.iter().map(|p| p.id.as_str()).collect();
    /// # Ok(()) }
    /// ```
    pub fn list(&self) -> ListProcesses {
        ListProcesses {
            target: self.target.clone(),
            status: None,
            limit: None,
        }
    }
}

/// A process start; `.await` it. See [`Processes::start`].
#[derive(Debug)]
#[must_use = "a builder does nothing until awaited"]
pub struct StartProcess {
    target: SandboxRef,
    req: StartRequest,
}

impl StartProcess {
    start_setters!();

    /// Stdin from `/dev/null` instead of a pipe.
    pub fn stdin_null(mut self) -> Self {
        self.req.stdin = Stdin::Null;
        self
    }

    /// Starts it.
    pub async fn send(self) -> Result<Process> {
        let info = self.target.start(&self.req).await?;
        Ok(Process {
            target: self.target,
            info,
        })
    }
}

impl IntoFuture for StartProcess {
    type Output = Result<Process>;
    type IntoFuture = BoxFuture<'static, Self::Output>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.send())
    }
}

/// A process listing; `.await` it. See [`Processes::list`].
#[derive(Debug)]
#[must_use = "a builder does nothing until awaited"]
pub struct ListProcesses {
    target: SandboxRef,
    status: Option<ProcessStatus>,
    limit: Option<usize>,
}

impl ListProcesses {
    /// Only processes with this status.
    pub fn status(mut self, status: ProcessStatus) -> Self {
        self.status = Some(status);
        self
    }

    /// At most this many.
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = Some(n);
        self
    }

    /// Runs the query.
    pub async fn send(self) -> Result<Vec<ProcessInfo>> {
        self.target.list(self.status, self.limit).await
    }
}

impl IntoFuture for ListProcesses {
    type Output = Result<Vec<ProcessInfo>>;
    type IntoFuture = BoxFuture<'static, Self::Output>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.send())
    }
}

/// One process of the sandbox (Hyperbrowser's process handle).
#[derive(Debug, Clone)]
pub struct Process {
    target: SandboxRef,
    info: ProcessInfo,
}

/// An event of [`Process::stream`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessStreamEvent {
    /// A stdout chunk.
    Stdout {
        /// Its text (invalid UTF-8 replaced).
        data: String,
        /// Its place in the output sequence.
        seq: u64,
    },
    /// A stderr chunk.
    Stderr {
        /// Its text (invalid UTF-8 replaced).
        data: String,
        /// Its place in the output sequence.
        seq: u64,
    },
    /// Output dropped by the cap before it was read.
    Lost {
        /// How many bytes.
        bytes: u64,
    },
    /// The end, with the whole output streamed.
    Exit {
        /// The result.
        result: Box<CommandResult>,
    },
}

impl Process {
    /// The process's id.
    pub fn id(&self) -> &str {
        &self.info.id
    }

    /// Its PID inside the sandbox.
    pub fn pid(&self) -> u32 {
        self.info.pid.unwrap_or(0)
    }

    /// The info as last read.
    pub fn info(&self) -> &ProcessInfo {
        &self.info
    }

    /// Reads the current info.
    ///
    /// ```no_run
    /// # async fn demo(mut p: sandpit::Process) -> sandpit::Result<()> {
    /// let status = p.refresh().await?.status;
    /// # Ok(()) }
    /// ```
    pub async fn refresh(&mut self) -> Result<&ProcessInfo> {
        self.info = self.target.get(&self.info.id).await?;
        Ok(&self.info)
    }

    /// Writes to stdin; with `eof` closes it afterwards.
    ///
    /// ```no_run
    /// # async fn demo(p: sandpit::Process) -> sandpit::Result<()> {
    /// p.write_stdin("hello\n", true).await?;
    /// # Ok(()) }
    /// ```
    pub async fn write_stdin(&self, data: impl AsRef<[u8]>, eof: bool) -> Result<()> {
        self.target
            .stdin(&self.info.id, data.as_ref().to_vec(), eof)
            .await
    }

    /// Sends a signal, e.g. `"TERM"`.
    ///
    /// ```no_run
    /// # async fn demo(p: sandpit::Process) -> sandpit::Result<()> {
    /// p.signal("TERM").await?;
    /// # Ok(()) }
    /// ```
    pub async fn signal(&self, signal: impl Into<Signal>) -> Result<()> {
        self.target.signal(&self.info.id, signal.into().0).await
    }

    /// SIGKILLs the process tree; `false` when it had already ended.
    ///
    /// ```no_run
    /// # async fn demo(p: sandpit::Process) -> sandpit::Result<()> {
    /// let was_running = p.kill().await?;
    /// # Ok(()) }
    /// ```
    pub async fn kill(&self) -> Result<bool> {
        Ok(self.target.kill(&self.info.id).await?.killed)
    }

    /// Waits for the end and returns the result (any exit code, any status).
    ///
    /// ```no_run
    /// # async fn demo(p: sandpit::Process) -> sandpit::Result<()> {
    /// let r = p.wait().await?;
    /// println!("{:?} {}", r.status, r.stdout);
    /// # Ok(()) }
    /// ```
    pub async fn wait(&self) -> Result<CommandResult> {
        let r = self.target.wait(&self.info.id, None, true).await?;
        Ok(CommandResult::from_exec(r))
    }

    /// Alias of [`wait`](Self::wait).
    ///
    /// ```no_run
    /// # async fn demo(p: sandpit::Process) -> sandpit::Result<()> {
    /// println!("{}", p.result().await?.exit_code);
    /// # Ok(()) }
    /// ```
    pub async fn result(&self) -> Result<CommandResult> {
        self.wait().await
    }

    /// Streams stdout/stderr from the first kept chunk, ending with [`ProcessStreamEvent::Exit`]. It reads
    /// the process's WebSocket session (binary frames), or SSE where no socket can be opened; a cut
    /// connection resumes where it stopped, and a consumer slower than the process holds it back.
    ///
    /// ```no_run
    /// # async fn demo(p: sandpit::Process) -> sandpit::Result<()> {
    /// use futures_util::StreamExt;
    /// use sandpit::ProcessStreamEvent;
    /// let mut s = std::pin::pin!(p.stream());
    /// while let Some(ev) = s.next().await {
    ///     match ev? {
    ///         ProcessStreamEvent::Exit { result } => { println!("exited with {}", result.exit_code); break }
    ///         other => println!("{other:?}"),
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn stream(&self) -> impl Stream<Item = Result<ProcessStreamEvent>> + Send + 'static {
        let events = Box::pin(crate::ws::follow(
            self.target.clone(),
            self.info.id.clone(),
            1,
        ));
        futures_util::stream::unfold(
            (
                events,
                crate::commands::OutputTail::default(),
                crate::commands::OutputTail::default(),
                false,
            ),
            |(mut events, mut out, mut err, done)| async move {
                if done {
                    return None;
                }
                loop {
                    let ev = match events.next().await? {
                        Ok(ev) => ev,
                        Err(e) => return Some((Err(e), (events, out, err, true))),
                    };
                    let item = match ev {
                        ProcessEvent::Stdout { seq, data } => {
                            out.push(&data);
                            ProcessStreamEvent::Stdout {
                                data: text(data),
                                seq,
                            }
                        }
                        ProcessEvent::Stderr { seq, data } => {
                            err.push(&data);
                            ProcessStreamEvent::Stderr {
                                data: text(data),
                                seq,
                            }
                        }
                        ProcessEvent::Lost(l) => ProcessStreamEvent::Lost { bytes: l.bytes },
                        ProcessEvent::Started(_) => continue,
                        ProcessEvent::Exited(info) => {
                            let result = CommandResult::new(info, out.take(), err.take());
                            return Some((
                                Ok(ProcessStreamEvent::Exit {
                                    result: Box::new(result),
                                }),
                                (events, out, err, true),
                            ));
                        }
                    };
                    return Some((Ok(item), (events, out, err, false)));
                }
            },
        )
    }
}

/// A chunk as text: UTF-8 (all but binary output) is taken as it is, without a copy; anything else has
/// its invalid sequences replaced.
fn text(data: Vec<u8>) -> String {
    String::from_utf8(data).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}
