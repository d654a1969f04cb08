//! Metadata operations: stat, list, mkdir, move, remove, chmod, chown, and the [`Entry`] they return.
//!
//! Each acts on a parent directory fd and a final name, so a path is resolved once, and none follows a
//! symlink it was not asked to (a listing does not descend into linked directories; a recursive remove
//! removes links, never what they point to).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nix::fcntl::{AtFlags, OFlag, RenameFlags, ResolveFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};
use sandpit_types::files::MAX_WALK_DEPTH;
use sandpit_types::{Entry, EntryType, ErrorCode, FileMode};

use super::{FsError, FsResult, display_path, open_at, parent};

/// User and group names from the sandbox's `/etc/passwd` and `/etc/group`, read once per request.
#[derive(Debug, Default, Clone)]
pub struct Names {
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
}

impl Names {
    pub fn load(etc: &Path) -> Self {
        let read = |file: &str| -> HashMap<u32, String> {
            std::fs::read_to_string(etc.join(file))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    Some((f.get(2)?.parse().ok()?, (*f.first()?).to_owned()))
                })
                .collect()
        };
        Self {
            users: read("passwd"),
            groups: read("group"),
        }
    }

    fn user(&self, uid: u32) -> String {
        self.users
            .get(&uid)
            .cloned()
            .unwrap_or_else(|| uid.to_string())
    }

    fn group(&self, gid: u32) -> String {
        self.groups
            .get(&gid)
            .cloned()
            .unwrap_or_else(|| gid.to_string())
    }

    /// A user name or number to a uid.
    pub fn uid_of(&self, name: &str) -> Option<u32> {
        name.parse().ok().or_else(|| {
            self.users
                .iter()
                .find(|(_, n)| n.as_str() == name)
                .map(|(id, _)| *id)
        })
    }

    /// A group name or number to a gid.
    pub fn gid_of(&self, name: &str) -> Option<u32> {
        name.parse().ok().or_else(|| {
            self.groups
                .iter()
                .find(|(_, n)| n.as_str() == name)
                .map(|(id, _)| *id)
        })
    }
}

/// `rwxr-xr-x` with setuid/setgid/sticky shown as `ls` does.
fn permissions(mode: u32) -> String {
    let mut s = String::with_capacity(9);
    for (shift, special, lower, upper) in [
        (6, 0o4000, 's', 'S'),
        (3, 0o2000, 's', 'S'),
        (0, 0o1000, 't', 'T'),
    ] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        let x = bits & 1 != 0;
        s.push(match (mode & special != 0, x) {
            (true, true) => lower,
            (true, false) => upper,
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    s
}

fn kind(mode: u32) -> EntryType {
    match SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFREG => EntryType::File,
        SFlag::S_IFDIR => EntryType::Dir,
        SFlag::S_IFLNK => EntryType::Symlink,
        _ => EntryType::Other,
    }
}

/// The entry for `path` from its `lstat` (and its link target, read from `dir`/`name`).
pub fn entry_from(path: &Path, st: &FileStat, target: Option<OsString>, names: &Names) -> Entry {
    let (shown, path_b64) = display_path(path);
    let name = path.file_name().map_or_else(
        || "/".to_owned(),
        |n| String::from_utf8_lossy(n.as_bytes()).into_owned(),
    );
    let mtime = SystemTime::UNIX_EPOCH
        .checked_add(Duration::new(
            st.st_mtime.max(0) as u64,
            st.st_mtime_nsec.clamp(0, 999_999_999) as u32,
        ))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    Entry {
        path: shown,
        name,
        path_b64,
        kind: kind(st.st_mode),
        size: st.st_size.max(0) as u64,
        mode: FileMode(st.st_mode & 0o7777).octal(),
        permissions: permissions(st.st_mode),
        owner: names.user(st.st_uid),
        group: names.group(st.st_gid),
        modified_at: crate::process::rfc3339(mtime),
        symlink_target: target.map(|t| String::from_utf8_lossy(t.as_bytes()).into_owned()),
    }
}

fn lstat_at(dir: &OwnedFd, name: &OsStr) -> nix::Result<FileStat> {
    nix::sys::stat::fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW)
}

/// The entry of `name` in `dir`, which is `path`.
pub fn entry_at(dir: &OwnedFd, name: &OsStr, path: &Path, names: &Names) -> FsResult<Entry> {
    let st = lstat_at(dir, name).map_err(|e| FsError::errno(e, "stat", path))?;
    let target = if kind(st.st_mode) == EntryType::Symlink {
        nix::fcntl::readlinkat(dir.as_fd(), name).ok()
    } else {
        None
    };
    Ok(entry_from(path, &st, target, names))
}

