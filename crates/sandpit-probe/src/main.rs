//! `sandpit-probe`: the escape probe of issue 9.
//!
//! Run *inside* a sandbox (as `user` and as `root`), it tries, one after the other, the known ways out
//! of a Linux sandbox (host files, host processes, host network, mounts, kernel interfaces, devices,
//! `/proc/sys` and `/sys`, cgroupfs, setuid/file capabilities, limits, clock, CVE classics) with real
//! syscalls, and prints one JSON object per attempt and line:
//! `{"name", "category", "blocked": bool, "detail"}`.
//!
//! What "blocked" means is decided per attempt and is deliberately strict: a syscall counts as blocked
//! only for the errors that mean "not permitted" (EPERM, EACCES, ENOSYS, …), never for an error that can
//! only come *after* the permission check (EINVAL, ENOENT on a bogus argument, …), because such an error
//! proves the kernel would have let a well-formed call through. The arguments are chosen so that a call
//! that does get through changes nothing on the host (bad magic numbers, writing back the current value,
//! setting the clock to "now"). A few attempts (`kill(-1)`, `sethostname`) are allowed inside the
//! sandbox's own namespaces by design; the probe says so in `detail` and the host-side test checks that
//! the host saw no effect.
//!
//! The probe never panics on purpose: each attempt runs under `catch_unwind` and a panic is reported as
//! "not blocked" (an attempt that could not be judged is not a pass). It owns no policy: the test in
//! `crates/sandpit-server/tests/escape.rs` decides what passes.
//!
//! Arguments (all optional, `--key=value`, host facts the sandbox cannot know): `--secret=LABEL:PATH:TOKEN`
//! (repeatable; a host file whose content holds TOKEN), `--host-pid=N` and `--host-marker=S` (a host
//! process and a unique string of its command line), `--daemon-pid=N`, `--daemon-port=P`,
//! `--listener-port=P`, `--host-ip=IP`, `--abstract=NAME` (a host abstract unix socket),
//! `--other-pid=N` and `--other-marker=PATH:TOKEN` (another sandbox's init and a file inside it),
//! `--ipc-key=N` (the key of a host System V shared memory segment); `--net-*` (the sandbox's network
//! and the test hosts around it: see `net.rs`).
//! `--mode=whoami` and `--mode=child` are the probe re-executing itself (setuid and seccomp checks).

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

mod net;

/// Host facts handed in by the test.
#[derive(Debug, Default)]
struct Ctx {
    secrets: Vec<Secret>,
    host_pid: Option<i32>,
    host_marker: Option<String>,
    daemon_pid: Option<i32>,
    daemon_port: Option<u16>,
    listener_port: Option<u16>,
    host_ip: Option<String>,
    abstract_name: Option<String>,
    other_pid: Option<i32>,
    other_marker: Option<Secret>,
    ipc_key: Option<i32>,
    net: net::NetCtx,
    root: bool,
}

/// A file that must stay unreadable: found when its content contains `token`.
#[derive(Debug, Clone)]
struct Secret {
    label: String,
    path: String,
    token: String,
}

impl Secret {
    /// `LABEL:PATH:TOKEN` (PATH may contain colons; label and token may not).
    fn parse(s: &str, with_label: bool) -> Option<Self> {
        let (label, rest) = if with_label {
            s.split_once(':')?
        } else {
            ("marker", s)
        };
        let (path, token) = rest.rsplit_once(':')?;
        Some(Self {
            label: label.to_owned(),
            path: path.to_owned(),
            token: token.to_owned(),
        })
    }
}

/// What an attempt found: blocked or not, and why.
type Outcome = (bool, String);

/// Who an attempt is meaningful for: some only make sense for the unprivileged `user` (root inside a
/// sandbox owns the sandbox by design, e.g. it may signal any of its processes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Both,
    UserOnly,
    RootOnly,
}

type Attempt = (&'static str, &'static str, Who, fn(&Ctx) -> Outcome);

