//! Preview URLs: HTTP (and WebSocket) to any TCP server inside a sandbox, through the daemon.
//!
//! Two forms, served on the daemon's own listener:
//! * host: `{port}-{id}.{preview_domain}` (default `localhost`, so `http://8000-ID.localhost:7070/`
//!   works in a browser with no DNS set-up), dispatched by [`host_dispatch`] before any API route;
//! * path: `/v1/sandboxes/{id}/ports/{port}/…`.
//!
//! Access ([`crate::tokens`]): a public port is open; a private one needs its port-scoped token
//! (`X-Sandpit-Token`, or `?sandpit_token=` once, which answers with an `HttpOnly` cookie for that host —
//! or that path — and a redirect to the same URL without the token), or the daemon's API key. The
//! caller's `Authorization`, its token, its cookie and the API key parameter are removed before the
//! request reaches the sandbox; `X-Forwarded-For/-Host/-Proto` (and `-Prefix` for the path form) are set.
//!
//! The way in is a TCP connection to `127.0.0.1:{port}` (then `::1`) made from a socket the backend
//! creates inside the sandbox's network namespace (`isolate`): a server bound to the sandbox's loopback
//! is reachable, the sandbox needs no network link, and no process of the sandbox relays the bytes.
//! Backends without such a namespace (`process`) use the agent's port tunnel instead
//! (`/ports/{port}/connect` upgraded to raw TCP over the agent's unix socket). Either connection
//! carries HTTP/1.1 to the server and is pooled per `(sandbox, port)` by hyper's client, so a
//! keep-alive connection serves many requests. A paused sandbox is resumed by the first request.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt as _;
use hyper::upgrade::Upgraded;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use sandpit_types::ErrorCode;
use sandpit_types::network::{PORT_TOKEN_COOKIE, PORT_TOKEN_HEADER, PORT_TOKEN_PARAM};
use tokio::net::UnixStream;

use crate::api::AppState;
use crate::api::error::ApiError;
use crate::engine::Engine;
use crate::tokens::Grant;

/// The agent's tunnel protocol (see `sandpit_agent::api::ports`).
const TUNNEL_PROTOCOL: &str = "sandpit-tcp";

/// Preview settings and the pooled client.
#[derive(Debug, Clone)]
pub struct Preview {
    pub domain: String,
    pub strip_origin: bool,
    /// `https` when the daemon serves TLS.
    pub scheme: &'static str,
    /// The daemon's listening port, for the URLs it hands out.
    pub listen_port: u16,
    client: Client<Tunnels, Body>,
}

impl Preview {
    pub fn new(
        engine: Arc<Engine>,
        domain: String,
        strip_origin: bool,
        tls: bool,
        listen_port: u16,
    ) -> Self {
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .build(Tunnels { engine });
        Self {
            domain,
            strip_origin,
            scheme: if tls { "https" } else { "http" },
            listen_port,
            client,
        }
    }

    /// `http` or `https`: what this listener speaks.
    pub fn scheme(&self) -> &'static str {
        self.scheme
    }

    /// `{domain}[:port]`: what follows `{port}-{id}.` in a preview host.
    pub fn host_suffix(&self) -> String {
        let default = (self.scheme == "http" && self.listen_port == 80)
            || (self.scheme == "https" && self.listen_port == 443);
        if default {
            self.domain.clone()
        } else {
            format!("{}:{}", self.domain, self.listen_port)
        }
    }

    /// `http://{port}-{id}.{domain}[:port]/`.
    pub fn url(&self, id: &str, port: u16) -> String {
        format!("{}://{port}-{id}.{}/", self.scheme, self.host_suffix())
    }

    /// `(port, sandbox id)` when `host` is a preview host name of this daemon.
    pub fn parse_host(&self, host: &str) -> Option<(u16, String)> {
        let host = host.rsplit_once(':').map_or(host, |(h, p)| {
            if p.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                host
            }
        });
        let label = host
            .to_ascii_lowercase()
            .strip_suffix(&format!(".{}", self.domain.to_ascii_lowercase()))?
            .to_owned();
        let (port, id) = label.split_once('-')?;
        let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
        (!id.is_empty() && !id.contains('.')).then(|| (port, id.to_owned()))
    }
}

