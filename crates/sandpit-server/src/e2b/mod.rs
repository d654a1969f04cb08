//! E2B compatibility: the stock `e2b` SDKs (Python and TypeScript), pointed at sandpit by environment
//! variables, run unchanged.
//!
//! * the control API (`E2B_API_URL=http://ADDR/e2b`): [`control`];
//! * envd, the in-sandbox API (`E2B_SANDBOX_URL=http://ADDR/e2b/sandbox`, every call carrying
//!   `E2b-Sandbox-Id` and `X-Access-Token`): the Connect services `process.Process` ([`process`]) and
//!   `filesystem.Filesystem`, `GET/POST /files` and `GET /health` ([`filesystem`]), over [`connect`].
//!
//! The surface is a thin translation, nothing more: every E2B call becomes one or more calls to sandpit's
//! own API, sent in process to the daemon's router ([`E2b::call`]) with the caller's own credential (the
//! API key of `X-API-Key`, or the sandbox's access token of `X-Access-Token`). Authentication, tenants,
//! quotas, rate limits, the audit log, metrics and every error mapping are therefore sandpit's, and there is
//! no second process or file engine. What E2B has and sandpit does not is refused with a clear error, never
//! ignored (docs/e2b.md lists it).
//!
//! The E2B `envdAccessToken` of a sandbox is its sandpit access token, in a form the daemon can derive
//! again ([`E2b::envd_token`]): a second client's `Sandbox.connect` gets the same token as the creator, and
//! E2B's signed file URLs (a SHA-256 over the token) can be checked.

pub mod connect;
pub mod control;
pub mod filesystem;
pub mod process;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use axum::routing::{any, get, post};
use base64::Engine as _;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tower::ServiceExt as _;

use crate::api::AppState;
use sandpit_types::{ErrorBody, ErrorCode};

/// The envd version sandpit's surface answers as: the newest whose features the SDKs gate on (octet-stream
/// uploads, watch entries) that it implements.
pub const ENVD_VERSION: &str = "0.5.7";

/// What the E2B routes reach.
#[derive(Clone)]
pub struct E2b {
    app: AppState,
    /// sandpit's own API, called in process.
    inner: Router,
}

impl std::fmt::Debug for E2b {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("E2b").finish_non_exhaustive()
    }
}

/// A sandpit call that did not succeed: its status, code and message.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
}

/// Where the E2B surface lives on the daemon's own listener.
pub const PREFIX: &str = "/e2b";

/// The E2B routes under [`PREFIX`]: the control API at `/e2b`, envd at `/e2b/sandbox`. `inner` is
/// sandpit's own router, which every call is translated onto.
pub fn router(app: AppState, inner: Router) -> Router {
    let state = E2b { app, inner };
    control::routes()
        .nest(
            "/sandbox",
            envd_routes().route("/{*rest}", any(envd_no_route)),
        )
        .fallback(control::no_route)
        .with_state(state)
}

/// The E2B surface at the root of its own listener (`sandpit serve --e2b-listen ADDR`), for the SDK calls
/// that cannot carry a path prefix: the SDKs make `download_url`/`upload_url` root-relative (`/files?…`).
/// Both `E2B_API_URL` and `E2B_SANDBOX_URL` may point there.
pub fn root_router(app: AppState, inner: Router) -> Router {
    let state = E2b { app, inner };
    control::routes()
        .merge(envd_routes())
        .fallback(control::no_route)
        .with_state(state)
}

