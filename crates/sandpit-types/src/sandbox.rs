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
    /// Outbound network policy; the daemon's default (`--default-egress`, no lists) when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<crate::network::NetworkPolicy>,
    /// Volumes to mount (`POST /v1/volumes` makes them), at most 16.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<crate::volumes::VolumeMount>,
}

/// The least memory a sandbox may be given: the agent needs about 8 MiB, a shell and a command more.
pub const MIN_MEMORY_MB: u64 = 16;
/// The fewest processes and threads a sandbox may be limited to: the agent's runtime, a shell, a command.
pub const MIN_PIDS: u64 = 8;
/// Most entries in a sandbox's `env` or `metadata`.
pub const MAX_MAP_ENTRIES: usize = 1024;
/// The template a backend builds by itself on first use; it cannot be imported over.
pub const RESERVED_TEMPLATE: &str = "base";

/// Whether `name` is a template name: 1-64 characters from `a-z 0-9 . _ -`, not starting with `.`
/// (templates become directory names on the daemon's host).
pub fn valid_template_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

impl CreateSandboxRequest {
    /// Checks what serde cannot: a template name, limits in range, env and metadata keys and values
    /// usable as they are stored and passed on. The daemon calls this before anything is created.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(t) = self.template.as_ref().filter(|t| !valid_template_name(t)) {
            return Err(format!(
                "template {t:?}: use 1-64 characters from a-z 0-9 . _ -, not starting with `.`"
            ));
        }
        crate::volumes::validate_mounts(&self.volumes)?;
        if self
            .cpu
            .is_some_and(|cpu| !(cpu.is_finite() && cpu > 0.0 && cpu <= 1024.0))
        {
            return Err("cpu must be a number of cores above 0 and at most 1024".into());
        }
        // The floors are what the agent itself needs to start and run a command: below them a create
        // would not be refused but fail after the start timeout, which is the caller's mistake reported
        // as ours.
        for (name, v, min) in [
            ("memory_mb", self.memory_mb, MIN_MEMORY_MB),
            ("pids", self.pids, MIN_PIDS),
            ("disk_mb", self.disk_mb, 1),
        ] {
            if v.is_some_and(|v| v < min || v > (1 << 40)) {
                return Err(format!("{name} must be between {min} and 2^40"));
            }
        }
        check_map("env", &self.env, |k| {
            !k.is_empty() && !k.contains('=') && !k.contains('\0')
        })?;
        check_map("metadata", &self.metadata, |k| {
            !k.is_empty() && k.len() <= 256 && !k.contains('\0')
        })
    }
}

fn check_map(
    what: &str,
    m: &BTreeMap<String, String>,
    key_ok: impl Fn(&str) -> bool,
) -> Result<(), String> {
    if m.len() > MAX_MAP_ENTRIES {
        return Err(format!("{what}: at most {MAX_MAP_ENTRIES} entries"));
    }
    for (k, v) in m {
        if !key_ok(k) || v.contains('\0') {
            return Err(format!("{what}: invalid key or value {k:?}"));
        }
    }
    Ok(())
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
    /// Running, but its agent does not answer the daemon's health probe (stopped at once; wedged or
    /// starved after a grace):
    /// calls fail fast with `503 unavailable` and `error` says why. Back to `running` by itself when the
    /// agent answers again; DELETE works. Only ever reported, never stored. Added in protocol 1 without a
    /// version bump: clients treat an unknown state as not running.
    Unhealthy,
}

impl SandboxState {
    /// Every state, in lifecycle order.
    pub const ALL: [Self; 6] = [
        Self::Starting,
        Self::Running,
        Self::Paused,
        Self::Stopped,
        Self::Failed,
        Self::Unhealthy,
    ];

    /// The state's wire spelling (also how the daemon's store keeps it and how `?state=` names it).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Stopped => "stopped",
            Self::Failed => "failed",
            Self::Unhealthy => "unhealthy",
        }
    }
}

