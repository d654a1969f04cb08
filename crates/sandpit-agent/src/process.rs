//! One process the agent started: its state machine, its output pumps, its stdin, and the supervisor
//! task that enforces timeouts and records how it ended.
//!
//! The supervisor, not any client connection, owns the process: a dropped client, a proxy hiccup or a
//! daemon restart changes nothing here.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, SystemTime};

use bytes::{Buf as _, BufMut as _, BytesMut};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use sandpit_types::{HEADER_LEN, ProcessInfo, ProcessStatus, TtySize};
use tokio::io::unix::AsyncFd;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use crate::output::{OutputLog, Stream, framed, utf8_cut};
use crate::reaper::{Ended, Exit};

/// The fixed facts of a process, known before it starts.
#[derive(Debug, Clone)]
pub struct Meta {
    pub cmd: String,
    pub args: Vec<String>,
    pub cwd: String,
    pub user: String,
    pub env: BTreeMap<String, String>,
    pub is_pty: bool,
}

#[derive(Debug)]
struct State {
    status: ProcessStatus,
    pid: Option<u32>,
    exit_code: Option<i32>,
    signal: Option<String>,
    started_at: Option<SystemTime>,
    ended_at: Option<SystemTime>,
    error: Option<String>,
    /// Set when the agent itself killed the process for running too long or too quietly.
    timed_out: Option<String>,
    resources: Option<sandpit_types::ProcessResources>,
}

/// Errors of process control calls.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("process {0} has no stdin pipe: start it with \"stdin\": \"pipe\" or a tty")]
    NoStdin(String),
    #[error("stdin of process {0} is closed")]
    StdinClosed(String),
    #[error("process {0} is not running (status {1})")]
    NotRunning(String, &'static str),
    #[error("process {0} has no terminal to resize")]
    NoTty(String),
    #[error("{0}")]
    Os(String),
}

/// A process and everything the agent keeps about it.
#[derive(Debug)]
pub struct Process {
    pub id: String,
    pub meta: Meta,
    /// Creation order, for listing.
    pub order: u64,
    pub log: OutputLog,
    state: Mutex<State>,
    pgid: AtomicI32,
    done: watch::Sender<bool>,
    stdin: tokio::sync::Mutex<Option<AsyncFd<OwnedFd>>>,
    pty: Mutex<Option<OwnedFd>>,
    pub cgroup: Option<PathBuf>,
    /// The start request (without its id), to tell an idempotent retry from a conflicting reuse.
    pub request_key: String,
}

impl Process {
    pub fn new(
        id: String,
        meta: Meta,
        order: u64,
        log: OutputLog,
        cgroup: Option<PathBuf>,
        request_key: String,
    ) -> Self {
        Self {
            id,
            meta,
            order,
            log,
            state: Mutex::new(State {
                status: ProcessStatus::Queued,
                pid: None,
                exit_code: None,
                signal: None,
                started_at: None,
                ended_at: None,
                error: None,
                timed_out: None,
                resources: None,
            }),
            pgid: AtomicI32::new(0),
            done: watch::channel(false).0,
            stdin: tokio::sync::Mutex::new(None),
            pty: Mutex::new(None),
            cgroup,
            request_key,
        }
    }

    pub fn info(&self) -> ProcessInfo {
        let s = crate::sync::lock(&self.state);
        let (stdout_bytes, stderr_bytes, lost_bytes, last_seq) = self.log.totals();
        ProcessInfo {
            id: self.id.clone(),
            pid: s.pid,
            cmd: self.meta.cmd.clone(),
            args: self.meta.args.clone(),
            cwd: self.meta.cwd.clone(),
            user: self.meta.user.clone(),
            env: self.meta.env.clone(),
            is_pty: self.meta.is_pty,
            status: s.status,
            exit_code: s.exit_code,
            signal: s.signal.clone(),
            started_at: s.started_at.map(rfc3339),
            ended_at: s.ended_at.map(rfc3339),
            error: s.error.clone(),
            stdout_bytes,
            stderr_bytes,
            lost_bytes,
            last_seq,
            resources: s.resources,
        }
    }

    pub fn status(&self) -> ProcessStatus {
        crate::sync::lock(&self.state).status
    }

    pub fn ended_at(&self) -> Option<SystemTime> {
        crate::sync::lock(&self.state).ended_at
    }

