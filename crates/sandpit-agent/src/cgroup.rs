//! Optional per-process cgroups, so that a kill reaches even descendants that left the process group.
//!
//! A process group catches every descendant that does not call `setsid`/`setpgid`; daemons do. When the
//! agent is given a cgroup directory it may manage (`--cgroup DIR`), each process gets a child cgroup
//! there and a kill empties that cgroup: with `cgroup.kill` (cgroup v2) in one write, otherwise by
//! signalling every member until none is left (v1, or v2 before 5.14).

use std::path::{Path, PathBuf};

/// A directory under which the agent creates one cgroup per process.
#[derive(Debug, Clone)]
pub struct ProcessCgroups {
    root: PathBuf,
}

impl ProcessCgroups {
    /// Uses `root` if it looks like a cgroup directory we can create children in.
    pub fn new(root: &Path) -> std::io::Result<Self> {
        if !root.join("cgroup.procs").exists() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "{} is not a cgroup directory (no cgroup.procs)",
                    root.display()
                ),
            ));
        }
        Ok(Self {
            root: root.to_owned(),
        })
    }

    /// Creates the cgroup for a process and returns its directory.
    pub fn create(&self, name: &str) -> std::io::Result<PathBuf> {
        let dir = self.root.join(name);
        match std::fs::create_dir(&dir) {
            Ok(()) => Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(dir),
            Err(e) => Err(e),
        }
    }
}

/// Kills every process in the cgroup at `dir`.
pub fn kill_all(dir: &Path) {
    if std::fs::write(dir.join("cgroup.kill"), "1").is_ok() {
        return;
    }
    // No cgroup.kill: signal members until the set is empty. A few rounds catch processes forked
    // between reading the list and signalling.
    for _ in 0..10 {
        let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) else {
            return;
        };
        let pids: Vec<i32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// Removes the cgroup if it is empty; returns whether it is gone.
pub fn remove(dir: &Path) -> bool {
    match std::fs::remove_dir(dir) {
        Ok(()) => true,
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}
