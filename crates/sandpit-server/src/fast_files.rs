//! The daemon's side of the file fast path ([`sandpit_types::files::SPLICE_PATH`]): large file content
//! between a client and an agent crosses the agent's connection raw, and the agent splices it to or from
//! the file, instead of reading it through its memory and framing it as an HTTP body.
//!
//! [`offer`] decides which requests take the path (a `GET /files`, and a `PUT /files` with a known
//! length of at least [`SPLICE_MIN_BYTES`] and no content encoding); [`forward`] carries one out. An
//! agent from before the path answers 404, and the request is then handed back untouched to go the
//! ordinary way ([`Fast::Declined`]). Everything the client sees (status, headers, errors) is what the
//! ordinary path gives.
//!
//! A client on plain HTTP/1.1 may ask for the same switch on its own connection (`Connection: upgrade`,
//! `Upgrade:` [`SPLICE_PROTOCOL`]; docs/api.md, "Switched transfers"), and the daemon then moves the
//! content between the client's socket and the agent's with `splice(2)`, so that no process copies it:
//!
//! * `GET /files`: content of [`SPLICE_MIN_BYTES`] or more is answered `101` with the real status and
//!   length in [`SPLICE_STATUS_HEADER`] and [`SPLICE_LENGTH_HEADER`]; exactly that many bytes follow and
//!   the connection closes (`relay`). A smaller file, an error, or a connection where the switch cannot
//!   be made (TLS, HTTP/2) gets the ordinary answer.
//! * `PUT /files` with [`SPLICE_LENGTH_HEADER`] and no body: `101`, then the client's bytes go to the
//!   agent and the agent's answer (status digits, newline, JSON) comes back raw (`relay_upload`). A
//!   connection that cannot be switched is answered `426` (the client sends a body instead).

use std::path::Path;
use std::time::Duration;

use axum::body::Body;
use bytes::BytesMut;
use http_body_util::BodyExt as _;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sandpit_types::files::{
    SPLICE_LENGTH_HEADER, SPLICE_MIN_BYTES, SPLICE_PATH, SPLICE_PROTOCOL, SPLICE_STATUS_HEADER,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::api::error::ApiError;
use crate::proxy::{AgentConns, ProxyError};
use axum::response::IntoResponse as _;

/// Bytes read from the agent per body chunk on a download.
const READ_CHUNK: usize = 512 << 10;
/// Longest the agent's answer to an upload may take once its content is sent.
const ANSWER_WAIT: Duration = Duration::from_secs(60);
/// Longest the rest of a client's upload is read (and dropped) after the agent answered early (a full
/// disk), so that the client gets the answer rather than a reset.
const DRAIN_WAIT: Duration = Duration::from_secs(30);

/// What [`forward`] did.
#[derive(Debug)]
pub enum Fast {
    /// The agent answered (content, or an error): this goes to the client.
    Done(Response<Body>),
    /// The agent does not have the fast path: send this request the ordinary way.
    Declined(Request<Body>),
}

/// Whether a proxied request (its path after `/v1/sandboxes/{id}/`, without the query) takes the fast
/// path.
pub fn offer(method: &Method, path: &str, headers: &header::HeaderMap) -> bool {
    if path != "files" {
        return false;
    }
    if method == Method::GET {
        return true;
    }
    // A switched upload is the fast path's or nobody's (it has no body to send the ordinary way).
    if method == Method::PUT && headers.contains_key(SPLICE_LENGTH_HEADER) {
        return true;
    }
    method == Method::PUT && identity(headers) && declared_length(headers) >= Some(SPLICE_MIN_BYTES)
}

/// Whether the content is sent as it is (no `Content-Encoding`, or `identity`).
fn identity(headers: &header::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.trim().is_empty() || v.trim().eq_ignore_ascii_case("identity"))
}

