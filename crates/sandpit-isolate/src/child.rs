//! The sandbox's first process between `clone(2)` and `execve(2)`.
//!
//! The daemon is a multi-threaded tokio process, and the child shares its memory until `execve`
//! ([`spawn`], [`crate::nolibc`]), so it must not take the allocator's (or any other) lock nor write
//! anything but its own stack. Everything the child needs — paths, argv, envp, the mount steps, the
//! compiled seccomp programs — is therefore prepared by the parent in a [`Plan`], and the child only
//! issues raw system calls on that read-only data: no allocation, no panics, no std I/O, no libc
//! wrappers (they write `errno`). A failure is reported as two integers (stage, errno) on a
//! close-on-exec pipe; end-of-file on that pipe means `execve` succeeded (or the child died).
//!
//! This replaces a re-exec'd helper binary: `clone` from the daemon costs well under a
//! millisecond, and nothing has to be wired into the CLI.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::nolibc;

use crate::seccomp::BpfProgram;

/// One filesystem operation done inside the new mount namespace, before `pivot_root`. Target
/// paths are relative to the new root (the child's working directory at that point); sources are
/// host paths. (Descriptors opened by the parent cannot serve as sources or targets: they name
/// mounts of the host's mount namespace, which the kernel refuses to mix with the child's.)
#[derive(Debug)]
pub(crate) enum Step {
    /// `mkdir`, tolerating an existing entry.
    Mkdir { path: CString, mode: u32 },
    /// Creates an empty file (a bind-mount target), tolerating an existing one.
    Touch { path: CString },
    /// `symlink`, tolerating an existing entry.
    Symlink { target: CString, link: CString },
    /// `mount(2)`.
    Mount {
        src: Option<CString>,
        target: CString,
        fstype: Option<CString>,
        flags: libc::c_ulong,
        data: Option<CString>,
    },
    /// `mount_setattr` on one mount (only adds flags, so it works on locked bind mounts).
    SetAttr { path: CString, attrs: u64 },
}

impl Step {
    pub(crate) fn describe(&self) -> String {
        let s = |c: &CString| c.to_string_lossy().into_owned();
        match self {
            Step::Mkdir { path, .. } => format!("mkdir {}", s(path)),
            Step::Touch { path } => format!("create {}", s(path)),
            Step::Symlink { link, .. } => format!("symlink {}", s(link)),
            Step::Mount {
                src,
                target,
                fstype,
                ..
            } => format!(
                "mount {} ({}) on {}",
                src.as_ref().map_or_else(String::new, s),
                fstype.as_ref().map_or_else(|| "bind".into(), s),
                s(target)
            ),
            Step::SetAttr { path, .. } => format!("set mount attributes of {}", s(path)),
        }
    }
}

/// Everything the child needs, prepared by the parent.
#[derive(Debug)]
pub(crate) struct Plan {
    /// Host directory the overlay gets attached to (looked up in the child's mount namespace).
    pub rootfs: CString,
    /// `steps[..early_steps]` run before switching to the sandbox's uid 0: while the child still
    /// has host uid 0 as its filesystem uid it can walk root-only host directories to reach
    /// bind-mount sources (the agent binary, the run dir).
    pub early_steps: usize,
    pub hostname: CString,
    pub steps: Vec<Step>,
    pub exec_path: CString,
    argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    envp: Vec<CString>,
    envp_ptrs: Vec<*const libc::c_char>,
    pub filters: Vec<BpfProgram>,
    /// Capabilities kept in the bounding set (bit n = capability n).
    pub keep_caps: u64,
    /// Child end of the socketpair on which the overlay mount fd arrives.
    pub sock: RawFd,
    /// The parent's end of that socketpair, which the child inherits and must close first (-1: none).
    pub parent_sock: RawFd,
    /// Write end of the close-on-exec error pipe.
    pub err_w: RawFd,
    /// Write end of the readiness pipe; becomes fd [`READY_FD`] in the init.
    pub ready_w: RawFd,
    /// Becomes the init's stdout and stderr.
    pub log_fd: RawFd,
    /// The agent's listening socket, bound by the host; becomes fd [`LISTEN_FD`] in the init.
    pub listen_fd: RawFd,
    /// The host-opened `cgroup.procs` of the sandbox's `work` cgroups; they become fds [`CGROUP_FD`],
    /// [`CGROUP_FD`] + 1, … in the init.
    pub cgroup_fds: Vec<RawFd>,
    /// The `tasks` files of the sandbox's cgroup v1 hierarchies, opened by the host: the child joins
    /// them itself by writing `0` (its own, only thread), which the kernel does without the global lock
    /// a move of another process takes (milliseconds each on a busy host).
    pub join_fds: Vec<RawFd>,
    /// The sandbox's writable layer (its tmpfs mount fd); becomes fd [`UPPER_FD`] in the init, which
    /// holds it for the sandbox's life so that the host can take it back (snapshots). -1: none.
    pub upper_fd: RawFd,
    /// Volumes to mount once inside the new root: their mount fds arrive after the rootfs's, in
    /// this order.
    pub volumes: Vec<VolumePlan>,
    /// `eth0`'s addresses when the sandbox has a network link (the host created the veth before
    /// sending the rootfs): the sandbox's own /32 and its gateway, in network byte order.
    pub net: Option<ChildNet>,
}