/// `lstat` of a path: a symlink is reported as one.
pub fn stat(path: &Path, names: &Names) -> FsResult<Entry> {
    if path == Path::new("/") {
        let fd = super::open_path(path, true)?;
        let st = nix::sys::stat::fstat(fd.as_fd()).map_err(|e| FsError::errno(e, "stat", path))?;
        return Ok(entry_from(path, &st, None, names));
    }
    let (dir, name) = parent(path)?;
    entry_at(&dir, &name, path, names)
}

/// Opens a directory for reading (following symlinks to it, as `ls DIR` does).
fn open_dir(path: &Path) -> FsResult<OwnedFd> {
    open_at(
        None,
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NONBLOCK,
        Mode::empty(),
        ResolveFlag::empty(),
    )
    .map_err(|e| FsError::errno(e, "list", path))
}

/// A subdirectory of `dir`, never through a symlink.
pub fn open_subdir(dir: &OwnedFd, name: &OsStr) -> nix::Result<OwnedFd> {
    open_at(
        Some(dir),
        Path::new(name),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK,
        Mode::empty(),
        ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS,
    )
}

/// Names in an open directory (without `.` and `..`), sorted.
pub fn read_names(dir: &OwnedFd) -> nix::Result<Vec<OsString>> {
    // Dir takes ownership of an fd: give it a duplicate so `dir` stays usable.
    let dup = nix::unistd::dup(dir.as_fd())?;
    let mut d = nix::dir::Dir::from_fd(dup)?;
    let mut names: Vec<OsString> = d
        .iter()
        .filter_map(Result::ok)
        .map(|e| OsStr::from_bytes(e.file_name().to_bytes()).to_os_string())
        .filter(|n| n != "." && n != "..")
        .collect();
    names.sort();
    Ok(names)
}

