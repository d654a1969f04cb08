//! The SDK's one error type. Every failure a caller can act on is a variant of [`Error`], carrying the
//! server's machine-readable [`ErrorCode`] and its sentence, so callers match on kinds instead of parsing
//! strings, and the CLI can print what the server said verbatim.

use sandpit_types::ErrorCode;

use crate::CommandResult;

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the server (or this client, for local checks) said was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status; 0 when the error was raised locally, before any request.
    pub status: u16,
    /// The stable error class.
    pub code: ErrorCode,
    /// A sentence for a person.
    pub message: String,
    /// The server's `Retry-After`, in seconds, when it sent one (a 429 over a tenant quota or rate, a
    /// 503): when asking again may succeed.
    pub retry_after: Option<u64>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

/// Every error the SDK returns.
///
/// The first variants mirror the seed SDKs' exception classes (`TimeoutError`, `NotFoundError`,
/// `ConflictError`, `SandboxError`, `CommandExitError`, `AuthenticationError`, `InvalidArgumentError`).
///
/// A server error's variant follows its code (codes without a variant of their own are [`Error::Api`]);
/// a code this SDK does not know yet is [`ErrorCode::Unknown`] in the variant its HTTP status stands for,
/// and an answer without the standard error body is classified by its status alone: the same rules in
/// every SDK (docs/api.md, "How the SDKs map errors").
///
/// ```
/// use sandpit::Error;
/// fn describe(e: &Error) -> &'static str {
///     match e {
///         Error::NotFound(_) => "gone",
///         Error::CommandExit(r) if r.exit_code == 2 => "usage error",
///         Error::CommandExit(_) => "command failed",
///         _ => "other",
///     }
/// }
/// # let _ = describe;
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A deadline passed: a long-poll gave up (the process still runs), or a command was ended by its
    /// timeout (`status: timed_out`).
    #[error("timeout: {0}")]
    Timeout(ApiError),
    /// No such sandbox, process, template or endpoint.
    #[error("not found: {0}")]
    NotFound(ApiError),
    /// The request conflicts with the current state (an impossible transition, stdin closed, …).
    #[error("conflict: {0}")]
    Conflict(ApiError),
    /// The user may not do this (file permissions, a read-only file system).
    #[error("permission denied: {0}")]
    PermissionDenied(ApiError),
    /// The path exists already (`already_exists`). The other file conflicts (`not_empty`,
    /// `is_a_directory`, `not_a_directory`) are [`Error::Conflict`] with their own [`code`](Error::code).
    #[error("already exists: {0}")]
    AlreadyExists(ApiError),
    /// A disk is full: the sandbox's (`disk_mb`) or the daemon's. Nothing was half-written.
    #[error("insufficient storage: {0}")]
    InsufficientStorage(ApiError),
    /// A stream or session was cut and could not be resumed (after retrying from the last `seq`).
    /// A template build ended in `failed` ([`Templates::wait`](crate::Templates::wait)).
    #[error("template {name} failed to build: {message}")]
    TemplateBuild {
        /// The template's name.
        name: String,
        /// The daemon's reason.
        message: String,
    },
    #[error("sandbox connection lost: {message}")]
    Sandbox {
        /// What happened.
        message: String,
    },
    /// A command ended with a non-zero exit code where success was required
    /// ([`CommandHandle::wait`](crate::CommandHandle::wait)).
    #[error("command exited with code {}{}", .0.exit_code, stderr_tail(&.0.stderr))]
    CommandExit(Box<CommandResult>),
    /// Missing or wrong API key.
    #[error("authentication failed: {0}")]
    Authentication(ApiError),
    /// The request was malformed or a value out of range (checked by the server or locally).
    #[error("invalid argument: {0}")]
    InvalidArgument(ApiError),
    /// Any other server error (`resource_exhausted`, `unavailable`, `internal`, …).
    #[error("server error: {0}")]
    Api(ApiError),
    /// The HTTP request could not be made or its answer not read.
    #[error("cannot reach the sandpit daemon: {0}")]
    Http(#[from] reqwest::Error),
    /// A WebSocket failure other than a cut that could be resumed.
    #[error("websocket: {0}")]
    WebSocket(Box<tokio_tungstenite::tungstenite::Error>),
    /// A local I/O failure (reading the API key file, the terminal).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The server answered something this client cannot decode.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
}