/// What a client's switched upload ([`SPLICE_LENGTH_HEADER`] on a `PUT`) may not be: its refusal.
fn switched_upload_refusal(req: &Request<Body>) -> Option<ApiError> {
    if !identity(req.headers()) {
        return Some(ApiError::InvalidArgument(
            "a switched upload is sent as it is: drop Content-Encoding, or send a body".into(),
        ));
    }
    if declared_length(req.headers()).is_some_and(|n| n > 0)
        || req.headers().contains_key(header::TRANSFER_ENCODING)
    {
        return Some(ApiError::InvalidArgument(format!(
            "a switched upload ({SPLICE_LENGTH_HEADER}) has no body: its content follows the 101"
        )));
    }
    None
}

fn declared_length(headers: &header::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Carries out `req` (one that [`offer`] took) against the agent at `socket`; `query` is the query
/// string to pass on (the client's credentials already removed).
pub async fn forward(
    conns: &AgentConns,
    socket: &Path,
    mut req: Request<Body>,
    query: &str,
) -> Result<Fast, ProxyError> {
    let mut head = Request::builder()
        .method(req.method().clone())
        .uri(crate::proxy::agent_uri(
            socket,
            &format!("/{SPLICE_PATH}?{query}"),
        )?);
    let headers = head
        .headers_mut()
        .ok_or_else(|| ProxyError::Build("bad method or path".into()))?;
    crate::proxy::copy_end_to_end(req.headers(), headers);
    headers.remove(header::AUTHORIZATION);
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::EXPECT);
    headers.insert(header::HOST, HeaderValue::from_static("sandpit-agent"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static(SPLICE_PROTOCOL));
    let upload = req.method() == Method::PUT;
    let switched = upload && req.headers().contains_key(SPLICE_LENGTH_HEADER);
    let len = if switched {
        match req
            .headers()
            .get(SPLICE_LENGTH_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            Some(n) => n,
            None => {
                return Ok(refused(ApiError::InvalidArgument(format!(
                    "{SPLICE_LENGTH_HEADER} must be a byte count"
                ))));
            }
        }
    } else {
        declared_length(req.headers()).unwrap_or(0)
    };
    // The client's side of a switched upload, taken before the agent is asked: a connection that
    // cannot be switched is told so, and the client sends the content the ordinary way.
    let mut client_upload = None;
    if switched {
        if let Some(why) = switched_upload_refusal(&req) {
            return Ok(refused(why));
        }
        match client_switch(&mut req) {
            Some(c) => client_upload = Some(c),
            None => return Ok(refused(cannot_switch())),
        }
        headers.remove(HeaderName::from_static(SPLICE_LENGTH_HEADER));
    }
    if upload {
        headers.insert(HeaderName::from_static(SPLICE_LENGTH_HEADER), len.into());
    }
    let head = head
        .body(Body::empty())
        .map_err(|e| ProxyError::Build(e.to_string()))?;
    let mut resp = conns.request(head).await?;
    if resp.status() == StatusCode::NOT_FOUND {
        if switched {
            // An agent from before the fast path (or a missing sandbox path's parent: the ordinary
            // upload says which).
            return Ok(refused(cannot_switch()));
        }
        // An agent from before the fast path has no such route. (A new agent's 404 for a missing file
        // is asked again the ordinary way and comes back the same.)
        return Ok(Fast::Declined(req));
    }
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        // An error, or content small enough to come as an ordinary body.
        return Ok(Fast::Done(crate::proxy::end_to_end(resp)));
    }
    let client = if upload {
        None
    } else {
        client_switch(&mut req)
    };
    let io = hyper::upgrade::on(&mut resp)
        .await
        .map_err(|e| ProxyError::Exchange(format!("the fast path's upgrade failed: {e}")))?;
    if let Some((sock, on_client, permit)) = client_upload {
        return match io.downcast::<TokioIo<tokio::net::UnixStream>>() {
            Ok(agent) => switch_upload(agent, on_client, sock, len, permit)
                .await
                .map(Fast::Done),
            // Not a connection this daemon made (the agent has not read a byte: it waits for them).
            Err(_) => Ok(refused(cannot_switch())),
        };
    }
    if upload {
        return upload_content(TokioIo::new(io), req, len)
            .await
            .map(Fast::Done);
    }
    let io = match client {
        Some((sock, on_client, permit)) => match io.downcast::<TokioIo<tokio::net::UnixStream>>() {
            Ok(agent) => {
                return switch_download(agent, on_client, sock, &resp, permit).map(Fast::Done);
            }
            // Not a connection this daemon made: the content comes as an ordinary body.
            Err(io) => io,
        },
        None => io,
    };
    download_content(TokioIo::new(io), &resp).map(Fast::Done)
}

