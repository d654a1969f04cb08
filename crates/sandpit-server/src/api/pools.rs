//! `/v1/templates/{name}/pool`: a template's warm pool (the rules are [`crate::pools`]'s). Setting a size
//! is an admin's call (pooled sandboxes take host memory); any key reads it.

use axum::Json;
use axum::extract::State;
use sandpit_types::ErrorBody;
use sandpit_types::sandbox::{PoolInfo, SetPoolRequest, valid_template_name};

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath};

fn check_name(name: &str) -> Result<(), ApiError> {
    if valid_template_name(name) {
        Ok(())
    } else {
        Err(ApiError::InvalidArgument(format!(
            "template {name:?}: use 1-64 characters from a-z 0-9 . _ -, not starting with `.`"
        )))
    }
}

/// A template's warm pool: its size, how many sandboxes wait, how many are being made.
#[utoipa::path(get, path = "/v1/templates/{name}/pool", tag = "templates",
    params(("name" = String, Path, description = "Template name")),
    responses(
        (status = 200, description = "The pool (size 0: none)", body = PoolInfo),
        (status = 400, description = "Bad template name", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody)))]
pub async fn get_pool(
    State(s): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<PoolInfo>, ApiError> {
    check_name(&name)?;
    Ok(Json(s.engine.pools.info(&name)))
}

/// Sets how many sandboxes of a template wait ready. A create that names nothing fixed at creation
/// (limits, `disk_mb`, `network`, `volumes`) takes one and gets its env, metadata and timeout then.
#[utoipa::path(put, path = "/v1/templates/{name}/pool", tag = "templates",
    params(("name" = String, Path, description = "Template name")),
    request_body = SetPoolRequest,
    responses(
        (status = 200, description = "The pool; it fills in the background", body = PoolInfo),
        (status = 400, description = "Bad name or size (at most 256)", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 403, description = "Not an admin key", body = ErrorBody),
        (status = 404, description = "No such template", body = ErrorBody),
        (status = 409, description = "The backend has no templates (`process`)", body = ErrorBody)))]
pub async fn set_pool(
    State(s): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<SetPoolRequest>,
) -> Result<(axum::Extension<crate::audit::Note>, Json<PoolInfo>), ApiError> {
    check_name(&name)?;
    if req.size > 0 && name != sandpit_types::sandbox::RESERVED_TEMPLATE {
        // Only templates that exist (or `base`, made on first use) get sandboxes made ahead.
        s.templates.get(&name, None).await?;
    }
    let info = s.engine.pools.set_size(&s.engine, &name, req.size).await?;
    let note = crate::audit::Note {
        sandbox: None,
        detail: Some(format!("pool {name}={}", req.size)),
    };
    Ok((axum::Extension(note), Json(info)))
}