fn stderr_tail(stderr: &str) -> String {
    let t = stderr.trim_end();
    if t.is_empty() {
        String::new()
    } else {
        let start = t.char_indices().rev().nth(199).map_or(0, |(i, _)| i);
        format!(": {}", &t[start..])
    }
}

impl Error {
    /// The server's error code, when the error came from (or mirrors) a server answer.
    pub fn code(&self) -> Option<ErrorCode> {
        self.api().map(|a| a.code)
    }

    /// The server's error details, when there are any.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            Self::Timeout(a)
            | Self::NotFound(a)
            | Self::Conflict(a)
            | Self::PermissionDenied(a)
            | Self::AlreadyExists(a)
            | Self::InsufficientStorage(a)
            | Self::Authentication(a)
            | Self::InvalidArgument(a)
            | Self::Api(a) => Some(a),
            _ => None,
        }
    }

    /// Builds the variant matching `code`.
    pub fn from_api(status: u16, code: ErrorCode, message: impl Into<String>) -> Self {
        Self::classified(
            code,
            ApiError {
                status,
                code,
                message: message.into(),
                retry_after: None,
            },
        )
    }

    /// The variant for `class` (a code this SDK knows), holding `a`.
    fn classified(class: ErrorCode, a: ApiError) -> Self {
        match class {
            ErrorCode::Timeout => Self::Timeout(a),
            ErrorCode::NotFound => Self::NotFound(a),
            ErrorCode::Conflict
            | ErrorCode::NotEmpty
            | ErrorCode::IsADirectory
            | ErrorCode::NotADirectory => Self::Conflict(a),
            ErrorCode::PermissionDenied => Self::PermissionDenied(a),
            ErrorCode::AlreadyExists => Self::AlreadyExists(a),
            ErrorCode::InsufficientStorage => Self::InsufficientStorage(a),
            ErrorCode::Unauthenticated => Self::Authentication(a),
            ErrorCode::InvalidArgument => Self::InvalidArgument(a),
            _ => Self::Api(a),
        }
    }

    /// A locally detected bad argument.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::from_api(0, ErrorCode::InvalidArgument, message)
    }

    pub(crate) fn cut(message: impl Into<String>) -> Self {
        Self::Sandbox {
            message: message.into(),
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// Decodes an error answer (`status`, `body`) the way every sandpit SDK does (docs/api.md, "How the
    /// SDKs map errors"; pinned by `sdk/testdata/vectors.json`):
    ///
    /// * a body `{"error": {"code": "...", "message": "..."}}` whose code this SDK knows: the code decides
    ///   the variant, and the message is the server's;
    /// * a code this SDK does not know (a newer server): [`ErrorCode::Unknown`], in the variant the HTTP
    ///   status stands for (a 409 is a [`Error::Conflict`]);
    /// * any other body (none, text, a proxy's HTML page, other JSON): the status decides the code
    ///   (502-504 are `unavailable`, other 5xx `internal`, an unlisted 4xx [`ErrorCode::Unknown`]), and
    ///   the message is `HTTP <status>: <the body's first 500 characters>`.
    #[doc(hidden)]
    pub fn from_response(status: u16, body: &[u8]) -> Self {
        let json = serde_json::from_slice::<serde_json::Value>(body).ok();
        let detail = json.as_ref().and_then(|v| v.get("error"));
        let code = detail
            .and_then(|d| d.get("code"))
            .and_then(serde_json::Value::as_str)
            .filter(|c| !c.is_empty());
        let Some(code) = code else {
            return Self::from_api(
                status,
                code_for_status(status),
                status_message(status, body),
            );
        };
        let message = detail
            .and_then(|d| d.get("message"))
            .and_then(serde_json::Value::as_str)
            .map_or_else(|| status_message(status, body), str::to_owned);
        let code =
            serde_json::from_value(serde_json::Value::from(code)).unwrap_or(ErrorCode::Unknown);
        let class = if code == ErrorCode::Unknown {
            code_for_status(status)
        } else {
            code
        };
        Self::classified(
            class,
            ApiError {
                status,
                code,
                message,
                retry_after: None,
            },
        )
    }

    /// The server's error details, to amend (the transport adds `Retry-After`).
    pub(crate) fn api_mut(&mut self) -> Option<&mut ApiError> {
        match self {
            Self::Timeout(a)
            | Self::NotFound(a)
            | Self::Conflict(a)
            | Self::PermissionDenied(a)
            | Self::AlreadyExists(a)
            | Self::InsufficientStorage(a)
            | Self::Authentication(a)
            | Self::InvalidArgument(a)
            | Self::Api(a) => Some(a),
            _ => None,
        }
    }

    /// Whether retrying the same stream may help (a cut connection, not a refusal).
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            Self::Http(e) => !e.is_builder() && e.status().is_none(),
            Self::WebSocket(_) | Self::Sandbox { .. } | Self::Io { .. } => true,
            Self::Api(a) => a.code == ErrorCode::Unavailable,
            _ => false,
        }
    }
}

