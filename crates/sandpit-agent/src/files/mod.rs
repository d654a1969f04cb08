//! The files API: reading, writing, listing, moving and watching files inside the sandbox, each as the
//! requesting user.
//!
//! The agent already lives in the sandbox's mount namespace with the sandbox's root as its `/`, so a
//! path (and any symlink on it) resolves exactly as it would for a process in the sandbox: nothing here
//! can reach the host's files. Every operation runs on a blocking thread that first takes the user's fs
//! uid, fs gid and groups ([`creds`]), so the kernel applies that user's permissions (`user` cannot read
//! `/root`, `root` can) and new files belong to that user. On top of that every path is opened with
//! `openat2(RESOLVE_NO_MAGICLINKS)`: `/proc/*/fd/*` and `/proc/*/root` style links are refused, and
//! operations act on a parent directory fd and a final name (the `*at` calls), so that nothing resolves
//! a path twice.
//!
//! No request can block the agent: content is only read from or written to regular files, opened
//! `O_NONBLOCK` (a fifo or a device never hangs an open), and walks stop at
//! [`MAX_WALK_DEPTH`](sandpit_types::files::MAX_WALK_DEPTH) levels. Errors become the API's codes in one
//! place ([`FsError::io`]).
//!
//! Modules: [`creds`] (per-thread identity), `ops` (stat, list, mkdir, move, remove, chmod, chown),
//! `content` (streamed reads and atomic writes), [`splice`] (content moved between a file and the
//! daemon's socket without copies), `archive` (tar in and out), [`watch`] (inotify watches with
//! seq-numbered, replayable events).

mod archive;
mod content;
pub mod creds;
mod ops;
pub mod splice;
pub mod watch;

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;
use sandpit_types::ErrorCode;

pub use archive::{TarReader, TarSource, extract_tar, write_tar};
pub use content::{BodyError, Fill, ReadPlan, open_for_read, write_atomic};
pub use creds::Identity;
pub use ops::{Names, chmod, chown, entry_at, list, mkdir, move_path, remove, stat};

use crate::passwd;

/// An error of a file operation, with the API code it maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsError {
    pub code: ErrorCode,
    pub message: String,
}

impl std::fmt::Display for FsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for FsError {}

impl FsError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }

    /// The one mapping from an OS error to an API code; `what` says what was being done (`"open"`,
    /// `"remove"`) and `path` to what.
    pub fn io(e: &std::io::Error, what: &str, path: &Path) -> Self {
        let shown = path.display();
        let Some(errno) = e.raw_os_error() else {
            return Self::new(ErrorCode::Internal, format!("{what} {shown}: {e}"));
        };
        let (code, text) = match errno {
            libc::ENOENT => (ErrorCode::NotFound, "no such file or directory".to_owned()),
            libc::EEXIST => (ErrorCode::AlreadyExists, "it exists already".to_owned()),
            libc::ENOTEMPTY => (
                ErrorCode::NotEmpty,
                "the directory is not empty (remove it with recursive)".to_owned(),
            ),
            libc::EISDIR => (ErrorCode::IsADirectory, "it is a directory".to_owned()),
            libc::ENOTDIR => (
                ErrorCode::NotADirectory,
                "a component of the path is not a directory".to_owned(),
            ),
            libc::EACCES | libc::EPERM => (
                ErrorCode::PermissionDenied,
                "permission denied for this user".to_owned(),
            ),
            libc::EROFS => (
                ErrorCode::PermissionDenied,
                "the file system is read-only".to_owned(),
            ),
            libc::ENOSPC | libc::EDQUOT => (
                ErrorCode::InsufficientStorage,
                "the sandbox's disk is full (its disk_mb cap); nothing was left half-written"
                    .to_owned(),
            ),
            libc::ENAMETOOLONG => (
                ErrorCode::InvalidArgument,
                "a name or the path is too long".to_owned(),
            ),
            libc::ELOOP => (
                ErrorCode::InvalidArgument,
                "too many levels of symbolic links, or a link that the files API does not follow \
                 (/proc/*/fd, /proc/*/root)"
                    .to_owned(),
            ),
            libc::EXDEV => (
                ErrorCode::Conflict,
                "source and destination are on different file systems (or the path leaves the \
                 directory it must stay in)"
                    .to_owned(),
            ),
            libc::ETXTBSY | libc::EBUSY => (ErrorCode::Conflict, "the file is busy".to_owned()),
            libc::EINVAL => (ErrorCode::InvalidArgument, "invalid argument".to_owned()),
            libc::ENXIO | libc::ENODEV | libc::EOPNOTSUPP => (
                ErrorCode::InvalidArgument,
                "not a regular file (a device or socket the files API does not open)".to_owned(),
            ),
            libc::EMFILE | libc::ENFILE | libc::ENOMEM => (
                ErrorCode::ResourceExhausted,
                format!("the agent is out of resources ({e})"),
            ),
            _ => (ErrorCode::Internal, e.to_string()),
        };
        Self::new(code, format!("cannot {what} {shown}: {text}"))
    }

    pub fn errno(e: nix::errno::Errno, what: &str, path: &Path) -> Self {
        Self::io(&std::io::Error::from(e), what, path)
    }
}

