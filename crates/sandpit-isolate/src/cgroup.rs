//! Resource control through cgroups: one [`CgroupDriver`] trait with a v1 implementation (one
//! directory per controller, as on hybrid hosts) and a v2 implementation (one unified directory),
//! chosen at run time from `/proc/self/mountinfo` and `/proc/self/cgroup`.
//!
//! Sandbox cgroups are nested under the cgroup this process already lives in (per hierarchy), in a
//! `sandpit/<id>` subdirectory, so that a service confined by its own supervisor stays confined and
//! never needs the root of a hierarchy. On hybrid hosts a v1 driver still uses the v2 unified
//! hierarchy for `cgroup.kill` and `cgroup.freeze` where those exist, because both are atomic and
//! cheaper than the v1 freezer dance.
//!
//! The per-sandbox paths live in [`CgroupSet`], which is serialisable so a restarted daemon can
//! pause or destroy sandboxes it did not create.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Controllers a sandbox needs limits from.
pub const REQUIRED_CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];

/// Errors of cgroup detection and management.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error(
        "cgroup controller `{0}` is not available (neither a cgroup v1 hierarchy nor enabled in the \
         cgroup v2 hierarchy); enable it (e.g. boot with cgroup_enable={0}, or delegate it to this \
         service's cgroup via cgroup.subtree_control)"
    )]
    MissingController(String),
    #[error(
        "no way to freeze a cgroup: neither the v1 freezer controller nor cgroup v2 `cgroup.freeze` \
         is available; mount the freezer hierarchy or a cgroup2 filesystem"
    )]
    NoFreezer,
    #[error("cgroup I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("timed out after {0:?} waiting for cgroup {1} to {2}")]
    Timeout(Duration, PathBuf, &'static str),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Limits applied to one sandbox cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    pub pids: Option<u64>,
    /// CPUs worth of time per period (1.5 = one and a half CPUs).
    pub cpu: Option<f64>,
}

/// Which cgroup version a [`CgroupSet`] was created with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CgroupVersion {
    V1,
    V2,
}

/// The directories of one sandbox's cgroup(s).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupSet {
    pub version: CgroupVersion,
    /// v1: one directory per controller (`memory`, `pids`, `cpu`, `freezer`); v2: empty.
    pub controllers: BTreeMap<String, PathBuf>,
    /// The v2 directory: all of the sandbox's cgroup on v2, freeze/kill only on hybrid hosts.
    pub unified: Option<PathBuf>,
}

impl CgroupSet {
    /// Every directory of this set, deepest-unique, in a stable order.
    pub fn dirs(&self) -> Vec<&Path> {
        let mut v: Vec<&Path> = self.controllers.values().map(PathBuf::as_path).collect();
        if let Some(u) = &self.unified {
            v.push(u);
        }
        v.sort();
        v.dedup();
        v
    }

    /// The directory used to list member processes.
    fn procs_dir(&self) -> Option<&Path> {
        self.unified
            .as_deref()
            .or_else(|| self.controllers.values().next().map(PathBuf::as_path))
    }
}

/// Inside a sandbox's v2 cgroup: the agent's own cgroup (owned by the host: nothing in the sandbox can
/// move processes in or out of it, nor freeze it) …
pub const AGENT_CGROUP: &str = "agent";
/// … and the subtree delegated to the sandbox (owned by its root): the agent makes one child cgroup per
/// process there, so that a kill reaches every descendant, `setsid` escapers included. A process enters
/// it through a `cgroup.procs` descriptor the host opened ([`open_work_entry`]): migrating from `agent`
/// to `work` needs write access to their common ancestor, which only the host has.
pub const WORK_CGROUP: &str = "work";

/// The v1 controllers with a [`WORK_CGROUP`] too, so that the agent keeps a reserve of them: a fork
/// bomb or a memory hog in the sandbox fills `work`'s limit, not the agent's. The agent itself stays in
/// the sandbox's own directory (v1 lets a cgroup hold processes beside its children), whose limit is
/// `work`'s plus the reserve: an `agent` directory there would limit nothing more, and a memory cgroup
/// is the dearest directory a create makes.
const SPLIT_V1: [&str; 2] = ["pids", "memory"];

/// Pids the agent keeps for itself, on top of a sandbox's `pids` limit.
pub const AGENT_PIDS_RESERVE: u64 = 16;
/// Memory the agent keeps for itself, on top of a sandbox's memory limit.
pub const AGENT_MEMORY_RESERVE: u64 = 16 << 20;