    pub fn pid(&self) -> Option<u32> {
        crate::sync::lock(&self.state).pid
    }

    /// A receiver that becomes `true` once the process has finished and all its output is logged.
    pub fn done(&self) -> watch::Receiver<bool> {
        self.done.subscribe()
    }

    /// Records that the process could not start.
    pub fn fail(&self, error: String, exit_code: i32) {
        {
            let mut s = crate::sync::lock(&self.state);
            s.status = ProcessStatus::Failed;
            s.error = Some(error);
            s.exit_code = Some(exit_code);
            s.ended_at = Some(SystemTime::now());
        }
        self.log.close();
        self.done.send_replace(true);
    }

    /// Records a successful start and hands the process's fds over.
    pub fn running(&self, pid: i32, stdin: Option<AsyncFd<OwnedFd>>, pty: Option<OwnedFd>) {
        {
            let mut s = crate::sync::lock(&self.state);
            s.status = ProcessStatus::Running;
            s.pid = Some(pid as u32);
            s.started_at = Some(SystemTime::now());
        }
        self.pgid.store(pid, Ordering::SeqCst);
        *self.stdin.try_lock().expect("stdin unused before start") = stdin;
        *crate::sync::lock(&self.pty) = pty;
    }

    /// Sends `sig` to the process's group (and, on a terminal, to its foreground job).
    pub fn signal(&self, sig: i32) -> Result<(), ControlError> {
        let status = self.status();
        if status != ProcessStatus::Running {
            return Err(ControlError::NotRunning(self.id.clone(), status.as_str()));
        }
        let pgid = self.pgid.load(Ordering::SeqCst);
        let signal = Signal::try_from(sig).ok();
        // Real-time signals have no nix `Signal` variant; use libc directly for those.
        let send = |target: i32| -> nix::Result<()> {
            if let Some(s) = signal {
                killpg(Pid::from_raw(target), s)
            } else {
                // SAFETY: killpg with a plain integer signal touches no memory.
                let r = unsafe { libc::killpg(target, sig) };
                if r == 0 {
                    Ok(())
                } else {
                    Err(nix::errno::Errno::last())
                }
            }
        };
        send(pgid)
            .map_err(|e| ControlError::Os(format!("cannot signal process {}: {e}", self.id)))?;
        if let Some(pty) = crate::sync::lock(&self.pty).as_ref() {
            if let Ok(fg) = nix::unistd::tcgetpgrp(pty) {
                if fg.as_raw() != pgid && fg.as_raw() > 0 {
                    let _ = send(fg.as_raw());
                }
            }
        }
        Ok(())
    }

    /// SIGKILLs every process of the tree: the group, and the cgroup when there is one. Works on
    /// finished processes too, to sweep background children left behind. Returns whether the process
    /// itself was still running.
    pub fn kill_tree(&self) -> bool {
        let running = self.status() == ProcessStatus::Running;
        let pgid = self.pgid.load(Ordering::SeqCst);
        if pgid > 0 {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
            if running {
                let _ = kill(Pid::from_raw(pgid), Signal::SIGKILL);
            }
        }
        if let Some(cg) = &self.cgroup {
            crate::cgroup::kill_all(cg);
        }
        running
    }

