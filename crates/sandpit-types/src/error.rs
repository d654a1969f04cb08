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
    /// A disk is full: the host's (the daemon's state directory) or a sandbox's writable layer (its
    /// `disk_mb` cap). Nothing was half-made; retry when space is freed. Added in protocol 1 without a
    /// version bump, as were the file codes below: clients treat unknown codes as errors.
    InsufficientStorage,
    /// The caller's user may not do this (file permissions, a read-only file system).
    PermissionDenied,
    /// The path (or a file the call would create) exists already.
    AlreadyExists,
    /// The directory is not empty (remove it with `recursive`).
    NotEmpty,
    /// A file operation met a directory where it needs something else.
    IsADirectory,
    /// A path goes through something that is not a directory, or names a non-directory where a
    /// directory is needed.
    NotADirectory,
    /// A `Range` that starts past the end of the file.
    RangeNotSatisfiable,
    /// A bug or an unexpected host failure. Never used for bad input.
    Internal,
    /// A preview request reached the sandbox but nothing answered on that port (nothing listening, or the
    /// server broke the connection). Added in protocol 1 without a version bump.
    BadGateway,
    /// A tenant's quota (`max_sandboxes`, `max_memory_mb`, `max_disk_mb`) does not leave room for this
    /// create: the message names the limit. 429 with `Retry-After`. Added in protocol 1 without a bump.
    QuotaExceeded,
    /// The tenant's `max_creates_per_second` is used up: retry after `Retry-After` seconds. 429.
    RateLimited,
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
            Self::PermissionDenied => 403,
            Self::Timeout => 408,
            Self::Conflict
            | Self::AlreadyExists
            | Self::NotEmpty
            | Self::IsADirectory
            | Self::NotADirectory => 409,
            Self::RangeNotSatisfiable => 416,
            Self::PayloadTooLarge => 413,
            Self::ResourceExhausted | Self::QuotaExceeded | Self::RateLimited => 429,
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
            Self::PermissionDenied => "permission_denied",
            Self::AlreadyExists => "already_exists",
            Self::NotEmpty => "not_empty",
            Self::IsADirectory => "is_a_directory",
            Self::NotADirectory => "not_a_directory",
            Self::RangeNotSatisfiable => "range_not_satisfiable",
            Self::Internal => "internal",
            Self::BadGateway => "bad_gateway",
            Self::QuotaExceeded => "quota_exceeded",
            Self::RateLimited => "rate_limited",
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

    /// The answer of every sandpit server (daemon and agent) to a known path called with a method it
    /// does not have: HTTP [`METHOD_NOT_ALLOWED`] with code `invalid_argument`, naming both.
    pub fn method_not_allowed(method: &str, path: &str) -> (u16, Self) {
        (
            METHOD_NOT_ALLOWED,
            Self::new(
                ErrorCode::InvalidArgument,
                format!("method {method} is not allowed on {path}"),
            ),
        )
    }
}

/// The status of [`ErrorBody::method_not_allowed`]: the one status that is not [`ErrorCode::http_status`]
/// of its code (a 405 tells HTTP tooling what a 400 would not).
pub const METHOD_NOT_ALLOWED: u16 = 405;

/// The status of a switched upload ([`crate::files::SPLICE_PROTOCOL`]) the daemon cannot switch (a TLS
/// or HTTP/2 connection, a proxy that dropped the `Upgrade` header, an agent without the fast path),
/// with code `invalid_argument`: the client sends the content the ordinary way instead. The other status
/// besides [`METHOD_NOT_ALLOWED`] that is not its code's.
pub const UPGRADE_REQUIRED: u16 = 426;