fn main() {
    let mut ctx = Ctx::default();
    let mut mode = String::new();
    for arg in std::env::args().skip(1) {
        let Some((k, v)) = arg.strip_prefix("--").and_then(|a| a.split_once('=')) else {
            continue;
        };
        match k {
            "secret" => ctx.secrets.extend(Secret::parse(v, true)),
            "host-pid" => ctx.host_pid = v.parse().ok(),
            "host-marker" => ctx.host_marker = Some(v.to_owned()),
            "daemon-pid" => ctx.daemon_pid = v.parse().ok(),
            "daemon-port" => ctx.daemon_port = v.parse().ok(),
            "listener-port" => ctx.listener_port = v.parse().ok(),
            "host-ip" => ctx.host_ip = Some(v.to_owned()),
            "abstract" => ctx.abstract_name = Some(v.to_owned()),
            "other-pid" => ctx.other_pid = v.parse().ok(),
            "other-marker" => ctx.other_marker = Secret::parse(v, false),
            "ipc-key" => ctx.ipc_key = v.parse().ok(),
            "mode" => v.clone_into(&mut mode),
            k => {
                ctx.net.set(k, v);
            }
        }
    }
    match mode.as_str() {
        "whoami" => return whoami(),
        "child" => std::process::exit(child_mode()),
        _ => {}
    }
    // SAFETY: geteuid has no preconditions.
    ctx.root = unsafe { libc::geteuid() } == 0;
    // Panics are reported per attempt; keep the default hook from writing to stderr for each.
    std::panic::set_hook(Box::new(|_| {}));
    for (name, category, who, f) in attempts() {
        let applies = match who {
            Who::Both => true,
            Who::UserOnly => !ctx.root,
            Who::RootOnly => ctx.root,
        };
        if !applies {
            continue;
        }
        let (blocked, detail) = std::panic::catch_unwind(AssertUnwindSafe(|| f(&ctx)))
            .unwrap_or_else(|_| (false, "the attempt panicked: could not be judged".into()));
        let line = json!({
            "name": name,
            "category": category,
            "blocked": blocked,
            "detail": detail,
            "as": if ctx.root { "root" } else { "user" },
        });
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// Every attempt, in the order they run. `kill(-1)` is last: it takes out every other process the
/// caller may signal.
#[allow(clippy::too_many_lines)] // one line per attempt: a table, not logic
fn attempts() -> Vec<Attempt> {
    vec![
        (
            "read_host_secret_files",
            "host files",
            Who::Both,
            read_host_secrets,
        ),
        (
            "read_host_root_dir",
            "host files",
            Who::Both,
            read_host_root_dir,
        ),
        ("read_state_dir", "host files", Who::Both, read_state_dir),
        (
            "read_via_proc_1_root",
            "host files",
            Who::Both,
            read_via_proc_1_root,
        ),
        (
            "read_via_daemon_proc_root",
            "host files",
            Who::Both,
            read_via_daemon_root,
        ),
        (
            "symlink_to_host_path",
            "host files",
            Who::Both,
            symlink_to_host_path,
        ),
        (
            "overlay_symlink_via_proc_root",
            "host files",
            Who::Both,
            overlay_symlink_proc_root,
        ),
        (
            "open_by_handle_at_shocker",
            "host files",
            Who::Both,
            open_by_handle_at,
        ),
        (
            "chroot_breakout_classic",
            "host files",
            Who::Both,
            chroot_breakout,
        ),
        ("leaked_host_fds", "host files", Who::Both, leaked_fds),
        (
            "agent_leaked_host_fds",
            "host files",
            Who::RootOnly,
            agent_leaked_fds,
        ),
        (
            "agent_stdio_host_file",
            "host files",
            Who::RootOnly,
            agent_stdio_host_file,
        ),
        (
            "overlay_trusted_xattr",
            "host files",
            Who::RootOnly,
            overlay_trusted_xattr,
        ),
        (
            "run_dir_host_write",
            "host files",
            Who::RootOnly,
            run_dir_write,
        ),
        (
            "other_sandbox_via_proc_root",
            "other sandboxes",
            Who::Both,
            other_sandbox,
        ),
        (
            "other_sandbox_scan_proc",
            "other sandboxes",
            Who::Both,
            other_sandbox_scan,
        ),
        (
            "see_host_processes",
            "host processes",
            Who::Both,
            see_host_processes,
        ),
        ("kill_host_pid", "host processes", Who::Both, kill_host_pid),
        (
            "ptrace_attach_host_pid",
            "host processes",
            Who::Both,
            ptrace_host_pid,
        ),
        (
            "ptrace_attach_agent",
            "sandbox agent",
            Who::Both,
            ptrace_agent,
        ),
        ("kill_agent", "sandbox agent", Who::UserOnly, kill_agent),
        (
            "ptrace_seize_agent",
            "sandbox agent",
            Who::Both,
            ptrace_seize_agent,
        ),
        (
            "pidfd_getfd_agent",
            "sandbox agent",
            Who::Both,
            pidfd_getfd_agent,
        ),
        ("proc_1_fd_open", "sandbox agent", Who::Both, proc_1_fd),
        (
            "stop_or_terminate_agent",
            "sandbox agent",
            Who::Both,
            signal_agent,
        ),
        (
            "oom_score_adj_agent",
            "sandbox agent",
            Who::Both,
            oom_score_adj_agent,
        ),
        ("rename_agent_comm", "sandbox agent", Who::Both, comm_agent),
        (
            "ptrace_own_process_still_works",
            "sandbox agent",
            Who::Both,
            ptrace_own_process,
        ),
        ("proc_1_mem_write", "sandbox agent", Who::Both, proc_1_mem),
        (
            "proc_1_environ_read",
            "sandbox agent",
            Who::Both,
            proc_1_environ,
        ),
        (
            "process_vm_readv_agent",
            "sandbox agent",
            Who::Both,
            vm_readv_agent,
        ),
        (
            "connect_agent_socket",
            "sandbox agent",
            Who::UserOnly,
            agent_socket,
        ),
        (
            "overwrite_agent_binary",
            "CVE classics",
            Who::Both,
            overwrite_agent_binary,
        ),
        (
            "overwrite_proc_1_exe",
            "CVE classics",
            Who::Both,
            overwrite_proc_1_exe,
        ),
        ("connect_daemon_port", "network", Who::Both, connect_daemon),
        (
            "connect_host_loopback_listener",
            "network",
            Who::Both,
            connect_listener,
        ),
        ("connect_host_ip", "network", Who::Both, connect_host_ip),
        (
            "connect_host_abstract_unix",
            "network",
            Who::Both,
            connect_abstract,
        ),
        ("mount_tmpfs", "mounts", Who::Both, mount_tmpfs),
        ("umount_proc", "mounts", Who::Both, umount_proc),
        ("pivot_root", "mounts", Who::Both, pivot_root),
        ("fsopen_new_mount_api", "mounts", Who::Both, fsopen),
        ("open_tree_clone", "mounts", Who::Both, open_tree),
        (
            "unshare_userns_then_mount",
            "mounts",
            Who::Both,
            unshare_userns_mount,
        ),
        (
            "unshare_each_namespace",
            "mounts",
            Who::Both,
            unshare_mountns,
        ),
        (
            "clone_and_clone3_newuser",
            "mounts",
            Who::Both,
            clone_newuser_raw,
        ),
        ("x32_abi_syscalls", "seccomp bypass", Who::Both, x32_abi),
        ("i386_int80_syscalls", "seccomp bypass", Who::Both, i386_abi),
        ("network_interfaces", "network", Who::Both, net::interfaces),
        (
            "egress_always_denied_ranges",
            "network",
            Who::Both,
            net::always_denied,
        ),
        (
            "raw_socket_forged_source",
            "network",
            Who::Both,
            net::forged_source,
        ),
        (
            "raw_syn_to_denied_hosts",
            "network",
            Who::Both,
            net::raw_syn,
        ),
        ("arp_spoof_host_side", "network", Who::Both, net::arp_spoof),
        (
            "ipv6_nd_spoof_host_side",
            "network",
            Who::Both,
            net::nd_spoof,
        ),
        ("ipv6_egress", "network", Who::Both, net::ipv6_egress),
        (
            "change_routes_addresses_firewall",
            "network",
            Who::Both,
            net::change_config,
        ),
        (
            "dns_other_server_and_resolv_conf",
            "network",
            Who::Both,
            net::other_dns_server,
        ),
        (
            "dns_etc_hosts_and_ip_literal",
            "network",
            Who::Both,
            net::hosts_and_literal,
        ),
        (
            "dns_rebinding_domain_rule",
            "network",
            Who::Both,
            net::rebinding,
        ),
        (
            "sysv_ipc_host_segment",
            "other sandboxes",
            Who::Both,
            sysv_ipc,
        ),
        ("setns_agent_mntns", "mounts", Who::Both, setns_agent),
        (
            "mount_cgroup_v1_release_agent",
            "cgroups",
            Who::Both,
            mount_cgroup_v1,
        ),
        (
            "write_own_cgroup_limits",
            "cgroups",
            Who::Both,
            write_cgroup_limits,
        ),
        (
            "move_agent_into_delegated_cgroup",
            "sandbox agent",
            Who::Both,
            move_agent_into_work,
        ),
        (
            "freeze_or_kill_the_sandbox_cgroup",
            "sandbox agent",
            Who::Both,
            freeze_sandbox_cgroup,
        ),
        (
            "join_the_agents_cgroup",
            "sandbox agent",
            Who::Both,
            join_agent_cgroup,
        ),
        (
            "leave_own_process_cgroup",
            "cgroups",
            Who::UserOnly,
            leave_process_cgroup,
        ),
        ("init_module", "kernel", Who::Both, init_module),
        ("finit_module", "kernel", Who::Both, finit_module),
        ("delete_module", "kernel", Who::Both, delete_module),
        ("kexec_load", "kernel", Who::Both, kexec_load),
        ("kexec_file_load", "kernel", Who::Both, kexec_file_load),
        ("bpf_prog_load", "kernel", Who::Both, bpf_prog_load),
        ("perf_event_open", "kernel", Who::Both, perf_event_open),
        ("userfaultfd", "kernel", Who::Both, userfaultfd),
        ("io_uring_setup", "kernel", Who::Both, io_uring_setup),
        ("keyctl_join_session", "kernel", Who::Both, keyctl),
        ("add_key", "kernel", Who::Both, add_key),
        ("syslog_read", "kernel", Who::Both, syslog_read),
        ("iopl", "kernel", Who::Both, iopl),
        ("swapon", "kernel", Who::Both, swapon),
        ("reboot", "kernel", Who::Both, reboot),
        ("acct", "kernel", Who::Both, acct),
        ("open_raw_devices", "devices", Who::Both, raw_devices),
        ("mknod_block_device", "devices", Who::Both, mknod_block),
        ("mknod_dev_mem", "devices", Who::Both, mknod_mem),
        (
            "write_proc_sys_core_pattern",
            "/proc/sys and /sys",
            Who::Both,
            core_pattern,
        ),
        (
            "write_proc_sys_modprobe",
            "/proc/sys and /sys",
            Who::Both,
            modprobe,
        ),
        (
            "open_proc_sysrq_trigger",
            "/proc/sys and /sys",
            Who::Both,
            sysrq,
        ),
        ("read_proc_kcore", "/proc/sys and /sys", Who::Both, kcore),
        ("write_sys", "/proc/sys and /sys", Who::Both, write_sys),
        ("setuid_0", "privileges", Who::UserOnly, setuid0),
        (
            "setuid_binary",
            "privileges",
            Who::UserOnly,
            run_setuid_binary,
        ),
        (
            "file_capability_binary",
            "privileges",
            Who::UserOnly,
            run_fcaps_binary,
        ),
        (
            "prepare_setuid_binaries",
            "privileges",
            Who::RootOnly,
            prepare_setuid_binaries,
        ),
        (
            "capset_sys_admin",
            "privileges",
            Who::Both,
            capset_sys_admin,
        ),
        (
            "clear_no_new_privs",
            "privileges",
            Who::Both,
            clear_no_new_privs,
        ),
        (
            "exec_without_seccomp",
            "privileges",
            Who::Both,
            exec_without_seccomp,
        ),
        ("setrlimit_raise_hard", "limits", Who::Both, setrlimit_raise),
        (
            "settimeofday",
            "host clock and name",
            Who::Both,
            settimeofday,
        ),
        (
            "clock_settime",
            "host clock and name",
            Who::Both,
            clock_settime,
        ),
        ("sethostname", "host clock and name", Who::Both, sethostname),
        (
            "kill_all_minus_one",
            "host processes",
            Who::Both,
            kill_minus_one,
        ),
    ]
}

// ---------------------------------------------------------------------------------------------------
// helpers

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn err_str(e: i32) -> String {
    let name = match e {
        libc::EPERM => "EPERM",
        libc::EACCES => "EACCES",
        libc::ENOSYS => "ENOSYS",
        libc::ENOENT => "ENOENT",
        libc::EINVAL => "EINVAL",
        libc::EROFS => "EROFS",
        libc::ETXTBSY => "ETXTBSY",
        libc::ESRCH => "ESRCH",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::EBADF => "EBADF",
        libc::EFAULT => "EFAULT",
        libc::ENXIO => "ENXIO",
        libc::ENODEV => "ENODEV",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        _ => "",
    };
    format!("{name}({e}) {}", std::io::Error::from_raw_os_error(e))
}

/// The errors that mean the kernel refused for lack of privilege (or the call is filtered out).
fn denied(e: i32) -> bool {
    matches!(e, libc::EPERM | libc::EACCES | libc::ENOSYS)
}

/// A syscall outcome judged by `denied`: blocked only when refused for privilege.
fn judge_sys(ret: libc::c_long, what: &str) -> Outcome {
    if ret >= 0 {
        return (false, format!("{what} succeeded (returned {ret})"));
    }
    let e = errno();
    (
        denied(e),
        format!(
            "{what}: {}{}",
            err_str(e),
            if denied(e) {
                ""
            } else {
                " (past the permission check)"
            }
        ),
    )
}

fn cstr(s: &str) -> CString {
    CString::new(s).unwrap_or_default()
}

/// Reads at most 1 MiB of a file.
fn read_small(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    std::fs::File::open(path)?
        .take(1 << 20)
        .read_to_end(&mut buf)?;
    Ok(buf)
}

fn contains(hay: &[u8], needle: &str) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Tries each path and says whether any of them shows `token`.
fn any_reveals(paths: &[PathBuf], token: &str) -> Outcome {
    let mut notes = Vec::new();
    for p in paths {
        match read_small(p) {
            Ok(b) if contains(&b, token) => {
                return (
                    false,
                    format!("{} is readable and holds the host secret", p.display()),
                );
            }
            Ok(b) => notes.push(format!(
                "{}: readable, {} bytes, no secret",
                p.display(),
                b.len()
            )),
            Err(e) => notes.push(format!("{}: {e}", p.display())),
        }
    }
    (true, notes.join("; "))
}

fn forked<F: FnOnce() -> i32>(f: F) -> Result<i32, String> {
    // SAFETY: the probe is single-threaded, so the child may run arbitrary code after fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", err_str(errno())));
    }
    if pid == 0 {
        let code = std::panic::catch_unwind(AssertUnwindSafe(f)).unwrap_or(99);
        // SAFETY: _exit ends the child without running the parent's atexit handlers twice.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: pid is our child; status is a valid out pointer.
    unsafe { libc::waitpid(pid, &raw mut status, 0) };
    if libc::WIFEXITED(status) {
        Ok(libc::WEXITSTATUS(status))
    } else {
        Err(format!("child ended by signal {}", libc::WTERMSIG(status)))
    }
}

fn now_timespec() -> libc::timespec {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &raw mut ts) };
    ts
}

/// Opens for writing and writes the file's current content back: a write that gets through changes
/// nothing, and its success alone proves the door is open.
fn write_back(path: &str) -> Outcome {
    let current = read_small(Path::new(path)).unwrap_or_default();
    match std::fs::OpenOptions::new().write(true).open(path) {
        Err(e) => (true, format!("open {path} for writing: {e}")),
        Ok(mut f) => match f.write_all(&current) {
            Ok(()) => (
                false,
                format!("{path} opened and written (current value written back)"),
            ),
            Err(e) => (
                e.raw_os_error().is_some_and(denied),
                format!("{path} opened for writing, write: {e}"),
            ),
        },
    }
}

// ---------------------------------------------------------------------------------------------------
// host files

fn read_host_secrets(ctx: &Ctx) -> Outcome {
    if ctx.secrets.is_empty() {
        return (false, "no --secret given: nothing tested".into());
    }
    let mut notes = Vec::new();
    for s in &ctx.secrets {
        let (ok, d) = any_reveals(&[PathBuf::from(&s.path)], &s.token);
        if !ok {
            return (false, format!("{}: {d}", s.label));
        }
        notes.push(format!("{}: {d}", s.label));
    }
    (true, notes.join("; "))
}

