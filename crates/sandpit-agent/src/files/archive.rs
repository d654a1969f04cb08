//! Tar in and out: many files in one request.
//!
//! Extraction writes each regular file with the same atomic write as `PUT /files`, and resolves every
//! member's directory with `openat2(RESOLVE_BENEATH)` from the target directory: a member whose path
//! is absolute or climbs out with `..`, or that would be written through a symlink leading out of the
//! target (even one an earlier member created), is skipped and reported, never written. Devices and
//! fifos are skipped and reported too. Archiving walks with directory fds, never follows a link below
//! the top, and streams: a file's bytes go out as they are read.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{AtFlags, OFlag, ResolveFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};
use sandpit_types::files::MAX_WALK_DEPTH;
use sandpit_types::{ErrorCode, SkippedMember, TarResult};

use super::content::{BodyError, write_at};
use super::ops::{Names, entry_at, mkdir_all, open_subdir, read_names};
use super::{FsError, FsResult, open_at};

/// An archive body, plain or gzip.
pub enum TarReader<R: Read> {
    Plain(R),
    Gzip(flate2::read::GzDecoder<R>),
}

impl<R: Read> std::fmt::Debug for TarReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TarReader")
    }
}

impl<R: Read> Read for TarReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(r) => r.read(buf),
            Self::Gzip(r) => r.read(buf),
        }
    }
}

