//! Keeping the agent out of reach of the processes it supervises (issue 13), when it is a sandbox's
//! PID 1. Everything a process in the sandbox could use against the agent goes through one of:
//!
//! * **ptrace access** (`ptrace` attach/seize, `/proc/1/mem`, `process_vm_readv/writev`,
//!   `pidfd_getfd`, `/proc/1/fd/*`, `/proc/1/environ`): the agent is non-dumpable ([`protect`]), so the
//!   kernel wants `CAP_SYS_PTRACE` in the sandbox's user namespace even from a process of the same uid,
//!   and no process the agent starts has that capability in its bounding set ([`crate::spawn`]);
//! * **signals**: as a pid namespace's init the agent receives from inside only signals it handles
//!   (SIGKILL and SIGSTOP never), and the shutdown signals it handles are honoured only from outside
//!   the sandbox (`sandpit agent`'s `ShutdownSignals`);
//! * **`/proc/1/oom_score_adj`** (and `/proc/1/comm`): root in the sandbox could raise it (no capability
//!   needed to raise), which would make the agent the OOM killer's first victim. The isolate backend
//!   starts the agent from an exec-only copy owned by the host's root, so the kernel gives the agent's
//!   memory, and with it its `/proc/1/*` files, to the host's user namespace: the write is refused
//!   (EACCES). Where that does not hold (an agent started from a readable binary) the agent puts its
//!   own value back every [`WATCH_INTERVAL`] ([`watch`]); lowering back to where it was needs no
//!   capability either. When it holds, the watch only re-checks every [`OWNED_WATCH_INTERVAL`]: four
//!   wake-ups a second in every idle sandbox were most of what 1,000 idle sandboxes cost the host.
//!
//! As an ordinary process (not PID 1: tests, the `process` backend) none of this applies.

use std::time::Duration;

/// How often [`watch`] checks the agent's OOM score adjustment and dumpability when the sandbox could
/// change the first.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(250);
/// The same when the agent's `/proc` files are not the sandbox's to write ([`proc_files_owned_by_host`]).
pub const OWNED_WATCH_INTERVAL: Duration = Duration::from_secs(5);

const OOM_SCORE_ADJ: &str = "/proc/self/oom_score_adj";

/// Whether the agent is a sandbox's init and so guards itself.
pub fn active() -> bool {
    std::process::id() == 1
}

/// Makes the agent non-dumpable. Returns its OOM score adjustment to keep, for [`watch`].
pub fn protect() -> Option<i32> {
    if !active() {
        return None;
    }
    set_non_dumpable();
    read_oom_score_adj()
}

fn set_non_dumpable() {
    // SAFETY: prctl(PR_SET_DUMPABLE) takes integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        tracing::error!(
            error = %std::io::Error::last_os_error(),
            "cannot make the agent non-dumpable: processes in the sandbox may be able to ptrace it"
        );
    }
}

/// Whether the agent's `/proc/self` files belong to a user the sandbox cannot act for (their owner is not
/// the agent's own uid: the overflow uid, since the host's root is not mapped in the sandbox).
pub fn proc_files_owned_by_host() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(OOM_SCORE_ADJ).is_ok_and(|m| m.uid() != nix::unistd::geteuid().as_raw())
}

fn read_oom_score_adj() -> Option<i32> {
    std::fs::read_to_string(OOM_SCORE_ADJ)
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// At most one log line per `every` for something a process in the sandbox can repeat at will, so that
/// it cannot push everything else out of the agent's capped log.
#[derive(Debug)]
pub struct RateLimit {
    every: Duration,
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl RateLimit {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(how many were suppressed since the last line)` when a line may be written now.
    pub fn allow(&mut self) -> Option<u64> {
        let now = std::time::Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < self.every)
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Puts back the agent's OOM score adjustment (`keep`) whenever something in the sandbox changed it,
/// and its non-dumpability should a credential change have reset it (`fs.suid_dumpable = 1` hosts).
/// Runs for ever; spawn it.
pub async fn watch(keep: i32) {
    let every = if proc_files_owned_by_host() {
        tracing::info!("the agent's /proc files are not the sandbox's to write: checked every 5 s");
        OWNED_WATCH_INTERVAL
    } else {
        WATCH_INTERVAL
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut quiet = RateLimit::new(Duration::from_secs(60));
    loop {
        tick.tick().await;
        if let Some(now) = read_oom_score_adj().filter(|v| *v != keep) {
            let restored = std::fs::write(OOM_SCORE_ADJ, keep.to_string());
            if let Some(suppressed) = quiet.allow() {
                match restored {
                    Ok(()) => tracing::warn!(
                        found = now,
                        restored = keep,
                        suppressed,
                        "something in the sandbox changed the agent's oom_score_adj: restored"
                    ),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot restore the agent's oom_score_adj");
                    }
                }
            }
        }
        // SAFETY: prctl(PR_GET_DUMPABLE) takes integer arguments only.
        if unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) } != 0 {
            set_non_dumpable();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_lets_one_line_through_per_period_and_counts_the_rest() {
        let mut r = RateLimit::new(Duration::from_secs(3600));
        assert_eq!(r.allow(), Some(0));
        assert_eq!(r.allow(), None);
        assert_eq!(r.allow(), None);
        r.last = Some(
            std::time::Instant::now()
                .checked_sub(Duration::from_secs(3601))
                .unwrap(),
        );
        assert_eq!(r.allow(), Some(2));
    }
}
