//! Volumes (`/v1/volumes`): named, size-capped filesystems that outlive every sandbox, mounted into
//! sandboxes at create (`volumes` in `POST /v1/sandboxes`).

use serde::{Deserialize, Serialize};

/// The smallest volume (an ext4 filesystem needs room for its journal and metadata).
pub const MIN_VOLUME_MB: u64 = 16;
/// The largest volume: 1 TiB.
pub const MAX_VOLUME_MB: u64 = 1 << 20;
/// Most volumes one sandbox mounts.
pub const MAX_MOUNTS: usize = 16;

/// Where a volume may not be mounted: the sandbox's own machinery and the kernel's views.
const RESERVED: &[&str] = &["/proc", "/sys", "/dev", "/run/sandpit", "/.sandpit"];

/// Body of `POST /v1/volumes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateVolumeRequest {
    /// 1-64 characters from `a-z 0-9 . _ -`, not starting with `.`; unique on the daemon.
    pub name: String,
    /// The size cap in MiB (16 to 1048576): writes past it fail with `ENOSPC` inside the sandbox.
    pub size_mb: u64,
}

impl CreateVolumeRequest {
    pub fn validate(&self) -> Result<(), String> {
        if !crate::sandbox::valid_template_name(&self.name) {
            return Err(format!(
                "volume name {:?}: use 1-64 characters from a-z 0-9 . _ -, not starting with `.`",
                self.name
            ));
        }
        if !(MIN_VOLUME_MB..=MAX_VOLUME_MB).contains(&self.size_mb) {
            return Err(format!(
                "size_mb {}: a volume holds {MIN_VOLUME_MB} to {MAX_VOLUME_MB} MiB",
                self.size_mb
            ));
        }
        Ok(())
    }
}

/// A volume (`GET /v1/volumes/{name}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VolumeInfo {
    pub name: String,
    pub size_mb: u64,
    /// MiB in use (files and the filesystem's own metadata).
    pub used_mb: u64,
    /// The tenant it belongs to: only that tenant's keys (and admin keys) see and mount it.
    pub tenant: String,
    /// RFC 3339.
    pub created_at: String,
    /// Sandboxes that mount it now (a volume is deleted only when this is empty).
    pub mounted_by: Vec<String>,
}

/// Body of `GET /v1/volumes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VolumeList {
    pub volumes: Vec<VolumeInfo>,
}

/// One volume in a sandbox (`volumes` of `POST /v1/sandboxes`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct VolumeMount {
    /// The volume's name.
    pub name: String,
    /// Where it appears in the sandbox: an absolute path (made if missing), not `/` and not under
    /// `/proc`, `/sys`, `/dev`, `/run/sandpit` or `/.sandpit`.
    pub path: String,
    /// Mounted read-only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

/// Checks a sandbox's `volumes`: names, paths, and no path twice.
pub fn validate_mounts(mounts: &[VolumeMount]) -> Result<(), String> {
    if mounts.len() > MAX_MOUNTS {
        return Err(format!(
            "volumes: at most {MAX_MOUNTS} per sandbox, not {}",
            mounts.len()
        ));
    }
    let mut paths = std::collections::BTreeSet::new();
    for m in mounts {
        if !crate::sandbox::valid_template_name(&m.name) {
            return Err(format!("volumes: {:?} is not a volume name", m.name));
        }
        let p = &m.path;
        let clean = p.starts_with('/')
            && p.len() > 1
            && p.len() <= 4096
            && !p.ends_with('/')
            && !p.contains('\0')
            && p[1..]
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != "..");
        if !clean {
            return Err(format!(
                "volumes: path {p:?} must be absolute and normalised (no `.`, `..`, `//` or trailing `/`), not `/`"
            ));
        }
        if let Some(r) = RESERVED
            .iter()
            .find(|r| p == *r || p.starts_with(&format!("{r}/")))
        {
            return Err(format!(
                "volumes: path {p:?} is under {r}, which the sandbox needs"
            ));
        }
        if !paths.insert(p.as_str()) {
            return Err(format!("volumes: two volumes at {p}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(path: &str) -> VolumeMount {
        VolumeMount {
            name: "data".into(),
            path: path.into(),
            read_only: false,
        }
    }

    #[test]
    fn mount_paths_are_absolute_clean_and_away_from_the_sandbox_machinery() {
        assert!(validate_mounts(&[at("/data"), at("/home/user/cache")]).is_ok());
        for bad in [
            "/",
            "data",
            "/a/../b",
            "/a/./b",
            "/a//b",
            "/a/",
            "/proc",
            "/proc/x",
            "/dev/shm",
            "/run/sandpit",
            "/.sandpit/x",
            "/sys",
        ] {
            assert!(validate_mounts(&[at(bad)]).is_err(), "{bad}");
        }
        assert!(validate_mounts(&[at("/run/other"), at("/devices")]).is_ok());
        assert!(
            validate_mounts(&[at("/x"), at("/x")])
                .unwrap_err()
                .contains("two")
        );
        let many: Vec<VolumeMount> = (0..17).map(|i| at(&format!("/v{i}"))).collect();
        assert!(validate_mounts(&many).is_err());
    }

    #[test]
    fn volume_sizes_and_names_are_checked() {
        let r = |name: &str, size_mb| CreateVolumeRequest {
            name: name.into(),
            size_mb,
        };
        assert!(r("cache", 64).validate().is_ok());
        assert!(r("Cache", 64).validate().is_err());
        assert!(r("cache", 1).validate().is_err());
        assert!(r("cache", MAX_VOLUME_MB + 1).validate().is_err());
    }
}