/// A member's path, made relative and checked: `None` when it would leave the target directory.
fn member_path(raw: &[u8]) -> Result<Option<PathBuf>, String> {
    if raw.first() == Some(&b'/') {
        return Err("an absolute path".into());
    }
    let mut out = PathBuf::new();
    for c in Path::new(OsStr::from_bytes(raw)).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err("a path with \"..\" (outside the directory)".into()),
            Component::RootDir | Component::Prefix(_) => return Err("an absolute path".into()),
        }
    }
    if sandpit_types::files::validate_path(out.as_os_str().as_bytes()).is_err()
        && !out.as_os_str().is_empty()
    {
        return Err("a path that is too long".into());
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// Opens (creating when missing) the directory `rel` beneath `root`, never leaving `root`.
fn dir_beneath(root: &OwnedFd, rel: &Path) -> Result<OwnedFd, nix::errno::Errno> {
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
    let how = ResolveFlag::RESOLVE_BENEATH;
    if rel.as_os_str().is_empty() {
        return nix::unistd::dup(root.as_fd());
    }
    match open_at(Some(root), rel, flags, Mode::empty(), how) {
        Ok(fd) => return Ok(fd),
        Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(e),
    }
    let mut cur = nix::unistd::dup(root.as_fd())?;
    for c in rel.components() {
        let Component::Normal(name) = c else { continue };
        match nix::sys::stat::mkdirat(cur.as_fd(), name, Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(e),
        }
        cur = open_at(Some(&cur), Path::new(name), flags, Mode::empty(), how)?;
    }
    Ok(cur)
}

#[allow(clippy::too_many_lines)] // one match over member types
/// Extracts a tar stream into `dir` (created if missing). Stops at the first error that is not a
/// member's own (a full disk, a broken body, a malformed archive); what was written before stays.
pub fn extract_tar(dir: &Path, src: &mut dyn Read, names: &Names) -> FsResult<TarResult> {
    mkdir_all(dir, 0o755)?;
    let root = open_at(
        None,
        dir,
        OFlag::O_PATH | OFlag::O_DIRECTORY,
        Mode::empty(),
        ResolveFlag::empty(),
    )
    .map_err(|e| FsError::errno(e, "extract into", dir))?;
    let mut archive = tar::Archive::new(src);
    let mut result = TarResult {
        entries: Vec::new(),
        skipped: Vec::new(),
    };
    let broken = |e: &std::io::Error, n: usize| -> FsError {
        if let Some(b) = e.get_ref().and_then(|i| i.downcast_ref::<BodyError>()) {
            return FsError::invalid(format!("{b} after {n} archive members"));
        }
        FsError::invalid(format!("not a valid tar archive (after {n} members): {e}"))
    };
    let entries = archive.entries().map_err(|e| broken(&e, 0))?;
    for member in entries {
        let n = result.entries.len() + result.skipped.len();
        let mut member = member.map_err(|e| broken(&e, n))?;
        let raw = member.path_bytes().into_owned();
        let shown_raw = String::from_utf8_lossy(&raw).into_owned();
        let skip = |result: &mut TarResult, reason: String| {
            result.skipped.push(SkippedMember {
                path: shown_raw.clone(),
                reason,
            });
        };
        let rel = match member_path(&raw) {
            Ok(Some(r)) => r,
            Ok(None) => continue, // "./": the directory itself
            Err(why) => {
                skip(&mut result, format!("{why}: not written"));
                continue;
            }
        };
        let full = dir.join(&rel);
        let (parent_rel, name) = (
            rel.parent().unwrap_or(Path::new("")),
            rel.file_name().unwrap_or_default().to_os_string(),
        );
        let header = member.header().clone();
        let kind = header.entry_type();
        let mode = header.mode().ok().map(|m| m & 0o7777);
        let parent_fd = match dir_beneath(&root, parent_rel) {
            Ok(fd) => fd,
            Err(nix::errno::Errno::EXDEV | nix::errno::Errno::ELOOP) => {
                skip(
                    &mut result,
                    "its directory is reached through a symlink that leads out of the target: not written".into(),
                );
                continue;
            }
            Err(e) => return Err(FsError::errno(e, "extract", &full)),
        };
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let mtime = header.mtime().ok().map(|t| t as i64);
                write_at(&parent_fd, &name, &full, mode, mtime, &mut member, true).map_err(
                    |e| {
                        if e.code == ErrorCode::InsufficientStorage {
                            FsError::new(
                                e.code,
                                format!(
                                    "{}; {} members were written before it, {} was not",
                                    e.message,
                                    result.entries.len(),
                                    full.display()
                                ),
                            )
                        } else {
                            e
                        }
                    },
                )?;
            }
            tar::EntryType::Directory => {
                match nix::sys::stat::mkdirat(
                    parent_fd.as_fd(),
                    name.as_os_str(),
                    Mode::from_bits_truncate(mode.unwrap_or(0o755)),
                ) {
                    Ok(()) => {}
                    Err(nix::errno::Errno::EEXIST) => {
                        let st = nix::sys::stat::fstatat(
                            parent_fd.as_fd(),
                            name.as_os_str(),
                            AtFlags::AT_SYMLINK_NOFOLLOW,
                        )
                        .map_err(|e| FsError::errno(e, "extract", &full))?;
                        if st.st_mode & SFlag::S_IFMT.bits() != SFlag::S_IFDIR.bits() {
                            skip(
                                &mut result,
                                "a directory where something else exists: not written".into(),
                            );
                            continue;
                        }
                        if let Some(m) = mode {
                            let sub = open_subdir(&parent_fd, &name)
                                .map_err(|e| FsError::errno(e, "extract", &full))?;
                            let _ =
                                nix::sys::stat::fchmod(sub.as_fd(), Mode::from_bits_truncate(m));
                        }
                    }
                    Err(e) => return Err(FsError::errno(e, "extract", &full)),
                }
            }
            tar::EntryType::Symlink => {
                let Some(target) = member.link_name_bytes().map(std::borrow::Cow::into_owned)
                else {
                    skip(&mut result, "a symlink without a target".into());
                    continue;
                };
                replace_non_dir(&parent_fd, &name, &full)?;
                nix::unistd::symlinkat(
                    OsStr::from_bytes(&target),
                    parent_fd.as_fd(),
                    name.as_os_str(),
                )
                .map_err(|e| FsError::errno(e, "extract", &full))?;
            }
            tar::EntryType::Link => {
                let target = member
                    .link_name_bytes()
                    .map_or(Err("a hard link without a target".into()), |b| {
                        member_path(&b)
                    });
                let target = match target {
                    Ok(Some(t)) => t,
                    Ok(None) => {
                        skip(&mut result, "a hard link to the directory itself".into());
                        continue;
                    }
                    Err(why) => {
                        skip(&mut result, format!("a hard link to {why}: not written"));
                        continue;
                    }
                };
                let Ok(target_dir) = dir_beneath(&root, target.parent().unwrap_or(Path::new("")))
                else {
                    skip(
                        &mut result,
                        "a hard link whose target is outside the directory".into(),
                    );
                    continue;
                };
                replace_non_dir(&parent_fd, &name, &full)?;
                nix::unistd::linkat(
                    target_dir.as_fd(),
                    target.file_name().unwrap_or_default(),
                    parent_fd.as_fd(),
                    name.as_os_str(),
                    AtFlags::empty(),
                )
                .map_err(|e| FsError::errno(e, "extract", &full))?;
            }
            tar::EntryType::XGlobalHeader
            | tar::EntryType::XHeader
            | tar::EntryType::GNULongName
            | tar::EntryType::GNULongLink => continue,
            other => {
                skip(
                    &mut result,
                    format!(
                        "a {} (devices, fifos and sockets are not written)",
                        kind_name(other)
                    ),
                );
                continue;
            }
        }
        result
            .entries
            .push(entry_at(&parent_fd, &name, &full, names)?);
    }
    Ok(result)
}

fn kind_name(k: tar::EntryType) -> &'static str {
    match k {
        tar::EntryType::Char => "character device",
        tar::EntryType::Block => "block device",
        tar::EntryType::Fifo => "fifo",
        _ => "member of an unsupported type",
    }
}