/// Most switched transfers under way at once. Each holds a thread of its own (not one of tokio's
/// blocking pool, which the daemon's backend calls need) for as long as its peer keeps it going, up to
/// [`RELAY_IDLE`] per stalled step; past this many, a download is answered the ordinary way and an
/// upload gets 426, so that clients that stall cannot pile up threads.
const MAX_RELAYS: usize = 64;

/// Switched transfers under way ([`MAX_RELAYS`]).
static RELAYS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// One of the [`MAX_RELAYS`] places, given back when dropped.
#[derive(Debug)]
struct RelayPermit(());

impl RelayPermit {
    fn acquire() -> Option<Self> {
        use std::sync::atomic::Ordering::SeqCst;
        RELAYS
            .fetch_update(SeqCst, SeqCst, |n| (n < MAX_RELAYS).then_some(n + 1))
            .ok()
            .map(|_| Self(()))
    }
}

impl Drop for RelayPermit {
    fn drop(&mut self) {
        RELAYS.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Runs `work` (a relay holding `permit`) on a thread of its own; `what` names it in the log.
fn on_relay_thread(
    permit: RelayPermit,
    what: &'static str,
    work: impl FnOnce() -> std::io::Result<()> + Send + 'static,
) {
    let spawned = std::thread::Builder::new()
        .name("sandpit-relay".into())
        .spawn(move || {
            let _permit = permit;
            if let Err(e) = work() {
                // The client sees the content end short, or no answer.
                tracing::debug!(error = %e, "{what} ended early");
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start a thread for {what}");
    }
}

/// The client's socket and its upgrade, when a transfer asks for the switch ([`SPLICE_PROTOCOL`]) on
/// a connection where it can be made (plain HTTP/1.1), and there is room for it ([`MAX_RELAYS`]).
fn client_switch(
    req: &mut Request<Body>,
) -> Option<(
    crate::conn::ClientSocket,
    hyper::upgrade::OnUpgrade,
    RelayPermit,
)> {
    let asked = req.version() == hyper::Version::HTTP_11
        && crate::proxy::wants_upgrade(req.headers())
        && req
            .headers()
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case(SPLICE_PROTOCOL));
    if !asked {
        return None;
    }
    let sock = *req.extensions().get::<crate::conn::ClientSocket>()?;
    let permit = RelayPermit::acquire()?;
    Some((sock, hyper::upgrade::on(req), permit))
}

fn refused(e: ApiError) -> Fast {
    Fast::Done(e.into_response())
}

fn cannot_switch() -> ApiError {
    ApiError::UpgradeRequired(format!(
        "this upload asks for the switch to {SPLICE_PROTOCOL}, which this connection cannot make \
         (TLS, HTTP/2, a proxy that drops `Upgrade`, or too many switched transfers under way): send \
         the content as the request's body"
    ))
}

/// The client's answer to an upload it asked to switch: a 101; then [`relay_upload`] moves the content
/// from the client's socket to the agent's and the agent's answer back, and the connection closes.
async fn switch_upload(
    agent: hyper::upgrade::Parts<TokioIo<tokio::net::UnixStream>>,
    on_client: hyper::upgrade::OnUpgrade,
    sock: crate::conn::ClientSocket,
    len: u64,
    permit: RelayPermit,
) -> Result<Response<Body>, ProxyError> {
    let mut io = agent.io.into_inner();
    if !agent.read_buf.is_empty() {
        // The agent answered before taking any content (a path it may not write): that answer goes
        // to the client as an ordinary one, before the client sends anything.
        let mut answer = agent.read_buf.to_vec();
        let rest = tokio::time::timeout(ANSWER_WAIT, async {
            let mut buf = [0u8; 8192];
            loop {
                match io.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) if answer.len() + n <= 1 << 20 => answer.extend_from_slice(&buf[..n]),
                    Ok(_) => return,
                }
            }
        })
        .await;
        let parsed = rest.ok().and_then(|()| parse_answer(&answer));
        let Some((status, json)) = parsed else {
            return Err(ProxyError::Exchange(format!(
                "the agent's early answer to an upload is not a status and a body ({} bytes)",
                answer.len()
            )));
        };
        return Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(json.to_vec()))
            .map_err(|e| ProxyError::Build(e.to_string()));
    }
    let agent = io
        .into_std()
        .map_err(|e| ProxyError::Exchange(format!("taking the agent's socket: {e}")))?;
    tokio::spawn(async move {
        let client = match on_client.await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "an upload's switch failed");
                return;
            }
        };
        // Bytes hyper read past the request head (a client that did not wait for the 101): they come
        // first. One poll: what is buffered, or nothing.
        let mut client = TokioIo::new(client);
        let mut ahead = vec![0u8; 64 << 10];
        let n = match tokio::time::timeout(Duration::ZERO, client.read(&mut ahead)).await {
            Ok(Ok(n)) => n,
            Ok(Err(_)) => return,
            Err(_) => 0,
        };
        ahead.truncate(n);
        on_relay_thread(permit, "a switched upload", move || {
            // The client's socket is open for as long as `client`, which owns it, lives: to the end
            // of this closure.
            let r = relay_upload(&agent, sock, &ahead, len);
            drop(client);
            r
        });
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, SPLICE_PROTOCOL)
        .body(Body::empty())
        .map_err(|e| ProxyError::Build(e.to_string()))
}

