//! Spawn (clone and exec) of one user process, done so that nothing can go silently wrong.
//!
//! Everything the child needs (C strings, fds, ids, limits) is prepared before the child is cloned; after
//! it the child makes only async-signal-safe system calls and never allocates, because the agent is
//! multi-threaded and another thread may hold the allocator's lock at that moment. The child shares the
//! agent's memory until it execs (`CLONE_VM | CLONE_VFORK`, as `posix_spawn`), see `child_main`. If a step fails, the child
//! writes `[step, errno]` to a close-on-exec pipe and exits; a successful `execve` closes the pipe, so the
//! parent reads either EOF (started) or the exact step and errno that failed ("bad cwd", "no such file").
//!
//! Every child calls `setsid`, so it leads its own session and process group: a signal sent to the group
//! reaches every descendant that did not deliberately leave it.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use sandpit_types::{RlimitResource, TtySize};

/// Where the child's stdin comes from.
#[derive(Debug)]
pub enum StdinSource {
    Null,
    /// A pipe; the parent keeps the write end.
    Pipe,
}

/// `CAP_SYS_PTRACE` (`linux/capability.h`).
const CAP_SYS_PTRACE: libc::c_ulong = 19;

/// A fully prepared process, ready to spawn.
#[derive(Debug)]
pub struct Prepared {
    pub program: CString,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    pub cwd: CString,
    /// `(uid, gid, supplementary groups)` to switch to, or `None` to keep the agent's identity.
    pub ids: Option<(u32, u32, Vec<libc::gid_t>)>,
    pub rlimits: Vec<(RlimitResource, u64, u64)>,
    pub stdin: StdinSource,
    pub tty: Option<TtySize>,
    /// A `cgroup.procs` file the child moves itself into before anything else.
    pub cgroup_procs: Option<CString>,
    /// An inherited, host-opened `cgroup.procs` descriptor the child writes itself into first: how it
    /// leaves the agent's cgroup for the delegated subtree `cgroup_procs` is in (see `--cgroup-entry-fd`).
    pub cgroup_entry: Vec<std::os::fd::RawFd>,
}

/// The parent's ends of a started child.
#[derive(Debug)]
pub struct Spawned {
    pub pid: i32,
    /// Write end of the stdin pipe, or a duplicate of the PTY master.
    pub stdin: Option<OwnedFd>,
    /// Read end of stdout (or the PTY master).
    pub stdout: OwnedFd,
    /// Read end of stderr; `None` with a PTY.
    pub stderr: Option<OwnedFd>,
    /// The PTY master, kept for resizing.
    pub pty: Option<OwnedFd>,
}

/// The step of the child's set-up that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Step {
    Cgroup = 1,
    Session = 2,
    Terminal = 3,
    Stdio = 4,
    Rlimit = 5,
    Groups = 6,
    Gid = 7,
    Uid = 8,
    Cwd = 9,
    Exec = 10,
    Signals = 11,
    Guard = 12,
}

impl Step {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Cgroup,
            2 => Self::Session,
            3 => Self::Terminal,
            4 => Self::Stdio,
            5 => Self::Rlimit,
            6 => Self::Groups,
            7 => Self::Gid,
            8 => Self::Uid,
            9 => Self::Cwd,
            10 => Self::Exec,
            11 => Self::Signals,
            12 => Self::Guard,
            _ => return None,
        })
    }
}

/// Why a process did not start.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot prepare the process: {0}")]
    Setup(#[source] std::io::Error),
    #[error("{}", describe(*.step, *.errno, program, cwd))]
    Child {
        step: Step,
        errno: i32,
        program: String,
        cwd: String,
    },
}

fn describe(step: Step, errno: i32, program: &str, cwd: &str) -> String {
    let err = std::io::Error::from_raw_os_error(errno);
    match step {
        Step::Exec => format!("cannot execute {program}: {err}"),
        Step::Cwd => format!("cannot change directory to {cwd}: {err}"),
        Step::Cgroup => format!("cannot join the process cgroup: {err}"),
        Step::Session => format!("cannot create a session: {err}"),
        Step::Terminal => format!("cannot set up the terminal: {err}"),
        Step::Stdio => format!("cannot set up stdin/stdout/stderr: {err}"),
        Step::Rlimit => format!("cannot apply rlimits: {err}"),
        Step::Groups | Step::Gid | Step::Uid => format!("cannot switch user: {err}"),
        Step::Signals => format!("cannot reset signal handling: {err}"),
        Step::Guard => format!("cannot drop CAP_SYS_PTRACE for the process: {err}"),
    }
}

