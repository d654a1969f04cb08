//! Snapshots: a running sandbox's writable layer copied into a template layer.
//!
//! The writable layer is a per-sandbox tmpfs that is never mounted anywhere the host can see (see
//! `rootfs`). The sandbox's init holds its mount fd at [`crate::child::UPPER_FD`] for the sandbox's
//! whole life, so the host takes a copy with `pidfd_getfd` whenever it snapshots, also after a daemon
//! restart; [`writable_layer`] checks that what it got is that tmpfs.
//!
//! The copy is one [`Sync`] run twice: first while the sandbox runs (everything), then with the
//! sandbox frozen (only what changed since, by inode and change time, and what was removed), so the
//! snapshot is the filesystem as it was at one instant while the freeze lasts only as long as the
//! second, small pass. The layer keeps overlayfs's own markers (whiteouts — character devices 0/0 —
//! and opaque directories), so stacked on its parent template it reads exactly as the sandbox saw it.
//! Owners are stored in the sandbox's view (uid 0 is root inside), as in every template.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt, lchown};
use std::path::{Path, PathBuf};

use crate::sys;
use crate::template::TemplateError;

/// `TMPFS_MAGIC` from `linux/magic.h`.
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// What the host and the agent keep in a sandbox's writable layer for that sandbox alone: the agent's
/// logs and process output (`/run/sandpit`), the agent's mount point (`/.sandpit`), the network's
/// `resolv.conf`. Never part of a snapshot: each sandbox made from it gets its own.
const HOST_MANAGED: &[&str] = &["run/sandpit", ".sandpit", "etc/resolv.conf"];

/// The owner a file gets when its host id is outside the sandbox's range (the kernel's overflow id).
const NOBODY: u32 = 65534;

fn ioe(what: impl Into<String>) -> impl FnOnce(io::Error) -> TemplateError {
    let what = what.into();
    move |source| TemplateError::Io { what, source }
}

/// The writable layer's tmpfs, taken from the init that holds it. Checked to be what the host made:
/// a tmpfs whose root belongs to host root (nothing inside the sandbox can own such a file).
pub(crate) fn writable_layer(
    pid: i32,
    start_time: u64,
    fd: std::os::fd::RawFd,
) -> io::Result<OwnedFd> {
    let layer = sys::take_fd(pid, start_time, fd)?;
    let meta = fs::metadata(format!("/proc/self/fd/{}", layer.as_raw_fd()))?;
    if sys::fs_type(&layer)? != TMPFS_MAGIC || meta.uid() != 0 || !meta.is_dir() {
        return Err(io::Error::other(
            "the descriptor the sandbox's init holds is not its writable layer",
        ));
    }
    Ok(layer)
}

/// What identifies a version of a file: if any of it changed, the file is copied again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    ctime: (i64, i64),
    mtime: (i64, i64),
    size: u64,
    mode: u32,
}

impl Stamp {
    fn of(m: &fs::Metadata) -> Self {
        Self {
            ino: m.ino(),
            ctime: (m.ctime(), m.ctime_nsec()),
            mtime: (m.mtime(), m.mtime_nsec()),
            size: m.size(),
            mode: m.mode(),
        }
    }
}

/// Figures of one [`Sync::run`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Entries (files, links, directories, markers) written.
    pub entries: u64,
    /// Bytes of file content copied.
    pub bytes: u64,
    /// Entries removed because they are gone from the source.
    pub removed: u64,
}

/// Makes `dst` a copy of `src`, remembering what it copied so that the next run copies only changes.
#[derive(Debug)]
pub(crate) struct Sync {
    /// The sandbox's host id range: `(first, count)`.
    ids: (u32, u32),
    seen: HashMap<PathBuf, Stamp>,
    /// Hard links of this run: source inode → the first destination path.
    links: HashMap<u64, PathBuf>,
    stats: SyncStats,
}

impl Sync {
    pub(crate) fn new(ids: (u32, u32)) -> Self {
        Self {
            ids,
            seen: HashMap::new(),
            links: HashMap::new(),
            stats: SyncStats::default(),
        }
    }

    /// Brings `dst` (a directory) in line with `src`.
    pub(crate) fn run(&mut self, src: &Path, dst: &Path) -> Result<SyncStats, TemplateError> {
        self.links.clear();
        self.stats = SyncStats::default();
        self.dir(src, dst, Path::new(""))?;
        Ok(self.stats)
    }

    fn id(&self, host: u32) -> u32 {
        let (first, count) = self.ids;
        if host >= first && host - first < count {
            host - first
        } else {
            NOBODY
        }
    }

