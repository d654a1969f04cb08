//! Route handlers: each one translates HTTP into one engine call and back, nothing more. The utoipa
//! annotations beside them are the source of `/openapi.json`.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use sandpit_types::ErrorBody;
use sandpit_types::sandbox::{
    AccessToken, CreateSandboxRequest, CreateTemplateRequest, SandboxInfo, SandboxList,
    SetTimeoutRequest, TemplateBuild, TemplateInfo, TemplateList,
};

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, ApiQuery};
use crate::engine::ListFilter;
use crate::proxy::{self, ProxyError};

/// A sandbox's info with its network policy and preview domain filled in (the network layer owns them,
/// not the store).
pub(crate) fn with_net(s: &AppState, mut info: SandboxInfo) -> SandboxInfo {
    if let Some(n) = s.engine.network() {
        info.network = n.policy(&info.id);
    }
    info.preview_domain = Some(s.preview.host_suffix());
    info
}

/// Body of `GET /health`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Health {
    /// Always `ok` when the daemon answers.
    pub status: &'static str,
    pub version: &'static str,
    /// The isolation backend in use (`isolate` or `process`).
    pub backend: &'static str,
    pub protocol_version: u32,
}

/// Liveness; the only call that needs no API key.
#[utoipa::path(get, path = "/health", tag = "daemon", security(()),
    responses((status = 200, description = "The daemon is up", body = Health)))]
pub async fn health(State(s): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
        backend: s.engine.backend_name(),
        protocol_version: sandpit_types::PROTOCOL_VERSION,
    })
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "daemon",
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json"),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody)))]
pub async fn openapi_json(State(s): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        s.openapi.as_ref().clone(),
    )
        .into_response()
}

/// Prometheus metrics: sandboxes by state, request counts and latency by route.
#[utoipa::path(get, path = "/metrics", tag = "daemon",
    responses((status = 200, description = "Prometheus text exposition format", content_type = "text/plain"),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody)))]
pub async fn metrics(State(s): State<AppState>) -> Result<Response, ApiError> {
    let counts = s
        .engine
        .store()
        .count_by_state()
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut text = s.metrics.render(&counts);
    s.sampler.render_prometheus(&mut text);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

/// Creates a sandbox and waits until its agent is ready.
#[utoipa::path(post, path = "/v1/sandboxes", tag = "sandboxes", request_body(content = Option<CreateSandboxRequest>, description = "Every field is optional; an empty body is `{}`"),
    responses(
        (status = 201, description = "The sandbox is running. When the tenant has a \
            `max_creates_per_second` quota: `X-RateLimit-Limit` (the burst), `X-RateLimit-Remaining`, \
            `X-RateLimit-Reset` (seconds until the burst is whole again)", body = SandboxInfo),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 404, description = "Unknown template or volume", body = ErrorBody),
        (status = 409, description = "Volumes asked of a backend that has none (`process`)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 429, description = "Over a tenant quota (`quota_exceeded`) or its create rate \
            (`rate_limited`); `Retry-After` says when to ask again", body = ErrorBody),
        (status = 500, description = "The sandbox failed to start", body = ErrorBody),
        (status = 503, description = "The backend is unavailable", body = ErrorBody)))]
pub async fn create_sandbox(
    State(s): State<AppState>,
    axum::Extension(who): axum::Extension<crate::auth::Principal>,
    ApiJson(req): ApiJson<CreateSandboxRequest>,
) -> Result<axum::response::Response, ApiError> {
    if let Some(t) = &req.template {
        s.templates
            .check_usable(t, super::snapshots::viewer(&who))
            .await?;
    }
    s.volumes
        .check_usable(&req.volumes, super::snapshots::viewer(&who))
        .await?;
    let info = s.engine.create(req, &who.tenant).await?;
    // Stored with the sandbox, in the create's own write; live from here on.
    if let Some(token) = &info.access_token {
        s.keys.adopt_sandbox_token(&info.id, token);
    }
    let note = crate::audit::Note {
        sandbox: Some(info.id.clone()),
        detail: Some(format!("template={}", info.template)),
    };
    let mut resp = (
        StatusCode::CREATED,
        axum::Extension(note),
        Json(with_net(&s, info)),
    )
        .into_response();
    if let Some(rate) = s.engine.quotas().and_then(|q| q.rate_state(&who.tenant)) {
        super::error::rate_limit_headers(resp.headers_mut(), rate);
    }
    Ok(resp)
}

