//! Tenant quotas: the rule for whether a tenant may create one more sandbox, and the per-tenant create
//! rate limiter.
//!
//! Owns the quotas an admin set (`PUT /v1/tenants/{name}`: in memory for the create path, in the store's
//! `tenant_quotas` table across restarts) and one token bucket per tenant with a rate. It does not count
//! sandboxes: the [`crate::engine::Engine`] knows what each tenant holds and asks [`Quotas::admit`] under the
//! same lock that records a new sandbox, so two creates racing for the last slot cannot both win.
//!
//! A refusal is a [`QuotaError`]: `quota_exceeded` (a count or a size; the message names the limit, the
//! usage and the ask) or `rate_limited` (with the seconds until a create would pass).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use sandpit_types::tenants::{DEFAULT_DISK_MB, TenantQuotas, TenantUsage};

use crate::store::{Store, StoreError};

/// What a create asks for, counted the way the quotas count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ask {
    pub memory_mb: Option<u64>,
    pub disk_mb: Option<u64>,
}

impl Ask {
    /// The disk a sandbox counts against a quota: its `disk_mb`, or the default writable layer.
    pub fn disk(self) -> u64 {
        self.disk_mb.unwrap_or(DEFAULT_DISK_MB)
    }
}

/// The state of a tenant's create rate limit, for the `X-RateLimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateState {
    /// Creates a full bucket allows at once.
    pub limit: u64,
    /// Creates allowed right now.
    pub remaining: u64,
    /// Seconds until the bucket is full again.
    pub reset_secs: u64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QuotaError {
    /// A count or a size would go over a quota.
    #[error("{0}")]
    Exceeded(String),
    /// The create rate is used up.
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after_secs: u64,
        state: RateState,
    },
    /// The request cannot be counted against a quota (no `memory_mb` under a memory quota).
    #[error("{0}")]
    Invalid(String),
}

/// One tenant's create rate: a bucket of `capacity` tokens refilled at `rate` per second.
#[derive(Debug, Clone)]
struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: f64, now: Instant) -> Self {
        Self {
            rate,
            tokens: Self::capacity_of(rate),
            at: now,
        }
    }

    /// A burst of up to `floor(rate)` creates (at least one), as a one-second window allows.
    fn capacity_of(rate: f64) -> f64 {
        rate.floor().max(1.0)
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(Self::capacity_of(self.rate));
        self.at = now;
    }

    fn state(&self) -> RateState {
        let cap = Self::capacity_of(self.rate);
        RateState {
            limit: cap as u64,
            remaining: self.tokens.floor() as u64,
            reset_secs: ((cap - self.tokens) / self.rate).ceil() as u64,
        }
    }

    /// Takes a token, or says how many whole seconds until one is there (at least 1).
    fn take(&mut self, now: Instant) -> Result<RateState, u64> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(self.state());
        }
        Err((((1.0 - self.tokens) / self.rate).ceil() as u64).max(1))
    }
}

#[derive(Debug, Default)]
struct Entry {
    quotas: TenantQuotas,
    bucket: Option<Bucket>,
}

/// Every tenant's quotas and create-rate bucket.
#[derive(Debug)]
pub struct Quotas {
    store: Store,
    by_tenant: Mutex<HashMap<String, Entry>>,
}