fn read_host_root_dir(ctx: &Ctx) -> Outcome {
    // The sandbox has its own /root; the host's must not show through. The host marker there has a
    // unique name, so listing it would prove the host directory is visible.
    let Some(s) = ctx.secrets.iter().find(|s| s.label == "root") else {
        return (false, "no --secret=root:... given".into());
    };
    let name = Path::new(&s.path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match std::fs::read_dir("/root") {
        Err(e) => (true, format!("readdir /root: {e}")),
        Ok(rd) => {
            let names: Vec<String> = rd
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            if names.contains(&name) {
                (false, format!("the host's /root is listed: {names:?}"))
            } else {
                (
                    true,
                    format!("/root is the sandbox's own ({} entries)", names.len()),
                )
            }
        }
    }
}

fn read_state_dir(ctx: &Ctx) -> Outcome {
    let Some(s) = ctx.secrets.iter().find(|s| s.label == "api-key") else {
        return (false, "no --secret=api-key:... given".into());
    };
    let Some(dir) = Path::new(&s.path).parent() else {
        return (false, "api key path has no parent".into());
    };
    match std::fs::read_dir(dir) {
        Err(e) => (true, format!("readdir {}: {e}", dir.display())),
        Ok(rd) => {
            let names: Vec<String> = rd
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            (
                !names.iter().any(|n| n == "api-key"),
                format!("{} lists {names:?}", dir.display()),
            )
        }
    }
}

fn read_via_proc_1_root(ctx: &Ctx) -> Outcome {
    let paths: Vec<PathBuf> = ctx
        .secrets
        .iter()
        .map(|s| PathBuf::from(format!("/proc/1/root{}", s.path)))
        .collect();
    check_secret_paths(ctx, &paths)
}

fn read_via_daemon_root(ctx: &Ctx) -> Outcome {
    let pids = [ctx.daemon_pid, ctx.host_pid];
    let paths: Vec<PathBuf> = pids
        .iter()
        .flatten()
        .flat_map(|pid| {
            ctx.secrets
                .iter()
                .map(move |s| PathBuf::from(format!("/proc/{pid}/root{}", s.path)))
        })
        .collect();
    if paths.is_empty() {
        return (false, "no --daemon-pid/--host-pid given".into());
    }
    check_secret_paths(ctx, &paths)
}

/// Each path is `<prefix><secret.path>`: matched back to its secret by suffix.
fn check_secret_paths(ctx: &Ctx, paths: &[PathBuf]) -> Outcome {
    if ctx.secrets.is_empty() {
        return (false, "no --secret given".into());
    }
    let mut notes = Vec::new();
    for p in paths {
        for s in ctx
            .secrets
            .iter()
            .filter(|s| p.to_string_lossy().ends_with(&s.path))
        {
            let (ok, d) = any_reveals(std::slice::from_ref(p), &s.token);
            if !ok {
                return (false, d);
            }
            notes.push(d);
        }
    }
    (true, notes.join("; "))
}

fn symlink_to_host_path(ctx: &Ctx) -> Outcome {
    let mut paths = Vec::new();
    for (i, s) in ctx.secrets.iter().enumerate() {
        let link = PathBuf::from(format!("/tmp/.probe-link-{i}"));
        let _ = std::fs::remove_file(&link);
        if let Err(e) = std::os::unix::fs::symlink(&s.path, &link) {
            return (false, format!("cannot even create a symlink in /tmp: {e}"));
        }
        paths.push((link, s.token.clone()));
    }
    if paths.is_empty() {
        return (false, "no --secret given".into());
    }
    let mut notes = Vec::new();
    for (p, t) in &paths {
        let (ok, d) = any_reveals(std::slice::from_ref(p), t);
        let _ = std::fs::remove_file(p);
        if !ok {
            return (false, d);
        }
        notes.push(d);
    }
    (true, notes.join("; "))
}

fn overlay_symlink_proc_root(ctx: &Ctx) -> Outcome {
    // A symlink on the overlay (the home directory lives there, not on /tmp's tmpfs) through
    // /proc/1/root and /proc/self/root: both must resolve inside the sandbox.
    let home = std::env::var("HOME").unwrap_or_else(|_| "/home/user".into());
    let dir = if ctx.root { "/etc".to_owned() } else { home };
    let mut notes = Vec::new();
    for (i, s) in ctx.secrets.iter().enumerate() {
        for via in ["/proc/1/root", "/proc/self/root/../../.."] {
            let link = PathBuf::from(format!("{dir}/.probe-ovl-{i}"));
            let _ = std::fs::remove_file(&link);
            if let Err(e) = std::os::unix::fs::symlink(format!("{via}{}", s.path), &link) {
                return (false, format!("cannot create a symlink in {dir}: {e}"));
            }
            let (ok, d) = any_reveals(std::slice::from_ref(&link), &s.token);
            let _ = std::fs::remove_file(&link);
            if !ok {
                return (false, d);
            }
            notes.push(d);
        }
    }
    if notes.is_empty() {
        return (false, "no --secret given".into());
    }
    (true, notes.join("; "))
}

fn open_by_handle_at(_: &Ctx) -> Outcome {
    // The "shocker" exploit: a file handle for inode 2 (a filesystem root) opened relative to any
    // mount escapes a chroot/bind mount. Needs CAP_DAC_READ_SEARCH in the initial namespace.
    #[repr(C)]
    struct Handle {
        bytes: u32,
        kind: i32,
        f: [u8; 8],
    }
    let mut h = Handle {
        bytes: 8,
        kind: 1, // FILEID_INO32_GEN
        f: [2, 0, 0, 0, 0, 0, 0, 0],
    };
    // SAFETY: a plain open of "/"; the fd is closed below.
    let root = unsafe { libc::open(c"/".as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
    // SAFETY: h is a valid file_handle of 8 payload bytes; the kernel only reads it.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            root,
            &raw mut h,
            libc::O_RDONLY,
        )
    };
    let out = judge_sys(ret, "open_by_handle_at(inode 2)");
    // SAFETY: closing fds this function opened.
    unsafe {
        if ret >= 0 {
            libc::close(ret as i32);
        }
        libc::close(root);
    }
    out
}

fn chroot_breakout(ctx: &Ctx) -> Outcome {
    // The classic: chroot into a subdirectory while keeping the cwd outside, then walk up with "..".
    // With pivot_root + a detached old root there is nothing above the sandbox's root to reach.
    let secrets = ctx.secrets.clone();
    let r = forked(move || {
        let _ = std::fs::create_dir_all("/tmp/.probe-chroot");
        // SAFETY: plain syscalls on valid C strings in the forked child.
        unsafe {
            if libc::chroot(c"/tmp/.probe-chroot".as_ptr()) != 0 {
                return if denied(errno()) { 10 } else { 11 };
            }
            for _ in 0..64 {
                libc::chdir(c"..".as_ptr());
            }
            if libc::chroot(c".".as_ptr()) != 0 {
                return 12;
            }
        }
        let found = secrets
            .iter()
            .any(|s| read_small(Path::new(&s.path)).is_ok_and(|b| contains(&b, &s.token)));
        i32::from(found)
    });
    match r {
        Ok(10) => (true, "chroot: denied".into()),
        Ok(11) => (false, "chroot failed with an unexpected error".into()),
        Ok(12) => (true, "chroot worked, chroot(\".\") after walking up failed".into()),
        Ok(0) => (
            true,
            "chroot + walk up + chroot(\".\") worked but lands in the sandbox root: no host secret visible"
                .into(),
        ),
        Ok(1) => (false, "the chroot breakout reached a host secret".into()),
        Ok(c) => (false, format!("child exited {c}")),
        Err(e) => (false, e),
    }
}

fn leaked_fds(_: &Ctx) -> Outcome {
    fds_lead_outside("self")
}

fn agent_leaked_fds(_: &Ctx) -> Outcome {
    // Root inside may open the agent's fds through /proc/1/fd: a host directory among them would be a
    // way out for root.
    fds_lead_outside("1")
}

fn agent_stdio_host_file(_: &Ctx) -> Outcome {
    // The agent's stdout/stderr are a file the host opened (its init log). Reopening it through the
    // magic link, or taking the fd with pidfd_getfd, gives root inside a writable host file.
    let mut notes = Vec::new();
    let mut open = false;
    for fd in [1, 2] {
        let link = format!("/proc/1/fd/{fd}");
        let target = std::fs::read_link(&link)
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        match std::fs::OpenOptions::new().append(true).open(&link) {
            // Only a regular file is a way to the host's disk; /dev/null, pipes and sockets are not.
            Ok(f) if f.metadata().is_ok_and(|m| m.is_file()) => {
                open = true;
                notes.push(format!(
                    "{link} ({target}) reopened for writing: a regular file"
                ));
            }
            Ok(_) => notes.push(format!("{link} ({target}) reopened: not a file, harmless")),
            Err(e) => notes.push(format!("{link} ({target}): {e}")),
        }
    }
    // SAFETY: pidfd_open of pid 1 with no flags.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, 1, 0) };
    if pidfd >= 0 {
        // SAFETY: pidfd is ours; asks for a copy of the agent's fd 1.
        let got = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd as i32, 1, 0) };
        if got >= 0 {
            // SAFETY: st is a valid out pointer.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: got is our fd.
            unsafe { libc::fstat(got as i32, &raw mut st) };
            let is_file = st.st_mode & libc::S_IFMT == libc::S_IFREG;
            // A zero-length write tests the fd is writable without changing the file.
            // SAFETY: zero bytes from a valid pointer.
            let w = unsafe { libc::write(got as i32, b"".as_ptr().cast(), 0) };
            if is_file && w == 0 {
                open = true;
            }
            notes.push(format!(
                "pidfd_getfd(agent, 1): got a {} fd, write(0) = {w}",
                if is_file { "regular-file" } else { "non-file" }
            ));
            // SAFETY: closing our fd.
            unsafe { libc::close(got as i32) };
        } else {
            notes.push(format!("pidfd_getfd(agent, 1): {}", err_str(errno())));
        }
        // SAFETY: closing our fd.
        unsafe { libc::close(pidfd as i32) };
    } else {
        notes.push(format!("pidfd_open(1): {}", err_str(errno())));
    }
    (!open, notes.join("; "))
}

fn stat_ids(fd: i32) -> Option<(u64, u64)> {
    // SAFETY: st is a valid out pointer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above; a bad fd just fails.
    (unsafe { libc::fstat(fd, &raw mut st) } == 0).then_some((st.st_dev, st.st_ino))
}

