//! The reverse proxy from `/v1/sandboxes/{id}/…` to a sandbox's agent over its unix socket.
//!
//! The daemon never interprets process traffic: request and response bodies are handed through as streams
//! (so SSE arrives event by event and large stdin writes are never held in memory), and WebSocket upgrades
//! are completed on both sides and then spliced ([`splice`]). Only hop-by-hop headers and the
//! client's credentials are dropped on the way: the API key is the daemon's, never the sandbox's.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use http_body_util::{LengthLimitError, Limited};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, BufReader};
use tokio::net::UnixStream;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The agent socket did not accept the connection: the agent is probably gone.
    #[error("cannot connect to the agent socket: {0}")]
    Connect(String),
    /// The connection broke before a response head arrived.
    #[error("the agent did not answer: {0}")]
    Exchange(String),
    #[error("cannot build the proxied request: {0}")]
    Build(String),
    /// The request body is over the agent's limit ([`sandpit_types::MAX_AGENT_BODY_BYTES`]).
    #[error(
        "request body larger than {} bytes",
        sandpit_types::MAX_AGENT_BODY_BYTES
    )]
    TooLarge,
    /// The client's request body broke off or was malformed (a bad chunk): the client's fault, not the
    /// agent's.
    #[error("cannot read the request body: {0}")]
    ClientBody(String),
}

/// Headers that describe one connection, not the message, and so must not cross a proxy (RFC 9110 7.6.1).
const HOP_BY_HOP: &[HeaderName] = &[
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// The daemon's HTTP/1 connections to agents, pooled per agent socket by hyper's client: a proxied call
/// takes an idle connection to its agent instead of connecting, accepting and handshaking on both sides
/// every time (each warm `exec` did). Idle connections are kept up to 10 s (well inside any idle limit
/// of the agent's server, so that the daemon never writes into a connection the agent is closing), at
/// most 8 per agent; a
/// request that a pooled connection turns out to be closed for (before anything was sent) is retried on
/// a new one by the client. Upgraded connections (WebSocket) are never pooled.
#[derive(Debug, Clone)]
pub struct AgentConns {
    client: Client<AgentSockets, Body>,
}

impl Default for AgentConns {
    fn default() -> Self {
        Self::new()
    }
}

impl AgentConns {
    pub fn new() -> Self {
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(std::time::Duration::from_secs(10))
            .pool_max_idle_per_host(8)
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(AgentSockets);
        Self { client }
    }

    /// One health check of the agent at `socket`: `GET /health` answered `200`. The caller bounds it
    /// in time. It goes over the pool like any call, so that an agent probed every second keeps one
    /// connection (a new connection per probe, connect, accept, handshake and close on both sides, was
    /// half of what an idle sandbox cost the host); a pooled connection the agent closed is replaced by
    /// the client, not mistaken for an agent that stopped answering.
    ///
    /// A failed exchange is tried once more: an agent that closed an idle connection just as the probe
    /// was sent on it is not an agent that stopped answering.
    pub async fn health(&self, socket: &Path) -> Result<(), String> {
        let uri = agent_uri(socket, "/health").map_err(|e| e.to_string())?;
        let req = || {
            Request::get(uri.clone())
                .body(Body::empty())
                .map_err(|e| e.to_string())
        };
        let status = match self.exchange(req()?).await {
            Ok(s) => s,
            Err(_) => self.exchange(req()?).await?,
        };
        check_health(status)
    }

    /// Replaces the sandbox-wide environment of the agent at `socket` (`PUT /_daemon/env`): how a
    /// sandbox taken from a warm pool gets its creator's environment. The caller bounds it in time.
    pub async fn put_env(
        &self,
        socket: &Path,
        env: &std::collections::BTreeMap<String, String>,
    ) -> Result<(), String> {
        let body = serde_json::to_vec(env).map_err(|e| e.to_string())?;
        let path = format!("/{AGENT_DAEMON_PREFIX}env");
        let req = Request::put(agent_uri(socket, &path).map_err(|e| e.to_string())?)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .map_err(|e| e.to_string())?;
        let status = self.exchange(req).await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("PUT {path} answered {status}"))
        }
    }

    /// Sends one of the daemon's own requests and reads the (small) answer to its end, so that the
    /// connection goes back to the pool; returns the status.
    /// Sends `req` (addressed with [`agent_uri`]) on a pooled connection.
    pub(crate) async fn request(
        &self,
        req: Request<Body>,
    ) -> Result<Response<hyper::body::Incoming>, ProxyError> {
        self.client.request(req).await.map_err(|e| client_error(&e))
    }

    async fn exchange(&self, req: Request<Body>) -> Result<StatusCode, String> {
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| match client_error(&e) {
                ProxyError::Connect(m) => format!("cannot connect: {m}"),
                other => other.to_string(),
            })?;
        let status = resp.status();
        http_body_util::BodyExt::collect(resp.into_body())
            .await
            .map_err(|e| e.to_string())?;
        Ok(status)
    }
}