    /// Writes to stdin, waiting while the pipe is full.
    pub async fn write_stdin(&self, data: &[u8]) -> Result<(), ControlError> {
        let guard = self.stdin.lock().await;
        let Some(fd) = guard.as_ref() else {
            return Err(if self.meta.is_pty || self.status().is_final() {
                ControlError::StdinClosed(self.id.clone())
            } else {
                ControlError::NoStdin(self.id.clone())
            });
        };
        let mut off = 0;
        while off < data.len() {
            let mut ready = fd
                .writable()
                .await
                .map_err(|e| ControlError::Os(e.to_string()))?;
            match ready.try_io(|inner| {
                nix::unistd::write(inner.get_ref(), &data[off..]).map_err(Into::into)
            }) {
                Ok(Ok(n)) => off += n,
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EPIPE) => {
                    return Err(ControlError::StdinClosed(self.id.clone()));
                }
                Ok(Err(e)) => return Err(ControlError::Os(format!("writing stdin: {e}"))),
                Err(_would_block) => {}
            }
        }
        Ok(())
    }

    /// Closes stdin so the process reads EOF. On a terminal, sends the EOF character instead.
    pub async fn close_stdin(&self) -> Result<(), ControlError> {
        if self.meta.is_pty {
            return self.write_stdin(&[4]).await;
        }
        let mut guard = self.stdin.lock().await;
        if guard.take().is_none() && !self.status().is_final() {
            return Err(ControlError::NoStdin(self.id.clone()));
        }
        Ok(())
    }

    pub fn resize(&self, size: TtySize) -> Result<(), ControlError> {
        let pty = crate::sync::lock(&self.pty);
        let Some(fd) = pty.as_ref() else {
            return Err(ControlError::NoTty(self.id.clone()));
        };
        let ws = libc::winsize {
            ws_row: size.rows,
            ws_col: size.cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which points at a live local.
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &raw const ws) };
        if r != 0 {
            return Err(ControlError::Os(format!(
                "resize: {}",
                std::io::Error::last_os_error()
            )));
        }
        Ok(())
    }
}

/// How long after the main process exits its output pipes may stay open (held by background
/// children) before the agent stops reading them.
const EXIT_GRACE: Duration = Duration::from_millis(100);

/// Timeouts enforced by the supervisor.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timeouts {
    pub total: Option<Duration>,
    pub idle: Option<Duration>,
}

/// Runs a process's supervisor ([`supervise`]). Should it ever panic (a bug: one did, under load, and
/// with the agent's stderr going nowhere it was silent), the process must not stay `running` for ever
/// with no `exited` event to end its streams and no `wait` returning: it is killed with every child
/// and recorded as `failed` saying why; what it printed so far stays readable.
pub fn spawn_supervisor<F>(proc: std::sync::Arc<Process>, supervisor: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let task = tokio::spawn(supervisor);
    tokio::spawn(async move {
        if let Err(e) = task.await {
            if !e.is_panic() {
                return;
            }
            tracing::error!(id = %proc.id, error = %e, "process supervisor panicked");
            proc.kill_tree();
            proc.fail(
                format!(
                    "internal error: the agent lost track of this process ({e}); it was killed, \
                     and its output up to then is kept"
                ),
                137,
            );
        }
    });
}