/// The code an error answer without the standard body stands for, by its HTTP status.
fn code_for_status(status: u16) -> ErrorCode {
    match status {
        // 405: a method the path does not have (the daemon says invalid_argument too).
        400 | 405 => ErrorCode::InvalidArgument,
        401 => ErrorCode::Unauthenticated,
        403 => ErrorCode::PermissionDenied,
        404 => ErrorCode::NotFound,
        408 => ErrorCode::Timeout,
        409 => ErrorCode::Conflict,
        413 => ErrorCode::PayloadTooLarge,
        416 => ErrorCode::RangeNotSatisfiable,
        429 => ErrorCode::ResourceExhausted,
        // A gateway in front of the daemon (or of a sandbox's agent) could not reach it.
        502..=504 => ErrorCode::Unavailable,
        507 => ErrorCode::InsufficientStorage,
        500..=599 => ErrorCode::Internal,
        _ => ErrorCode::Unknown,
    }
}

/// `HTTP <status>`, then the body's first 500 characters when it has any.
fn status_message(status: u16, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        format!("HTTP {status}")
    } else {
        format!(
            "HTTP {status}: {}",
            text.chars().take(500).collect::<String>()
        )
    }
}

impl From<tokio_tungstenite::tungstenite::Error> for Error {
    fn from(e: tokio_tungstenite::tungstenite::Error) -> Self {
        use tokio_tungstenite::tungstenite::Error as W;
        if let W::Http(resp) = &e {
            let body = resp.body().clone().unwrap_or_default();
            return Self::from_response(resp.status().as_u16(), &body);
        }
        Self::WebSocket(Box::new(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_map_to_variants() {
        let e = Error::from_response(
            404,
            br#"{"error":{"code":"not_found","message":"no such sandbox"}}"#,
        );
        assert!(
            matches!(&e, Error::NotFound(a) if a.message == "no such sandbox" && a.status == 404)
        );
        assert_eq!(e.code(), Some(ErrorCode::NotFound));
        let e = Error::from_response(401, b"");
        assert!(matches!(e, Error::Authentication(_)));
        let e = Error::from_response(502, b"bad gateway");
        assert!(matches!(&e, Error::Api(a) if a.code == ErrorCode::Unavailable));
        assert!(e.is_transient());
        assert!(e.to_string().contains("bad gateway"));
    }
}