/// Splits a new sandbox's cgroups: [`AGENT_CGROUP`] and [`WORK_CGROUP`] on v2, [`WORK_CGROUP`] on the
/// v1 controllers of [`SPLIT_V1`].
///
/// On v2 the `work` subtree is delegated to the sandbox's root (`uid`/`gid` on the host): the directory
/// and its `cgroup.procs`, `cgroup.threads` and `cgroup.subtree_control`, as cgroup v2 delegation
/// prescribes. On the v1 `pids` and `memory` controllers `work` gets exactly the sandbox's limits, which
/// is what its processes (and runtimes sizing themselves from the cgroup, like the JVM) see, while the
/// sandbox's own directory gets the limits plus the agent's reserve ([`AGENT_PIDS_RESERVE`],
/// [`AGENT_MEMORY_RESERVE`]); both stay the host's, so no process can be moved across the two.
pub fn split_for_agent(
    set: &CgroupSet,
    limits: &Limits,
    uid: u32,
    gid: u32,
) -> Result<(), CgroupError> {
    if let Some(unified) = &set.unified {
        mkdir_all(&unified.join(AGENT_CGROUP))?;
        let work = unified.join(WORK_CGROUP);
        mkdir_all(&work)?;
        for p in [
            work.clone(),
            work.join("cgroup.procs"),
            work.join("cgroup.threads"),
            work.join("cgroup.subtree_control"),
        ] {
            if p.exists() {
                std::os::unix::fs::chown(&p, Some(uid), Some(gid)).map_err(io_err(&p))?;
            }
        }
    }
    for ctrl in SPLIT_V1 {
        let Some(dir) = set.controllers.get(ctrl) else {
            continue;
        };
        let work = dir.join(WORK_CGROUP);
        mkdir_all(&work)?;
        match ctrl {
            "pids" => {
                if let Some(n) = limits.pids {
                    write(
                        &dir.join("pids.max"),
                        &n.saturating_add(AGENT_PIDS_RESERVE).to_string(),
                    )?;
                    write(&work.join("pids.max"), &n.to_string())?;
                }
            }
            _ => {
                if let Some(bytes) = limits.memory_bytes {
                    let whole = bytes.saturating_add(AGENT_MEMORY_RESERVE).to_string();
                    // memsw may never be below the memory limit: raise it first, lower it last.
                    let memsw = dir.join("memory.memsw.limit_in_bytes");
                    if memsw.exists() {
                        write(&memsw, &whole)?;
                    }
                    write(&dir.join("memory.limit_in_bytes"), &whole)?;
                    let keep = bytes.to_string();
                    write(&work.join("memory.limit_in_bytes"), &keep)?;
                    let memsw = work.join("memory.memsw.limit_in_bytes");
                    if memsw.exists() {
                        write(&memsw, &keep)?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// How a sandbox sees its own cgroups under `/sys/fs/cgroup`, laid out as container runtimes and
/// systemd lay them out, so that runtimes that size themselves from the cgroup (the JVM, Go, Node)
/// find the sandbox's limits: on a hybrid host one read-only v1 mount per hierarchy the sandbox has a
/// directory in (`memory`, `cpu`, `cpuacct`, `cpuset`, `pids`; combined ones as `cpu,cpuacct` with a
/// symlink per controller) and the v2 hierarchy at `unified`; on a pure v2 host the v2 hierarchy at
/// `/sys/fs/cgroup` itself. Each mount is rooted at the sandbox's own directory by its cgroup namespace.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CgroupView {
    /// v1 hierarchies to show, each named by its controllers (`"memory"`, `"cpu,cpuacct"`), with the
    /// sandbox's own directory in it.
    pub v1: Vec<V1View>,
    /// Where the v2 hierarchy is mounted, relative to `/sys/fs/cgroup` (`""` for there itself).
    pub v2: Option<&'static str>,
}

/// One v1 hierarchy of a sandbox's cgroup view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1View {
    /// Its controllers, comma-separated: the directory's name under `/sys/fs/cgroup` inside.
    pub controllers: String,
    /// The sandbox's own directory in it, on the host (what the view shows).
    pub dir: PathBuf,
}

/// v1 controllers a sandbox sees (the freezer is the host's business).
const VIEW_V1: [&str; 5] = ["cpu", "cpuacct", "cpuset", "memory", "pids"];

impl CgroupView {
    /// The view of a sandbox with cgroups `set`.
    pub fn of(set: &CgroupSet) -> Self {
        // Controllers sharing a hierarchy share a directory.
        let mut by_dir: BTreeMap<&Path, Vec<&str>> = BTreeMap::new();
        for (c, d) in &set.controllers {
            if VIEW_V1.contains(&c.as_str()) {
                by_dir.entry(d).or_default().push(c);
            }
        }
        let mut v1: Vec<V1View> = by_dir
            .into_iter()
            .map(|(d, cs)| V1View {
                controllers: cs.join(","),
                dir: d.to_path_buf(),
            })
            .collect();
        v1.sort_by(|a, b| a.controllers.cmp(&b.controllers));
        let v2 = set.unified.as_ref().map(|_| match set.version {
            CgroupVersion::V1 => "unified",
            CgroupVersion::V2 => "",
        });
        Self { v1, v2 }
    }

    /// The agent's `--cgroup` directory inside the sandbox: [`WORK_CGROUP`] in the v2 hierarchy.
    pub fn work_dir(&self) -> Option<String> {
        let v2 = self.v2?;
        Some(if v2.is_empty() {
            format!("/sys/fs/cgroup/{WORK_CGROUP}")
        } else {
            format!("/sys/fs/cgroup/{v2}/{WORK_CGROUP}")
        })
    }
}

/// Moves the sandbox's init (the agent) into its v2 [`AGENT_CGROUP`]. Done once it has exec'd: by then it
/// has made the sandbox's own v2 directory the root of its cgroup namespace (so that the sandbox sees
/// `agent` and `work` side by side). The agent starts no process before it is ready, so it is moved while
/// it starts up; a custom init (tests) once it is ready, since it may start processes before.
pub fn enter_agent(set: &CgroupSet, pid: i32) -> Result<(), CgroupError> {
    // On v1 the agent stays where it joined, the sandbox's own directories ([`SPLIT_V1`]).
    if let Some(u) = &set.unified {
        let p = u.join(AGENT_CGROUP).join("cgroup.procs");
        if p.exists() {
            fs::write(&p, pid.to_string()).map_err(io_err(&p))?;
        }
    }
    Ok(())
}

/// Opens the `tasks` file of each cgroup v1 hierarchy the sandbox has a directory in (once per
/// directory: combined controllers share one), for the sandbox's first process to join them itself
/// (`child::Plan::join_fds`). Empty on a pure v2 host.
pub fn open_v1_joins(set: &CgroupSet) -> Result<Vec<fs::File>, CgroupError> {
    let dirs: std::collections::BTreeSet<&PathBuf> = set.controllers.values().collect();
    dirs.into_iter()
        .map(|d| {
            let p = d.join("tasks");
            fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .map_err(io_err(&p))
        })
        .collect()
}

/// Moves `pid` into the sandbox's v2 cgroup (the v1 ones it joins itself: [`open_v1_joins`]).
pub fn add_to_unified(set: &CgroupSet, pid: i32) -> Result<(), CgroupError> {
    if let Some(u) = &set.unified {
        let p = u.join("cgroup.procs");
        fs::write(&p, pid.to_string()).map_err(io_err(&p))?;
    }
    Ok(())
}

/// Opens the `cgroup.procs` of each [`WORK_CGROUP`] of a sandbox for writing, with the host's
/// credentials (the kernel checks a migration against the opener's): handed to the agent, they are how
/// its processes leave the agent's cgroups. The v2 one comes last (the agent then moves the process
/// on, into its own cgroup below it). Empty when the set was not split.
pub fn open_work_entries(set: &CgroupSet) -> Vec<fs::File> {
    SPLIT_V1
        .iter()
        .filter_map(|c| set.controllers.get(*c))
        .chain(set.unified.iter())
        .filter_map(|d| {
            fs::OpenOptions::new()
                .write(true)
                .open(d.join(WORK_CGROUP).join("cgroup.procs"))
                .ok()
        })
        .collect()
}

/// The operations the isolator needs from a cgroup implementation.
pub trait CgroupDriver: Send + Sync + std::fmt::Debug {
    /// A short description of what was detected, for diagnostics.
    fn describe(&self) -> String;
    /// Creates the sandbox cgroup(s) for `id` and applies `limits`.
    fn create(&self, id: &str, limits: &Limits) -> Result<CgroupSet, CgroupError>;
    /// The directories [`CgroupDriver::create`] makes for `id`, without making them: how a sandbox
    /// whose creator died before recording them is still cleaned up.
    fn set_for(&self, id: &str) -> CgroupSet;
    /// Moves `pid` into every directory of `set`.
    fn add_process(&self, set: &CgroupSet, pid: i32) -> Result<(), CgroupError> {
        for d in set.dirs() {
            let p = d.join("cgroup.procs");
            fs::write(&p, pid.to_string()).map_err(io_err(&p))?;
        }
        Ok(())
    }
    /// Freezes every process of the set and waits until the kernel reports it frozen.
    fn freeze(&self, set: &CgroupSet) -> Result<(), CgroupError>;
    /// Thaws the set.
    fn thaw(&self, set: &CgroupSet) -> Result<(), CgroupError>;
    /// SIGKILLs every process of the set (including ones forked while killing).
    fn kill_all(&self, set: &CgroupSet) -> Result<(), CgroupError>;
    /// Member pids (as seen from this pid namespace).
    fn procs(&self, set: &CgroupSet) -> Vec<i32> {
        set.procs_dir().map(read_procs).unwrap_or_default()
    }
    /// Removes the directories; waits for exiting processes to leave first.
    fn remove(&self, set: &CgroupSet) -> Result<(), CgroupError> {
        remove_dirs(set, Duration::from_secs(5))
    }
}

/// Members of the cgroup at `dir` and of every cgroup below it.
fn read_procs(dir: &Path) -> Vec<i32> {
    let mut pids: Vec<i32> = fs::read_to_string(dir.join("cgroup.procs"))
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default();
    for sub in child_dirs(dir) {
        pids.extend(read_procs(&sub));
    }
    pids
}

fn child_dirs(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// `dir` and every cgroup below it, deepest first (the order `rmdir` needs).
fn depth_first(dir: &Path, out: &mut Vec<PathBuf>) {
    for sub in child_dirs(dir) {
        depth_first(&sub, out);
    }
    out.push(dir.to_path_buf());
}

fn remove_dirs(set: &CgroupSet, timeout: Duration) -> Result<(), CgroupError> {
    let deadline = Instant::now() + timeout;
    let mut all = Vec::new();
    for d in set.dirs() {
        depth_first(d, &mut all);
    }
    for d in &all {
        let d = d.as_path();
        loop {
            match fs::remove_dir(d) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                // EBUSY while dying processes still count as members.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => {
                    return Err(CgroupError::Io {
                        path: d.to_path_buf(),
                        source: e,
                    });
                }
            }
        }
    }
    Ok(())
}

/// CPU time quota per period in microseconds for `cpus` CPUs (at least 1 ms so a tiny fraction
/// still makes progress).
fn cpu_quota(cpus: f64) -> (u64, u64) {
    const PERIOD_US: u32 = 100_000;
    (
        (cpus * f64::from(PERIOD_US)).max(1000.0) as u64,
        u64::from(PERIOD_US),
    )
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(io_err(path))
}

fn mkdir_all(path: &Path) -> Result<(), CgroupError> {
    fs::create_dir_all(path).map_err(io_err(path))
}

/// A new v1 `cpuset` directory has no cpus and no memory nodes, and takes no process until it has:
/// give it (and any new ancestor) its parent's.
fn inherit_cpuset(dir: &Path) -> Result<(), CgroupError> {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let p = dir.join(file);
        let Ok(current) = fs::read_to_string(&p) else {
            return Ok(()); // not a cpuset directory (or above its mount): nothing to fill.
        };
        if !current.trim().is_empty() {
            continue;
        }
        let Some(parent) = dir.parent() else {
            return Ok(());
        };
        inherit_cpuset(parent)?;
        let from = parent.join(file);
        let value = fs::read_to_string(&from).map_err(io_err(&from))?;
        write(&p, value.trim())?;
    }
    Ok(())
}

fn wait_for(
    timeout: Duration,
    dir: &Path,
    what: &'static str,
    mut done: impl FnMut() -> bool,
) -> Result<(), CgroupError> {
    let deadline = Instant::now() + timeout;
    let mut spin = 0u32;
    while !done() {
        if Instant::now() > deadline {
            return Err(CgroupError::Timeout(timeout, dir.to_path_buf(), what));
        }
        // Freezing usually completes within microseconds: spin briefly before sleeping.
        spin += 1;
        if spin > 20 {
            std::thread::sleep(Duration::from_micros(200));
        } else {
            std::thread::yield_now();
        }
    }
    Ok(())
}

fn v2_freeze(dir: &Path, on: bool) -> Result<(), CgroupError> {
    write(&dir.join("cgroup.freeze"), if on { "1" } else { "0" })?;
    let events = dir.join("cgroup.events");
    let want = if on { "frozen 1" } else { "frozen 0" };
    wait_for(
        Duration::from_secs(5),
        dir,
        if on { "freeze" } else { "thaw" },
        || fs::read_to_string(&events).is_ok_and(|s| s.lines().any(|l| l == want)),
    )
}

fn v2_kill(dir: &Path) -> Result<(), CgroupError> {
    write(&dir.join("cgroup.kill"), "1")
}

/// Kills every member when there is no `cgroup.kill`: freeze so nothing can fork, SIGKILL every
/// member, then thaw so the signals are delivered.
fn kill_frozen(
    driver: &dyn CgroupDriver,
    set: &CgroupSet,
    procs_dir: &Path,
) -> Result<(), CgroupError> {
    driver.freeze(set)?;
    for pid in read_procs(procs_dir) {
        // SAFETY: kill(2) with a pid read from the cgroup; a vanished pid only yields ESRCH.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    driver.thaw(set)
}

/// cgroup v1 (or hybrid: v1 controllers, plus the v2 unified hierarchy for freeze/kill if present).
#[derive(Debug, Clone)]
pub struct V1Driver {
    /// controller → directory under which sandboxes are created (`<mount>/<own path>/sandpit`).
    parents: BTreeMap<String, PathBuf>,
    /// `<cgroup2 mount>/<own path>/sandpit` when the unified hierarchy offers `cgroup.kill`.
    unified_parent: Option<PathBuf>,
    /// The `cpuset` parent has `cgroup.clone_children` on: the kernel gives a new sandbox cpuset the
    /// parent's cpus and mems as it makes it, so a create need not read them up the tree and write
    /// them (writes the kernel checks against every sibling cpuset, one per live sandbox).
    cpuset_cloned: bool,
}

impl V1Driver {
    /// A driver over existing parent directories. With a `cpuset` parent it turns on that
    /// directory's `cgroup.clone_children` (see `cpuset_cloned`; if it cannot, creates fill a new
    /// cpuset themselves).
    pub fn new(parents: BTreeMap<String, PathBuf>, unified_parent: Option<PathBuf>) -> Self {
        let cpuset_cloned = parents.get("cpuset").is_some_and(|dir| {
            let flag = dir.join("cgroup.clone_children");
            fs::write(&flag, "1").is_ok()
                && fs::read_to_string(&flag).is_ok_and(|v| v.trim() == "1")
        });
        Self {
            parents,
            unified_parent,
            cpuset_cloned,
        }
    }
}

impl CgroupDriver for V1Driver {
    fn set_for(&self, id: &str) -> CgroupSet {
        CgroupSet {
            version: CgroupVersion::V1,
            controllers: self
                .parents
                .iter()
                .map(|(c, p)| (c.clone(), p.join(id)))
                .collect(),
            unified: self.unified_parent.as_ref().map(|u| u.join(id)),
        }
    }

    fn describe(&self) -> String {
        format!(
            "cgroup v1 ({}){}",
            self.parents.keys().cloned().collect::<Vec<_>>().join(", "),
            if self.unified_parent.is_some() {
                " + v2 freeze/kill"
            } else {
                ""
            }
        )
    }

    fn create(&self, id: &str, limits: &Limits) -> Result<CgroupSet, CgroupError> {
        let mut set = CgroupSet {
            version: CgroupVersion::V1,
            controllers: BTreeMap::new(),
            unified: None,
        };
        for (ctrl, parent) in &self.parents {
            let dir = parent.join(id);
            mkdir_all(&dir)?;
            if ctrl == "cpuset" && !self.cpuset_cloned {
                inherit_cpuset(&dir)?;
            }
            set.controllers.insert(ctrl.clone(), dir);
        }
        if let Some(u) = &self.unified_parent {
            let dir = u.join(id);
            mkdir_all(&dir)?;
            set.unified = Some(dir);
        }
        let c = &set.controllers;
        if let (Some(bytes), Some(dir)) = (limits.memory_bytes, c.get("memory")) {
            write(&dir.join("memory.limit_in_bytes"), &bytes.to_string())?;
            // Without this the sandbox could push its memory to swap beyond the limit; the file
            // only exists when swap accounting is on.
            let memsw = dir.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                write(&memsw, &bytes.to_string())?;
            }
        }
        if let (Some(n), Some(dir)) = (limits.pids, c.get("pids")) {
            write(&dir.join("pids.max"), &n.to_string())?;
        }
        if let (Some(cpus), Some(dir)) = (limits.cpu, c.get("cpu")) {
            let (quota, period) = cpu_quota(cpus);
            write(&dir.join("cpu.cfs_period_us"), &period.to_string())?;
            write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
        }
        Ok(set)
    }

    fn freeze(&self, set: &CgroupSet) -> Result<(), CgroupError> {
        if let Some(u) = &set.unified {
            if u.join("cgroup.freeze").exists() {
                return v2_freeze(u, true);
            }
        }
        let dir = set
            .controllers
            .get("freezer")
            .ok_or(CgroupError::NoFreezer)?;
        let state = dir.join("freezer.state");
        write(&state, "FROZEN")?;
        // The v1 freezer asks each task to freeze once, when FROZEN is written. A task that was
        // running at that moment and then went to sleep in a freezable wait (a `vfork` parent
        // waiting for its frozen child: dash runs commands that way) is never asked again and
        // the cgroup stays FREEZING for ever. Writing FROZEN again asks again: do it while
        // waiting (seen in `v1_freezer_fallback_without_cgroup_kill`, sandbox.rs).
        let mut polls = 0u32;
        wait_for(Duration::from_secs(5), dir, "freeze", || {
            if fs::read_to_string(&state).is_ok_and(|s| s.trim() == "FROZEN") {
                return true;
            }
            polls += 1;
            if polls % 25 == 0 {
                let _ = fs::write(&state, "FROZEN");
            }
            false
        })
    }

    fn thaw(&self, set: &CgroupSet) -> Result<(), CgroupError> {
        if let Some(u) = &set.unified {
            if u.join("cgroup.freeze").exists() {
                return v2_freeze(u, false);
            }
        }
        let dir = set
            .controllers
            .get("freezer")
            .ok_or(CgroupError::NoFreezer)?;
        write(&dir.join("freezer.state"), "THAWED")
    }

    fn kill_all(&self, set: &CgroupSet) -> Result<(), CgroupError> {
        if let Some(u) = &set.unified {
            if u.join("cgroup.kill").exists() {
                return v2_kill(u);
            }
        }
        let Some(dir) = set.procs_dir() else {
            return Ok(());
        };
        kill_frozen(self, set, dir)
    }
}

/// Pure cgroup v2.
#[derive(Debug, Clone)]
pub struct V2Driver {
    parent: PathBuf,
}

impl V2Driver {
    pub fn new(parent: PathBuf) -> Self {
        Self { parent }
    }
}

impl CgroupDriver for V2Driver {
    fn set_for(&self, id: &str) -> CgroupSet {
        CgroupSet {
            version: CgroupVersion::V2,
            controllers: BTreeMap::new(),
            unified: Some(self.parent.join(id)),
        }
    }

    fn describe(&self) -> String {
        format!("cgroup v2 ({})", self.parent.display())
    }

    fn create(&self, id: &str, limits: &Limits) -> Result<CgroupSet, CgroupError> {
        let dir = self.parent.join(id);
        mkdir_all(&dir)?;
        if let Some(bytes) = limits.memory_bytes {
            write(&dir.join("memory.max"), &bytes.to_string())?;
            let swap = dir.join("memory.swap.max");
            if swap.exists() {
                write(&swap, "0")?;
            }
        }
        if let Some(n) = limits.pids {
            write(&dir.join("pids.max"), &n.to_string())?;
        }
        if let Some(cpus) = limits.cpu {
            let (quota, period) = cpu_quota(cpus);
            write(&dir.join("cpu.max"), &format!("{quota} {period}"))?;
        }
        Ok(CgroupSet {
            version: CgroupVersion::V2,
            controllers: BTreeMap::new(),
            unified: Some(dir),
        })
    }

    fn freeze(&self, set: &CgroupSet) -> Result<(), CgroupError> {
        v2_freeze(set.unified.as_deref().ok_or(CgroupError::NoFreezer)?, true)
    }

    fn thaw(&self, set: &CgroupSet) -> Result<(), CgroupError> {
        v2_freeze(set.unified.as_deref().ok_or(CgroupError::NoFreezer)?, false)
    }

    fn kill_all(&self, set: &CgroupSet) -> Result<(), CgroupError> {
        let Some(dir) = set.unified.as_deref() else {
            return Ok(());
        };
        if dir.join("cgroup.kill").exists() {
            v2_kill(dir)
        } else {
            kill_frozen(self, set, dir)
        }
    }
}

/// What `/proc/self/mountinfo` and `/proc/self/cgroup` say about the cgroup hierarchies.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Layout {
    /// v1 controller → mount point.
    pub v1_mounts: BTreeMap<String, PathBuf>,
    /// v1 controller → our own cgroup path in that hierarchy.
    pub v1_own: BTreeMap<String, String>,
    pub v2_mount: Option<PathBuf>,
    pub v2_own: Option<String>,
}

impl Layout {
    /// Parses the text of `/proc/self/mountinfo` and `/proc/self/cgroup`.
    pub fn parse(mountinfo: &str, self_cgroup: &str) -> Self {
        let mut l = Layout::default();
        for line in mountinfo.lines() {
            let Some((pre, post)) = line.split_once(" - ") else {
                continue;
            };
            let mut post = post.split(' ');
            let fstype = post.next().unwrap_or("");
            let super_opts = post.nth(1).unwrap_or("");
            let Some(mount_point) = pre.split(' ').nth(4) else {
                continue;
            };
            match fstype {
                "cgroup2" => {
                    l.v2_mount
                        .get_or_insert_with(|| PathBuf::from(unescape(mount_point)));
                }
                "cgroup" => {
                    for opt in super_opts.split(',') {
                        if matches!(
                            opt,
                            "memory" | "pids" | "cpu" | "freezer" | "cpuacct" | "cpuset"
                        ) {
                            l.v1_mounts
                                .entry(opt.to_string())
                                .or_insert_with(|| PathBuf::from(unescape(mount_point)));
                        }
                    }
                }
                _ => {}
            }
        }
        for line in self_cgroup.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(_), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if ctrls.is_empty() {
                l.v2_own = Some(path.to_string());
            } else {
                for c in ctrls.split(',') {
                    l.v1_own.insert(c.to_string(), path.to_string());
                }
            }
        }
        l
    }

    /// Reads the layout of the running process.
    pub fn current() -> io::Result<Self> {
        Ok(Self::parse(
            &fs::read_to_string("/proc/self/mountinfo")?,
            &fs::read_to_string("/proc/self/cgroup")?,
        ))
    }

    fn v2_own_dir(&self) -> Option<PathBuf> {
        let m = self.v2_mount.as_ref()?;
        let own = self.v2_own.as_deref()?;
        Some(join_cgroup(m, own))
    }
}

