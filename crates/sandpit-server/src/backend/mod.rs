//! The boundary between the daemon and an isolation layer.
//!
//! The engine decides *when* a sandbox is created, paused, resumed or destroyed; a [`SandboxBackend`] knows
//! *how*. The trait is synchronous on purpose: isolation work is a run of blocking syscalls (clone, mount,
//! cgroup writes, waiting for the agent to come up), so the engine calls it on the blocking thread pool and a
//! backend never needs an async runtime of its own. Everything the engine must remember to reach the sandbox
//! again after a daemon restart is in the serializable [`BackendHandle`], which the store persists.
//!
//! Templates (the root filesystems sandboxes start from) are a backend matter too, but not every backend has
//! them: one that does returns a [`TemplateStore`] from [`SandboxBackend::templates`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use sandpit_types::sandbox::TemplateSource;
use serde::{Deserialize, Serialize};

use crate::config::{BackendKind, Config};

pub mod isolate;
pub mod process;

pub use isolate::IsolateBackend;
pub use process::ProcessBackend;

/// What to create. The engine has already created `dir` (empty, owned by the daemon's user).
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxSpec {
    pub id: String,
    pub template: String,
    pub cpu: Option<f64>,
    pub memory_mb: Option<u64>,
    pub pids: Option<u64>,
    pub disk_mb: Option<u64>,
    /// Sandbox-wide environment, passed to the agent so that every process inherits it.
    pub env: BTreeMap<String, String>,
    /// `STATE_DIR/sandboxes/<id>`: the backend's to make and use for sockets, logs, layers, if it needs
    /// one (the isolate backend keeps its own); removed on delete. Not made by the engine: an unused
    /// directory per create is a file system entry made and removed for nothing.
    pub dir: PathBuf,
    /// The sandbox's network link, when the daemon runs with networking (only `isolate` uses it).
    pub network: Option<sandpit_net::Attachment>,
    /// Volumes to mount (the API checked that they exist and the tenant may use them).
    pub volumes: Vec<sandpit_types::volumes::VolumeMount>,
}

/// How to reach a created sandbox again, persisted in the store across daemon restarts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendHandle {
    /// The agent's HTTP unix socket, as seen from the host.
    pub agent_socket: PathBuf,
    /// The sandbox's init process (the agent) in the host's pid namespace.
    pub init_pid: u32,
    /// Whatever else the backend needs later (cgroup paths, mount points, a process start time to tell a
    /// reused pid apart). Opaque to the engine.
    #[serde(default)]
    pub data: serde_json::Value,
}

/// A backend failure, classified so that the API can answer with the right status.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The spec cannot be honoured (a limit this backend cannot apply, an unusable value).
    #[error("{0}")]
    InvalidSpec(String),
    /// Something the spec names does not exist (an unknown template).
    #[error("{0}")]
    NotFound(String),
    /// What is to be created exists already (a template name in use).
    #[error("{0}")]
    Conflict(String),
    /// A host-wide limit is reached (every uid range in use, say); retrying later may work.
    #[error("{0}")]
    Exhausted(String),
    /// The backend cannot work on this host or is not built in.
    #[error("{0}")]
    Unavailable(String),
    #[error("{context}: {cause}")]
    Io {
        context: String,
        cause: std::io::Error,
    },
    /// The host's disk is full (`ENOSPC`/`EDQUOT` somewhere in the cause); retrying after space is freed
    /// works.
    #[error("{0}")]
    NoSpace(String),
    /// The sandbox could not be started or operated on; the message says why.
    #[error("{0}")]
    Failed(String),
}

/// Whether `e`, or any error it wraps, is the disk saying it is full. Template copies and state files fail
/// this way when the state directory's filesystem fills up; the API answers 507 rather than a 500.
pub fn is_no_space(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| matches!(io.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)))
        {
            return true;
        }
        cur = err.source();
    }
    false
}

impl BackendError {
    pub fn io(context: impl Into<String>, cause: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            cause,
        }
    }
}

