//! The one error body every sandpit HTTP endpoint returns, and its stable machine-readable codes.

use serde::{Deserialize, Serialize};

/// A stable, machine-readable error class. SDKs map each to an exception or error variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request was malformed: bad JSON, an unknown field, a value out of range.
    InvalidArgument,
    /// Missing or wrong API key.
    Unauthenticated,
    /// No such sandbox, process or template.
    NotFound,
    /// The request conflicts with the current state (an impossible transition, an id reused differently).
    Conflict,
    /// A deadline passed before the operation finished (for example a long-poll wait).
    Timeout,
    /// The request body is larger than the server accepts.
    PayloadTooLarge,
    /// A resource limit was hit (too many processes or sandboxes).
    ResourceExhausted,
    /// The component that should serve this is not reachable (a sandbox's agent died, for instance).
    Unavailable,
    /// The host's disk (the daemon's state directory) is full: nothing was half-made; retry when space
    /// is freed. Added in protocol 1 without a version bump: clients treat unknown codes as errors.
    InsufficientStorage,
    /// A bug or an unexpected host failure. Never used for bad input.
    Internal,
    /// A preview request reached the sandbox but nothing answered on that port (nothing listening, or the
    /// server broke the connection). Added in protocol 1 without a version bump.
    BadGateway,
    /// A code this client does not know yet (newer server).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The HTTP status every sandpit server uses for this code.
    pub fn http_status(self) -> u16 {
        match self {
            Self::InvalidArgument => 400,
            Self::Unauthenticated => 401,
            Self::NotFound => 404,
            Self::Timeout => 408,
            Self::Conflict => 409,
            Self::PayloadTooLarge => 413,
            Self::ResourceExhausted => 429,
            Self::Unavailable => 503,
            Self::InsufficientStorage => 507,
            Self::BadGateway => 502,
            Self::Internal | Self::Unknown => 500,
        }
    }

    /// The code's wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidArgument => "invalid_argument",
            Self::Unauthenticated => "unauthenticated",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::Timeout => "timeout",
            Self::PayloadTooLarge => "payload_too_large",
            Self::ResourceExhausted => "resource_exhausted",
            Self::Unavailable => "unavailable",
            Self::InsufficientStorage => "insufficient_storage",
            Self::Internal => "internal",
            Self::BadGateway => "bad_gateway",
            Self::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `{"error": {"code": "...", "message": "..."}}`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// The inside of an [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    pub code: ErrorCode,
    /// A sentence for a person: what was wrong and, where possible, what to do.
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code,
                message: message.into(),
            },
        }
    }
}