/// The client's socket for a relay, after making it and the agent's blocking, with [`RELAY_IDLE`]
/// time-outs both ways. Only for a relay that runs while the client's connection is held (see
/// [`crate::conn::ClientSocket`]): the socket is valid for as long as that.
fn relay_sockets(
    agent: &std::os::unix::net::UnixStream,
    sock: crate::conn::ClientSocket,
) -> std::io::Result<std::os::fd::BorrowedFd<'_>> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    use nix::sys::socket::{setsockopt, sockopt};
    // SAFETY: the relay's caller holds the client's upgraded connection, which owns this socket, for
    // the whole relay, and the relay does not keep the borrow beyond itself.
    let client = unsafe { std::os::fd::BorrowedFd::borrow_raw(sock.0) };
    let idle = nix::sys::time::TimeVal::new(RELAY_IDLE.as_secs() as i64, 0);
    agent.set_nonblocking(false)?;
    agent.set_read_timeout(Some(RELAY_IDLE))?;
    agent.set_write_timeout(Some(RELAY_IDLE))?;
    let flags = OFlag::from_bits_truncate(fcntl(client, FcntlArg::F_GETFL)?);
    fcntl(client, FcntlArg::F_SETFL(flags - OFlag::O_NONBLOCK))?;
    setsockopt(&client, sockopt::SendTimeout, &idle)?;
    setsockopt(&client, sockopt::ReceiveTimeout, &idle)?;
    Ok(client)
}

/// A pipe for `splice(2)`, as large as the kernel grants ([`RELAY_STEP`]).
fn relay_pipe() -> std::io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    // Refused above the user's pipe allowance: the default size only makes more steps.
    let _ = fcntl(&w, FcntlArg::F_SETPIPE_SZ(RELAY_STEP as i32));
    Ok((r, w))
}

/// One `splice(2)`, retried on EINTR.
fn relay_step(
    from: std::os::fd::BorrowedFd<'_>,
    to: std::os::fd::BorrowedFd<'_>,
    n: usize,
    more: bool,
) -> std::io::Result<usize> {
    use nix::fcntl::{SpliceFFlags, splice};
    let flags = if more {
        SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_MORE
    } else {
        SpliceFFlags::SPLICE_F_MOVE
    };
    loop {
        match splice(from, None, to, None, n, flags) {
            Err(nix::errno::Errno::EINTR) => {}
            r => return r.map_err(std::io::Error::from),
        }
    }
}

