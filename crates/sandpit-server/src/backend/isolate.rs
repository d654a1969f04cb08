//! The `isolate` backend, the default: every sandbox is a set of Linux namespaces with its own uid range,
//! cgroups, seccomp filter and an overlay root filesystem, made by `sandpit-isolate`'s [`Isolator`].
//!
//! This module only translates. The daemon's [`SandboxSpec`] becomes the isolator's spec (the sandbox id
//! doubles as its hostname), the isolator's serializable handle is kept whole in [`BackendHandle::data`] so
//! that a restarted daemon can pause, resume and destroy what an earlier one created, and the isolator's
//! errors are sorted into the [`BackendError`] classes the API answers with. The isolator keeps its own
//! state (templates, uid-range reservations, per-sandbox rootfs and run directories) under
//! `STATE_DIR/isolate`, apart from the engine's `STATE_DIR/sandboxes`.
//!
//! The sandbox's init is the agent itself (`sandpit agent … --default-user user`, arguments chosen by the
//! isolator), bind-mounted read-only from the daemon's own binary, so no extra CLI entry point is needed.

use std::sync::Arc;
use std::time::Duration;

use sandpit_isolate::volume::{VolumeError, VolumeMeta};
use sandpit_isolate::{
    ImportSource, IsolateConfig, IsolateError, Isolator, LayerMeta, RangeError, SandboxHandle,
    TemplateError, TemplateInfo,
};
use sandpit_types::sandbox::TemplateSource;

use super::{
    BackendError, BackendHandle, SandboxBackend, SandboxSpec, SnapshotOutcome, SnapshotSpec,
    TemplateRecord, TemplateStore, VolumeRecord, VolumeStore,
};
use crate::config::Config;

/// The suite a `{"debian": {}}` template is built from when none is named.
pub const DEFAULT_DEBIAN_SUITE: &str = "bookworm";

/// Sandboxes made by [`Isolator`].
#[derive(Debug, Clone)]
pub struct IsolateBackend {
    iso: Arc<Isolator>,
}

impl IsolateBackend {
    /// Checks the host and prepares `STATE_DIR/isolate`. A host that cannot run sandboxes gets an
    /// [`BackendError::Unavailable`] naming what is missing, and where the `process` backend is.
    pub fn new(config: &Config) -> Result<Self, BackendError> {
        let agent = config
            .resolved_agent_binary()
            .map_err(|e| BackendError::io("cannot locate the sandpit binary for the agent", e))?;
        match sandpit_isolate::needs_interpreter(&agent) {
            Ok(false) => {
                tracing::info!(agent = %agent.display(), "agent binary (static: runs in any template)");
            }
            Ok(true) => tracing::warn!(
                agent = %agent.display(),
                "the agent binary is linked dynamically: only templates holding the glibc it needs can \
                 start sandboxes; build the static agent (scripts/build-agent.sh puts it beside the sandpit \
                 binary as {})",
                crate::config::STATIC_AGENT_NAME
            ),
            Err(e) => {
                tracing::warn!(agent = %agent.display(), error = %e, "cannot tell how the agent binary is linked");
            }
        }
        let mut cfg = IsolateConfig::new(config.state_dir.join("isolate"), agent);
        cfg.ready_timeout = Duration::from_secs(config.agent_start_timeout_secs);
        let iso = Isolator::new(cfg).map_err(|e| {
            BackendError::Unavailable(format!(
                "the `isolate` backend (Linux namespaces and cgroups) cannot run here: {e}. To run sandboxes \
                 WITHOUT ANY ISOLATION on a trusted machine instead, start with `--backend process`"
            ))
        })?;
        if let Some(why) = iso.agent_copy_problem() {
            tracing::warn!(
                error = %why,
                "sandboxes run the agent binary itself, not an exec-only copy: root in a sandbox can write \
                 the agent's /proc/1/oom_score_adj (the agent puts it back within 250 ms)"
            );
        }
        if config.cgroup_favordynmods {
            match iso.favor_dynamic_cgroups() {
                Ok(true) => tracing::warn!(
                    "remounted the host's cgroup2 hierarchy with favordynmods (host-wide, until reboot; \
                     cgroup_favordynmods = false leaves it alone): moving processes between cgroups no \
                     longer waits for an RCU grace period"
                ),
                Ok(false) => {}
                Err(e) => tracing::warn!(
                    error = %e,
                    "cannot remount cgroup2 with favordynmods; every create and first command pays an RCU \
                     grace period per cgroup move"
                ),
            }
        }
        Ok(Self { iso: Arc::new(iso) })
    }