fn resource(r: RlimitResource) -> libc::__rlimit_resource_t {
    match r {
        RlimitResource::Cpu => libc::RLIMIT_CPU,
        RlimitResource::Fsize => libc::RLIMIT_FSIZE,
        RlimitResource::Data => libc::RLIMIT_DATA,
        RlimitResource::Stack => libc::RLIMIT_STACK,
        RlimitResource::Core => libc::RLIMIT_CORE,
        RlimitResource::Rss => libc::RLIMIT_RSS,
        RlimitResource::Nproc => libc::RLIMIT_NPROC,
        RlimitResource::Nofile => libc::RLIMIT_NOFILE,
        RlimitResource::Memlock => libc::RLIMIT_MEMLOCK,
        RlimitResource::As => libc::RLIMIT_AS,
        RlimitResource::Locks => libc::RLIMIT_LOCKS,
        RlimitResource::Sigpending => libc::RLIMIT_SIGPENDING,
        RlimitResource::Msgqueue => libc::RLIMIT_MSGQUEUE,
        RlimitResource::Nice => libc::RLIMIT_NICE,
        RlimitResource::Rtprio => libc::RLIMIT_RTPRIO,
        RlimitResource::Rttime => libc::RLIMIT_RTTIME,
    }
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` is a valid two-element array for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn open_pty(size: TtySize) -> std::io::Result<(OwnedFd, OwnedFd)> {
    let ws = nix::pty::Winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&ws), None).map_err(std::io::Error::from)?;
    for fd in [&pty.master, &pty.slave] {
        nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .map_err(std::io::Error::from)?;
    }
    Ok((pty.master, pty.slave))
}

/// Sets `O_NONBLOCK` so the fd can be driven by the async runtime.
pub fn set_nonblocking(fd: &OwnedFd) -> std::io::Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags =
        OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL).map_err(std::io::Error::from)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).map_err(std::io::Error::from)?;
    Ok(())
}

/// Spawns `p` (clone and exec). Blocks until the child has exec'd or failed (milliseconds), so call it from a
/// blocking context.
#[allow(clippy::too_many_lines)] // one linear sequence: prepare, clone, report; splitting it hides the order
pub fn spawn(p: &Prepared) -> Result<Spawned, SpawnError> {
    let setup = SpawnError::Setup;
    let (err_r, err_w) = pipe().map_err(setup)?;

    // Parent and child ends of stdio, all close-on-exec until dup2 puts them on 0/1/2.
    let mut parent_stdin = None;
    let (child_in, child_out, child_err, parent_out, parent_err, pty_master);
    if let Some(size) = p.tty {
        let (master, slave) = open_pty(size).map_err(setup)?;
        let m_in = master.try_clone().map_err(setup)?;
        let m_out = master.try_clone().map_err(setup)?;
        parent_stdin = Some(m_in);
        child_in = slave.try_clone().map_err(setup)?;
        child_out = slave.try_clone().map_err(setup)?;
        child_err = slave;
        parent_out = m_out;
        parent_err = None;
        pty_master = Some(master);
    } else {
        child_in = match p.stdin {
            StdinSource::Null => {
                let f = std::fs::File::open("/dev/null").map_err(setup)?;
                OwnedFd::from(f)
            }
            StdinSource::Pipe => {
                let (r, w) = pipe().map_err(setup)?;
                parent_stdin = Some(w);
                r
            }
        };
        let (out_r, out_w) = pipe().map_err(setup)?;
        let (err_rr, err_ww) = pipe().map_err(setup)?;
        // A larger pipe means fewer wake-ups for chatty processes; the default is fine if refused.
        for fd in [&out_r, &err_rr] {
            // SAFETY: F_SETPIPE_SZ on a pipe fd we own; failure is harmless and ignored.
            unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
        }
        child_out = out_w;
        child_err = err_ww;
        parent_out = out_r;
        parent_err = Some(err_rr);
        pty_master = None;
    }

    // Raw pointer arrays for execve, built before the clone.
    let mut argv_ptrs: Vec<*const libc::c_char> = p.argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut envp_ptrs: Vec<*const libc::c_char> = p.envp.iter().map(|a| a.as_ptr()).collect();
    envp_ptrs.push(std::ptr::null());
    let limits: Vec<(libc::__rlimit_resource_t, libc::rlimit)> = p
        .rlimits
        .iter()
        .map(|&(r, soft, hard)| {
            (
                resource(r),
                libc::rlimit {
                    rlim_cur: soft,
                    rlim_max: hard,
                },
            )
        })
        .collect();
    let fds = ChildFds {
        stdin: child_in.as_raw_fd(),
        stdout: child_out.as_raw_fd(),
        stderr: child_err.as_raw_fd(),
        err_pipe: err_w.as_raw_fd(),
    };

    // As a sandbox's PID 1, keep the agent out of reach of what it starts (see `child_main`).
    let guard = crate::guard::active();
    // Block every signal across the clone: until the child has reset its dispositions, a signal would
    // run the agent's inherited handlers (tokio's) in the child, which write to fds shared with us.
    let mut all: libc::sigset_t = unsafe_zeroed_sigset();
    let mut old: libc::sigset_t = unsafe_zeroed_sigset();
    // SAFETY: both sets are live locals; sigfillset and pthread_sigmask only write into them.
    unsafe {
        libc::sigfillset(&raw mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &raw const all, &raw mut old);
    }
    let args = ChildArgs {
        p,
        fds: &fds,
        argv: &argv_ptrs,
        envp: &envp_ptrs,
        limits: &limits,
        guard,
    };
    // The child's own stack; it shares everything else with this thread, which the kernel suspends
    // until the child has exec'd or exited (`CLONE_VFORK`), so all of the above stays alive and
    // unchanged for it. 16-byte aligned, as the ABI wants.
    let mut stack: Vec<u8> = Vec::with_capacity(CHILD_STACK);
    let top = (stack.as_mut_ptr() as usize + CHILD_STACK) & !15;
    // SAFETY: `child_entry` runs on its own stack (`top`, inside a live allocation of CHILD_STACK bytes)
    // with `args`, which outlives the child's use of it: with CLONE_VFORK this call returns only once
    // the child has exec'd or exited. The child only makes async-signal-safe calls (and raw syscalls
    // where glibc would consult its thread list, see `child_main`) on data prepared above.
    let pid = unsafe {
        libc::clone(
            child_entry,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&raw const args).cast_mut().cast(),
        )
    };
    drop(stack);
    // SAFETY: restores this thread's previous mask from a live local.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &raw const old, std::ptr::null_mut()) };
    if pid < 0 {
        return Err(setup(std::io::Error::last_os_error()));
    }

    drop((child_in, child_out, child_err, err_w));
    let mut report = [0u8; 5];
    let mut got = 0;
    while got < report.len() {
        match nix::unistd::read(&err_r, &mut report[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(setup(e.into())),
        }
    }
    if got == 0 {
        return Ok(Spawned {
            pid,
            stdin: parent_stdin,
            stdout: parent_out,
            stderr: parent_err,
            pty: pty_master,
        });
    }
    // The child failed before exec and has exited (or is about to); the reaper collects it.
    let step = Step::from_u8(report[0]).unwrap_or(Step::Exec);
    let errno = i32::from_le_bytes([report[1], report[2], report[3], report[4]]);
    Err(SpawnError::Child {
        step,
        errno,
        program: p.program.to_string_lossy().into_owned(),
        cwd: p.cwd.to_string_lossy().into_owned(),
    })
}

/// Stack of the child between `clone` and `execve` (it needs little: no allocation, a few locals), small
/// enough to come from the heap rather than a fresh mapping.
const CHILD_STACK: usize = 64 << 10;

/// What `child_entry` needs, behind the one pointer `clone` passes.
struct ChildArgs<'a> {
    p: &'a Prepared,
    fds: &'a ChildFds,
    argv: &'a [*const libc::c_char],
    envp: &'a [*const libc::c_char],
    limits: &'a [(libc::__rlimit_resource_t, libc::rlimit)],
    guard: bool,
}

extern "C" fn child_entry(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `ChildArgs` that `spawn` keeps alive until this child has exec'd or exited;
    // this is the new child, which `child_main` never returns from.
    unsafe {
        let a = &*arg.cast::<ChildArgs<'_>>();
        child_main(a.p, a.fds, a.argv, a.envp, a.limits, a.guard)
    }
}

fn unsafe_zeroed_sigset() -> libc::sigset_t {
    // SAFETY: sigset_t is a plain bit array for which all-zeroes is a valid (empty) value.
    unsafe { std::mem::zeroed() }
}

struct ChildFds {
    stdin: RawFd,
    stdout: RawFd,
    stderr: RawFd,
    err_pipe: RawFd,
}

/// Reports `step` and the current errno on the error pipe and exits.
///
/// # Safety
/// Only to be called in the cloned child.
unsafe fn fail(fds: &ChildFds, step: Step) -> ! {
    // SAFETY: __errno_location is always valid for the calling thread.
    let errno = unsafe { *libc::__errno_location() };
    let e = errno.to_le_bytes();
    let msg = [step as u8, e[0], e[1], e[2], e[3]];
    // SAFETY: writing a stack buffer to an fd we own; then exiting without running atexit handlers.
    unsafe {
        libc::write(fds.err_pipe, msg.as_ptr().cast(), msg.len());
        libc::_exit(127)
    }
}

/// The child side of the spawn: set up, then exec. Never returns.
///
/// The child is a `clone(CLONE_VM | CLONE_VFORK)` of the agent (what `posix_spawn` does): no page tables
/// to copy and no copy-on-write faults afterwards in the agent, whatever its size. It shares the agent's
/// memory until `execve`, so it writes nothing but its own stack, makes only async-signal-safe calls, and
/// changes its ids with raw system calls. Signal dispositions are its own (no `CLONE_SIGHAND`).
///
/// # Safety
/// Only to be called in the cloned child; all pointers must come from live `CString`s.
unsafe fn child_main(
    p: &Prepared,
    fds: &ChildFds,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    limits: &[(libc::__rlimit_resource_t, libc::rlimit)],
    guard: bool,
) -> ! {
    // SAFETY: every call below is async-signal-safe and works only on memory prepared before the
    // clone; this runs in the new child, which never returns from this function.
    unsafe {
        for &entry in &p.cgroup_entry {
            if libc::write(entry, b"0".as_ptr().cast(), 1) != 1 {
                fail(fds, Step::Cgroup);
            }
        }
        if let Some(path) = &p.cgroup_procs {
            let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                fail(fds, Step::Cgroup);
            }
            libc::close(fd);
        }
        // All signals are blocked (see `spawn`). Reset every disposition first, then unblock: the
        // Rust runtime ignores SIGPIPE and tokio has handlers, and while handlers reset on exec,
        // "ignored" and the mask would be inherited by the user's program.
        for sig in 1..=64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&raw mut set);
        if libc::sigprocmask(libc::SIG_SETMASK, &raw const set, std::ptr::null_mut()) != 0 {
            fail(fds, Step::Signals);
        }
        if libc::setsid() < 0 {
            fail(fds, Step::Session);
        }
        if p.tty.is_some() && libc::ioctl(fds.stdout, libc::TIOCSCTTY, 0) != 0 {
            fail(fds, Step::Terminal);
        }
        // The agent is non-dumpable (`crate::guard`): only CAP_SYS_PTRACE in the sandbox's user namespace
        // would let a process ptrace it, read or write its memory (`/proc/1/mem`, `process_vm_*`), take
        // its descriptors (`pidfd_getfd`, `/proc/1/fd`). Out of the bounding set, no process started
        // here — root, setuid programs, their children — can ever hold it. Ptracing one's own
        // (dumpable, same-user) processes needs no capability: gdb and strace still work.
        if guard && libc::prctl(libc::PR_CAPBSET_DROP, CAP_SYS_PTRACE, 0, 0, 0) != 0 {
            fail(fds, Step::Guard);
        }
        for (src, dst) in [(fds.stdin, 0), (fds.stdout, 1), (fds.stderr, 2)] {
            if libc::dup2(src, dst) < 0 {
                fail(fds, Step::Stdio);
            }
        }
        for (res, lim) in limits {
            if libc::setrlimit(*res, lim) != 0 {
                fail(fds, Step::Rlimit);
            }
        }
        if let Some((uid, gid, groups)) = &p.ids {
            // The pipes (and a PTY's slave) were made by the agent, as root: hand them to the user, so
            // that reopening them works (`echo hi > /dev/stderr` opens /proc/self/fd/2 again, which checks
            // the pipe's owner and mode). Nothing else (e.g. /dev/null for stdin) is touched.
            for fd in 0..3 {
                let mut st: libc::stat = std::mem::zeroed();
                if libc::fstat(fd, &raw mut st) != 0 {
                    continue;
                }
                let kind = st.st_mode & libc::S_IFMT;
                let pty_slave =
                    kind == libc::S_IFCHR && (136..=143).contains(&libc::major(st.st_rdev));
                if kind == libc::S_IFIFO || kind == libc::S_IFSOCK || pty_slave {
                    // Best effort: a failure leaves the old owner, as before.
                    let _ = libc::fchown(fd, *uid, *gid);
                }
            }
            // Raw system calls: glibc's wrappers would change the ids of every thread it believes the
            // process has, and this child shares memory (and so glibc's thread list) with the agent.
            if libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) != 0 {
                fail(fds, Step::Groups);
            }
            if libc::syscall(libc::SYS_setgid, *gid) != 0 {
                fail(fds, Step::Gid);
            }
            if libc::syscall(libc::SYS_setuid, *uid) != 0 {
                fail(fds, Step::Uid);
            }
        }
        if libc::chdir(p.cwd.as_ptr()) != 0 {
            fail(fds, Step::Cwd);
        }
        libc::execve(p.program.as_ptr(), argv.as_ptr(), envp.as_ptr());
        fail(fds, Step::Exec)
    }
}

/// Makes `fd` non-blocking and registers it with the tokio reactor.
pub fn async_fd(fd: OwnedFd) -> std::io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    set_nonblocking(&fd)?;
    // SAFETY: `OwnedFd` owns an open descriptor, keeps it open until dropped (which drops the AsyncFd
    // first), and always returns the same number from `as_raw_fd`.
    unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(std::io::Error::from)
}