/// Where one volume goes: the directories to make on the way (each an absolute path in the new
/// root, outermost first; they may exist) and the mount point (the last of them).
#[derive(Debug, Clone)]
pub(crate) struct VolumePlan {
    pub dirs: Vec<CString>,
}

/// Most volumes a sandbox mounts (as `sandpit_types::volumes::MAX_MOUNTS`).
pub(crate) const MAX_VOLUMES: usize = 16;

/// What the child configures on `eth0`: its address (a /32), a host route to the gateway on the link
/// and the default route through it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChildNet {
    pub addr: [u8; 4],
    pub gateway: [u8; 4],
}

/// The descriptor number on which the init finds its listening socket (`sandpit agent --listen fd:4`).
pub const LISTEN_FD: RawFd = 4;

/// The descriptor number on which the init signals readiness (one byte, then close).
pub const READY_FD: RawFd = 3;

/// The descriptor number on which the init finds the `cgroup.procs` its processes enter the delegated
/// cgroup subtree through (`sandpit agent --cgroup-entry-fd 5`).
pub const CGROUP_FD: RawFd = 5;

/// Most `cgroup.procs` descriptors an init is given.
pub const MAX_CGROUP_FDS: usize = 4;

/// The descriptor number on which the init holds the sandbox's writable layer (`sandpit agent
/// --keep-fd 9`), right after the `cgroup.procs` range.
pub const UPPER_FD: RawFd = CGROUP_FD + MAX_CGROUP_FDS as RawFd;

impl Plan {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        rootfs: CString,
        early_steps: usize,
        hostname: CString,
        steps: Vec<Step>,
        exec_path: CString,
        argv: Vec<CString>,
        envp: Vec<CString>,
        filters: Vec<BpfProgram>,
        keep_caps: u64,
        fds: [RawFd; 5],
    ) -> Self {
        let mut plan = Plan {
            rootfs,
            early_steps,
            hostname,
            steps,
            exec_path,
            argv,
            argv_ptrs: Vec::new(),
            envp,
            envp_ptrs: Vec::new(),
            filters,
            keep_caps,
            sock: fds[0],
            parent_sock: -1,
            err_w: fds[1],
            ready_w: fds[2],
            log_fd: fds[3],
            listen_fd: fds[4],
            cgroup_fds: Vec::new(),
            join_fds: Vec::new(),
            upper_fd: -1,
            volumes: Vec::new(),
            net: None,
        };
        // The CStrings' heap buffers do not move when the Vec<CString> is moved into the struct,
        // so pointers taken now stay valid for the plan's lifetime.
        plan.argv_ptrs = plan
            .argv
            .iter()
            .map(|a| a.as_ptr())
            .chain([std::ptr::null()])
            .collect();
        plan.envp_ptrs = plan
            .envp
            .iter()
            .map(|a| a.as_ptr())
            .chain([std::ptr::null()])
            .collect();
        plan
    }

    /// Human-readable name of a failure stage reported by the child.
    pub(crate) fn stage_name(&self, stage: u32) -> String {
        match stage {
            1 => "receiving the rootfs mount from the parent".into(),
            2 => "switching to uid/gid 0 of the new user namespace".into(),
            3 => "unsharing the cgroup namespace".into(),
            4 => "setsid".into(),
            5 => "making mounts private".into(),
            6 => "attaching the overlay rootfs (move_mount)".into(),
            7 => "setting the hostname".into(),
            8 => "bringing up the loopback interface".into(),
            16 => "configuring eth0 (address, routes)".into(),
            17 => "joining the sandbox's cgroups".into(),
            9 => "pivot_root into the rootfs".into(),
            10 => "detaching the old root".into(),
            11 => "dropping capabilities from the bounding set".into(),
            12 => "setting no_new_privs".into(),
            13 => "installing the seccomp filter".into(),
            14 => "setting up stdio and the ready fd".into(),
            15 => format!("executing {}", self.exec_path.to_string_lossy()),
            s if (VOLUME_BASE..VOLUME_BASE + MAX_VOLUMES as u32).contains(&s) => {
                let target = self
                    .volumes
                    .get((s - VOLUME_BASE) as usize)
                    .and_then(|v| v.dirs.last())
                    .map_or_else(String::new, |t| t.to_string_lossy().into_owned());
                format!("mounting a volume at {target}")
            }
            s if s >= STEP_BASE => self
                .steps
                .get((s - STEP_BASE) as usize)
                .map_or_else(|| format!("step {s}"), Step::describe),
            s => format!("stage {s}"),
        }
    }
}

