//! The one place where agent errors become HTTP responses, and the extractors whose rejections must
//! come out in the same `{"error": {"code", "message"}}` shape.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use sandpit_types::{ErrorBody, ErrorCode};

use crate::agent::AgentError;
use crate::process::ControlError;

/// An error on its way to the client.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::error!(code = %self.code, message = %self.message, "request failed");
        }
        (status, axum::Json(ErrorBody::new(self.code, self.message))).into_response()
    }
}

impl From<AgentError> for ApiError {
    fn from(e: AgentError) -> Self {
        let code = match &e {
            AgentError::InvalidArgument(_) => ErrorCode::InvalidArgument,
            AgentError::NotFound(_) => ErrorCode::NotFound,
            AgentError::Conflict(_) => ErrorCode::Conflict,
            AgentError::Internal(_) => ErrorCode::Internal,
        };
        Self::new(code, e.to_string())
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        let code = match &e {
            ControlError::Os(_) => ErrorCode::Internal,
            _ => ErrorCode::Conflict,
        };
        Self::new(code, e.to_string())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::invalid(format!("invalid query string: {}", r.body_text()))
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        Self::invalid(format!("invalid path: {}", r.body_text()))
    }
}

/// A JSON request body read by the same rules as the daemon's ([`sandpit_types::check_json_content_type`],
/// [`sandpit_types::decode_json_body`]: an object, or nothing for `{}`; a missing content type is fine,
/// a wrong one is not), with an [`ApiError`] as rejection. Not `axum::Json`, which reads a JSON array
/// as a struct (fields by position) and insists on a content type: the two ends of one API should not
/// disagree on what a body is.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        sandpit_types::check_json_content_type(
            req.headers()
                .get(axum::http::header::CONTENT_TYPE)
                .map(axum::http::HeaderValue::as_bytes),
        )
        .map_err(ApiError::invalid)?;
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|r| {
                if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(ErrorCode::PayloadTooLarge, "request body is too large")
                } else {
                    ApiError::invalid(format!("cannot read the request body: {}", r.body_text()))
                }
            })?;
        sandpit_types::decode_json_body(&bytes)
            .map(Json)
            .map_err(ApiError::invalid)
    }
}

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `Query` whose rejection is an [`ApiError`].
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// `Path` whose rejection is an [`ApiError`].
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct PathParam<T>(pub T);