fn unescape(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as octal.
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

fn join_cgroup(mount: &Path, own: &str) -> PathBuf {
    let rel = own.trim_start_matches('/');
    if rel.is_empty() {
        mount.to_path_buf()
    } else {
        mount.join(rel)
    }
}

/// Picks and prepares a driver for `layout`. `subdir` is the directory (relative to our own
/// cgroup) that will hold the sandbox cgroups, normally `sandpit`.
/// cgroup2 mount options a remount must keep (a cgroup2 remount resets those it is not given).
const KEEP_V2_OPTIONS: [&str; 5] = [
    "nsdelegate",
    "memory_recursiveprot",
    "memory_localevents",
    "memory_hugetlb_accounting",
    "pids_localevents",
];

/// Remounts the cgroup2 hierarchy with `favordynmods` (Linux 6.0), unless it has it: moving a process
/// between cgroups then no longer waits for an RCU grace period (10-20 ms on an idle host, paid by the
/// first move after a quiet spell: every create, every first command), at the price of slightly
/// dearer forks and exits. Host-wide, until the next reboot or remount. Returns whether it remounted.
pub fn favor_dynamic_changes(layout: &Layout) -> Result<bool, CgroupError> {
    let Some(mount) = &layout.v2_mount else {
        return Ok(false);
    };
    let mounts =
        fs::read_to_string("/proc/self/mounts").map_err(io_err(Path::new("/proc/self/mounts")))?;
    let Some(opts) = mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() >= 4 && f[2] == "cgroup2" && Path::new(f[1]) == mount.as_path())
            .then(|| f[3].to_owned())
    }) else {
        return Ok(false);
    };
    let Some(data) = favordynmods_remount_data(&opts) else {
        return Ok(false);
    };
    let data = std::ffi::CString::new(data).unwrap_or_default();
    let target = crate::sys::path_cstr(mount).map_err(io_err(mount))?;
    // SAFETY: valid C strings; a remount of an existing mount point.
    let rc = unsafe {
        libc::mount(
            std::ptr::null(),
            target.as_ptr(),
            std::ptr::null(),
            libc::MS_REMOUNT,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(io_err(mount)(io::Error::last_os_error()));
    }
    Ok(true)
}