const STEP_BASE: u32 = 100;
/// Stage numbers of the volume mounts: `VOLUME_BASE + i` for `plan.volumes[i]`.
pub(crate) const VOLUME_BASE: u32 = 300;

/// `struct clone_args` of `clone3(2)`.
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// `CLONE_INTO_CGROUP` (Linux 5.7): the child starts in the cgroup v2 directory `cgroup` names.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Clones the child with `flags` (namespace flags) and runs the plan in it. Returns the child's
/// pid in the caller's pid namespace, whether it was started inside `cgroup` (a cgroup v2
/// directory): `clone3` with `CLONE_INTO_CGROUP` puts it there at birth, which costs nothing, where
/// moving it afterwards takes the kernel's global cgroup lock (milliseconds on a busy host); on a
/// kernel without it the child is started outside and `false` says the caller must move it), and
/// the [`ChildMemory`] guard the caller must keep, with `plan`, until the child has exec'd or died.
///
/// The child shares the daemon's memory where [`nolibc::VM_CLONE`] (see there: a fork-style clone
/// of a large multi-threaded daemon cost a TLB flush on every core per copy-on-write fault after it).
pub(crate) fn spawn(
    plan: &Plan,
    flags: libc::c_int,
    cgroup: Option<RawFd>,
) -> io::Result<(i32, bool, ChildMemory)> {
    if nolibc::VM_CLONE {
        match spawn_vm(plan, flags, cgroup) {
            // No clone3 (before Linux 5.3): fork-style below.
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {}
            r => return r,
        }
    }
    let (pid, placed) = spawn_fork(plan, flags, cgroup)?;
    Ok((pid, placed, ChildMemory::own_copy()))
}

/// The child's stack when it shares the daemon's memory (it needs a few KiB: no allocation, small
/// locals); reserved, not committed, with a guard page below it.
const CHILD_STACK: usize = 256 << 10;

#[cfg(target_arch = "x86_64")]
fn spawn_vm(
    plan: &Plan,
    flags: libc::c_int,
    cgroup: Option<RawFd>,
) -> io::Result<(i32, bool, ChildMemory)> {
    let page = 4096;
    // SAFETY: a fresh private anonymous mapping; nothing else refers to it.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            CHILD_STACK + page,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // No child uses the stack until a clone succeeds (any error before that just unmaps it).
    let mut mem = ChildMemory {
        stack: Some((base as usize, CHILD_STACK + page)),
        pidfd: None,
        released: true,
    };
    // SAFETY: the lowest page of the mapping just made becomes the guard page.
    if unsafe { libc::mprotect(base, page, libc::PROT_NONE) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // Block every signal across the clone: until the child has reset its dispositions, a signal would
    // run the daemon's handlers (tokio's) in the child, on the daemon's memory.
    // SAFETY: sigset_t is plain data (all zero is a valid empty set).
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: both sets are live locals; sigfillset and pthread_sigmask only write into them.
    unsafe {
        libc::sigfillset(&raw mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &raw const all, &raw mut old);
    }
    let mut pidfd: RawFd = -1;
    let mut try_clone = |into_cgroup: Option<RawFd>| {
        let mut args = CloneArgs {
            flags: u64::from(flags as u32)
                | libc::CLONE_VM as u64
                | libc::CLONE_PIDFD as u64
                | into_cgroup.map_or(0, |_| CLONE_INTO_CGROUP),
            pidfd: (&raw mut pidfd) as u64,
            exit_signal: libc::SIGCHLD as u64,
            stack: (base as usize + page) as u64,
            stack_size: CHILD_STACK as u64,
            cgroup: into_cgroup.map_or(0, |fd| fd as u64),
            ..CloneArgs::default()
        };
        // SAFETY: `args` is a valid `struct clone_args` whose stack is the mapping above (unused, its top
        // 16-byte aligned); `child_entry` runs the plan, which the caller keeps alive (with `mem`) until
        // the child has exec'd or died, and writes nothing but that stack (all system calls through
        // `nolibc`, signals blocked until their dispositions are reset).
        unsafe {
            nolibc::clone3_on_stack(
                (&raw mut args).cast(),
                std::mem::size_of::<CloneArgs>(),
                child_entry,
                std::ptr::from_ref::<Plan>(plan).cast(),
            )
        }
    };
    let mut r = try_clone(cgroup).map(|pid| (pid, cgroup.is_some()));
    if let (Err(e), Some(_)) = (&r, cgroup) {
        // A kernel without CLONE_INTO_CGROUP (before 5.7): born outside, moved by the caller.
        if matches!(e.raw_os_error(), Some(libc::E2BIG | libc::EINVAL)) {
            r = try_clone(None).map(|pid| (pid, false));
        }
    }
    // SAFETY: restores this thread's previous mask from a live local.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &raw const old, std::ptr::null_mut()) };
    let (pid, placed) = r?;
    mem.released = false;
    // SAFETY: clone3 with CLONE_PIDFD stored a new descriptor we now own.
    mem.pidfd = (pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pidfd) });
    Ok((pid, placed, mem))
}

