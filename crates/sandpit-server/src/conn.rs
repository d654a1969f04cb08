//! The daemon's accept loop: every connection served with HTTP/1.1 or HTTP/2 (hyper's `auto` builder, with
//! upgrades for `WebSockets` and preview tunnels), the peer address as `ConnectInfo<SocketAddr>` for the
//! handlers, a deadline on the request head, and a graceful shutdown that lets open requests finish.
//!
//! Why not `axum::serve`: it has no deadline for a request's head, so a client that trickles its headers a
//! byte a second (slowloris), or opens a connection and says nothing, held a connection — a task and a file
//! descriptor — for as long as it liked. Here an HTTP/1 connection that has not sent a whole request head
//! within [`ConnLimits::header_timeout`] (also between requests on a kept-alive connection) is closed, and
//! an HTTP/2 connection that does not answer pings within the same time is too. A request body that goes
//! [`ConnLimits::body_idle_timeout`] without a byte ends in an error, so a body that trickles or never
//! finishes cannot hold a handler, an agent connection or a file write either.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd as _, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::serve::Listener;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tower::ServiceExt as _;

/// The client's socket under a connection whose bytes are the HTTP exchange itself (plain TCP, not TLS),
/// as a request extension. A handler may move bytes on it with the kernel's help (`splice(2)`, as the
/// file fast path does for downloads: [`crate::fast_files`]) only once it has taken the connection over
/// (its upgrade resolved) and only while it holds the `Upgraded` that owns the socket: before, hyper is
/// using it; after, the number may already name another file.
#[derive(Clone, Copy, Debug)]
pub struct ClientSocket(pub RawFd);

/// What a listener's connections say about their socket: whether its bytes are the HTTP exchange (plain
/// TCP) and so may carry a [`ClientSocket`].
pub trait ConnSocket {
    /// The socket, when what is written to it reaches the client as it is.
    fn plain_fd(&self) -> Option<RawFd>;
}

impl ConnSocket for tokio::net::TcpStream {
    fn plain_fd(&self) -> Option<RawFd> {
        Some(self.as_raw_fd())
    }
}

impl ConnSocket for tokio_rustls::server::TlsStream<tokio::net::TcpStream> {
    fn plain_fd(&self) -> Option<RawFd> {
        // Bytes written to the socket would bypass the encryption.
        None
    }
}

/// A connection that notes when its first bytes arrive, and gives hyper's own refusals a JSON body.
///
/// hyper answers a request head it cannot parse by itself, before any handler runs: `431` for headers
/// over its buffer, `414` for a URI it will not take, with an empty body. Every other sandpit error is
/// `{"error": {code, message}}`, and clients and SDKs rely on that, so the first bytes of such a response
/// (which only hyper writes: no handler uses these statuses) are replaced with the same answer in JSON,
/// and whatever hyper writes after it on that connection (it closes it) is dropped.
struct ConnIo<T> {
    inner: T,
    heard: Arc<AtomicBool>,
    /// Our replacement for hyper's refusal, and how much of it is written.
    replacement: Option<(Vec<u8>, usize)>,
}

impl<T> ConnIo<T> {
    fn new(inner: T, heard: Arc<AtomicBool>) -> Self {
        Self {
            inner,
            heard,
            replacement: None,
        }
    }
}

