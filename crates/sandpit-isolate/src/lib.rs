//! `sandpit-isolate`: turns "create a sandbox" into an isolated Linux environment whose PID 1 is
//! the sandpit agent, and tears it down without a trace.
//!
//! The [`Isolator`] owns the host side: host checks, templates, uid/gid ranges, cgroups and the
//! idmapped overlay rootfs. The sandbox's first process is cloned directly from the caller into
//! new user/pid/mount/uts/ipc/net namespaces, sharing the caller's memory until it execs (no page
//! tables copied), and prepares itself with raw syscalls only (see `child.rs` and `nolibc.rs`), which
//! keeps creation in the low milliseconds and is safe in a multi-threaded daemon. Everything about a
//! running sandbox is in a serialisable [`SandboxHandle`], so a restarted daemon can pause, resume
//! and destroy what an earlier instance created; sandboxes do not depend on their creator staying
//! alive.
//!
//! The API is synchronous; call it from `spawn_blocking` in async code.

mod cgroup;
mod child;
mod hostcheck;
mod idrange;
mod nolibc;
pub mod procfs;
mod rootfs;
mod seccomp;
pub mod snapshot;
mod sys;
mod template;
pub mod usage;
pub mod volume;

use std::ffi::CString;
use std::fs;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use cgroup::{
    CgroupDriver, CgroupError, CgroupSet, CgroupVersion, Layout, Limits, V1Driver, V2Driver, detect,
};
pub use child::READY_FD;
pub use hostcheck::{HostError, needs_interpreter};
pub use idrange::{IdRange, RANGE_SIZE, RangeError};
pub use rootfs::RootfsError;
pub use seccomp::{DENIED as DENIED_SYSCALLS, FilterError};
pub use snapshot::SyncStats;
pub use template::{BASE as BASE_TEMPLATE, ImportSource, LayerMeta, TemplateError, TemplateInfo};

/// Where the agent binary appears inside every sandbox (read-only bind mount of the host file).
pub const AGENT_PATH_IN_SANDBOX: &str = "/.sandpit/sandpit";
/// The sandbox directory the host-side `run` directory is bind-mounted on.
pub const RUN_DIR_IN_SANDBOX: &str = "/run/sandpit";

/// Configuration of an [`Isolator`].
#[derive(Debug, Clone)]
pub struct IsolateConfig {
    /// Templates, sandbox directories and id-range reservations live here (created 0700).
    pub state_dir: PathBuf,
    /// Host path of the `sandpit` binary, bind-mounted read-only into sandboxes as the agent.
    pub agent_binary: PathBuf,
    /// First host uid/gid handed to sandboxes.
    pub id_range_base: u32,
    /// How many 65536-id ranges may be reserved at once (= max concurrent sandboxes).
    pub id_range_slots: u32,
    /// Writable-layer size when a spec gives no `disk_mb`.
    pub default_disk_mb: u64,
    /// How long `create` waits for the init to signal readiness on fd [`READY_FD`] while the init does
    /// nothing: an init that got on with its work (CPU, I/O, a wait on the disk) in that time gets
    /// another, up to [`ready_patience`](Self::ready_patience) of them in all.
    pub ready_timeout: Duration,
    /// How many `ready_timeout`s a progressing init may take (a slow host is not a stuck init).
    pub ready_patience: u32,
    /// Name of the cgroup directory (under our own cgroup) that holds sandbox cgroups.
    pub cgroup_subdir: String,
    /// TEST ONLY: bind-mount the host run directory writable at `/run/sandpit` and send the init's
    /// stdout/stderr to `init.log`, so that tests can watch a sandbox from outside. Both give the
    /// sandbox's root a way to write to the host's disk, so this is off by default and nothing but
    /// this crate's own tests turns it on.
    pub share_run_dir_for_tests: bool,
}

impl IsolateConfig {
    pub fn new(state_dir: impl Into<PathBuf>, agent_binary: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: state_dir.into(),
            agent_binary: agent_binary.into(),
            id_range_base: 1 << 30,
            id_range_slots: 4096,
            default_disk_mb: sandpit_types::tenants::DEFAULT_DISK_MB,
            ready_timeout: Duration::from_secs(10),
            ready_patience: 4,
            cgroup_subdir: "sandpit".into(),
            share_run_dir_for_tests: false,
        }
    }
}

/// What to create.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SandboxSpec {
    /// 1-64 characters from `[A-Za-z0-9_.-]`, unique among live sandboxes.
    pub id: String,
    /// Template name; `base` is built on first use.
    pub template: String,
    /// CPUs (fractional) of CPU time per 100 ms period.
    pub cpu: Option<f64>,
    pub memory_mb: Option<u64>,
    pub pids: Option<u64>,
    /// Size cap of the writable layer, in MiB.
    pub disk_mb: Option<u64>,
    pub hostname: Option<String>,
    /// `None` runs the agent. Otherwise the init's argv (argv[0] is the path inside the sandbox);
    /// it must write a byte to fd [`READY_FD`] when ready.
    pub init_argv: Option<Vec<String>>,
    /// Passed to the agent as `--env K=V` (default environment of processes it starts), or to a
    /// custom init as its environment.
    pub env: Vec<(String, String)>,
    /// A network link out (`eth0`, its addresses, `/etc/resolv.conf`); loopback only when `None`.
    /// The host side (veth, firewall) is `sandpit-net`'s; this crate creates the link into the new
    /// namespace and the sandbox's first process addresses its end.
    #[serde(default)]
    pub network: Option<sandpit_net::Attachment>,
    /// Volumes of the [`volume::VolumeStore`] to mount, idmapped like the template.
    #[serde(default)]
    pub volumes: Vec<sandpit_types::volumes::VolumeMount>,
}

impl SandboxSpec {
    pub fn new(id: impl Into<String>, template: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            template: template.into(),
            ..Self::default()
        }
    }
}