#[cfg(not(target_arch = "x86_64"))]
fn spawn_vm(
    _plan: &Plan,
    _flags: libc::c_int,
    _cgroup: Option<RawFd>,
) -> io::Result<(i32, bool, ChildMemory)> {
    unreachable!("nolibc::VM_CLONE is false here")
}

/// The child's entry on its own stack.
///
/// # Safety
/// Only as the entry of a child cloned by `spawn_vm`, with a pointer to a live [`Plan`].
unsafe extern "C" fn child_entry(plan: *const libc::c_void) -> ! {
    // SAFETY: `spawn_vm` passes a pointer to the plan, which outlives the child's use of it.
    child_main(unsafe { &*plan.cast::<Plan>() })
}

/// A fork-style clone (the child gets its own copy of the address space).
fn spawn_fork(plan: &Plan, flags: libc::c_int, cgroup: Option<RawFd>) -> io::Result<(i32, bool)> {
    if let Some(fd) = cgroup {
        let mut args = CloneArgs {
            flags: u64::from(flags as u32) | CLONE_INTO_CGROUP,
            exit_signal: libc::SIGCHLD as u64,
            cgroup: fd as u64,
            ..CloneArgs::default()
        };
        // SAFETY: a fork-style clone3 (no new stack, no CLONE_VM), as below; `args` is a valid
        // `struct clone_args` of the size passed.
        let pid = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &raw mut args,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        if pid == 0 {
            child_main(plan);
        }
        if pid > 0 {
            return Ok((pid as i32, true));
        }
        let e = io::Error::last_os_error();
        if !matches!(
            e.raw_os_error(),
            Some(libc::ENOSYS | libc::E2BIG | libc::EINVAL)
        ) {
            return Err(e);
        }
    }
    // SAFETY: a fork-style clone (no new stack, no CLONE_VM): the child gets a copy of the address
    // space and runs `child_main`, which only performs async-signal-safe syscalls on data the
    // parent prepared, and never returns.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::c_ulong::from((flags | libc::SIGCHLD) as u32),
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        child_main(plan);
    }
    Ok((pid as i32, false))
}

/// What a child that shares the daemon's memory runs on: its stack mapping, and a pidfd to wait for
/// it. Keep it (and the [`Plan`]) until the child has exec'd or died, then call
/// [`ChildMemory::released`]. Dropped before that (a create that failed half-way), it kills the child
/// and waits until the child is gone before unmapping the stack, so that nothing the child still does
/// can land in memory the daemon reuses.
#[derive(Debug)]
pub(crate) struct ChildMemory {
    stack: Option<(usize, usize)>,
    pidfd: Option<OwnedFd>,
    released: bool,
}

impl ChildMemory {
    fn own_copy() -> Self {
        Self {
            stack: None,
            pidfd: None,
            released: true,
        }
    }

    /// The child has exec'd (its error pipe reached end-of-file) or exited: it uses nothing of ours.
    pub(crate) fn released(mut self) {
        self.released = true;
    }
}

impl Drop for ChildMemory {
    fn drop(&mut self) {
        if !self.released {
            let Some(pidfd) = &self.pidfd else {
                // No way to know when it is gone: keep the stack mapped for ever rather than risk it.
                return;
            };
            // SAFETY: pidfd_send_signal on a pidfd we own; poll on a local pollfd.
            unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    pidfd.as_raw_fd(),
                    libc::SIGKILL,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                );
                let mut p = libc::pollfd {
                    fd: pidfd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // A killed process exits at once unless the kernel holds it in an uninterruptible wait;
                // after 10 s, keep the stack mapped for ever rather than risk it.
                if libc::poll(&raw mut p, 1, 10_000) != 1 {
                    return;
                }
            }
        }
        if let Some((base, len)) = self.stack.take() {
            // SAFETY: unmapping the stack mapping made in `spawn_vm`, which nothing uses any more.
            unsafe { libc::munmap(base as *mut libc::c_void, len) };
        }
    }
}

/// A system call from the child (see [`nolibc`]): the kernel's result, or `-errno`.
macro_rules! sc {
    ($nr:expr $(, $a:expr)* $(,)?) => {{
        #[allow(unused_mut, unused_assignments)]
        let mut args = [0usize; 6];
        #[allow(unused_mut, unused_assignments)]
        let mut _i = 0;
        $( args[_i] = $a as usize; _i += 1; )*
        crate::nolibc::syscall($nr, args)
    }};
}
struct Fail(u32, i32);

/// `rc` from [`sc!`]: `Fail(stage, errno)` when negative.
fn check(stage: u32, rc: isize) -> Result<(), Fail> {
    if rc < 0 {
        Err(Fail(stage, -rc as i32))
    } else {
        Ok(())
    }
}

fn check_exists_ok(stage: u32, rc: isize) -> Result<(), Fail> {
    if rc < 0 && rc != -(libc::EEXIST as isize) {
        Err(Fail(stage, -rc as i32))
    } else {
        Ok(())
    }
}

