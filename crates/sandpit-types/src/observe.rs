//! What one can watch a sandbox by: its lifecycle events (`GET /v1/events`, `GET /v1/sandboxes/{id}/events`
//! and their SSE streams), its resource samples (`GET /v1/sandboxes/{id}/metrics` and its stream), and the
//! webhooks that deliver events elsewhere (`/v1/webhooks`).

use serde::{Deserialize, Serialize};

/// The kinds of lifecycle event, in the order of [`EventType::ALL`]; their wire names are `sandbox.*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    Created,
    Paused,
    Resumed,
    TimeoutExtended,
    TimedOut,
    Killed,
    Failed,
    Unhealthy,
    SnapshotCreated,
    Forked,
}

impl EventType {
    pub const ALL: [Self; 10] = [
        Self::Created,
        Self::Paused,
        Self::Resumed,
        Self::TimeoutExtended,
        Self::TimedOut,
        Self::Killed,
        Self::Failed,
        Self::Unhealthy,
        Self::SnapshotCreated,
        Self::Forked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "sandbox.created",
            Self::Paused => "sandbox.paused",
            Self::Resumed => "sandbox.resumed",
            Self::TimeoutExtended => "sandbox.timeout_extended",
            Self::TimedOut => "sandbox.timed_out",
            Self::Killed => "sandbox.killed",
            Self::Failed => "sandbox.failed",
            Self::Unhealthy => "sandbox.unhealthy",
            Self::SnapshotCreated => "sandbox.snapshot_created",
            Self::Forked => "sandbox.forked",
        }
    }
}

impl std::str::FromStr for EventType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown event type {s:?}: expected one of {}",
                    Self::ALL.map(Self::as_str).join(", ")
                )
            })
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One lifecycle event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LifecycleEvent {
    /// Increasing across the daemon; `?after=` (or `Last-Event-ID`) reads on from here.
    pub id: u64,
    /// `sandbox.created`, `sandbox.paused`, `sandbox.resumed`, `sandbox.timeout_extended`,
    /// `sandbox.timed_out`, `sandbox.killed`, `sandbox.failed`, `sandbox.unhealthy`,
    /// `sandbox.snapshot_created` or `sandbox.forked`; clients ignore types they do not know.
    #[serde(rename = "type")]
    pub kind: String,
    pub sandbox_id: String,
    /// The sandbox's tenant.
    pub tenant: String,
    /// RFC 3339, milliseconds.
    pub at: String,
    /// What happened, by type: `created` `{template, pooled}`; `paused` `{reason: api|timeout}`;
    /// `resumed` `{reason: api|auto}`; `timeout_extended` `{timeout_s, expires_at}`; `timed_out`
    /// `{action: pause|kill}`; `killed` `{reason: api|timeout}`; `failed` and `unhealthy` `{error}`;
    /// `snapshot_created` `{template, frozen_ms}`; `forked` `{template, sandboxes}`. Fields may be added.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub data: serde_json::Value,
}

/// Body of `GET /v1/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventList {
    /// Oldest first.
    pub events: Vec<LifecycleEvent>,
    /// When more events match than `limit`: the `after` that reads the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<u64>,
}

/// Default and largest `limit` of `GET /v1/events`.
pub const EVENTS_DEFAULT_LIMIT: usize = 100;
pub const EVENTS_MAX_LIMIT: usize = 1000;

/// One resource sample of a sandbox (`GET /v1/sandboxes/{id}/metrics`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MetricSample {
    /// RFC 3339, milliseconds.
    pub timestamp: String,
    /// CPU used since the previous sample, in percent of ONE cpu: 100 is one cpu fully busy; at most
    /// 100 × `cpu_count`.
    pub cpu_used_pct: f64,
    /// The sandbox's cpu limit (may be fractional), or the host's cpus when it has none.
    pub cpu_count: f64,
    /// Memory in use, bytes (without the page cache the kernel can drop at once).
    pub mem_used: u64,
    /// The memory limit, bytes; 0 when none is known.
    pub mem_limit: u64,
    /// Bytes written to the sandbox's writable layer.
    pub disk_used: u64,
    /// Its size cap, bytes; 0 when none is known.
    pub disk_limit: u64,
    /// Processes (and threads) in the sandbox, its agent included.
    pub pids: u64,
}

/// Shortest and longest webhook secret.
pub const WEBHOOK_SECRET_MIN: usize = 8;
pub const WEBHOOK_SECRET_MAX: usize = 256;
/// Most webhooks on one daemon.
pub const MAX_WEBHOOKS: usize = 100;