/// CVE-2024-21626 style: a directory fd that leads, by `..`, to a root other than ours walks the host
/// tree. Each directory fd of `pid` is reopened through /proc and walked up 64 levels; where it ends
/// must be our own `/`.
fn fds_lead_outside(pid: &str) -> Outcome {
    // SAFETY: valid C string; closed below.
    let root = unsafe { libc::open(c"/".as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
    let Some(root_ids) = stat_ids(root) else {
        return (false, "cannot stat /".into());
    };
    // SAFETY: closing our fd.
    unsafe { libc::close(root) };
    let rd = match std::fs::read_dir(format!("/proc/{pid}/fd")) {
        Ok(rd) => rd,
        Err(e) => return (true, format!("cannot list /proc/{pid}/fd: {e}")),
    };
    let fds: Vec<String> = rd
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let mut all = Vec::new();
    for fd in fds {
        let link = format!("/proc/{pid}/fd/{fd}");
        let target = std::fs::read_link(&link)
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        all.push(format!("{fd}->{target}"));
        let c = cstr(&link);
        // SAFETY: valid C string; only directories open with O_DIRECTORY.
        let mut dir = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
        if dir < 0 {
            continue;
        }
        for _ in 0..64 {
            // SAFETY: dir is an open directory fd.
            let up =
                unsafe { libc::openat(dir, c"..".as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
            // SAFETY: closing the previous level.
            unsafe { libc::close(dir) };
            if up < 0 {
                dir = -1;
                break;
            }
            dir = up;
        }
        let top = stat_ids(dir);
        // SAFETY: closing our fd (a -1 just fails).
        unsafe { libc::close(dir) };
        if top.is_some_and(|t| t != root_ids) {
            return (
                false,
                format!("/proc/{pid}/fd/{fd} ({target}) walks up to a root that is not ours"),
            );
        }
    }
    (true, format!("fds of {pid}: {all:?}; none leads outside /"))
}

fn overlay_trusted_xattr(_: &Ctx) -> Outcome {
    // trusted.overlay.* xattrs steer overlayfs (redirect, metacopy, opaque); the overlay is mounted by
    // the host, so setting them must need CAP_SYS_ADMIN of the initial namespace.
    let path = "/etc/.probe-xattr";
    let _ = std::fs::write(path, "x");
    let p = cstr(path);
    // SAFETY: valid C strings and a 1-byte value.
    let ret = unsafe {
        libc::setxattr(
            p.as_ptr(),
            c"trusted.overlay.redirect".as_ptr(),
            b"/".as_ptr().cast(),
            1,
            0,
        )
    };
    let out = if ret == 0 {
        (
            false,
            "trusted.overlay.redirect set on an overlay file".into(),
        )
    } else {
        let e = errno();
        (
            denied(e) || e == libc::EOPNOTSUPP,
            format!("setxattr trusted.overlay.redirect: {}", err_str(e)),
        )
    };
    let _ = std::fs::remove_file(path);
    out
}

fn run_dir_write(_: &Ctx) -> Outcome {
    // Any writable mount of a disk filesystem inside the sandbox is a host directory: what is written
    // there lands on the host's disk, outside the sandbox's tmpfs disk cap. The rootfs (overlay),
    // tmpfs, proc, devpts and the read-only agent binary are fine.
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let safe = [
        "overlay", "tmpfs", "proc", "devpts", "mqueue", "sysfs", "cgroup", "cgroup2", "devtmpfs",
        "nsfs",
    ];
    let mut writable_host = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let l: Vec<&str> = left.split_whitespace().collect();
        let fstype = right.split_whitespace().next().unwrap_or("");
        let (mount_point, opts) = (
            l.get(4).copied().unwrap_or(""),
            l.get(5).copied().unwrap_or(""),
        );
        if !safe.contains(&fstype) && opts.split(',').any(|o| o == "rw") {
            writable_host.push(format!("{mount_point} ({fstype}, {opts})"));
        }
    }
    // And the old run directory, which used to be such a mount: writing there must stay inside.
    let path = "/run/sandpit/.probe-plant";
    let wrote = std::fs::create_dir_all("/run/sandpit")
        .and_then(|()| std::fs::write(path, vec![b'x'; 64 * 1024]));
    let _ = std::fs::remove_file(path);
    if writable_host.is_empty() {
        (
            true,
            format!(
                "no writable host mounts (write to {path}: {}, inside the overlay)",
                if wrote.is_ok() { "ok" } else { "refused" }
            ),
        )
    } else {
        (
            false,
            format!("writable host mounts: {}", writable_host.join("; ")),
        )
    }
}

// ---------------------------------------------------------------------------------------------------
// other sandboxes and host processes

fn other_sandbox(ctx: &Ctx) -> Outcome {
    let (Some(pid), Some(m)) = (ctx.other_pid, &ctx.other_marker) else {
        return (false, "no --other-pid/--other-marker given".into());
    };
    any_reveals(
        &[
            PathBuf::from(format!("/proc/{pid}/root{}", m.path)),
            PathBuf::from(&m.path),
        ],
        &m.token,
    )
}

fn other_sandbox_scan(ctx: &Ctx) -> Outcome {
    let Some(m) = &ctx.other_marker else {
        return (false, "no --other-marker given".into());
    };
    let mut seen = 0;
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.parse::<u32>().is_err() {
            continue;
        }
        seen += 1;
        let p = PathBuf::from(format!("/proc/{name}/root{}", m.path));
        if read_small(&p).is_ok_and(|b| contains(&b, &m.token)) {
            return (
                false,
                format!("{} shows the other sandbox's marker", p.display()),
            );
        }
    }
    (
        true,
        format!("{seen} visible pids, none shows the other sandbox's marker"),
    )
}

fn see_host_processes(ctx: &Ctx) -> Outcome {
    let Some(marker) = &ctx.host_marker else {
        return (false, "no --host-marker given".into());
    };
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.parse::<u32>().is_err() {
            continue;
        }
        // The probe's own command line carries the marker (as `--host-marker=`): skip probes.
        let cmdline = read_small(&e.path().join("cmdline")).unwrap_or_default();
        if contains(&cmdline, marker) && !contains(&cmdline, "--host-marker=") {
            return (false, format!("host process visible as pid {name}"));
        }
        pids.push(name);
    }
    (true, format!("visible pids: {pids:?}"))
}

/// Whether a pid that answered inside our namespace is one of the sandbox's own processes (pid numbers
/// are per namespace, so a host pid number may collide with a local one).
fn local_cmdline(pid: i32) -> Option<String> {
    read_small(Path::new(&format!("/proc/{pid}/cmdline")))
        .ok()
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
}

fn kill_host_pid(ctx: &Ctx) -> Outcome {
    let pids: Vec<i32> = [ctx.host_pid, ctx.daemon_pid, ctx.other_pid]
        .into_iter()
        .flatten()
        .collect();
    if pids.is_empty() {
        return (false, "no host pid given".into());
    }
    let mut notes = Vec::new();
    for pid in pids {
        // Signal 0: checks reachability without delivering anything.
        // SAFETY: kill with signal 0 has no effect besides the permission check.
        let ret = unsafe { libc::kill(pid, 0) };
        if ret == 0 {
            match local_cmdline(pid) {
                Some(c) if !c.contains(ctx.host_marker.as_deref().unwrap_or("\0")) => {
                    notes.push(format!("{pid}: a local process of the same number ({c})"));
                }
                _ => return (false, format!("kill({pid}, 0) reached a host process")),
            }
        } else {
            let e = errno();
            if e != libc::ESRCH && e != libc::EPERM {
                return (false, format!("kill({pid}, 0): {}", err_str(e)));
            }
            notes.push(format!("{pid}: {}", err_str(e)));
        }
    }
    (true, notes.join("; "))
}

fn ptrace_host_pid(ctx: &Ctx) -> Outcome {
    let pids: Vec<i32> = [ctx.host_pid, ctx.daemon_pid, ctx.other_pid]
        .into_iter()
        .flatten()
        .collect();
    if pids.is_empty() {
        return (false, "no host pid given".into());
    }
    let mut notes = Vec::new();
    for pid in pids {
        if let Some(c) = local_cmdline(pid) {
            notes.push(format!("{pid}: a local process ({c}), skipped"));
            continue;
        }
        // SAFETY: PTRACE_ATTACH with null addr/data; detached below if it ever succeeds.
        let ret = unsafe { libc::ptrace(libc::PTRACE_ATTACH, pid, 0, 0) };
        if ret == 0 {
            // SAFETY: undo the attach.
            unsafe { libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0) };
            return (false, format!("PTRACE_ATTACH {pid} succeeded"));
        }
        let e = errno();
        if !matches!(e, libc::ESRCH | libc::EPERM) {
            return (false, format!("PTRACE_ATTACH {pid}: {}", err_str(e)));
        }
        notes.push(format!("{pid}: {}", err_str(e)));
    }
    (true, notes.join("; "))
}

fn ptrace_agent(_: &Ctx) -> Outcome {
    // SAFETY: PTRACE_ATTACH with null addr/data; detached below if it ever succeeds.
    let ret = unsafe { libc::ptrace(libc::PTRACE_ATTACH, 1, 0, 0) };
    if ret == 0 {
        // SAFETY: undo the attach.
        unsafe { libc::ptrace(libc::PTRACE_DETACH, 1, 0, 0) };
        return (false, "attached to the agent (PID 1)".into());
    }
    let e = errno();
    (e == libc::EPERM, format!("PTRACE_ATTACH 1: {}", err_str(e)))
}

fn ptrace_seize_agent(_: &Ctx) -> Outcome {
    // SAFETY: PTRACE_SEIZE with null addr/data; detached below if it ever succeeds.
    let ret = unsafe { libc::ptrace(libc::PTRACE_SEIZE, 1, 0, 0) };
    if ret == 0 {
        // SAFETY: undo the seize.
        unsafe { libc::ptrace(libc::PTRACE_DETACH, 1, 0, 0) };
        return (false, "seized the agent (PID 1)".into());
    }
    let e = errno();
    (e == libc::EPERM, format!("PTRACE_SEIZE 1: {}", err_str(e)))
}

fn pidfd_getfd_agent(_: &Ctx) -> Outcome {
    // SAFETY: pidfd_open(2) with integer arguments; the result is checked.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, 1, 0) };
    if pidfd < 0 {
        let e = errno();
        return (denied(e), format!("pidfd_open(1): {}", err_str(e)));
    }
    let pidfd = pidfd as libc::c_int;
    let mut notes = Vec::new();
    let mut held = true;
    // The agent's listening socket and connections are among its first descriptors.
    for target in 0..16 {
        // SAFETY: pidfd_getfd(2) with integer arguments; a descriptor it returns is closed at once.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd, target, 0) };
        if fd >= 0 {
            // SAFETY: closing the descriptor just obtained.
            unsafe { libc::close(fd as libc::c_int) };
            held = false;
            notes.push(format!("took the agent's fd {target}"));
            break;
        }
        let e = errno();
        if e != libc::EBADF && !denied(e) {
            held = false;
        }
        if target < 2 || !denied(e) {
            notes.push(format!("fd {target}: {}", err_str(e)));
        }
    }
    // SAFETY: closing our pidfd.
    unsafe { libc::close(pidfd) };
    (held, notes.join("; "))
}

fn proc_1_fd(_: &Ctx) -> Outcome {
    // Listing the numbers is harmless (root may, as the directory's owner); following one — open or
    // readlink — would hand over the agent's socket or files, and needs ptrace access.
    let entries: Vec<PathBuf> = match std::fs::read_dir("/proc/1/fd") {
        Ok(rd) => rd.flatten().map(|e| e.path()).collect(),
        Err(e) => {
            return (
                e.raw_os_error().is_some_and(denied),
                format!("readdir /proc/1/fd: {e}"),
            );
        }
    };
    let mut notes = vec![format!("{} entries listed", entries.len())];
    for p in &entries {
        if let Ok(t) = std::fs::read_link(p) {
            return (false, format!("readlink {}: {}", p.display(), t.display()));
        }
        match std::fs::File::open(p) {
            Ok(_) => return (false, format!("opened {}", p.display())),
            Err(e) if e.raw_os_error().is_some_and(denied) => {}
            Err(e) => notes.push(format!("open {}: {e}", p.display())),
        }
    }
    notes.push("none could be followed".into());
    (true, notes.join("; "))
}

