//! Template management for the API: listing, deleting, and the builds started by `POST /v1/templates`.
//!
//! A build copies, unpacks or downloads a whole root filesystem, which takes from seconds to many minutes,
//! far longer than an HTTP client should hold a request open. So a build runs on the blocking pool and the
//! request is answered `202` at once; the build's state, its last progress lines and its outcome are kept
//! here, in memory, for `GET /v1/templates/{name}/build` to poll. Builds are not resumed after a daemon
//! restart (the backend discards a half-built template), so forgetting them then is right.
//!
//! Templates belong to the backend ([`crate::backend::TemplateStore`]); a backend without them (`process`)
//! makes every call here a `Conflict` that says which backend is needed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use sandpit_types::sandbox::{
    CreateTemplateRequest, TemplateBuild, TemplateBuildState, TemplateInfo, TemplateSource,
};

use crate::backend::{BackendError, SandboxBackend, TemplateRecord};
use crate::time::{now_ms, rfc3339};

/// How many progress lines a build keeps (the oldest go first).
const LOG_LINES: usize = 50;
/// How many finished builds are remembered for polling.
const FINISHED_KEPT: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum TemplateApiError {
    /// The backend has no templates.
    #[error(
        "templates need the `isolate` backend; this daemon runs the `{0}` backend, whose sandboxes run on \
         the host's own filesystem"
    )]
    Unsupported(&'static str),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("internal error: {0}")]
    Internal(String),
}

#[derive(Debug)]
struct Build {
    status: TemplateBuild,
    finished_ms: Option<i64>,
}

/// Template calls and the builds in flight.
#[derive(Debug)]
pub struct Templates {
    backend: Arc<dyn SandboxBackend>,
    builds: Arc<Mutex<HashMap<String, Build>>>,
    /// Where host-path sources may be (canonical); empty: nowhere.
    import_roots: Vec<PathBuf>,
    /// Where uploaded archives wait while they are imported (`STATE_DIR/uploads`).
    uploads: PathBuf,
}

/// Whether a key of tenant `viewer` (`None`: an admin key, which sees everything) may see and use `t`:
/// every template not made from a sandbox, and the snapshots of its own tenant's sandboxes.
fn visible(t: &TemplateRecord, viewer: Option<&str>) -> bool {
    viewer.is_none() || t.tenant.is_none() || t.tenant.as_deref() == viewer
}

/// Streams what a blocking writer writes as a response body, in chunks.
struct BodyWriter {
    tx: tokio::sync::mpsc::Sender<Result<bytes::Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

const BODY_CHUNK: usize = 256 << 10;

impl std::io::Write for BodyWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= BODY_CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = bytes::Bytes::from(std::mem::take(&mut self.buf));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client left"))
    }
}

impl Templates {
    pub fn new(
        backend: Arc<dyn SandboxBackend>,
        import_roots: &[PathBuf],
        uploads: PathBuf,
    ) -> Self {
        Self {
            backend,
            uploads,
            builds: Arc::default(),
            // A root that does not exist (yet) admits nothing until it does; kept as given.
            import_roots: import_roots
                .iter()
                .map(|r| std::fs::canonicalize(r).unwrap_or_else(|_| r.clone()))
                .collect(),
        }
    }

    /// A host-path source is read with the daemon's (root's) privileges, so whoever holds the API key
    /// could otherwise import `/root` or `/etc` as a template and read it from a sandbox. Only paths
    /// under the configured import roots are accepted, after resolving symlinks; the build then uses
    /// the resolved path, so what was checked is what is read.
    fn confine(
        &self,
        mut req: CreateTemplateRequest,
    ) -> Result<CreateTemplateRequest, TemplateApiError> {
        let (TemplateSource::Dir(p) | TemplateSource::Tar(p) | TemplateSource::Oci(p)) =
            &mut req.source
        else {
            return Ok(req);
        };
        if self.import_roots.is_empty() {
            return Err(TemplateApiError::Conflict(format!(
                "importing a template from a host path ({p}) is disabled on this daemon: such paths are \
                 read with the daemon's privileges. Start it with `--import-root DIR` (or `import_roots` \
                 in its config file) to allow paths under DIR"
            )));
        }
        let real = std::fs::canonicalize(&*p)
            .map_err(|e| TemplateApiError::InvalidArgument(format!("source path {p:?}: {e}")))?;
        if !self.import_roots.iter().any(|r| real.starts_with(r)) {
            let roots: Vec<String> = self
                .import_roots
                .iter()
                .map(|r| r.display().to_string())
                .collect();
            return Err(TemplateApiError::InvalidArgument(format!(
                "source path {p:?} (really {}) is outside this daemon's import roots: {}",
                real.display(),
                roots.join(", ")
            )));
        }
        *p = real.display().to_string();
        Ok(req)
    }