/// `write(2)` of all of `bytes`.
fn write_all_fd(to: std::os::fd::BorrowedFd<'_>, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        match nix::unistd::write(to, bytes) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Moves a switched upload's `len` bytes from the client's socket to the agent's (`ahead` first: what
/// was read past the request head), then the agent's answer (status digits, newline, JSON) back to the
/// client. Content that ends early closes the agent's connection, which the agent takes as nothing to
/// write. An agent that stops reading (a full disk, a permission) has answered: the rest of the content
/// is read and dropped (for at most [`DRAIN_WAIT`]) so that the client, still sending, gets the answer.
/// Must be called while the client's connection is held (see [`crate::conn::ClientSocket`]).
fn relay_upload(
    agent: &std::os::unix::net::UnixStream,
    sock: crate::conn::ClientSocket,
    ahead: &[u8],
    len: u64,
) -> std::io::Result<()> {
    use std::io::Read as _;
    use std::os::fd::AsFd as _;

    let client = relay_sockets(agent, sock)?;
    let ahead = &ahead[..ahead.len().min(usize::try_from(len).unwrap_or(usize::MAX))];
    let mut left = len - ahead.len() as u64;
    let mut refused = write_all_fd(agent.as_fd(), ahead).is_err();
    if !refused {
        let (pipe_r, pipe_w) = relay_pipe()?;
        while left > 0 {
            let want = usize::try_from(left).unwrap_or(usize::MAX).min(RELAY_STEP);
            let n = relay_step(client, pipe_w.as_fd(), want, false)?;
            if n == 0 {
                return Err(std::io::Error::other(format!(
                    "the client's content ended {left} bytes short"
                )));
            }
            left -= n as u64;
            let mut queued = n;
            while queued > 0 {
                match relay_step(pipe_r.as_fd(), agent.as_fd(), queued, false) {
                    Ok(0) | Err(_) => {
                        refused = true;
                        break;
                    }
                    Ok(k) => queued -= k,
                }
            }
            if refused {
                break;
            }
        }
    }
    if refused {
        let until = std::time::Instant::now() + DRAIN_WAIT;
        let mut sink = vec![0u8; 64 << 10];
        while left > 0 && std::time::Instant::now() < until {
            let want = usize::try_from(left).unwrap_or(usize::MAX).min(sink.len());
            match nix::unistd::read(client, &mut sink[..want]) {
                Ok(0) | Err(_) => break,
                Ok(n) => left -= n as u64,
            }
        }
    }
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    let mut agent_r = agent;
    loop {
        match agent_r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) if answer.len() + n <= 1 << 20 => answer.extend_from_slice(&buf[..n]),
            Ok(_) => return Err(std::io::Error::other("the agent's answer is over 1 MiB")),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) if !answer.is_empty() => break,
            Err(e) => return Err(e),
        }
    }
    if parse_answer(&answer).is_none() {
        return Err(std::io::Error::other(format!(
            "the agent's answer to an upload is not a status and a body ({} bytes)",
            answer.len()
        )));
    }
    write_all_fd(client, &answer)
}

/// The status and length the agent's 101 announces.
fn announced(switched: &Response<hyper::body::Incoming>) -> Result<(u64, StatusCode), ProxyError> {
    let header_of = |name: &str| {
        switched
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
    };
    match (
        header_of(SPLICE_LENGTH_HEADER),
        header_of(SPLICE_STATUS_HEADER)
            .and_then(|s| u16::try_from(s).ok())
            .and_then(|s| StatusCode::from_u16(s).ok()),
    ) {
        (Some(len), Some(status)) => Ok((len, status)),
        _ => Err(ProxyError::Exchange(
            "the agent switched to the file fast path without saying the status and length".into(),
        )),
    }
}