impl std::fmt::Display for SandboxState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for SandboxState {
    type Err = String;

    /// The wire spelling back; anything else is an error naming the known states.
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<&str> = Self::ALL.iter().map(|v| v.as_str()).collect();
                format!("unknown sandbox state {s:?} (one of: {})", known.join(", "))
            })
    }
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
    /// The sandbox's outbound network policy (`egress` filled in); absent when the daemon runs without
    /// networking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<crate::network::NetworkPolicy>,
    /// Where this sandbox's preview URLs live: `{port}-{id}.{preview_domain}` (with the daemon's port
    /// when it is not 80/443), e.g. `localhost:7070`. SDKs build `get_host(port)` from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_domain: Option<String>,
    /// The tenant of the key that created it (`default` for the key file's key). Keys of other tenants
    /// do not see it. Added in protocol 1 without a version bump.
    #[serde(default)]
    pub tenant: String,
    /// A credential for this one sandbox (processes, files, ports, pause/resume, info; not delete, not
    /// other sandboxes): in the answer to create only. Hand it to a page instead of an API key; rotate it
    /// with `POST /v1/sandboxes/{id}/access-token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    /// The volumes mounted in it. Added without a version bump (absent: none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<crate::volumes::VolumeMount>,
}

/// Body of the answer to `POST /v1/sandboxes/{id}/access-token`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AccessToken {
    pub access_token: String,
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
    /// Where it came from, e.g. `host /usr + generated /etc`, `tarball /srv/img.tar`, `debootstrap bookworm`,
    /// `snapshot of sandbox 3f2a…`.
    pub source: String,
    /// RFC 3339.
    pub created_at: String,
    /// The template a snapshot is a layer over (it stores only its own changes); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The tenant whose sandbox a snapshot was made from: only that tenant (and admin keys) see and use
    /// it. Absent for templates every tenant may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Made by a fork: the daemon deletes it once no sandbox uses it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub auto_remove: bool,
}

/// Body of `PUT /v1/templates/{name}/pool`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SetPoolRequest {
    /// How many sandboxes of this template wait ready (0 removes the pool; at most 256).
    pub size: u64,
}

/// A template's warm pool (`GET /v1/templates/{name}/pool`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PoolInfo {
    pub template: String,
    /// How many should wait.
    pub size: u64,
    /// How many wait now.
    pub ready: u64,
    /// How many the pool is short and is making: being created now or waiting their turn in the
    /// refill (one at a time, after the quiet spell that follows a claim). `ready + filling` is `size`
    /// while the pool refills.
    pub filling: u64,
}

/// Body of `POST /v1/sandboxes/{id}/snapshots`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateSnapshotRequest {
    /// The new template's name: 1-64 characters from `a-z 0-9 . _ -`, not starting with `.`.
    pub name: String,
}

impl CreateSnapshotRequest {
    pub fn validate(&self) -> Result<(), String> {
        if valid_template_name(&self.name) {
            Ok(())
        } else {
            Err(format!(
                "snapshot name {:?}: use 1-64 characters from a-z 0-9 . _ -, not starting with `.`",
                self.name
            ))
        }
    }
}

/// What a snapshot made and cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SnapshotInfo {
    /// The new template: create sandboxes from it by name.
    pub template: TemplateInfo,
    /// How long the sandbox's processes were frozen while the last changes were copied (0 when it was
    /// paused already).
    pub frozen_ms: f64,
    /// Bytes of file content the snapshot holds (what the sandbox wrote over its template).
    pub bytes: u64,
    /// Files, directories and links it holds.
    pub entries: u64,
}

/// Most sandboxes one fork makes.
pub const MAX_FORK_COUNT: u32 = 100;

fn one() -> u32 {
    1
}