/// A created sandbox; persist it (JSON) to manage the sandbox after a daemon restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxHandle {
    pub id: String,
    /// Pid of the sandbox init in the host pid namespace (0 if creation failed before clone).
    pub init_pid: i32,
    /// Start time of the init (clock ticks since boot), to recognise pid reuse.
    pub init_start_time: u64,
    /// Host path of the agent's unix socket.
    pub agent_socket: PathBuf,
    /// Host-only directory (root, 0700) holding `agent.sock`, the agent's listening socket: the
    /// sandbox gets the listening fd, never the path, so nothing inside can replace or fill it.
    /// (Bind-mounted at `/run/sandpit` only with `share_run_dir_for_tests`.)
    pub run_dir: PathBuf,
    /// `STATE/sandboxes/<id>`: everything host-side that belongs to the sandbox.
    pub sandbox_dir: PathBuf,
    /// The init's stdout/stderr.
    pub log_file: PathBuf,
    pub ids: Option<IdRange>,
    pub cgroups: Option<CgroupSet>,
    pub template: String,
    /// The descriptor number at which the init holds the writable layer ([`child::UPPER_FD`]);
    /// `None` for sandboxes made by a sandpit that did not keep it (they cannot be snapshotted).
    #[serde(default)]
    pub upper_fd: Option<i32>,
    /// What each step of the create took, in µs, in order (`docs/benchmarks.md` reports their medians).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub create_steps: Vec<(String, u64)>,
}

/// Times the steps of a create ([`SandboxHandle::create_steps`]).
struct Steps {
    last: std::time::Instant,
    done: Vec<(String, u64)>,
}

impl Steps {
    fn new() -> Self {
        Self {
            last: std::time::Instant::now(),
            done: Vec::new(),
        }
    }

    /// Records `name` as the step that ends now.
    fn mark(&mut self, name: &str) {
        let now = std::time::Instant::now();
        let us = u64::try_from(now.duration_since(self.last).as_micros()).unwrap_or(u64::MAX);
        self.done.push((name.to_owned(), us));
        self.last = now;
    }
}

/// What [`Isolator::snapshot`] did.
#[derive(Debug, Clone)]
pub struct SnapshotReport {
    pub template: TemplateInfo,
    /// The first pass, while the sandbox ran: everything in its writable layer.
    pub copied: SyncStats,
    /// The second pass, with the sandbox frozen: what changed meanwhile.
    pub settled: SyncStats,
    /// How long the sandbox was frozen (zero when it was paused already or `freeze` was off).
    pub frozen: Duration,
}

/// Errors of the isolator.
#[derive(Debug, thiserror::Error)]
pub enum IsolateError {
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Range(#[from] RangeError),
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Filter(#[from] FilterError),
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    #[error(transparent)]
    Volume(#[from] volume::VolumeError),
    #[error("invalid sandbox spec: {0}")]
    InvalidSpec(String),
    #[error(
        "sandbox {0:?} has no cgroup: it was never fully created; destroy it and create it again"
    )]
    NotCreated(String),
    #[error("sandbox {0:?} already exists; destroy it or pick another id")]
    Exists(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("sandbox init failed while {stage}: {source}")]
    Child {
        stage: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "sandbox init did not signal readiness on fd {fd} after {waited:?} ({reason}; the limit is \
         {timeout:?} without progress); init: {init}; init output: {log}"
    )]
    NotReady {
        fd: i32,
        /// The time allowed without progress ([`IsolateConfig::ready_timeout`]).
        timeout: Duration,
        /// How long the wait took in all (several `timeout`s when the init kept working).
        waited: Duration,
        reason: &'static str,
        /// Where the init was when the wait gave up ([`procfs::describe`]): which binary, and what
        /// each thread waited for in the kernel — so that a rare timeout tells where the time went.
        init: String,
        log: String,
    },
}

fn ioe(what: impl Into<String>) -> impl FnOnce(io::Error) -> IsolateError {
    let what = what.into();
    move |source| IsolateError::Io { what, source }
}

/// The Linux sandbox backend.
#[derive(Debug)]
pub struct Isolator {
    cfg: IsolateConfig,
    cgroups: Box<dyn CgroupDriver>,
    ids: idrange::IdAllocator,
    templates: template::TemplateStore,
    volumes: volume::VolumeStore,
    filters: Vec<seccomp::BpfProgram>,
    /// The exec-only copy of [`IsolateConfig::agent_binary`] that sandboxes get ([`exec_only_agent`]),
    /// or the binary itself when the copy could not be made ([`Isolator::agent_copy_problem`]).
    agent: PathBuf,
    agent_copy_problem: Option<String>,
}

/// Where [`exec_only_agent`] keeps its copy, in the state directory.
const AGENT_COPY: &str = "agent";

/// Copies the agent binary to `STATE/agent`, owned by the host's root and mode `0711`, unless an
/// identical copy (same length and modification time) is there already; returns the copy's path.
///
/// A file that the caller may execute but not read makes `execve` give the new process's memory to the
/// nearest user namespace where the file's owner is mapped (the kernel's `would_dump`): for the host's
/// root, the host's. The agent, exec'd from such a file as a sandbox's init, therefore has its
/// `/proc/1/*` files owned by a uid the sandbox cannot act for: root in the sandbox can no longer
/// write `/proc/1/oom_score_adj` or `/proc/1/comm` (EACCES, instead of a change the agent reverted
/// up to a quarter of a second later), and ptrace access would need `CAP_SYS_PTRACE` on the host. The
/// agent then no longer needs to poll its own `oom_score_adj` (four wake-ups a second in every
/// sandbox, most of what 1,000 idle sandboxes cost the host; see `sandpit_agent::guard`).
fn exec_only_agent(source: &Path, state_dir: &Path) -> Result<PathBuf, IsolateError> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let dest = state_dir.join(AGENT_COPY);
    let src_meta = fs::metadata(source).map_err(ioe(format!("reading {}", source.display())))?;
    let modified = src_meta
        .modified()
        .map_err(ioe(format!("reading {}", source.display())))?;
    if let Ok(m) = fs::metadata(&dest) {
        if m.len() == src_meta.len()
            && m.modified().ok() == Some(modified)
            // Ours (the host's root when the isolator runs at all): /proc/self is owned by our euid.
            && fs::metadata("/proc/self").is_ok_and(|me| me.uid() == m.uid())
            && m.mode() & 0o7777 == 0o711
        {
            return Ok(dest);
        }
    }
    let tmp = state_dir.join(format!("{AGENT_COPY}.tmp-{}", std::process::id()));
    let copy = || -> std::io::Result<()> {
        fs::copy(source, &tmp)?;
        let f = fs::File::options().write(true).open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(0o711))?;
        f.set_modified(modified)?;
        f.sync_all()?;
        drop(f);
        // A rename: sandboxes that run the old copy keep their inode.
        fs::rename(&tmp, &dest)
    };
    copy().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        ioe(format!(
            "copying the agent binary {} to {}",
            source.display(),
            dest.display()
        ))(e)
    })?;
    Ok(dest)
}