fn envd_routes() -> Router<E2b> {
    Router::new()
        .route("/process.Process/{method}", post(process::dispatch))
        .route(
            "/filesystem.Filesystem/{method}",
            post(filesystem::dispatch),
        )
        .route(
            "/files",
            get(filesystem::download)
                .post(filesystem::upload)
                // Uploads are streamed to the sandbox: any size.
                .layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/health", get(filesystem::health))
}

async fn envd_no_route(req: Request) -> Response {
    connect::RpcError::new(
        connect::Code::Unimplemented,
        format!(
            "{} {} is not part of envd's API as sandpit serves it",
            req.method(),
            req.uri().path()
        ),
    )
    .into_response_unary()
}

impl connect::RpcError {
    /// As a unary answer.
    pub fn into_response_unary(self) -> Response {
        axum::response::IntoResponse::into_response(self)
    }
}

/// The credential of an envd call and what it is about.
#[derive(Debug, Clone)]
pub struct EnvdCaller {
    pub sandbox: String,
    /// `Authorization: Bearer …` for the sandpit calls made on the caller's behalf.
    pub bearer: String,
    /// The sandbox user of the call (`Authorization: Basic base64("name:")`), the default when `None`.
    pub user: Option<String>,
}

impl EnvdCaller {
    /// Reads `X-Access-Token` (the sandbox's access token), `E2b-Sandbox-Id` (or the id inside the token)
    /// and the user of `Authorization: Basic`.
    pub fn from_headers(h: &HeaderMap) -> Result<Self, connect::RpcError> {
        use connect::{Code, RpcError};
        let token = h
            .get("x-access-token")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                RpcError::new(
                    Code::Unauthenticated,
                    "missing X-Access-Token: envd calls need the sandbox's envdAccessToken (the E2B SDK sends it \
                     when the sandbox was created or connected through E2B_API_URL)",
                )
            })?;
        let from_token = token
            .strip_prefix(crate::auth::SANDBOX_TOKEN_PREFIX)
            .and_then(|r| r.rsplit_once('_'))
            .map(|(id, _)| id.to_owned());
        let sandbox = h
            .get("e2b-sandbox-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or(from_token)
            .ok_or_else(|| RpcError::new(Code::Unauthenticated, "missing E2b-Sandbox-Id"))?;
        if sandbox.is_empty() || sandbox.contains('/') || sandbox.contains('?') {
            return Err(RpcError::invalid(format!(
                "E2b-Sandbox-Id {sandbox:?} is not a sandbox id"
            )));
        }
        Ok(Self {
            sandbox,
            bearer: token.to_owned(),
            user: basic_user(h)?,
        })
    }

    /// `/v1/sandboxes/{id}/{rest}`.
    pub fn path(&self, rest: &str) -> String {
        format!("/v1/sandboxes/{}/{rest}", self.sandbox)
    }

    /// `&user=…` when the call names a user.
    pub fn user_param(&self) -> String {
        self.user
            .as_deref()
            .map(|u| format!("&user={}", enc(u)))
            .unwrap_or_default()
    }
}

/// The user of `Authorization: Basic base64("name:")`, as E2B's SDKs select the user of a call.
fn basic_user(h: &HeaderMap) -> Result<Option<String>, connect::RpcError> {
    let Some(v) = h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let Some(b64) = v.strip_prefix("Basic ") else {
        return Ok(None);
    };
    let bad = || connect::RpcError::invalid("Authorization: Basic must be base64 of \"user:\"");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let name = text.split(':').next().unwrap_or_default();
    Ok((!name.is_empty()).then(|| name.to_owned()))
}

/// Percent-encodes a query value (every byte but unreserved ones).
pub fn enc(v: &str) -> String {
    percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string()
}

