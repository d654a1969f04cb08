//! `/v1/keys`: make, list and revoke API keys (admin scope; the check is in `api::check_scope`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use sandpit_types::ErrorBody;
use sandpit_types::keys::{CreateKeyRequest, CreatedKey, KeyList};

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath};
use crate::auth::KeyError;

impl From<KeyError> for ApiError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::Invalid(m) => Self::InvalidArgument(m),
            KeyError::NotFound(_) => Self::NotFound(e.to_string()),
            KeyError::Store(s) => s.into(),
        }
    }
}

/// Makes an API key with a name, a tenant and scopes. The secret is in this answer only.
#[utoipa::path(post, path = "/v1/keys", tag = "keys",
    request_body = CreateKeyRequest,
    responses(
        (status = 201, description = "Created; `key` is shown only here", body = CreatedKey),
        (status = 400, description = "Bad name, tenant, scope or lifetime", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 403, description = "The key is not an `admin` key", body = ErrorBody)))]
pub async fn create_key(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<CreateKeyRequest>,
) -> Result<
    (
        StatusCode,
        axum::Extension<crate::audit::Note>,
        Json<CreatedKey>,
    ),
    ApiError,
> {
    let made = s.keys.create(req).await?;
    let i = &made.info;
    let note = crate::audit::Note {
        sandbox: None,
        detail: Some(format!(
            "id={} name={} tenant={} scopes={}",
            i.id,
            i.name,
            i.tenant,
            i.scopes
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(",")
        )),
    };
    Ok((StatusCode::CREATED, axum::Extension(note), Json(made)))
}

/// Lists the keys made by `POST /v1/keys` (not the key file's), without their secrets.
#[utoipa::path(get, path = "/v1/keys", tag = "keys",
    responses(
        (status = 200, description = "The keys", body = KeyList),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 403, description = "The key is not an `admin` key", body = ErrorBody)))]
pub async fn list_keys(State(s): State<AppState>) -> Json<KeyList> {
    Json(KeyList {
        keys: s.keys.list(),
    })
}

/// Revokes a key: the next request that carries it gets 401.
#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "keys",
    params(("id" = String, Path, description = "Key id (`k_…`)")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 403, description = "The key is not an `admin` key", body = ErrorBody),
        (status = 404, description = "No such key", body = ErrorBody)))]
pub async fn revoke_key(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    s.keys.revoke(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