/// Body of `POST /v1/sandboxes/{id}/fork`: `count` (default 1) and any option of `POST /v1/sandboxes`
/// except `template` (a fork starts from the source's filesystem).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ForkRequest {
    /// How many sandboxes to make, 1-100 (default 1).
    #[serde(default = "one")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 100, default = 1))]
    pub count: u32,
    #[serde(flatten)]
    pub options: CreateSandboxRequest,
}

impl<'de> Deserialize<'de> for ForkRequest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{Error, MapAccess, Visitor};
        /// The body's members, refusing a member given twice (as derived structs do).
        struct Members;
        impl<'de> Visitor<'de> for Members {
            type Value = serde_json::Map<String, serde_json::Value>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                let mut m = serde_json::Map::new();
                while let Some((k, v)) = a.next_entry::<String, serde_json::Value>()? {
                    if m.contains_key(&k) {
                        return Err(A::Error::custom(format!("duplicate field `{k}`")));
                    }
                    m.insert(k, v);
                }
                Ok(m)
            }
        }
        let mut map = d.deserialize_map(Members)?;
        let count = match map.remove("count") {
            None => one(),
            Some(v) => u32::deserialize(v).map_err(|e| D::Error::custom(format!("count: {e}")))?,
        };
        if map.contains_key("template") {
            return Err(D::Error::custom(
                "`template` cannot be set: a fork starts from the source sandbox's filesystem",
            ));
        }
        let options = CreateSandboxRequest::deserialize(serde_json::Value::Object(map))
            .map_err(D::Error::custom)?;
        Ok(Self { count, options })
    }
}

impl ForkRequest {
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_FORK_COUNT).contains(&self.count) {
            return Err(format!(
                "count {}: a fork makes 1 to {MAX_FORK_COUNT} sandboxes",
                self.count
            ));
        }
        self.options.validate()
    }
}

/// What `POST /v1/sandboxes/{id}/fork` made. Running processes and memory are not copied: each new
/// sandbox starts its own agent on a copy of the source's files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ForkInfo {
    /// The snapshot the new sandboxes start from (`auto_remove`: deleted with the last of them).
    pub snapshot: SnapshotInfo,
    pub sandboxes: Vec<SandboxInfo>,
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

