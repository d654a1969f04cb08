//! The HTTP surface of the daemon: the router, its middleware (CORS, auth, metrics, a tracing span per
//! request, body limits) and the handlers. Handlers only translate; decisions live in the [`Engine`].

pub mod cors;
pub mod error;
pub mod extract;
pub mod handlers;
pub mod network;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use tower_http::trace::{DefaultOnResponse, TraceLayer};

use crate::auth::ApiKey;
use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::templates::Templates;
use error::ApiError;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub api_key: Arc<ApiKey>,
    pub metrics: Arc<Metrics>,
    pub templates: Arc<Templates>,
    /// The `OpenAPI` document, rendered once.
    pub openapi: Arc<String>,
    /// Exposed ports and their tokens.
    pub ports: Arc<crate::tokens::PortAccess>,
    /// Preview URL settings and the pooled client to sandbox ports.
    pub preview: Arc<crate::preview::Preview>,
}

/// Everything under a sandbox that is not a lifecycle verb: the agent's process API.
const PROXY_ROUTE: &str = "/v1/sandboxes/{id}/{*rest}";
/// Preview URLs by path (`crate::preview`): proxied to a port inside the sandbox, with their own access
/// rules and no body limit.
const PREVIEW_ROUTE: &str = "/v1/sandboxes/{id}/ports/{port}/{*rest}";
const PREVIEW_ROOT_ROUTE: &str = "/v1/sandboxes/{id}/ports/{port}/";

/// The whole API. `max_body_bytes` bounds the JSON bodies the daemon parses itself; `cors` says which
/// web origins may call it (none when `None`).
pub fn router(state: AppState, max_body_bytes: usize, cors: Option<cors::Cors>) -> Router {
    let app = Router::new()
        .route("/health", get(handlers::health))
        .route("/openapi.json", get(handlers::openapi_json))
        .route("/metrics", get(handlers::metrics))
        .route(
            "/v1/sandboxes",
            post(handlers::create_sandbox).get(handlers::list_sandboxes),
        )
        .route(
            "/v1/sandboxes/{id}",
            get(handlers::get_sandbox).delete(handlers::delete_sandbox),
        )
        .route("/v1/sandboxes/{id}/pause", post(handlers::pause_sandbox))
        .route("/v1/sandboxes/{id}/resume", post(handlers::resume_sandbox))
        .route(
            "/v1/sandboxes/{id}/connect",
            post(handlers::connect_sandbox),
        )
        .route(
            "/v1/sandboxes/{id}/timeout",
            post(handlers::set_sandbox_timeout),
        )
        .route(
            "/v1/sandboxes/{id}/network",
            get(network::get_network).put(network::put_network),
        )
        .route("/v1/sandboxes/{id}/ports", get(network::list_ports))
        .route(
            "/v1/sandboxes/{id}/ports/{port}",
            post(network::expose_port)
                .delete(network::close_port)
                .get(network::port_slash),
        )
        .route(PREVIEW_ROUTE, any(crate::preview::path_handler))
        .route(PREVIEW_ROOT_ROUTE, any(crate::preview::path_handler))
        .route(PROXY_ROUTE, any(handlers::proxy_to_agent))
        .route(
            "/v1/templates",
            get(handlers::list_templates).post(handlers::create_template),
        )
        .route(
            "/v1/templates/{name}",
            get(handlers::get_template).delete(handlers::delete_template),
        )
        .route("/v1/templates/{name}/build", get(handlers::template_build))
        .fallback(|req: Request| async move {
            ApiError::NotFound(format!(
                "no route for {} {}",
                req.method(),
                req.uri().path()
            ))
        })
        .method_not_allowed_fallback(|req: Request| async move {
            let (_, body) = sandpit_types::ErrorBody::method_not_allowed(
                req.method().as_str(),
                req.uri().path(),
            );
            ApiError::MethodNotAllowed(body.error.message)
        })
        .layer(middleware::from_fn_with_state(
            max_body_bytes,
            refuse_declared_oversize,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate));
    // Outside authentication: preflights carry no key, and refusals must be readable by the page.
    let app = match cors {
        Some(c) => app.layer(middleware::from_fn_with_state(Arc::new(c), cors::cors)),
        None => app,
    };
    app.layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), record_metrics))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str);
                    tracing::info_span!("request", method = %req.method(), route, path = %req.uri().path())
                })
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
        )
        // Outermost: preview host names never reach the API's routes, its key check, its limits, its
        // metrics or its INFO request log (a public preview's traffic would flood it: a tenth of the
        // daemon's time per request went to formatting that line; previews log at DEBUG).
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::preview::host_dispatch,
        ))
        .with_state(state)
}

/// The query parameter that may carry the key where a client cannot set headers (browser `WebSocket` and
/// `EventSource`). Removed before a request is proxied to an agent.
pub const ACCESS_TOKEN_PARAM: &str = "access_token";

/// Rejects every request but `/health` that lacks the API key.
async fn authenticate(State(s): State<AppState>, req: Request, next: Next) -> Response {
    // Preview paths check their own access (a port token, a public port, or this same key).
    let path = req.uri().path();
    if path == "/health" || crate::preview::is_preview_path(path) || is_authorized(&s.api_key, &req)
    {
        next.run(req).await
    } else {
        ApiError::Unauthenticated.into_response()
    }
}