/// The pooled client's connector: `http://{socket path, hex}.agent/` is the agent socket at that path.
#[derive(Debug, Clone)]
struct AgentSockets;

impl tower::Service<Uri> for AgentSockets {
    type Response = TokioIo<UnixStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Box::pin(async move {
            let socket = uri
                .host()
                .and_then(|h| h.strip_suffix(".agent"))
                .and_then(unhex)
                .ok_or_else(|| std::io::Error::other(format!("not an agent address: {uri}")))?;
            Ok(TokioIo::new(UnixStream::connect(socket).await?))
        })
    }
}

/// `http://{hex of socket}.agent{path_and_query}`: the pooled client's address of `socket`.
pub(crate) fn agent_uri(socket: &Path, path_and_query: &str) -> Result<Uri, ProxyError> {
    use std::fmt::Write as _;
    use std::os::unix::ffi::OsStrExt as _;
    let mut uri = String::from("http://");
    for b in socket.as_os_str().as_bytes() {
        let _ = write!(uri, "{b:02x}");
    }
    uri.push_str(".agent");
    uri.push_str(path_and_query);
    uri.parse()
        .map_err(|e| ProxyError::Build(format!("bad path: {e}")))
}

fn unhex(s: &str) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStringExt as _;
    if s.len() % 2 != 0 {
        return None;
    }
    let bytes = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    Some(PathBuf::from(std::ffi::OsString::from_vec(bytes)))
}

/// What a failed pooled exchange was, in [`ProxyError`]'s terms.
fn client_error(e: &hyper_util::client::legacy::Error) -> ProxyError {
    if e.is_connect() {
        return ProxyError::Connect(root_cause(e));
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = cause {
        if let Some(h) = c.downcast_ref::<hyper::Error>() {
            if caused_by_length_limit(h) {
                return ProxyError::TooLarge;
            }
            if h.is_user() {
                // Our request body's stream failed: that is the client's body, read as it is forwarded.
                return ProxyError::ClientBody(root_cause(h));
            }
            break;
        }
        cause = c.source();
    }
    ProxyError::Exchange(root_cause(e))
}

/// Sends `req` to the agent at `socket` as `path_and_query` and returns the agent's response, streaming.
///
/// Unless `unbounded` (file content, which may be any size and is streamed chunk by chunk), the body is
/// held to the agent's own limit on the way. Left to the agent alone, an oversized body raced: the
/// agent answers 413 and hangs up while the daemon is still writing, and whichever the daemon noticed
/// first decided between the agent's 413 and a 503 "agent not answering".
///
/// `cut` ends an upgraded connection (a WebSocket) when it resolves, with a close frame carrying its
/// code and reason to the client: the sandbox turned unhealthy (1011), the credential stopped working
/// (1008).
pub async fn forward(
    conns: &AgentConns,
    socket: &Path,
    mut req: Request<Body>,
    path_and_query: &str,
    unbounded: bool,
    cut: impl std::future::Future<Output = Cut> + Send + 'static,
) -> Result<Response<Body>, ProxyError> {
    let limit = if unbounded {
        usize::MAX
    } else {
        sandpit_types::MAX_AGENT_BODY_BYTES
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ProxyError::TooLarge);
    }
    let upgrade = wants_upgrade(req.headers()).then(|| {
        let protocol = req.headers().get(header::UPGRADE).cloned();
        (hyper::upgrade::on(&mut req), protocol)
    });
    let (parts, body) = req.into_parts();
    let mut out = Request::builder()
        .method(parts.method)
        .uri(agent_uri(socket, path_and_query)?);
    let headers = out
        .headers_mut()
        .ok_or_else(|| ProxyError::Build("bad method or path".into()))?;
    copy_end_to_end(&parts.headers, headers);
    headers.remove(header::AUTHORIZATION);
    headers.insert(header::HOST, HeaderValue::from_static("sandpit-agent"));
    let client_upgrade = upgrade.map(|(on_upgrade, protocol)| {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Some(p) = protocol {
            headers.insert(header::UPGRADE, p);
        }
        on_upgrade
    });
    let body = if unbounded {
        body
    } else {
        Body::new(Limited::new(body, limit))
    };
    let out = out
        .body(body)
        .map_err(|e| ProxyError::Build(e.to_string()))?;

    let mut resp = conns
        .client
        .request(out)
        .await
        .map_err(|e| client_error(&e))?;

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let agent_upgrade = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                match tokio::try_join!(client_upgrade, agent_upgrade) {
                    Ok((client, agent)) => {
                        splice(TokioIo::new(client), TokioIo::new(agent), cut).await;
                    }
                    Err(e) => tracing::debug!(error = %e, "connection upgrade failed"),
                }
            });
        }
        let (parts, _) = resp.into_parts();
        // A 101 keeps its Connection/Upgrade headers: they are what the client's upgrade is checked against.
        return Ok(Response::from_parts(parts, Body::empty()));
    }

    Ok(end_to_end(resp))
}