fn opt_ptr(c: Option<&CString>) -> *const libc::c_char {
    c.map_or(std::ptr::null(), |c| c.as_ptr())
}

fn child_main(plan: &Plan) -> ! {
    let Err(Fail(stage, err)) = run(plan);
    let mut buf = [0u8; 8];
    buf[..4].copy_from_slice(&stage.to_ne_bytes());
    buf[4..].copy_from_slice(&err.to_ne_bytes());
    // SAFETY: write(2) and exit_group(2) as raw system calls; `buf` is a local array.
    unsafe {
        sc!(libc::SYS_write, plan.err_w, buf.as_ptr(), buf.len());
        sc!(libc::SYS_exit_group, 127);
    }
    // exit_group does not return.
    #[allow(clippy::empty_loop)]
    loop {}
}

#[repr(C)]
struct Ifreq {
    name: [u8; 16],
    flags: libc::c_short,
    pad: [u8; 22],
}

#[repr(C)]
struct IfreqAddr {
    name: [u8; 16],
    addr: libc::sockaddr_in,
    pad: [u8; 8],
}

/// The kernel's `struct rtentry` (the libc crate has none for glibc targets).
#[repr(C)]
#[allow(clippy::struct_field_names)] // the kernel's names
struct Rtentry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr_in,
    rt_gateway: libc::sockaddr_in,
    rt_genmask: libc::sockaddr_in,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

fn sin(octets: [u8; 4]) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain data; all-zero is a valid value.
    let mut a: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    a.sin_family = libc::AF_INET as libc::sa_family_t;
    a.sin_addr.s_addr = u32::from_ne_bytes(octets);
    a
}

/// Brings `eth0` up with `net`'s address and routes, with ioctls only (async-signal-safe, no
/// allocation). `s` is an `AF_INET` datagram socket in the sandbox's network namespace.
///
/// # Safety
/// Only raw syscalls on local data; `s` must be a valid socket.
unsafe fn configure_eth0(s: libc::c_int, net: &ChildNet) -> Result<(), Fail> {
    let name = *b"eth0\0\0\0\0\0\0\0\0\0\0\0\0";
    // SAFETY: ioctls with pointers to local, correctly laid-out structs on the caller's socket.
    unsafe {
        let mut ifa = IfreqAddr {
            name,
            addr: sin(net.addr),
            pad: [0; 8],
        };
        check(16, sc!(libc::SYS_ioctl, s, libc::SIOCSIFADDR, &raw mut ifa))?;
        ifa.addr = sin([255, 255, 255, 255]);
        check(
            16,
            sc!(libc::SYS_ioctl, s, libc::SIOCSIFNETMASK, &raw mut ifa),
        )?;
        let mut ifr: Ifreq = std::mem::zeroed();
        ifr.name = name;
        check(
            16,
            sc!(libc::SYS_ioctl, s, libc::SIOCGIFFLAGS, &raw mut ifr),
        )?;
        ifr.flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        check(
            16,
            sc!(libc::SYS_ioctl, s, libc::SIOCSIFFLAGS, &raw mut ifr),
        )?;
        let mut dev = name;
        let mut rt = Rtentry {
            rt_pad1: 0,
            rt_dst: sin(net.gateway),
            rt_gateway: sin([0; 4]),
            rt_genmask: sin([255, 255, 255, 255]),
            rt_flags: libc::RTF_UP | libc::RTF_HOST,
            rt_pad2: 0,
            rt_pad3: 0,
            rt_pad4: std::ptr::null_mut(),
            rt_metric: 0,
            rt_dev: dev.as_mut_ptr().cast(),
            rt_mtu: 0,
            rt_window: 0,
            rt_irtt: 0,
        };
        check(16, sc!(libc::SYS_ioctl, s, libc::SIOCADDRT, &raw mut rt))?;
        rt.rt_dst = sin([0; 4]);
        rt.rt_genmask = sin([0; 4]);
        rt.rt_gateway = sin(net.gateway);
        rt.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
        check(16, sc!(libc::SYS_ioctl, s, libc::SIOCADDRT, &raw mut rt))?;
    }
    Ok(())
}

