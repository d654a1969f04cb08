//! The HTTP surface of the daemon: the router, its middleware (CORS, auth, metrics, a tracing span per
//! request, body limits) and the handlers. Handlers only translate; decisions live in the [`Engine`].

pub mod audit;
pub mod cors;
pub mod error;
pub mod extract;
pub mod handlers;
pub mod keys;
pub mod network;
pub mod observe;
pub mod pools;
pub mod revoke;
pub mod signed;
pub mod snapshots;
pub mod tenants;
pub mod volumes;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use tower_http::trace::{DefaultOnResponse, TraceLayer};

use crate::auth::{Keys, Principal};
use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::templates::Templates;
use error::ApiError;
use sandpit_types::keys::Scope;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    /// Every key the daemon accepts.
    pub keys: Arc<Keys>,
    /// The audit log.
    pub audit: Arc<crate::audit::Audit>,
    /// Signs and checks signed file URLs.
    pub signer: Arc<crate::signing::Signer>,
    pub metrics: Arc<Metrics>,
    pub templates: Arc<Templates>,
    pub volumes: Arc<crate::volumes::Volumes>,
    /// The `OpenAPI` document, rendered once.
    pub openapi: Arc<String>,
    /// Exposed ports and their tokens.
    pub ports: Arc<crate::tokens::PortAccess>,
    /// Preview URL settings and the pooled client to sandbox ports.
    pub preview: Arc<crate::preview::Preview>,
    /// Lifecycle events.
    pub events: Arc<crate::events::Events>,
    pub webhooks: Arc<crate::webhooks::Webhooks>,
    /// Per-sandbox resource samples.
    pub sampler: Arc<crate::usage::Sampler>,
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
    routers(state, max_body_bytes, cors).0
}

/// The whole API (sandpit's and, under `/e2b`, E2B's), and the E2B surface alone at its root (for
/// `--e2b-listen`).
pub fn routers(
    state: AppState,
    max_body_bytes: usize,
    cors: Option<cors::Cors>,
) -> (Router, Router) {
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
        .route(
            "/v1/sandboxes/{id}/access-token",
            post(handlers::rotate_access_token),
        )
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
        .route(
            "/v1/sandboxes/{id}/files/signed-url",
            post(signed::signed_url),
        )
        .route(
            "/v1/sandboxes/{id}/snapshots",
            post(snapshots::create_snapshot),
        )
        .route("/v1/sandboxes/{id}/fork", post(snapshots::fork_sandbox))
        .route("/v1/sandboxes/{id}/events", get(observe::sandbox_events))
        .route(
            "/v1/sandboxes/{id}/events/stream",
            get(observe::stream_sandbox_events),
        )
        .route("/v1/sandboxes/{id}/metrics", get(observe::sandbox_metrics))
        .route(
            "/v1/sandboxes/{id}/metrics/stream",
            get(observe::stream_sandbox_metrics),
        )
        .route("/v1/events", get(observe::list_events))
        .route("/v1/events/stream", get(observe::stream_events))
        .route(
            "/v1/webhooks",
            post(observe::create_webhook).get(observe::list_webhooks),
        )
        .route(
            "/v1/webhooks/{id}",
            get(observe::get_webhook).delete(observe::delete_webhook),
        )
        .route(
            "/v1/webhooks/{id}/deliveries",
            get(observe::webhook_deliveries),
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
        .route(
            "/v1/templates/{name}/export",
            get(snapshots::export_template),
        )
        .route(
            "/v1/templates/{name}/pool",
            get(pools::get_pool).put(pools::set_pool),
        )
        .route(
            "/v1/volumes",
            get(volumes::list_volumes).post(volumes::create_volume),
        )
        .route(
            "/v1/volumes/{name}",
            get(volumes::get_volume).delete(volumes::delete_volume),
        )
        .route("/v1/keys", post(keys::create_key).get(keys::list_keys))
        .route("/v1/keys/{id}", axum::routing::delete(keys::revoke_key))
        .route("/v1/audit", get(audit::read_audit))
        .route("/v1/tenants", get(tenants::list_tenants))
        .route(
            "/v1/tenants/{name}",
            get(tenants::get_tenant).put(tenants::put_tenant),
        )
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
            state.audit.clone(),
            crate::audit::record,
        ))
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
    let api = app
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), record_metrics))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str);
                    tracing::info_span!("request", method = %req.method(), route, path = %req.uri().path())
                })
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
        )
        .with_state(state.clone());
    // The E2B surface translates onto the API above, called in process.
    let e2b_root = crate::e2b::root_router(state.clone(), api.clone());
    let main = Router::new()
        .nest(
            crate::e2b::PREFIX,
            crate::e2b::router(state.clone(), api.clone()),
        )
        // The web console's page and bundle (no key: the page signs in through the API).
        .merge(crate::console::router())
        .fallback_service(api)
        // Outermost: preview host names never reach the API's routes (nor E2B's), its key check, its
        // limits, its metrics or its INFO request log (a public preview's traffic would flood it: a tenth
        // of the daemon's time per request went to formatting that line; previews log at DEBUG).
        .layer(middleware::from_fn_with_state(
            state,
            crate::preview::host_dispatch,
        ));
    (main, e2b_root)
}

