//! `/v1/volumes`: named, size-capped filesystems that outlive sandboxes (the rules are
//! [`crate::volumes`]'s; the filesystems the backend's). A sandbox mounts them with `volumes` at create.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use sandpit_types::ErrorBody;
use sandpit_types::volumes::{CreateVolumeRequest, VolumeInfo, VolumeList};

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath};
use super::snapshots::viewer;
use crate::auth::Principal;

/// Makes a volume: an empty filesystem of `size_mb` MiB that belongs to the key's tenant.
#[utoipa::path(post, path = "/v1/volumes", tag = "volumes",
    request_body = CreateVolumeRequest,
    responses(
        (status = 201, description = "The volume, empty", body = VolumeInfo),
        (status = 400, description = "Bad name or size", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 409, description = "The name is taken, or the backend has no volumes (`process`)", body = ErrorBody),
        (status = 507, description = "The state directory's disk is full", body = ErrorBody)))]
pub async fn create_volume(
    State(s): State<AppState>,
    axum::Extension(who): axum::Extension<Principal>,
    ApiJson(req): ApiJson<CreateVolumeRequest>,
) -> Result<Response, ApiError> {
    let v = s.volumes.create(req, &who.tenant).await?;
    let note = crate::audit::Note {
        sandbox: None,
        detail: Some(format!("volume={} size_mb={}", v.name, v.size_mb)),
    };
    Ok((StatusCode::CREATED, axum::Extension(note), Json(v)).into_response())
}

/// The volumes this key's tenant has (an admin key: all).
#[utoipa::path(get, path = "/v1/volumes", tag = "volumes",
    responses(
        (status = 200, description = "Volumes, by name, with their usage and the sandboxes that mount them", body = VolumeList),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 409, description = "The backend has no volumes (`process`)", body = ErrorBody)))]
pub async fn list_volumes(
    State(s): State<AppState>,
    axum::Extension(who): axum::Extension<Principal>,
) -> Result<Json<VolumeList>, ApiError> {
    let users = s.engine.volume_users().await?;
    Ok(Json(VolumeList {
        volumes: s.volumes.list(viewer(&who), &users).await?,
    }))
}

/// One volume.
#[utoipa::path(get, path = "/v1/volumes/{name}", tag = "volumes",
    params(("name" = String, Path, description = "Volume name")),
    responses(
        (status = 200, description = "The volume", body = VolumeInfo),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 404, description = "No such volume (or another tenant's)", body = ErrorBody),
        (status = 409, description = "The backend has no volumes (`process`)", body = ErrorBody)))]
pub async fn get_volume(
    State(s): State<AppState>,
    axum::Extension(who): axum::Extension<Principal>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<VolumeInfo>, ApiError> {
    let users = s.engine.volume_users().await?;
    Ok(Json(s.volumes.get(&name, viewer(&who), &users).await?))
}

/// Deletes a volume and its data; refused while a sandbox mounts it.
#[utoipa::path(delete, path = "/v1/volumes/{name}", tag = "volumes",
    params(("name" = String, Path, description = "Volume name")),
    responses(
        (status = 204, description = "Deleted, data and all"),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 404, description = "No such volume (or another tenant's)", body = ErrorBody),
        (status = 409, description = "A sandbox mounts it, or the backend has no volumes (`process`)", body = ErrorBody)))]
pub async fn delete_volume(
    State(s): State<AppState>,
    axum::Extension(who): axum::Extension<Principal>,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let users = s.engine.volume_users().await?;
    s.volumes.delete(&name, viewer(&who), &users).await?;
    Ok(StatusCode::NO_CONTENT)
}