/// An agent's response for the client: hop-by-hop headers dropped, the body streamed.
pub(crate) fn end_to_end(resp: Response<hyper::body::Incoming>) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    let headers = std::mem::take(&mut parts.headers);
    copy_end_to_end(&headers, &mut parts.headers);
    Response::from_parts(parts, Body::new(body))
}

fn check_health(status: StatusCode) -> Result<(), String> {
    if status == StatusCode::OK {
        Ok(())
    } else {
        Err(format!("GET /health answered {status}"))
    }
}

/// Agent paths under this prefix are the daemon's own calls; the proxy never forwards a client there.
pub const AGENT_DAEMON_PREFIX: &str = "_daemon/";

/// A proxied response body that ends when its sandbox turns unhealthy (`cut` resolves with why): an
/// event stream ends with an `error` event (`{"code": "unavailable", "message"}`), any other body
/// breaks off with an error, so that no client waits on a wedged agent and none mistakes the cut
/// for a complete body.
pub struct Guarded {
    inner: Body,
    cut: Option<std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send>>>,
    sse: bool,
    done: bool,
}

impl std::fmt::Debug for Guarded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded")
            .field("sse", &self.sse)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl Guarded {
    /// `resp` with its body guarded by `cut`.
    pub fn wrap(
        resp: Response<Body>,
        cut: impl std::future::Future<Output = String> + Send + 'static,
    ) -> Response<Body> {
        let sse = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let (parts, inner) = resp.into_parts();
        Response::from_parts(
            parts,
            Body::new(Self {
                inner,
                cut: Some(Box::pin(cut)),
                sse,
                done: false,
            }),
        )
    }
}