    /// The isolator, for embedders and tests.
    pub fn isolator(&self) -> &Isolator {
        &self.iso
    }

    fn handle(h: &BackendHandle) -> Result<SandboxHandle, BackendError> {
        serde_json::from_value(h.data.clone()).map_err(|e| {
            BackendError::Failed(format!(
                "the stored handle is not an `isolate` sandbox handle ({e}); was the sandbox created by \
                 another backend?"
            ))
        })
    }
}

impl SandboxBackend for IsolateBackend {
    fn name(&self) -> &'static str {
        "isolate"
    }

    fn create(&self, spec: &SandboxSpec) -> Result<BackendHandle, BackendError> {
        let mut s = sandpit_isolate::SandboxSpec::new(&spec.id, &spec.template);
        s.cpu = spec.cpu;
        s.memory_mb = spec.memory_mb;
        s.pids = spec.pids;
        s.disk_mb = spec.disk_mb;
        s.hostname = Some(spec.id.clone());
        s.network.clone_from(&spec.network);
        s.volumes.clone_from(&spec.volumes);
        s.env = spec
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let handle = self.iso.create(&s).map_err(classify)?;
        let data = serde_json::to_value(&handle)
            .map_err(|e| BackendError::Failed(format!("cannot record the sandbox handle: {e}")));
        let data = match data {
            Ok(d) => d,
            Err(e) => {
                // Without a stored handle nobody could ever destroy it: do it now.
                let _ = self.iso.destroy(&handle);
                return Err(e);
            }
        };
        Ok(BackendHandle {
            agent_socket: handle.agent_socket.clone(),
            init_pid: u32::try_from(handle.init_pid).unwrap_or(0),
            data,
        })
    }

    fn created(&self, handle: &BackendHandle) {
        // The step times, for `docs/benchmarks.md`; a sandbox deleted meanwhile has no file to write.
        if let Ok(h) = Self::handle(handle) {
            if let Err(e) = self.iso.record_create_steps(&h) {
                tracing::debug!(sandbox = %h.id, error = %e, "create steps not recorded");
            }
        }
    }

    fn pause(&self, handle: &BackendHandle) -> Result<(), BackendError> {
        self.iso.pause(&Self::handle(handle)?).map_err(classify)
    }

    fn resume(&self, handle: &BackendHandle) -> Result<(), BackendError> {
        self.iso.resume(&Self::handle(handle)?).map_err(classify)
    }

    fn destroy(&self, handle: &BackendHandle) -> Result<(), BackendError> {
        match Self::handle(handle) {
            Ok(h) => self.iso.destroy(&h).map_err(classify),
            // A record from another backend (the operator switched backends): nothing of ours to release,
            // and refusing would make the record undeletable.
            Err(e) => {
                tracing::warn!(error = %e, "not destroying a sandbox this backend did not create");
                Ok(())
            }
        }
    }

    fn is_alive(&self, handle: &BackendHandle) -> bool {
        Self::handle(handle).is_ok_and(|h| self.iso.is_alive(&h))
    }

    fn usage(&self, handle: &BackendHandle) -> Option<sandpit_isolate::usage::Usage> {
        self.iso.usage(&Self::handle(handle).ok()?)
    }

    fn is_stopped(&self, handle: &BackendHandle) -> bool {
        Self::handle(handle).is_ok_and(|h| self.iso.is_stopped(&h))
    }

    fn port_socket(
        &self,
        handle: &BackendHandle,
        v6: bool,
    ) -> Option<Result<std::os::fd::OwnedFd, BackendError>> {
        Some(Self::handle(handle).and_then(|h| {
            self.iso
                .socket_in_netns(&h, v6)
                .map_err(|e| BackendError::io("making a socket in the sandbox's network", e))
        }))
    }

    fn destroy_unknown(&self, known: &dyn Fn(&str) -> bool) {
        for h in self.iso.sandboxes() {
            if known(&h.id) {
                continue;
            }
            tracing::warn!(sandbox = %h.id, "destroying a sandbox the store does not know (interrupted create)");
            if let Err(e) = self.iso.destroy(&h) {
                tracing::error!(sandbox = %h.id, error = %e, "cannot destroy a leftover sandbox");
            }
        }
        // Runs at start, before any create: a range without a sandbox directory is a leftover.
        let released = self.iso.release_orphan_ranges();
        if released > 0 {
            tracing::warn!(
                released,
                "released id ranges of sandboxes that no longer exist"
            );
        }
    }

    fn templates(&self) -> Option<&dyn TemplateStore> {
        Some(self)
    }

    fn volumes(&self) -> Option<&dyn VolumeStore> {
        Some(self)
    }

    fn snapshot(
        &self,
        handle: &BackendHandle,
        spec: &SnapshotSpec,
        freeze: bool,
    ) -> Result<SnapshotOutcome, BackendError> {
        let h = Self::handle(handle)?;
        let meta = LayerMeta {
            source: if spec.auto_remove {
                format!("fork of sandbox {}", spec.sandbox)
            } else {
                format!("snapshot of sandbox {}", spec.sandbox)
            },
            parent: h.template.clone(),
            owner: spec.tenant.clone(),
            auto_remove: spec.auto_remove,
        };
        let r = self
            .iso
            .snapshot(&h, &spec.name, &meta, freeze)
            .map_err(classify)?;
        Ok(SnapshotOutcome {
            template: record(r.template),
            frozen: r.frozen,
            bytes: r.copied.bytes + r.settled.bytes,
            entries: r.copied.entries,
        })
    }
}

