//! Volumes for the API (`/v1/volumes`): who sees which, what a create or delete may do, and the check
//! that a sandbox's `volumes` name volumes its tenant may mount. The filesystems themselves are the
//! backend's ([`crate::backend::VolumeStore`]); which sandboxes mount a volume is the engine's record.
//!
//! A volume belongs to the tenant of the key that made it: only that tenant's keys (and admin keys) see,
//! mount or delete it; to everyone else it does not exist (404).

use std::collections::HashMap;
use std::sync::Arc;

use sandpit_types::volumes::{CreateVolumeRequest, VolumeInfo, VolumeMount};

use crate::backend::{BackendError, SandboxBackend, VolumeRecord};
use crate::time::rfc3339;

#[derive(Debug, thiserror::Error)]
pub enum VolumeApiError {
    /// The backend has no volumes.
    #[error(
        "volumes need the `isolate` backend; this daemon runs the `{0}` backend, whose sandboxes run on \
         the host's own filesystem"
    )]
    Unsupported(&'static str),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("internal error: {0}")]
    Internal(String),
}

/// Volume calls.
#[derive(Debug)]
pub struct Volumes {
    backend: Arc<dyn SandboxBackend>,
}

fn visible(v: &VolumeRecord, viewer: Option<&str>) -> bool {
    viewer.is_none_or(|t| v.tenant == t)
}

fn not_found(name: &str) -> VolumeApiError {
    VolumeApiError::NotFound(format!("volume {name:?} not found"))
}

impl Volumes {
    pub fn new(backend: Arc<dyn SandboxBackend>) -> Self {
        Self { backend }
    }

    /// Runs `f` on the backend's volume store on the blocking pool (mkfs, mount, statvfs block).
    async fn on_store<T, F>(&self, f: F) -> Result<T, VolumeApiError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn crate::backend::VolumeStore) -> Result<T, BackendError> + Send + 'static,
    {
        if self.backend.volumes().is_none() {
            return Err(VolumeApiError::Unsupported(self.backend.name()));
        }
        let backend = self.backend.clone();
        tokio::task::spawn_blocking(move || match backend.volumes() {
            Some(store) => f(store).map_err(VolumeApiError::Backend),
            None => Err(VolumeApiError::Unsupported(backend.name())),
        })
        .await
        .map_err(|e| VolumeApiError::Internal(format!("volume task failed: {e}")))?
    }

    /// The API's view of volume `r`, with its usage and the sandboxes that mount it.
    async fn info(
        &self,
        r: VolumeRecord,
        users: &HashMap<String, Vec<String>>,
    ) -> Result<VolumeInfo, VolumeApiError> {
        let name = r.name.clone();
        let used = self.on_store(move |s| s.used_bytes(&name)).await?;
        Ok(VolumeInfo {
            mounted_by: users.get(&r.name).cloned().unwrap_or_default(),
            used_mb: used.div_ceil(1 << 20),
            name: r.name,
            size_mb: r.size_mb,
            tenant: r.tenant,
            created_at: rfc3339(r.created_at_ms),
        })
    }

    /// The volumes a key of tenant `viewer` (`None`: admin) sees.
    pub async fn list(
        &self,
        viewer: Option<&str>,
        users: &HashMap<String, Vec<String>>,
    ) -> Result<Vec<VolumeInfo>, VolumeApiError> {
        let records = self.on_store(|s| Ok(s.list())).await?;
        let mut out = Vec::new();
        for r in records.into_iter().filter(|r| visible(r, viewer)) {
            out.push(self.info(r, users).await?);
        }
        Ok(out)
    }

    async fn record(
        &self,
        name: &str,
        viewer: Option<&str>,
    ) -> Result<VolumeRecord, VolumeApiError> {
        self.on_store(|s| Ok(s.list()))
            .await?
            .into_iter()
            .find(|r| r.name == name && visible(r, viewer))
            .ok_or_else(|| not_found(name))
    }

    pub async fn get(
        &self,
        name: &str,
        viewer: Option<&str>,
        users: &HashMap<String, Vec<String>>,
    ) -> Result<VolumeInfo, VolumeApiError> {
        let r = self.record(name, viewer).await?;
        self.info(r, users).await
    }

    /// Makes a volume for `tenant`.
    pub async fn create(
        &self,
        req: CreateVolumeRequest,
        tenant: &str,
    ) -> Result<VolumeInfo, VolumeApiError> {
        req.validate().map_err(VolumeApiError::InvalidArgument)?;
        let tenant = tenant.to_owned();
        let r = self
            .on_store(move |s| s.create(&req.name, req.size_mb, &tenant))
            .await?;
        tracing::info!(volume = %r.name, size_mb = r.size_mb, tenant = %r.tenant, "volume created");
        self.info(r, &HashMap::new()).await
    }

    /// Deletes volume `name` and its data, unless a sandbox mounts it (`users`).
    pub async fn delete(
        &self,
        name: &str,
        viewer: Option<&str>,
        users: &HashMap<String, Vec<String>>,
    ) -> Result<(), VolumeApiError> {
        self.record(name, viewer).await?;
        if let Some(ids) = users.get(name).filter(|ids| !ids.is_empty()) {
            return Err(VolumeApiError::Conflict(format!(
                "volume {name:?} is mounted by sandbox(es) {}; delete them first",
                ids.join(", ")
            )));
        }
        let owned = name.to_owned();
        self.on_store(move |s| s.remove(&owned)).await?;
        tracing::info!(volume = %name, "volume deleted");
        Ok(())
    }

    /// A create that mounts `mounts`, by a key of tenant `viewer`: every volume must exist and be the
    /// tenant's (404 otherwise, as if it did not exist).
    pub async fn check_usable(
        &self,
        mounts: &[VolumeMount],
        viewer: Option<&str>,
    ) -> Result<(), VolumeApiError> {
        if mounts.is_empty() {
            return Ok(());
        }
        let records = self.on_store(|s| Ok(s.list())).await?;
        for m in mounts {
            if !records
                .iter()
                .any(|r| r.name == m.name && visible(r, viewer))
            {
                return Err(not_found(&m.name));
            }
        }
        Ok(())
    }
}