/// Removes what is at `name` unless it is a directory (tar replaces files and links it meets).
fn replace_non_dir(dir: &OwnedFd, name: &OsStr, full: &Path) -> FsResult<()> {
    match nix::sys::stat::fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFDIR.bits() => Err(FsError::new(
            ErrorCode::IsADirectory,
            format!(
                "cannot extract {}: a directory is in the way",
                full.display()
            ),
        )),
        Ok(_) => nix::unistd::unlinkat(dir.as_fd(), name, nix::unistd::UnlinkatFlags::NoRemoveDir)
            .map_err(|e| FsError::errno(e, "extract", full)),
        Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(FsError::errno(e, "extract", full)),
    }
}

/// What `GET /files/tar` archives, opened before the response starts so that a missing or unreadable
/// path is a proper error, not a broken stream.
#[derive(Debug)]
pub struct TarSource {
    top: OwnedFd,
    st: FileStat,
    /// The member name of the top (its base name; empty for `/`).
    name: PathBuf,
    path: PathBuf,
}

impl TarSource {
    pub fn open(path: &Path) -> FsResult<Self> {
        let top = open_at(
            None,
            path,
            OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY,
            Mode::empty(),
            ResolveFlag::empty(),
        )
        .map_err(|e| FsError::errno(e, "archive", path))?;
        let st =
            nix::sys::stat::fstat(top.as_fd()).map_err(|e| FsError::errno(e, "archive", path))?;
        let fmt = st.st_mode & SFlag::S_IFMT.bits();
        if fmt != SFlag::S_IFREG.bits() && fmt != SFlag::S_IFDIR.bits() {
            return Err(FsError::invalid(format!(
                "{} is not a regular file or a directory",
                path.display()
            )));
        }
        Ok(Self {
            top,
            st,
            name: path.file_name().map(PathBuf::from).unwrap_or_default(),
            path: path.to_path_buf(),
        })
    }

    /// Writes the archive to `out`. An error after the first byte can only cut the stream short: the
    /// client sees an incomplete archive, never a silently incomplete one.
    pub fn write(self, out: impl Write) -> FsResult<()> {
        let mut b = tar::Builder::new(out);
        b.follow_symlinks(false);
        let io = |e: std::io::Error, p: &Path| FsError::io(&e, "archive", p);
        if self.st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFREG.bits() {
            append_file(&mut b, &self.name, File::from(self.top), &self.st)
                .map_err(|e| io(e, &self.path))?;
            return b.into_inner().map(|_| ()).map_err(|e| io(e, &self.path));
        }
        if !self.name.as_os_str().is_empty() {
            append_header(&mut b, &self.name, &self.st, None).map_err(|e| io(e, &self.path))?;
        }
        let mut stack: Vec<(OwnedFd, PathBuf, PathBuf, usize)> =
            vec![(self.top, self.name.clone(), self.path.clone(), 1)];
        while let Some((dir, member, path, depth)) = stack.pop() {
            let children = read_names(&dir).map_err(|e| FsError::errno(e, "archive", &path))?;
            for name in children {
                let (m, p) = (member.join(&name), path.join(&name));
                let Ok(st) = nix::sys::stat::fstatat(
                    dir.as_fd(),
                    name.as_os_str(),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                ) else {
                    continue; // removed meanwhile
                };
                let fmt = st.st_mode & SFlag::S_IFMT.bits();
                if fmt == SFlag::S_IFREG.bits() {
                    let fd = open_at(
                        Some(&dir),
                        Path::new(&name),
                        OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOFOLLOW,
                        Mode::empty(),
                        ResolveFlag::RESOLVE_BENEATH,
                    )
                    .map_err(|e| FsError::errno(e, "archive", &p))?;
                    let st = nix::sys::stat::fstat(fd.as_fd())
                        .map_err(|e| FsError::errno(e, "archive", &p))?;
                    append_file(&mut b, &m, File::from(fd), &st).map_err(|e| io(e, &p))?;
                } else if fmt == SFlag::S_IFDIR.bits() {
                    append_header(&mut b, &m, &st, None).map_err(|e| io(e, &p))?;
                    if depth >= MAX_WALK_DEPTH {
                        return Err(FsError::invalid(format!(
                            "{} is more than {MAX_WALK_DEPTH} levels deep",
                            self.path.display()
                        )));
                    }
                    let sub =
                        open_subdir(&dir, &name).map_err(|e| FsError::errno(e, "archive", &p))?;
                    stack.push((sub, m, p, depth + 1));
                } else if fmt == SFlag::S_IFLNK.bits() {
                    let target = nix::fcntl::readlinkat(dir.as_fd(), name.as_os_str())
                        .map_err(|e| FsError::errno(e, "archive", &p))?;
                    append_header(&mut b, &m, &st, Some(&target)).map_err(|e| io(e, &p))?;
                } else if fmt != SFlag::S_IFSOCK.bits() {
                    // Fifos and devices: a header, no data.
                    append_header(&mut b, &m, &st, None).map_err(|e| io(e, &p))?;
                }
            }
        }
        b.into_inner().map(|_| ()).map_err(|e| io(e, &self.path))
    }
}