/// The JSON answer for a response head hyper wrote by itself, if `head` is one.
fn json_refusal(head: &[u8]) -> Option<Vec<u8>> {
    let (status, message) = if head.starts_with(b"HTTP/1.1 431 ") {
        (
            "431 Request Header Fields Too Large",
            "the request head is too large: send fewer or shorter headers",
        )
    } else if head.starts_with(b"HTTP/1.1 414 ") {
        ("414 URI Too Long", "the request URI is too long")
    } else {
        return None;
    };
    let body = serde_json::to_string(&sandpit_types::ErrorBody::new(
        sandpit_types::ErrorCode::InvalidArgument,
        message,
    ))
    .unwrap_or_default();
    Some(
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

impl<T: AsyncWrite + Unpin> ConnIo<T> {
    /// Writes what is left of the refusal; `Ready(Ok)` once all of it is out.
    fn drive_refusal(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while let Some((bytes, at)) = self.replacement.as_mut() {
            if *at == bytes.len() {
                break;
            }
            match Pin::new(&mut self.inner).poll_write(cx, &bytes[*at..]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => *at += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Starts the refusal when `head` is hyper's; then swallows hyper's own bytes.
    fn intercept(
        &mut self,
        cx: &mut Context<'_>,
        head: &[u8],
        len: usize,
    ) -> Option<Poll<std::io::Result<usize>>> {
        if self.replacement.is_none() {
            self.replacement = Some((json_refusal(head)?, 0));
        }
        // hyper's bytes are claimed at once; what of ours is not out yet follows on the next flush.
        Some(match self.drive_refusal(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) | Poll::Pending => Poll::Ready(Ok(len)),
        })
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ConnIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.heard.store(true, Ordering::Relaxed);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ConnIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if let Some(r) = self.intercept(cx, buf, buf.len()) {
            return r;
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let head = bufs
            .iter()
            .find(|b| !b.is_empty())
            .map_or(&[][..], |b| &**b);
        let len = bufs.iter().map(|b| b.len()).sum();
        if let Some(r) = self.intercept(cx, head, len) {
            return r;
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.drive_refusal(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut self.inner).poll_flush(cx),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.drive_refusal(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut self.inner).poll_shutdown(cx),
            other => other,
        }
    }
}

/// Per-connection limits.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// How long a client has to send a whole request head (HTTP/1), and to answer a ping (HTTP/2).
    pub header_timeout: Duration,
    /// How long a request body may go without a byte before it fails.
    pub body_idle_timeout: Duration,
}

/// A request body that fails once the reader has waited `idle` for a frame. Only time spent waiting on
/// the client counts: a reader that is slow to ask (backpressure from a slow agent) never makes a client
/// that keeps up look idle.
struct IdleBody<B> {
    inner: B,
    idle: Duration,
    /// Made the first time the reader has to wait (most bodies never make it wait), reset each time it
    /// starts waiting again.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The reader is waiting on the client (the timer runs).
    waiting: bool,
}

impl<B> IdleBody<B> {
    fn new(inner: B, idle: Duration) -> Self {
        Self {
            inner,
            idle,
            timer: None,
            waiting: false,
        }
    }
}

impl<B> http_body::Body for IdleBody<B>
where
    B: http_body::Body + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = B::Data;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting = false;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let deadline = tokio::time::Instant::now() + this.idle;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if !this.waiting {
                    this.waiting = true;
                    timer.as_mut().reset(deadline);
                }
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(format!(
                        "the request body sent nothing for {} s (body_idle_timeout_secs)",
                        this.idle.as_secs()
                    )
                    .into()))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Serves `app` on `listener` until `shutdown` resolves; then stops accepting and waits for the open
/// connections to finish (the caller bounds that wait).
pub async fn serve<L>(
    mut listener: L,
    app: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()>
where
    L: Listener<Addr = SocketAddr>,
    L::Io: ConnSocket,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.header_timeout))
        .keep_alive_timeout(limits.header_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (io, peer) = tokio::select! {
            conn = listener.accept() => conn,
            () = &mut shutdown => break,
        };
        let app = app.clone();
        let idle = limits.body_idle_timeout;
        let plain = io.plain_fd().map(ClientSocket);
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            if let Some(sock) = plain {
                req.extensions_mut().insert(sock);
            }
            let app = app.clone();
            async move {
                let resp = app
                    .oneshot(req.map(|b| {
                        // A request without a body (most calls) has nothing to wait for.
                        if http_body::Body::is_end_stream(&b) {
                            axum::body::Body::new(b)
                        } else {
                            axum::body::Body::new(IdleBody::new(b, idle))
                        }
                    }))
                    .await
                    .unwrap_or_else(|e: Infallible| match e {});
                Ok::<_, Infallible>(resp)
            }
        });
        let heard = Arc::new(AtomicBool::new(false));
        let io = ConnIo::new(io, heard.clone());
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(io), service)
            .into_owned();
        let conn = graceful.watch(conn);
        let first_bytes = limits.header_timeout;
        tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn);
            // hyper's own deadline starts once it knows the protocol; telling HTTP/1 from HTTP/2 waits for
            // the first bytes with none, so a client that connects and says nothing gets this one.
            let r = tokio::select! {
                r = &mut conn => r,
                () = tokio::time::sleep(first_bytes) => {
                    if !heard.load(Ordering::Relaxed) {
                        tracing::debug!(peer = %peer, "connection closed: no request within the head deadline");
                        return;
                    }
                    conn.await
                }
            };
            if let Err(e) = r {
                tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