/// The child's work; only returns on failure (success ends in `execve`).
#[allow(clippy::too_many_lines)]
fn run(plan: &Plan) -> Result<std::convert::Infallible, Fail> {
    // SAFETY: every call below is a raw syscall (or a thin async-signal-safe libc wrapper) whose
    // pointer arguments reference either the parent-prepared plan, which outlives the call, or
    // local stack buffers of the right size.
    unsafe {
        // The daemon has handlers (which must never run here, on its memory) and blocks signals; the
        // sandbox init must start clean. Every signal is blocked on entry (`spawn_vm`): reset every
        // disposition to the default first (the kernel's `struct sigaction`, all zero: SIG_DFL, no
        // flags, empty mask; 32 bytes on x86_64 and aarch64, the buffer is larger for any other), then
        // unblock (the kernel's sigset is 8 bytes on those two).
        let dfl = [0u64; 8];
        for sig in 1..65 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                sc!(libc::SYS_rt_sigaction, sig, dfl.as_ptr(), 0, 8);
            }
        }
        let none = 0u64;
        sc!(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &raw const none,
            0,
            8
        );

        // Our copy of the parent's end first: otherwise, should the parent die before sending (a
        // daemon SIGKILLed mid-create), the socket never reaches end-of-file and this child waits
        // for ever, holding a copy of every descriptor the daemon had (its listening socket and
        // its state-dir lock included, so no new daemon could start).
        if plan.parent_sock >= 0 {
            sc!(libc::SYS_close, plan.parent_sock);
        }
        // Wait for the parent: it writes our uid/gid maps, moves us into the cgroups and builds
        // the idmapped overlay, then sends the overlay's mount fd, and one per volume after it.
        let ovl_fd = recv_fd(plan.sock)?;
        let mut volume_fds = [-1 as RawFd; MAX_VOLUMES];
        for slot in volume_fds.iter_mut().take(plan.volumes.len()) {
            *slot = recv_fd(plan.sock)?;
        }

        // Into the v1 cgroups (the host put us in the v2 one); their files were opened by the host.
        for &fd in &plan.join_fds {
            let zero = b"0";
            check(17, sc!(libc::SYS_write, fd, zero.as_ptr(), zero.len()))?;
            sc!(libc::SYS_close, fd);
        }
        // Now that we are inside the sandbox cgroups, make them the root of our cgroup view.
        check(3, sc!(libc::SYS_unshare, libc::CLONE_NEWCGROUP))?;
        // Own session: terminal signals aimed at the daemon's process group never reach us.
        check(4, sc!(libc::SYS_setsid))?;
        let root = c"/";
        check(
            5,
            sc!(
                libc::SYS_mount,
                std::ptr::null::<libc::c_char>(),
                root.as_ptr(),
                std::ptr::null::<libc::c_char>(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null::<libc::c_void>(),
            ),
        )?;
        let empty = c"";
        check(
            6,
            sc!(
                libc::SYS_move_mount,
                ovl_fd,
                empty.as_ptr(),
                libc::AT_FDCWD,
                plan.rootfs.as_ptr(),
                libc::MOVE_MOUNT_F_EMPTY_PATH,
            ),
        )?;
        // The fd now names the attached overlay root: work relative to it from here on.
        check(6, sc!(libc::SYS_fchdir, ovl_fd))?;
        sc!(libc::SYS_close, ovl_fd);

        sc!(libc::SYS_umask, 0o022);
        for (i, step) in plan.steps.iter().enumerate() {
            let stage = STEP_BASE + i as u32;
            if i == plan.early_steps {
                // Become root of the new user namespace (host uid = start of our range) and drop
                // the daemon's supplementary groups; files created from here on belong to it.
                check(
                    2,
                    sc!(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()),
                )?;
                check(2, sc!(libc::SYS_setresgid, 0, 0, 0))?;
                check(2, sc!(libc::SYS_setresuid, 0, 0, 0))?;
            }
            match step {
                Step::Mkdir { path, mode } => check_exists_ok(
                    stage,
                    sc!(libc::SYS_mkdirat, libc::AT_FDCWD, path.as_ptr(), *mode),
                )?,
                Step::Touch { path } => {
                    let fd = sc!(
                        libc::SYS_openat,
                        libc::AT_FDCWD,
                        path.as_ptr(),
                        libc::O_RDONLY | libc::O_CREAT | libc::O_CLOEXEC,
                        0o644,
                    );
                    check(stage, fd)?;
                    sc!(libc::SYS_close, fd);
                }
                Step::Symlink { target, link } => check_exists_ok(
                    stage,
                    sc!(
                        libc::SYS_symlinkat,
                        target.as_ptr(),
                        libc::AT_FDCWD,
                        link.as_ptr(),
                    ),
                )?,
                Step::Mount {
                    src,
                    target,
                    fstype,
                    flags,
                    data,
                } => check(
                    stage,
                    sc!(
                        libc::SYS_mount,
                        opt_ptr(src.as_ref()),
                        target.as_ptr(),
                        opt_ptr(fstype.as_ref()),
                        *flags,
                        opt_ptr(data.as_ref()).cast::<libc::c_void>(),
                    ),
                )?,
                Step::SetAttr { path, attrs } => {
                    let mut attr = libc::mount_attr {
                        attr_set: *attrs,
                        attr_clr: 0,
                        propagation: 0,
                        userns_fd: 0,
                    };
                    check(
                        stage,
                        sc!(
                            libc::SYS_mount_setattr,
                            libc::AT_FDCWD,
                            path.as_ptr(),
                            0,
                            &raw mut attr,
                            std::mem::size_of::<libc::mount_attr>(),
                        ),
                    )?;
                }
            }
        }

        if plan.early_steps >= plan.steps.len() {
            check(
                2,
                sc!(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()),
            )?;
            check(2, sc!(libc::SYS_setresgid, 0, 0, 0))?;
            check(2, sc!(libc::SYS_setresuid, 0, 0, 0))?;
        }
        let h = plan.hostname.as_bytes();
        check(7, sc!(libc::SYS_sethostname, h.as_ptr(), h.len()))?;

        // A new network namespace starts with `lo` down.
        let s = sc!(
            libc::SYS_socket,
            libc::AF_INET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            0
        );
        check(8, s)?;
        let s = s as RawFd;
        let mut ifr: Ifreq = std::mem::zeroed();
        ifr.name[..3].copy_from_slice(b"lo\0");
        check(8, sc!(libc::SYS_ioctl, s, libc::SIOCGIFFLAGS, &raw mut ifr))?;
        ifr.flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        check(8, sc!(libc::SYS_ioctl, s, libc::SIOCSIFFLAGS, &raw mut ifr))?;

        let dot = c".";
        check(9, sc!(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()))?;
        // The old root is now stacked on the new one at "/": detach it, and with it every host path.
        check(10, sc!(libc::SYS_umount2, dot.as_ptr(), libc::MNT_DETACH))?;
        check(10, sc!(libc::SYS_chdir, root.as_ptr()))?;

        // Volumes, now that paths resolve inside the sandbox (a symlink in the rootfs cannot point
        // a mount outside it). Directories on the way are made as the sandbox's root.
        for (i, v) in plan.volumes.iter().enumerate() {
            let stage = VOLUME_BASE + i as u32;
            for d in &v.dirs {
                check_exists_ok(
                    stage,
                    sc!(libc::SYS_mkdirat, libc::AT_FDCWD, d.as_ptr(), 0o755),
                )?;
            }
            let Some(target) = v.dirs.last() else {
                continue;
            };
            check(
                stage,
                sc!(
                    libc::SYS_move_mount,
                    volume_fds[i],
                    empty.as_ptr(),
                    libc::AT_FDCWD,
                    target.as_ptr(),
                    libc::MOVE_MOUNT_F_EMPTY_PATH,
                ),
            )?;
            sc!(libc::SYS_close, volume_fds[i]);
        }

        // `eth0` last: the host makes the link while the steps above run (they need no network)
        // and says so with one message. `s` still works in the sandbox's network namespace.
        if let Some(net) = &plan.net {
            recv_go(plan.sock);
            configure_eth0(s, net)?;
        }
        sc!(libc::SYS_close, s);

        for cap in 0..64u64 {
            if plan.keep_caps & (1 << cap) == 0 {
                let rc = sc!(libc::SYS_prctl, libc::PR_CAPBSET_DROP, cap);
                // EINVAL: past the last capability this kernel knows.
                if rc == -(libc::EINVAL as isize) {
                    break;
                }
                check(11, rc)?;
            }
        }
        check(
            11,
            sc!(
                libc::SYS_prctl,
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL
            ),
        )?;
        check(12, sc!(libc::SYS_prctl, libc::PR_SET_NO_NEW_PRIVS, 1))?;
        for f in &plan.filters {
            let prog = libc::sock_fprog {
                len: f.len() as libc::c_ushort,
                // sock_filter (from seccompiler) is #[repr(C)] with the kernel's layout.
                filter: f.as_ptr().cast_mut().cast::<libc::sock_filter>(),
            };
            check(
                13,
                sc!(
                    libc::SYS_prctl,
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &raw const prog
                ),
            )?;
        }

        // stdio: /dev/null in, the host-side log file out; the ready pipe on READY_FD. Move the
        // sources out of the way first so that dup2 never clobbers one with another.
        let devnull = c"/dev/null";
        let null = sc!(
            libc::SYS_openat,
            libc::AT_FDCWD,
            devnull.as_ptr(),
            libc::O_RDWR | libc::O_CLOEXEC
        );
        check(14, null)?;
        let dup_high = |fd: RawFd| sc!(libc::SYS_fcntl, fd, libc::F_DUPFD_CLOEXEC, 64);
        let log = dup_high(plan.log_fd);
        let ready = dup_high(plan.ready_w);
        let err = dup_high(plan.err_w);
        let listen = dup_high(plan.listen_fd);
        check(14, log.min(ready).min(err).min(listen))?;
        // At most a handful (v2 plus the split v1 controllers); moved above the targets like the rest.
        let mut cgroup = [-1 as RawFd; MAX_CGROUP_FDS];
        for (slot, &fd) in cgroup.iter_mut().zip(plan.cgroup_fds.iter()) {
            let rc = dup_high(fd);
            check(14, rc)?;
            *slot = rc as RawFd;
        }
        // dup3 (there is no dup2 on every architecture): sources are all >= 64, so never the target.
        let dup_to = |from: isize, to: RawFd| check(14, sc!(libc::SYS_dup3, from, to, 0));
        for (from, to) in [
            (null, 0),
            (log, 1),
            (log, 2),
            (ready, READY_FD),
            (listen, LISTEN_FD),
        ] {
            dup_to(from, to)?;
        }
        let upper = if plan.upper_fd >= 0 {
            let fd = dup_high(plan.upper_fd);
            check(14, fd)?;
            fd
        } else {
            -1
        };
        let mut keep_up_to = LISTEN_FD;
        for (i, &fd) in cgroup.iter().enumerate() {
            if fd >= 0 {
                let to = CGROUP_FD + i as RawFd;
                dup_to(fd as isize, to)?;
                keep_up_to = to;
            }
        }
        // Everything else (including descriptors other daemon threads opened without
        // O_CLOEXEC) closes on exec; the error pipe stays usable until then.
        check(
            14,
            sc!(
                libc::SYS_close_range,
                keep_up_to + 1,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            ),
        )?;
        // The writable layer last, above the cleared range (dup3 leaves the copy inheritable).
        if upper >= 0 {
            dup_to(upper, UPPER_FD)?;
        }
        let rc = sc!(
            libc::SYS_execve,
            plan.exec_path.as_ptr(),
            plan.argv_ptrs.as_ptr(),
            plan.envp_ptrs.as_ptr()
        );
        let report = [15u32.to_ne_bytes(), (-rc as i32).to_ne_bytes()];
        sc!(libc::SYS_write, err, report.as_flattened().as_ptr(), 8);
        sc!(libc::SYS_exit_group, 127);
        #[allow(clippy::empty_loop)]
        loop {}
    }
}

