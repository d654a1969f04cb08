//! The agent's HTTP/1 server loop: accepts connections on its listener and serves the router on each,
//! with upgrades, until told to stop.
//!
//! Not `axum::serve`: that serves through hyper-util's HTTP/1-or-2 detection, which wraps each
//! connection in a private type, so an upgraded connection could not be turned back into its socket.
//! The file fast path ([`sandpit_types::files::SPLICE_PATH`]) needs the socket itself, to `splice(2)`
//! file content to and from it. The daemon speaks HTTP/1 to its agents; nothing here offers HTTP/2.

use std::future::Future;
use std::os::fd::OwnedFd;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;

use crate::Listener;

/// Serves `app` on `listener` until `stop` resolves, then waits for open connections to finish (each
/// ends once its current exchange has).
pub async fn serve(listener: Listener, app: Router, stop: impl Future<Output = ()> + Send) {
    let (stopping_tx, stopping) = tokio::sync::watch::channel(false);
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            () = &mut stop => break,
            a = accept(&listener) => a,
        };
        match accepted {
            Ok(Stream::Tcp(s)) => connection(s, app.clone(), stopping.clone()),
            Ok(Stream::Unix(s)) => connection(s, app.clone(), stopping.clone()),
            Err(e) => {
                // Out of fds and the like: pause rather than spin.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    stopping_tx.send_replace(true);
    drop(stopping);
    // Every connection holds a receiver until it has ended.
    stopping_tx.closed().await;
}

/// Serves one connection on its own task; `stopping` asks it to finish its exchange and close.
fn connection<S>(io: S, app: Router, mut stopping: tokio::sync::watch::Receiver<bool>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(app))
        .with_upgrades();
    tokio::spawn(async move {
        tokio::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = stopping.wait_for(|s| *s) => conn.as_mut().graceful_shutdown(),
        }
        let _ = conn.await;
    });
}

enum Stream {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn accept(l: &Listener) -> std::io::Result<Stream> {
    match l {
        Listener::Tcp(l) => {
            let (s, _) = l.accept().await?;
            let _ = s.set_nodelay(true);
            Ok(Stream::Tcp(s))
        }
        Listener::Unix(l) => Ok(Stream::Unix(l.accept().await?.0)),
    }
}

/// The socket under an upgraded connection served by [`serve`], in blocking mode; an error when hyper
/// had already read bytes past the request head (they would be lost) or the connection is of another
/// kind.
pub fn upgraded_socket(upgraded: hyper::upgrade::Upgraded) -> Result<OwnedFd, String> {
    let upgraded = match upgraded.downcast::<TokioIo<tokio::net::UnixStream>>() {
        Ok(parts) => return own(parts.read_buf.is_empty(), parts.io.into_inner().into_std()),
        Err(u) => u,
    };
    match upgraded.downcast::<TokioIo<tokio::net::TcpStream>>() {
        Ok(parts) => own(parts.read_buf.is_empty(), parts.io.into_inner().into_std()),
        Err(_) => Err("the upgraded connection is not a socket this server made".into()),
    }
}

fn own<S: Into<OwnedFd> + AsNonBlocking>(
    nothing_buffered: bool,
    std: std::io::Result<S>,
) -> Result<OwnedFd, String> {
    if !nothing_buffered {
        return Err("the peer sent bytes before the upgrade was answered".into());
    }
    let s = std.map_err(|e| format!("cannot take the socket: {e}"))?;
    s.blocking()
        .map_err(|e| format!("cannot take the socket: {e}"))?;
    Ok(s.into())
}

trait AsNonBlocking {
    fn blocking(&self) -> std::io::Result<()>;
}

impl AsNonBlocking for std::os::unix::net::UnixStream {
    fn blocking(&self) -> std::io::Result<()> {
        self.set_nonblocking(false)
    }
}

impl AsNonBlocking for std::net::TcpStream {
    fn blocking(&self) -> std::io::Result<()> {
        self.set_nonblocking(false)
    }
}