    fn check_supported(&self) -> Result<(), TemplateApiError> {
        match self.backend.templates() {
            Some(_) => Ok(()),
            None => Err(TemplateApiError::Unsupported(self.backend.name())),
        }
    }

    /// Runs `f` on the backend's template store on the blocking pool.
    async fn on_store<T, F>(&self, f: F) -> Result<T, TemplateApiError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn crate::backend::TemplateStore) -> Result<T, BackendError> + Send + 'static,
    {
        self.check_supported()?;
        let backend = self.backend.clone();
        tokio::task::spawn_blocking(move || match backend.templates() {
            Some(store) => f(store).map_err(TemplateApiError::Backend),
            None => Err(TemplateApiError::Unsupported(backend.name())),
        })
        .await
        .map_err(|e| TemplateApiError::Internal(format!("template task failed: {e}")))?
    }

    /// The templates a key of tenant `viewer` (`None`: admin) may see.
    pub async fn list(&self, viewer: Option<&str>) -> Result<Vec<TemplateInfo>, TemplateApiError> {
        let records = self.on_store(|s| s.list()).await?;
        Ok(records
            .into_iter()
            .filter(|t| visible(t, viewer))
            .map(info)
            .collect())
    }

    async fn record(
        &self,
        name: &str,
        viewer: Option<&str>,
    ) -> Result<TemplateRecord, TemplateApiError> {
        let records = self.on_store(|s| s.list()).await?;
        records
            .into_iter()
            .find(|t| t.name == name && visible(t, viewer))
            .ok_or_else(|| not_found(name))
    }

    pub async fn get(
        &self,
        name: &str,
        viewer: Option<&str>,
    ) -> Result<TemplateInfo, TemplateApiError> {
        self.record(name, viewer).await.map(info)
    }

    /// A create from `name` by a key of tenant `viewer`: another tenant's snapshot is not found, as if it
    /// did not exist. Anything else is the backend's to judge (the `process` backend has no templates).
    pub async fn check_usable(
        &self,
        name: &str,
        viewer: Option<&str>,
    ) -> Result<(), TemplateApiError> {
        if viewer.is_none() || self.backend.templates().is_none() {
            return Ok(());
        }
        let records = self.on_store(|s| s.list()).await?;
        match records.iter().find(|t| t.name == name) {
            Some(t) if !visible(t, viewer) => Err(not_found(name)),
            _ => Ok(()),
        }
    }

    /// Template `name`, its layers merged, as a zstd-compressed tar stream (`GET
    /// /v1/templates/{name}/export`). The archive is written on the blocking pool as the client reads.
    pub async fn export(
        &self,
        name: &str,
        viewer: Option<&str>,
    ) -> Result<axum::body::Body, TemplateApiError> {
        self.record(name, viewer).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let backend = self.backend.clone();
        let owned = name.to_owned();
        tokio::task::spawn_blocking(move || {
            let Some(store) = backend.templates() else {
                return;
            };
            let mut out = BodyWriter {
                tx: tx.clone(),
                buf: Vec::with_capacity(BODY_CHUNK),
            };
            let result = store.export(&owned, &mut out).and_then(|()| {
                std::io::Write::flush(&mut out).map_err(|e| BackendError::io("sending", e))
            });
            if let Err(e) = result {
                tracing::warn!(template = %owned, error = %e, "template export failed");
                // Ends the body with an error: the client sees a cut-off transfer, never a short archive
                // that looks whole.
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
        });
        Ok(axum::body::Body::from_stream(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
    }

    /// Imports an uploaded archive (an export, or any root filesystem tar, plain, gzip or zstd) as template
    /// `name`: the body is stored under `STATE_DIR/uploads`, unpacked, and removed.
    pub async fn import_upload(
        &self,
        name: &str,
        body: axum::body::Body,
    ) -> Result<TemplateInfo, TemplateApiError> {
        use futures_util::StreamExt;
        use tokio::io::AsyncWriteExt;
        let refusal = async {
            self.check_supported()?;
            CreateTemplateRequest {
                name: name.to_owned(),
                source: TemplateSource::Tar("/upload".into()),
            }
            .validate()
            .map_err(TemplateApiError::InvalidArgument)?;
            if self.list(None).await?.iter().any(|t| t.name == name) {
                return Err(TemplateApiError::Conflict(format!(
                    "template {name:?} already exists; templates are immutable: delete it first"
                )));
            }
            Ok(())
        }
        .await;
        if let Err(e) = refusal {
            // Read what the client sends before answering: a client still writing its body when the
            // connection closes never sees the answer (it gets EPIPE instead of the reason).
            let mut stream = body.into_data_stream();
            while let Some(Ok(_)) = stream.next().await {}
            return Err(e);
        }
        let internal = |what: &str, e: std::io::Error| {
            if e.raw_os_error() == Some(libc::ENOSPC) {
                TemplateApiError::Backend(BackendError::NoSpace(format!("{what}: {e}")))
            } else {
                TemplateApiError::Internal(format!("{what}: {e}"))
            }
        };
        tokio::fs::create_dir_all(&self.uploads)
            .await
            .map_err(|e| internal("creating the upload directory", e))?;
        let path = self
            .uploads
            .join(format!("{name}-{}.tar", crate::auth::random_hex(6)));
        let result = async {
            let mut file = tokio::fs::File::create(&path)
                .await
                .map_err(|e| internal("storing the upload", e))?;
            let mut stream = body.into_data_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| {
                    TemplateApiError::InvalidArgument(format!("reading the upload: {e}"))
                })?;
                file.write_all(&chunk)
                    .await
                    .map_err(|e| internal("storing the upload", e))?;
            }
            file.flush()
                .await
                .map_err(|e| internal("storing the upload", e))?;
            let (owned, stored) = (name.to_owned(), path.clone());
            self.on_store(move |s| s.import_archive(&owned, &stored))
                .await
        }
        .await;
        let _ = tokio::fs::remove_file(&path).await;
        let record = result.map_err(|e| match e {
            // An archive that does not unpack is the uploader's mistake.
            TemplateApiError::Backend(BackendError::Failed(m)) => {
                TemplateApiError::InvalidArgument(format!(
                    "the upload is not a usable root filesystem archive: {m}"
                ))
            }
            other => other,
        })?;
        tracing::info!(template = %name, "template imported from an upload");
        Ok(info(record))
    }

    /// Starts building a template and returns its build status (state `building`).
    pub async fn create(
        &self,
        req: CreateTemplateRequest,
    ) -> Result<TemplateBuild, TemplateApiError> {
        self.check_supported()?;
        validate(&req)?;
        let req = self.confine(req)?;
        let name = req.name.clone();
        let exists = {
            let name = name.clone();
            self.on_store(move |s| Ok(s.list()?.iter().any(|t| t.name == name)))
                .await?
        };
        if exists {
            return Err(TemplateApiError::Conflict(format!(
                "template {name:?} already exists; templates are immutable: delete it first"
            )));
        }
        let status = self.register(&name, req.source.clone())?;
        tracing::info!(template = %name, source = ?req.source, "template build started");
        let source = req.source.clone();
        self.run_build(status.clone(), move |store, progress| {
            store.build(&name, &source, progress)
        });
        Ok(status)
    }

    /// Makes the backend's `base` template in the background when it is missing, so that the first
    /// create does not pay for it in silence: it is a build like any other (`GET
    /// /v1/templates/base/build`, progress in its log and the daemon's), and a create that needs it
    /// meanwhile waits for it.
    pub fn warm_base(&self) {
        let Some(store) = self.backend.templates() else {
            return;
        };
        let Some(name) = store.base() else {
            return;
        };
        match store.list() {
            Ok(list) if list.iter().any(|t| t.name == name) => return,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot list templates; not preparing `{name}` ahead of time");
                return;
            }
        }
        // It is made from the host's own tree. Nothing else can be building at start-up.
        let Ok(status) = self.register(name, TemplateSource::Dir("/".into())) else {
            return;
        };
        tracing::info!(template = %name, "preparing the `{name}` template from the host (once; creates wait for it)");
        self.run_build(status, |store, progress| store.build_base(progress));
    }

    /// Records a build of `name` as started (state `building`), unless one is in progress already.
    fn register(
        &self,
        name: &str,
        source: TemplateSource,
    ) -> Result<TemplateBuild, TemplateApiError> {
        let status = TemplateBuild {
            name: name.to_owned(),
            source,
            state: TemplateBuildState::Building,
            started_at: rfc3339(now_ms()),
            finished_at: None,
            error: None,
            log: Vec::new(),
            template: None,
        };
        let mut builds = self.builds.lock().unwrap_or_else(PoisonError::into_inner);
        if builds
            .get(name)
            .is_some_and(|b| b.status.state == TemplateBuildState::Building)
        {
            return Err(TemplateApiError::Conflict(format!(
                "template {name:?} is being built already; poll GET /v1/templates/{name}/build"
            )));
        }
        prune(&mut builds);
        builds.insert(
            name.to_owned(),
            Build {
                status: status.clone(),
                finished_ms: None,
            },
        );
        Ok(status)
    }

    /// Runs `job` on the blocking pool as the build `status` names (already registered as building):
    /// progress lines go to its log (and the daemon's), the outcome to its state.
    fn run_build<F>(&self, status: TemplateBuild, job: F)
    where
        F: FnOnce(
                &dyn crate::backend::TemplateStore,
                &mut dyn FnMut(&str),
            ) -> Result<TemplateRecord, BackendError>
            + Send
            + 'static,
    {
        let name = status.name;
        let backend = self.backend.clone();
        let builds = self.builds.clone();
        // Detached on purpose: the build outlives the request that started it.
        tokio::task::spawn_blocking(move || {
            let log_to = builds.clone();
            let log_name = name.clone();
            let mut progress = move |line: &str| {
                tracing::info!(template = %log_name, "{line}");
                let mut builds = log_to.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(b) = builds.get_mut(&log_name) {
                    if b.status.log.len() >= LOG_LINES {
                        b.status.log.remove(0);
                    }
                    b.status.log.push(line.to_owned());
                }
            };
            let result = match backend.templates() {
                Some(store) => job(store, &mut progress),
                None => Err(BackendError::Unavailable(
                    TemplateApiError::Unsupported(backend.name()).to_string(),
                )),
            };
            let mut builds = builds.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(b) = builds.get_mut(&name) else {
                return;
            };
            let now = now_ms();
            b.finished_ms = Some(now);
            b.status.finished_at = Some(rfc3339(now));
            match result {
                Ok(record) => {
                    tracing::info!(template = %name, "template built");
                    b.status.state = TemplateBuildState::Ready;
                    b.status.template = Some(info(record));
                }
                Err(e) => {
                    tracing::warn!(template = %name, error = %e, "template build failed");
                    b.status.state = TemplateBuildState::Failed;
                    b.status.error = Some(e.to_string());
                }
            }
        });
    }

    /// The latest build of `name` since the daemon started.
    pub fn build_status(&self, name: &str) -> Result<TemplateBuild, TemplateApiError> {
        self.check_supported()?;
        let builds = self.builds.lock().unwrap_or_else(PoisonError::into_inner);
        builds.get(name).map(|b| b.status.clone()).ok_or_else(|| {
            TemplateApiError::NotFound(format!(
                "no build of template {name:?} since the daemon started"
            ))
        })
    }

    /// Deletes `name` for a key of tenant `viewer` (`None`: admin), which may delete its own tenant's
    /// snapshots only; `users` are the sandboxes made from it (any: 409).
    pub async fn delete(
        &self,
        name: &str,
        viewer: Option<&str>,
        users: &[String],
    ) -> Result<(), TemplateApiError> {
        self.check_supported()?;
        if !sandpit_types::sandbox::valid_template_name(name) {
            return Err(not_found(name));
        }
        let building = {
            let builds = self.builds.lock().unwrap_or_else(PoisonError::into_inner);
            builds
                .get(name)
                .is_some_and(|b| b.status.state == TemplateBuildState::Building)
        };
        if building {
            return Err(TemplateApiError::Conflict(format!(
                "template {name:?} is being built; delete it once the build has finished"
            )));
        }
        let record = self.record(name, viewer).await?;
        if viewer.is_some() && record.tenant.as_deref() != viewer {
            return Err(TemplateApiError::Forbidden(format!(
                "template {name:?} is every tenant's: deleting it needs a key with the `admin` scope"
            )));
        }
        if !users.is_empty() {
            let shown: Vec<&str> = users.iter().take(5).map(String::as_str).collect();
            return Err(TemplateApiError::Conflict(format!(
                "template {name:?} is in use by {} sandbox(es) ({}{}); delete them first",
                users.len(),
                shown.join(", "),
                if users.len() > 5 { ", …" } else { "" }
            )));
        }
        let owned = name.to_owned();
        self.on_store(move |s| s.remove(&owned)).await?;
        tracing::info!(template = %name, "template deleted");
        Ok(())
    }
}