/// Routes preview host names to [`serve`] before anything else sees the request.
pub async fn host_dispatch(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned()));
    match host.and_then(|h| s.preview.parse_host(&h)) {
        Some((port, id)) => serve(&s, &id, port, req, None).await,
        None => next.run(req).await,
    }
}

/// Whether `path` is the path form of a preview URL (the handler checks access itself).
pub fn is_preview_path(path: &str) -> bool {
    let parts: Vec<&str> = path.splitn(7, '/').collect();
    // "", "v1", "sandboxes", id, "ports", port, rest (present even when empty: "…/8000/")
    parts.len() == 7
        && parts[1] == "v1"
        && parts[2] == "sandboxes"
        && parts[4] == "ports"
        && parts[5].parse::<u16>().is_ok()
}

/// The path form: `/v1/sandboxes/{id}/ports/{port}/…`.
pub async fn path_handler(State(s): State<AppState>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let parts: Vec<&str> = path.splitn(7, '/').collect();
    if !is_preview_path(&path) {
        return ApiError::NotFound(format!("no route for {path}")).into_response();
    }
    let (id, port) = (parts[3].to_owned(), parts[5].parse::<u16>().unwrap_or(0));
    if port == 0 {
        return ApiError::InvalidArgument("port must be 1-65535".into()).into_response();
    }
    let prefix = format!("/v1/sandboxes/{id}/ports/{port}");
    serve(&s, &id, port, req, Some(prefix)).await
}

/// The header E2B's SDKs document for a sandbox's traffic access token (`crate::e2b`): read like
/// [`PORT_TOKEN_HEADER`], and likewise never passed to the sandbox.
pub const E2B_TRAFFIC_TOKEN_HEADER: &str = "e2b-traffic-access-token";

fn token_of(req: &Request) -> (Option<String>, bool) {
    if let Some(t) = req
        .headers()
        .get(PORT_TOKEN_HEADER)
        .or_else(|| req.headers().get(E2B_TRAFFIC_TOKEN_HEADER))
        .and_then(|v| v.to_str().ok())
    {
        return (Some(t.trim().to_owned()), false);
    }
    if let Some(t) = query_pairs(req.uri())
        .into_iter()
        .find(|(k, _)| k == PORT_TOKEN_PARAM)
        .map(|(_, v)| v)
    {
        return (Some(t), true);
    }
    let cookie = req
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == PORT_TOKEN_COOKIE)
        .map(|(_, v)| v.to_owned());
    (cookie, false)
}

fn query_pairs(uri: &Uri) -> Vec<(String, String)> {
    axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map(|q| q.0)
        .unwrap_or_default()
}

/// The query without sandpit's own parameters.
fn clean_query(uri: &Uri) -> Option<String> {
    let q = uri.query()?;
    let kept: Vec<&str> = q
        .split('&')
        .filter(|kv| {
            let k = kv.split('=').next().unwrap_or_default();
            k != PORT_TOKEN_PARAM && k != crate::api::ACCESS_TOKEN_PARAM
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join("&"))
}

fn error(code: ErrorCode, message: String) -> Response {
    let status = StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::BAD_GATEWAY);
    (
        status,
        axum::Json(sandpit_types::ErrorBody::new(code, message)),
    )
        .into_response()
}

