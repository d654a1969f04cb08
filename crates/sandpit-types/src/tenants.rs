//! Tenants and their quotas (`/v1/tenants`).
//!
//! A tenant is a name every key, sandbox and template made from a sandbox carries (see [`crate::keys`]).
//! An admin sets a tenant's quotas; creates over them answer 429 with code `quota_exceeded` (a count or a
//! size) or `rate_limited` (creates per second), a `Retry-After`, and the limit named in the message.

use serde::{Deserialize, Serialize};

/// A tenant's quotas: the body of `PUT /v1/tenants/{name}`, and part of every tenant answer. An absent
/// (or `null`) field is no limit; the `PUT` replaces all four.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TenantQuotas {
    /// Sandboxes that exist at once (any state but gone). `0` stops the tenant creating any.
    #[serde(default)]
    pub max_sandboxes: Option<u64>,
    /// Creates per second, over a one-second window: a burst of up to `max(1, floor(rate))` creates, then
    /// one every `1/rate` seconds. May be fractional (`0.5`: one every two seconds).
    #[serde(default)]
    pub max_creates_per_second: Option<f64>,
    /// The sum of the tenant's sandboxes' `memory_mb`. Under this quota every create must name its
    /// `memory_mb` (a sandbox without a memory limit cannot be counted against one).
    #[serde(default)]
    pub max_memory_mb: Option<u64>,
    /// The sum of the tenant's sandboxes' `disk_mb` (a sandbox without one counts its default writable
    /// layer, [`DEFAULT_DISK_MB`]).
    #[serde(default)]
    pub max_disk_mb: Option<u64>,
}

/// What a sandbox without `disk_mb` gets, and counts against a disk quota.
pub const DEFAULT_DISK_MB: u64 = 1024;

/// Most creates per second a quota may allow (more is the same as none).
pub const MAX_CREATES_PER_SECOND: f64 = 10_000.0;

impl TenantQuotas {
    /// Checks what the types do not: a rate that is a positive, finite number.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(r) = self.max_creates_per_second {
            if !(r.is_finite() && r > 0.0 && r <= MAX_CREATES_PER_SECOND) {
                return Err(format!(
                    "max_creates_per_second must be more than 0 and at most {MAX_CREATES_PER_SECOND} \
                     (leave it out for no limit); got {r}"
                ));
            }
        }
        Ok(())
    }

    /// Whether no quota is set.
    pub fn is_unlimited(&self) -> bool {
        *self == Self::default()
    }
}

/// What a tenant holds now, counted the way its quotas are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TenantUsage {
    pub sandboxes: u64,
    /// The sum of `memory_mb` over sandboxes that have one.
    pub memory_mb: u64,
    /// The sum of `disk_mb` (or [`DEFAULT_DISK_MB`]).
    pub disk_mb: u64,
}

/// A tenant: `GET`/`PUT /v1/tenants/{name}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TenantInfo {
    pub name: String,
    pub quotas: TenantQuotas,
    pub usage: TenantUsage,
}

/// Body of `GET /v1/tenants`: every tenant that has a quota, a key or a sandbox, by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TenantList {
    pub tenants: Vec<TenantInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_are_strict_and_checked() {
        let q: TenantQuotas =
            serde_json::from_str(r#"{"max_sandboxes":2,"max_creates_per_second":0.5}"#).unwrap();
        assert_eq!(q.max_sandboxes, Some(2));
        assert!(q.validate().is_ok());
        assert!(serde_json::from_str::<TenantQuotas>(r#"{"max_sandbox":2}"#).is_err());
        assert!(serde_json::from_str::<TenantQuotas>(r#"{"max_sandboxes":-1}"#).is_err());
        for bad in [0.0, -1.0, f64::INFINITY, 1e9] {
            let q = TenantQuotas {
                max_creates_per_second: Some(bad),
                ..TenantQuotas::default()
            };
            assert!(q.validate().is_err(), "{bad}");
        }
        assert!(TenantQuotas::default().is_unlimited());
        let cleared: TenantQuotas = serde_json::from_str(r#"{"max_sandboxes":null}"#).unwrap();
        assert!(cleared.is_unlimited());
    }
}
