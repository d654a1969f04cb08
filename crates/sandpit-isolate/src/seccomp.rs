//! The seccomp policy of every sandbox: a deny list (the sandbox runs arbitrary user code, so an
//! allow list would break real workloads) of syscalls that are only useful to escape or to attack
//! the shared kernel. Namespaces, capabilities and the uid mapping already stop most of these; the
//! filter is the second wall, and the one that stops a sandbox from creating a nested user
//! namespace where it would regain `CAP_SYS_ADMIN` and mount filesystems.
//!
//! Programs are compiled in the parent (allocation is fine there) with `seccompiler`; the cloned
//! child only hands the finished BPF to the kernel.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch, sock_filter,
};

/// Errors compiling the filter.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("seccomp filter does not compile: {0}; this is a bug in sandpit-isolate")]
    Compile(#[from] seccompiler::BackendError),
    #[error("seccomp filters are only built for x86_64 and aarch64, not {0}")]
    Arch(&'static str),
}

/// Syscalls denied outright with `EPERM`.
pub const DENIED: &[(&str, libc::c_long)] = &[
    // Mounting: the rootfs is final once the init runs.
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("move_mount", libc::SYS_move_mount),
    ("open_tree", libc::SYS_open_tree),
    ("fsopen", libc::SYS_fsopen),
    ("fsconfig", libc::SYS_fsconfig),
    ("fsmount", libc::SYS_fsmount),
    ("fspick", libc::SYS_fspick),
    ("mount_setattr", libc::SYS_mount_setattr),
    // Kernel code loading and replacement.
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    // Large kernel attack surface with a history of exploits.
    ("bpf", libc::SYS_bpf),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
    // The kernel keyring is not namespaced.
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    // File handles bypass path-based confinement (the "shocker" escape).
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("name_to_handle_at", libc::SYS_name_to_handle_at),
    // Joining other namespaces.
    ("setns", libc::SYS_setns),
    // Host-global state.
    ("swapon", libc::SYS_swapon),
    ("swapoff", libc::SYS_swapoff),
    ("reboot", libc::SYS_reboot),
    ("acct", libc::SYS_acct),
    ("syslog", libc::SYS_syslog),
    ("quotactl", libc::SYS_quotactl),
    ("quotactl_fd", libc::SYS_quotactl_fd),
    ("settimeofday", libc::SYS_settimeofday),
    ("clock_settime", libc::SYS_clock_settime),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    ("adjtimex", libc::SYS_adjtimex),
    ("vhangup", libc::SYS_vhangup),
    #[cfg(target_arch = "x86_64")]
    ("iopl", libc::SYS_iopl),
    #[cfg(target_arch = "x86_64")]
    ("ioperm", libc::SYS_ioperm),
    #[cfg(target_arch = "x86_64")]
    ("uselib", libc::SYS_uselib),
    #[cfg(target_arch = "x86_64")]
    ("lookup_dcookie", libc::SYS_lookup_dcookie),
];

/// Namespace-creating flags refused to `unshare` and `clone`.
const NS_FLAGS: [u64; 7] = [
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
];
/// `CLONE_NEWTIME` shares its bit with clone's exit-signal byte, so it is only checked on unshare.
const CLONE_NEWTIME: u64 = 0x80;

fn arch() -> Result<TargetArch, FilterError> {
    match std::env::consts::ARCH {
        "x86_64" => Ok(TargetArch::x86_64),
        "aarch64" => Ok(TargetArch::aarch64),
        other => Err(FilterError::Arch(other)),
    }
}

fn flag_rules(flags: &[u64]) -> Result<Vec<SeccompRule>, FilterError> {
    flags
        .iter()
        .map(|&f| {
            Ok(SeccompRule::new(vec![SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(f),
                f,
            )?])?)
        })
        .collect()
}

/// The filters to install, in order. Several programs because each `seccompiler` filter has one
/// match action and `clone3` needs `ENOSYS` (so libc falls back to `clone`, whose flags the filter
/// can inspect) rather than `EPERM`.
pub fn build() -> Result<Vec<BpfProgram>, FilterError> {
    let arch = arch()?;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        DENIED.iter().map(|&(_, nr)| (nr, Vec::new())).collect();
    let mut unshare_flags = NS_FLAGS.to_vec();
    unshare_flags.push(CLONE_NEWTIME);
    rules.insert(libc::SYS_unshare, flag_rules(&unshare_flags)?);
    rules.insert(libc::SYS_clone, flag_rules(&NS_FLAGS)?);
    let deny = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )?;
    let clone3 = SeccompFilter::new(
        std::iter::once((libc::SYS_clone3, Vec::new())).collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )?;
    let mut programs = vec![BpfProgram::try_from(deny)?, BpfProgram::try_from(clone3)?];
    if arch == TargetArch::x86_64 {
        programs.push(x32_block());
    }
    Ok(programs)
}

/// On `x86_64` the x32 ABI reaches the same syscalls with bit 30 set in the number, which the
/// number-keyed filters above would not match: refuse all of them.
fn x32_block() -> BpfProgram {
    const BPF_LD_W_ABS: u16 = 0x20;
    const BPF_JMP_JSET_K: u16 = 0x45;
    const BPF_RET_K: u16 = 0x06;
    let errno = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
    vec![
        // Load seccomp_data.nr (offset 0).
        sock_filter {
            code: BPF_LD_W_ABS,
            jt: 0,
            jf: 0,
            k: 0,
        },
        sock_filter {
            code: BPF_JMP_JSET_K,
            jt: 0,
            jf: 1,
            k: 0x4000_0000,
        },
        sock_filter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: errno,
        },
        sock_filter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ALLOW,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_compile() {
        let p = build().unwrap();
        assert!(p.len() >= 2);
        assert!(p.iter().all(|f| !f.is_empty() && f.len() < 4096));
    }
}