/// Drives a started process to its end: pumps output, enforces timeouts, records the exit.
pub async fn supervise(
    proc: std::sync::Arc<Process>,
    stdout: OwnedFd,
    stderr: Option<OwnedFd>,
    exit_rx: oneshot::Receiver<Ended>,
    timeouts: Timeouts,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut pumps = Vec::new();
    let is_pty = proc.meta.is_pty;
    for (fd, stream) in [(Some(stdout), Stream::Stdout), (stderr, Stream::Stderr)] {
        if let Some(fd) = fd {
            let p = proc.clone();
            let stop = stop_rx.clone();
            pumps.push(tokio::spawn(async move {
                pump(&p, fd, stream, stop, is_pty).await;
            }));
        }
    }

    let mut tick = proc.log.subscribe();
    let start = Instant::now();
    let mut deadline = timeouts.total.map(|t| start + t);
    let mut idle_deadline = timeouts.idle.map(|t| start + t);
    let far = start + Duration::from_secs(100 * 365 * 86_400);
    tokio::pin!(exit_rx);
    let (exit, resources) = loop {
        tokio::select! {
            e = &mut exit_rx => break e.map_or((Exit::Signal(libc::SIGKILL), None), |e| (e.exit, Some(e.resources))),
            () = tokio::time::sleep_until(deadline.unwrap_or(far)), if deadline.is_some() => {
                let ms = timeouts.total.unwrap_or_default().as_millis();
                crate::sync::lock(&proc.state).timed_out =
                    Some(format!("timed out after {ms} ms (timeout_ms)"));
                proc.kill_tree();
                deadline = None;
                idle_deadline = None;
            }
            () = tokio::time::sleep_until(idle_deadline.unwrap_or(far)), if idle_deadline.is_some() => {
                let ms = timeouts.idle.unwrap_or_default().as_millis();
                crate::sync::lock(&proc.state).timed_out =
                    Some(format!("no output for {ms} ms (idle_timeout_ms)"));
                proc.kill_tree();
                deadline = None;
                idle_deadline = None;
            }
            r = tick.changed() => {
                if r.is_err() { continue; }
                if let (Some(idle), Some(_)) = (timeouts.idle, idle_deadline) {
                    idle_deadline = Some(Instant::now() + idle);
                }
            }
        }
    };

    // Let the pipes reach EOF on their own; background children that keep them open only get a grace.
    // One join, kept across the grace: a pump that finished within it has handed its result to this
    // join, and awaiting its `JoinHandle` a second time would panic ("polled after completion"),
    // killing this task and leaving the process `running` for ever (a background child holding only
    // stdout did it every time; a busy agent, whose pumps drain late, now and then).
    let mut all = std::pin::pin!(futures_util::future::join_all(pumps));
    if tokio::time::timeout(EXIT_GRACE, &mut all).await.is_err() {
        stop_tx.send_replace(true);
        all.await;
    }
    *proc.stdin.lock().await = None;

    {
        let mut s = crate::sync::lock(&proc.state);
        s.ended_at = Some(SystemTime::now());
        s.resources = resources;
        match exit {
            Exit::Code(c) => {
                s.exit_code = Some(c);
                s.status = ProcessStatus::Exited;
            }
            Exit::Signal(sig) => {
                s.exit_code = Some(128 + sig);
                s.signal = Some(sandpit_types::signal::signal_name(sig));
                s.status = ProcessStatus::Killed;
            }
        }
        if let Some(why) = s.timed_out.take() {
            s.status = ProcessStatus::TimedOut;
            s.error = Some(why);
        }
        if let Some(e) = proc.log.spill_error() {
            let note =
                format!("output log could not be written to disk ({e}); some output was dropped");
            s.error = Some(
                s.error
                    .take()
                    .map_or(note.clone(), |x| format!("{x}; {note}")),
            );
        }
    }
    proc.log.close();
    proc.done.send_replace(true);
    if let Some(cg) = &proc.cgroup {
        // Fails while background children live on in it; the retention sweep tries again.
        crate::cgroup::remove(cg);
    }
    tracing::debug!(id = %proc.id, ?exit, "process finished");
}

/// Reads one output fd into the log until EOF or until told to stop (then drains what is buffered).
///
/// Reads land in a shared buffer and each large chunk (at least [`MIN_READ`]: what a fast writer
/// produces) is split off it without a copy (`BytesMut::split_to`): chunks of one buffer share its
/// allocation until the log drops the last of them, so a kept chunk holds at most 4× its size. Smaller
/// chunks are copied out. A new buffer is taken once the current one has less than `MIN_READ` left.
/// Each chunk's data follows [`HEADER_LEN`] bytes kept free for its WebSocket frame header
/// ([`crate::output::Chunk::frame`]), so sessions send it without copying either.
async fn pump(
    proc: &Process,
    fd: OwnedFd,
    stream: Stream,
    mut stop: watch::Receiver<bool>,
    is_pty: bool,
) {
    let Ok(fd) = crate::spawn::async_fd(fd) else {
        return;
    };
    // Holds the next chunk's frame header space, then the bytes of a UTF-8 sequence cut by the last
    // read (at most 3), kept for the next chunk so that no chunk splits a character, then what is read.
    let mut buf = framed(&[]);
    let mut stopping = false;
    // After a stop, read what the pipe holds now, bounded so a chatty orphan cannot keep us here.
    let mut drain_budget: usize = 4 << 20;
    loop {
        if buf.capacity() - buf.len() < MIN_READ {
            buf.reserve(PUMP_BUF);
        }
        let n = if stopping {
            if drain_budget == 0 {
                0
            } else {
                read_into(&fd, &mut buf, PUMP_BUF).map_or(0, |n| {
                    drain_budget = drain_budget.saturating_sub(n);
                    n
                })
            }
        } else {
            // While a live follower lags, wait for it (the pipe fills and the process blocks in
            // `write`, as with any slow reader of a pipe); read no more than it can take.
            let room = tokio::select! {
                biased;
                r = proc.log.room() => r,
                _ = stop.changed() => { stopping = true; continue; }
            };
            tokio::select! {
                biased;
                r = read_some(&fd, &mut buf, PUMP_BUF.min(room)) => match r {
                    Ok(n) => n,
                    // A PTY master reports EIO once the last slave fd closes: that is its EOF.
                    Err(e) if is_pty && e.raw_os_error() == Some(libc::EIO) => 0,
                    Err(e) => {
                        tracing::warn!(id = %proc.id, error = %e, "reading output failed");
                        0
                    }
                },
                _ = stop.changed() => { stopping = true; continue; }
            }
        };
        if n == 0 {
            break;
        }
        let cut = utf8_cut(&buf[HEADER_LEN..]);
        if cut == 0 {
            continue;
        }
        if cut >= MIN_READ {
            proc.log
                .append_frame(stream, buf.split_to(HEADER_LEN + cut));
        } else {
            // A small chunk is copied out, so that it never keeps a whole buffer alive (a finished
            // process's last few lines may be kept for a long time).
            proc.log.append(stream, &buf[HEADER_LEN..HEADER_LEN + cut]);
            buf.advance(HEADER_LEN + cut);
        }
        // The next chunk's header space goes before the carried bytes: they move up by its size, in
        // the part of the buffer that no chunk owns.
        let carry = buf.len();
        let mut held = [0u8; 3];
        held[..carry].copy_from_slice(&buf);
        buf.clear();
        buf.put_bytes(0, HEADER_LEN);
        buf.extend_from_slice(&held[..carry]);
    }
    if buf.len() > HEADER_LEN {
        proc.log.append(stream, &buf[HEADER_LEN..]);
    }
}