pub type FsResult<T> = Result<T, FsError>;

/// The agent's file service: who requests act as, and the watches.
#[derive(Debug)]
pub struct Files {
    etc: PathBuf,
    default_user: Option<String>,
    self_uid: u32,
    pub watches: watch::Watches,
}

impl Files {
    /// `etc` holds the sandbox's `passwd` and `group`; `default_user` is who a request without `user`
    /// acts as (`None`: the agent's own user).
    pub fn new(etc: PathBuf, default_user: Option<String>) -> Arc<Self> {
        Arc::new(Self {
            etc,
            default_user,
            self_uid: nix::unistd::geteuid().as_raw(),
            watches: watch::Watches::default(),
        })
    }

    /// Resolves `user` (a name or uid; default the sandbox's default user) and says whether acting as
    /// them needs a switch.
    pub fn identity(&self, user: Option<&str>) -> FsResult<(Identity, bool)> {
        let name = match user.filter(|u| !u.is_empty()) {
            Some(u) => u.to_owned(),
            None => self
                .default_user
                .clone()
                .unwrap_or_else(|| self.self_uid.to_string()),
        };
        let account = passwd::lookup(&self.etc, &name).map_err(|e| match e {
            passwd::LookupError::UnknownUser(..) => FsError::invalid(e.to_string()),
            passwd::LookupError::Read(..) => FsError::new(ErrorCode::Internal, e.to_string()),
        })?;
        let switch = account.uid != self.self_uid;
        if switch && self.self_uid != 0 {
            return Err(FsError::new(
                ErrorCode::PermissionDenied,
                format!(
                    "cannot act as user {:?}: the agent runs as uid {} and can only switch users as root",
                    account.name, self.self_uid
                ),
            ));
        }
        Ok((
            Identity {
                name: account.name,
                uid: account.uid,
                gid: account.gid,
                groups: account.groups,
                home: account.home,
            },
            switch,
        ))
    }

    /// Runs `f` on a blocking thread as `user`.
    pub async fn run<R, F>(&self, user: Option<&str>, f: F) -> FsResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Identity) -> FsResult<R> + Send + 'static,
    {
        let (who, switch) = self.identity(user)?;
        tokio::task::spawn_blocking(move || run_as(&who, switch, f))
            .await
            .map_err(|e| FsError::new(ErrorCode::Internal, format!("file task failed: {e}")))?
    }

    /// The sandbox's `passwd`/`group` names, for entries.
    pub fn names(&self) -> Names {
        Names::load(&self.etc)
    }
}

/// Runs `f` as `who` on the current (blocking) thread.
pub fn run_as<R>(
    who: &Identity,
    switch: bool,
    f: impl FnOnce(&Identity) -> FsResult<R>,
) -> FsResult<R> {
    creds::as_user(who, switch, || f(who)).map_err(|e| {
        FsError::new(
            ErrorCode::Internal,
            format!("cannot take the identity of {}: {e}", who.name),
        )
    })?
}