/// Entries under a directory, `depth` levels deep (1: its children), sorted by path; linked
/// directories are listed, not entered.
pub fn list(path: &Path, depth: usize, names: &Names) -> FsResult<Vec<Entry>> {
    if depth == 0 || depth > MAX_WALK_DEPTH {
        return Err(FsError::invalid(format!(
            "depth must be 1-{MAX_WALK_DEPTH}"
        )));
    }
    let root = open_dir(path)?;
    let mut out = Vec::new();
    // (directory fd, its path, its level)
    let mut stack = vec![(root, path.to_path_buf(), 1usize)];
    while let Some((dir, dir_path, level)) = stack.pop() {
        let children = read_names(&dir).map_err(|e| FsError::errno(e, "list", &dir_path))?;
        for name in children {
            let child = dir_path.join(&name);
            let Ok(entry) = entry_at(&dir, &name, &child, names) else {
                continue; // removed while we listed
            };
            let is_dir = entry.kind == EntryType::Dir;
            out.push(entry);
            if is_dir && level < depth {
                if let Ok(sub) = open_subdir(&dir, &name) {
                    stack.push((sub, child, level + 1));
                }
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// `mkdir` (with `parents`: `mkdir -p`, and an existing directory is fine). Returns the entry and
/// whether it was created.
pub fn mkdir(path: &Path, mode: u32, parents: bool, names: &Names) -> FsResult<(Entry, bool)> {
    let created = if parents {
        mkdir_all(path, mode)?
    } else {
        let (dir, name) = parent(path)?;
        nix::sys::stat::mkdirat(
            dir.as_fd(),
            name.as_os_str(),
            Mode::from_bits_truncate(mode),
        )
        .map_err(|e| FsError::errno(e, "create the directory", path))?;
        true
    };
    let entry = stat(path, names)?;
    if entry.kind != EntryType::Dir {
        return Err(FsError::new(
            ErrorCode::AlreadyExists,
            format!("{} exists and is not a directory", path.display()),
        ));
    }
    Ok((entry, created))
}

/// Creates `path` and its missing parents; true when `path` itself was created.
pub fn mkdir_all(path: &Path, mode: u32) -> FsResult<bool> {
    let mut missing: Vec<&Path> = Vec::new();
    let mut at = path;
    loop {
        match super::open_path(at, true) {
            Ok(_) => break,
            Err(e) if e.code == ErrorCode::NotFound => {
                missing.push(at);
                match at.parent() {
                    Some(p) => at = p,
                    None => break,
                }
            }
            Err(e) => return Err(e),
        }
    }
    let mut created = false;
    for p in missing.into_iter().rev() {
        let (dir, name) = parent(p)?;
        // Intermediate directories get the usual 0755; the last one the requested mode.
        let m = if p == path { mode } else { 0o755 };
        match nix::sys::stat::mkdirat(dir.as_fd(), name.as_os_str(), Mode::from_bits_truncate(m)) {
            Ok(()) => created = p == path,
            Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(FsError::errno(e, "create the directory", p)),
        }
    }
    Ok(created)
}

/// `rename`, refusing to replace `to` unless `overwrite`.
pub fn move_path(from: &Path, to: &Path, overwrite: bool, names: &Names) -> FsResult<Entry> {
    let (from_dir, from_name) = parent(from)?;
    let (to_dir, to_name) = parent(to)?;
    let flags = if overwrite {
        RenameFlags::empty()
    } else {
        RenameFlags::RENAME_NOREPLACE
    };
    nix::fcntl::renameat2(
        from_dir.as_fd(),
        from_name.as_os_str(),
        to_dir.as_fd(),
        to_name.as_os_str(),
        flags,
    )
    .map_err(|e| {
        let mut err = FsError::errno(e, "move", from);
        if e == nix::errno::Errno::EEXIST || e == nix::errno::Errno::ENOTEMPTY {
            err.message = format!(
                "cannot move {} to {}: the destination exists{}",
                from.display(),
                to.display(),
                if overwrite {
                    " and is a non-empty directory"
                } else {
                    " (set overwrite to replace it)"
                }
            );
        }
        err
    })?;
    entry_at(&to_dir, &to_name, to, names)
}

/// Removes a file, link or (with `recursive`, non-empty) directory. A link is removed, never followed.
pub fn remove(path: &Path, recursive: bool) -> FsResult<()> {
    let (dir, name) = parent(path)?;
    let st = lstat_at(&dir, &name).map_err(|e| FsError::errno(e, "remove", path))?;
    if kind(st.st_mode) != EntryType::Dir {
        return nix::unistd::unlinkat(
            dir.as_fd(),
            name.as_os_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        )
        .map_err(|e| FsError::errno(e, "remove", path));
    }
    if recursive {
        let sub = open_subdir(&dir, &name).map_err(|e| FsError::errno(e, "remove", path))?;
        empty_tree(sub, path)?;
    }
    nix::unistd::unlinkat(
        dir.as_fd(),
        name.as_os_str(),
        nix::unistd::UnlinkatFlags::RemoveDir,
    )
    .map_err(|e| FsError::errno(e, "remove", path))
}

/// Removes everything inside the open directory `root` (at `path`), depth first, without recursion on
/// the stack and never deeper than [`MAX_WALK_DEPTH`].
fn empty_tree(root: OwnedFd, path: &Path) -> FsResult<()> {
    // Each frame: a directory, its path, the names still to visit in it.
    let names = read_names(&root).map_err(|e| FsError::errno(e, "remove", path))?;
    let mut stack: Vec<(OwnedFd, PathBuf, Vec<OsString>)> = vec![(root, path.to_path_buf(), names)];
    while let Some((dir, dir_path, mut todo)) = stack.pop() {
        let Some(name) = todo.pop() else {
            // This directory is empty now: remove it from its parent (the root is the caller's).
            if let Some((parent_fd, _, _)) = stack.last() {
                let n = dir_path.file_name().unwrap_or_default().to_os_string();
                drop(dir);
                nix::unistd::unlinkat(
                    parent_fd.as_fd(),
                    n.as_os_str(),
                    nix::unistd::UnlinkatFlags::RemoveDir,
                )
                .map_err(|e| FsError::errno(e, "remove", &dir_path))?;
            }
            continue;
        };
        let child = dir_path.join(&name);
        let is_dir = lstat_at(&dir, &name).is_ok_and(|st| kind(st.st_mode) == EntryType::Dir);
        if is_dir {
            if stack.len() + 1 >= MAX_WALK_DEPTH {
                return Err(FsError::invalid(format!(
                    "{} is more than {MAX_WALK_DEPTH} levels deep: remove it with a command",
                    path.display()
                )));
            }
            let sub = open_subdir(&dir, &name).map_err(|e| FsError::errno(e, "remove", &child))?;
            let sub_names = read_names(&sub).map_err(|e| FsError::errno(e, "remove", &child))?;
            stack.push((dir, dir_path, todo));
            stack.push((sub, child, sub_names));
        } else {
            match nix::unistd::unlinkat(
                dir.as_fd(),
                name.as_os_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            ) {
                Ok(()) | Err(nix::errno::Errno::ENOENT) => {}
                Err(e) => return Err(FsError::errno(e, "remove", &child)),
            }
            stack.push((dir, dir_path, todo));
        }
    }
    Ok(())
}

/// Follows `path` (symlinks included, magic links refused) to an `O_PATH` fd of what it names.
fn target_fd(path: &Path) -> FsResult<OwnedFd> {
    super::open_path(path, true)
}

/// `chmod` (of a link's target, as chmod(1) does).
pub fn chmod(path: &Path, mode: FileMode, names: &Names) -> FsResult<Entry> {
    let fd = target_fd(path)?;
    let empty = c"";
    // SAFETY: fchmodat2 with AT_EMPTY_PATH acts on the open fd; the path is a valid empty C string.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fchmodat2,
            fd.as_raw_fd(),
            empty.as_ptr(),
            mode.0 as libc::mode_t,
            libc::AT_EMPTY_PATH,
        )
    };
    if r != 0 {
        return Err(FsError::io(
            &std::io::Error::last_os_error(),
            "change the mode of",
            path,
        ));
    }
    stat(path, names)
}

/// `chown` of what `path` names (a link's target); `None` leaves that id as it is.
pub fn chown(path: &Path, uid: Option<u32>, gid: Option<u32>, names: &Names) -> FsResult<Entry> {
    let fd = target_fd(path)?;
    nix::unistd::fchownat(
        fd.as_fd(),
        "",
        uid.map(nix::unistd::Uid::from_raw),
        gid.map(nix::unistd::Gid::from_raw),
        AtFlags::AT_EMPTY_PATH,
    )
    .map_err(|e| FsError::errno(e, "change the owner of", path))?;
    stat(path, names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_read_like_ls() {
        assert_eq!(permissions(0o755), "rwxr-xr-x");
        assert_eq!(permissions(0o644), "rw-r--r--");
        assert_eq!(permissions(0o4755), "rwsr-xr-x");
        assert_eq!(permissions(0o1777), "rwxrwxrwt");
        assert_eq!(permissions(0o2644), "rw-r-Sr--");
    }

    #[test]
    fn list_mkdir_move_remove_on_a_temp_tree() {
        let d = tempfile::tempdir().unwrap();
        let names = Names::default();
        let root = d.path();
        let (e, created) = mkdir(&root.join("a/b/c"), 0o700, true, &names).unwrap();
        assert!(created);
        assert_eq!((e.kind, e.mode.as_str()), (EntryType::Dir, "0700"));
        assert!(!mkdir(&root.join("a/b/c"), 0o700, true, &names).unwrap().1);
        assert_eq!(
            mkdir(&root.join("a/b/c"), 0o700, false, &names)
                .unwrap_err()
                .code,
            ErrorCode::AlreadyExists
        );
        std::fs::write(root.join("a/f"), "x").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("a/link")).unwrap();
        let all = list(root, 10, &names).unwrap();
        let paths: Vec<_> = all.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(paths, ["a", "b", "c", "f", "link"]);
        let link = all.iter().find(|e| e.name == "link").unwrap();
        assert_eq!(link.kind, EntryType::Symlink);
        assert_eq!(link.symlink_target.as_deref(), Some("/etc"));
        assert_eq!(list(root, 1, &names).unwrap().len(), 1);

        std::fs::write(root.join("g"), "y").unwrap();
        assert_eq!(
            move_path(&root.join("g"), &root.join("a/f"), false, &names)
                .unwrap_err()
                .code,
            ErrorCode::AlreadyExists
        );
        move_path(&root.join("g"), &root.join("a/f"), true, &names).unwrap();
        assert_eq!(std::fs::read(root.join("a/f")).unwrap(), b"y");

        assert_eq!(
            remove(&root.join("a"), false).unwrap_err().code,
            ErrorCode::NotEmpty
        );
        remove(&root.join("a"), true).unwrap();
        assert!(!root.join("a").exists());
        assert!(
            Path::new("/etc").exists(),
            "links are removed, not followed"
        );
        assert_eq!(
            remove(&root.join("a"), true).unwrap_err().code,
            ErrorCode::NotFound
        );
    }
}