/// Most bytes one read of a process's output takes: large reads mean fewer chunks, frames and
/// syscalls for chatty processes; small writers still get their output promptly, since a read returns
/// whatever the pipe holds.
const PUMP_BUF: usize = 256 * 1024;
/// A read buffer with less room than this is replaced by a new one of [`PUMP_BUF`]; chunks this large
/// are split off the buffer rather than copied.
const MIN_READ: usize = 64 * 1024;

async fn read_some(
    fd: &AsyncFd<OwnedFd>,
    buf: &mut BytesMut,
    max: usize,
) -> std::io::Result<usize> {
    loop {
        let mut guard = fd.readable().await?;
        match guard.try_io(|inner| read_into(inner, buf, max)) {
            Ok(r) => return r,
            Err(_would_block) => {}
        }
    }
}

/// One `read(2)` of at most `max` bytes into `buf`'s spare capacity, appended to its contents.
fn read_into(fd: &impl AsRawFd, buf: &mut BytesMut, max: usize) -> std::io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    let want = spare.len().min(max);
    loop {
        // SAFETY: `spare` is `want` writable bytes owned by `buf`; read(2) writes at most `want`
        // bytes there and reports how many, and only those are marked initialized below.
        let n = unsafe { libc::read(fd.as_raw_fd(), spare.as_mut_ptr().cast(), want) };
        if n >= 0 {
            let n = n as usize;
            // SAFETY: read(2) initialized the first `n` bytes of the spare capacity.
            unsafe { buf.set_len(buf.len() + n) };
            return Ok(n);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// RFC 3339 with milliseconds, UTC.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a supervisor that panicked left its process `running` for ever.
    #[tokio::test]
    async fn a_panicking_supervisor_fails_the_process_instead_of_leaving_it_running() {
        let dir = tempfile::tempdir().unwrap();
        let log = OutputLog::new(
            dir.path().join("log"),
            crate::output::Limits {
                cap: 1 << 20,
                memory: 1 << 16,
            },
        );
        let meta = Meta {
            cmd: "true".into(),
            args: Vec::new(),
            cwd: "/".into(),
            user: "user".into(),
            env: BTreeMap::new(),
            is_pty: false,
        };
        let proc = std::sync::Arc::new(Process::new("p".into(), meta, 1, log, None, String::new()));
        // pid 0: nothing to kill (a pgid of 0 is skipped, never `killpg(0)`).
        proc.running(0, None, None);
        let mut done = proc.done();
        spawn_supervisor(proc.clone(), async { panic!("boom") });
        tokio::time::timeout(Duration::from_secs(5), done.wait_for(|d| *d))
            .await
            .expect("the process was left running")
            .unwrap();
        let info = proc.info();
        assert_eq!(info.status, ProcessStatus::Failed);
        assert!(
            info.error.as_deref().is_some_and(|e| e.contains("boom")),
            "{info:?}"
        );
    }
}