/// The query parameter that may carry the key where a client cannot set headers (browser `WebSocket` and
/// `EventSource`). Removed before a request is proxied to an agent.
pub const ACCESS_TOKEN_PARAM: &str = "access_token";

/// Rejects every request but `/health` that lacks a valid key, and every request the key's scopes do
/// not allow (403 `permission_denied`); the principal goes into the request's extensions.
async fn authenticate(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    // Preview paths check their own access (a port token, a public port, or a key).
    let path = req.uri().path();
    if path == "/health" || crate::preview::is_preview_path(path) {
        return next.run(req).await;
    }
    let mut who = match principal_of(&s.keys, &req)
        .map(Ok)
        .or_else(|| verify_signed(&s, &req))
    {
        Some(Ok(who)) => who,
        // A signed URL that does not open anything says why.
        Some(Err(why)) => return ApiError::Forbidden(why.to_string()).into_response(),
        None => return ApiError::Unauthenticated.into_response(),
    };
    // A sandbox's token acts for that sandbox's tenant.
    if let Some(t) = who.sandbox.as_deref().and_then(|id| s.engine.tenant_of(id)) {
        who.tenant = t;
    }
    if let Err(e) = check_scope(&who, &req) {
        crate::audit::denied(&s.audit, &who, &req, 403);
        return e.into_response();
    }
    if let Some(id) = sandbox_in_path(req.uri().path()) {
        if !may_reach(&s.engine, &who, id) {
            crate::audit::denied(&s.audit, &who, &req, 404);
            // Exactly what a sandbox that does not exist answers: another tenant's ids are not an oracle.
            return ApiError::from(crate::engine::EngineError::NotFound(id.to_owned()))
                .into_response();
        }
    }
    req.extensions_mut().insert(who.clone());
    revoke::revocable(next.run(req).await, s.keys.clone(), who)
}

/// For a request that carries a signature (and no key): the principal its signed file URL acts as
/// (`crate::signing`), or why the URL opens nothing.
fn verify_signed(
    s: &AppState,
    req: &Request,
) -> Option<Result<Principal, crate::signing::SignedUrlError>> {
    let query = req.uri().query()?;
    if !query.split('&').any(|kv| kv.starts_with("signature=")) {
        return None;
    }
    Some(s.signer.verify(
        req.method(),
        req.uri().path(),
        query,
        crate::time::now_ms(),
        |id| s.engine.tenant_of(id),
        |signer| s.keys.signer_valid(signer),
    ))
}

/// The sandbox id of a `/v1/sandboxes/{id}…` path.
fn sandbox_in_path(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v1/sandboxes/")?;
    let id = rest.split('/').next().unwrap_or_default();
    (!id.is_empty()).then_some(id)
}

/// Whether `who` may reach sandbox `id` at all: an admin key reaches every sandbox, any other key only
/// its own tenant's (a sandbox that is not recorded is nobody's).
pub(crate) fn may_reach(engine: &crate::engine::Engine, who: &Principal, id: &str) -> bool {
    if let Some(own) = &who.sandbox {
        return own == id;
    }
    who.has(Scope::Admin) || engine.tenant_of(id).is_some_and(|t| t == who.tenant)
}