async fn serve(
    s: &AppState,
    id: &str,
    port: u16,
    req: Request,
    prefix: Option<String>,
) -> Response {
    let (token, from_query) = token_of(&req);
    let grant = s.ports.check(id, port, token.as_deref());
    let key_ok = crate::api::key_may_use(s, &req, id);
    if grant == Grant::Denied && !key_ok {
        return error(
            ErrorCode::Unauthenticated,
            format!(
                "port {port} of sandbox {id} is private: send its token (header X-Sandpit-Token, or \
                 ?sandpit_token= once in a browser), or expose it with \"public\": true"
            ),
        );
    }
    // A token in the URL becomes a cookie, and the browser is sent to the same URL without it.
    if from_query && grant == Grant::Token && matches!(*req.method(), Method::GET | Method::HEAD) {
        let path = req.uri().path();
        let loc = match clean_query(req.uri()) {
            Some(q) => format!("{path}?{q}"),
            None => path.to_owned(),
        };
        let cookie_path = prefix
            .as_deref()
            .map_or_else(|| "/".to_owned(), |p| format!("{p}/"));
        let secure = if s.preview.scheme == "https" {
            "; Secure"
        } else {
            ""
        };
        let cookie = format!(
            "{PORT_TOKEN_COOKIE}={}; Path={cookie_path}; HttpOnly; SameSite=Lax{secure}",
            token.unwrap_or_default()
        );
        let mut resp = StatusCode::FOUND.into_response();
        if let (Ok(l), Ok(c)) = (HeaderValue::from_str(&loc), HeaderValue::from_str(&cookie)) {
            resp.headers_mut().insert(header::LOCATION, l);
            resp.headers_mut().insert(header::SET_COOKIE, c);
        }
        return resp;
    }
    let method = req.method().clone();
    let resp = match forward(s, id, port, req, prefix.as_deref()).await {
        Ok(r) => r,
        Err(e) => e,
    };
    tracing::debug!(sandbox = %id, port, %method, status = resp.status().as_u16(), "preview request");
    resp
}

/// Strips the caller's credentials (and only sandpit's own cookie) and adds `X-Forwarded-*`.
fn outgoing_headers(
    s: &AppState,
    from: &HeaderMap,
    prefix: Option<&str>,
    client: Option<&str>,
) -> HeaderMap {
    let mut h = HeaderMap::new();
    crate::proxy::copy_end_to_end(from, &mut h);
    h.remove(header::AUTHORIZATION);
    h.remove(PORT_TOKEN_HEADER);
    h.remove(E2B_TRAFFIC_TOKEN_HEADER);
    h.remove(header::COOKIE);
    let cookies: Vec<&str> = from
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|c| !c.is_empty() && c.split('=').next() != Some(PORT_TOKEN_COOKIE))
        .collect();
    if let Ok(v) = HeaderValue::from_str(&cookies.join("; ")) {
        if !cookies.is_empty() {
            h.insert(header::COOKIE, v);
        }
    }
    if s.preview.strip_origin && from.contains_key(header::UPGRADE) {
        h.remove(header::ORIGIN);
    }
    let forwarded_for = match (
        from.get("x-forwarded-for").and_then(|v| v.to_str().ok()),
        client,
    ) {
        (Some(prev), Some(c)) => Some(format!("{prev}, {c}")),
        (None, Some(c)) => Some(c.to_owned()),
        (Some(prev), None) => Some(prev.to_owned()),
        (None, None) => None,
    };
    if let Some(v) = forwarded_for.and_then(|v| HeaderValue::from_str(&v).ok()) {
        h.insert("x-forwarded-for", v);
    }
    if let Some(host) = from.get(header::HOST) {
        h.insert("x-forwarded-host", host.clone());
    }
    h.insert(
        "x-forwarded-proto",
        HeaderValue::from_static(s.preview.scheme),
    );
    if let Some(p) = prefix.and_then(|p| HeaderValue::from_str(p).ok()) {
        h.insert("x-forwarded-prefix", p);
    }
    h
}

