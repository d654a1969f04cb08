//! The seccomp policy of every sandbox: a deny list (the sandbox runs arbitrary user code, so an
//! allow list would break real workloads) of syscalls that are only useful to escape or to attack
//! the shared kernel. Namespaces, capabilities and the uid mapping already stop most of these; the
//! filter is the second wall, and the one that stops a sandbox from creating a nested user
//! namespace where it would regain `CAP_SYS_ADMIN` and mount filesystems.
//!
//! The program is compiled once, in the parent (allocation is fine there); the cloned child only
//! hands the finished BPF to the kernel. It is one program that finds a syscall number by binary
//! search, not `seccompiler`'s chain of one test per syscall: installing a filter, the kernel runs it
//! once per syscall number to learn which ones it may allow without running it again (its action
//! cache), so the chain's length was paid about 450 times on every create (~170 us of ~180 us to
//! install the three programs it took, measured; this program installs in a fraction of that). The
//! policy it implements is checked against `seccompiler`'s compile of the same policy, for every
//! syscall number and a set of arguments, in this module's tests.

use std::collections::BTreeMap;

use seccompiler::sock_filter;

/// Errors compiling the filter.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("seccomp filter does not compile: {0}; this is a bug in sandpit-isolate")]
    Compile(String),
    #[error("seccomp filters are only built for x86_64 and aarch64, not {0}")]
    Arch(&'static str),
}

/// A loadable classic-BPF program.
pub type BpfProgram = Vec<sock_filter>;

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

/// `AUDIT_ARCH_*` of the architecture this daemon runs on: a syscall made with any other calling
/// convention (a 32-bit one on `x86_64`) kills the process, as in `seccompiler`.
fn audit_arch() -> Result<u32, FilterError> {
    match std::env::consts::ARCH {
        // AUDIT_ARCH_X86_64 / AUDIT_ARCH_AARCH64 (linux/audit.h).
        "x86_64" => Ok(0xC000_003E),
        "aarch64" => Ok(0xC000_00B7),
        other => Err(FilterError::Arch(other)),
    }
}

/// What the filter does with one syscall number (every number not listed is allowed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// Refused with this errno whatever its arguments.
    Errno(u32),
    /// Refused with `EPERM` when its first argument has any of these (single-bit) flags.
    EpermIfFlags(u32),
}

/// The policy, by syscall number.
fn policy() -> BTreeMap<u32, Verdict> {
    let eperm = Verdict::Errno(libc::EPERM as u32);
    let mut v: BTreeMap<u32, Verdict> = DENIED.iter().map(|&(_, nr)| (nr as u32, eperm)).collect();
    let ns = NS_FLAGS.iter().fold(0, |m, &f| m | f as u32);
    v.insert(libc::SYS_clone as u32, Verdict::EpermIfFlags(ns));
    v.insert(
        libc::SYS_unshare as u32,
        Verdict::EpermIfFlags(ns | CLONE_NEWTIME as u32),
    );
    // `ENOSYS`, so that libc falls back to `clone`, whose flags the filter can read (clone3 passes
    // them in memory).
    v.insert(libc::SYS_clone3 as u32, Verdict::Errno(libc::ENOSYS as u32));
    v
}

// Classic BPF opcodes (linux/bpf_common.h).
const LD_W_ABS: u16 = 0x20;
const JMP_JA: u16 = 0x05;
const JMP_JEQ_K: u16 = 0x15;
const JMP_JGE_K: u16 = 0x35;
const JMP_JSET_K: u16 = 0x45;
const RET_K: u16 = 0x06;
// Offsets in `struct seccomp_data`: nr, arch, then args[0] (its low 32 bits first, little-endian).
const NR: u32 = 0;
const ARCH: u32 = 4;
const ARG0_LOW: u32 = 16;

/// Where a jump goes: an instruction of the program being built, or one of the shared endings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Next,
    At(usize),
    Allow,
    Errno(u32),
}

/// A program with symbolic jump targets, resolved once every instruction is placed.
#[derive(Default)]
struct Asm {
    code: Vec<(u16, u32, Target, Target)>,
}