/// Lists sandboxes, optionally filtered by state and metadata.
#[utoipa::path(get, path = "/v1/sandboxes", tag = "sandboxes",
    params(
        ("state" = Option<String>, Query,
            description = "Comma-separated states to keep (starting, running, paused, stopped, failed); \
                           may be repeated"),
        ("metadata" = Option<Vec<String>>, Query,
            description = "`key=value`: keep sandboxes whose metadata has this pair; may be repeated (all must match)")),
    responses(
        (status = 200, description = "Sandboxes, oldest first", body = SandboxList),
        (status = 400, description = "Invalid filter", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody)))]
pub async fn list_sandboxes(
    State(s): State<AppState>,
    axum::Extension(who): axum::Extension<crate::auth::Principal>,
    ApiQuery(query): ApiQuery<Vec<(String, String)>>,
) -> Result<Json<SandboxList>, ApiError> {
    let mut filter = ListFilter {
        tenant: (!who.has(sandpit_types::keys::Scope::Admin)).then(|| who.tenant.clone()),
        ..ListFilter::default()
    };
    for (k, v) in query {
        match k.as_str() {
            "state" => {
                for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    let state = part
                        .parse::<sandpit_types::sandbox::SandboxState>()
                        .map_err(ApiError::InvalidArgument)?;
                    filter.states.push(state);
                }
            }
            "metadata" => {
                let (mk, mv) = v.split_once('=').ok_or_else(|| {
                    ApiError::InvalidArgument(format!("metadata filter {v:?} must be key=value"))
                })?;
                filter.metadata.push((mk.to_owned(), mv.to_owned()));
            }
            super::ACCESS_TOKEN_PARAM => {}
            other => {
                return Err(ApiError::InvalidArgument(format!(
                    "unknown query parameter {other:?}: expected state or metadata"
                )));
            }
        }
    }
    Ok(Json(SandboxList {
        sandboxes: s
            .engine
            .list(&filter)
            .await?
            .into_iter()
            .map(|i| with_net(&s, i))
            .collect(),
    }))
}

/// One sandbox.
#[utoipa::path(get, path = "/v1/sandboxes/{id}", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id")),
    responses(
        (status = 200, description = "The sandbox", body = SandboxInfo),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody)))]
pub async fn get_sandbox(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<SandboxInfo>, ApiError> {
    Ok(Json(with_net(&s, s.engine.get(&id).await?)))
}

/// Kills every process in the sandbox and deletes it; its id is unknown afterwards.
#[utoipa::path(delete, path = "/v1/sandboxes/{id}", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody)))]
pub async fn delete_sandbox(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    s.engine.delete(&id).await?;
    s.ports.forget(&id);
    if let Err(e) = s.keys.forget_sandbox(&id).await {
        tracing::warn!(sandbox = %id, error = %e, "cannot forget the access token of a deleted sandbox");
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Issues a new access token for the sandbox; the old one stops working at once. Not callable with an
/// access token (rotation is the back end's job).
#[utoipa::path(post, path = "/v1/sandboxes/{id}/access-token", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id")),
    responses(
        (status = 200, description = "The new token", body = AccessToken),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 403, description = "A read key or an access token", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody)))]
pub async fn rotate_access_token(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<AccessToken>, ApiError> {
    s.engine.get(&id).await?;
    Ok(Json(AccessToken {
        access_token: s.keys.issue_sandbox_token(&id).await?,
    }))
}

/// Freezes every process of a running sandbox. Its deadline is suspended until it is resumed.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/pause", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id")),
    responses(
        (status = 200, description = "Paused", body = SandboxInfo),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "The sandbox is not running", body = ErrorBody)))]