impl TemplateStore for IsolateBackend {
    fn list(&self) -> Result<Vec<TemplateRecord>, BackendError> {
        Ok(self.iso.templates().into_iter().map(record).collect())
    }

    fn base(&self) -> Option<&'static str> {
        Some(sandpit_isolate::BASE_TEMPLATE)
    }

    fn build_base(&self, progress: &mut dyn FnMut(&str)) -> Result<TemplateRecord, BackendError> {
        progress(
            "linking the host's /usr, /etc and friends into the `base` template (hard links, once)",
        );
        let started = std::time::Instant::now();
        let info = self
            .iso
            .ensure_template(sandpit_isolate::BASE_TEMPLATE)
            .map_err(classify)?;
        progress(&format!("done in {:.1} s", started.elapsed().as_secs_f64()));
        Ok(record(info))
    }

    fn build(
        &self,
        name: &str,
        source: &TemplateSource,
        progress: &mut dyn FnMut(&str),
    ) -> Result<TemplateRecord, BackendError> {
        let import = |src: ImportSource, what: &str, progress: &mut dyn FnMut(&str)| {
            progress(&format!("importing {what}"));
            self.iso.import_template(name, &src)
        };
        let info = match source {
            TemplateSource::Dir(p) => import(
                ImportSource::Directory(p.into()),
                &format!("directory {p}"),
                progress,
            ),
            TemplateSource::Tar(p) => import(
                ImportSource::Tarball(p.into()),
                &format!("tarball {p}"),
                progress,
            ),
            TemplateSource::Oci(p) => import(
                ImportSource::OciImage(p.into()),
                &format!("OCI image {p}"),
                progress,
            ),
            TemplateSource::Debian(d) => {
                let suite = d.suite.as_deref().unwrap_or(DEFAULT_DEBIAN_SUITE);
                progress(&format!("running debootstrap --variant=minbase {suite}"));
                self.iso
                    .build_debian_template(name, suite, d.mirror.as_deref(), progress)
            }
        }
        .map_err(classify)?;
        progress("template ready");
        Ok(record(info))
    }

    fn remove(&self, name: &str) -> Result<(), BackendError> {
        self.iso.remove_template(name).map_err(classify)
    }

    fn import_archive(
        &self,
        name: &str,
        path: &std::path::Path,
    ) -> Result<TemplateRecord, BackendError> {
        self.iso
            .import_template(name, &ImportSource::Upload(path.to_owned()))
            .map(record)
            .map_err(classify)
    }

    fn export(&self, name: &str, out: &mut dyn std::io::Write) -> Result<(), BackendError> {
        self.iso.export_template(name, out).map_err(classify)
    }
}

impl VolumeStore for IsolateBackend {
    fn list(&self) -> Vec<VolumeRecord> {
        self.iso
            .volumes()
            .list()
            .into_iter()
            .map(volume_record)
            .collect()
    }

    fn create(&self, name: &str, size_mb: u64, tenant: &str) -> Result<VolumeRecord, BackendError> {
        self.iso
            .volumes()
            .create(name, size_mb, tenant)
            .map(volume_record)
            .map_err(|e| classify(e.into()))
    }

