//! Snapshots and forks of a sandbox (`POST /v1/sandboxes/{id}/snapshots`, `POST /v1/sandboxes/{id}/fork`)
//! and templates as files (`GET /v1/templates/{name}/export`). The work is the engine's and the backend's
//! (`Engine::snapshot`, `Engine::fork`, `Templates::export`); this module maps requests and answers.
//!
//! A snapshot is a template that belongs to the sandbox's tenant: only that tenant's keys (and admin
//! keys) see it, create from it, export or delete it ([`crate::templates`] says who sees what).

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use sandpit_types::ErrorBody;
use sandpit_types::keys::Scope;
use sandpit_types::sandbox::{CreateSnapshotRequest, ForkInfo, ForkRequest, SnapshotInfo};

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath};
use crate::auth::Principal;

/// The tenant whose templates a key sees; `None` for an admin key, which sees all.
pub(crate) fn viewer(who: &Principal) -> Option<&str> {
    (!who.has(Scope::Admin)).then_some(who.tenant.as_str())
}

/// Makes a template from the sandbox's filesystem as it is now.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/snapshots", tag = "snapshots",
    params(("id" = String, Path, description = "Sandbox id")),
    request_body = CreateSnapshotRequest,
    responses(
        (status = 201, description = "The snapshot: a template (layered over the sandbox's own) that \
            `POST /v1/sandboxes` can start from. The sandbox keeps running; `frozen_ms` says how long its \
            processes were frozen for the copy to be consistent", body = SnapshotInfo),
        (status = 400, description = "Bad name", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 403, description = "A sandbox access token cannot snapshot", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "The name is taken, the sandbox is not running or paused, or the \
            backend has no templates (`process`)", body = ErrorBody),
        (status = 507, description = "The state directory's disk is full", body = ErrorBody)))]
pub async fn create_snapshot(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<CreateSnapshotRequest>,
) -> Result<Response, ApiError> {
    req.validate().map_err(ApiError::InvalidArgument)?;
    let snap = s.engine.snapshot(&id, &req.name, false).await?;
    let note = crate::audit::Note {
        sandbox: Some(id),
        detail: Some(format!("snapshot={}", snap.template.name)),
    };
    Ok((StatusCode::CREATED, axum::Extension(note), Json(snap)).into_response())
}

/// Makes `count` sandboxes whose filesystems start as this one's is now.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/fork", tag = "snapshots",
    params(("id" = String, Path, description = "Sandbox id")),
    request_body(content = Option<ForkRequest>, description = "`count` (1-100, default 1) and any option \
        of `POST /v1/sandboxes` but `template`; an empty body is `{}` (one sandbox)"),
    responses(
        (status = 201, description = "The new sandboxes, running, each with its own access token. Files \
            are copied; running processes and memory are not (each starts its own agent)", body = ForkInfo),
        (status = 400, description = "Bad count or options", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 403, description = "A sandbox access token cannot fork", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "The sandbox is not running or paused, or the backend has no \
            templates", body = ErrorBody),
        (status = 429, description = "Over a tenant quota: no sandbox was made", body = ErrorBody)))]
pub async fn fork_sandbox(
    State(s): State<AppState>,
    axum::Extension(who): axum::Extension<Principal>,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<ForkRequest>,
) -> Result<Response, ApiError> {
    s.volumes
        .check_usable(&req.options.volumes, viewer(&who))
        .await?;
    let mut fork = s.engine.fork(&id, req, &who.tenant).await?;
    // Each fork is a create: its access token is stored with it ([`crate::engine::Engine::create`]).
    for made in &fork.sandboxes {
        if let Some(token) = &made.access_token {
            s.keys.adopt_sandbox_token(&made.id, token);
        }
    }
    fork.sandboxes = fork
        .sandboxes
        .into_iter()
        .map(|i| super::handlers::with_net(&s, i))
        .collect();
    let note = crate::audit::Note {
        sandbox: Some(id),
        detail: Some(format!(
            "fork count={} snapshot={}",
            fork.sandboxes.len(),
            fork.snapshot.template.name
        )),
    };
    Ok((StatusCode::CREATED, axum::Extension(note), Json(fork)).into_response())
}

/// The template as one file: a zstd-compressed tar of the root filesystem a sandbox made from it starts
/// with (its layers merged), which `POST /v1/templates` imports on another host.
#[utoipa::path(get, path = "/v1/templates/{name}/export", tag = "templates",
    params(("name" = String, Path, description = "Template name")),
    responses(
        (status = 200, description = "The archive, streamed (`application/zstd`). A failure midway cuts \
            the transfer off rather than ending it cleanly", content_type = "application/zstd", body = inline(crate::openapi::RawBytes)),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 404, description = "No such template (or another tenant's snapshot)", body = ErrorBody),
        (status = 409, description = "The backend has no templates (`process`)", body = ErrorBody)))]
pub async fn export_template(
    State(s): State<AppState>,
    axum::Extension(who): axum::Extension<Principal>,
    ApiPath(name): ApiPath<String>,
) -> Result<Response, ApiError> {
    let body = s.templates.export(&name, viewer(&who)).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/zstd".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}.tar.zst\""),
            ),
        ],
        body,
    )
        .into_response())
}
