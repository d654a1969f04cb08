//! Host capability checks run once by `Isolator::new`, so that a host lacking something gets one
//! clear error naming what is missing and what to do, instead of an obscure errno at the first
//! sandbox creation.

use std::fs;
use std::path::{Path, PathBuf};

/// A missing host feature.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("sandpit's Linux sandboxes need root (euid 0); run the service as root")]
    NotRoot,
    #[error(
        "user namespaces are unavailable ({0}); enable them (CONFIG_USER_NS, sysctl \
         user.max_user_namespaces > 0)"
    )]
    NoUserNamespaces(String),
    #[error(
        "the kernel lacks the `{0}` filesystem; load it (`modprobe {0}`) or enable it in the kernel"
    )]
    MissingFilesystem(&'static str),
    #[error(
        "the kernel lacks the new mount API or idmapped mounts (`{0}`: {1}); Linux >= 5.12 is required"
    )]
    OldKernel(&'static str, std::io::Error),
    #[error("seccomp filtering is unavailable (CONFIG_SECCOMP_FILTER); enable it in the kernel")]
    NoSeccomp,
    #[error(
        "the agent binary {0} does not exist or is not an executable file; pass the path of the `sandpit` binary"
    )]
    NoAgent(PathBuf),
}

pub(crate) fn check(agent: &Path) -> Result<(), HostError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(HostError::NotRoot);
    }
    if !Path::new("/proc/self/ns/user").exists() {
        return Err(HostError::NoUserNamespaces("no /proc/self/ns/user".into()));
    }
    let max = fs::read_to_string("/proc/sys/user/max_user_namespaces").unwrap_or_default();
    if max.trim() == "0" {
        return Err(HostError::NoUserNamespaces(
            "user.max_user_namespaces = 0".into(),
        ));
    }
    let filesystems = fs::read_to_string("/proc/filesystems").unwrap_or_default();
    for fs_name in ["overlay", "tmpfs", "proc", "devpts"] {
        if !filesystems
            .lines()
            .any(|l| l.split_whitespace().last() == Some(fs_name))
        {
            return Err(HostError::MissingFilesystem(fs_name));
        }
    }
    if let Err(e) = crate::sys::FsContext::open(c"tmpfs") {
        return Err(HostError::OldKernel("fsopen", e));
    }
    // mount_setattr on an invalid fd: EBADF means the syscall exists, ENOSYS that it does not.
    // SAFETY: the kernel validates the (null) attribute pointer and the bad fd.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            -1,
            c"".as_ptr(),
            0,
            std::ptr::null::<u8>(),
            0,
        )
    };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOSYS) {
            return Err(HostError::OldKernel("mount_setattr", e));
        }
    }
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    if !status.lines().any(|l| l.starts_with("Seccomp:")) {
        return Err(HostError::NoSeccomp);
    }
    let is_exec = fs::metadata(agent).is_ok_and(|m| {
        use std::os::unix::fs::PermissionsExt;
        m.is_file() && m.permissions().mode() & 0o111 != 0
    });
    if !is_exec {
        return Err(HostError::NoAgent(agent.to_path_buf()));
    }
    Ok(())
}

/// Whether the ELF executable at `path` names a program interpreter (`PT_INTERP`): a dynamically linked
/// binary, which runs only where its loader and libraries are, so not in a template without them.
///
/// # Errors
/// The file cannot be read, or is not a 64-bit little-endian ELF file.
pub fn needs_interpreter(path: &Path) -> std::io::Result<bool> {
    use std::io::{Error, ErrorKind, Read, Seek, SeekFrom};
    const PT_INTERP: u32 = 3;
    let bad = || {
        Error::new(
            ErrorKind::InvalidData,
            "not a 64-bit little-endian ELF executable",
        )
    };
    let mut f = fs::File::open(path)?;
    let mut ehdr = [0u8; 64];
    f.read_exact(&mut ehdr)?;
    if &ehdr[..4] != b"\x7fELF" || ehdr[4] != 2 || ehdr[5] != 1 {
        return Err(bad());
    }
    let phoff = u64::from_le_bytes(ehdr[32..40].try_into().map_err(|_| bad())?);
    let phentsize = u64::from(u16::from_le_bytes([ehdr[54], ehdr[55]]));
    let phnum = u16::from_le_bytes([ehdr[56], ehdr[57]]);
    if phentsize < 4 {
        return Err(bad());
    }
    for i in 0..u64::from(phnum) {
        f.seek(SeekFrom::Start(phoff + i * phentsize))?;
        let mut p_type = [0u8; 4];
        f.read_exact(&mut p_type)?;
        if u32::from_le_bytes(p_type) == PT_INTERP {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_binary_needs_an_interpreter_and_a_text_file_is_no_elf() {
        // The test binary itself is linked dynamically (a plain `cargo test`).
        let me = std::env::current_exe().unwrap();
        assert!(needs_interpreter(&me).unwrap());
        let tmp = tempfile::NamedTempFile::new().unwrap();
        fs::write(
            tmp.path(),
            "#!/bin/sh\necho not elf, but long enough to hold an ELF header........\n",
        )
        .unwrap();
        assert!(needs_interpreter(tmp.path()).is_err());
    }
}