    fn used_bytes(&self, name: &str) -> Result<u64, BackendError> {
        self.iso
            .volumes()
            .used_bytes(name)
            .map_err(|e| classify(e.into()))
    }

    fn remove(&self, name: &str) -> Result<(), BackendError> {
        self.iso
            .volumes()
            .remove(name)
            .map_err(|e| classify(e.into()))
    }
}

fn volume_record(v: VolumeMeta) -> VolumeRecord {
    VolumeRecord {
        name: v.name,
        size_mb: v.size_mb,
        tenant: v.owner,
        created_at_ms: i64::try_from(v.created)
            .unwrap_or(i64::MAX / 1000)
            .saturating_mul(1000),
    }
}

fn record(t: TemplateInfo) -> TemplateRecord {
    TemplateRecord {
        name: t.name,
        source: t.source,
        created_at_ms: i64::try_from(t.created)
            .unwrap_or(i64::MAX / 1000)
            .saturating_mul(1000),
        parent: t.parent,
        tenant: t.owner,
        auto_remove: t.auto_remove,
    }
}

/// Sorts an isolator error into the class the API answers with: the caller's mistake (400/404/409), the
/// host's limits (429/503), or a failure (500) whose message says what broke.
fn classify(e: IsolateError) -> BackendError {
    if super::is_no_space(&e) {
        return BackendError::NoSpace(e.to_string());
    }
    match e {
        IsolateError::InvalidSpec(m) => BackendError::InvalidSpec(m),
        IsolateError::Exists(_) | IsolateError::Volume(VolumeError::Exists(_)) => {
            BackendError::Conflict(e.to_string())
        }
        IsolateError::Template(t) => match t {
            TemplateError::InvalidName(_) => BackendError::InvalidSpec(t.to_string()),
            TemplateError::NotFound(_) => BackendError::NotFound(t.to_string()),
            TemplateError::Exists(_) | TemplateError::HasChildren { .. } => {
                BackendError::Conflict(t.to_string())
            }
            TemplateError::NoDebootstrap => BackendError::Unavailable(t.to_string()),
            other => BackendError::Failed(other.to_string()),
        },
        IsolateError::Range(r @ RangeError::Exhausted(..)) => {
            BackendError::Exhausted(r.to_string())
        }
        IsolateError::Host(h) => BackendError::Unavailable(h.to_string()),
        IsolateError::Volume(VolumeError::NotFound(_)) => BackendError::NotFound(e.to_string()),
        // A mount point the rootfs cannot have (a file there, say): the request's problem.
        IsolateError::Child { ref stage, .. } if stage.starts_with("mounting a volume") => {
            BackendError::InvalidSpec(e.to_string())
        }
        // The init was alive but too slow (a host at full load): nothing is wrong with the request or
        // the sandbox, and nothing was left behind. A 503 to retry, never a 500.
        IsolateError::NotReady {
            reason: "timeout" | "init setup hung",
            ..
        } => BackendError::Unavailable(format!(
            "{e}; the host is too busy to start a sandbox in time: retry (agent_start_timeout_secs \
             sets the limit)"
        )),
        other => BackendError::Failed(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_anywhere_in_the_cause_is_no_space() {
        let full = IsolateError::Io {
            what: "writing handle.json".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOSPC),
        };
        assert!(matches!(classify(full), BackendError::NoSpace(m) if m.contains("handle.json")));
        let other = IsolateError::Io {
            what: "writing handle.json".into(),
            source: std::io::Error::from_raw_os_error(libc::EIO),
        };
        assert!(matches!(classify(other), BackendError::Failed(_)));
    }

    #[test]
    fn an_init_too_slow_to_get_ready_is_a_503_to_retry_but_one_that_exited_is_a_failure() {
        let slow = |reason| IsolateError::NotReady {
            fd: 3,
            timeout: Duration::from_secs(15),
            waited: Duration::from_secs(15),
            reason,
            init: String::new(),
            log: String::new(),
        };
        assert!(
            matches!(classify(slow("timeout")), BackendError::Unavailable(m) if m.contains("retry"))
        );
        assert!(matches!(
            classify(slow("init setup hung")),
            BackendError::Unavailable(_)
        ));
        assert!(matches!(
            classify(slow("init closed the ready fd or exited")),
            BackendError::Failed(_)
        ));
    }
}