impl Asm {
    fn stmt(&mut self, code: u16, k: u32) {
        self.code.push((code, k, Target::Next, Target::Next));
    }
    fn jump(&mut self, code: u16, k: u32, jt: Target, jf: Target) -> usize {
        self.code.push((code, k, jt, jf));
        self.code.len() - 1
    }

    /// Lays out the shared endings after the body and resolves every jump (forward only, at most
    /// 255 instructions for a conditional jump, as classic BPF requires).
    fn finish(self) -> Result<BpfProgram, FilterError> {
        let body = self.code.len();
        let mut endings: Vec<Target> = vec![Target::Allow];
        for &(_, _, jt, jf) in &self.code {
            for t in [jt, jf] {
                if matches!(t, Target::Errno(_)) && !endings.contains(&t) {
                    endings.push(t);
                }
            }
        }
        let place = |i: usize, t: Target| -> Result<u32, FilterError> {
            let to = match t {
                Target::Next => i + 1,
                Target::At(at) => at,
                ending => body + endings.iter().position(|e| *e == ending).unwrap_or(0),
            };
            to.checked_sub(i + 1)
                .and_then(|off| u32::try_from(off).ok())
                .ok_or_else(|| FilterError::Compile(format!("backward jump at {i}")))
        };
        let mut out = Vec::with_capacity(body + endings.len());
        for (i, &(code, k, jt, jf)) in self.code.iter().enumerate() {
            let (jt, jf) = (place(i, jt)?, place(i, jf)?);
            if code == JMP_JA {
                out.push(sock_filter {
                    code,
                    jt: 0,
                    jf: 0,
                    k: jt,
                });
                continue;
            }
            let short = |o: u32| {
                u8::try_from(o).map_err(|_| FilterError::Compile(format!("jump too far at {i}")))
            };
            let (jt, jf) = if code & 0x07 == 0x05 {
                (short(jt)?, short(jf)?)
            } else {
                (0, 0)
            };
            out.push(sock_filter { code, jt, jf, k });
        }
        for e in endings {
            let k = match e {
                Target::Errno(errno) => libc::SECCOMP_RET_ERRNO | (errno & libc::SECCOMP_RET_DATA),
                _ => libc::SECCOMP_RET_ALLOW,
            };
            out.push(sock_filter {
                code: RET_K,
                jt: 0,
                jf: 0,
                k,
            });
        }
        Ok(out)
    }
}

/// Emits a binary search for the accumulator (a syscall number) among `entries` (sorted by number,
/// the `first`th onwards of the policy): a number with an errno verdict jumps to that ending, one with
/// an argument check is recorded in `fixups` (jump, entry) to be pointed at its check once that is
/// placed, and any other number is allowed.
fn search(
    asm: &mut Asm,
    entries: &[(u32, Verdict)],
    first: usize,
    fixups: &mut Vec<(usize, usize)>,
) {
    if entries.len() <= 3 {
        for (i, &(nr, verdict)) in entries.iter().enumerate() {
            let found = match verdict {
                Verdict::Errno(e) => Target::Errno(e),
                // Patched to the entry's argument check once that is placed.
                Verdict::EpermIfFlags(_) => Target::Allow,
            };
            let at = asm.jump(JMP_JEQ_K, nr, found, Target::Next);
            if matches!(verdict, Verdict::EpermIfFlags(_)) {
                fixups.push((at, first + i));
            }
        }
        asm.jump(JMP_JA, 0, Target::Allow, Target::Allow);
        return;
    }
    let mid = entries.len() / 2;
    let split = asm.jump(JMP_JGE_K, entries[mid].0, Target::Allow, Target::Next);
    search(asm, &entries[..mid], first, fixups);
    let right = asm.code.len();
    asm.code[split].2 = Target::At(right);
    search(asm, &entries[mid..], first + mid, fixups);
}