impl CreateTemplateRequest {
    /// Checks everything about the request that does not depend on the daemon's host: the name, an
    /// absolute path without NUL, a plausible Debian suite and mirror. Whether the path exists is the
    /// daemon's check, after this one.
    pub fn validate(&self) -> Result<(), String> {
        if !valid_template_name(&self.name) {
            return Err(format!(
                "template name {:?}: use 1-64 characters from a-z 0-9 . _ -, not starting with `.`",
                self.name
            ));
        }
        if self.name == RESERVED_TEMPLATE {
            return Err(format!(
                "template name {RESERVED_TEMPLATE:?} is reserved: it is built from the host automatically"
            ));
        }
        match &self.source {
            TemplateSource::Dir(p) | TemplateSource::Tar(p) | TemplateSource::Oci(p) => {
                if !p.starts_with('/') || p.contains('\0') {
                    return Err(format!(
                        "source path {p:?} must be an absolute path on the daemon's host"
                    ));
                }
            }
            TemplateSource::Debian(d) => {
                if let Some(s) = &d.suite {
                    let ok = !s.is_empty()
                        && s.len() <= 64
                        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
                        && s.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
                    if !ok {
                        return Err(format!(
                            "debian suite {s:?}: use a release name like `bookworm`"
                        ));
                    }
                }
                if let Some(m) = &d.mirror {
                    let ok = (m.starts_with("http://") || m.starts_with("https://"))
                        && m.len() <= 2048
                        && !m.chars().any(|c| c.is_whitespace() || c.is_control());
                    if !ok {
                        return Err(format!(
                            "debian mirror {m:?}: give an http:// or https:// URL"
                        ));
                    }
                }
            }
        }
        Ok(())
    }
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

#[cfg(test)]
mod tests {
    #[test]
    fn a_fork_request_is_count_plus_create_options_and_nothing_else() {
        let f: ForkRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(f.count, 1);
        let f: ForkRequest =
            serde_json::from_str(r#"{"count": 3, "memory_mb": 256, "metadata": {"k": "v"}}"#)
                .unwrap();
        assert_eq!((f.count, f.options.memory_mb), (3, Some(256)));
        assert!(f.validate().is_ok());
        for (bad, why) in [
            (r#"{"template": "base"}"#, "template"),
            (r#"{"count": 1, "count": 2}"#, "duplicate"),
            (r#"{"nope": 1}"#, "nope"),
            (r#"{"count": -1}"#, "count"),
            ("[]", "object"),
        ] {
            let e = serde_json::from_str::<ForkRequest>(bad)
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        for count in [0, 101] {
            let f: ForkRequest = serde_json::from_str(&format!(r#"{{"count": {count}}}"#)).unwrap();
            assert!(f.validate().unwrap_err().contains("count"));
        }
    }

    use super::*;

    #[test]
    fn state_spellings_are_serdes_and_round_trip() {
        for s in SandboxState::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
            assert_eq!(s.as_str().parse::<SandboxState>(), Ok(s));
        }
        let e = "runing".parse::<SandboxState>().unwrap_err();
        assert!(e.contains("runing") && e.contains("unhealthy"), "{e}");
    }

    fn create(j: &str) -> Result<(), String> {
        serde_json::from_str::<CreateSandboxRequest>(j)
            .unwrap()
            .validate()
    }

    #[test]
    fn create_requests_are_validated_beyond_their_shape() {
        assert!(create("{}").is_ok());
        assert!(create(r#"{"template":"py-3.12","cpu":0.5,"memory_mb":16,"pids":8}"#).is_ok());
        for bad in [
            r#"{"template":"../x"}"#,
            r#"{"template":""}"#,
            r#"{"cpu":0}"#,
            r#"{"cpu":1e300}"#,
            r#"{"memory_mb":15}"#,
            r#"{"pids":7}"#,
            r#"{"disk_mb":0}"#,
            r#"{"env":{"A=B":"x"}}"#,
            r#"{"env":{"A":"\u0000"}}"#,
            r#"{"metadata":{"":"x"}}"#,
            r#"{"metadata":{"k":"\u0000"}}"#,
        ] {
            assert!(create(bad).is_err(), "{bad}");
        }
    }

    /// Found by `tests/bad_input.rs`: a NUL was refused in metadata values but taken in metadata keys.
    #[test]
    fn a_nul_in_a_metadata_key_is_refused_like_one_in_a_value() {
        assert!(create(r#"{"metadata":{"a\u0000b":"x"}}"#).is_err());
    }

    #[test]
    fn template_requests_are_validated_without_the_host() {
        let req = |j: &str| {
            serde_json::from_str::<CreateTemplateRequest>(j)
                .unwrap()
                .validate()
        };
        assert!(req(r#"{"name":"py","source":{"dir":"/srv/rootfs"}}"#).is_ok());
        assert!(req(r#"{"name":"deb","source":{"debian":{"suite":"bookworm"}}}"#).is_ok());
        for bad in [
            r#"{"name":"base","source":{"dir":"/x"}}"#,
            r#"{"name":"Py","source":{"dir":"/x"}}"#,
            r#"{"name":"py","source":{"tar":"rel/x.tar"}}"#,
            r#"{"name":"py","source":{"oci":"/x\u0000"}}"#,
            r#"{"name":"deb","source":{"debian":{"suite":"--foreign"}}}"#,
            r#"{"name":"deb","source":{"debian":{"mirror":"ftp://x"}}}"#,
            r#"{"name":"deb","source":{"debian":{"mirror":"http://a b"}}}"#,
        ] {
            assert!(req(bad).is_err(), "{bad}");
        }
    }
}