/// An isolation layer. Implementations must be safe to call from several threads at once for *different*
/// sandboxes; the engine never runs two operations on the same sandbox concurrently.
pub trait SandboxBackend: Send + Sync + std::fmt::Debug + 'static {
    /// A short name for logs and `/health`.
    fn name(&self) -> &'static str;

    /// Creates and starts the sandbox and returns once its agent accepts connections on the socket.
    fn create(&self, spec: &SandboxSpec) -> Result<BackendHandle, BackendError>;
    /// Work a create leaves for after its answer (diagnostics), called under the sandbox's lock; the
    /// sandbox may have been destroyed since. Nothing by default.
    fn created(&self, _handle: &BackendHandle) {}

    /// Freezes every process of the sandbox. The agent socket stays, but nothing answers until resumed.
    fn pause(&self, handle: &BackendHandle) -> Result<(), BackendError>;

    /// Thaws what [`pause`](Self::pause) froze.
    fn resume(&self, handle: &BackendHandle) -> Result<(), BackendError>;

    /// Kills every process of the sandbox and releases what the backend holds for it. Must succeed on a
    /// sandbox that is already dead (after a host reboot, say); the engine removes `dir` afterwards.
    fn destroy(&self, handle: &BackendHandle) -> Result<(), BackendError>;

    /// Whether the sandbox's agent is still the process recorded in the handle (not a reused pid).
    fn is_alive(&self, handle: &BackendHandle) -> bool;

    /// Destroys whatever the backend holds for sandboxes whose id `known` rejects: leftovers of a daemon
    /// that died in the middle of a create, before the store learnt the handle. Called once at start-up.
    /// Whether the sandbox's agent process is stopped (job control or a tracer), so that it cannot answer
    /// until something continues it. `false` when unknown or gone.
    fn is_stopped(&self, handle: &BackendHandle) -> bool;

    /// A TCP socket, not yet connected, inside the sandbox's own network namespace (`AF_INET6` when
    /// `v6`), so that the daemon reaches a server in the sandbox (also one bound to its loopback)
    /// directly. `None` when this backend has no such namespace: the agent's port tunnel is the way.
    fn port_socket(
        &self,
        _handle: &BackendHandle,
        _v6: bool,
    ) -> Option<Result<std::os::fd::OwnedFd, BackendError>> {
        None
    }

    /// What a running sandbox uses now (`crate::usage` samples it); `None` when it cannot be read.
    fn usage(&self, handle: &BackendHandle) -> Option<sandpit_isolate::usage::Usage> {
        let _ = handle;
        None
    }

    fn destroy_unknown(&self, known: &dyn Fn(&str) -> bool) {
        let _ = known;
    }

    /// The backend's templates, if it has any.
    fn templates(&self) -> Option<&dyn TemplateStore> {
        None
    }

    /// The backend's volumes, if it has any.
    fn volumes(&self) -> Option<&dyn VolumeStore> {
        None
    }

    /// Makes template `spec.name` from the sandbox's filesystem as it is now (its template plus what it
    /// wrote), freezing the sandbox briefly when `freeze` (it is not paused already). Backends without
    /// templates cannot.
    fn snapshot(
        &self,
        handle: &BackendHandle,
        spec: &SnapshotSpec,
        freeze: bool,
    ) -> Result<SnapshotOutcome, BackendError> {
        let _ = (handle, spec, freeze);
        // 409 like every template call on such a backend: the request is fine, the daemon cannot.
        Err(BackendError::Conflict(format!(
            "snapshots need the `isolate` backend; this daemon runs the `{}` backend, whose sandboxes \
             run on the host's own filesystem",
            self.name()
        )))
    }
}

/// What [`SandboxBackend::snapshot`] makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotSpec {
    pub name: String,
    /// The sandbox's id, for the template's `source`.
    pub sandbox: String,
    /// The tenant the template belongs to.
    pub tenant: Option<String>,
    /// Remove the template once no sandbox uses it (forks).
    pub auto_remove: bool,
}

/// What a snapshot made and cost.
#[derive(Debug, Clone)]
pub struct SnapshotOutcome {
    pub template: TemplateRecord,
    pub frozen: std::time::Duration,
    pub bytes: u64,
    pub entries: u64,
}