pub async fn pause_sandbox(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<SandboxInfo>, ApiError> {
    Ok(Json(with_net(&s, s.engine.pause(&id).await?)))
}

/// Thaws a paused sandbox; its deadline restarts from its timeout.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/resume", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id")),
    responses(
        (status = 200, description = "Running again", body = SandboxInfo),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "The sandbox is not paused", body = ErrorBody)))]
pub async fn resume_sandbox(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<SandboxInfo>, ApiError> {
    Ok(Json(with_net(&s, s.engine.resume(&id).await?)))
}

/// Makes sure the sandbox is running (resuming it if paused) and returns it.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/connect", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id")),
    responses(
        (status = 200, description = "Running", body = SandboxInfo),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "The sandbox is stopped or failed", body = ErrorBody)))]
pub async fn connect_sandbox(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<SandboxInfo>, ApiError> {
    Ok(Json(with_net(&s, s.engine.connect(&id).await?)))
}

/// Moves the deadline to `timeout` seconds from now (for a paused sandbox: from its next resume).
#[utoipa::path(post, path = "/v1/sandboxes/{id}/timeout", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id")),
    request_body = SetTimeoutRequest,
    responses(
        (status = 200, description = "New deadline set", body = SandboxInfo),
        (status = 400, description = "Invalid timeout", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "The sandbox is stopped or failed", body = ErrorBody)))]
pub async fn set_sandbox_timeout(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<SetTimeoutRequest>,
) -> Result<Json<SandboxInfo>, ApiError> {
    Ok(Json(with_net(
        &s,
        s.engine.set_timeout(&id, req.timeout).await?,
    )))
}

/// Everything else under `/v1/sandboxes/{id}/`: the process API, served by the sandbox's agent. The
/// prefix is stripped from the raw (still percent-encoded) path so that the agent sees the bytes the
/// client sent. Documented route by route in [`crate::openapi`].
pub async fn proxy_to_agent(
    State(s): State<AppState>,
    ApiPath((id, _rest)): ApiPath<(String, String)>,
    req: Request,
) -> Result<Response, ApiError> {
    let raw = req.uri().path();
    // "/v1/sandboxes/{id}/{rest}" → ["", "v1", "sandboxes", id, rest]
    let rest = raw.splitn(5, '/').nth(4).unwrap_or_default();
    // The agent's `/_daemon/…` calls are the daemon's (a warm-pool claim sets the sandbox's env there).
    if rest.starts_with(proxy::AGENT_DAEMON_PREFIX) {
        return Err(ApiError::NotFound(format!(
            "no route for {} {raw}",
            req.method()
        )));
    }
    // The daemon's credentials stay with the daemon: drop a query-string key (and a signed URL's
    // signature), keep every other byte.
    let signed = req
        .extensions()
        .get::<crate::auth::Principal>()
        .is_some_and(|p| p.key_id.starts_with(crate::auth::SIGNED_URL_PREFIX));
    let query: Vec<&str> = req
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|kv| {
            let k = kv.split('=').next().unwrap_or_default();
            !kv.is_empty()
                && k != super::ACCESS_TOKEN_PARAM
                && !(signed && crate::signing::SIGNED_PARAMS.contains(&k))
        })
        .collect();
    let target = if query.is_empty() {
        format!("/{rest}")
    } else {
        format!("/{rest}?{}", query.join("&"))
    };
    let socket = s.engine.agent_socket(&id).await?;
    let unbounded = super::streams_file_content(rest);
    // Neither the answer nor its body waits on an agent the health probe finds wedged.
    let cut = s.engine.clone().until_unhealthy(id.clone());
    // A WebSocket session ends when the sandbox turns unhealthy or its credential stops working.
    let session_cut = {
        let unhealthy = s.engine.clone().until_unhealthy(id.clone());
        let who = req.extensions().get::<crate::auth::Principal>().cloned();
        let keys = s.keys.clone();
        async move {
            let revoked = async {
                match who {
                    Some(who) => super::revoke::until_invalid(keys, who).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                why = unhealthy => proxy::Cut::unavailable(&why),
                why = revoked => proxy::Cut::unauthenticated(&why),
            }
        }
    };
    let fast = crate::fast_files::offer(
        req.method(),
        rest.split('?').next().unwrap_or_default(),
        req.headers(),
    );
    let query = query.join("&");
    let forward = async {
        let req = if fast {
            match crate::fast_files::forward(s.engine.agents(), &socket, req, &query).await? {
                crate::fast_files::Fast::Done(resp) => return Ok(resp),
                crate::fast_files::Fast::Declined(req) => req,
            }
        } else {
            req
        };
        proxy::forward(
            s.engine.agents(),
            &socket,
            req,
            &target,
            unbounded,
            session_cut,
        )
        .await
    };
    let forwarded = tokio::select! {
        r = forward => r,
        why = cut => {
            return Err(ApiError::Unavailable(format!(
                "sandbox {id} turned unhealthy while this call waited: {why}"
            )));
        }
    };
    match forwarded {
        Ok(resp) => Ok(proxy::Guarded::wrap(
            resp,
            s.engine.clone().until_unhealthy(id.clone()),
        )),
        Err(ProxyError::Build(m)) => Err(ApiError::InvalidArgument(m)),
        Err(e @ ProxyError::TooLarge) => Err(ApiError::PayloadTooLarge(e.to_string())),
        Err(e @ ProxyError::ClientBody(_)) => Err(ApiError::InvalidArgument(e.to_string())),
        Err(e) => Err(s.engine.agent_unreachable(&id, e.to_string()).await.into()),
    }
}