async fn forward(
    s: &AppState,
    id: &str,
    port: u16,
    mut req: Request,
    prefix: Option<&str>,
) -> Result<Response, Response> {
    // Resumes a paused sandbox; a missing or dead one is the engine's error.
    s.engine
        .agent_socket(id)
        .await
        .map_err(|e| ApiError::from(e).into_response())?;
    let path = req.uri().path();
    let rest = prefix.map_or(path, |p| path.strip_prefix(p).unwrap_or(path));
    let rest = if rest.is_empty() { "/" } else { rest };
    let pq = match clean_query(req.uri()) {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_owned(),
    };
    let uri: Uri = format!("http://{port}.{id}.tunnel{pq}")
        .parse()
        .map_err(|_| ApiError::InvalidArgument("bad request path".into()).into_response())?;
    let client_ip = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string());
    let upgrade = crate::proxy::wants_upgrade(req.headers()).then(|| {
        let proto = req.headers().get(header::UPGRADE).cloned();
        (hyper::upgrade::on(&mut req), proto)
    });
    let mut headers = outgoing_headers(s, req.headers(), prefix, client_ip.as_deref());
    if let Some(host) = req.headers().get(header::HOST).cloned() {
        headers.insert(header::HOST, host);
    } else if let Some(a) = req
        .uri()
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        headers.insert(header::HOST, a);
    }
    let client_upgrade = upgrade.map(|(on, proto)| {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Some(p) = proto {
            headers.insert(header::UPGRADE, p);
        }
        on
    });
    let (parts, body) = req.into_parts();
    let mut out = hyper::Request::builder()
        .method(parts.method)
        .uri(uri)
        .version(hyper::Version::HTTP_11)
        .body(body)
        .map_err(|e| ApiError::InvalidArgument(e.to_string()).into_response())?;
    *out.headers_mut() = headers;
    let mut resp = s.preview.client.request(out).await.map_err(|e| {
        let msg = tunnel_message(&e).unwrap_or_else(|| {
            format!("the server on port {port} in sandbox {id} did not answer: {e}")
        });
        error(ErrorCode::BadGateway, msg)
    })?;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let server_upgrade = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                if let Ok((c, u)) = tokio::try_join!(client_upgrade, server_upgrade) {
                    let mut c = TokioIo::new(c);
                    let mut u = TokioIo::new(u);
                    let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
                }
            });
        }
        let (parts, _) = resp.into_parts();
        return Ok(Response::from_parts(parts, Body::empty()));
    }
    let (mut parts, body) = resp.into_parts();
    let headers = std::mem::take(&mut parts.headers);
    crate::proxy::copy_end_to_end(&headers, &mut parts.headers);
    Ok(Response::from_parts(parts, Body::new(body)))
}

/// The agent's own words when a tunnel could not be opened (nothing listening, sandbox gone).
fn tunnel_message(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<TunnelError>() {
            return Some(t.0.clone());
        }
        cur = err.source();
    }
    None
}

/// Why a tunnel could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TunnelError(String);

/// The connector of the pooled client: `http://{port}.{id}.tunnel/` dials the agent of sandbox `id`
/// and upgrades to a raw TCP connection to `port` inside it.
#[derive(Debug, Clone)]
struct Tunnels {
    engine: Arc<Engine>,
}

impl tower::Service<Uri> for Tunnels {
    type Response = TunnelIo;
    type Error = TunnelError;
    type Future = Pin<Box<dyn Future<Output = Result<TunnelIo, TunnelError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let engine = self.engine.clone();
        Box::pin(async move {
            let host = uri.host().unwrap_or_default().to_owned();
            let mut parts = host.splitn(3, '.');
            let port: u16 = parts
                .next()
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| TunnelError("bad tunnel address".into()))?;
            let id = parts.next().unwrap_or_default().to_owned();
            let socket = engine
                .agent_socket(&id)
                .await
                .map_err(|e| TunnelError(e.to_string()))?;
            match direct(&engine, &id, port).await? {
                Some(io) => Ok(io),
                None => dial(socket, port).await,
            }
        })
    }
}

