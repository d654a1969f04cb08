//! `POST /v1/sandboxes/{id}/files/signed-url`: sign a URL that reads or writes one file without any other
//! credential (the rule and the secret are `crate::signing`'s). Any key that may use the sandbox may
//! sign, its access token included; the URL stops working when that key is revoked.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use sandpit_types::ErrorBody;
use sandpit_types::files::{DEFAULT_SIGNED_URL_SECS, SignedUrl, SignedUrlOp, SignedUrlRequest};

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath};
use crate::auth::Principal;
use crate::signing::Op;

/// Signs a URL for one file of this sandbox.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/files/signed-url", tag = "files",
    params(("id" = String, Path, description = "Sandbox id")),
    request_body = SignedUrlRequest,
    responses(
        (status = 200, description = "The URL: GET (or HEAD) reads the file, PUT writes it, with no other \
            credential, until `expires_at`. Expired or altered: 403", body = SignedUrl),
        (status = 400, description = "Bad path, op or lifetime", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody)))]
pub async fn signed_url(
    State(s): State<AppState>,
    axum::Extension(who): axum::Extension<Principal>,
    ApiPath(id): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<SignedUrlRequest>,
) -> Result<(axum::Extension<crate::audit::Note>, Json<SignedUrl>), ApiError> {
    req.validate().map_err(ApiError::InvalidArgument)?;
    if s.engine.tenant_of(&id).is_none() {
        return Err(crate::engine::EngineError::NotFound(id).into());
    }
    let life = req.expires_in.unwrap_or(DEFAULT_SIGNED_URL_SECS);
    let now = crate::time::now_ms();
    let expires = u64::try_from(now / 1000).unwrap_or(0) + life;
    let (op, method) = match req.op {
        SignedUrlOp::Read => (Op::Read, "GET"),
        SignedUrlOp::Write => (Op::Write, "PUT"),
    };
    let query = s.signer.sign(
        op,
        &id,
        &req.path,
        req.user.as_deref(),
        expires,
        &who.key_id,
    );
    let path = format!("/v1/sandboxes/{id}/files?{query}");
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let note = crate::audit::Note {
        sandbox: Some(id.clone()),
        detail: Some(format!(
            "op={} path={} expires_in={life}",
            if op == Op::Read { "read" } else { "write" },
            req.path
        )),
    };
    Ok((
        axum::Extension(note),
        Json(SignedUrl {
            url: format!("{}://{host}{path}", s.preview.scheme()),
            path,
            method: method.into(),
            expires_at: crate::time::rfc3339(
                i64::try_from(expires.saturating_mul(1000)).unwrap_or(i64::MAX),
            ),
        }),
    ))
}
