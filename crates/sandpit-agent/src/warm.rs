//! Warming a new sandbox for its first command: the path lookups that command will make, done once
//! off the request path right after the agent is ready.
//!
//! A sandbox's root is a new overlay mount, so the first lookup of every path in it goes down through
//! the layers; the first `echo hi` paid 0.2-0.3 ms more than the second for resolving the shell, the
//! dynamic loader and the C library (docs/benchmarks.md, "Cold creates, round 2"). Looking them up
//! while the daemon answers the create leaves the kernel's dentry cache holding them. A path the
//! template does not have costs one failed lookup and is not an error: this is only a warm-up.

use std::path::{Path, PathBuf};

/// The dynamic loader and C library of the common distributions' layouts for this architecture
/// (glibc's multiarch paths, and musl's).
#[cfg(target_arch = "x86_64")]
const LOADER_PATHS: &[&str] = &[
    "/lib64/ld-linux-x86-64.so.2",
    "/etc/ld.so.cache",
    "/lib/x86_64-linux-gnu/libc.so.6",
    "/lib/ld-musl-x86_64.so.1",
];
#[cfg(target_arch = "aarch64")]
const LOADER_PATHS: &[&str] = &[
    "/lib/ld-linux-aarch64.so.1",
    "/etc/ld.so.cache",
    "/lib/aarch64-linux-gnu/libc.so.6",
    "/lib/ld-musl-aarch64.so.1",
];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const LOADER_PATHS: &[&str] = &["/etc/ld.so.cache"];

/// The paths a first command is likely to resolve: `shell` (the one that runs `cmd` strings), `home`
/// (its default working directory, when known) and the loader paths, resolved under `root` (`/` in a
/// sandbox; a directory in tests).
pub fn first_command_paths(root: &Path, shell: &str, home: Option<&str>) -> Vec<PathBuf> {
    std::iter::once(shell)
        .chain(home)
        .chain(LOADER_PATHS.iter().copied())
        .map(|p| root.join(p.trim_start_matches('/')))
        .collect()
}

/// Looks every path up (following symlinks, as an `execve` does); returns how many exist.
pub fn look_up(paths: &[PathBuf]) -> usize {
    paths
        .iter()
        .filter(|p| std::fs::metadata(p).is_ok())
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_paths_are_the_shell_the_home_and_the_loader_under_the_root() {
        let paths = first_command_paths(Path::new("/r"), "/bin/sh", Some("/home/user"));
        assert_eq!(paths[0], Path::new("/r/bin/sh"));
        assert_eq!(paths[1], Path::new("/r/home/user"));
        assert!(paths[2..].iter().all(|p| p.starts_with("/r")));
        assert!(paths.iter().any(|p| p.ends_with("etc/ld.so.cache")));
        let without_home = first_command_paths(Path::new("/"), "/bin/sh", None);
        assert_eq!(without_home.len(), paths.len() - 1);
    }

    #[test]
    fn missing_paths_are_counted_out_not_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("bin")).unwrap();
        std::fs::write(dir.path().join("bin/sh"), b"").unwrap();
        std::os::unix::fs::symlink("sh", dir.path().join("bin/dash")).unwrap();
        let paths = first_command_paths(dir.path(), "/bin/dash", Some("/nowhere"));
        assert_eq!(
            look_up(&paths),
            1,
            "only the shell (through its symlink) exists"
        );
    }
}
