//! Sandbox lifecycle bodies served by `sandpitd` under `/v1/sandboxes`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Body of `POST /v1/sandboxes`. Every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateSandboxRequest {
    /// Template name; `base` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// CPU limit in cores (fractions allowed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// Maximum number of processes/threads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    /// Size cap of the sandbox's writable layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_mb: Option<u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// Seconds until the sandbox's deadline (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_timeout: Option<OnTimeout>,
}

/// What happens at a sandbox's deadline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum OnTimeout {
    #[default]
    Kill,
    Pause,
}

/// Sandbox lifecycle states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SandboxState {
    Starting,
    Running,
    Paused,
    Stopped,
    Failed,
}

/// A sandbox as the daemon reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SandboxInfo {
    pub id: String,
    pub state: SandboxState,
    pub template: String,
    pub cpu: Option<f64>,
    pub memory_mb: Option<u64>,
    pub pids: Option<u64>,
    pub disk_mb: Option<u64>,
    pub env: BTreeMap<String, String>,
    pub metadata: BTreeMap<String, String>,
    pub on_timeout: OnTimeout,
    /// RFC 3339.
    pub created_at: String,
    pub expires_at: Option<String>,
    /// Why the sandbox is `failed` or `stopped`, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Body of `POST /v1/sandboxes/{id}/timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SetTimeoutRequest {
    /// Seconds from now.
    pub timeout: u64,
}

/// Body of `GET /v1/sandboxes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SandboxList {
    pub sandboxes: Vec<SandboxInfo>,
}

/// A template sandboxes are created from (`GET /v1/templates`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TemplateInfo {
    pub name: String,
    /// Where it came from, e.g. `host /usr + generated /etc`, `tarball /srv/img.tar`, `debootstrap bookworm`.
    pub source: String,
    /// RFC 3339.
    pub created_at: String,
}

/// Body of `GET /v1/templates`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TemplateList {
    pub templates: Vec<TemplateInfo>,
}

/// Body of `POST /v1/templates`: build template `name` from `source`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateTemplateRequest {
    /// 1-64 characters from `a-z 0-9 . _ -`, not starting with `.`.
    pub name: String,
    pub source: TemplateSource,
}

/// What a template is built from. Paths are on the daemon's host (an admin-only operation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TemplateSource {
    /// A directory holding a root filesystem (copied).
    Dir(String),
    /// A tar archive of a root filesystem, optionally gzip-compressed (e.g. `docker export`).
    Tar(String),
    /// An OCI image layout directory, or a tar of one / a `docker save` archive.
    Oci(String),
    /// A Debian tree built with `debootstrap --variant=minbase` (needs `debootstrap` and network access).
    Debian(DebianSource),
}

/// A debootstrap build.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DebianSource {
    /// Release name; `bookworm` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suite: Option<String>,
    /// Mirror URL; debootstrap's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<String>,
}

/// Where a template build stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TemplateBuildState {
    Building,
    Ready,
    Failed,
}

/// A template build started by `POST /v1/templates`, polled at `GET /v1/templates/{name}/build`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TemplateBuild {
    pub name: String,
    pub source: TemplateSource,
    pub state: TemplateBuildState,
    /// RFC 3339.
    pub started_at: String,
    pub finished_at: Option<String>,
    /// Why the build failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The last progress lines (debootstrap output, import steps), oldest first.
    pub log: Vec<String>,
    /// The template, once `ready`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<TemplateInfo>,
}