/// The data of a cgroup2 remount that adds `favordynmods` to mount options `opts` and keeps the
/// cgroup2 ones; `None` when it is there already.
fn favordynmods_remount_data(opts: &str) -> Option<String> {
    if opts.split(',').any(|o| o == "favordynmods") {
        return None;
    }
    let mut data: Vec<&str> = opts
        .split(',')
        .filter(|o| KEEP_V2_OPTIONS.contains(o))
        .collect();
    data.push("favordynmods");
    Some(data.join(","))
}

pub fn detect(layout: &Layout, subdir: &str) -> Result<Box<dyn CgroupDriver>, CgroupError> {
    let v1_complete = REQUIRED_CONTROLLERS
        .iter()
        .all(|c| layout.v1_mounts.contains_key(*c));
    if v1_complete {
        let mut parents = BTreeMap::new();
        // cpuacct and cpuset are optional: with them a sandbox's view of its cgroups is complete
        // (the JVM wants all four of cpu, cpuacct, cpuset and memory before it trusts a v1 cgroup).
        for c in REQUIRED_CONTROLLERS
            .iter()
            .copied()
            .chain(["freezer", "cpuacct", "cpuset"])
        {
            let Some(mount) = layout.v1_mounts.get(c) else {
                continue;
            };
            let own = layout.v1_own.get(c).map_or("/", String::as_str);
            parents.insert(c.to_string(), join_cgroup(mount, own).join(subdir));
        }
        let unified_parent = layout
            .v2_own_dir()
            .filter(|d| d.join("cgroup.kill").exists() || d.join("cgroup.procs").exists())
            .map(|d| d.join(subdir));
        // The unified hierarchy only helps if a child there gets cgroup.freeze (kernel ≥ 5.2):
        // its root never has the file, so probe a level down when creating instead; here we
        // just require some freezer to exist.
        if !parents.contains_key("freezer") && unified_parent.is_none() {
            return Err(CgroupError::NoFreezer);
        }
        for dir in parents.values().chain(unified_parent.iter()) {
            mkdir_all(dir)?;
        }
        if let Some(dir) = parents.get("cpuset") {
            inherit_cpuset(dir)?;
        }
        return Ok(Box::new(V1Driver::new(parents, unified_parent)));
    }
    let Some(own) = layout.v2_own_dir() else {
        let missing = REQUIRED_CONTROLLERS
            .iter()
            .find(|c| !layout.v1_mounts.contains_key(**c))
            .unwrap_or(&"memory");
        return Err(CgroupError::MissingController((*missing).to_string()));
    };
    let avail = fs::read_to_string(own.join("cgroup.controllers")).unwrap_or_default();
    for c in REQUIRED_CONTROLLERS {
        if !avail.split_whitespace().any(|a| a == c) {
            return Err(CgroupError::MissingController(c.to_string()));
        }
    }
    let parent = own.join(subdir);
    enable_v2_controllers(&own, &parent)?;
    Ok(Box::new(V2Driver::new(parent)))
}

