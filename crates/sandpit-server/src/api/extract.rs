//! Extractors whose rejections are [`ApiError`]s, so that a malformed request gets the same JSON error
//! body as every other failure instead of axum's plain-text defaults.

use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::{StatusCode, header, request::Parts};
use bytes::Bytes;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// A JSON request body. The request types deny unknown fields, so a typo is a 400 rather than a silently
/// ignored option. An empty body reads as `{}`, and a missing `Content-Type` is accepted (curl-friendly);
/// a present one must be JSON. Bodies over the configured limit are a 413.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = json_bytes(req, state).await?;
        sandpit_types::decode_json_body(&bytes)
            .map(ApiJson)
            .map_err(ApiError::InvalidArgument)
    }
}

/// A JSON request body that must be there: like [`ApiJson`], but an empty body is a 400 rather than
/// `{}`. For replacements (`PUT`) whose fields all have defaults, where an empty body would silently
/// reset everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequiredJson<T>(pub T);

impl<T, S> FromRequest<S> for RequiredJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = json_bytes(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::InvalidArgument(
                "this request needs a JSON body: an empty one would reset every field".into(),
            ));
        }
        sandpit_types::decode_json_body(&bytes)
            .map(RequiredJson)
            .map_err(ApiError::InvalidArgument)
    }
}

/// The body of a JSON request: its content type checked, its size bounded.
async fn json_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    sandpit_types::check_json_content_type(
        req.headers()
            .get(header::CONTENT_TYPE)
            .map(axum::http::HeaderValue::as_bytes),
    )
    .map_err(ApiError::InvalidArgument)?;
    Bytes::from_request(req, state).await.map_err(|rej| {
        if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge("request body too large".into())
        } else {
            ApiError::InvalidArgument(format!("cannot read the request body: {}", rej.body_text()))
        }
    })
}

/// Query-string parameters.
#[derive(Debug, Clone, Default)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|rej: QueryRejection| {
                ApiError::InvalidArgument(format!("invalid query: {}", rej.body_text()))
            })
    }
}

/// Path parameters.
#[derive(Debug, Clone)]
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| ApiPath(v))
            .map_err(|rej| ApiError::InvalidArgument(format!("invalid path: {}", rej.body_text())))
    }
}
