//! Safe wrappers for the few Linux syscalls that neither `std` nor the `libc` crate wrap: the new
//! mount API (`open_tree`, `mount_setattr`, `fsopen`/`fsconfig`/`fsmount`, `move_mount`) used to
//! build the idmapped overlay rootfs on the host side, plus small helpers around file descriptors.
//!
//! Everything here runs in the (multi-threaded) parent, never in the cloned child: the child has its
//! own allocation-free raw calls in `child.rs`.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in string"))
}

pub(crate) fn path_cstr(p: &Path) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in path"))
}

fn fd_result(rc: libc::c_long) -> io::Result<OwnedFd> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        // SAFETY: the kernel just returned this descriptor to us, nobody else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(rc as RawFd) })
    }
}

fn unit_result(rc: libc::c_long) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `open_tree(OPEN_TREE_CLONE | AT_RECURSIVE)`: a detached copy of the mount tree at `path`.
pub(crate) fn open_tree_clone(path: &Path) -> io::Result<OwnedFd> {
    let p = path_cstr(path)?;
    // SAFETY: `p` is a valid NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            p.as_ptr(),
            libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | libc::AT_RECURSIVE as libc::c_uint,
        )
    };
    fd_result(rc)
}

/// `mount_setattr` on a (detached) mount: set `attr_set`, optionally idmapped through `userns`.
pub(crate) fn mount_setattr(
    mnt: &OwnedFd,
    attr_set: u64,
    userns: Option<&OwnedFd>,
) -> io::Result<()> {
    let mut attr = libc::mount_attr {
        attr_set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.map_or(0, |f| f.as_raw_fd() as u64),
    };
    if userns.is_some() {
        attr.attr_set |= libc::MOUNT_ATTR_IDMAP;
    }
    let empty = c"";
    // SAFETY: `attr` is a properly initialised `struct mount_attr` whose size we pass; `empty` is a
    // static C string.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            mnt.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
            &raw mut attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    unit_result(rc)
}

/// A filesystem context being configured (`fsopen`).
#[derive(Debug)]
pub(crate) struct FsContext(OwnedFd);

impl FsContext {
    pub(crate) fn open(fstype: &CStr) -> io::Result<Self> {
        // SAFETY: `fstype` is a valid C string.
        let rc = unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), libc::FSOPEN_CLOEXEC) };
        fd_result(rc).map(Self)
    }

    pub(crate) fn set(&self, key: &str, value: &str) -> io::Result<()> {
        let k = cstr(key)?;
        let v = cstr(value)?;
        // SAFETY: both strings are valid for the duration of the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                self.0.as_raw_fd(),
                libc::FSCONFIG_SET_STRING,
                k.as_ptr(),
                v.as_ptr(),
                0,
            )
        };
        unit_result(rc)
    }

    /// Creates the superblock and returns a detached mount of it.
    pub(crate) fn mount(self, attrs: u64) -> io::Result<OwnedFd> {
        // SAFETY: plain integer arguments on a descriptor we own.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                self.0.as_raw_fd(),
                libc::FSCONFIG_CMD_CREATE,
                std::ptr::null::<libc::c_char>(),
                std::ptr::null::<libc::c_void>(),
                0,
            )
        };
        unit_result(rc)?;
        // SAFETY: plain integer arguments on a descriptor we own.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_fsmount,
                self.0.as_raw_fd(),
                libc::FSMOUNT_CLOEXEC,
                attrs,
            )
        };
        fd_result(rc)
    }
}

/// `/proc/<pid>/stat`'s start time: with the pid it identifies a process across pid reuse, which is
/// how a persisted handle recognises its init after a restart.
pub(crate) fn process_start_time(pid: i32) -> Option<u64> {
    crate::procfs::ProcStat::read(pid).map(|s| s.starttime)
}

/// The process state letter (`Z` = zombie).
pub(crate) fn process_state(pid: i32) -> Option<char> {
    crate::procfs::ProcStat::read(pid).map(|s| s.state)
}