/// The client's answer to a download it asked to switch: a 101 with the content's headers, status and
/// length; then [`relay`] moves the content from the agent's socket to the client's and the connection
/// closes.
fn switch_download(
    agent: hyper::upgrade::Parts<TokioIo<tokio::net::UnixStream>>,
    on_client: hyper::upgrade::OnUpgrade,
    sock: crate::conn::ClientSocket,
    switched: &Response<hyper::body::Incoming>,
    permit: RelayPermit,
) -> Result<Response<Body>, ProxyError> {
    let (len, _) = announced(switched)?;
    let mut out = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, SPLICE_PROTOCOL);
    if let Some(h) = out.headers_mut() {
        crate::proxy::copy_end_to_end(switched.headers(), h);
    }
    let ahead = agent.read_buf;
    let agent = agent
        .io
        .into_inner()
        .into_std()
        .map_err(|e| ProxyError::Exchange(format!("taking the agent's socket: {e}")))?;
    tokio::spawn(async move {
        let client = match on_client.await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "a download's switch failed");
                return;
            }
        };
        on_relay_thread(permit, "a switched download", move || {
            // The client's socket is open for as long as `client`, which owns it, lives: to the end
            // of this closure.
            let r = relay(&agent, sock, &ahead, len);
            drop(client);
            r
        });
    });
    out.body(Body::empty())
        .map_err(|e| ProxyError::Build(e.to_string()))
}

/// Longest a switched download waits on either socket for one step.
const RELAY_IDLE: Duration = Duration::from_secs(60);
/// Bytes asked of the kernel per step (the pipe's size, when the kernel grants it).
const RELAY_STEP: usize = 1 << 20;

/// Moves `len` bytes to the client's socket: first `ahead` (what hyper had read past the agent's 101),
/// then the rest from `agent`'s socket by `splice(2)` through a pipe. Both sockets are made blocking with
/// time-outs ([`RELAY_IDLE`]); neither is used by anything else any more. Must be called while the
/// client's connection is held (see [`crate::conn::ClientSocket`]).
fn relay(
    agent: &std::os::unix::net::UnixStream,
    sock: crate::conn::ClientSocket,
    ahead: &[u8],
    len: u64,
) -> std::io::Result<()> {
    use std::os::fd::AsFd as _;

    let client = relay_sockets(agent, sock)?;
    let ahead_len = ahead.len() as u64;
    if ahead_len > len {
        return Err(std::io::Error::other(
            "the agent sent more than it announced",
        ));
    }
    write_all_fd(client, ahead)?;
    let (pipe_r, pipe_w) = relay_pipe()?;
    let mut left = len - ahead_len;
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(RELAY_STEP);
        let n = relay_step(agent.as_fd(), pipe_w.as_fd(), want, false)?;
        if n == 0 {
            return Err(std::io::Error::other(format!(
                "the agent's read of the file ended {left} bytes short"
            )));
        }
        left -= n as u64;
        let mut queued = n;
        while queued > 0 {
            match relay_step(pipe_r.as_fd(), client, queued, left > 0)? {
                0 => return Err(std::io::ErrorKind::WriteZero.into()),
                k => queued -= k,
            }
        }
    }
    Ok(())
}

/// The client's answer to a download: the 101's headers as the real status's, and a body of exactly
/// the announced length read from the connection (shorter breaks the body off with an error).
fn download_content(
    io: TokioIo<hyper::upgrade::Upgraded>,
    switched: &Response<hyper::body::Incoming>,
) -> Result<Response<Body>, ProxyError> {
    let (len, status) = announced(switched)?;
    let mut out = Response::builder().status(status);
    if let Some(h) = out.headers_mut() {
        crate::proxy::copy_end_to_end(switched.headers(), h);
        h.remove(SPLICE_LENGTH_HEADER);
        h.remove(SPLICE_STATUS_HEADER);
        h.insert(header::CONTENT_LENGTH, len.into());
    }
    let body = futures_util::stream::unfold((io, len), |(mut io, left)| async move {
        if left == 0 {
            return None;
        }
        let mut buf =
            BytesMut::with_capacity(READ_CHUNK.min(usize::try_from(left).unwrap_or(READ_CHUNK)));
        match io.read_buf(&mut buf).await {
            Ok(0) => Some((
                Err(std::io::Error::other(format!(
                    "the agent's read of the file ended {left} bytes short"
                ))),
                (io, 0),
            )),
            Ok(n) => Some((Ok(buf.freeze()), (io, left - n as u64))),
            Err(e) => Some((Err(e), (io, 0))),
        }
    });
    out.body(Body::from_stream(body))
        .map_err(|e| ProxyError::Build(e.to_string()))
}