/// The state letter of PID 1 in `/proc/1/stat`.
fn agent_state() -> Option<char> {
    let stat = std::fs::read_to_string("/proc/1/stat").ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

fn signal_agent(_: &Ctx) -> Outcome {
    // Root may send these (user gets EPERM); what matters is that none of them sticks: the agent must
    // neither stop nor exit (were it to exit, the whole sandbox and this probe would go with it).
    let mut notes = Vec::new();
    for (sig, name) in [
        (libc::SIGSTOP, "SIGSTOP"),
        (libc::SIGTSTP, "SIGTSTP"),
        (libc::SIGTERM, "SIGTERM"),
        (libc::SIGINT, "SIGINT"),
        (libc::SIGHUP, "SIGHUP"),
        (libc::SIGQUIT, "SIGQUIT"),
    ] {
        // SAFETY: kill(2) with integer arguments.
        let r = unsafe { libc::kill(1, sig) };
        notes.push(format!(
            "{name}: {}",
            if r == 0 {
                "sent".into()
            } else {
                err_str(errno())
            }
        ));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    match agent_state() {
        Some(st) if st != 'T' && st != 't' => {
            (true, format!("{}; agent state {st}", notes.join(", ")))
        }
        other => (
            false,
            format!("{}; agent state {other:?}", notes.join(", ")),
        ),
    }
}

fn oom_score_adj_agent(_: &Ctx) -> Outcome {
    // The agent's /proc files belong to the host's root (it runs from an exec-only binary), so the
    // write itself is refused; a write that lands, even if the agent reverted it later, is a finding.
    write_refused("/proc/1/oom_score_adj", "1000")
}

fn comm_agent(_: &Ctx) -> Outcome {
    // /proc/1/comm names the agent in `ps` and in the host's process list: not the sandbox's to set.
    write_refused("/proc/1/comm", "innocent")
}

/// Blocked when writing `value` to `path` is refused for privilege; a write that lands is put back.
fn write_refused(path: &str, value: &str) -> Outcome {
    let before = std::fs::read_to_string(path).unwrap_or_default();
    if let Err(e) = std::fs::write(path, value) {
        return (
            e.raw_os_error().is_some_and(denied),
            format!("write {value} to {path}: {e}"),
        );
    }
    let _ = std::fs::write(path, before.trim());
    (false, format!("wrote {value} over {}", before.trim()))
}

fn ptrace_own_process(_: &Ctx) -> Outcome {
    // The positive control: what gdb and strace need — tracing one's own process — still works.
    // SAFETY: the probe is single-threaded; the child only sleeps until killed.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return (false, format!("fork: {}", err_str(errno())));
    }
    if child == 0 {
        loop {
            // SAFETY: pause(2) has no preconditions.
            unsafe { libc::pause() };
        }
    }
    // SAFETY: attach to our own child; waited for and detached below.
    let ret = unsafe { libc::ptrace(libc::PTRACE_ATTACH, child, 0, 0) };
    let e = errno();
    let mut status = 0;
    if ret == 0 {
        // SAFETY: waiting for the attach stop of our own child.
        unsafe { libc::waitpid(child, &raw mut status, 0) };
        // SAFETY: detaching from our own child.
        unsafe { libc::ptrace(libc::PTRACE_DETACH, child, 0, 0) };
    }
    // SAFETY: our own child; reaped at once.
    unsafe {
        libc::kill(child, libc::SIGKILL);
        libc::waitpid(child, &raw mut status, 0);
    }
    if ret == 0 {
        (true, "PTRACE_ATTACH of an own child: ok".into())
    } else {
        (
            false,
            format!("PTRACE_ATTACH of an own child: {}", err_str(e)),
        )
    }
}

fn kill_agent(_: &Ctx) -> Outcome {
    // SIGCONT is harmless to a running process, yet needs the same permission as SIGKILL
    // (outside the session); signal 0 is the pure check.
    // SAFETY: signal 0 delivers nothing.
    let ret = unsafe { libc::kill(1, 0) };
    if ret == 0 {
        return (false, "user may signal the agent (PID 1)".into());
    }
    let e = errno();
    (e == libc::EPERM, format!("kill(1, 0): {}", err_str(e)))
}

fn proc_1_mem(_: &Ctx) -> Outcome {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/proc/1/mem")
    {
        Ok(_) => (false, "/proc/1/mem opened read-write".into()),
        Err(e) => (
            e.raw_os_error().is_some_and(denied),
            format!("open /proc/1/mem rw: {e}"),
        ),
    }
}

fn proc_1_environ(_: &Ctx) -> Outcome {
    match read_small(Path::new("/proc/1/environ")) {
        Ok(b) => (
            false,
            format!("/proc/1/environ readable ({} bytes)", b.len()),
        ),
        Err(e) => (
            e.raw_os_error().is_some_and(denied),
            format!("read /proc/1/environ: {e}"),
        ),
    }
}

fn vm_readv_agent(_: &Ctx) -> Outcome {
    let mut buf = [0u8; 8];
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // Any address: the permission check comes first, a bad address would give EFAULT.
    let remote = libc::iovec {
        iov_base: 0x1000 as *mut libc::c_void,
        iov_len: 8,
    };
    // SAFETY: local points at our 8-byte buffer; remote is only read by the kernel for the check.
    let ret = unsafe { libc::process_vm_readv(1, &raw const local, 1, &raw const remote, 1, 0) };
    judge_sys(ret as libc::c_long, "process_vm_readv(1)")
}

fn agent_socket(_: &Ctx) -> Outcome {
    // The agent serves its API (run anything as root) on a socket under /run/sandpit; an
    // unprivileged process inside must not reach it. The well-known path is tried even when the
    // directory cannot be listed.
    let mut notes = Vec::new();
    let mut names = vec![PathBuf::from("/run/sandpit/agent.sock")];
    match std::fs::read_dir("/run/sandpit") {
        Ok(rd) => names.extend(rd.flatten().map(|e| e.path())),
        Err(e) => notes.push(format!("readdir /run/sandpit: {e}")),
    }
    for p in names {
        match std::os::unix::net::UnixStream::connect(&p) {
            Ok(_) => return (false, format!("user connected to {}", p.display())),
            Err(e) => notes.push(format!("connect {}: {e}", p.display())),
        }
    }
    (true, notes.join("; "))
}

// ---------------------------------------------------------------------------------------------------
// CVE classics on the agent binary

fn overwrite_agent_binary(_: &Ctx) -> Outcome {
    open_exe_for_write("/.sandpit/sandpit")
}

fn overwrite_proc_1_exe(_: &Ctx) -> Outcome {
    // CVE-2019-5736 (runc): the host binary reached through /proc/PID/exe and rewritten.
    open_exe_for_write("/proc/1/exe")
}

fn open_exe_for_write(path: &str) -> Outcome {
    let p = cstr(path);
    // O_WRONLY without O_TRUNC: success alone is the escape, and nothing is changed.
    // SAFETY: valid C string; the fd is closed.
    let fd = unsafe { libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd >= 0 {
        // SAFETY: closing our fd.
        unsafe { libc::close(fd) };
        return (false, format!("{path} opened for writing"));
    }
    let e = errno();
    (
        matches!(
            e,
            libc::EPERM | libc::EACCES | libc::EROFS | libc::ETXTBSY | libc::ENOENT
        ),
        format!("open {path} O_WRONLY: {}", err_str(e)),
    )
}

// ---------------------------------------------------------------------------------------------------
// network

fn tcp(addr: &str) -> Outcome {
    let Ok(sa) = addr.parse::<std::net::SocketAddr>() else {
        return (false, format!("bad address {addr}"));
    };
    match std::net::TcpStream::connect_timeout(&sa, Duration::from_secs(2)) {
        Ok(_) => (false, format!("connected to {addr}")),
        Err(e) => (true, format!("connect {addr}: {e}")),
    }
}

fn connect_daemon(ctx: &Ctx) -> Outcome {
    match ctx.daemon_port {
        Some(p) => tcp(&format!("127.0.0.1:{p}")),
        None => (false, "no --daemon-port given".into()),
    }
}

fn connect_listener(ctx: &Ctx) -> Outcome {
    match ctx.listener_port {
        Some(p) => {
            let (a, d1) = tcp(&format!("127.0.0.1:{p}"));
            let (b, d2) = tcp(&format!("[::1]:{p}"));
            (a && b, format!("{d1}; {d2}"))
        }
        None => (false, "no --listener-port given".into()),
    }
}

fn connect_host_ip(ctx: &Ctx) -> Outcome {
    let Some(p) = ctx.listener_port else {
        return (false, "no --listener-port given".into());
    };
    // The host's own address (when it has one besides loopback), plus the usual gateway guesses.
    let mut addrs: Vec<String> = ctx.host_ip.iter().map(|ip| format!("{ip}:{p}")).collect();
    addrs.push(format!("10.0.2.2:{p}"));
    addrs.push(format!("172.17.0.1:{p}"));
    let mut notes = Vec::new();
    for a in addrs {
        let (ok, d) = tcp(&a);
        if !ok {
            return (false, d);
        }
        notes.push(d);
    }
    (true, notes.join("; "))
}

fn connect_abstract(ctx: &Ctx) -> Outcome {
    use std::os::linux::net::SocketAddrExt;
    let Some(name) = &ctx.abstract_name else {
        return (false, "no --abstract given".into());
    };
    let addr = match std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()) {
        Ok(a) => a,
        Err(e) => return (false, format!("bad abstract name: {e}")),
    };
    match std::os::unix::net::UnixStream::connect_addr(&addr) {
        Ok(_) => (
            false,
            format!("connected to the host's abstract socket @{name}"),
        ),
        Err(e) => (true, format!("connect @{name}: {e}")),
    }
}

// ---------------------------------------------------------------------------------------------------
// mounts and namespaces

fn mount_tmpfs(_: &Ctx) -> Outcome {
    let _ = std::fs::create_dir_all("/tmp/.probe-mnt");
    // SAFETY: valid C strings; a tmpfs over our own scratch directory if it ever works.
    let ret = unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            c"/tmp/.probe-mnt".as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    judge_sys(ret.into(), "mount(tmpfs)")
}

fn umount_proc(_: &Ctx) -> Outcome {
    // Detaching /proc would only hurt the sandbox, but success shows umount is reachable (and
    // unmounting an over-mount can reveal what it hides).
    // SAFETY: valid C string.
    let ret = unsafe { libc::umount2(c"/proc/sys".as_ptr(), libc::MNT_DETACH) };
    let (a, d1) = judge_sys(ret.into(), "umount2(/proc/sys)");
    // SAFETY: valid C string; "/" with an invalid flag combination is refused after the check.
    let ret = unsafe { libc::umount2(c"/.sandpit/sandpit".as_ptr(), libc::MNT_DETACH) };
    let (b, d2) = judge_sys(ret.into(), "umount2(/.sandpit/sandpit)");
    (a && b, format!("{d1}; {d2}"))
}

fn pivot_root(_: &Ctx) -> Outcome {
    let _ = std::fs::create_dir_all("/tmp/.probe-old");
    // SAFETY: valid C strings; /tmp is not a mount point of a new root, so a permitted call fails
    // with EINVAL after the check.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pivot_root,
            c"/tmp".as_ptr(),
            c"/tmp/.probe-old".as_ptr(),
        )
    };
    judge_sys(ret, "pivot_root")
}

fn fsopen(_: &Ctx) -> Outcome {
    // SAFETY: valid C string.
    let ret = unsafe { libc::syscall(libc::SYS_fsopen, c"tmpfs".as_ptr(), 0) };
    if ret >= 0 {
        // SAFETY: closing our fd.
        unsafe { libc::close(ret as i32) };
    }
    judge_sys(ret, "fsopen(tmpfs)")
}

fn open_tree(_: &Ctx) -> Outcome {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    // SAFETY: valid C string.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c"/".as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if ret >= 0 {
        // SAFETY: closing our fd.
        unsafe { libc::close(ret as i32) };
    }
    judge_sys(ret, "open_tree(/, OPEN_TREE_CLONE)")
}

fn unshare_userns_mount(_: &Ctx) -> Outcome {
    // A nested user namespace gives a full capability set again, and with it mount().
    let r = forked(|| {
        // SAFETY: unshare in the forked child only.
        if unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) } != 0 {
            return if denied(errno()) { 10 } else { 11 };
        }
        let _ = std::fs::create_dir_all("/tmp/.probe-mnt2");
        // SAFETY: valid C strings.
        let ret = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                c"/tmp/.probe-mnt2".as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if ret == 0 { 1 } else { 2 }
    });
    match r {
        Ok(10) => (true, "unshare(CLONE_NEWUSER|CLONE_NEWNS): denied".into()),
        Ok(2) => (true, "unshare worked but mount in it failed".into()),
        Ok(1) => (
            false,
            "nested user namespace: mount(tmpfs) succeeded".into(),
        ),
        Ok(c) => (false, format!("unexpected child result {c}")),
        Err(e) => (false, e),
    }
}

fn unshare_mountns(_: &Ctx) -> Outcome {
    // One flag at a time: a filter that let a single namespace type through would hide behind a
    // combined call failing on another flag.
    const CLONE_NEWTIME: libc::c_int = 0x80;
    let flags = [
        ("NEWNS", libc::CLONE_NEWNS),
        ("NEWPID", libc::CLONE_NEWPID),
        ("NEWNET", libc::CLONE_NEWNET),
        ("NEWUTS", libc::CLONE_NEWUTS),
        ("NEWIPC", libc::CLONE_NEWIPC),
        ("NEWCGROUP", libc::CLONE_NEWCGROUP),
        ("NEWTIME", CLONE_NEWTIME),
        ("NEWUSER", libc::CLONE_NEWUSER),
    ];
    let mut notes = Vec::new();
    for (name, flag) in flags {
        let r = forked(|| {
            // SAFETY: unshare in the forked child only.
            if unsafe { libc::unshare(flag) } == 0 {
                1
            } else if denied(errno()) {
                0
            } else {
                2
            }
        });
        match r {
            Ok(0) => notes.push(format!("{name}: denied")),
            Ok(1) => return (false, format!("unshare(CLONE_{name}) succeeded")),
            other => {
                return (
                    false,
                    format!("unshare(CLONE_{name}): unexpected {other:?}"),
                );
            }
        }
    }
    (true, notes.join("; "))
}

