//! The daemon's one error type and the one place it becomes an HTTP response.
//!
//! Every handler, extractor and middleware returns [`ApiError`]; [`IntoResponse`] turns it into the
//! `sandpit_types::ErrorBody` JSON with the status its code prescribes. Keeping the mapping in one place is
//! what guarantees that bad input is always a 4xx with a readable message, never a 500 or a bare text body.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sandpit_types::{ErrorBody, ErrorCode};

use crate::backend::BackendError;
use crate::engine::EngineError;
use crate::templates::TemplateApiError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("missing or wrong API key: send `Authorization: Bearer <key>`")]
    Unauthenticated,
    /// A valid key whose scopes do not allow this (403, code `permission_denied`).
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// A known path with a method it does not have (405, code `invalid_argument`).
    #[error("{0}")]
    MethodNotAllowed(String),
    /// A switched upload on a connection that cannot be switched (426, code `invalid_argument`:
    /// [`sandpit_types::error::UPGRADE_REQUIRED`]).
    #[error("{0}")]
    UpgradeRequired(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    Unavailable(String),
    /// A tenant quota has no room for this (429 `quota_exceeded`, `Retry-After`).
    #[error("{0}")]
    QuotaExceeded(String),
    /// A tenant's create rate is used up (429 `rate_limited`, `Retry-After`, `X-RateLimit-*`).
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after_secs: u64,
        state: crate::quotas::RateState,
    },
    /// The daemon's disk is full (507): not the caller's mistake, not a bug either.
    #[error("{0}")]
    InsufficientStorage(String),
    /// A bug or a host failure; the message is logged in full and shown to the client.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidArgument(_) | Self::MethodNotAllowed(_) | Self::UpgradeRequired(_) => {
                ErrorCode::InvalidArgument
            }
            Self::Unauthenticated => ErrorCode::Unauthenticated,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::Forbidden(_) => ErrorCode::PermissionDenied,
            Self::Conflict(_) => ErrorCode::Conflict,
            Self::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            Self::ResourceExhausted(_) => ErrorCode::ResourceExhausted,
            Self::Unavailable(_) => ErrorCode::Unavailable,
            Self::InsufficientStorage(_) => ErrorCode::InsufficientStorage,
            Self::QuotaExceeded(_) => ErrorCode::QuotaExceeded,
            Self::RateLimited { .. } => ErrorCode::RateLimited,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::MethodNotAllowed(_) => {
                return StatusCode::from_u16(sandpit_types::error::METHOD_NOT_ALLOWED)
                    .expect("a valid status");
            }
            Self::UpgradeRequired(_) => {
                return StatusCode::from_u16(sandpit_types::error::UPGRADE_REQUIRED)
                    .expect("a valid status");
            }
            _ => {}
        }
        StatusCode::from_u16(self.code().http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

/// `Retry-After` on every `503 unavailable`, in seconds.
pub const RETRY_AFTER_SECS: &str = "2";

/// `Retry-After` on `429 quota_exceeded`, in seconds: room appears when one of the tenant's sandboxes
/// goes, which the daemon cannot foresee; this is how often asking again is reasonable.
pub const QUOTA_RETRY_AFTER_SECS: &str = "5";

/// The `X-RateLimit-*` headers of a tenant's create rate.
pub fn rate_limit_headers(headers: &mut axum::http::HeaderMap, state: crate::quotas::RateState) {
    for (name, v) in [
        ("x-ratelimit-limit", state.limit),
        ("x-ratelimit-remaining", state.remaining),
        ("x-ratelimit-reset", state.reset_secs),
    ] {
        headers.insert(name, HeaderValue::from(v));
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(code = %self.code(), error = %self, "request failed");
        }
        let body = ErrorBody::new(self.code(), self.to_string());
        let mut resp = (status, Json(body)).into_response();
        if let Self::Unauthenticated = self {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        // Every 503 is worth retrying (an agent not answering yet, a busy host, a template still being
        // built): say when.
        match &self {
            Self::Unavailable(_) => {
                resp.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_static(RETRY_AFTER_SECS),
                );
            }
            Self::QuotaExceeded(_) => {
                resp.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_static(QUOTA_RETRY_AFTER_SECS),
                );
            }
            Self::RateLimited {
                retry_after_secs,
                state,
                ..
            } => {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
                rate_limit_headers(resp.headers_mut(), *state);
            }
            _ => {}
        }
        resp
    }
}