impl Quotas {
    /// What the store holds (rows it cannot read are skipped with a warning: that tenant is unlimited
    /// until an admin sets its quotas again, which the warning says).
    pub async fn load(store: Store) -> Result<Self, StoreError> {
        let mut by_tenant = HashMap::new();
        let now = Instant::now();
        for (tenant, json) in store.quotas_all().await? {
            match serde_json::from_str::<TenantQuotas>(&json) {
                Ok(q) => {
                    by_tenant.insert(tenant, Entry::with(q, now));
                }
                Err(e) => tracing::warn!(
                    tenant = %tenant, error = %e,
                    "cannot read this tenant's stored quotas: it is unlimited until they are set again"
                ),
            }
        }
        Ok(Self {
            store,
            by_tenant: Mutex::new(by_tenant),
        })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.by_tenant
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A tenant's quotas (none set: all unlimited).
    pub fn get(&self, tenant: &str) -> TenantQuotas {
        self.table()
            .get(tenant)
            .map(|e| e.quotas.clone())
            .unwrap_or_default()
    }

    /// The tenants that have quotas.
    pub fn tenants(&self) -> Vec<String> {
        self.table().keys().cloned().collect()
    }

    /// Replaces a tenant's quotas (stored first, so that what answers is what survives a restart). A new
    /// rate starts with a full bucket.
    pub async fn set(&self, tenant: &str, quotas: TenantQuotas) -> Result<(), StoreError> {
        let json = (!quotas.is_unlimited())
            .then(|| serde_json::to_string(&quotas).expect("quotas serialize"));
        self.store.quotas_put(tenant, json).await?;
        let mut table = self.table();
        if quotas.is_unlimited() {
            table.remove(tenant);
        } else {
            table.insert(tenant.to_owned(), Entry::with(quotas, Instant::now()));
        }
        Ok(())
    }

    /// Whether `tenant`, holding `usage`, may create one more sandbox asking for `ask`; takes a create
    /// token when the tenant has a rate. Sizes are checked first, so a refused create costs no token.
    pub fn admit(
        &self,
        tenant: &str,
        usage: &TenantUsage,
        ask: Ask,
    ) -> Result<Option<RateState>, QuotaError> {
        let mut table = self.table();
        let Some(entry) = table.get_mut(tenant) else {
            return Ok(None);
        };
        check_sizes(tenant, &entry.quotas, usage, ask)?;
        let Some(bucket) = entry.bucket.as_mut() else {
            return Ok(None);
        };
        match bucket.take(Instant::now()) {
            Ok(state) => Ok(Some(state)),
            Err(retry_after_secs) => Err(QuotaError::RateLimited {
                message: format!(
                    "tenant {tenant:?} is over its max_creates_per_second quota ({}): retry in \
                     {retry_after_secs} s",
                    bucket.rate
                ),
                retry_after_secs,
                state: bucket.state(),
            }),
        }
    }

    /// The tenant's create rate state now, if it has a rate (for the headers of a create's answer).
    pub fn rate_state(&self, tenant: &str) -> Option<RateState> {
        let mut table = self.table();
        let bucket = table.get_mut(tenant)?.bucket.as_mut()?;
        bucket.refill(Instant::now());
        Some(bucket.state())
    }
}

impl Entry {
    fn with(quotas: TenantQuotas, now: Instant) -> Self {
        Self {
            bucket: quotas.max_creates_per_second.map(|r| Bucket::new(r, now)),
            quotas,
        }
    }
}

/// The count and size quotas, in one place.
fn check_sizes(
    tenant: &str,
    q: &TenantQuotas,
    usage: &TenantUsage,
    ask: Ask,
) -> Result<(), QuotaError> {
    if let Some(max) = q.max_sandboxes {
        if usage.sandboxes + 1 > max {
            return Err(QuotaError::Exceeded(format!(
                "tenant {tenant:?} is at its max_sandboxes quota ({max}): it has {} sandboxes; \
                 delete one first",
                usage.sandboxes
            )));
        }
    }
    if let Some(max) = q.max_memory_mb {
        let Some(mem) = ask.memory_mb else {
            return Err(QuotaError::Invalid(format!(
                "tenant {tenant:?} has a max_memory_mb quota ({max} MiB): a create must name its \
                 memory_mb"
            )));
        };
        if usage.memory_mb.saturating_add(mem) > max {
            return Err(QuotaError::Exceeded(format!(
                "tenant {tenant:?} would go over its max_memory_mb quota ({max} MiB): its sandboxes \
                 hold {} MiB and this one asks for {mem} MiB",
                usage.memory_mb
            )));
        }
    }
    if let Some(max) = q.max_disk_mb {
        let disk = ask.disk();
        if usage.disk_mb.saturating_add(disk) > max {
            return Err(QuotaError::Exceeded(format!(
                "tenant {tenant:?} would go over its max_disk_mb quota ({max} MiB): its sandboxes \
                 hold {} MiB and this one asks for {disk} MiB{}",
                usage.disk_mb,
                if ask.disk_mb.is_none() {
                    " (the default writable layer; set disk_mb for less)"
                } else {
                    ""
                }
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bucket_allows_its_burst_then_one_per_interval() {
        let t0 = Instant::now();
        let mut b = Bucket::new(2.0, t0);
        assert_eq!(b.take(t0).map(|s| s.remaining), Ok(1));
        assert_eq!(b.take(t0).map(|s| s.remaining), Ok(0));
        assert_eq!(b.take(t0), Err(1));
        // Half a second later: one token (2 per second).
        assert!(b.take(t0 + Duration::from_millis(500)).is_ok());
        assert_eq!(b.state().limit, 2);
        assert_eq!(b.state().reset_secs, 1);
    }

    #[test]
    fn a_fractional_rate_waits_whole_seconds() {
        let t0 = Instant::now();
        let mut b = Bucket::new(0.25, t0);
        assert!(b.take(t0).is_ok());
        assert_eq!(b.take(t0), Err(4));
        assert_eq!(b.take(t0 + Duration::from_secs(3)), Err(1));
        assert!(b.take(t0 + Duration::from_secs(4)).is_ok());
    }

    #[test]
    fn sizes_name_the_limit_and_count_the_default_disk() {
        let q = TenantQuotas {
            max_sandboxes: Some(2),
            max_memory_mb: Some(1024),
            max_disk_mb: Some(2048),
            ..TenantQuotas::default()
        };
        let ask = Ask {
            memory_mb: Some(512),
            disk_mb: None,
        };
        let mut u = TenantUsage::default();
        assert_eq!(check_sizes("t", &q, &u, ask), Ok(()));
        u.sandboxes = 2;
        let e = check_sizes("t", &q, &u, ask).unwrap_err();
        assert!(e.to_string().contains("max_sandboxes quota (2)"), "{e}");
        u = TenantUsage {
            sandboxes: 1,
            memory_mb: 768,
            disk_mb: 0,
        };
        let e = check_sizes("t", &q, &u, ask).unwrap_err();
        assert!(
            e.to_string().contains("max_memory_mb quota (1024 MiB)"),
            "{e}"
        );
        u = TenantUsage {
            sandboxes: 1,
            memory_mb: 0,
            disk_mb: 1536,
        };
        let e = check_sizes("t", &q, &u, ask).unwrap_err();
        assert!(e.to_string().contains("default writable layer"), "{e}");
        let no_mem = Ask {
            memory_mb: None,
            disk_mb: Some(1),
        };
        assert!(matches!(
            check_sizes("t", &q, &TenantUsage::default(), no_mem),
            Err(QuotaError::Invalid(_))
        ));
    }
}