/// Capability numbers kept by default: what package managers and ordinary services need as root
/// inside their own user namespace (the set Docker keeps), nothing that administers the system.
pub(crate) const DEFAULT_CAPS: &[u32] = &[
    0,  // CAP_CHOWN
    1,  // CAP_DAC_OVERRIDE
    3,  // CAP_FOWNER
    4,  // CAP_FSETID
    5,  // CAP_KILL
    6,  // CAP_SETGID
    7,  // CAP_SETUID
    8,  // CAP_SETPCAP
    10, // CAP_NET_BIND_SERVICE
    13, // CAP_NET_RAW
    18, // CAP_SYS_CHROOT
    27, // CAP_MKNOD
    29, // CAP_AUDIT_WRITE
    31, // CAP_SETFCAP
];

/// Receives one descriptor (`SCM_RIGHTS`) from the parent; `Fail(1, …)` if none comes. Runs in the
/// child: no allocation.
///
/// # Safety
/// Only the raw syscalls below, on the plan's socket and a stack buffer.
unsafe fn recv_fd(sock: RawFd) -> Result<RawFd, Fail> {
    // SAFETY: all-zero msghdr/iovec are valid; the buffers live on this stack frame.
    unsafe {
        let mut byte = [0u8; 1];
        let mut iov = libc::iovec {
            iov_base: byte.as_mut_ptr().cast(),
            iov_len: 1,
        };
        let mut cbuf = [0u64; 4];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&cbuf);
        let n = sc!(
            libc::SYS_recvmsg,
            sock,
            &raw mut msg,
            libc::MSG_CMSG_CLOEXEC
        );
        if n <= 0 {
            // The parent gave up (it closed the socket): leave quietly.
            sc!(libc::SYS_exit_group, 126);
        }
        let cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        if cmsg.is_null() || (*cmsg).cmsg_type != libc::SCM_RIGHTS {
            return Err(Fail(1, libc::EPROTO));
        }
        Ok(std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast()))
    }
}