/// Body of `POST /v1/webhooks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookRequest {
    /// `http://` or `https://` URL that receives a `POST` per event.
    pub url: String,
    /// Event types to deliver, or `["*"]` for all.
    pub events: Vec<String>,
    /// Signs every delivery (`Sandpit-Signature`); 8-256 characters; never returned.
    pub secret: String,
    #[serde(default)]
    pub description: Option<String>,
}

impl CreateWebhookRequest {
    /// Checks everything but reachability; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("url", self.url.as_str()),
            ("secret", self.secret.as_str()),
            (
                "description",
                self.description.as_deref().unwrap_or_default(),
            ),
        ] {
            if v.contains('\0') {
                return Err(format!("{name}: contains a NUL character"));
            }
        }
        let url = self.url.as_str();
        if url.chars().any(char::is_control) {
            return Err(format!("url {url:?}: contains a control character"));
        }
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"))
            .ok_or_else(|| format!("url {url:?}: must start with http:// or https://"))?;
        if rest.is_empty()
            || rest.starts_with('/')
            || url.len() > 2048
            || url.contains(char::is_whitespace)
        {
            return Err(format!(
                "url {url:?}: not a URL with a host (at most 2048 characters, no spaces)"
            ));
        }
        if self.events.is_empty() {
            return Err("events: name at least one event type, or [\"*\"] for all".into());
        }
        for e in &self.events {
            if e != "*" {
                e.parse::<EventType>().map_err(|m| format!("events: {m}"))?;
            }
        }
        let n = self.secret.chars().count();
        if !(WEBHOOK_SECRET_MIN..=WEBHOOK_SECRET_MAX).contains(&n) {
            return Err(format!(
                "secret: {n} characters; use {WEBHOOK_SECRET_MIN} to {WEBHOOK_SECRET_MAX}"
            ));
        }
        if self.description.as_ref().is_some_and(|d| d.len() > 1024) {
            return Err("description: at most 1024 bytes".into());
        }
        Ok(())
    }
}

/// A webhook (its secret is never shown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Webhook {
    /// `wh_…`.
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// RFC 3339.
    pub created_at: String,
}

/// Body of `GET /v1/webhooks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookList {
    pub webhooks: Vec<Webhook>,
}

/// One attempt at delivering one event to one webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WebhookDelivery {
    /// `whd_…`: the delivery (the same for every attempt at one event; sent as `Sandpit-Delivery`).
    pub id: String,
    pub event_id: u64,
    pub event_type: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// When the attempt was made, RFC 3339.
    pub at: String,
    /// `delivered` (a 2xx answer), `retrying` (failed; another attempt follows) or `failed` (failed; no
    /// more attempts).
    pub outcome: String,
    /// The receiver's HTTP status, when it answered.
    #[serde(default)]
    pub status_code: Option<u16>,
    /// Why the attempt failed, when it did.
    #[serde(default)]
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// Body of `GET /v1/webhooks/{id}/deliveries`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeliveryList {
    /// Newest first.
    pub deliveries: Vec<WebhookDelivery>,
}

/// Header names of a delivery.
pub const HEADER_EVENT: &str = "sandpit-event";
pub const HEADER_DELIVERY: &str = "sandpit-delivery";
pub const HEADER_TIMESTAMP: &str = "sandpit-timestamp";
pub const HEADER_SIGNATURE: &str = "sandpit-signature";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_type_reads_back_from_its_name() {
        for t in EventType::ALL {
            assert_eq!(t.as_str().parse::<EventType>(), Ok(t));
        }
        assert!("sandbox.exploded".parse::<EventType>().is_err());
    }

    #[test]
    fn a_webhook_request_names_what_is_wrong() {
        let ok = CreateWebhookRequest {
            url: "http://127.0.0.1:9/hook".into(),
            events: vec!["*".into()],
            secret: "s3cret-s3cret".into(),
            description: None,
        };
        assert_eq!(ok.validate(), Ok(()));
        let bad = |f: &dyn Fn(&mut CreateWebhookRequest)| {
            let mut r = ok.clone();
            f(&mut r);
            r.validate().unwrap_err()
        };
        assert!(bad(&|r| r.url = "ftp://x".into()).starts_with("url"));
        assert!(bad(&|r| r.url = "http://".into()).starts_with("url"));
        assert!(bad(&|r| r.events.clear()).starts_with("events"));
        assert!(bad(&|r| r.events = vec!["sandbox.nope".into()]).contains("unknown event type"));
        assert!(bad(&|r| r.secret = "short".into()).starts_with("secret"));
        assert!(bad(&|r| r.description = Some("a\0b".into())).starts_with("description"));
        assert!(bad(&|r| r.url = "http://h/\u{7}".into()).starts_with("url"));
    }
}
