//! File content: opening a regular file for a streamed (ranged) read, and the atomic write.
//!
//! A write goes to a temporary file in the target's directory and is renamed over the target only when
//! every byte arrived: a reader sees the old file or the new one, never half, and a full disk (or a
//! client that broke off) leaves nothing behind. The new file keeps the old one's mode and owner unless
//! a mode is given. A symlink is written through (its target is replaced, the link stays). A file with
//! several hard links, or whose owner this user cannot give to a new file, is rewritten in place
//! instead (after the new content was fully received into the temporary file), so that the links and
//! the owner survive.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{AtFlags, OFlag, ResolveFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};
use sandpit_types::{Entry, ErrorCode};

use super::ops::{Names, entry_at, mkdir_all};
use super::{FsError, FsResult, open_at, parent};

/// Content small enough to hold that a zero-size file (a `/proc` or `/sys` file) may have.
const PSEUDO_FILE_MAX: u64 = 16 << 20;

/// An open file and the byte range to send.
#[derive(Debug)]
pub struct ReadPlan {
    pub file: File,
    /// The file's size (what `Content-Range` reports).
    pub size: u64,
    pub start: u64,
    /// Bytes to send from `start`.
    pub len: u64,
    /// Whether a `Range` was honoured (206).
    pub partial: bool,
    pub modified: std::time::SystemTime,
    /// A pseudo file's content, read at open (its size says 0).
    pub held: Option<Vec<u8>>,
}

/// Opens `path` (following symlinks) for reading. Only regular files: a directory is 409
/// `is_a_directory`, a fifo, socket or device 400. `range` is a `Range` header value.
pub fn open_for_read(path: &Path, range: Option<&str>) -> FsResult<ReadPlan> {
    let fd = open_at(
        None,
        path,
        OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY,
        Mode::empty(),
        ResolveFlag::empty(),
    )
    .map_err(|e| FsError::errno(e, "read", path))?;
    let st = nix::sys::stat::fstat(fd.as_fd()).map_err(|e| FsError::errno(e, "read", path))?;
    check_regular(&st, path)?;
    let mut file = File::from(fd);
    let mut held = None;
    let mut size = st.st_size.max(0) as u64;
    if size == 0 {
        // Zero-size regular files on pseudo file systems have content: read it now, bounded.
        let mut buf = Vec::new();
        (&mut file)
            .take(PSEUDO_FILE_MAX + 1)
            .read_to_end(&mut buf)
            .map_err(|e| FsError::io(&e, "read", path))?;
        if buf.len() as u64 > PSEUDO_FILE_MAX {
            return Err(FsError::invalid(format!(
                "{} reports no size and has more than {PSEUDO_FILE_MAX} bytes",
                path.display()
            )));
        }
        size = buf.len() as u64;
        held = Some(buf);
    }
    let (start, len, partial) = match range.map(|r| parse_range(r, size)) {
        None | Some(Ok(None)) => (0, size, false),
        Some(Ok(Some((s, e)))) => (s, e - s + 1, true),
        Some(Err(e)) => return Err(e),
    };
    if start > 0 && held.is_none() {
        use std::io::Seek;
        file.seek(std::io::SeekFrom::Start(start))
            .map_err(|e| FsError::io(&e, "read", path))?;
    }
    if let Some(h) = &mut held {
        *h = h[start as usize..(start + len) as usize].to_vec();
    }
    let modified = std::time::SystemTime::UNIX_EPOCH
        + std::time::Duration::new(
            st.st_mtime.max(0) as u64,
            st.st_mtime_nsec.clamp(0, 999_999_999) as u32,
        );
    Ok(ReadPlan {
        file,
        size,
        start,
        len,
        partial,
        modified,
        held,
    })
}

fn check_regular(st: &FileStat, path: &Path) -> FsResult<()> {
    match SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFREG => Ok(()),
        SFlag::S_IFDIR => Err(FsError::new(
            ErrorCode::IsADirectory,
            format!(
                "{} is a directory: list it, or fetch it as a tar (GET /files/tar)",
                path.display()
            ),
        )),
        _ => Err(FsError::invalid(format!(
            "{} is not a regular file (a fifo, socket or device): the files API only reads and \
             writes regular files",
            path.display()
        ))),
    }
}

