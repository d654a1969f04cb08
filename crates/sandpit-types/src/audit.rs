//! The audit log (`GET /v1/audit`, admin keys only): who did what to which sandbox, when, and how it
//! ended. Never a secret: a key is named by its id, a sandbox access token as `access-token:<sandbox>`.

use serde::{Deserialize, Serialize};

/// One recorded call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    /// Increasing; `?after=` this id reads on from here.
    pub id: u64,
    /// RFC 3339, milliseconds.
    pub at: String,
    /// The key that made the call: its id (`k_…`), `file` for the key file's, `access-token:<sandbox id>`
    /// for a sandbox's access token.
    pub key_id: String,
    /// The tenant of that key.
    pub tenant: String,
    /// What was done: `sandbox.create`, `sandbox.delete`, `sandbox.pause`, `sandbox.resume`,
    /// `sandbox.connect`, `sandbox.timeout`, `sandbox.access_token`, `sandbox.network`, `port.expose`,
    /// `port.close`, `process.exec`, `process.start`, `process.signal`, `process.kill`, `process.stdin`,
    /// `file.write`, `file.extract`, `file.sign` (a signed URL made), `file.mkdir`, `file.move`, `file.remove`, `file.chmod`,
    /// `file.chown`, `key.create`, `key.revoke`, `tenant.quotas`, `template.create`, `template.delete`,
    /// or `audit.dropped` (entries the daemon could not keep: `detail` says how many).
    pub action: String,
    /// The sandbox it was done to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// What it was done with: the command line of an exec or process start, a file's path, a key's id,
    /// name and scopes, a tenant's new quotas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The HTTP status the call was answered with.
    pub status: u16,
    /// `ok` (a 1xx–3xx answer), `denied` (401, 403) or `failed` (any other error).
    pub outcome: String,
}

/// Body of `GET /v1/audit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditList {
    /// Oldest first.
    pub entries: Vec<AuditEntry>,
    /// When more entries match than `limit`: the `after` that reads the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<u64>,
}

/// What an HTTP status means for [`AuditEntry::outcome`].
pub fn outcome_of(status: u16) -> &'static str {
    match status {
        401 | 403 => "denied",
        s if s >= 400 => "failed",
        _ => "ok",
    }
}

/// Default and largest `limit` of `GET /v1/audit`.
pub const AUDIT_DEFAULT_LIMIT: usize = 100;
pub const AUDIT_MAX_LIMIT: usize = 1000;