/// Creates a pipe whose both ends are close-on-exec.
pub(crate) fn pipe_cloexec() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both descriptors are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Waits until `fd` is readable or `timeout` passes; returns whether it became readable.
pub(crate) fn poll_readable(fd: &impl AsRawFd, timeout: std::time::Duration) -> io::Result<bool> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd structure.
        let rc = unsafe { libc::poll(&raw mut pfd, 1, ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        return Ok(rc > 0);
    }
}

/// Sends the child the one-byte message it waits for before it addresses `eth0` (`recv_go` in
/// `child.rs`).
pub(crate) fn send_go(sock: &OwnedFd) -> io::Result<()> {
    // SAFETY: send(2) of a local one-byte buffer on a descriptor we own.
    let rc = unsafe {
        libc::send(
            sock.as_raw_fd(),
            b"g".as_ptr().cast(),
            1,
            libc::MSG_NOSIGNAL,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Sends one descriptor over a unix socket with `SCM_RIGHTS`.
pub(crate) fn send_fd(sock: &OwnedFd, fd: RawFd) -> io::Result<()> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // u64 array keeps the control buffer aligned for cmsghdr.
    let mut cbuf = [0u64; 4];
    // SAFETY: all-zero is a valid msghdr.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &raw mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is a pure computation.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    // SAFETY: the control buffer is large enough for one cmsghdr carrying one int (checked by
    // CMSG_SPACE above, 32 bytes available), and CMSG_FIRSTHDR points inside it.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
    }
    // SAFETY: msg points at live buffers.
    let rc = unsafe { libc::sendmsg(sock.as_raw_fd(), &raw const msg, libc::MSG_NOSIGNAL) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `pidfd_getfd`: a copy of descriptor `fd` of process `pid` (host root may take any process's).
/// `start_time` guards against a reused pid: the copy is only returned while `pid` is still the
/// process that started then.
pub(crate) fn take_fd(pid: i32, start_time: u64, fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: plain integer arguments.
    let pidfd = fd_result(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    if process_start_time(pid) != Some(start_time) {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    // SAFETY: plain integer arguments on a pidfd we own.
    fd_result(unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) })
}

/// The filesystem type (`f_type`) of the filesystem holding `fd`.
pub(crate) fn fs_type(fd: &impl AsRawFd) -> io::Result<i64> {
    // SAFETY: `st` is a properly sized out-parameter.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor and out-pointer.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &raw mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::useless_conversion)]
    Ok(i64::from(st.f_type))
}

/// The extended attribute names of `path` (not following a symlink).
pub(crate) fn xattr_names(path: &Path) -> io::Result<Vec<CString>> {
    let p = path_cstr(path)?;
    let mut buf = vec![0u8; 1024];
    loop {
        // SAFETY: `buf` is writable for its length; `p` is a valid C string.
        let n = unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            buf.truncate(n as usize);
            break;
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ERANGE) && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if e.raw_os_error() == Some(libc::ENOTSUP) {
            return Ok(Vec::new());
        }
        return Err(e);
    }
    Ok(buf
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .filter_map(|n| CString::new(n).ok())
        .collect())
}

/// Copies extended attribute `name` of `src` to `dst` (neither followed if a symlink).
pub(crate) fn copy_xattr(src: &Path, dst: &Path, name: &CStr) -> io::Result<()> {
    let (s, d) = (path_cstr(src)?, path_cstr(dst)?);
    let mut buf = vec![0u8; 4096];
    // SAFETY: `buf` is writable for its length; the strings are valid.
    let n = unsafe {
        libc::lgetxattr(
            s.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `buf` holds `n` valid bytes; the strings are valid.
    let rc = unsafe {
        libc::lsetxattr(
            d.as_ptr(),
            name.as_ptr(),
            buf.as_ptr().cast(),
            n as usize,
            0,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets the access and modification times of `path` (not following a symlink).
pub(crate) fn set_times(path: &Path, atime: (i64, i64), mtime: (i64, i64)) -> io::Result<()> {
    let p = path_cstr(path)?;
    let ts = [
        libc::timespec {
            tv_sec: atime.0,
            tv_nsec: atime.1,
        },
        libc::timespec {
            tv_sec: mtime.0,
            tv_nsec: mtime.1,
        },
    ];
    // SAFETY: valid C string and a two-element timespec array.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            p.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
