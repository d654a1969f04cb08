//! System calls, and a `clone3` that starts a function on a stack of its own, without libc: what the
//! sandbox's first process uses between `clone` and `execve` ([`crate::child`]).
//!
//! That child shares the daemon's memory (`CLONE_VM`, as `posix_spawn` does): no page tables are copied
//! and the daemon takes no copy-on-write faults afterwards (with a fork-style clone, each such fault in a
//! multi-threaded daemon flushed the TLB of every core: a quarter of all CPU time in a burst of 100
//! creates). Sharing memory, the child must write nothing but its own stack — and libc's wrappers write
//! `errno` into the thread-local block of the daemon thread that cloned it, which keeps running. So the
//! child makes its system calls here: the kernel's return value (`-errno` on failure), nothing else
//! touched.
//!
//! `x86_64` only (the one architecture this is tested on); elsewhere [`VM_CLONE`] is false, the child is a
//! fork-style clone (its own copy of memory) and [`syscall`] goes through libc.

use std::io;

/// Whether [`clone3_on_stack`] exists here (the child may then share the daemon's memory).
pub(crate) const VM_CLONE: bool = cfg!(target_arch = "x86_64");

/// A raw system call with up to six arguments: the result, or `-errno`. Touches no thread-local state.
///
/// # Safety
/// As the system call `nr` with these arguments; pointers must be valid for what the kernel does with
/// them.
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) unsafe fn syscall(nr: libc::c_long, a: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: the Linux x86_64 system call convention: number in rax, arguments in rdi, rsi, rdx, r10,
    // r8, r9; the kernel clobbers rcx and r11 and returns in rax. The caller vouches for the arguments.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") nr as isize => ret,
            in("rdi") a[0],
            in("rsi") a[1],
            in("rdx") a[2],
            in("r10") a[3],
            in("r8") a[4],
            in("r9") a[5],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// Fallback through libc (the child then has its own copy of memory, so `errno` is its own).
///
/// # Safety
/// As the system call `nr` with these arguments.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) unsafe fn syscall(nr: libc::c_long, a: [usize; 6]) -> isize {
    // SAFETY: as the caller vouches.
    let r = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) };
    if r < 0 {
        // SAFETY: __errno_location always returns this thread's errno.
        -(unsafe { *libc::__errno_location() }) as isize
    } else {
        r as isize
    }
}

/// `clone3(args)`, the child running `entry(arg)` on the stack `args` names (`stack`, `stack_size`);
/// `entry` must never return. Returns the child's pid in the parent.
///
/// # Safety
/// `args` must be a valid `struct clone_args` of `size` bytes whose stack is mapped and unused, and
/// `entry` must be safe to run in the child with `arg` under the flags given (with `CLONE_VM`: writing
/// nothing but that stack, see the module header).
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn clone3_on_stack(
    args: *mut u8,
    size: usize,
    entry: unsafe extern "C" fn(*const libc::c_void) -> !,
    arg: *const libc::c_void,
) -> io::Result<i32> {
    let ret: isize;
    // SAFETY: clone3 returns twice. In the parent, rax holds the pid (or -errno) and nothing else changed
    // but rcx and r11. In the child, the kernel has switched rsp to the top of the new stack (16-byte
    // aligned, as the caller mapped it), so the child must not return into this function's frame: it
    // clears the frame pointer and calls `entry(arg)` (kept in r12/r13, which the kernel preserves);
    // `entry` never returns (`ud2` would trap if it did).
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r13",
            "call r12",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 as isize => ret,
            in("rdi") args,
            in("rsi") size,
            in("r12") entry,
            in("r13") arg,
            lateout("rcx") _,
            lateout("r11") _,
        );
    }
    if ret < 0 {
        Err(io::Error::from_raw_os_error(-ret as i32))
    } else {
        Ok(ret as i32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_call_returns_minus_errno_and_leaves_errno_alone() {
        // SAFETY: setting this thread's errno, then a close of a descriptor that cannot be open.
        unsafe { *libc::__errno_location() = 1234 };
        // SAFETY: close(2) of an invalid descriptor only fails.
        let r = unsafe { syscall(libc::SYS_close, [usize::MAX >> 1, 0, 0, 0, 0, 0]) };
        assert_eq!(r, -(libc::EBADF as isize));
        if VM_CLONE {
            // SAFETY: reading this thread's errno.
            assert_eq!(unsafe { *libc::__errno_location() }, 1234);
        }
        // SAFETY: getpid cannot fail.
        let pid = unsafe { syscall(libc::SYS_getpid, [0; 6]) };
        assert_eq!(pid, std::process::id() as isize);
    }
}