/// A template as a backend reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TemplateRecord {
    pub name: String,
    pub source: String,
    /// Milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// The template a snapshot is a layer over.
    pub parent: Option<String>,
    /// The tenant a snapshot belongs to; `None`: every tenant's.
    pub tenant: Option<String>,
    /// Made by a fork: removed once no sandbox uses it.
    pub auto_remove: bool,
}

/// Template management of a backend that has templates. Synchronous like [`SandboxBackend`]: building a
/// template copies or downloads a root filesystem, which takes from seconds to many minutes.
pub trait TemplateStore: Send + Sync {
    /// Every built template, by name.
    fn list(&self) -> Result<Vec<TemplateRecord>, BackendError>;

    /// Builds template `name` from `source`, passing progress lines to `progress`. A name in use is a
    /// [`BackendError::Conflict`].
    fn build(
        &self,
        name: &str,
        source: &TemplateSource,
        progress: &mut dyn FnMut(&str),
    ) -> Result<TemplateRecord, BackendError>;

    /// Deletes a template. The caller has checked that no sandbox uses it; a template another one is a
    /// layer over is a [`BackendError::Conflict`].
    fn remove(&self, name: &str) -> Result<(), BackendError>;

    /// Imports the archive at `path` (uploaded: a template export, or any root filesystem tar, plain,
    /// gzip or zstd) as template `name`.
    fn import_archive(
        &self,
        name: &str,
        path: &std::path::Path,
    ) -> Result<TemplateRecord, BackendError> {
        self.build(
            name,
            &TemplateSource::Tar(path.display().to_string()),
            &mut |_| {},
        )
    }

    /// Writes template `name`, its layers merged, as one zstd-compressed tar stream that
    /// [`TemplateStore::build`] with [`TemplateSource::Tar`] reads back on any host.
    fn export(&self, name: &str, out: &mut dyn std::io::Write) -> Result<(), BackendError> {
        let _ = (name, out);
        Err(BackendError::Unavailable(
            "this backend cannot export templates".into(),
        ))
    }

    /// The template this backend makes by itself (from the host) for creates that name none, if any.
    fn base(&self) -> Option<&'static str> {
        None
    }

    /// Makes [`TemplateStore::base`] (a no-op when it exists), passing progress lines to `progress`. A
    /// create that needs it meanwhile waits for it.
    fn build_base(&self, progress: &mut dyn FnMut(&str)) -> Result<TemplateRecord, BackendError> {
        let _ = progress;
        Err(BackendError::Unavailable(
            "this backend makes no base template".into(),
        ))
    }
}

/// A volume as a backend reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeRecord {
    pub name: String,
    pub size_mb: u64,
    pub tenant: String,
    /// Milliseconds since the Unix epoch.
    pub created_at_ms: i64,
}

/// Volume management of a backend that has volumes. Synchronous like [`SandboxBackend`] (mkfs, mount).
pub trait VolumeStore: Send + Sync {
    /// Every volume, by name.
    fn list(&self) -> Vec<VolumeRecord>;

    /// Makes volume `name` of `size_mb` MiB for `tenant`; a name in use is a [`BackendError::Conflict`].
    fn create(&self, name: &str, size_mb: u64, tenant: &str) -> Result<VolumeRecord, BackendError>;

    /// Bytes in use on volume `name`.
    fn used_bytes(&self, name: &str) -> Result<u64, BackendError>;

    /// Removes volume `name` and its data; the caller has made sure no sandbox mounts it.
    fn remove(&self, name: &str) -> Result<(), BackendError>;
}

/// The backend the configuration names. Never falls back to another one: the choice of isolation is the
/// operator's, so an unavailable backend is an error that says what to do.
pub fn from_config(config: &Config) -> Result<Arc<dyn SandboxBackend>, BackendError> {
    match config.backend {
        BackendKind::Process => {
            let agent = config.resolved_agent_binary().map_err(|e| {
                BackendError::io("cannot locate the sandpit binary for the agent", e)
            })?;
            Ok(Arc::new(ProcessBackend::new(
                agent,
                std::time::Duration::from_secs(config.agent_start_timeout_secs),
            )))
        }
        BackendKind::Isolate => Ok(Arc::new(IsolateBackend::new(config)?)),
    }
}