/// A single `bytes=` range to `(first, last)` inclusive; `None` for a header this server ignores
/// (several ranges, another unit), an error when it starts past the end.
pub fn parse_range(header: &str, size: u64) -> FsResult<Option<(u64, u64)>> {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let unsatisfiable = || {
        FsError::new(
            ErrorCode::RangeNotSatisfiable,
            format!("range {header:?} is outside the file's {size} bytes"),
        )
    };
    let (first, last) = if a.is_empty() {
        let n: u64 = b
            .parse()
            .map_err(|_| FsError::invalid(format!("bad Range {header:?}")))?;
        if n == 0 || size == 0 {
            return Err(unsatisfiable());
        }
        (size.saturating_sub(n), size - 1)
    } else {
        let first: u64 = a
            .parse()
            .map_err(|_| FsError::invalid(format!("bad Range {header:?}")))?;
        let last = if b.is_empty() {
            size.saturating_sub(1)
        } else {
            let l: u64 = b
                .parse()
                .map_err(|_| FsError::invalid(format!("bad Range {header:?}")))?;
            if l < first {
                return Err(FsError::invalid(format!("bad Range {header:?}")));
            }
            l.min(size.saturating_sub(1))
        };
        (first, last)
    };
    if first >= size {
        return Err(unsatisfiable());
    }
    Ok(Some((first, last)))
}

/// The error a body reader returns when the client's body broke off: mapped to 400, not to a disk
/// problem.
#[derive(Debug)]
pub struct BodyError(pub String);

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the request body broke off: {}", self.0)
    }
}

impl std::error::Error for BodyError {}

/// Maps a write-side I/O error: the client's body, or the disk.
fn write_error(e: &std::io::Error, path: &Path) -> FsError {
    if let Some(b) = e.get_ref().and_then(|i| i.downcast_ref::<BodyError>()) {
        return FsError::invalid(format!("{b}; nothing was written to {}", path.display()));
    }
    if let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<FsError>()) {
        return inner.clone();
    }
    FsError::io(e, "write", path)
}

/// Follows symlinks from `path` to the file a write must replace (which may not exist yet). Links are
/// read, never opened: the chain stays inside the sandbox because `/` is the sandbox's root.
fn final_target(path: &Path) -> FsResult<PathBuf> {
    let mut at = path.to_path_buf();
    for _ in 0..40 {
        let (dir, name) = match parent(&at) {
            Ok(x) => x,
            // A missing directory is created later.
            Err(e) if e.code == ErrorCode::NotFound => return Ok(at),
            Err(e) => return Err(e),
        };
        match nix::sys::stat::fstatat(dir.as_fd(), name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFLNK.bits() => {
                // /proc's links (fds, cwd, root, exe) are magic: their text is not where they lead.
                if nix::sys::statfs::fstatfs(&dir)
                    .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::PROC_SUPER_MAGIC)
                {
                    return Err(FsError::invalid(format!(
                        "cannot write {}: the files API does not follow /proc's links",
                        at.display()
                    )));
                }
                let target = nix::fcntl::readlinkat(dir.as_fd(), name.as_os_str())
                    .map_err(|e| FsError::errno(e, "read the link", &at))?;
                let t = Path::new(&target);
                let next = if t.is_absolute() {
                    t.to_path_buf()
                } else {
                    at.parent().unwrap_or(Path::new("/")).join(t)
                };
                at = super::resolve("/", next.as_os_str().as_bytes())?;
            }
            Ok(_) | Err(nix::errno::Errno::ENOENT) => return Ok(at),
            Err(e) => return Err(FsError::errno(e, "write", &at)),
        }
    }
    Err(FsError::invalid(format!(
        "{}: too many levels of symbolic links",
        path.display()
    )))
}