/// Compiles `policy` for the architecture `arch` (an `AUDIT_ARCH_*` value).
fn compile(
    arch: u32,
    x32: bool,
    policy: &BTreeMap<u32, Verdict>,
) -> Result<BpfProgram, FilterError> {
    let mut asm = Asm::default();
    asm.stmt(LD_W_ABS, ARCH);
    asm.jump(JMP_JEQ_K, arch, Target::At(3), Target::Next);
    asm.stmt(RET_K, libc::SECCOMP_RET_KILL_PROCESS);
    asm.stmt(LD_W_ABS, NR);
    if x32 {
        // On `x86_64` the x32 ABI reaches the same syscalls with bit 30 set in the number, which the
        // search below would not match: refuse all of them.
        asm.jump(
            JMP_JSET_K,
            0x4000_0000,
            Target::Errno(libc::ENOSYS as u32),
            Target::Next,
        );
    }
    let entries: Vec<(u32, Verdict)> = policy.iter().map(|(&n, &v)| (n, v)).collect();
    let mut fixups = Vec::new();
    search(&mut asm, &entries, 0, &mut fixups);
    // The argument checks, one block per syscall that has one.
    for (at, entry) in fixups {
        let Verdict::EpermIfFlags(flags) = entries[entry].1 else {
            continue;
        };
        let block = asm.code.len();
        asm.code[at].2 = Target::At(block);
        asm.stmt(LD_W_ABS, ARG0_LOW);
        asm.jump(
            JMP_JSET_K,
            flags,
            Target::Errno(libc::EPERM as u32),
            Target::Allow,
        );
    }
    asm.finish()
}

/// The filters to install, in order (one program: the policy above).
pub fn build() -> Result<Vec<BpfProgram>, FilterError> {
    let arch = audit_arch()?;
    Ok(vec![compile(
        arch,
        cfg!(target_arch = "x86_64"),
        &policy(),
    )?])
}

#[cfg(test)]
mod tests {
    use super::*;
    use seccompiler::{
        SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
        SeccompRule, TargetArch,
    };

    /// The same policy as `seccompiler` compiles it (how the filter was built before): a deny
    /// program, a `clone3` program and the x32 block, installed in that order.
    fn reference() -> Vec<Vec<sock_filter>> {
        let arch = match std::env::consts::ARCH {
            "aarch64" => TargetArch::aarch64,
            _ => TargetArch::x86_64,
        };
        let flag_rules = |flags: &[u64]| -> Vec<SeccompRule> {
            flags
                .iter()
                .map(|&f| {
                    SeccompRule::new(vec![
                        SeccompCondition::new(
                            0,
                            SeccompCmpArgLen::Qword,
                            SeccompCmpOp::MaskedEq(f),
                            f,
                        )
                        .unwrap(),
                    ])
                    .unwrap()
                })
                .collect()
        };
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
            DENIED.iter().map(|&(_, nr)| (nr, Vec::new())).collect();
        let mut unshare_flags = NS_FLAGS.to_vec();
        unshare_flags.push(CLONE_NEWTIME);
        rules.insert(libc::SYS_unshare, flag_rules(&unshare_flags));
        rules.insert(libc::SYS_clone, flag_rules(&NS_FLAGS));
        let deny = SeccompFilter::new(
            rules,
            SeccompAction::Allow,
            SeccompAction::Errno(libc::EPERM as u32),
            arch,
        )
        .unwrap();
        let clone3 = SeccompFilter::new(
            std::iter::once((libc::SYS_clone3, Vec::new())).collect(),
            SeccompAction::Allow,
            SeccompAction::Errno(libc::ENOSYS as u32),
            arch,
        )
        .unwrap();
        let mut programs = vec![
            seccompiler::BpfProgram::try_from(deny).unwrap(),
            seccompiler::BpfProgram::try_from(clone3).unwrap(),
        ];
        if cfg!(target_arch = "x86_64") {
            let errno = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
            let i = |code, jt, jf, k| sock_filter { code, jt, jf, k };
            programs.push(vec![
                i(LD_W_ABS, 0, 0, NR),
                i(JMP_JSET_K, 0, 1, 0x4000_0000),
                i(RET_K, 0, 0, errno),
                i(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
            ]);
        }
        programs
    }

    /// A classic-BPF interpreter for the instructions seccomp programs use; any other panics.
    fn run(prog: &[sock_filter], data: &[u8; 64]) -> u32 {
        let word = |off: u32| {
            let o = off as usize;
            u32::from_ne_bytes(data[o..o + 4].try_into().unwrap())
        };
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let ins = &prog[pc];
            let k = ins.k;
            pc += 1;
            match ins.code {
                LD_W_ABS => acc = word(k),
                0x54 => acc &= k, // ALU AND K
                RET_K => return k,
                JMP_JA => pc += k as usize,
                JMP_JEQ_K | JMP_JGE_K | 0x25 | JMP_JSET_K => {
                    let taken = match ins.code {
                        JMP_JEQ_K => acc == k,
                        JMP_JGE_K => acc >= k,
                        0x25 => acc > k,
                        _ => acc & k != 0,
                    };
                    pc += usize::from(if taken { ins.jt } else { ins.jf });
                }
                other => panic!("opcode {other:#x} at {}", pc - 1),
            }
        }
    }