/// Waits for the parent's one-byte message that what comes next may start (the network link exists).
/// Runs in the child: no allocation.
///
/// # Safety
/// `sock` must be the child's end of the parent's socketpair.
unsafe fn recv_go(sock: RawFd) {
    let mut byte = [0u8; 1];
    // SAFETY: read(2) into a local one-byte buffer.
    let n = unsafe { sc!(libc::SYS_read, sock, byte.as_mut_ptr(), 1) };
    if n <= 0 {
        // The parent gave up (it closed the socket): leave quietly, as `recv_fd` does.
        // SAFETY: exit_group(2) does not return.
        unsafe { sc!(libc::SYS_exit_group, 126) };
    }
}

/// Converts a child failure report into a message.
pub(crate) fn decode_failure(plan: &Plan, buf: &[u8]) -> (String, io::Error) {
    let stage = u32::from_ne_bytes(buf[..4].try_into().unwrap_or_default());
    let errno = i32::from_ne_bytes(buf[4..8].try_into().unwrap_or_default());
    (plan.stage_name(stage), io::Error::from_raw_os_error(errno))
}

pub(crate) fn cstring(s: &str) -> CString {
    // Inputs are validated paths/ids/argv; an interior NUL would be replaced rather than panic.
    CString::new(s).unwrap_or_else(|_| CString::new(s.replace('\0', "")).unwrap_or_default())
}