fn clone_newuser_raw(_: &Ctx) -> Outcome {
    // The raw clone syscall (not unshare) with CLONE_NEWUSER, and clone3, whose flags seccomp cannot
    // see: both must fail.
    // SAFETY: without CLONE_VM this is a fork; the child only calls _exit.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::CLONE_NEWUSER | libc::SIGCHLD,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if ret == 0 {
        // SAFETY: the child ends at once.
        unsafe { libc::_exit(0) };
    }
    if ret > 0 {
        // SAFETY: reaping our child.
        unsafe { libc::waitpid(ret as i32, std::ptr::null_mut(), 0) };
        return (
            false,
            "clone(CLONE_NEWUSER) created a child in a new user namespace".into(),
        );
    }
    let (a, d1) = judge_sys(ret, "clone(CLONE_NEWUSER)");
    // struct clone_args { flags, pidfd, child_tid, parent_tid, exit_signal, ... }: 64 bytes (v0).
    let mut args = [0u64; 8];
    args[0] = libc::CLONE_NEWUSER as u64;
    args[4] = libc::SIGCHLD as u64;
    // SAFETY: args is a valid clone_args v0; a child (if any) only calls _exit.
    let ret = unsafe { libc::syscall(libc::SYS_clone3, args.as_mut_ptr(), 64usize) };
    if ret == 0 {
        // SAFETY: the child ends at once.
        unsafe { libc::_exit(0) };
    }
    if ret > 0 {
        // SAFETY: reaping our child.
        unsafe { libc::waitpid(ret as i32, std::ptr::null_mut(), 0) };
        return (
            false,
            format!("{d1}; clone3(CLONE_NEWUSER) created a child"),
        );
    }
    let (b, d2) = judge_sys(ret, "clone3(CLONE_NEWUSER)");
    (a && b, format!("{d1}; {d2}"))
}

fn x32_abi(_: &Ctx) -> Outcome {
    // A filter that matches syscall numbers but forgets the x32 bit (0x4000_0000) lets the same
    // syscall through under another number.
    const X32: libc::c_long = 0x4000_0000;
    let _ = std::fs::create_dir_all("/tmp/.probe-mnt4");
    // SAFETY: valid C strings; a tmpfs over our scratch directory if it ever works.
    let ret = unsafe {
        libc::syscall(
            X32 | libc::SYS_mount,
            c"tmpfs".as_ptr(),
            c"/tmp/.probe-mnt4".as_ptr(),
            c"tmpfs".as_ptr(),
            0usize,
            0usize,
        )
    };
    let (a, d1) = judge_sys(ret, "x32 mount");
    let r = forked(|| {
        // SAFETY: unshare in a forked child only.
        if unsafe { libc::syscall(X32 | libc::SYS_unshare, libc::CLONE_NEWUSER) } == 0 {
            0
        } else {
            errno()
        }
    });
    let (b, d2) = match r {
        Ok(0) => (false, "x32 unshare(CLONE_NEWUSER) succeeded".to_owned()),
        Ok(e) => (denied(e), format!("x32 unshare: {}", err_str(e))),
        Err(e) => (true, format!("x32 unshare: {e}")),
    };
    (a && b, format!("{d1}; {d2}"))
}

fn i386_abi(_: &Ctx) -> Outcome {
    // `int 0x80` enters the kernel through the 32-bit ABI with other syscall numbers (i386 unshare is
    // 310): seccomp must kill it or refuse it, a filter written for x86_64 numbers only would not.
    let r = forked(|| {
        let ret: i32;
        // SAFETY: int 0x80 with eax = 310 (i386 unshare) and ebx = flags; rbx is reserved by LLVM,
        // so it is swapped in and out around the trap. Runs in a forked child only.
        unsafe {
            std::arch::asm!(
                "xchg {flags:r}, rbx",
                "int 0x80",
                "xchg {flags:r}, rbx",
                flags = inout(reg) i64::from(libc::CLONE_NEWUSER) => _,
                inlateout("eax") 310i32 => ret,
            );
        }
        if ret == 0 {
            1
        } else if denied(-ret) {
            0
        } else {
            2
        }
    });
    match r {
        Ok(0) => (true, "int 0x80 unshare: denied".into()),
        Ok(1) => (
            false,
            "int 0x80 unshare(CLONE_NEWUSER) succeeded: the 32-bit ABI bypasses the filter".into(),
        ),
        Ok(c) => (false, format!("int 0x80 unshare: unexpected result {c}")),
        Err(e) => (
            true,
            format!("int 0x80: {e} (killed: SIGSYS = filter, SIGSEGV = no 32-bit ABI)"),
        ),
    }
}

fn sysv_ipc(ctx: &Ctx) -> Outcome {
    let Some(key) = ctx.ipc_key else {
        return (false, "no --ipc-key given".into());
    };
    // SAFETY: shmget with no creation flags only looks the key up.
    let id = unsafe { libc::shmget(key, 0, 0) };
    if id >= 0 {
        return (
            false,
            format!("the host's SysV shm segment {key:#x} is visible (id {id})"),
        );
    }
    let e = errno();
    (
        e == libc::ENOENT,
        format!("shmget({key:#x}): {}", err_str(e)),
    )
}

fn setns_agent(_: &Ctx) -> Outcome {
    let r = forked(|| {
        // SAFETY: valid C string; the fd stays open only in this child.
        let fd = unsafe { libc::open(c"/proc/self/ns/mnt".as_ptr(), libc::O_RDONLY) };
        if fd < 0 {
            return 3;
        }
        // SAFETY: fd is a namespace fd.
        if unsafe { libc::setns(fd, libc::CLONE_NEWNS) } == 0 {
            1
        } else if denied(errno()) {
            0
        } else {
            2
        }
    });
    match r {
        Ok(0) => (true, "setns(mnt): denied".into()),
        Ok(1) => (false, "setns(mnt) succeeded".into()),
        other => (false, format!("unexpected: {other:?}")),
    }
}

// ---------------------------------------------------------------------------------------------------
// cgroups

fn mount_cgroup_v1(_: &Ctx) -> Outcome {
    // CVE-2022-0492: a cgroup v1 hierarchy mounted from inside, with a writable release_agent, runs a
    // program as host root.
    let _ = std::fs::create_dir_all("/tmp/.probe-cg");
    // SAFETY: valid C strings.
    let ret = unsafe {
        libc::mount(
            c"cgroup".as_ptr(),
            c"/tmp/.probe-cg".as_ptr(),
            c"cgroup".as_ptr(),
            0,
            c"rdma".as_ptr().cast(),
        )
    };
    let (a, d1) = judge_sys(ret.into(), "mount(cgroup v1, rdma)");
    // SAFETY: valid C strings.
    let ret = unsafe {
        libc::mount(
            c"cgroup2".as_ptr(),
            c"/tmp/.probe-cg".as_ptr(),
            c"cgroup2".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    let (b, d2) = judge_sys(ret.into(), "mount(cgroup2)");
    (a && b, format!("{d1}; {d2}"))
}

/// Where the sandbox's v2 cgroup hierarchy is: `/sys/fs/cgroup/unified` on hybrid hosts (beside the v1
/// hierarchies), `/sys/fs/cgroup` on pure v2 ones.
fn v2_root() -> &'static str {
    if std::path::Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists() {
        "/sys/fs/cgroup/unified"
    } else {
        "/sys/fs/cgroup"
    }
}

fn write_cgroup_limits(_: &Ctx) -> Outcome {
    let v2 = v2_root();
    let candidates = [
        format!("{v2}/memory.max"),
        format!("{v2}/pids.max"),
        format!("{v2}/cpu.max"),
        format!("{v2}/cgroup.procs"),
        "/sys/fs/cgroup/memory/memory.limit_in_bytes".into(),
        "/sys/fs/cgroup/memory/work/memory.limit_in_bytes".into(),
        "/sys/fs/cgroup/pids/pids.max".into(),
        "/sys/fs/cgroup/pids/work/pids.max".into(),
        "/sys/fs/cgroup/cpu/cpu.cfs_quota_us".into(),
        "/sys/fs/cgroup/cpuset/cpuset.cpus".into(),
        "/sys/fs/cgroup/memory/release_agent".into(),
    ];
    let mut notes = Vec::new();
    for c in &candidates {
        let (ok, d) = write_back(c);
        if !ok {
            return (false, d);
        }
        notes.push(d);
    }
    (true, notes.join("; "))
}

/// Writes `value` to each cgroup file; blocked when no write gets through.
fn cgroup_writes(writes: &[(&str, String)]) -> Outcome {
    let mut notes = Vec::new();
    for (path, value) in writes {
        match std::fs::OpenOptions::new().write(true).open(path) {
            Err(e) => notes.push(format!("open {path}: {e}")),
            Ok(mut f) => match f.write_all(value.as_bytes()) {
                Ok(()) => return (false, format!("wrote {value:?} to {path}")),
                Err(e) => notes.push(format!("write {value:?} to {path}: {e}")),
            },
        }
    }
    (true, notes.join("; "))
}

/// Moving the agent (PID 1) into the subtree delegated to the sandbox, where a child cgroup could then
/// be frozen with it inside.
fn move_agent_into_work(_: &Ctx) -> Outcome {
    let trap = &format!("{}/work/probe-trap", v2_root());
    let _ = std::fs::create_dir(trap);
    let r = cgroup_writes(&[
        (&format!("{}/work/cgroup.procs", v2_root()), "1".into()),
        (&format!("{trap}/cgroup.procs"), "1".into()),
        (&format!("{}/cgroup.procs", v2_root()), "1".into()),
    ]);
    let _ = std::fs::remove_dir(trap);
    r
}

/// Freezing (or killing) the sandbox's own cgroup or the agent's.
fn freeze_sandbox_cgroup(_: &Ctx) -> Outcome {
    let r = cgroup_writes(&[
        (&format!("{}/cgroup.freeze", v2_root()), "1".into()),
        (&format!("{}/agent/cgroup.freeze", v2_root()), "1".into()),
        (&format!("{}/cgroup.kill", v2_root()), "1".into()),
        (&format!("{}/agent/cgroup.kill", v2_root()), "1".into()),
    ]);
    if !r.0 {
        // Undo what got through, so that the rest of the run still has an agent to talk to.
        let _ = std::fs::write(format!("{}/cgroup.freeze", v2_root()), "0");
        let _ = std::fs::write(format!("{}/agent/cgroup.freeze", v2_root()), "0");
    }
    r
}

/// Hiding in the agent's cgroup (or the sandbox's own), out of any per-process cgroup a kill empties.
fn join_agent_cgroup(_: &Ctx) -> Outcome {
    let me = std::process::id().to_string();
    cgroup_writes(&[
        (&format!("{}/agent/cgroup.procs", v2_root()), me.clone()),
        (&format!("{}/cgroup.procs", v2_root()), me),
    ])
}

/// `user` leaving the cgroup its process was started in, so that killing that process would miss it.
/// (Root of the sandbox may move its own processes within the delegated subtree: delegation gives it
/// that, as it gives it `kill` of any pid.)
fn leave_process_cgroup(_: &Ctx) -> Outcome {
    let me = std::process::id().to_string();
    cgroup_writes(&[(&format!("{}/work/cgroup.procs", v2_root()), me)])
}

// ---------------------------------------------------------------------------------------------------
// kernel interfaces: arguments are chosen so that a permitted call fails (or does nothing) after the
// permission check.

fn init_module(_: &Ctx) -> Outcome {
    // SAFETY: a zero-length image; the kernel reads nothing.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_init_module,
            std::ptr::null::<u8>(),
            0,
            c"".as_ptr(),
        )
    };
    judge_sys(ret, "init_module(empty)")
}