/// Sends the client's body (exactly `len` bytes) on the connection and answers with what the agent
/// says after it. A client body that breaks off or is not `len` bytes ends the connection early, which
/// the agent takes as nothing to write.
async fn upload_content(
    mut io: TokioIo<hyper::upgrade::Upgraded>,
    req: Request<Body>,
    len: u64,
) -> Result<Response<Body>, ProxyError> {
    let mut body = req.into_body();
    let mut sent = 0u64;
    let mut refused = false;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ProxyError::ClientBody(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        sent += data.len() as u64;
        if sent > len {
            return Err(ProxyError::ClientBody(format!(
                "the body is longer than its Content-Length ({len})"
            )));
        }
        if io.write_all(&data).await.is_err() {
            // The agent stopped reading: it has an answer (a full disk, a permission). Read the rest of
            // the client's body (bounded) so that the client hears it.
            refused = true;
            let _ = tokio::time::timeout(DRAIN_WAIT, async {
                while let Some(Ok(_)) = body.frame().await {}
            })
            .await;
            break;
        }
    }
    if !refused && sent != len {
        return Err(ProxyError::ClientBody(format!(
            "the body ended after {sent} of its {len} bytes"
        )));
    }
    let answer = tokio::time::timeout(ANSWER_WAIT, read_answer(&mut io))
        .await
        .map_err(|_| {
            ProxyError::Exchange(format!(
                "the agent did not answer within {}s of the upload's end",
                ANSWER_WAIT.as_secs()
            ))
        })?
        .map_err(|e| ProxyError::Exchange(format!("reading the agent's answer: {e}")))?;
    let (status, json) = parse_answer(&answer).ok_or_else(|| {
        ProxyError::Exchange(format!(
            "the agent's answer to an upload is not a status and a body ({} bytes)",
            answer.len()
        ))
    })?;
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json.to_vec()))
        .map_err(|e| ProxyError::Build(e.to_string()))
}

/// The agent's answer, up to its close. When the agent answered before taking all of the content (a
/// full disk), its close with content unread resets the connection after the answer: that error ends
/// the answer rather than failing it.
async fn read_answer(io: &mut TokioIo<hyper::upgrade::Upgraded>) -> std::io::Result<Vec<u8>> {
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match io.read(&mut buf).await {
            Ok(0) => return Ok(answer),
            Ok(n) if answer.len() + n <= 1 << 20 => answer.extend_from_slice(&buf[..n]),
            Ok(_) => return Err(std::io::Error::other("the answer is over 1 MiB")),
            Err(_) if !answer.is_empty() => return Ok(answer),
            Err(e) => return Err(e),
        }
    }
}

