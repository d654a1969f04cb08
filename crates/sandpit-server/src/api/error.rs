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
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    Unavailable(String),
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
            Self::InvalidArgument(_) | Self::MethodNotAllowed(_) => ErrorCode::InvalidArgument,
            Self::Unauthenticated => ErrorCode::Unauthenticated,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::Forbidden(_) => ErrorCode::PermissionDenied,
            Self::Conflict(_) => ErrorCode::Conflict,
            Self::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            Self::ResourceExhausted(_) => ErrorCode::ResourceExhausted,
            Self::Unavailable(_) => ErrorCode::Unavailable,
            Self::InsufficientStorage(_) => ErrorCode::InsufficientStorage,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }

    pub fn status(&self) -> StatusCode {
        if let Self::MethodNotAllowed(_) = self {
            return StatusCode::from_u16(sandpit_types::error::METHOD_NOT_ALLOWED)
                .expect("a valid status");
        }
        StatusCode::from_u16(self.code().http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

/// `Retry-After` on every `503 unavailable`, in seconds.
pub const RETRY_AFTER_SECS: &str = "2";

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
        if let Self::Unavailable(_) = self {
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECS),
            );
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
            EngineError::Store(s) if s.is_disk_full() => Self::InsufficientStorage(format!(
                "the daemon's state directory is full (No space left on device): {s}"
            )),
            EngineError::Store(s) => Self::Internal(s.to_string()),
            EngineError::Internal(m) => Self::Internal(m),
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
            TemplateApiError::Backend(b) => b.into(),
            TemplateApiError::Internal(m) => Self::Internal(m),
        }
    }
}