fn finit_module(_: &Ctx) -> Outcome {
    // SAFETY: /dev/null is not a module; the fd is closed.
    let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY) };
    // SAFETY: valid fd and C string.
    let ret = unsafe { libc::syscall(libc::SYS_finit_module, fd, c"".as_ptr(), 0) };
    // SAFETY: closing our fd.
    unsafe { libc::close(fd) };
    judge_sys(ret, "finit_module(/dev/null)")
}

fn delete_module(_: &Ctx) -> Outcome {
    // SAFETY: a module name that does not exist: a permitted call answers ENOENT.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_delete_module,
            c"sandpit_probe_nonexistent".as_ptr(),
            libc::O_NONBLOCK,
        )
    };
    judge_sys(ret, "delete_module(nonexistent)")
}

fn kexec_load(_: &Ctx) -> Outcome {
    // Invalid flags: a permitted call is EINVAL (nr_segments 0 with valid flags would unload the
    // loaded kexec image).
    // SAFETY: no segments are passed.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_kexec_load,
            0usize,
            0usize,
            std::ptr::null::<u8>(),
            0x7fff_0000usize,
        )
    };
    judge_sys(ret, "kexec_load(bad flags)")
}

fn kexec_file_load(_: &Ctx) -> Outcome {
    // SAFETY: invalid fds and flags.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_kexec_file_load,
            -1,
            -1,
            0usize,
            std::ptr::null::<u8>(),
            0x7fff_0000usize,
        )
    };
    judge_sys(ret, "kexec_file_load(bad flags)")
}

fn bpf_prog_load(_: &Ctx) -> Outcome {
    // A two-instruction socket filter ("r0 = 0; exit"): loadable by anyone when unprivileged BPF is on.
    let insns: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];
    let license = c"GPL";
    // union bpf_attr, BPF_PROG_LOAD prefix: prog_type, insn_cnt, insns, license, log_level, log_size,
    // log_buf, kern_version.
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&1u32.to_ne_bytes()); // BPF_PROG_TYPE_SOCKET_FILTER
    attr[4..8].copy_from_slice(&2u32.to_ne_bytes());
    attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    // SAFETY: attr is a valid bpf_attr of 128 bytes pointing at live instructions and license.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, 5, attr.as_mut_ptr(), attr.len()) };
    if ret >= 0 {
        // SAFETY: closing the program fd.
        unsafe { libc::close(ret as i32) };
    }
    judge_sys(ret, "bpf(BPF_PROG_LOAD socket filter)")
}

fn perf_event_open(_: &Ctx) -> Outcome {
    // A software cpu-clock counter on ourselves: the least privileged perf event there is.
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&1u32.to_ne_bytes()); // PERF_TYPE_SOFTWARE
    attr[4..8].copy_from_slice(&128u32.to_ne_bytes()); // size
    attr[8..16].copy_from_slice(&0u64.to_ne_bytes()); // PERF_COUNT_SW_CPU_CLOCK
    // flags: disabled | exclude_kernel | exclude_hv
    attr[40..48].copy_from_slice(&(1u64 | (1 << 5) | (1 << 6)).to_ne_bytes());
    // SAFETY: attr is a valid perf_event_attr of 128 bytes.
    let ret = unsafe { libc::syscall(libc::SYS_perf_event_open, attr.as_ptr(), 0, -1, -1, 0) };
    if ret >= 0 {
        // SAFETY: closing the event fd.
        unsafe { libc::close(ret as i32) };
    }
    judge_sys(ret, "perf_event_open(sw cpu-clock, self)")
}

fn userfaultfd(_: &Ctx) -> Outcome {
    const UFFD_USER_MODE_ONLY: libc::c_int = 1;
    // SAFETY: no pointers.
    let ret =
        unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | UFFD_USER_MODE_ONLY) };
    if ret >= 0 {
        // SAFETY: closing our fd.
        unsafe { libc::close(ret as i32) };
    }
    judge_sys(ret, "userfaultfd(UFFD_USER_MODE_ONLY)")
}

fn io_uring_setup(_: &Ctx) -> Outcome {
    let mut params = [0u8; 120]; // struct io_uring_params
    // SAFETY: params is a zeroed io_uring_params.
    let ret = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1, params.as_mut_ptr()) };
    if ret >= 0 {
        // SAFETY: closing our fd.
        unsafe { libc::close(ret as i32) };
    }
    judge_sys(ret, "io_uring_setup(1)")
}

fn keyctl(_: &Ctx) -> Outcome {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    // SAFETY: a null name joins a fresh anonymous session keyring.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_JOIN_SESSION_KEYRING,
            std::ptr::null::<u8>(),
        )
    };
    judge_sys(ret, "keyctl(JOIN_SESSION_KEYRING)")
}

fn add_key(_: &Ctx) -> Outcome {
    const KEY_SPEC_PROCESS_KEYRING: libc::c_long = -2;
    // SAFETY: valid C strings and a 1-byte payload.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_add_key,
            c"user".as_ptr(),
            c"sandpit-probe".as_ptr(),
            b"x".as_ptr(),
            1usize,
            KEY_SPEC_PROCESS_KEYRING,
        )
    };
    judge_sys(ret, "add_key(user)")
}

fn syslog_read(_: &Ctx) -> Outcome {
    let mut buf = vec![0u8; 4096];
    // SAFETY: buf is 4096 writable bytes. 3 = SYSLOG_ACTION_READ_ALL.
    let ret = unsafe { libc::klogctl(3, buf.as_mut_ptr().cast(), buf.len() as i32) };
    judge_sys(ret.into(), "syslog(READ_ALL)")
}

fn iopl(_: &Ctx) -> Outcome {
    // SAFETY: raising the I/O privilege level is refused without CAP_SYS_RAWIO.
    let ret = unsafe { libc::syscall(libc::SYS_iopl, 3) };
    let (a, d1) = judge_sys(ret, "iopl(3)");
    // SAFETY: as above for port 0x80.
    let ret = unsafe { libc::syscall(libc::SYS_ioperm, 0x80, 1, 1) };
    let (b, d2) = judge_sys(ret, "ioperm(0x80)");
    (a && b, format!("{d1}; {d2}"))
}

fn swapon(_: &Ctx) -> Outcome {
    // A nonexistent path: a permitted call answers ENOENT, which then counts as not blocked.
    // SAFETY: valid C string.
    let ret = unsafe { libc::syscall(libc::SYS_swapon, c"/tmp/.probe-noswap".as_ptr(), 0) };
    judge_sys(ret, "swapon(nonexistent)")
}

fn reboot(_: &Ctx) -> Outcome {
    // Bad magic: the capability check comes first, then a permitted call fails with EINVAL.
    // SAFETY: no pointers; the bad magic guarantees no reboot.
    let ret = unsafe { libc::syscall(libc::SYS_reboot, 0x1234_5678, 0x8765_4321u32, 0, 0usize) };
    judge_sys(ret, "reboot(bad magic)")
}

fn acct(_: &Ctx) -> Outcome {
    // SAFETY: a nonexistent file: a permitted call answers ENOENT.
    let ret = unsafe { libc::acct(c"/tmp/.probe-noacct".as_ptr()) };
    judge_sys(ret.into(), "acct(nonexistent)")
}

// ---------------------------------------------------------------------------------------------------
// devices

fn raw_devices(_: &Ctx) -> Outcome {
    let devs = [
        "/dev/sda",
        "/dev/vda",
        "/dev/nvme0n1",
        "/dev/xvda",
        "/dev/mem",
        "/dev/kmem",
        "/dev/port",
        "/dev/kmsg",
        "/dev/console",
        "/dev/tty0",
        "/dev/fuse",
        "/dev/net/tun",
        "/dev/loop0",
        "/dev/loop-control",
        "/dev/dm-0",
        "/dev/cpu/0/msr",
    ];
    let mut notes = Vec::new();
    for d in devs {
        match std::fs::File::open(d) {
            Ok(_) => return (false, format!("{d} opened")),
            Err(e) => notes.push(format!(
                "{d}: {}",
                e.raw_os_error().map_or_else(String::new, err_str)
            )),
        }
    }
    (true, notes.join("; "))
}

fn mknod_dev(path: &str, major: u32, minor: u32) -> Outcome {
    let _ = std::fs::remove_file(path);
    let p = cstr(path);
    // SAFETY: valid C string.
    let ret = unsafe {
        libc::mknod(
            p.as_ptr(),
            libc::S_IFBLK | 0o600,
            libc::makedev(major, minor),
        )
    };
    if ret != 0 {
        let e = errno();
        return (
            denied(e),
            format!("mknod {path} ({major},{minor}): {}", err_str(e)),
        );
    }
    // The node exists: opening it must still fail (nodev mount or no device access).
    let out = match std::fs::File::open(path) {
        Ok(_) => (
            false,
            format!("mknod {path} ({major},{minor}) and open succeeded"),
        ),
        Err(e) => (true, format!("mknod worked, open {path}: {e}")),
    };
    let _ = std::fs::remove_file(path);
    out
}

fn mknod_block(_: &Ctx) -> Outcome {
    mknod_dev("/tmp/.probe-sda", 8, 0)
}

fn mknod_mem(_: &Ctx) -> Outcome {
    let path = "/tmp/.probe-mem";
    let _ = std::fs::remove_file(path);
    let p = cstr(path);
    // SAFETY: valid C string.
    let ret = unsafe { libc::mknod(p.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 1)) };
    if ret != 0 {
        let e = errno();
        return (denied(e), format!("mknod {path} (c 1,1): {}", err_str(e)));
    }
    let out = match std::fs::File::open(path) {
        Ok(_) => (false, "mknod /dev/mem twin and open succeeded".into()),
        Err(e) => (true, format!("mknod worked, open: {e}")),
    };
    let _ = std::fs::remove_file(path);
    out
}

// ---------------------------------------------------------------------------------------------------
// /proc/sys and /sys

fn core_pattern(_: &Ctx) -> Outcome {
    // A writable core_pattern ("|/path") runs a program as host root on the next crash.
    write_back("/proc/sys/kernel/core_pattern")
}

fn modprobe(_: &Ctx) -> Outcome {
    write_back("/proc/sys/kernel/modprobe")
}

fn sysrq(_: &Ctx) -> Outcome {
    // Only opened, never written: a write would act on the host.
    match std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/sysrq-trigger")
    {
        Ok(_) => (false, "/proc/sysrq-trigger opened for writing".into()),
        Err(e) => (true, format!("open /proc/sysrq-trigger for writing: {e}")),
    }
}

fn kcore(_: &Ctx) -> Outcome {
    match std::fs::File::open("/proc/kcore") {
        Ok(mut f) => {
            let mut b = [0u8; 64];
            match f.read(&mut b) {
                Ok(n) if n > 0 => (false, "/proc/kcore readable".into()),
                r => (true, format!("/proc/kcore opened, read: {r:?}")),
            }
        }
        Err(e) => (true, format!("open /proc/kcore: {e}")),
    }
}