impl http_body::Body for Guarded {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        if self.done {
            return Poll::Ready(None);
        }
        if let Some(cut) = self.cut.as_mut() {
            if let Poll::Ready(why) = cut.as_mut().poll(cx) {
                self.done = true;
                let message = format!("the sandbox's agent stopped answering: {why}");
                if self.sse {
                    let body = sandpit_types::ErrorBody::new(
                        sandpit_types::ErrorCode::Unavailable,
                        message,
                    );
                    let data = serde_json::to_string(&body.error).unwrap_or_default();
                    return Poll::Ready(Some(Ok(http_body::Frame::data(bytes::Bytes::from(
                        format!("event: error\ndata: {data}\n\n"),
                    )))));
                }
                return Poll::Ready(Some(Err(axum::Error::new(std::io::Error::other(message)))));
            }
        }
        let frame = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(frame, Poll::Ready(None)) {
            self.done = true;
            self.cut = None;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Copies an upgraded connection both ways until the agent's side has ended.
///
/// Each direction is its own copy, unlike `copy_bidirectional`, which drops both on the first error:
/// when the agent refuses a frame (too big, not UTF-8) it sends a close frame saying why and hangs up,
/// and the client, still sending the rest of that frame, makes the client-to-agent copy fail. The
/// agent-to-client copy must still deliver the close frame. Once the agent's side has ended, the
/// client gets a few seconds to finish its own, so that a client that never closes holds nothing.
async fn splice<C, A>(client: C, agent: A, cut: impl std::future::Future<Output = Cut> + Send)
where
    C: AsyncRead + AsyncWrite,
    A: AsyncRead + AsyncWrite,
{
    let (mut client_rx, client_tx) = tokio::io::split(client);
    let (mut agent_rx, mut agent_tx) = tokio::io::split(agent);
    // Shared by the copy towards the client and the close frame a cut sends instead.
    let client_tx = tokio::sync::Mutex::new(client_tx);
    let up = async {
        let mut from = BufReader::with_capacity(SPLICE_BUF_UP, &mut client_rx);
        let r = tokio::io::copy_buf(&mut from, &mut agent_tx).await;
        let _ = agent_tx.shutdown().await;
        r
    };
    // Boxed so that a cut can drop it, and with it its hold on `client_tx`.
    let mut down = Box::pin(async {
        let mut tx = client_tx.lock().await;
        let mut from = BufReader::with_capacity(SPLICE_BUF_DOWN, &mut agent_rx);
        let r = tokio::io::copy_buf(&mut from, &mut *tx).await;
        let _ = tx.shutdown().await;
        r
    });
    tokio::pin!(up, cut);
    let (up, down) = tokio::select! {
        down_r = &mut down => {
            let up_r = tokio::time::timeout(SPLICE_GRACE, &mut up).await;
            (up_r.unwrap_or(Ok(0)), down_r)
        }
        up_r = &mut up => (up_r, down.await),
        why = &mut cut => {
            // The agent is wedged, or the credential ended: nothing more goes either way. Tell the
            // client why and hang up.
            drop(down);
            let mut tx = client_tx.lock().await;
            let _ = tx.write_all(&close_frame(why.code, &why.reason)).await;
            let _ = tx.shutdown().await;
            (Ok(0), Ok(0))
        }
    };
    for e in [up.err(), down.err()].into_iter().flatten() {
        tracing::debug!(error = %e, "upgraded connection ended with an error");
    }
}

/// Why an upgraded connection is cut: the WebSocket close code and reason its client gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    pub code: u16,
    pub reason: String,
}

impl Cut {
    /// The sandbox's agent stopped answering (1011, `unavailable: …`).
    pub fn unavailable(why: &str) -> Self {
        Self {
            code: 1011,
            reason: format!("unavailable: {why}"),
        }
    }

    /// The credential the session was opened with stopped working (1008, `unauthenticated: …`).
    pub fn unauthenticated(why: &str) -> Self {
        Self {
            code: 1008,
            reason: format!("unauthenticated: {why}"),
        }
    }
}

/// A WebSocket close frame from the server (unmasked) with `code` and as much of `reason` as fits.
fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = &reason.as_bytes()[..end];
    let mut f = Vec::with_capacity(4 + reason.len());
    f.push(0x88);
    f.push(u8::try_from(2 + reason.len()).unwrap_or(2));
    f.extend_from_slice(&code.to_be_bytes());
    f.extend_from_slice(reason);
    f
}

/// How long a client may keep its side of an upgraded connection open after the agent has hung up.
const SPLICE_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Buffer of the agent-to-client copy: a read returns what the agent's socket holds (so latency is the
/// same), but a fast stream moves in up to 256 KiB per read and write instead of `tokio::io::copy`'s
/// 8 KiB (for 1 GiB of output: 4 Ki reads and writes, not 128 Ki).
const SPLICE_BUF_DOWN: usize = 256 * 1024;
/// Buffer of the client-to-agent copy (stdin, control messages).
const SPLICE_BUF_UP: usize = 64 * 1024;

/// The innermost error of a chain, for a message.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e;
    while let Some(c) = last.source() {
        last = c;
    }
    last.to_string()
}

/// Whether a failed exchange was our own body limit cutting the request short (a chunked body that
/// grew past it).
fn caused_by_length_limit(e: &hyper::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = cause {
        if c.is::<LengthLimitError>() {
            return true;
        }
        cause = c.source();
    }
    false
}

pub(crate) fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
        })
}