fn header_for(st: &FileStat) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_mode(st.st_mode & 0o7777);
    h.set_uid(u64::from(st.st_uid));
    h.set_gid(u64::from(st.st_gid));
    h.set_mtime(st.st_mtime.max(0) as u64);
    let fmt = st.st_mode & SFlag::S_IFMT.bits();
    let kind = match SFlag::from_bits_truncate(fmt) {
        SFlag::S_IFREG => tar::EntryType::Regular,
        SFlag::S_IFDIR => tar::EntryType::Directory,
        SFlag::S_IFLNK => tar::EntryType::Symlink,
        SFlag::S_IFCHR => tar::EntryType::Char,
        SFlag::S_IFBLK => tar::EntryType::Block,
        _ => tar::EntryType::Fifo,
    };
    h.set_entry_type(kind);
    if matches!(kind, tar::EntryType::Char | tar::EntryType::Block) {
        let _ = h.set_device_major(nix::sys::stat::major(st.st_rdev) as u32);
        let _ = h.set_device_minor(nix::sys::stat::minor(st.st_rdev) as u32);
    }
    h.set_size(0);
    h
}

fn append_header<W: Write>(
    b: &mut tar::Builder<W>,
    member: &Path,
    st: &FileStat,
    link: Option<&OsString>,
) -> std::io::Result<()> {
    let mut h = header_for(st);
    match link {
        Some(target) => b.append_link(&mut h, member, Path::new(target)),
        None => b.append_data(&mut h, member, std::io::empty()),
    }
}

fn append_file<W: Write>(
    b: &mut tar::Builder<W>,
    member: &Path,
    file: File,
    st: &FileStat,
) -> std::io::Result<()> {
    let mut h = header_for(st);
    let size = st.st_size.max(0) as u64;
    h.set_size(size);
    b.append_data(
        &mut h,
        member,
        Exact {
            inner: file.take(size),
            left: size,
        },
    )
}

/// Reads exactly the size announced in the header, or fails: a file that shrank while it was being
/// archived must not become a silently corrupt member.
struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the file shrank while it was being archived",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Writes an archive of `path` to `out` (both steps of [`TarSource`]).
pub fn write_tar(path: &Path, out: impl Write) -> FsResult<()> {
    TarSource::open(path)?.write(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in members {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o640);
            h.set_entry_type(tar::EntryType::Regular);
            // Set the raw name so that hostile names reach the extractor unchanged.
            let raw = name.as_bytes();
            h.as_old_mut().name[..raw.len()].copy_from_slice(raw);
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn extraction_stays_inside_and_reports_what_it_skipped() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let target = d.path().join("t");
        std::fs::create_dir(&target).unwrap();
        std::os::unix::fs::symlink(outside.path(), target.join("out")).unwrap();
        let data = tar_of(&[
            ("a/b.txt", b"hello"),
            ("../escape.txt", b"no"),
            ("/abs.txt", b"no"),
            ("out/through-link.txt", b"no"),
            ("./c.txt", b"yes"),
        ]);
        let r = extract_tar(&target, &mut &data[..], &Names::default()).unwrap();
        assert_eq!(std::fs::read(target.join("a/b.txt")).unwrap(), b"hello");
        assert_eq!(std::fs::read(target.join("c.txt")).unwrap(), b"yes");
        assert_eq!(r.entries.len(), 2, "{r:?}");
        assert_eq!(r.skipped.len(), 3, "{r:?}");
        assert!(!d.path().join("escape.txt").exists());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        assert_eq!(r.entries[0].mode, "0640");
    }

    #[test]
    fn archives_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(src.join("x/y")).unwrap();
        std::fs::write(src.join("x/y/f"), vec![7u8; 100_000]).unwrap();
        std::fs::write(src.join("top"), "t").unwrap();
        std::os::unix::fs::symlink("x/y/f", src.join("ln")).unwrap();
        let mut out = Vec::new();
        write_tar(&src, &mut out).unwrap();
        let dst = d.path().join("dst");
        let r = extract_tar(&dst, &mut &out[..], &Names::default()).unwrap();
        assert!(r.skipped.is_empty(), "{r:?}");
        assert_eq!(
            std::fs::read(dst.join("src/x/y/f")).unwrap(),
            vec![7u8; 100_000]
        );
        assert_eq!(
            std::fs::read_link(dst.join("src/ln")).unwrap(),
            Path::new("x/y/f")
        );
        assert_eq!(std::fs::read(dst.join("src/top")).unwrap(), b"t");
    }
}
