//! `GET /v1/audit`: read the audit log (admin scope; the check is in `api::check_scope`). What is recorded
//! is `crate::audit`'s rule.

use axum::Json;
use axum::extract::State;
use sandpit_types::ErrorBody;
use sandpit_types::audit::{AUDIT_DEFAULT_LIMIT, AUDIT_MAX_LIMIT, AuditList};

use super::AppState;
use super::error::ApiError;
use super::extract::ApiQuery;
use crate::store::AuditQuery;

/// A time as RFC 3339 or milliseconds since the epoch.
pub(crate) fn parse_since(v: &str) -> Result<i64, ApiError> {
    if let Ok(ms) = v.parse::<i64>() {
        return Ok(ms);
    }
    crate::time::parse_rfc3339_ms(v).ok_or_else(|| {
        ApiError::InvalidArgument(format!(
            "since={v:?} is neither an RFC 3339 time (2026-12-04T10:00:00Z) nor milliseconds since the epoch"
        ))
    })
}

/// A page size: a number from 1 to `max` (the audit log's and the event and delivery lists' rule).
pub(crate) fn parse_limit(v: &str, max: usize) -> Result<usize, ApiError> {
    v.parse::<usize>()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| {
            ApiError::InvalidArgument(format!("limit={v:?} must be a number from 1 to {max}"))
        })
}

/// Recorded calls, oldest first: sandbox lifecycle, exec and process starts (with their command line),
/// signals, file writes, keys, quotas and templates; who made each (a key id, never a secret), on which
/// sandbox, when, and its status.
#[utoipa::path(get, path = "/v1/audit", tag = "audit",
    params(
        ("since" = Option<String>, Query, description = "RFC 3339 time or ms since the epoch: rows at or after it"),
        ("after" = Option<u64>, Query, description = "Rows with a larger id (the `next_after` of the previous page)"),
        ("tenant" = Option<String>, Query, description = "Only this tenant's keys' calls"),
        ("sandbox" = Option<String>, Query, description = "Only calls on this sandbox"),
        ("limit" = Option<usize>, Query, description = "At most this many (default 100, at most 1000)")),
    responses(
        (status = 200, description = "The rows, oldest first", body = AuditList),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 403, description = "The key is not an `admin` key", body = ErrorBody)))]
pub async fn read_audit(
    State(s): State<AppState>,
    ApiQuery(query): ApiQuery<Vec<(String, String)>>,
) -> Result<Json<AuditList>, ApiError> {
    let mut q = AuditQuery {
        limit: AUDIT_DEFAULT_LIMIT,
        ..AuditQuery::default()
    };
    for (k, v) in query {
        match k.as_str() {
            "since" => q.since_ms = Some(parse_since(&v)?),
            "after" => {
                q.after_id = Some(v.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                    ApiError::InvalidArgument(format!("after={v:?} is not an entry id"))
                })?);
            }
            "tenant" => q.tenant = Some(v),
            "sandbox" => q.sandbox = Some(v),
            "limit" => q.limit = parse_limit(&v, AUDIT_MAX_LIMIT)?,
            other => {
                return Err(ApiError::InvalidArgument(format!(
                    "unknown query parameter {other:?}: use since, after, tenant, sandbox or limit"
                )));
            }
        }
    }
    Ok(Json(s.audit.read(q).await?))
}