fn write_sys(_: &Ctx) -> Outcome {
    let mut notes = Vec::new();
    for p in [
        "/sys/kernel/uevent_helper",
        "/sys/kernel/mm/transparent_hugepage/enabled",
        "/sys/class/net/lo/mtu",
        "/sys/module/printk/parameters/time",
    ] {
        let (ok, d) = write_back(p);
        if !ok {
            return (false, d);
        }
        notes.push(d);
    }
    // sysfs mounted from inside.
    let _ = std::fs::create_dir_all("/tmp/.probe-sys");
    // SAFETY: valid C strings.
    let ret = unsafe {
        libc::mount(
            c"sysfs".as_ptr(),
            c"/tmp/.probe-sys".as_ptr(),
            c"sysfs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    let (ok, d) = judge_sys(ret.into(), "mount(sysfs)");
    notes.push(d);
    (ok, notes.join("; "))
}

// ---------------------------------------------------------------------------------------------------
// privileges

fn setuid0(_: &Ctx) -> Outcome {
    let r = forked(|| {
        // SAFETY: in the forked child only.
        if unsafe { libc::setresuid(0, 0, 0) } == 0 {
            1
        } else if errno() == libc::EPERM {
            0
        } else {
            2
        }
    });
    match r {
        Ok(0) => (true, "setresuid(0,0,0): EPERM".into()),
        Ok(1) => (false, "user became root with setresuid".into()),
        other => (false, format!("unexpected: {other:?}")),
    }
}

const SUID_PATH: &str = "/tmp/.probe-suid";
const FCAPS_PATH: &str = "/tmp/.probe-fcaps";

/// As root: plants a setuid-root copy of the probe and a copy with `cap_setuid,cap_sys_admin+ep` file
/// capabilities, for the `user` run to execute. Not an attempt itself: it reports whether the setup
/// worked (root may do this inside by design; what matters is what `user` gains from it).
fn prepare_setuid_binaries(_: &Ctx) -> Outcome {
    let Ok(exe) = std::fs::read("/proc/self/exe") else {
        return (false, "cannot read /proc/self/exe".into());
    };
    let mut notes = Vec::new();
    for p in [SUID_PATH, FCAPS_PATH] {
        let _ = std::fs::remove_file(p);
        if let Err(e) = std::fs::write(p, &exe) {
            return (false, format!("write {p}: {e}"));
        }
    }
    let _ = std::fs::set_permissions(SUID_PATH, std::fs::Permissions::from_mode(0o4755));
    let _ = std::fs::set_permissions(FCAPS_PATH, std::fs::Permissions::from_mode(0o755));
    // vfs_cap_data revision 2: magic_etc, then (permitted, inheritable) for words 0 and 1.
    // CAP_SETUID = 7, CAP_SYS_ADMIN = 21; effective flag bit 0 of magic_etc.
    let caps: u32 = (1 << 7) | (1 << 21);
    let mut v = Vec::new();
    for w in [0x0200_0001u32, caps, 0, 0, 0] {
        v.extend_from_slice(&w.to_le_bytes());
    }
    let p = cstr(FCAPS_PATH);
    // SAFETY: valid C strings and a 20-byte value.
    let ret = unsafe {
        libc::setxattr(
            p.as_ptr(),
            c"security.capability".as_ptr(),
            v.as_ptr().cast(),
            v.len(),
            0,
        )
    };
    notes.push(if ret == 0 {
        "file capabilities set".to_owned()
    } else {
        format!("setxattr security.capability: {}", err_str(errno()))
    });
    let mode = std::fs::metadata(SUID_PATH).map_or(0, |m| m.permissions().mode());
    notes.push(format!("{SUID_PATH} mode {mode:o}"));
    // Setup, not an escape: always "blocked"; the user run judges.
    (
        true,
        format!("setup for the user run: {}", notes.join("; ")),
    )
}

/// `--mode=whoami`: prints the effective uid and capability sets as the exec'd binary sees them,
/// after trying setuid(0).
fn whoami() {
    // SAFETY: no preconditions.
    let euid = unsafe { libc::geteuid() };
    // SAFETY: setuid in this short-lived process only.
    let setuid_ok = unsafe { libc::setuid(0) } == 0;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map_or("?", str::trim);
    println!("euid={euid} setuid0={setuid_ok} capeff={eff}");
}

fn run_whoami(path: &str) -> Outcome {
    if !Path::new(path).exists() {
        return (
            false,
            format!("{path} missing: the root run must come first"),
        );
    }
    match std::process::Command::new(path)
        .arg("--mode=whoami")
        .output()
    {
        Err(e) => (
            e.raw_os_error().is_some_and(denied),
            format!("exec {path}: {e}"),
        ),
        Ok(o) => {
            let out = String::from_utf8_lossy(&o.stdout).trim().to_owned();
            let gained = out.contains("euid=0") || out.contains("setuid0=true");
            // Any effective capability (in the sandbox's namespace) counts as gained privilege.
            let eff_nonzero = out
                .split_whitespace()
                .find_map(|w| w.strip_prefix("capeff="))
                .is_none_or(|v| !v.trim_start_matches('0').is_empty());
            (!gained && !eff_nonzero, format!("{path} as user: {out}"))
        }
    }
}

fn run_setuid_binary(_: &Ctx) -> Outcome {
    run_whoami(SUID_PATH)
}

fn run_fcaps_binary(_: &Ctx) -> Outcome {
    run_whoami(FCAPS_PATH)
}

fn capset_sys_admin(_: &Ctx) -> Outcome {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let r = forked(|| {
        let mut h = Header {
            version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
            pid: 0,
        };
        let mut d = [Data {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        }; 2];
        // SAFETY: h and d are valid v3 capget arguments.
        unsafe { libc::syscall(libc::SYS_capget, &raw mut h, d.as_mut_ptr()) };
        // CAP_SYS_ADMIN (21) and CAP_SYS_MODULE (16), neither in the sandbox's bounding set.
        let want = (1u32 << 21) | (1 << 16);
        d[0].effective |= want;
        d[0].permitted |= want;
        // SAFETY: as above.
        let ret = unsafe { libc::syscall(libc::SYS_capset, &raw mut h, d.as_ptr()) };
        if ret == 0 {
            1
        } else if errno() == libc::EPERM {
            0
        } else {
            2
        }
    });
    match r {
        Ok(0) => (true, "capset(+SYS_ADMIN,+SYS_MODULE): EPERM".into()),
        Ok(1) => (false, "capset gained CAP_SYS_ADMIN".into()),
        other => (false, format!("unexpected: {other:?}")),
    }
}

fn clear_no_new_privs(_: &Ctx) -> Outcome {
    // SAFETY: prctl with integer arguments.
    let ret = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 0, 0, 0, 0) };
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let nnp = status
        .lines()
        .find(|l| l.starts_with("NoNewPrivs:"))
        .unwrap_or("NoNewPrivs: ?")
        .to_owned();
    (
        nnp.ends_with('1'),
        format!(
            "prctl(PR_SET_NO_NEW_PRIVS, 0) = {ret} ({}); {nnp}",
            if ret == 0 { "ok" } else { "refused" }
        ),
    )
}

/// `--mode=child`: what a freshly exec'd, arbitrary program is left with. Exit 0 when still confined.
fn child_mode() -> i32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let seccomp = status
        .lines()
        .any(|l| l.starts_with("Seccomp:") && l.ends_with('2'));
    let _ = std::fs::create_dir_all("/tmp/.probe-mnt3");
    // SAFETY: valid C strings.
    let ret = unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            c"/tmp/.probe-mnt3".as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    println!("seccomp_filter={seccomp} mount={ret}");
    i32::from(!(seccomp && ret != 0))
}

fn exec_without_seccomp(_: &Ctx) -> Outcome {
    // The filter must survive execve of any file: copy ourselves somewhere new and run that copy.
    let copy = "/tmp/.probe-exec-copy";
    let _ = std::fs::remove_file(copy);
    if let Err(e) = std::fs::copy("/proc/self/exe", copy) {
        return (false, format!("copy: {e}"));
    }
    let _ = std::fs::set_permissions(copy, std::fs::Permissions::from_mode(0o755));
    let out = match std::process::Command::new(copy)
        .arg("--mode=child")
        .output()
    {
        Err(e) => (false, format!("exec {copy}: {e}")),
        Ok(o) => (
            o.status.success(),
            format!(
                "exec'd copy: {} ({})",
                String::from_utf8_lossy(&o.stdout).trim(),
                o.status
            ),
        ),
    };
    let _ = std::fs::remove_file(copy);
    out
}

fn setrlimit_raise(_: &Ctx) -> Outcome {
    let mut notes = Vec::new();
    for (res, name) in [
        (libc::RLIMIT_NOFILE, "NOFILE"),
        (libc::RLIMIT_NPROC, "NPROC"),
        (libc::RLIMIT_MEMLOCK, "MEMLOCK"),
    ] {
        let mut rl = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: rl is a valid out pointer.
        unsafe { libc::getrlimit(res, &raw mut rl) };
        if rl.rlim_max == libc::RLIM_INFINITY {
            notes.push(format!("{name}: hard limit already unlimited"));
            continue;
        }
        let raised = libc::rlimit {
            rlim_cur: rl.rlim_cur,
            rlim_max: rl.rlim_max + 1,
        };
        // SAFETY: raised is a valid rlimit.
        let ret = unsafe { libc::setrlimit(res, &raw const raised) };
        if ret == 0 {
            // SAFETY: put it back.
            unsafe { libc::setrlimit(res, &raw const rl) };
            return (
                false,
                format!("{name}: hard limit raised past {}", rl.rlim_max),
            );
        }
        notes.push(format!(
            "{name} hard {} -> +1: {}",
            rl.rlim_max,
            err_str(errno())
        ));
    }
    (true, notes.join("; "))
}

// ---------------------------------------------------------------------------------------------------
// host clock and name

fn settimeofday(_: &Ctx) -> Outcome {
    // "Now": if it ever gets through, the host clock barely moves.
    let ts = now_timespec();
    let tv = libc::timeval {
        tv_sec: ts.tv_sec,
        tv_usec: ts.tv_nsec / 1000,
    };
    // SAFETY: tv is valid; no timezone.
    let ret = unsafe { libc::settimeofday(&raw const tv, std::ptr::null()) };
    judge_sys(ret.into(), "settimeofday(now)")
}

fn clock_settime(_: &Ctx) -> Outcome {
    let ts = now_timespec();
    // SAFETY: ts is valid.
    let ret = unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &raw const ts) };
    judge_sys(ret.into(), "clock_settime(REALTIME, now)")
}

fn sethostname(ctx: &Ctx) -> Outcome {
    // Allowed in the sandbox's own UTS namespace (root inside owns it): only the host's hostname
    // matters, and the test compares it. The sandbox's name is restored afterwards.
    let before = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name = b"sandpit-probe-escaped";
    // SAFETY: name is a valid byte buffer.
    let ret = unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) };
    let set_errno = errno();
    let via_proc = std::fs::write("/proc/sys/kernel/hostname", "sandpit-probe-escaped");
    let after = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    if ret == 0 || via_proc.is_ok() {
        let b = before.trim().as_bytes();
        // SAFETY: b is a valid byte buffer.
        unsafe { libc::sethostname(b.as_ptr().cast(), b.len()) };
    }
    let how = if ret == 0 {
        "sethostname worked".to_owned()
    } else {
        format!("sethostname: {}", err_str(set_errno))
    };
    (
        true,
        format!(
            "{how}; /proc/sys/kernel/hostname write: {via_proc:?}; inside it read {:?}; namespaced \
             (root={}): the test checks the host's hostname",
            after.trim(),
            ctx.root
        ),
    )
}

fn kill_minus_one(_: &Ctx) -> Outcome {
    // Every process the caller may signal, except itself: inside a pid namespace that is the
    // sandbox's own processes. Whether anything outside died is checked by the test on the host.
    // SAFETY: SIGKILL to -1 never hits the caller.
    let ret = unsafe { libc::kill(-1, libc::SIGKILL) };
    let d = if ret == 0 {
        "kill(-1, SIGKILL) = 0".to_owned()
    } else {
        format!("kill(-1, SIGKILL): {}", err_str(errno()))
    };
    (
        true,
        format!(
            "{d}; the sandbox's pid namespace bounds it: the test checks host processes survive"
        ),
    )
}