/// Templates the backend can create sandboxes from.
#[utoipa::path(get, path = "/v1/templates", tag = "templates",
    responses(
        (status = 200, description = "Built templates, by name", body = TemplateList),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 409, description = "The backend has no templates (`process`)", body = ErrorBody)))]
pub async fn list_templates(
    State(s): State<AppState>,
    axum::Extension(who): axum::Extension<crate::auth::Principal>,
) -> Result<Json<TemplateList>, ApiError> {
    Ok(Json(TemplateList {
        templates: s.templates.list(super::snapshots::viewer(&who)).await?,
    }))
}

/// Content types of an uploaded template archive (`POST /v1/templates?name=…`).
const ARCHIVE_TYPES: &[&str] = &[
    "application/zstd",
    "application/x-tar",
    "application/gzip",
    "application/octet-stream",
];

/// Whether a `POST /v1/templates` carries an archive (its content type says so) rather than JSON.
pub(crate) fn is_archive_upload(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ARCHIVE_TYPES.iter().any(|a| ct.starts_with(a)))
}

/// The query of `POST /v1/templates` with an uploaded archive.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ImportQuery {
    /// The new template's name (uploads only; a JSON body names it itself).
    pub name: Option<String>,
}

/// Starts building a template from a directory, tarball or OCI image on the daemon's host, or with
/// debootstrap; or imports an uploaded archive (a template export, or any root filesystem tar: plain,
/// gzip or zstd) sent as the body with `Content-Type: application/zstd` (or `x-tar`, `gzip`,
/// `octet-stream`) and `?name=`, answering when it is imported. Admin-only: the paths are read with the daemon's privileges. Answers at once; poll
/// `GET /v1/templates/{name}/build` (the `Location` header) until `state` is `ready` or `failed`.
#[utoipa::path(post, path = "/v1/templates", tag = "templates",
    params(ImportQuery),
    request_body(content(
        (CreateTemplateRequest = "application/json"),
        (inline(crate::openapi::RawBytes) = "application/zstd"))),
    responses(
        (status = 201, description = "An uploaded archive was imported", body = TemplateInfo),
        (status = 202, description = "Build started", body = TemplateBuild,
            headers(("Location" = String, description = "Where to poll the build"))),
        (status = 400, description = "Invalid name or source", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 409, description = "The name is taken or being built, or the backend has no templates", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody)))]