pub(crate) fn is_authorized(key: &ApiKey, req: &Request) -> bool {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(axum::http::HeaderValue::as_bytes);
    key.verify_header(header)
        || axum::extract::Query::<Vec<(String, String)>>::try_from_uri(req.uri()).is_ok_and(|q| {
            q.0.iter()
                .any(|(k, v)| k == ACCESS_TOKEN_PARAM && key.verify(v.as_bytes()))
        })
}

/// Answers 413 at once when a body's declared `Content-Length` is over the limit, instead of reading
/// up to the limit first (or waiting for bytes a client announced and never sends). Proxied routes are
/// the proxy's to check, against the agent's limit.
async fn refuse_declared_oversize(State(max): State<usize>, req: Request, next: Next) -> Response {
    let proxied = req
        .extensions()
        .get::<MatchedPath>()
        .is_some_and(|p| [PROXY_ROUTE, PREVIEW_ROUTE, PREVIEW_ROOT_ROUTE].contains(&p.as_str()));
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if !proxied && declared.is_some_and(|n| n > max as u64) {
        return ApiError::PayloadTooLarge(format!("request body larger than {max} bytes"))
            .into_response();
    }
    next.run(req).await
}

/// Counts requests and times them to the response head (a stream's length is the client's business).
async fn record_metrics(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let route = match req
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str)
    {
        Some(PROXY_ROUTE) => proxied_route(req.uri().path()),
        Some(p) => p.to_owned(),
        None => "unmatched".to_owned(),
    };
    let method = req.method().clone();
    let start = Instant::now();
    let resp = next.run(req).await;
    s.metrics.observe(
        method.as_str(),
        &route,
        resp.status().as_u16(),
        start.elapsed(),
    );
    resp
}

/// Whether a proxied path (after `/v1/sandboxes/{id}/`) carries file content, whose bodies have no size
/// limit: `files` and `files/tar` (with or without a query string).
pub fn streams_file_content(rest: &str) -> bool {
    let path = rest.split('?').next().unwrap_or_default();
    matches!(path, "files" | "files/tar")
}

/// A route template for a proxied path, so that metrics tell `exec` from `events` without one series per
/// pid. Paths the agent API does not have share the catch-all template.
fn proxied_route(path: &str) -> String {
    let rest: Vec<&str> = path
        .splitn(5, '/')
        .nth(4)
        .unwrap_or_default()
        .split('/')
        .collect();
    let tail = match rest.as_slice() {
        ["exec"] => "exec",
        ["processes"] => "processes",
        ["processes", _] => "processes/{pid}",
        ["files"] => "files",
        ["files", "tar"] => "files/tar",
        ["fs"] => "fs",
        [
            "fs",
            verb @ ("stat" | "list" | "mkdir" | "move" | "chmod" | "chown" | "watch" | "watchers"),
        ] => {
            return format!("/v1/sandboxes/{{id}}/fs/{verb}");
        }
        ["fs", "watchers", _] => "fs/watchers/{watcher}",
        ["fs", "watchers", _, "events"] => "fs/watchers/{watcher}/events",
        ["processes", _, verb] => match *verb {
            "events" => "processes/{pid}/events",
            "ws" => "processes/{pid}/ws",
            "stdin" => "processes/{pid}/stdin",
            "signal" => "processes/{pid}/signal",
            "resize" => "processes/{pid}/resize",
            "wait" => "processes/{pid}/wait",
            _ => return PROXY_ROUTE.to_owned(),
        },
        _ => return PROXY_ROUTE.to_owned(),
    };
    format!("/v1/sandboxes/{{id}}/{tail}")
}

#[cfg(test)]
mod tests {
    use super::proxied_route;

    #[test]
    fn proxied_routes_are_templated() {
        assert_eq!(
            proxied_route("/v1/sandboxes/ab/exec"),
            "/v1/sandboxes/{id}/exec"
        );
        assert_eq!(
            proxied_route("/v1/sandboxes/ab/processes/12/events"),
            "/v1/sandboxes/{id}/processes/{pid}/events"
        );
        assert_eq!(
            proxied_route("/v1/sandboxes/ab/processes/p1"),
            "/v1/sandboxes/{id}/processes/{pid}"
        );
        assert_eq!(
            proxied_route("/v1/sandboxes/ab/files/tar"),
            "/v1/sandboxes/{id}/files/tar"
        );
        assert_eq!(
            proxied_route("/v1/sandboxes/ab/fs/watchers/w12/events"),
            "/v1/sandboxes/{id}/fs/watchers/{watcher}/events"
        );
        assert_eq!(
            proxied_route("/v1/sandboxes/ab/fs/stat"),
            "/v1/sandboxes/{id}/fs/stat"
        );
        assert!(super::streams_file_content("files?path=/x"));
        assert!(super::streams_file_content("files/tar"));
        assert!(!super::streams_file_content("exec"));
        assert_eq!(
            proxied_route("/v1/sandboxes/ab/whatever/1/2/3"),
            "/v1/sandboxes/{id}/{*rest}"
        );
    }
}