impl From<BackendError> for ApiError {
    fn from(b: BackendError) -> Self {
        match b {
            BackendError::InvalidSpec(m) => Self::InvalidArgument(m),
            BackendError::NotFound(m) => Self::NotFound(m),
            BackendError::Conflict(m) => Self::Conflict(m),
            BackendError::Exhausted(m) => Self::ResourceExhausted(m),
            BackendError::Unavailable(m) => Self::Unavailable(m),
            BackendError::NoSpace(m) => Self::InsufficientStorage(m),
            BackendError::Io { ref cause, .. } if crate::backend::is_no_space(cause) => {
                Self::InsufficientStorage(b.to_string())
            }
            other @ (BackendError::Io { .. } | BackendError::Failed(_)) => {
                Self::Internal(other.to_string())
            }
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::NotFound(_) => Self::NotFound(e.to_string()),
            EngineError::Conflict(m) => Self::Conflict(m),
            EngineError::InvalidArgument(m) => Self::InvalidArgument(m),
            EngineError::Unavailable(m) => Self::Unavailable(m),
            EngineError::Backend(b) => b.into(),
            EngineError::Store(s) => s.into(),
            EngineError::Quota(q) => q.into(),
            EngineError::Internal(m) => Self::Internal(m),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(s: crate::store::StoreError) -> Self {
        if s.is_disk_full() {
            return Self::InsufficientStorage(format!(
                "the daemon's state directory is full (No space left on device): {s}"
            ));
        }
        Self::Internal(s.to_string())
    }
}

impl From<crate::quotas::QuotaError> for ApiError {
    fn from(q: crate::quotas::QuotaError) -> Self {
        use crate::quotas::QuotaError;
        match q {
            QuotaError::Exceeded(m) => Self::QuotaExceeded(m),
            QuotaError::RateLimited {
                message,
                retry_after_secs,
                state,
            } => Self::RateLimited {
                message,
                retry_after_secs,
                state,
            },
            QuotaError::Invalid(m) => Self::InvalidArgument(m),
        }
    }
}

impl From<crate::volumes::VolumeApiError> for ApiError {
    fn from(e: crate::volumes::VolumeApiError) -> Self {
        use crate::volumes::VolumeApiError as V;
        match e {
            // 409, not 400: the request is fine, the daemon's configuration cannot serve it.
            V::Unsupported(_) => Self::Conflict(e.to_string()),
            V::InvalidArgument(m) => Self::InvalidArgument(m),
            V::NotFound(m) => Self::NotFound(m),
            V::Conflict(m) => Self::Conflict(m),
            V::Backend(b) => b.into(),
            V::Internal(m) => Self::Internal(m),
        }
    }
}

impl From<TemplateApiError> for ApiError {
    fn from(e: TemplateApiError) -> Self {
        match e {
            // 409, not 400: the request is fine, the daemon's configuration cannot serve it.
            TemplateApiError::Unsupported(_) => Self::Conflict(e.to_string()),
            TemplateApiError::InvalidArgument(m) => Self::InvalidArgument(m),
            TemplateApiError::NotFound(m) => Self::NotFound(m),
            TemplateApiError::Conflict(m) => Self::Conflict(m),
            TemplateApiError::Forbidden(m) => Self::Forbidden(m),
            TemplateApiError::Backend(b) => b.into(),
            TemplateApiError::Internal(m) => Self::Internal(m),
        }
    }
}