/// Enables the controllers for `parent`'s children. cgroup v2 forbids controllers in the subtree
/// of a non-root cgroup that has member processes ("no internal processes"), so if our own cgroup
/// holds processes, they are moved to a `supervisor` leaf first, as container inits do.
fn enable_v2_controllers(own: &Path, parent: &Path) -> Result<(), CgroupError> {
    let enable = REQUIRED_CONTROLLERS.map(|c| format!("+{c}")).join(" ");
    let own_ctl = own.join("cgroup.subtree_control");
    if fs::write(&own_ctl, &enable).is_err() {
        let leaf = own.join("supervisor");
        mkdir_all(&leaf)?;
        for pid in read_procs(own) {
            // A process may exit meanwhile; the retry below reports real failures.
            let _ = fs::write(leaf.join("cgroup.procs"), pid.to_string());
        }
        write(&own_ctl, &enable)?;
    }
    mkdir_all(parent)?;
    write(&parent.join("cgroup.subtree_control"), &enable)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_favordynmods_remount_keeps_the_cgroup2_options_and_happens_once() {
        assert_eq!(
            favordynmods_remount_data("rw,nosuid,relatime,nsdelegate,memory_recursiveprot")
                .as_deref(),
            Some("nsdelegate,memory_recursiveprot,favordynmods")
        );
        assert_eq!(
            favordynmods_remount_data("rw,relatime").as_deref(),
            Some("favordynmods")
        );
        assert_eq!(favordynmods_remount_data("rw,relatime,favordynmods"), None);
    }

    use super::*;

    const HYBRID_MOUNTINFO: &str = "\
30 22 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
32 30 0:28 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
33 30 0:29 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
34 30 0:30 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
35 30 0:31 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const HYBRID_SELF: &str = "\
8:pids:/
6:freezer:/
4:memory:/process_api/abc
1:cpu:/
0::/
";

    #[test]
    fn parses_hybrid_layout() {
        let l = Layout::parse(HYBRID_MOUNTINFO, HYBRID_SELF);
        assert_eq!(
            l.v1_mounts["memory"],
            PathBuf::from("/sys/fs/cgroup/memory")
        );
        assert_eq!(l.v1_own["memory"], "/process_api/abc");
        assert_eq!(
            l.v2_mount.as_deref(),
            Some(Path::new("/sys/fs/cgroup/unified"))
        );
        assert_eq!(l.v2_own.as_deref(), Some("/"));
        assert_eq!(
            join_cgroup(&l.v1_mounts["memory"], &l.v1_own["memory"]),
            PathBuf::from("/sys/fs/cgroup/memory/process_api/abc")
        );
    }

    #[test]
    fn parses_pure_v2_layout() {
        let l = Layout::parse(
            "25 1 0:22 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n",
            "0::/system.slice/sandpit.service\n",
        );
        assert!(l.v1_mounts.is_empty());
        assert_eq!(
            l.v2_own_dir().unwrap(),
            PathBuf::from("/sys/fs/cgroup/system.slice/sandpit.service")
        );
    }

    fn fake_layout(root: &Path) -> Layout {
        let mut l = Layout::default();
        for c in ["memory", "pids", "cpu", "freezer"] {
            l.v1_mounts.insert(c.into(), root.join(c));
            l.v1_own.insert(
                c.into(),
                if c == "memory" {
                    "/svc/x".into()
                } else {
                    "/".into()
                },
            );
        }
        l
    }

    #[test]
    fn v1_driver_nests_under_own_cgroup_and_writes_limits() {
        let tmp = tempfile::tempdir().unwrap();
        let d = detect(&fake_layout(tmp.path()), "sandpit").unwrap();
        let limits = Limits {
            memory_bytes: Some(64 << 20),
            pids: Some(50),
            cpu: Some(0.5),
        };
        let set = d.create("sb1", &limits).unwrap();
        let mem = tmp.path().join("memory/svc/x/sandpit/sb1");
        assert_eq!(set.controllers["memory"], mem);
        assert_eq!(
            fs::read_to_string(mem.join("memory.limit_in_bytes")).unwrap(),
            "67108864"
        );
        let pids = tmp.path().join("pids/sandpit/sb1");
        assert_eq!(fs::read_to_string(pids.join("pids.max")).unwrap(), "50");
        let cpu = tmp.path().join("cpu/sandpit/sb1");
        assert_eq!(
            fs::read_to_string(cpu.join("cpu.cfs_quota_us")).unwrap(),
            "50000"
        );
        assert_eq!(set.dirs().len(), 4);
        // The set survives a serde round trip (the daemon persists it).
        let back: CgroupSet = serde_json::from_str(&serde_json::to_string(&set).unwrap()).unwrap();
        assert_eq!(back, set);
    }

    #[test]
    fn v2_driver_writes_unified_limits() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("cgroup.controllers"), "cpu memory pids io").unwrap();
        let l = Layout {
            v2_mount: Some(tmp.path().to_path_buf()),
            v2_own: Some("/".into()),
            ..Layout::default()
        };
        let d = detect(&l, "sandpit").unwrap();
        assert_eq!(
            fs::read_to_string(tmp.path().join("cgroup.subtree_control")).unwrap(),
            "+memory +pids +cpu"
        );
        let set = d
            .create(
                "a",
                &Limits {
                    memory_bytes: Some(1 << 20),
                    pids: None,
                    cpu: Some(2.0),
                },
            )
            .unwrap();
        let dir = tmp.path().join("sandpit/a");
        assert_eq!(set.unified.as_deref(), Some(dir.as_path()));
        assert_eq!(
            fs::read_to_string(dir.join("cpu.max")).unwrap(),
            "200000 100000"
        );
        assert_eq!(
            fs::read_to_string(dir.join("memory.max")).unwrap(),
            "1048576"
        );
    }

    #[test]
    fn missing_controller_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("cgroup.controllers"), "cpu memory").unwrap();
        let l = Layout {
            v2_mount: Some(tmp.path().to_path_buf()),
            v2_own: Some("/".into()),
            ..Layout::default()
        };
        let e = detect(&l, "sandpit").unwrap_err();
        assert!(e.to_string().contains("`pids`"), "{e}");
    }

    #[test]
    fn the_view_mounts_each_v1_hierarchy_once_and_v2_beside_them() {
        let mut set = CgroupSet {
            version: CgroupVersion::V1,
            controllers: BTreeMap::new(),
            unified: Some("/u/sandpit/x".into()),
        };
        for (c, d) in [
            ("cpu", "/c/sandpit/x"),
            ("cpuacct", "/c/sandpit/x"),
            ("cpuset", "/s/sandpit/x"),
            ("memory", "/m/sandpit/x"),
            ("pids", "/p/sandpit/x"),
            ("freezer", "/f/sandpit/x"),
        ] {
            set.controllers.insert(c.into(), d.into());
        }
        let view = CgroupView::of(&set);
        let v1: Vec<(&str, &Path)> = view
            .v1
            .iter()
            .map(|h| (h.controllers.as_str(), h.dir.as_path()))
            .collect();
        assert_eq!(
            v1,
            [
                ("cpu,cpuacct", Path::new("/c/sandpit/x")),
                ("cpuset", Path::new("/s/sandpit/x")),
                ("memory", Path::new("/m/sandpit/x")),
                ("pids", Path::new("/p/sandpit/x")),
            ]
        );
        assert_eq!(view.v2, Some("unified"));
        assert_eq!(
            view.work_dir().as_deref(),
            Some("/sys/fs/cgroup/unified/work")
        );
        let v2 = CgroupView::of(&CgroupSet {
            version: CgroupVersion::V2,
            controllers: BTreeMap::new(),
            unified: Some("/u/sandpit/x".into()),
        });
        assert!(v2.v1.is_empty());
        assert_eq!(v2.work_dir().as_deref(), Some("/sys/fs/cgroup/work"));
    }

    #[test]
    fn a_new_cpuset_inherits_cpus_and_mems_from_the_nearest_filled_ancestor() {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path();
        let mid = top.join("sandpit");
        let leaf = mid.join("x");
        fs::create_dir_all(&leaf).unwrap();
        fs::write(top.join("cpuset.cpus"), "0-1\n").unwrap();
        fs::write(top.join("cpuset.mems"), "0\n").unwrap();
        for d in [&mid, &leaf] {
            fs::write(d.join("cpuset.cpus"), "\n").unwrap();
            fs::write(d.join("cpuset.mems"), "").unwrap();
        }
        inherit_cpuset(&leaf).unwrap();
        for d in [&mid, &leaf] {
            assert_eq!(fs::read_to_string(d.join("cpuset.cpus")).unwrap(), "0-1");
            assert_eq!(fs::read_to_string(d.join("cpuset.mems")).unwrap(), "0");
        }
    }

    #[test]
    fn the_agents_reserve_comes_on_top_of_the_limits() {
        let tmp = tempfile::tempdir().unwrap();
        let mut set = CgroupSet {
            version: CgroupVersion::V1,
            controllers: BTreeMap::new(),
            unified: None,
        };
        for c in ["memory", "pids"] {
            set.controllers.insert(c.into(), tmp.path().join(c));
        }
        let limits = Limits {
            memory_bytes: Some(512 << 20),
            pids: Some(100),
            cpu: None,
        };
        split_for_agent(&set, &limits, 0, 0).unwrap();
        let read = |p: &str| fs::read_to_string(tmp.path().join(p)).unwrap();
        assert_eq!(read("pids/pids.max"), "116");
        assert_eq!(read("pids/work/pids.max"), "100");
        assert_eq!(
            read("memory/memory.limit_in_bytes"),
            (528u64 << 20).to_string()
        );
        assert_eq!(
            read("memory/work/memory.limit_in_bytes"),
            (512u64 << 20).to_string()
        );
    }
}