/// What a sandbox's access token may do: use its sandbox (processes, files, ports, pause/resume, info),
/// not delete it, rotate its token, change its deadline or network policy, nor reach anything else.
fn check_sandbox_token(req: &Request) -> Result<(), ApiError> {
    use axum::http::Method;
    let path = req.uri().path();
    let method = req.method();
    let refuse = |what: &str| {
        Err(ApiError::Forbidden(format!(
            "{method} {path}: a sandbox access token {what}; use an API key"
        )))
    };
    let Some(id) = sandbox_in_path(path) else {
        return refuse("reaches only its own sandbox");
    };
    let rest = &path["/v1/sandboxes/".len() + id.len()..];
    match (rest, method) {
        ("" | "/", &Method::GET) => Ok(()),
        ("" | "/", _) => refuse("cannot delete its sandbox"),
        ("/access-token" | "/timeout", _) => refuse("cannot rotate itself or change the deadline"),
        ("/network", m) if m != Method::GET => refuse("cannot change the network policy"),
        ("/snapshots" | "/fork", _) => refuse("cannot snapshot or fork its sandbox"),
        _ => Ok(()),
    }
}

/// Whether the key `req` carries may use sandbox `id` for this request (preview URLs ask this).
pub(crate) fn key_may_use(s: &AppState, req: &Request, id: &str) -> bool {
    principal_of(&s.keys, req)
        .is_some_and(|who| check_scope(&who, req).is_ok() && may_reach(&s.engine, &who, id))
}

/// The one place that says what each scope may do (see [`Scope`]).
fn check_scope(who: &Principal, req: &Request) -> Result<(), ApiError> {
    if who.sandbox.is_some() {
        return check_sandbox_token(req);
    }
    if who.has(Scope::Admin) {
        return Ok(());
    }
    let path = req.uri().path();
    let method = req.method();
    // Template imports read host paths with the daemon's privileges. (Deletes are the handler's to
    // judge: a tenant may delete its own snapshots.)
    let template_admin = (path == "/v1/templates" && method == axum::http::Method::POST)
        || (path.starts_with("/v1/templates/")
            && path.ends_with("/pool")
            && method == axum::http::Method::PUT);
    // Quotas are set by an admin; a tenant may read its own (`GET /v1/tenants/{name}`).
    let tenant_admin = path == "/v1/tenants"
        || (path.starts_with("/v1/tenants/") && method != axum::http::Method::GET);
    let admin_only = path == "/metrics"
        || path == "/v1/audit"
        || path == "/v1/webhooks"
        || path.starts_with("/v1/webhooks/")
        || path == "/v1/keys"
        || path.starts_with("/v1/keys/")
        || template_admin
        || tenant_admin;
    if admin_only {
        return Err(ApiError::Forbidden(format!(
            "{} {path} needs a key with the `admin` scope; this key ({}) has {}",
            req.method(),
            who.key_id,
            scope_list(who)
        )));
    }
    if who.has(Scope::Sandboxes) {
        return Ok(());
    }
    let reading = matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    ) && !req.headers().contains_key(header::UPGRADE);
    if who.has(Scope::Read) && reading {
        return Ok(());
    }
    Err(ApiError::Forbidden(format!(
        "{} {path} needs a key with the `sandboxes` scope; this key ({}) has {} (reads only: GET, no \
         WebSocket)",
        req.method(),
        who.key_id,
        scope_list(who)
    )))
}

fn scope_list(who: &Principal) -> String {
    who.scopes
        .iter()
        .map(|s| format!("`{}`", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The principal of the key a request carries (`Authorization: Bearer`, or `?access_token=` where a
/// browser cannot set headers), if it is valid.
pub(crate) fn principal_of(keys: &Keys, req: &Request) -> Option<Principal> {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(axum::http::HeaderValue::as_bytes);
    if let Some(who) = crate::auth::bearer_token(header).and_then(|t| keys.resolve(t)) {
        return Some(who);
    }
    let q = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(req.uri()).ok()?;
    q.0.iter()
        .filter(|(k, _)| k == ACCESS_TOKEN_PARAM)
        .find_map(|(_, v)| keys.resolve(v.as_bytes()))
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
    // A template archive upload is streamed to disk, never parsed in memory: any size.
    let upload = req.uri().path() == "/v1/templates" && handlers::is_archive_upload(req.headers());
    if !proxied && !upload && declared.is_some_and(|n| n > max as u64) {
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