    /// The kernel's choice among stacked filters: the most severe action; among equals, that of the
    /// most recently installed filter.
    fn combined(progs: &[Vec<sock_filter>], data: &[u8; 64]) -> u32 {
        let mut ret = libc::SECCOMP_RET_ALLOW;
        for p in progs.iter().rev() {
            let cur = run(p, data);
            let action = |r: u32| (r & libc::SECCOMP_RET_ACTION_FULL) as i32;
            if action(cur) < action(ret) {
                ret = cur;
            }
        }
        ret
    }

    fn data(arch: u32, nr: u32, arg0: u64) -> [u8; 64] {
        let mut d = [0u8; 64];
        d[0..4].copy_from_slice(&nr.to_ne_bytes());
        d[4..8].copy_from_slice(&arch.to_ne_bytes());
        d[16..24].copy_from_slice(&arg0.to_ne_bytes());
        d
    }

    #[test]
    fn the_filter_is_one_short_program() {
        let p = build().unwrap();
        assert_eq!(p.len(), 1);
        let reference: usize = reference().iter().map(Vec::len).sum();
        assert!(
            p[0].len() * 2 < reference,
            "{} instructions against seccompiler's {reference}",
            p[0].len()
        );
    }

    /// Every syscall number (with and without the x32 bit), under every architecture value the
    /// kernel can report here, with first arguments that do and do not carry namespace flags: the
    /// compact program decides exactly what `seccompiler`'s programs decide together.
    #[test]
    fn the_compact_filter_decides_as_seccompilers_programs_do() {
        let ours = build().unwrap();
        let reference = reference();
        let native = audit_arch().unwrap();
        let mut args: Vec<u64> = vec![
            0,
            0x11,                                          // SIGCHLD, as fork's clone passes
            0x0001_0f00 | u64::from(libc::SIGCHLD as u32), // a thread's clone flags
            u64::from(u32::MAX),
            u64::MAX,
            1 << 32,
            CLONE_NEWTIME,
            CLONE_NEWTIME | (1 << 40),
        ];
        for &f in &NS_FLAGS {
            args.extend([f, f | 0x11, f | (1 << 33), !f & 0xffff_ffff]);
        }
        let mut checked = 0;
        for arch in [native, 0x4000_0003, 0xC000_003E, 0xC000_00B7, 0] {
            for base in 0..1024u32 {
                for nr in [base, base | 0x4000_0000, base | 0x8000_0000] {
                    for &a in &args {
                        let d = data(arch, nr, a);
                        assert_eq!(
                            combined(&ours, &d),
                            combined(&reference, &d),
                            "arch {arch:#x} nr {nr} arg0 {a:#x}"
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 100_000);
        // And the policy is what it says: a few decisions spelled out.
        let eperm = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
        let enosys = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
        let d = |nr: libc::c_long, a: u64| data(native, nr as u32, a);
        assert_eq!(combined(&ours, &d(libc::SYS_mount, 0)), eperm);
        assert_eq!(combined(&ours, &d(libc::SYS_clone3, 0)), enosys);
        assert_eq!(
            combined(&ours, &d(libc::SYS_unshare, libc::CLONE_NEWUSER as u64)),
            eperm
        );
        assert_eq!(
            combined(&ours, &d(libc::SYS_unshare, libc::CLONE_FILES as u64)),
            libc::SECCOMP_RET_ALLOW
        );
        assert_eq!(
            combined(&ours, &d(libc::SYS_read, 0)),
            libc::SECCOMP_RET_ALLOW
        );
        assert_eq!(
            combined(&ours, &data(0x4000_0003, libc::SYS_read as u32, 0)),
            libc::SECCOMP_RET_KILL_PROCESS
        );
    }
}
