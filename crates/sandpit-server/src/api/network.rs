//! Handlers of the network routes: a sandbox's egress policy (`GET/PUT /v1/sandboxes/{id}/network`) and
//! its exposed ports (`/v1/sandboxes/{id}/ports…`). Translation only: the policy is the
//! [`crate::network`] layer's, access the [`crate::tokens`] module's, the proxying [`crate::preview`]'s.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use sandpit_types::ErrorBody;
use sandpit_types::network::{ExposePortRequest, ExposedPort, NetworkPolicy, PortList};

use super::AppState;
use super::error::ApiError;
use super::extract::{ApiJson, ApiPath, RequiredJson};
use crate::time::rfc3339;

fn no_network() -> ApiError {
    ApiError::Conflict(
        "this daemon runs without sandbox networking (`--network off`, or the `process` backend)"
            .into(),
    )
}

/// The sandbox's outbound network policy.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/network", tag = "network",
    params(("id" = String, Path, description = "Sandbox id")),
    responses((status = 200, description = "The policy in force (`egress` filled in)", body = NetworkPolicy),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "No networking on this daemon, or the sandbox is not running", body = ErrorBody)))]
pub async fn get_network(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<NetworkPolicy>, ApiError> {
    s.engine.get(&id).await?;
    let n = s.engine.network().ok_or_else(no_network)?;
    n.policy(&id).map(Json).ok_or_else(|| {
        ApiError::Conflict(format!("sandbox {id} has no network: it is not running"))
    })
}

/// Replaces the sandbox's policy while it runs. Open connections the new policy forbids are cut (reset)
/// on their next packet.
#[utoipa::path(put, path = "/v1/sandboxes/{id}/network", tag = "network",
    params(("id" = String, Path, description = "Sandbox id")),
    request_body = NetworkPolicy,
    responses((status = 200, description = "The policy now in force", body = NetworkPolicy),
        (status = 400, description = "An empty body, a malformed entry (named in the message) or over 1,000 entries", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "No networking on this daemon, or the sandbox is not running", body = ErrorBody)))]
pub async fn put_network(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
    RequiredJson(policy): RequiredJson<NetworkPolicy>,
) -> Result<Json<NetworkPolicy>, ApiError> {
    s.engine.get(&id).await?;
    let n = s.engine.network().ok_or_else(no_network)?;
    Ok(Json(n.set_policy(&id, &policy).await?))
}

fn check_port(port: u16) -> Result<u16, ApiError> {
    if port == 0 {
        Err(ApiError::InvalidArgument("port must be 1-65535".into()))
    } else {
        Ok(port)
    }
}

/// Exposes a port: returns its preview URL and a new port-scoped token. `public: true` opens it to
/// anyone with the URL.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/ports/{port}", tag = "network",
    params(("id" = String, Path, description = "Sandbox id"), ("port" = u16, Path, description = "TCP port inside the sandbox")),
    request_body(content = Option<ExposePortRequest>, description = "Optional: an empty body is `{}` (a private port, no expiry)"),
    responses((status = 200, description = "The URL and a token for this port only", body = ExposedPort),
        (status = 400, description = "Bad port or body", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody)))]
pub async fn expose_port(
    State(s): State<AppState>,
    ApiPath((id, port)): ApiPath<(String, u16)>,
    ApiJson(req): ApiJson<ExposePortRequest>,
) -> Result<Json<ExposedPort>, ApiError> {
    let port = check_port(port)?;
    s.engine.get(&id).await?;
    let (token, exp) = s
        .ports
        .expose(&id, port, req.public, req.expires_in)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(ExposedPort {
        port,
        url: s.preview.url(&id, port),
        public: req.public,
        token: Some(token),
        expires_at: exp.map(rfc3339),
    }))
}

/// Closes a port: private again, and every token for it revoked.
#[utoipa::path(delete, path = "/v1/sandboxes/{id}/ports/{port}", tag = "network",
    params(("id" = String, Path, description = "Sandbox id"), ("port" = u16, Path, description = "TCP port inside the sandbox")),
    responses((status = 204, description = "Closed"),
        (status = 400, description = "Bad port", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 404, description = "No such sandbox, or the port is not exposed", body = ErrorBody)))]
pub async fn close_port(
    State(s): State<AppState>,
    ApiPath((id, port)): ApiPath<(String, u16)>,
) -> Result<StatusCode, ApiError> {
    s.engine.get(&id).await?;
    let was = s
        .ports
        .close(&id, check_port(port)?)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    if was {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!(
            "port {port} of sandbox {id} is not exposed"
        )))
    }
}

/// The exposed ports (tokens are never shown again).
#[utoipa::path(get, path = "/v1/sandboxes/{id}/ports", tag = "network",
    params(("id" = String, Path, description = "Sandbox id")),
    responses((status = 200, description = "Exposed ports", body = PortList),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody)))]
pub async fn list_ports(
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<PortList>, ApiError> {
    s.engine.get(&id).await?;
    let ports = s
        .ports
        .list(&id)
        .into_iter()
        .map(|(port, public)| ExposedPort {
            port,
            url: s.preview.url(&id, port),
            public,
            token: None,
            expires_at: None,
        })
        .collect();
    Ok(Json(PortList { ports }))
}

/// `…/ports/{port}` read in a browser: the preview is at `…/ports/{port}/`.
pub async fn port_slash(ApiPath((id, port)): ApiPath<(String, u16)>) -> Response {
    let to = format!("/v1/sandboxes/{id}/ports/{port}/");
    (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, to)]).into_response()
}