impl E2b {
    /// Sends one request to sandpit's own API.
    pub async fn call(&self, req: Request<Body>) -> Response {
        match self.inner.clone().oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        }
    }

    /// A request to sandpit's API as `bearer`, with a JSON body when `body` is given.
    pub fn request(
        method: Method,
        uri: &str,
        bearer: &str,
        body: Option<Vec<u8>>,
    ) -> Request<Body> {
        let mut b = Request::builder().method(method).uri(uri);
        if let Ok(v) = HeaderValue::from_str(&format!("Bearer {bearer}")) {
            b = b.header(header::AUTHORIZATION, v);
        }
        let body = match body {
            Some(json) => {
                b = b.header(header::CONTENT_TYPE, "application/json");
                Body::from(json)
            }
            None => Body::empty(),
        };
        b.body(body).unwrap_or_else(|_| Request::new(Body::empty()))
    }

    /// Calls sandpit and decodes a JSON answer (or its error).
    pub async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        uri: &str,
        bearer: &str,
        body: Option<&impl Serialize>,
    ) -> Result<(StatusCode, T), Upstream> {
        let body = body.map(|b| serde_json::to_vec(b).unwrap_or_default());
        let resp = self.call(Self::request(method, uri, bearer, body)).await;
        let status = resp.status();
        if !status.is_success() {
            return Err(upstream_error(resp).await);
        }
        let bytes = axum::body::to_bytes(resp.into_body(), 64 << 20)
            .await
            .map_err(|e| Upstream::internal(format!("cannot read sandpit's answer: {e}")))?;
        let bytes = if bytes.is_empty() {
            &b"null"[..]
        } else {
            &bytes[..]
        };
        serde_json::from_slice(bytes)
            .map(|v| (status, v))
            .map_err(|e| Upstream::internal(format!("cannot decode sandpit's answer: {e}")))
    }

    /// Calls sandpit for its status only (the body, if any, is dropped).
    pub async fn status(
        &self,
        method: Method,
        uri: &str,
        bearer: &str,
        body: Option<&impl Serialize>,
    ) -> Result<StatusCode, Upstream> {
        self.json::<serde_json::Value>(method, uri, bearer, body)
            .await
            .map(|(s, _)| s)
    }

    /// The E2B `envdAccessToken` of sandbox `id`: a sandpit access token whose secret is derived from the
    /// daemon's signing secret, so that it can be handed to a second client and checked in E2B's signed URLs.
    pub fn envd_token(&self, id: &str) -> String {
        format!(
            "{}{id}_{}",
            crate::auth::SANDBOX_TOKEN_PREFIX,
            self.app.signer.derive("e2b-envd-access-token", id)
        )
    }

    /// Makes [`Self::envd_token`] sandbox `id`'s access token, unless it already is (any earlier token of
    /// the sandbox stops working then).
    pub async fn ensure_envd_token(&self, id: &str) -> Result<String, Upstream> {
        let token = self.envd_token(id);
        if !self.app.keys.sandbox_token_is(id, &token) {
            self.app
                .keys
                .install_sandbox_token(id, &token)
                .await
                .map_err(|e| Upstream::internal(format!("cannot store the access token: {e}")))?;
        }
        Ok(token)
    }
}

impl Upstream {
    pub fn internal(message: String) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: ErrorCode::Internal,
            message,
        }
    }
}

/// The error of a sandpit answer that is not a success.
pub async fn upstream_error(resp: Response) -> Upstream {
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    match serde_json::from_slice::<ErrorBody>(&bytes) {
        Ok(b) => Upstream {
            status,
            code: b.error.code,
            message: b.error.message,
        },
        Err(_) => Upstream {
            status,
            code: if status.is_server_error() {
                ErrorCode::Internal
            } else {
                ErrorCode::InvalidArgument
            },
            message: String::from_utf8_lossy(&bytes).into_owned(),
        },
    }
}

/// Shared by the handlers that need the daemon's state.
impl E2b {
    pub fn app(&self) -> &AppState {
        &self.app
    }
}

/// `Arc` so that streaming tasks can hold the surface.
pub type Shared = Arc<E2b>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_comes_from_basic_auth() {
        let mut h = HeaderMap::new();
        assert_eq!(basic_user(&h).unwrap(), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic cm9vdDo="),
        ); // root:
        assert_eq!(basic_user(&h).unwrap().as_deref(), Some("root"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic !!"));
        assert!(basic_user(&h).is_err());
    }

    #[test]
    fn the_sandbox_id_comes_from_the_header_or_the_token() {
        let mut h = HeaderMap::new();
        assert_eq!(
            EnvdCaller::from_headers(&h).unwrap_err().code,
            connect::Code::Unauthenticated
        );
        h.insert("x-access-token", HeaderValue::from_static("spa_sb-1_abc"));
        assert_eq!(EnvdCaller::from_headers(&h).unwrap().sandbox, "sb-1");
        h.insert("e2b-sandbox-id", HeaderValue::from_static("sb-2"));
        let c = EnvdCaller::from_headers(&h).unwrap();
        assert_eq!(
            (c.sandbox.as_str(), c.bearer.as_str()),
            ("sb-2", "spa_sb-1_abc")
        );
        assert_eq!(c.path("fs/stat"), "/v1/sandboxes/sb-2/fs/stat");
    }
}