/// The directories the child makes for a volume at `path` (absolute, validated by the API), outermost
/// first; the last is the mount point.
fn volume_plan(path: &str) -> child::VolumePlan {
    let mut dirs = Vec::new();
    let mut at = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        at.push('/');
        at.push_str(part);
        dirs.push(child::cstring(&at));
    }
    child::VolumePlan { dirs }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl Isolator {
    /// Checks the host (root, user namespaces, overlayfs, mount API, cgroups, seccomp) and
    /// prepares the state directory. Every missing feature is reported with what to do.
    pub fn new(cfg: IsolateConfig) -> Result<Self, IsolateError> {
        hostcheck::check(&cfg.agent_binary)?;
        if !cfg.state_dir.exists() {
            // Only root needs it: the sandbox child resolves its paths while still host root.
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&cfg.state_dir)
                .map_err(ioe(format!(
                    "creating state dir {}",
                    cfg.state_dir.display()
                )))?;
        }
        fs::create_dir_all(cfg.state_dir.join("sandboxes"))
            .map_err(ioe("creating sandboxes dir"))?;
        let layout = Layout::current().map_err(ioe("reading /proc/self cgroup layout"))?;
        let cgroups = cgroup::detect(&layout, &cfg.cgroup_subdir)?;
        let ids = idrange::IdAllocator::new(
            cfg.state_dir.join("idranges"),
            cfg.id_range_base,
            cfg.id_range_slots,
        )?;
        let templates = template::TemplateStore::new(cfg.state_dir.join("templates"))?;
        let volumes = volume::VolumeStore::new(cfg.state_dir.join("volumes"))?;
        let filters = seccomp::build()?;
        // A full or small state disk must not stop the daemon: the sandboxes then run the configured binary
        // itself, and the agent guards its oom_score_adj by polling (see `exec_only_agent`).
        let (agent, agent_copy_problem) = match exec_only_agent(&cfg.agent_binary, &cfg.state_dir) {
            Ok(p) => (p, None),
            Err(e) => (cfg.agent_binary.clone(), Some(e.to_string())),
        };
        Ok(Self {
            cfg,
            cgroups,
            ids,
            templates,
            volumes,
            filters,
            agent,
            agent_copy_problem,
        })
    }

    /// Remounts the host's cgroup2 hierarchy with `favordynmods` unless it has it
    /// ([`cgroup::favor_dynamic_changes`]); whether it remounted.
    pub fn favor_dynamic_cgroups(&self) -> Result<bool, IsolateError> {
        let layout = Layout::current().map_err(ioe("reading /proc/self cgroup layout"))?;
        Ok(cgroup::favor_dynamic_changes(&layout)?)
    }

    /// Why sandboxes run the configured agent binary rather than its exec-only copy, if they do: the
    /// sandbox's root can then write the agent's `oom_score_adj` (which the agent reverts within 250 ms).
    pub fn agent_copy_problem(&self) -> Option<&str> {
        self.agent_copy_problem.as_deref()
    }

    /// The configuration in use.
    pub fn config(&self) -> &IsolateConfig {
        &self.cfg
    }

    /// The cgroup implementation detected at startup.
    pub fn cgroup_driver(&self) -> &dyn CgroupDriver {
        self.cgroups.as_ref()
    }

    fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.cfg.state_dir.join("sandboxes").join(id)
    }

    /// The volumes.
    pub fn volumes(&self) -> &volume::VolumeStore {
        &self.volumes
    }

    /// Built templates.
    pub fn templates(&self) -> Vec<TemplateInfo> {
        self.templates.list()
    }

    /// Resolves a template, building `base` if needed (takes a few seconds once).
    pub fn ensure_template(&self, name: &str) -> Result<TemplateInfo, IsolateError> {
        Ok(self.templates.resolve(name)?)
    }

    /// Imports a template from a directory, tarball or OCI/docker image.
    pub fn import_template(
        &self,
        name: &str,
        source: &ImportSource,
    ) -> Result<TemplateInfo, IsolateError> {
        Ok(self.templates.import(name, source)?)
    }

    /// Builds a Debian template with debootstrap (minbase), reporting progress lines.
    pub fn build_debian_template(
        &self,
        name: &str,
        suite: &str,
        mirror: Option<&str>,
        progress: &mut dyn FnMut(&str),
    ) -> Result<TemplateInfo, IsolateError> {
        Ok(self.templates.build_debian(name, suite, mirror, progress)?)
    }

    /// Deletes a template (running sandboxes keep their lower layer alive).
    pub fn remove_template(&self, name: &str) -> Result<(), IsolateError> {
        Ok(self.templates.remove(name)?)
    }

    /// Handles of every sandbox with a directory in the state dir, e.g. to reconcile after a
    /// restart. Half-created sandboxes appear too; `destroy` cleans them.
    ///
    /// A directory without a readable `handle.json` is a create whose caller died before it recorded
    /// anything (a daemon killed with SIGKILL): it is listed with what can be inferred from its id (its
    /// id range by owner, its cgroup directories by name), so that [`Isolator::destroy`] still frees
    /// them all.
    pub fn sandboxes(&self) -> Vec<SandboxHandle> {
        fs::read_dir(self.cfg.state_dir.join("sandboxes"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let recorded = fs::read_to_string(e.path().join("handle.json"))
                    .ok()
                    .and_then(|text| serde_json::from_str(&text).ok());
                recorded.or_else(|| {
                    let id = e.file_name().to_str()?.to_owned();
                    valid_id(&id).then(|| self.half_made(&id, e.path()))
                })
            })
            .collect()
    }

    fn half_made(&self, id: &str, dir: PathBuf) -> SandboxHandle {
        let run_dir = dir.join("run");
        let cgroups = self.cgroups.set_for(id);
        SandboxHandle {
            id: id.to_owned(),
            init_pid: 0,
            init_start_time: 0,
            agent_socket: run_dir.join("agent.sock"),
            run_dir,
            log_file: dir.join("init.log"),
            sandbox_dir: dir,
            ids: self.ids.owned_by(id),
            cgroups: cgroups.dirs().iter().any(|d| d.exists()).then_some(cgroups),
            template: String::new(),
            upper_fd: None,
            create_steps: Vec::new(),
        }
    }

    /// Releases id ranges whose owner has no sandbox directory (a destroy that was killed between
    /// removing the directory and releasing the range). Call it only while no create runs (at start),
    /// since a create reserves its range just after making its directory.
    pub fn release_orphan_ranges(&self) -> usize {
        let mut released = 0;
        for (range, owner) in self.ids.reserved() {
            let orphan = owner.is_none_or(|o| !valid_id(&o) || !self.sandbox_dir(&o).exists());
            if orphan && self.ids.release(&range).is_ok() {
                released += 1;
            }
        }
        released
    }

    /// Creates and starts a sandbox; returns once its init signalled readiness.
    pub fn create(&self, spec: &SandboxSpec) -> Result<SandboxHandle, IsolateError> {
        if !valid_id(&spec.id) {
            return Err(IsolateError::InvalidSpec(format!(
                "id {:?}: use 1-64 characters from A-Z a-z 0-9 . _ -",
                spec.id
            )));
        }
        let hostname = spec.hostname.clone().unwrap_or_else(|| "sandpit".into());
        if hostname.is_empty() || hostname.len() > 64 || hostname.contains(['\0', '/']) {
            return Err(IsolateError::InvalidSpec(format!("hostname {hostname:?}")));
        }
        if spec.init_argv.as_ref().is_some_and(Vec::is_empty) {
            return Err(IsolateError::InvalidSpec("init_argv is empty".into()));
        }
        let template = self.templates.resolve(&spec.template)?;
        let dir = self.sandbox_dir(&spec.id);
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(IsolateError::Exists(spec.id.clone()));
            }
            Err(e) => return Err(ioe(format!("creating {}", dir.display()))(e)),
        }
        let run_dir = dir.join("run");
        let mut handle = SandboxHandle {
            id: spec.id.clone(),
            init_pid: 0,
            init_start_time: 0,
            agent_socket: run_dir.join("agent.sock"),
            run_dir,
            sandbox_dir: dir.clone(),
            log_file: dir.join("init.log"),
            ids: None,
            cgroups: None,
            template: template.name.clone(),
            upper_fd: None,
            create_steps: Vec::new(),
        };
        match self.start(spec, &template, &hostname, &mut handle) {
            Ok(()) => Ok(handle),
            Err(e) => {
                let _ = self.destroy(&handle);
                Err(e)
            }
        }
    }

    /// Writes `handle.json` again with the create's step times ([`SandboxHandle::create_steps`]),
    /// which the file written during the create (everything else the handle holds) lacks: a
    /// diagnostic, so a caller does this after answering the create rather than on its path. A
    /// sandbox already destroyed is left alone (its directory is gone: the write fails).
    ///
    /// # Errors
    /// The write failed.
    pub fn record_create_steps(&self, handle: &SandboxHandle) -> Result<(), IsolateError> {
        Self::persist(handle)
    }

    fn persist(handle: &SandboxHandle) -> Result<(), IsolateError> {
        let tmp = handle.sandbox_dir.join("handle.json.tmp");
        fs::write(&tmp, serde_json::to_vec_pretty(handle).unwrap_or_default())
            .map_err(ioe("writing handle.json"))?;
        fs::rename(&tmp, handle.sandbox_dir.join("handle.json")).map_err(ioe("writing handle.json"))
    }

    #[allow(clippy::too_many_lines)]
    fn start(
        &self,
        spec: &SandboxSpec,
        template: &TemplateInfo,
        hostname: &str,
        handle: &mut SandboxHandle,
    ) -> Result<(), IsolateError> {
        let mut timer = Steps::new();
        // `handle.json` is first written once the init exists (after the clone, while the child sets
        // up, which the write then costs nothing of). A create that dies
        // before that is found by [`Isolator::sandboxes`] all the same, with its id range (by owner) and
        // cgroups (by name) inferred from its id, so writing the handle here and after the cgroups as
        // well would only cost two more files on the state dir's file system per create (a new inode
        // each, and on ext4 without a journal inode allocation gets slower with every recent delete).
        let range = self.ids.reserve(&spec.id)?;
        handle.ids = Some(range);
        timer.mark("id range");
        let limits = Limits {
            memory_bytes: spec.memory_mb.map(|m| m << 20),
            pids: spec.pids,
            cpu: spec.cpu,
        };
        let cgroups = self.cgroups.create(&spec.id, &limits)?;
        handle.cgroups = Some(cgroups.clone());
        // The v2 subtree the sandbox's processes live in, delegated to its root (per-process cgroups).
        cgroup::split_for_agent(&cgroups, &limits, range.base, range.base)?;
        // Only with a v2 subtree can the agent give processes cgroups of their own.
        let cgroup_entries = if cgroups.unified.is_some() {
            cgroup::open_work_entries(&cgroups)
        } else {
            Vec::new()
        };

        timer.mark("cgroups (limits, agent/work split)");
        let rootfs_dir = handle.sandbox_dir.join("rootfs");
        fs::create_dir(&rootfs_dir).map_err(ioe("creating rootfs mount point"))?;
        fs::create_dir(&handle.run_dir).map_err(ioe("creating run dir"))?;
        fs::set_permissions(&handle.run_dir, fs::Permissions::from_mode(0o700))
            .map_err(ioe("chmod run dir"))?;
        let share = self.cfg.share_run_dir_for_tests;
        if share {
            chown(&handle.run_dir, Some(range.base), Some(range.base))
                .map_err(ioe("chown run dir"))?;
        }
        // The host binds the agent's socket and hands the sandbox only the listening fd.
        let listener = std::os::unix::net::UnixListener::bind(&handle.agent_socket)
            .map_err(ioe("binding the agent socket"))?;
        // The init's stdout/stderr: /dev/null, since any host file would be a file the sandbox's
        // root could grow without limit (it can take the fd from its PID 1 with pidfd_getfd).
        let log = if share {
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&handle.log_file)
        } else {
            fs::OpenOptions::new().write(true).open("/dev/null")
        }
        .map_err(ioe("opening the init's stdout"))?;

        timer.mark("run directory, agent socket");
        let layers = self.templates.layers(template)?;
        let volume_paths = spec
            .volumes
            .iter()
            .map(|m| self.volumes.mounted(&m.name))
            .collect::<Result<Vec<_>, _>>()?;
        let disk_mb = spec.disk_mb.unwrap_or(self.cfg.default_disk_mb);
        let upper = rootfs::writable_layer(disk_mb, range.base)?;
        if let Some(net) = &spec.network {
            rootfs::seed_file(
                &upper,
                "etc/resolv.conf",
                net.resolv_conf().as_bytes(),
                range.base,
            )?;
        }

        timer.mark("writable layer (tmpfs)");
        let (parent_sock, child_sock) = socketpair()?;
        let (err_r, err_w) = sys::pipe_cloexec().map_err(ioe("pipe"))?;
        let (ready_r, ready_w) = sys::pipe_cloexec().map_err(ioe("pipe"))?;

        let tmp_mb = disk_mb.clamp(16, 4096);
        let shared_run = share.then_some(handle.run_dir.as_path());
        let view = cgroup::CgroupView::of(&cgroups);
        let (steps, early_steps) = rootfs::steps(shared_run, &self.agent, tmp_mb, &view);
        let work_dir = (!cgroup_entries.is_empty())
            .then(|| view.work_dir())
            .flatten();
        let (exec_path, argv, envp) = Self::init_command(spec, work_dir, cgroup_entries.len());
        let keep_caps = child::DEFAULT_CAPS.iter().fold(0u64, |m, &c| m | (1 << c));
        let mut plan = child::Plan::new(
            sys::path_cstr(&rootfs_dir).map_err(ioe("rootfs path"))?,
            early_steps,
            child::cstring(hostname),
            steps,
            exec_path,
            argv,
            envp,
            self.filters.clone(),
            keep_caps,
            [
                child_sock.as_raw_fd(),
                err_w.as_raw_fd(),
                ready_w.as_raw_fd(),
                log.as_raw_fd(),
                listener.as_raw_fd(),
            ],
        );

        plan.parent_sock = parent_sock.as_raw_fd();
        plan.cgroup_fds = cgroup_entries.iter().map(AsRawFd::as_raw_fd).collect();
        let joins = cgroup::open_v1_joins(&cgroups)?;
        plan.join_fds = joins.iter().map(AsRawFd::as_raw_fd).collect();
        plan.volumes = spec.volumes.iter().map(|m| volume_plan(&m.path)).collect();
        // The agent holds the writable layer for snapshots; a custom init need not.
        if spec.init_argv.is_none() {
            plan.upper_fd = upper.as_raw_fd();
            handle.upper_fd = Some(child::UPPER_FD);
        }
        plan.net = spec.network.as_ref().map(|n| child::ChildNet {
            addr: n.addr.octets(),
            gateway: n.gateway.octets(),
        });

        timer.mark("plan (fds, argv)");
        let flags = libc::CLONE_NEWUSER
            | libc::CLONE_NEWNS
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWUTS
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWNET;
        // Born in the sandbox's v2 cgroup where the kernel can (the v1 ones it joins itself).
        let unified = cgroups
            .unified
            .as_ref()
            .map(|u| fs::File::open(u).map_err(ioe(format!("opening {}", u.display()))))
            .transpose()?;
        // `child_mem` (declared after `plan`, so dropped before it) stays until the child has exec'd.
        let (pid, placed, child_mem) =
            child::spawn(&plan, flags, unified.as_ref().map(AsRawFd::as_raw_fd)).map_err(
                |source| IsolateError::Child {
                    stage: "clone".into(),
                    source,
                },
            )?;
        drop(unified);
        handle.init_pid = pid;
        handle.init_start_time = sys::process_start_time(pid).unwrap_or(0);
        drop((
            child_sock,
            err_w,
            ready_w,
            log,
            listener,
            cgroup_entries,
            joins,
        ));
        timer.mark("clone");

        let map = format!("0 {} {}\n", range.base, range.count);
        for f in ["uid_map", "gid_map"] {
            fs::write(format!("/proc/{pid}/{f}"), &map).map_err(ioe(format!("writing {f}")))?;
        }
        timer.mark("id maps");
        if let (Some(cg), false) = (&handle.cgroups, placed) {
            cgroup::add_to_unified(cg, pid)?;
        }
        timer.mark("cgroup v2 entry (none when born there)");
        let userns = fs::File::open(format!("/proc/{pid}/ns/user"))
            .map(OwnedFd::from)
            .map_err(ioe("opening the sandbox user namespace"))?;
        let overlay = rootfs::overlay(&layers, &userns, &upper)?;
        let mut volume_fds = Vec::with_capacity(volume_paths.len());
        for (m, host) in spec.volumes.iter().zip(&volume_paths) {
            volume_fds.push(rootfs::volume(host, &userns, m.read_only)?);
        }
        sys::send_fd(&parent_sock, overlay.as_raw_fd()).map_err(ioe("passing the rootfs"))?;
        for fd in &volume_fds {
            sys::send_fd(&parent_sock, fd.as_raw_fd()).map_err(ioe("passing a volume"))?;
        }
        drop((overlay, upper, userns, volume_fds));
        timer.mark("idmapped overlay, volumes");
        // From here the child mounts its root while this thread, on another core, makes the network
        // link (the child addresses `eth0` last, once told it exists) and writes `handle.json`.
        // A failure here is reported only after the child's own report: a child that failed a step of
        // its set-up (a bad volume path) is gone, and the link (into its namespace) or the message
        // then fail too, which is not what went wrong. Closing our end stops a child still waiting.
        let linked = spec.network.as_ref().map_or(Ok(()), |net| {
            net.create_link(pid)
                .map_err(ioe(format!(
                    "creating the network link {} into the sandbox",
                    net.host_if
                )))
                .and_then(|()| {
                    sys::send_go(&parent_sock).map_err(ioe("telling the sandbox its link exists"))
                })
        });
        drop(parent_sock);
        timer.mark("network link (while the child sets up)");
        Self::persist(handle)?;
        timer.mark("handle.json (while the child sets up)");

        // EOF on the error pipe = execve succeeded; data = a failure report.
        let mut report = Vec::new();
        let mut err_file = fs::File::from(err_r);
        let waiting = Instant::now();
        if !self.wait_while_progressing(&err_file, pid)? {
            return Err(self.not_ready(handle, "init setup hung", waiting));
        }
        err_file
            .read_to_end(&mut report)
            .map_err(ioe("reading the child's report"))?;
        // End of file: the child has exec'd or exited, and uses nothing of the daemon's any more.
        child_mem.released();
        if report.len() >= 8 {
            let (stage, source) = child::decode_failure(&plan, &report);
            return Err(IsolateError::Child { stage, source });
        }
        linked?;
        timer.mark("child set-up (mounts, pivot_root, seccomp, exec)");
        // The init has exec'd, so its cgroup namespace is rooted at the sandbox's v2 directory. The agent
        // starts no process before it is ready, so it enters its own cgroup now, while it starts up
        // (`enter_agent`); a custom init may run things before it signals, and enters after.
        let agent_init = spec.init_argv.is_none();
        if let (Some(cg), true) = (&handle.cgroups, agent_init) {
            cgroup::enter_agent(cg, pid)?;
        }
        timer.mark("agent cgroup (while it starts)");
        let ready = fs::File::from(ready_r);
        let waiting = Instant::now();
        if !self.wait_while_progressing(&ready, pid)? {
            return Err(self.not_ready(handle, "timeout", waiting));
        }
        let mut byte = [0u8; 1];
        if !matches!((&ready).read(&mut byte), Ok(1)) {
            return Err(self.not_ready(handle, "init closed the ready fd or exited", waiting));
        }
        timer.mark("agent start (to ready)");
        if let (Some(cg), false) = (&handle.cgroups, agent_init) {
            cgroup::enter_agent(cg, pid)?;
        }
        // Not written to `handle.json` here: [`Isolator::record_create_steps`], after the create's answer.
        handle.create_steps = timer.done;
        Ok(())
    }

    /// Waits until `f` is readable. The deadline detects a stuck init, not a slow one: on a loaded host
    /// (a storm of disk writes, every core busy) starting an init can take longer than `ready_timeout`
    /// although it never stops moving, and failing it then only makes the caller create again on the
    /// same host. So at each deadline an init that used CPU, read or wrote, or waits on the disk since
    /// the last one gets another `ready_timeout`, up to `ready_patience` in all; one that did nothing
    /// for a whole `ready_timeout` (waiting on something that will not come) fails at once.
    fn wait_while_progressing(&self, f: &fs::File, pid: i32) -> Result<bool, IsolateError> {
        let mut last = procfs::Progress::sample(pid);
        for _ in 0..self.cfg.ready_patience.max(1) {
            if sys::poll_readable(f, self.cfg.ready_timeout).map_err(ioe("poll"))? {
                return Ok(true);
            }
            let now = procfs::Progress::sample(pid);
            match (last, now) {
                (Some(before), Some(now)) if now.moved_since(&before) => last = Some(now),
                _ => return Ok(false),
            }
        }
        Ok(false)
    }

    fn not_ready(
        &self,
        handle: &SandboxHandle,
        reason: &'static str,
        waiting: Instant,
    ) -> IsolateError {
        let log = fs::read_to_string(&handle.log_file).unwrap_or_default();
        let tail: String = log
            .chars()
            .rev()
            .take(400)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        IsolateError::NotReady {
            fd: READY_FD,
            timeout: self.cfg.ready_timeout,
            waited: waiting.elapsed(),
            reason,
            init: procfs::describe(handle.init_pid),
            log: tail,
        }
    }

    fn init_command(
        spec: &SandboxSpec,
        cgroup_dir: Option<String>,
        cgroup_fds: usize,
    ) -> (CString, Vec<CString>, Vec<CString>) {
        let mut envp: Vec<CString> = [
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME=/root",
            "LANG=C.UTF-8",
        ]
        .iter()
        .map(|s| child::cstring(s))
        .collect();
        if let Some(argv) = &spec.init_argv {
            envp.extend(
                spec.env
                    .iter()
                    .map(|(k, v)| child::cstring(&format!("{k}={v}"))),
            );
            return (
                child::cstring(&argv[0]),
                argv.iter().map(|a| child::cstring(a)).collect(),
                envp,
            );
        }
        let mut argv: Vec<String> = vec![
            AGENT_PATH_IN_SANDBOX.into(),
            "agent".into(),
            "--listen".into(),
            format!("fd:{}", child::LISTEN_FD),
            "--log-dir".into(),
            format!("{RUN_DIR_IN_SANDBOX}/log"),
            // The agent's own log, inside the sandbox (capped, rotated): `GET /v1/sandboxes/{id}/logs`.
            "--log-file".into(),
            format!("{RUN_DIR_IN_SANDBOX}/agent.log"),
            "--default-user".into(),
            "user".into(),
            "--ready-fd".into(),
            READY_FD.to_string(),
            "--keep-fd".into(),
            child::UPPER_FD.to_string(),
        ];
        if let Some(dir) = cgroup_dir {
            // One cgroup per process in the delegated subtree, entered through the host-opened fds.
            argv.extend(["--cgroup".into(), dir]);
            for i in 0..cgroup_fds {
                argv.push("--cgroup-entry-fd".into());
                argv.push((child::CGROUP_FD + i as i32).to_string());
            }
        }
        for (k, v) in &spec.env {
            argv.push("--env".into());
            argv.push(format!("{k}={v}"));
        }
        (
            child::cstring(AGENT_PATH_IN_SANDBOX),
            argv.iter().map(|a| child::cstring(a)).collect(),
            envp,
        )
    }

    /// Makes template `name` from the sandbox's filesystem as it is now: a layer over the sandbox's
    /// own template holding what the sandbox wrote (see [`snapshot`]). With `freeze`, the sandbox is
    /// frozen for the second, short pass so that the layer is one instant's state; pass `false` when
    /// it is paused already.
    pub fn snapshot(
        &self,
        handle: &SandboxHandle,
        name: &str,
        meta: &LayerMeta,
        freeze: bool,
    ) -> Result<SnapshotReport, IsolateError> {
        let Some(fd) = handle.upper_fd else {
            return Err(IsolateError::InvalidSpec(format!(
                "sandbox {:?} was created by an earlier sandpit, which did not keep its writable layer                  reachable; only sandboxes created since can be snapshotted",
                handle.id
            )));
        };
        let ids = handle
            .ids
            .map(|r| (r.base, r.count))
            .ok_or_else(|| IsolateError::NotCreated(handle.id.clone()))?;
        let layer =
            snapshot::writable_layer(handle.init_pid, handle.init_start_time, fd).map_err(ioe(
                format!("reaching the writable layer of sandbox {:?}", handle.id),
            ))?;
        let src = PathBuf::from(format!("/proc/self/fd/{}/upper", layer.as_raw_fd()));
        let mut meta = meta.clone();
        meta.parent.clone_from(&handle.template);
        let (mut copied, mut settled, mut frozen) = Default::default();
        let freeze_err = |what: &str, e: IsolateError| TemplateError::Io {
            what: format!("{what} sandbox {:?}", handle.id),
            source: io::Error::other(e.to_string()),
        };
        let template = self.templates.build_layer(name, &meta, |root| {
            let mut sync = snapshot::Sync::new(ids);
            copied = sync.run(&src, root)?;
            // From the freeze request to the thaw's completion: how long the sandbox stood still.
            let t = std::time::Instant::now();
            if freeze {
                self.pause(handle).map_err(|e| freeze_err("freezing", e))?;
            }
            let last = sync.run(&src, root);
            if freeze {
                let thawed = self.resume(handle);
                frozen = t.elapsed();
                thawed.map_err(|e| freeze_err("thawing", e))?;
            }
            settled = last?;
            Ok(())
        })?;
        Ok(SnapshotReport {
            template,
            copied,
            settled,
            frozen,
        })
    }

    /// Writes template `name`, its layers merged, as a zstd-compressed tar stream to `out`.
    pub fn export_template(&self, name: &str, out: impl io::Write) -> Result<(), IsolateError> {
        Ok(self.templates.export(name, out)?)
    }

    /// A template's metadata.
    pub fn template(&self, name: &str) -> Option<TemplateInfo> {
        self.templates.get(name)
    }

    /// Freezes every process of the sandbox.
    pub fn pause(&self, handle: &SandboxHandle) -> Result<(), IsolateError> {
        let cg = handle.cgroups.as_ref().ok_or_else(|| not_running(handle))?;
        Ok(self.cgroups.freeze(cg)?)
    }

    /// Thaws a paused sandbox.
    pub fn resume(&self, handle: &SandboxHandle) -> Result<(), IsolateError> {
        let cg = handle.cgroups.as_ref().ok_or_else(|| not_running(handle))?;
        Ok(self.cgroups.thaw(cg)?)
    }

    /// What the sandbox uses now (`None` when it is not running): its cgroups, and its root
    /// filesystem's writable layer (an overlay reports its upper layer's size).
    pub fn usage(&self, handle: &SandboxHandle) -> Option<usage::Usage> {
        let cg = handle.cgroups.as_ref()?;
        if !self.is_alive(handle) {
            return None;
        }
        let mut u = usage::of_cgroups(cg);
        if let Some((used, size)) =
            usage::filesystem(Path::new(&format!("/proc/{}/root", handle.init_pid)))
        {
            u.disk_used = used;
            u.disk_limit = size;
        }
        Some(u)
    }

    /// Whether the sandbox init (this exact process, not a reused pid) is running.
    pub fn is_alive(&self, handle: &SandboxHandle) -> bool {
        handle.init_pid > 0
            && sys::process_start_time(handle.init_pid) == Some(handle.init_start_time)
            && sys::process_state(handle.init_pid).is_some_and(|s| s != 'Z')
    }

    /// Whether the sandbox's init (the agent) is stopped: job control or a tracer (`T`/`t`).
    pub fn is_stopped(&self, handle: &SandboxHandle) -> bool {
        handle.init_pid > 0
            && sys::process_start_time(handle.init_pid) == Some(handle.init_start_time)
            && sys::process_state(handle.init_pid).is_some_and(|s| matches!(s, 'T' | 't'))
    }

    /// A TCP socket (`AF_INET`, or `AF_INET6` when `v6`) made inside the sandbox's network namespace,
    /// non-blocking and not yet connected: connecting it to `127.0.0.1:PORT` reaches a server inside the
    /// sandbox, bound to its loopback or to every address, with no process of the sandbox in the way.
    ///
    /// A socket belongs to the namespace it was made in, wherever it is used afterwards, so only the
    /// making happens in there: on a short-lived thread of its own (`setns` moves one thread), which
    /// exits afterwards — no thread of the caller ever changes namespace, and a failure to return
    /// cannot leave one behind.
    pub fn socket_in_netns(&self, handle: &SandboxHandle, v6: bool) -> std::io::Result<OwnedFd> {
        let ns = fs::File::open(format!("/proc/{}/ns/net", handle.init_pid))?;
        // The pid checked after opening: the descriptor is the sandbox's, not a reused pid's.
        if !self.is_alive(handle) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the sandbox's init is gone",
            ));
        }
        std::thread::Builder::new()
            .name("netns-socket".into())
            .spawn(move || -> std::io::Result<OwnedFd> {
                // SAFETY: setns(2) on this thread only, with a namespace descriptor we own; the thread
                // exits when this closure returns.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let domain = if v6 { libc::AF_INET6 } else { libc::AF_INET };
                // SAFETY: socket(2) has no memory-safety preconditions; the result is checked.
                let fd = unsafe {
                    libc::socket(
                        domain,
                        libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                        0,
                    )
                };
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // SAFETY: `fd` was just returned by socket(2) and is owned by nothing else.
                Ok(unsafe { OwnedFd::from_raw_fd(fd) })
            })?
            .join()
            .map_err(|_| std::io::Error::other("the namespace thread panicked"))?
    }

    /// Kills every process, releases the rootfs (it lives only in the sandbox's mount namespace,
    /// so it goes away with the last process), removes the cgroups, the sandbox directory and the
    /// id-range reservation. Idempotent; works on half-created sandboxes and after a restart.
    pub fn destroy(&self, handle: &SandboxHandle) -> Result<(), IsolateError> {
        let ours = handle.init_pid > 0
            && sys::process_start_time(handle.init_pid) == Some(handle.init_start_time);
        if let Some(cg) = &handle.cgroups {
            if cg.dirs().iter().any(|d| d.exists()) {
                // A frozen cgroup must still die: kill works on frozen tasks in v2, and the v1
                // fallback thaws after signalling.
                self.cgroups.kill_all(cg)?;
            }
        }
        if ours {
            // SAFETY: kill(2) on the pid we verified by start time.
            unsafe { libc::kill(handle.init_pid, libc::SIGKILL) };
            reap(handle.init_pid);
        }
        if let Some(cg) = &handle.cgroups {
            if cg.dirs().iter().any(|d| d.exists()) {
                let deadline = Instant::now() + Duration::from_secs(5);
                while !self.cgroups.procs(cg).is_empty() && Instant::now() < deadline {
                    self.cgroups.kill_all(cg)?;
                    std::thread::sleep(Duration::from_millis(1));
                }
                self.cgroups.remove(cg)?;
            }
        }
        match fs::remove_dir_all(&handle.sandbox_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(ioe(format!("removing {}", handle.sandbox_dir.display()))(e)),
        }
        if let Some(r) = &handle.ids {
            // Only release the slot if it is still ours (ids are reused after release).
            if self.ids.owner(r.slot).is_none_or(|o| o == handle.id) {
                self.ids.release(r)?;
            }
        }
        Ok(())
    }
}

