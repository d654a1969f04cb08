//! The agent's single `waitpid` loop: it reaps every child, ours and adopted orphans alike.
//!
//! As PID 1 of a sandbox (or as a child subreaper when run on a host), every orphaned descendant becomes
//! the agent's child and must be reaped or it stays a zombie forever. One task owns all `waitpid` calls so
//! that no other code can steal an exit status; statuses of processes the agent started are delivered to
//! whoever registered that pid, everything else is simply collected.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::oneshot;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

/// How a process ended and what it used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    pub exit: Exit,
    pub resources: sandpit_types::ProcessResources,
}

/// Registry of pids whose exit someone waits for.
#[derive(Debug, Default, Clone)]
pub struct Reaper {
    waiting: Arc<Mutex<HashMap<i32, oneshot::Sender<Ended>>>>,
}

/// Held while forking so that the reaper cannot collect the child before it is registered.
pub type RegistrationGuard<'a> = std::sync::MutexGuard<'a, HashMap<i32, oneshot::Sender<Ended>>>;

impl Reaper {
    /// Starts the reaping task. Must be called from within a tokio runtime.
    pub fn start() -> std::io::Result<Self> {
        let reaper = Self::default();
        // Not PID 1: become a subreaper so orphans of our processes still come to us.
        if std::process::id() != 1 {
            // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer flag and touches no memory.
            unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        }
        let mut sigchld = signal(SignalKind::child())?;
        let r = reaper.clone();
        tokio::spawn(async move {
            loop {
                r.reap_all();
                if sigchld.recv().await.is_none() {
                    break;
                }
            }
        });
        Ok(reaper)
    }

    /// Locks the registry; fork and [`register`](Self::register) while holding it.
    pub fn lock(&self) -> RegistrationGuard<'_> {
        crate::sync::lock(&self.waiting)
    }

    /// Registers `pid` under a held guard and returns where its exit will be delivered.
    pub fn register(guard: &mut RegistrationGuard<'_>, pid: i32) -> oneshot::Receiver<Ended> {
        let (tx, rx) = oneshot::channel();
        guard.insert(pid, tx);
        rx
    }

    fn reap_all(&self) {
        // Raw wait4 rather than nix's waitpid: nix cannot represent real-time signals in `WaitStatus` and
        // fails *after* the kernel has consumed the status, which would lose that exit for good; and
        // wait4 also gives the process's resource use.
        loop {
            let mut status = 0;
            // SAFETY: an all-zero rusage is a valid value of this plain C struct.
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: wait4 writes one int and one rusage through pointers to live locals.
            let pid = unsafe { libc::wait4(-1, &raw mut status, libc::WNOHANG, &raw mut usage) };
            if pid <= 0 {
                if pid < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                break;
            }
            let ms = |t: libc::timeval| {
                u64::try_from(t.tv_sec).unwrap_or(0) * 1000
                    + u64::try_from(t.tv_usec).unwrap_or(0) / 1000
            };
            let resources = sandpit_types::ProcessResources {
                cpu_user_ms: ms(usage.ru_utime),
                cpu_system_ms: ms(usage.ru_stime),
                // Linux reports ru_maxrss in KiB.
                max_rss_bytes: u64::try_from(usage.ru_maxrss).unwrap_or(0) * 1024,
            };
            let exit = if libc::WIFEXITED(status) {
                Exit::Code(libc::WEXITSTATUS(status))
            } else if libc::WIFSIGNALED(status) {
                Exit::Signal(libc::WTERMSIG(status))
            } else {
                continue;
            };
            self.deliver(pid, Ended { exit, resources });
        }
    }

    fn deliver(&self, pid: i32, ended: Ended) {
        if let Some(tx) = crate::sync::lock(&self.waiting).remove(&pid) {
            let _ = tx.send(ended);
        } else {
            tracing::debug!(pid, exit = ?ended.exit, "reaped orphan");
        }
    }
}