pub async fn create_template(
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<ImportQuery>,
    req: axum::extract::Request,
) -> Result<Response, ApiError> {
    if is_archive_upload(req.headers()) {
        let Some(name) = q.name else {
            return Err(ApiError::InvalidArgument(
                "an uploaded archive needs the template's name: POST /v1/templates?name=NAME"
                    .into(),
            ));
        };
        let t = s.templates.import_upload(&name, req.into_body()).await?;
        let note = crate::audit::Note {
            sandbox: None,
            detail: Some(format!("name={name} upload")),
        };
        return Ok((StatusCode::CREATED, axum::Extension(note), Json(t)).into_response());
    }
    let ApiJson(req) =
        <ApiJson<CreateTemplateRequest> as axum::extract::FromRequest<AppState>>::from_request(
            req, &s,
        )
        .await?;
    let build = s.templates.create(req).await?;
    let location = format!("/v1/templates/{}/build", build.name);
    let note = crate::audit::Note {
        sandbox: None,
        detail: Some(format!("name={}", build.name)),
    };
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        axum::Extension(note),
        Json(build),
    )
        .into_response())
}

/// One template.
#[utoipa::path(get, path = "/v1/templates/{name}", tag = "templates",
    params(("name" = String, Path, description = "Template name")),
    responses(
        (status = 200, description = "The template", body = TemplateInfo),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 404, description = "No such template", body = ErrorBody),
        (status = 409, description = "The backend has no templates (`process`)", body = ErrorBody)))]
pub async fn get_template(
    State(s): State<AppState>,
    axum::Extension(who): axum::Extension<crate::auth::Principal>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<TemplateInfo>, ApiError> {
    Ok(Json(
        s.templates
            .get(&name, super::snapshots::viewer(&who))
            .await?,
    ))
}

/// The latest build of a template since the daemon started: its state, last progress lines and outcome.
#[utoipa::path(get, path = "/v1/templates/{name}/build", tag = "templates",
    params(("name" = String, Path, description = "Template name")),
    responses(
        (status = 200, description = "The build", body = TemplateBuild),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 404, description = "No build of this template since the daemon started", body = ErrorBody),
        (status = 409, description = "The backend has no templates (`process`)", body = ErrorBody)))]
pub async fn template_build(
    State(s): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<TemplateBuild>, ApiError> {
    Ok(Json(s.templates.build_status(&name)?))
}

/// Deletes a template no sandbox uses. Admin keys may delete any; a tenant's key its own snapshots.
#[utoipa::path(delete, path = "/v1/templates/{name}", tag = "templates",
    params(("name" = String, Path, description = "Template name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 403, description = "A tenant's key may delete only its own tenant's snapshots", body = ErrorBody),
        (status = 404, description = "No such template", body = ErrorBody),
        (status = 409, description = "The template is being built, sandboxes use it, a snapshot is layered \
            over it, or the backend has no templates", body = ErrorBody)))]
pub async fn delete_template(
    State(s): State<AppState>,
    axum::Extension(who): axum::Extension<crate::auth::Principal>,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let pool = s.engine.pools.info(&name);
    if pool.size > 0 || pool.ready > 0 || pool.filling > 0 {
        return Err(ApiError::Conflict(format!(
            "template {name:?} has a warm pool of {} sandbox(es): set its size to 0 first \
             (PUT /v1/templates/{name}/pool {{\"size\": 0}}, or `sandpit template pool {name} --size 0`)",
            pool.size.max(pool.ready)
        )));
    }
    let users = s.engine.template_users(&name).await?;
    s.templates
        .delete(&name, super::snapshots::viewer(&who), &users)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