/// A request's path made absolute: checked ([`sandpit_types::files::validate_path`]), relative paths
/// taken from `home`, `.` components and repeated or trailing slashes removed. `..` is kept for the
/// kernel to resolve (lexically dropping it would be wrong after a symlink).
pub fn resolve(home: &str, raw: &[u8]) -> FsResult<PathBuf> {
    sandpit_types::files::validate_path(raw).map_err(FsError::invalid)?;
    let given = Path::new(OsStr::from_bytes(raw));
    let joined = if given.is_absolute() {
        given.to_path_buf()
    } else {
        Path::new(home).join(given)
    };
    let mut out = PathBuf::from("/");
    for c in joined.components() {
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => out.push(".."),
            Component::Normal(n) => out.push(n),
        }
    }
    if out.as_os_str().len() > sandpit_types::files::MAX_PATH_BYTES {
        return Err(FsError::invalid(
            "the path (joined to the user's home) is too long",
        ));
    }
    Ok(out)
}

/// `openat2` relative to `dir` (or the cwd when `None`) with magic links refused.
pub fn open_at(
    dir: Option<&OwnedFd>,
    path: &Path,
    flags: OFlag,
    mode: Mode,
    resolve: ResolveFlag,
) -> nix::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .mode(mode)
        .resolve(resolve | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    match dir {
        Some(d) => nix::fcntl::openat2(d.as_fd(), path, how),
        None => nix::fcntl::openat2(nix::fcntl::AT_FDCWD, path, how),
    }
}

/// An `O_PATH` handle on `path` (following a final symlink when `follow`).
pub fn open_path(path: &Path, follow: bool) -> FsResult<OwnedFd> {
    let mut flags = OFlag::O_PATH;
    if !follow {
        flags |= OFlag::O_NOFOLLOW;
    }
    open_at(None, path, flags, Mode::empty(), ResolveFlag::empty())
        .map_err(|e| FsError::errno(e, "open", path))
}

/// The directory holding `path` (opened `O_PATH`, following symlinks on the way) and the final name.
pub fn parent(path: &Path) -> FsResult<(OwnedFd, OsString)> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(FsError::invalid(format!(
            "{} has no parent directory and name (the root, or a path ending in ..)",
            path.display()
        )));
    };
    let fd = open_at(
        None,
        dir,
        OFlag::O_PATH | OFlag::O_DIRECTORY,
        Mode::empty(),
        ResolveFlag::empty(),
    )
    .map_err(|e| FsError::errno(e, "open the directory of", path))?;
    Ok((fd, name.to_os_string()))
}

/// A path's bytes as a lossy string and, when it is not UTF-8, as base64 too.
pub fn display_path(p: &Path) -> (String, Option<String>) {
    use base64::Engine as _;
    let bytes = p.as_os_str().as_bytes();
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_owned(), None),
        Err(_) => (
            String::from_utf8_lossy(bytes).into_owned(),
            Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
        ),
    }
}

/// `PathBuf` from bytes.
pub fn path_from_bytes(b: Vec<u8>) -> PathBuf {
    PathBuf::from(OsString::from_vec(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_against_home_and_are_tidied() {
        assert_eq!(
            resolve("/home/user", b"a/./b//").unwrap(),
            Path::new("/home/user/a/b")
        );
        assert_eq!(
            resolve("/home/user", b"/etc/x").unwrap(),
            Path::new("/etc/x")
        );
        assert_eq!(
            resolve("/home/user", b"../x").unwrap(),
            Path::new("/home/user/../x")
        );
        assert_eq!(resolve("/", b"/").unwrap(), Path::new("/"));
        assert_eq!(
            resolve("/h", b"").unwrap_err().code,
            ErrorCode::InvalidArgument
        );
        assert_eq!(
            resolve("/h", b"a\0b").unwrap_err().code,
            ErrorCode::InvalidArgument
        );
    }

    #[test]
    fn os_errors_map_to_codes() {
        let p = Path::new("/x");
        let code = |n| FsError::io(&std::io::Error::from_raw_os_error(n), "open", p).code;
        assert_eq!(code(libc::ENOENT), ErrorCode::NotFound);
        assert_eq!(code(libc::EEXIST), ErrorCode::AlreadyExists);
        assert_eq!(code(libc::ENOTEMPTY), ErrorCode::NotEmpty);
        assert_eq!(code(libc::EISDIR), ErrorCode::IsADirectory);
        assert_eq!(code(libc::ENOTDIR), ErrorCode::NotADirectory);
        assert_eq!(code(libc::EACCES), ErrorCode::PermissionDenied);
        assert_eq!(code(libc::ENOSPC), ErrorCode::InsufficientStorage);
        assert_eq!(code(libc::ENAMETOOLONG), ErrorCode::InvalidArgument);
    }
}
