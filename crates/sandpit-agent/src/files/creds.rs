//! Per-thread file-system identity: run a closure as the requesting user.
//!
//! glibc's `setuid`/`setgid`/`setgroups` change the credentials of *every* thread of the process (they
//! broadcast a signal to make that so), which in a multi-threaded agent would briefly turn every other
//! request, and every process spawned meanwhile, into that user. The raw system calls act on the calling
//! thread only, so [`as_user`] uses them: `setgroups`, `setfsgid` and `setfsuid` via `libc::syscall`.
//! When the fs uid goes from 0 to another user the kernel also clears the file capabilities
//! (`CAP_DAC_OVERRIDE`, `CAP_DAC_READ_SEARCH`, `CAP_FOWNER`, `CAP_FSETID`, `CAP_CHOWN`, `CAP_MKNOD`, …)
//! from the thread's effective set, and restores them when it goes back to 0: a request as `user` gets
//! exactly `user`'s access, one as `root` gets root's. The identity is restored before the closure's
//! thread does anything else, even when the closure panics.

use std::cell::Cell;

/// Who a file request acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the primary group included).
    pub groups: Vec<u32>,
    pub home: String,
}

thread_local! {
    /// Whether this thread currently runs as someone else (nesting is a bug).
    static SWITCHED: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with the thread's fs uid, fs gid and supplementary groups set to `who`'s, then restores
/// the agent's own. `switch` false runs `f` unchanged (the agent already is `who`, or is not root and
/// cannot switch: the caller checked that).
pub fn as_user<R>(who: &Identity, switch: bool, f: impl FnOnce() -> R) -> std::io::Result<R> {
    if !switch {
        return Ok(f());
    }
    assert!(
        !SWITCHED.with(Cell::get),
        "nested identity switch on one thread"
    );
    let saved = Saved::capture()?;
    let guard = Restore(saved);
    // Groups first: changing them needs CAP_SETGID, which a non-zero fs uid does not clear, but keeping
    // the order "least privilege last" is the habit that stays right.
    set_groups(&who.groups)?;
    set_fsgid(who.gid)?;
    set_fsuid(who.uid)?;
    SWITCHED.with(|s| s.set(true));
    let r = f();
    drop(guard);
    Ok(r)
}

struct Saved {
    fsuid: u32,
    fsgid: u32,
    groups: Vec<u32>,
}

impl Saved {
    fn capture() -> std::io::Result<Self> {
        let n = nix::unistd::getgroups().map_err(std::io::Error::from)?;
        Ok(Self {
            fsuid: current_fsuid(),
            fsgid: current_fsgid(),
            groups: n.into_iter().map(nix::unistd::Gid::as_raw).collect(),
        })
    }
}

/// Puts the thread's identity back; aborts the agent if it cannot, because a thread left running as
/// another user would serve later requests with the wrong rights.
struct Restore(Saved);

impl Drop for Restore {
    fn drop(&mut self) {
        let ok = set_fsuid(self.0.fsuid).is_ok()
            && set_fsgid(self.0.fsgid).is_ok()
            && set_groups(&self.0.groups).is_ok();
        if !ok {
            tracing::error!("cannot restore the agent's identity after a file request: aborting");
            std::process::abort();
        }
        SWITCHED.with(|s| s.set(false));
    }
}

fn set_groups(groups: &[u32]) -> std::io::Result<()> {
    // SAFETY: the raw setgroups system call reads `len` gids from a valid slice; it changes only the
    // calling thread's credentials (unlike glibc's wrapper).
    let r = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `setfsuid` returns the previous value and never an error: success is checked by reading it back.
fn set_fsuid(uid: u32) -> std::io::Result<()> {
    // SAFETY: setfsuid takes a plain integer and affects only the calling thread.
    unsafe { libc::syscall(libc::SYS_setfsuid, uid) };
    if current_fsuid() == uid {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(libc::EPERM))
    }
}

fn set_fsgid(gid: u32) -> std::io::Result<()> {
    // SAFETY: as for setfsuid.
    unsafe { libc::syscall(libc::SYS_setfsgid, gid) };
    if current_fsgid() == gid {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(libc::EPERM))
    }
}

/// The thread's fs uid: `setfsuid(-1)` fails and returns the current value without changing it.
fn current_fsuid() -> u32 {
    // SAFETY: an invalid id changes nothing; the call only reports.
    unsafe { libc::syscall(libc::SYS_setfsuid, u32::MAX) as u32 }
}

fn current_fsgid() -> u32 {
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_setfsgid, u32::MAX) as u32 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switching_changes_only_this_thread_and_is_undone() {
        if !nix::unistd::geteuid().is_root() {
            sandpit_testkit::skip(format_args!("needs root"));
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "x").unwrap();
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let nobody = Identity {
            name: "nobody".into(),
            uid: 65534,
            gid: 65534,
            groups: vec![65534],
            home: "/".into(),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let theirs = secret.clone();
        let other = std::thread::spawn(move || {
            // Another thread reads while this one is switched: it keeps root's rights.
            rx.recv().unwrap();
            let ok = std::fs::read(&theirs).is_ok();
            done_tx.send(()).unwrap();
            ok
        });
        let denied = as_user(&nobody, true, || {
            tx.send(()).unwrap();
            done_rx.recv().unwrap();
            let r = std::fs::read(&secret);
            (r.is_err(), current_fsuid())
        })
        .unwrap();
        assert_eq!(denied, (true, 65534));
        assert!(other.join().unwrap());
        assert_eq!(current_fsuid(), 0);
        assert!(std::fs::read(&secret).is_ok(), "root's rights came back");
        // A file created as the user is the user's.
        let made = dir.path().join("made");
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        as_user(&nobody, true, || std::fs::write(&made, "y").unwrap()).unwrap();
        let meta = std::fs::metadata(&made).unwrap();
        assert_eq!(
            std::os::unix::fs::MetadataExt::uid(&meta),
            65534,
            "owned by the user"
        );
    }
}