/// Drops the oldest finished builds beyond [`FINISHED_KEPT`].
fn prune(builds: &mut HashMap<String, Build>) {
    let mut finished: Vec<(i64, String)> = builds
        .iter()
        .filter_map(|(k, b)| b.finished_ms.map(|t| (t, k.clone())))
        .collect();
    if finished.len() < FINISHED_KEPT {
        return;
    }
    finished.sort();
    for (_, k) in finished.iter().take(finished.len() + 1 - FINISHED_KEPT) {
        builds.remove(k);
    }
}

/// The API's view of a backend's template.
pub(crate) fn info(r: TemplateRecord) -> TemplateInfo {
    TemplateInfo {
        name: r.name,
        source: r.source,
        created_at: rfc3339(r.created_at_ms),
        parent: r.parent,
        tenant: r.tenant,
        auto_remove: r.auto_remove,
    }
}

fn not_found(name: &str) -> TemplateApiError {
    TemplateApiError::NotFound(format!("template {name:?} not found"))
}

/// The request's own checks (`CreateTemplateRequest::validate`, shared with the fuzz targets), then
/// whether its source exists on this host.
fn validate(req: &CreateTemplateRequest) -> Result<(), TemplateApiError> {
    req.validate().map_err(TemplateApiError::InvalidArgument)?;
    let bad = |m: String| Err(TemplateApiError::InvalidArgument(m));
    if let TemplateSource::Dir(p) | TemplateSource::Tar(p) | TemplateSource::Oci(p) = &req.source {
        let path = Path::new(p);
        let is_dir = path.is_dir();
        match &req.source {
            TemplateSource::Dir(_) if !is_dir => {
                return bad(format!("source directory {p:?} does not exist"));
            }
            TemplateSource::Tar(_) if !path.is_file() => {
                return bad(format!("source tarball {p:?} does not exist"));
            }
            TemplateSource::Oci(_) if !is_dir && !path.is_file() => {
                return bad(format!("source image {p:?} does not exist"));
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sandpit_types::sandbox::DebianSource;

    fn req(name: &str, source: TemplateSource) -> CreateTemplateRequest {
        CreateTemplateRequest {
            name: name.into(),
            source,
        }
    }

    #[test]
    fn requests_are_validated_before_anything_runs() {
        let tmp = std::env::temp_dir().display().to_string();
        assert!(validate(&req("py", TemplateSource::Dir(tmp.clone()))).is_ok());
        assert!(validate(&req("Py", TemplateSource::Dir(tmp.clone()))).is_err());
        assert!(validate(&req("base", TemplateSource::Dir(tmp.clone()))).is_err());
        assert!(validate(&req(".x", TemplateSource::Dir(tmp.clone()))).is_err());
        assert!(validate(&req("py", TemplateSource::Dir("rel/path".into()))).is_err());
        assert!(validate(&req("py", TemplateSource::Tar(tmp))).is_err());
        assert!(validate(&req("py", TemplateSource::Oci("/nonexistent/x".into()))).is_err());
        let deb = |suite: &str, mirror: Option<&str>| {
            req(
                "deb",
                TemplateSource::Debian(DebianSource {
                    suite: Some(suite.into()),
                    mirror: mirror.map(Into::into),
                }),
            )
        };
        assert!(validate(&deb("bookworm", Some("http://deb.debian.org/debian"))).is_ok());
        assert!(validate(&deb("--foreign", None)).is_err());
        assert!(validate(&deb("bookworm", Some("ftp://x"))).is_err());
    }
}