/// `NNN\n{json}` to its parts.
fn parse_answer(answer: &[u8]) -> Option<(StatusCode, &[u8])> {
    let (code, json) = (answer.get(..3)?, answer.get(4..)?);
    if answer.get(3) != Some(&b'\n') || json.is_empty() {
        return None;
    }
    let code: u16 = std::str::from_utf8(code).ok()?.parse().ok()?;
    Some((StatusCode::from_u16(code).ok()?, json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_file_content_of_a_known_large_size_takes_the_path() {
        let mut h = header::HeaderMap::new();
        assert!(offer(&Method::GET, "files", &h));
        assert!(!offer(&Method::GET, "files/tar", &h));
        assert!(!offer(&Method::PUT, "files", &h), "no length: chunked");
        h.insert(header::CONTENT_LENGTH, SPLICE_MIN_BYTES.into());
        assert!(offer(&Method::PUT, "files", &h));
        h.insert(header::CONTENT_LENGTH, (SPLICE_MIN_BYTES - 1).into());
        assert!(
            !offer(&Method::PUT, "files", &h),
            "small: pooled connection"
        );
        h.insert(header::CONTENT_LENGTH, SPLICE_MIN_BYTES.into());
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        assert!(
            !offer(&Method::PUT, "files", &h),
            "gzip is the agent's to unpack"
        );
        assert!(!offer(&Method::POST, "files", &header::HeaderMap::new()));
    }

    #[test]
    fn switched_transfers_are_capped_and_their_places_given_back() {
        let held: Vec<RelayPermit> = std::iter::from_fn(RelayPermit::acquire)
            .take(MAX_RELAYS + 1)
            .collect();
        assert_eq!(held.len(), MAX_RELAYS);
        assert!(RelayPermit::acquire().is_none());
        drop(held);
        assert!(RelayPermit::acquire().is_some());
    }

    /// `relay` sends what hyper read ahead, then splices the rest from the agent's socket to the
    /// client's; content that ends before its announced length is an error (the client sees it short).
    #[test]
    fn relay_sends_the_bytes_read_ahead_then_the_rest_and_fails_on_short_content() {
        use std::io::{Read as _, Write as _};
        use std::os::fd::AsRawFd as _;
        let data: Vec<u8> = (0..(3usize << 20) + 77).map(|i| (i % 253) as u8).collect();
        for (announced, ok) in [(data.len() as u64, true), (data.len() as u64 + 10, false)] {
            let (mut agent_end, daemon_end) = std::os::unix::net::UnixStream::pair().unwrap();
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let mut client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let (server, _) = l.accept().unwrap();
            let rest = data[5..].to_vec();
            let agent = std::thread::spawn(move || {
                agent_end.write_all(&rest).unwrap();
            });
            let reader = std::thread::spawn(move || {
                let mut got = Vec::new();
                client.read_to_end(&mut got).unwrap();
                got
            });
            let r = relay(
                &daemon_end,
                crate::conn::ClientSocket(server.as_raw_fd()),
                &data[..5],
                announced,
            );
            drop(server);
            agent.join().unwrap();
            let got = reader.join().unwrap();
            assert_eq!(r.is_ok(), ok, "{r:?}");
            assert!(got == data, "the client got {} bytes", got.len());
        }
    }

    /// An agent from before the fast path: `/_daemon/files` is 404 (its fallback), `PUT /files` answers
    /// the length of the body it got.
    fn old_agent(path: &std::path::Path) {
        use axum::routing::put;
        let app = axum::Router::new()
            .route(
                "/files",
                put(|body: axum::body::Bytes| async move { body.len().to_string() })
                    .layer(axum::extract::DefaultBodyLimit::disable()),
            )
            .fallback(|| async { (StatusCode::NOT_FOUND, "no such endpoint") });
        let listener = tokio::net::UnixListener::bind(path).unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
    }

    #[tokio::test]
    async fn an_agent_without_the_fast_path_gets_the_request_the_ordinary_way() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("agent.sock");
        old_agent(&socket);
        let conns = AgentConns::new();
        let n = 3 << 20;
        let req = Request::put("/v1/sandboxes/x/files?path=f")
            .header(header::CONTENT_LENGTH, n)
            .body(Body::from(vec![5u8; n]))
            .unwrap();
        assert!(offer(req.method(), "files", req.headers()));
        let Fast::Declined(req) = forward(&conns, &socket, req, "path=f").await.unwrap() else {
            panic!("an old agent's 404 was taken for an answer");
        };
        // Untouched: the whole body still goes the ordinary way.
        let resp = crate::proxy::forward(
            &conns,
            &socket,
            req,
            "/files?path=f",
            true,
            std::future::pending(),
        )
        .await
        .unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, n.to_string());
    }

    #[test]
    fn answers_parse_as_status_and_body() {
        assert_eq!(
            parse_answer(b"507\n{\"error\":{}}"),
            Some((StatusCode::INSUFFICIENT_STORAGE, &b"{\"error\":{}}"[..]))
        );
        assert_eq!(parse_answer(b"200{}"), None);
        assert_eq!(parse_answer(b"20"), None);
        assert_eq!(parse_answer(b"abc\n{}"), None);
        assert_eq!(parse_answer(b"200\n"), None);
    }
}