/// Copies every header except the hop-by-hop ones, including those the `Connection` header names.
pub(crate) fn copy_end_to_end(from: &HeaderMap, to: &mut HeaderMap) {
    let named: Vec<String> = from
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|t| t.trim().to_ascii_lowercase()))
        .collect();
    for (name, value) in from {
        if HOP_BY_HOP.contains(name)
            || name.as_str() == "keep-alive"
            || named.iter().any(|n| n == name.as_str())
        {
            continue;
        }
        to.append(name.clone(), value.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in agent on a unix socket that answers `GET /health` with 200 and hangs up after
    /// `per_conn` requests on one connection; counts the connections it accepted.
    fn fake_agent(path: &Path, per_conn: usize) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
        use std::sync::atomic::Ordering;
        use tokio::io::AsyncReadExt as _;
        let listener = tokio::net::UnixListener::bind(path).unwrap();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    for _ in 0..per_conn {
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            let mut chunk = [0u8; 512];
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.clear();
                        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if s.write_all(ok).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        accepted
    }

    #[test]
    fn an_agent_address_carries_any_socket_path() {
        let p = Path::new("/tmp/spb-x/isolate/sandboxes/a_b.c-9/run/agent.sock");
        let uri = agent_uri(p, "/exec?x=1").unwrap();
        assert_eq!(uri.path_and_query().unwrap().as_str(), "/exec?x=1");
        let host = uri.host().unwrap().strip_suffix(".agent").unwrap();
        assert_eq!(unhex(host).unwrap(), p);
        assert!(unhex("abc").is_none() && unhex("zz").is_none());
    }

    #[tokio::test]
    async fn proxied_calls_to_one_agent_share_a_connection() {
        use std::sync::atomic::Ordering;
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let accepted = fake_agent(&socket, 100);
        let conns = AgentConns::new();
        for _ in 0..3 {
            let req = Request::get("/health").body(Body::empty()).unwrap();
            let resp = forward(
                &conns,
                &socket,
                req,
                "/health",
                false,
                std::future::pending(),
            )
            .await
            .unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let body = http_body_util::BodyExt::collect(resp.into_body())
                .await
                .unwrap();
            assert_eq!(&body.to_bytes()[..], b"ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "a connection per call");
        // A gone agent is a connect error (the daemon's 503), not a hang.
        drop(dir);
        let req = Request::get("/health").body(Body::empty()).unwrap();
        let gone = forward(
            &conns,
            Path::new("/nonexistent/agent.sock"),
            req,
            "/health",
            false,
            std::future::pending(),
        )
        .await;
        assert!(matches!(gone, Err(ProxyError::Connect(_))), "{gone:?}");
    }

    #[tokio::test]
    async fn a_health_probe_reuses_its_connection_and_replaces_one_the_agent_closed() {
        use std::sync::atomic::Ordering;
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        let accepted = fake_agent(&socket, 2);
        let conns = AgentConns::new();
        conns.health(&socket).await.unwrap();
        conns.health(&socket).await.unwrap();
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "the second probe reconnected"
        );
        // The agent hung up after two: the third probe is still a success, over a new connection.
        conns.health(&socket).await.unwrap();
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        // Environment updates share the same connections.
        let env = std::collections::BTreeMap::from([("A".to_owned(), "1".to_owned())]);
        conns.put_env(&socket, &env).await.unwrap();
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        drop(dir);
        // A gone agent is a failure, not a hang or a success.
        std::fs::remove_file(&socket).ok();
        let gone = conns.health(Path::new("/nonexistent/agent.sock")).await;
        assert!(gone.unwrap_err().contains("cannot connect"));
    }

    #[test]
    fn close_frames_fit_a_control_frame() {
        let f = close_frame(1011, "unavailable: stopped");
        assert_eq!(&f[..4], &[0x88, 22, 0x03, 0xF3]);
        assert_eq!(&f[4..], b"unavailable: stopped");
        let long = close_frame(1011, &"é".repeat(100));
        assert_eq!(
            long.len(),
            2 + 2 + 122,
            "cut at a char boundary within 123 bytes"
        );
        assert!(std::str::from_utf8(&long[4..]).is_ok());
    }

    #[test]
    fn drops_hop_by_hop_headers() {
        let mut from = HeaderMap::new();
        from.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        from.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        from.insert("x-private", HeaderValue::from_static("1"));
        from.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        from.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        from.insert("last-event-id", HeaderValue::from_static("7"));
        let mut to = HeaderMap::new();
        copy_end_to_end(&from, &mut to);
        assert_eq!(to.len(), 2, "{to:?}");
        assert!(to.contains_key(header::CONTENT_TYPE));
        assert!(to.contains_key("last-event-id"));
    }
}