fn not_running(handle: &SandboxHandle) -> IsolateError {
    IsolateError::NotCreated(handle.id.clone())
}

/// Waits for the killed init to become a zombie and reaps it if it is our child (after a daemon
/// restart it is not, and the host init reaps it).
fn reap(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut status = 0;
        // SAFETY: waitpid on a specific pid with a valid status pointer.
        let rc = unsafe { libc::waitpid(pid, &raw mut status, libc::WNOHANG | libc::__WALL) };
        if rc == pid || (rc < 0 && sys::process_state(pid).is_none_or(|s| s == 'Z')) {
            return;
        }
        if Instant::now() > deadline {
            return;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn socketpair() -> Result<(OwnedFd, OwnedFd), IsolateError> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for two descriptors.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(ioe("socketpair")(io::Error::last_os_error()));
    }
    // SAFETY: socketpair succeeded; both descriptors are fresh and exclusively ours.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_copy_is_exec_only_and_made_again_only_when_the_source_changes() {
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("agent-src");
        fs::write(&src, b"first").unwrap();
        fs::set_permissions(&src, fs::Permissions::from_mode(0o755)).unwrap();
        let state = tmp.path().join("state");
        fs::create_dir(&state).unwrap();
        let copy = exec_only_agent(&src, &state).unwrap();
        let m = fs::metadata(&copy).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o711, "not exec-only");
        assert_eq!(fs::read(&copy).unwrap(), b"first");
        // Unchanged source: the same file (inode) is kept.
        let again = exec_only_agent(&src, &state).unwrap();
        assert_eq!(fs::metadata(&again).unwrap().ino(), m.ino());
        // A rebuilt agent replaces the copy (by rename: running sandboxes keep the old inode).
        fs::write(&src, b"second build").unwrap();
        let third = exec_only_agent(&src, &state).unwrap();
        assert_ne!(fs::metadata(&third).unwrap().ino(), m.ino());
        assert_eq!(fs::read(&third).unwrap(), b"second build");
        assert_eq!(
            fs::read_dir(&state).unwrap().count(),
            1,
            "a temp file was left"
        );
    }

    #[test]
    fn isolator_can_be_shared_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Isolator>();
        assert_send_sync::<SandboxHandle>();
    }

    #[test]
    fn ids_are_validated() {
        assert!(valid_id("sb-1.a_B"));
        assert!(!valid_id(""));
        assert!(!valid_id("../x"));
        assert!(!valid_id(".hidden"));
        assert!(!valid_id(&"x".repeat(65)));
    }

    #[test]
    fn agent_command_line_follows_the_contract() {
        let mut spec = SandboxSpec::new("a", "base");
        spec.env = vec![("K".into(), "V".into())];
        let (path, argv, _) =
            Isolator::init_command(&spec, Some("/sys/fs/cgroup/unified/work".into()), 2);
        assert_eq!(path.to_str().unwrap(), AGENT_PATH_IN_SANDBOX);
        let argv: Vec<&str> = argv.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            argv,
            [
                "/.sandpit/sandpit",
                "agent",
                "--listen",
                "fd:4",
                "--log-dir",
                "/run/sandpit/log",
                "--log-file",
                "/run/sandpit/agent.log",
                "--default-user",
                "user",
                "--ready-fd",
                "3",
                "--keep-fd",
                "9",
                "--cgroup",
                "/sys/fs/cgroup/unified/work",
                "--cgroup-entry-fd",
                "5",
                "--cgroup-entry-fd",
                "6",
                "--env",
                "K=V"
            ]
        );
    }
}