/// Connects straight to the server from inside the sandbox's network namespace, when the backend can
/// make a socket there (`127.0.0.1`, then `::1`, as the agent's tunnel does): no process of the
/// sandbox relays the bytes. `None`: the backend cannot; use the agent's tunnel.
async fn direct(engine: &Engine, id: &str, port: u16) -> Result<Option<TunnelIo>, TunnelError> {
    let mut first_err = None;
    for v6 in [false, true] {
        let fd = match engine.port_socket(id, v6).await {
            Ok(Some(fd)) => fd,
            Ok(None) => return Ok(None),
            Err(e) => return Err(TunnelError(e.to_string())),
        };
        let socket = tokio::net::TcpSocket::from_std_stream(std::net::TcpStream::from(fd));
        let addr: std::net::SocketAddr = if v6 {
            (std::net::Ipv6Addr::LOCALHOST, port).into()
        } else {
            (std::net::Ipv4Addr::LOCALHOST, port).into()
        };
        match socket.connect(addr).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(Some(TunnelIo::Direct(TokioIo::new(stream))));
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    Err(TunnelError(format!(
        "nothing is listening on port {port} in the sandbox ({})",
        first_err.map(|e| e.to_string()).unwrap_or_default()
    )))
}

async fn dial(socket: PathBuf, port: u16) -> Result<TunnelIo, TunnelError> {
    let stream = UnixStream::connect(&socket)
        .await
        .map_err(|e| TunnelError(format!("cannot reach the sandbox's agent: {e}")))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Body>(TokioIo::new(stream))
        .await
        .map_err(|e| TunnelError(format!("cannot reach the sandbox's agent: {e}")))?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let req = hyper::Request::get(format!("/ports/{port}/connect"))
        .header(header::HOST, "sandpit-agent")
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, TUNNEL_PROTOCOL)
        .body(Body::empty())
        .map_err(|e| TunnelError(e.to_string()))?;
    let mut resp = sender
        .send_request(req)
        .await
        .map_err(|e| TunnelError(format!("the sandbox's agent did not answer: {e}")))?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let body = resp
            .into_body()
            .collect()
            .await
            .map(http_body_util::Collected::to_bytes)
            .unwrap_or_default();
        let msg = serde_json::from_slice::<sandpit_types::ErrorBody>(&body).map_or_else(
            |_| format!("nothing is listening on port {port} in the sandbox"),
            |b| b.error.message,
        );
        return Err(TunnelError(msg));
    }
    let up = hyper::upgrade::on(&mut resp)
        .await
        .map_err(|e| TunnelError(format!("the port tunnel failed: {e}")))?;
    Ok(TunnelIo::Agent(up))
}

/// A connection to a server in a sandbox, as the pooled client's connection: the agent's tunnel, or a
/// socket made in the sandbox's network namespace.
enum TunnelIo {
    Agent(Upgraded),
    Direct(TokioIo<tokio::net::TcpStream>),
}

impl Connection for TunnelIo {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for TunnelIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Agent(u) => Pin::new(u).poll_read(cx, buf),
            Self::Direct(t) => Pin::new(t).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for TunnelIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Agent(u) => Pin::new(u).poll_write(cx, buf),
            Self::Direct(t) => Pin::new(t).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Agent(u) => Pin::new(u).poll_flush(cx),
            Self::Direct(t) => Pin::new(t).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Agent(u) => Pin::new(u).poll_shutdown(cx),
            Self::Direct(t) => Pin::new(t).poll_shutdown(cx),
        }
    }
}

impl std::fmt::Debug for TunnelIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Agent(_) => "TunnelIo::Agent",
            Self::Direct(_) => "TunnelIo::Direct",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preview_paths() {
        assert!(is_preview_path("/v1/sandboxes/ab/ports/8000/"));
        assert!(is_preview_path("/v1/sandboxes/ab/ports/8000/x/y"));
        assert!(!is_preview_path("/v1/sandboxes/ab/ports/8000"));
        assert!(!is_preview_path("/v1/sandboxes/ab/ports/http/"));
        assert!(!is_preview_path("/v1/sandboxes/ab/exec"));
    }
}