    fn dir(&mut self, src: &Path, dst: &Path, rel: &Path) -> Result<(), TemplateError> {
        let meta = fs::symlink_metadata(src).map_err(ioe(format!("stat {}", src.display())))?;
        match fs::symlink_metadata(dst) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                fs::remove_file(dst).map_err(ioe(format!("removing {}", dst.display())))?;
                fs::create_dir(dst).map_err(ioe(format!("mkdir {}", dst.display())))?;
            }
            Err(_) => fs::create_dir(dst).map_err(ioe(format!("mkdir {}", dst.display())))?,
        }
        let mut names = HashSet::new();
        for entry in fs::read_dir(src).map_err(ioe(format!("reading {}", src.display())))? {
            let entry = entry.map_err(ioe(format!("reading {}", src.display())))?;
            let name = entry.file_name();
            let (s, d, r) = (src.join(&name), dst.join(&name), rel.join(&name));
            if HOST_MANAGED.iter().any(|h| r == Path::new(h)) {
                continue;
            }
            // The entry may vanish between the listing and the stat (the sandbox runs during the
            // first pass): the second, frozen pass settles it.
            let Ok(m) = fs::symlink_metadata(&s) else {
                continue;
            };
            names.insert(name);
            if m.is_dir() {
                self.dir(&s, &d, &r)?;
            } else {
                self.entry(&s, &d, r, &m)?;
            }
        }
        for entry in fs::read_dir(dst).map_err(ioe(format!("reading {}", dst.display())))? {
            let entry = entry.map_err(ioe(format!("reading {}", dst.display())))?;
            let name: OsString = entry.file_name();
            if !names.contains(&name) {
                let p = entry.path();
                let gone = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    fs::remove_dir_all(&p)
                } else {
                    fs::remove_file(&p)
                };
                gone.map_err(ioe(format!("removing {}", p.display())))?;
                self.seen.remove(&rel.join(&name));
                self.stats.removed += 1;
            }
        }
        self.finish(src, dst, &meta)
    }

    fn entry(
        &mut self,
        src: &Path,
        dst: &Path,
        rel: PathBuf,
        meta: &fs::Metadata,
    ) -> Result<(), TemplateError> {
        let stamp = Stamp::of(meta);
        let existing = fs::symlink_metadata(dst).ok();
        if self.seen.get(&rel) == Some(&stamp) && existing.is_some() {
            return Ok(());
        }
        if let Some(m) = existing {
            let gone = if m.is_dir() {
                fs::remove_dir_all(dst)
            } else {
                fs::remove_file(dst)
            };
            gone.map_err(ioe(format!("replacing {}", dst.display())))?;
        }
        let what = || format!("copying {} to {}", src.display(), dst.display());
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = fs::read_link(src).map_err(ioe(what()))?;
            std::os::unix::fs::symlink(target, dst).map_err(ioe(what()))?;
        } else if ft.is_file() {
            let linked = meta.nlink() > 1
                && match self.links.get(&meta.ino()) {
                    Some(first) => fs::hard_link(first, dst).is_ok(),
                    None => false,
                };
            if linked {
                self.seen.insert(rel, stamp);
                self.stats.entries += 1;
                return Ok(());
            }
            self.stats.bytes += fs::copy(src, dst).map_err(ioe(what()))?;
            if meta.nlink() > 1 {
                self.links.insert(meta.ino(), dst.to_path_buf());
            }
        } else if std::os::unix::fs::FileTypeExt::is_socket(&ft) {
            // A socket is only a name for a live process's endpoint: nothing to keep.
            return Ok(());
        } else {
            // Whiteouts (character device 0/0), fifos, and whatever nodes the sandbox could make.
            let c = sys::path_cstr(dst).map_err(ioe(what()))?;
            // SAFETY: valid C string; mknod has no memory side effects.
            if unsafe { libc::mknod(c.as_ptr(), meta.mode(), meta.rdev()) } != 0 {
                return Err(ioe(what())(io::Error::last_os_error()));
            }
        }
        self.finish(src, dst, meta)?;
        self.seen.insert(rel, stamp);
        Ok(())
    }

    /// Owner (in the sandbox's view), mode, the extended attributes overlayfs and users rely on, and
    /// times: last, since writing a directory's entries changes its times.
    fn finish(&mut self, src: &Path, dst: &Path, meta: &fs::Metadata) -> Result<(), TemplateError> {
        let what = || format!("copying the attributes of {}", src.display());
        let (uid, gid) = (self.id(meta.uid()), self.id(meta.gid()));
        lchown(dst, Some(uid), Some(gid)).map_err(ioe(what()))?;
        if !meta.file_type().is_symlink() {
            fs::set_permissions(dst, fs::Permissions::from_mode(meta.mode() & 0o7777))
                .map_err(ioe(what()))?;
        }
        for name in sys::xattr_names(src).map_err(ioe(what()))? {
            let n = name.to_bytes();
            // Opaque directories are part of the layer's meaning; user attributes are the user's.
            // The rest (`trusted.overlay.origin`, …) ties files to this one overlay and is dropped.
            if n == b"trusted.overlay.opaque" || n.starts_with(b"user.") {
                sys::copy_xattr(src, dst, &name).map_err(ioe(what()))?;
            }
        }
        sys::set_times(
            dst,
            (meta.atime(), meta.atime_nsec()),
            (meta.mtime(), meta.mtime_nsec()),
        )
        .map_err(ioe(what()))?;
        self.stats.entries += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (u32, u32) {
        // Files a test creates belong to the test's own uid; map it to sandbox root.
        // SAFETY: getuid cannot fail.
        (unsafe { libc::getuid() }, 65536)
    }

    #[test]
    fn a_second_run_copies_only_what_changed_and_removes_what_went() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        fs::create_dir(src.path().join("d")).unwrap();
        fs::write(src.path().join("d/a"), b"one").unwrap();
        fs::write(src.path().join("b"), vec![7u8; 5000]).unwrap();
        std::os::unix::fs::symlink("d/a", src.path().join("l")).unwrap();
        let mut sync = Sync::new(ids());
        let first = sync.run(src.path(), dst.path()).unwrap();
        assert_eq!(first.bytes, 5003);
        assert_eq!(fs::read(dst.path().join("d/a")).unwrap(), b"one");
        assert_eq!(
            fs::read_link(dst.path().join("l")).unwrap(),
            Path::new("d/a")
        );
        assert_eq!(fs::metadata(dst.path().join("b")).unwrap().uid(), 0);

        fs::write(src.path().join("d/a"), b"two!").unwrap();
        fs::remove_file(src.path().join("b")).unwrap();
        fs::write(src.path().join("c"), b"new").unwrap();
        let second = sync.run(src.path(), dst.path()).unwrap();
        assert_eq!(second.bytes, 7, "only d/a and c are copied again");
        assert_eq!(second.removed, 1);
        assert_eq!(fs::read(dst.path().join("d/a")).unwrap(), b"two!");
        assert!(!dst.path().join("b").exists());
        assert_eq!(fs::read(dst.path().join("c")).unwrap(), b"new");
        let third = sync.run(src.path(), dst.path()).unwrap();
        assert_eq!(third.bytes, 0);
    }

    #[test]
    fn a_file_that_became_a_directory_is_replaced() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        fs::write(src.path().join("x"), b"file").unwrap();
        let mut sync = Sync::new(ids());
        sync.run(src.path(), dst.path()).unwrap();
        fs::remove_file(src.path().join("x")).unwrap();
        fs::create_dir(src.path().join("x")).unwrap();
        fs::write(src.path().join("x/y"), b"in").unwrap();
        sync.run(src.path(), dst.path()).unwrap();
        assert_eq!(fs::read(dst.path().join("x/y")).unwrap(), b"in");
    }

    #[test]
    fn what_the_host_and_agent_keep_for_one_sandbox_is_left_out() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        for d in ["run/sandpit/log", ".sandpit", "etc", "home"] {
            fs::create_dir_all(src.path().join(d)).unwrap();
        }
        fs::write(src.path().join("run/sandpit/agent.log"), b"old").unwrap();
        fs::write(src.path().join("run/other"), b"kept").unwrap();
        fs::write(src.path().join(".sandpit/sandpit"), b"").unwrap();
        fs::write(src.path().join("etc/resolv.conf"), b"nameserver 10.0.0.1").unwrap();
        fs::write(src.path().join("etc/hosts"), b"kept").unwrap();
        Sync::new(ids()).run(src.path(), dst.path()).unwrap();
        assert!(dst.path().join("run/other").exists());
        assert!(dst.path().join("etc/hosts").exists());
        for gone in ["run/sandpit", ".sandpit", "etc/resolv.conf"] {
            assert!(!dst.path().join(gone).exists(), "{gone}");
        }
    }

    #[test]
    fn hard_links_stay_links() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        fs::write(src.path().join("a"), b"shared").unwrap();
        fs::hard_link(src.path().join("a"), src.path().join("b")).unwrap();
        Sync::new(ids()).run(src.path(), dst.path()).unwrap();
        let (a, b) = (
            fs::metadata(dst.path().join("a")).unwrap(),
            fs::metadata(dst.path().join("b")).unwrap(),
        );
        assert_eq!(a.ino(), b.ino());
    }
}