/// Writes `src` to `path` atomically, creating missing parent directories; see the module docs.
/// `mode`: the new file's permission bits (default: the old file's, else 0644).
pub fn write_atomic(
    path: &Path,
    mode: Option<u32>,
    src: &mut dyn Fill,
    names: &Names,
) -> FsResult<Entry> {
    let target = final_target(path)?;
    if let Some(dir) = target.parent() {
        match super::open_path(dir, true) {
            Ok(_) => {}
            Err(e) if e.code == ErrorCode::NotFound => {
                mkdir_all(dir, 0o755)?;
            }
            Err(e) => return Err(e),
        }
    }
    let (dir, name) = parent(&target)?;
    write_at(&dir, &name, &target, mode, None, src, false)?;
    entry_at(&dir, &name, &target, names)
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A temporary name beside `name`, unique in this agent, within the name length limit.
fn temp_name(name: &OsStr) -> OsString {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let suffix = format!(".sandpit-{}-{n}.tmp", std::process::id());
    let mut base = name.as_bytes().to_vec();
    base.truncate(200);
    let mut out = b".".to_vec();
    out.extend_from_slice(&base);
    out.extend_from_slice(suffix.as_bytes());
    OsStr::from_bytes(&out).to_os_string()
}

#[allow(clippy::too_many_lines)] // one sequence of steps, each undone on failure
/// The atomic write of `name` in `dir` (shown as `shown`). `replace_non_regular`: an existing link or
/// special file there is removed first (tar extraction) rather than refused.
pub fn write_at(
    dir: &OwnedFd,
    name: &OsStr,
    shown: &Path,
    mode: Option<u32>,
    mtime: Option<i64>,
    src: &mut dyn Fill,
    replace_non_regular: bool,
) -> FsResult<()> {
    let existing = match nix::sys::stat::fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Some(st),
        Err(nix::errno::Errno::ENOENT) => None,
        Err(e) => return Err(FsError::errno(e, "write", shown)),
    };
    let mut existing = existing.filter(|st| {
        st.st_mode & SFlag::S_IFMT.bits() != SFlag::S_IFLNK.bits() || !replace_non_regular
    });
    if let Some(st) = &existing {
        let is_reg = st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFREG.bits();
        let is_dir = st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFDIR.bits();
        if is_dir {
            return Err(FsError::new(
                ErrorCode::IsADirectory,
                format!("cannot write {}: it is a directory", shown.display()),
            ));
        }
        if !is_reg {
            if replace_non_regular {
                existing = None;
            } else {
                return Err(FsError::invalid(format!(
                    "cannot write {}: it is not a regular file (a fifo, socket or device)",
                    shown.display()
                )));
            }
        }
    }
    // May this user write the existing file? (Renaming over it needs only the directory's permission,
    // which would let a user replace a file they cannot write.)
    let old_fd = match &existing {
        Some(_) => Some(
            open_at(
                Some(dir),
                Path::new(name),
                OFlag::O_WRONLY | OFlag::O_NONBLOCK | OFlag::O_NOFOLLOW,
                Mode::empty(),
                ResolveFlag::RESOLVE_BENEATH,
            )
            .map_err(|e| FsError::errno(e, "write", shown))?,
        ),
        None => None,
    };
    let tmp = temp_name(name);
    let fd = open_at(
        Some(dir),
        Path::new(&tmp),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW,
        Mode::from_bits_truncate(0o600),
        ResolveFlag::RESOLVE_BENEATH,
    )
    .map_err(|e| FsError::errno(e, "write", shown))?;
    let remove_tmp = || {
        let _ = nix::unistd::unlinkat(
            dir.as_fd(),
            tmp.as_os_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
    };
    let mut file = File::from(fd);
    if let Err(e) = src.fill(&mut file) {
        remove_tmp();
        return Err(write_error(&e, shown));
    }
    let finish = || -> FsResult<bool> {
        let m = mode
            .or_else(|| existing.as_ref().map(|st| st.st_mode & 0o7777))
            .unwrap_or(0o644);
        // Ownership first: a chown clears set-id bits, which the mode then puts back.
        let mut in_place = existing.as_ref().is_some_and(|st| st.st_nlink > 1);
        if let Some(st) = existing.as_ref().filter(|_| !in_place) {
            let mine = nix::sys::stat::fstat(file.as_fd())
                .map_err(|e| FsError::errno(e, "write", shown))?;
            if (mine.st_uid, mine.st_gid) != (st.st_uid, st.st_gid) {
                match nix::unistd::fchown(
                    file.as_fd(),
                    Some(nix::unistd::Uid::from_raw(st.st_uid)),
                    Some(nix::unistd::Gid::from_raw(st.st_gid)),
                ) {
                    Ok(()) => {}
                    Err(nix::errno::Errno::EPERM) => in_place = true,
                    Err(e) => return Err(FsError::errno(e, "write", shown)),
                }
            }
        }
        nix::sys::stat::fchmod(file.as_fd(), Mode::from_bits_truncate(m))
            .map_err(|e| FsError::errno(e, "set the mode of", shown))?;
        if let Some(t) = mtime {
            let ts = nix::sys::time::TimeSpec::new(t, 0);
            let _ =
                nix::sys::stat::futimens(file.as_fd(), &nix::sys::time::TimeSpec::UTIME_OMIT, &ts);
        }
        Ok(in_place)
    };
    let in_place = match finish() {
        Ok(v) => v,
        Err(e) => {
            remove_tmp();
            return Err(e);
        }
    };
    if in_place {
        // Keep the inode (its links and owner): copy the complete new content over the old.
        let old = File::from(old_fd.expect("an existing file was opened"));
        let r = (|| -> std::io::Result<()> {
            old.set_len(0)?;
            let mut from = File::from(
                open_at(
                    Some(dir),
                    Path::new(&tmp),
                    OFlag::O_RDONLY | OFlag::O_NOFOLLOW,
                    Mode::empty(),
                    ResolveFlag::RESOLVE_BENEATH,
                )
                .map_err(std::io::Error::from)?,
            );
            let mut to = &old;
            std::io::copy(&mut from, &mut to)?;
            if let Some(m) = mode {
                nix::sys::stat::fchmod(old.as_fd(), Mode::from_bits_truncate(m))
                    .map_err(std::io::Error::from)?;
            }
            Ok(())
        })();
        remove_tmp();
        return r.map_err(|e| FsError::io(&e, "write", shown));
    }
    drop(old_fd);
    nix::fcntl::renameat(dir.as_fd(), tmp.as_os_str(), dir.as_fd(), name).map_err(|e| {
        remove_tmp();
        FsError::errno(e, "write", shown)
    })
}

/// Where a write's content comes from: anything [`Read`] (copied in 256 KiB pieces), or a socket
/// spliced straight into the file ([`super::splice::FromSocket`]).
pub trait Fill {
    /// Writes all of the content to `dst`; the bytes written.
    fn fill(&mut self, dst: &mut File) -> std::io::Result<u64>;
}

impl<R: Read> Fill for R {
    fn fill(&mut self, dst: &mut File) -> std::io::Result<u64> {
        copy(self, dst)
    }
}

/// Copies `src` into `dst` with a large buffer (256 KiB: few system calls for big files).
fn copy(src: &mut dyn Read, dst: &mut File) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 256 << 10];
    let mut total = 0u64;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        dst.write_all(&buf[..n])?;
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_like_http_says() {
        assert_eq!(parse_range("bytes=0-9", 100).unwrap(), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100).unwrap(), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100).unwrap(), Some((90, 99)));
        assert_eq!(parse_range("bytes=50-500", 100).unwrap(), Some((50, 99)));
        assert_eq!(parse_range("bytes=0-1,5-6", 100).unwrap(), None);
        assert_eq!(parse_range("items=0-1", 100).unwrap(), None);
        assert_eq!(
            parse_range("bytes=100-", 100).unwrap_err().code,
            ErrorCode::RangeNotSatisfiable
        );
        assert_eq!(
            parse_range("bytes=x-", 100).unwrap_err().code,
            ErrorCode::InvalidArgument
        );
    }

    #[test]
    fn writes_replace_atomically_keep_mode_and_follow_links() {
        let d = tempfile::tempdir().unwrap();
        let names = Names::default();
        let p = d.path().join("sub/dir/f.txt");
        let e = write_atomic(&p, None, &mut &b"hello"[..], &names).unwrap();
        assert_eq!((e.size, e.mode.as_str()), (5, "0644"));
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        write_atomic(&p, None, &mut &b"again!"[..], &names).unwrap();
        let meta = std::fs::metadata(&p).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
            0o600
        );
        assert_eq!(std::fs::read(&p).unwrap(), b"again!");
        // Through a symlink: the target changes, the link stays.
        let link = d.path().join("link");
        std::os::unix::fs::symlink("sub/dir/f.txt", &link).unwrap();
        let e = write_atomic(&link, Some(0o640), &mut &b"via link"[..], &names).unwrap();
        assert_eq!(e.path, p.display().to_string());
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read(&p).unwrap(), b"via link");
        // Hard links survive (in place).
        let hard = d.path().join("hard");
        std::fs::hard_link(&p, &hard).unwrap();
        write_atomic(&p, None, &mut &b"both"[..], &names).unwrap();
        assert_eq!(std::fs::read(&hard).unwrap(), b"both");
        // A directory is refused; no temporary file is left anywhere.
        assert_eq!(
            write_atomic(d.path().join("sub").as_path(), None, &mut &b"x"[..], &names)
                .unwrap_err()
                .code,
            ErrorCode::IsADirectory
        );
        let leftovers: Vec<_> = std::fs::read_dir(d.path().join("sub/dir"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().contains("sandpit"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn a_broken_body_leaves_nothing() {
        struct Broken(usize);
        impl Read for Broken {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if self.0 == 0 {
                    return Err(std::io::Error::other(BodyError("reset".into())));
                }
                self.0 -= 1;
                buf[0] = b'x';
                Ok(1)
            }
        }
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        let err = write_atomic(&p, None, &mut Broken(3), &Names::default()).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument, "{err}");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }
}
