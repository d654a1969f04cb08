//! [`Files::read_file`](crate::Files::read_file) and [`Files::write_file`](crate::Files::write_file)
//! over a switched connection, on plain HTTP/1.1: the request asks the daemon to switch the connection
//! ([`SPLICE_PROTOCOL`]), and the content goes between the local file and the socket by `splice(2)` and
//! `sendfile(2)`, never through this process's memory. On the daemon's side the same bytes go between
//! this socket and the agent's the same way, so a large transfer costs about what `cat` of the file
//! would (docs/api.md, "Switched transfers").
//!
//! It needs the socket itself, which `reqwest` does not hand out, so these requests go over their own
//! connection made with hyper. Over HTTPS, or with a proxy in the environment, they decline and the
//! caller takes the ordinary path; so does an upload the daemon cannot switch (`426`). An answer that is
//! not a switch (a small file, an error) is read as usual from the same connection.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd as _, BorrowedFd};
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice};
use sandpit_types::Entry;
use sandpit_types::files::{SPLICE_LENGTH_HEADER, SPLICE_PROTOCOL};
use tokio::net::TcpStream;

use crate::client::Client;
use crate::error::{Error, Result};

/// How long connecting may take (the client's default).
const CONNECT_WAIT: Duration = Duration::from_secs(10);
/// Longest the content may pause before the download fails.
const IDLE_LIMIT: Duration = Duration::from_secs(60);
/// Bytes asked of the kernel per step (the pipe's size, when the kernel grants it).
const STEP: usize = 1 << 20;
/// Most of an error answer read.
const MAX_ERROR_BODY: usize = 1 << 20;

/// Environment variables through which `reqwest` would send a request to a proxy: then the download
/// goes the ordinary way, through `reqwest`, which honours them.
const PROXY_VARS: [&str; 4] = ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"];

/// A connection of its own to the daemon `req` is for, ready for one request; `None` when this path
/// does not apply (HTTPS, a proxy) and nothing was sent.
async fn connect(
    client: &Client,
    req: &reqwest::Request,
) -> Result<
    Option<(
        hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
        String,
    )>,
> {
    let url = req.url();
    if url.scheme() != "http"
        || PROXY_VARS
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()))
    {
        return Ok(None);
    }
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return Ok(None);
    };
    let authority = format!("{host}:{port}");
    let tcp = tokio::time::timeout(CONNECT_WAIT, TcpStream::connect(&authority))
        .await
        .map_err(|_| unreachable(client, io::ErrorKind::TimedOut.into()))?
        .map_err(|e| unreachable(client, e))?;
    let _ = tcp.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| unreachable(client, io::Error::other(e)))?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    Ok(Some((sender, authority)))
}

fn unreachable(client: &Client, e: io::Error) -> Error {
    Error::io(
        format!("cannot reach the sandpit daemon at {}", client.url()),
        e,
    )
}

/// `req` (method, URL, headers) as a request for hyper that asks for the switch, with no body.
fn switch_request(
    req: &reqwest::Request,
    authority: String,
) -> Result<hyper::Request<Empty<Bytes>>> {
    let url = req.url();
    let target = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    let mut head = hyper::Request::builder()
        .method(req.method().clone())
        .uri(target)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONNECTION, "upgrade")
        .header(hyper::header::UPGRADE, SPLICE_PROTOCOL);
    if let Some(h) = head.headers_mut() {
        for (name, value) in req.headers() {
            h.insert(name.clone(), value.clone());
        }
    }
    head.body(Empty::<Bytes>::new())
        .map_err(|e| Error::invalid(e.to_string()))
}

/// The content's length a switched download's 101 announces ([`SPLICE_LENGTH_HEADER`]).
pub(crate) fn switched_length(headers: &hyper::HeaderMap) -> Result<u64> {
    headers
        .get(SPLICE_LENGTH_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| {
            Error::Protocol(format!(
                "the daemon switched the download without a {SPLICE_LENGTH_HEADER} header"
            ))
        })
}

/// The switched connection under a 101, as a blocking socket, and what hyper read past the head.
async fn take_socket(
    client: &Client,
    resp: hyper::Response<hyper::body::Incoming>,
) -> Result<(std::net::TcpStream, Bytes)> {
    let parts = hyper::upgrade::on(resp)
        .await
        .map_err(|e| unreachable(client, io::Error::other(e)))?
        .downcast::<TokioIo<TcpStream>>()
        .map_err(|_| Error::Protocol("the switched connection is not this one".into()))?;
    let sock = parts
        .io
        .into_inner()
        .into_std()
        .map_err(|e| unreachable(client, e))?;
    sock.set_nonblocking(false)
        .and_then(|()| sock.set_read_timeout(Some(IDLE_LIMIT)))
        .and_then(|()| sock.set_write_timeout(Some(IDLE_LIMIT)))
        .map_err(|e| unreachable(client, e))?;
    Ok((sock, parts.read_buf))
}

/// An error answer (not a switch) as the SDK's [`Error`].
async fn failure(client: &Client, resp: hyper::Response<hyper::body::Incoming>) -> Error {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = http_body_util::BodyExt::collect(http_body_util::Limited::new(
        resp.into_body(),
        MAX_ERROR_BODY,
    ))
    .await
    .map(http_body_util::Collected::to_bytes)
    .unwrap_or_default();
    client.failure(status, &headers, &body)
}

/// Downloads what `req` (a `GET /files` built by the SDK, key attached) answers into `local`: the bytes
/// written, or `None` when this path does not apply (HTTPS, a proxy) and nothing was sent.
pub(crate) async fn to_file(
    client: &Client,
    req: reqwest::Request,
    local: &Path,
) -> Result<Option<u64>> {
    let Some((mut sender, authority)) = connect(client, &req).await? else {
        return Ok(None);
    };
    let resp = sender
        .send_request(switch_request(&req, authority)?)
        .await
        .map_err(|e| unreachable(client, io::Error::other(e)))?;
    let status = resp.status();
    if status == hyper::StatusCode::SWITCHING_PROTOCOLS {
        let len = switched_length(resp.headers())?;
        let (sock, ahead) = take_socket(client, resp).await?;
        let f = create(local)?;
        let writing = format!("writing {}", local.display());
        let moved = tokio::task::spawn_blocking(move || socket_to_file(&sock, &ahead, len, &f))
            .await
            .unwrap_or_else(|e| Err(Failed::Read(io::Error::other(e))))
            .map_err(|e| match e {
                Failed::Read(e) => read_failed(&e),
                Failed::Write(e) => Error::io(writing, e),
            });
        return finish(local, moved.map(|()| len)).map(Some);
    }
    if !status.is_success() {
        return Err(failure(client, resp).await);
    }
    let body = http_body_util::BodyStream::new(resp.into_body()).filter_map(|frame| async move {
        match frame {
            Ok(f) => f.into_data().ok().map(Ok),
            Err(e) => Some(Err(read_failed(&io::Error::other(e)))),
        }
    });
    stream_to_file(body, local).await.map(Some)
}

/// Uploads the local file `local` (`len` bytes) as `req` (a `PUT /files` built by the SDK, key
/// attached, no body) asks: the entry written, or `None` when this path does not apply (HTTPS, a
/// proxy, a connection the daemon cannot switch) and the content was not sent.
pub(crate) async fn from_file(
    client: &Client,
    req: reqwest::Request,
    local: &Path,
    len: u64,
) -> Result<Option<Entry>> {
    let Some((mut sender, authority)) = connect(client, &req).await? else {
        return Ok(None);
    };
    let mut head = switch_request(&req, authority)?;
    head.headers_mut().insert(
        hyper::header::HeaderName::from_static(SPLICE_LENGTH_HEADER),
        len.into(),
    );
    let resp = sender
        .send_request(head)
        .await
        .map_err(|e| unreachable(client, io::Error::other(e)))?;
    let status = resp.status();
    if status.as_u16() == sandpit_types::error::UPGRADE_REQUIRED {
        return Ok(None);
    }
    if status != hyper::StatusCode::SWITCHING_PROTOCOLS {
        return Err(failure(client, resp).await);
    }
    let f =
        File::open(local).map_err(|e| Error::io(format!("cannot open {}", local.display()), e))?;
    let (sock, ahead) = take_socket(client, resp).await?;
    if !ahead.is_empty() {
        return Err(Error::Protocol(
            "the daemon sent bytes before an upload's content".into(),
        ));
    }
    let answer = tokio::task::spawn_blocking(move || file_to_socket(&f, &sock, len))
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)))
        .map_err(|e| Error::io(format!("sending {}", local.display()), e))?;
    let (status, json) = answer
        .get(..3)
        .filter(|_| answer.get(3) == Some(&b'\n'))
        .and_then(|code| std::str::from_utf8(code).ok()?.parse::<u16>().ok())
        .map(|status| (status, &answer[4..]))
        .ok_or_else(|| {
            Error::Protocol(format!(
                "the answer to a switched upload is not a status and a body ({} bytes)",
                answer.len()
            ))
        })?;
    if (200..300).contains(&status) {
        serde_json::from_slice(json)
            .map(Some)
            .map_err(|e| Error::Protocol(format!("the upload's entry: {e}")))
    } else {
        Err(client.failure(status, &hyper::HeaderMap::new(), json))
    }
}

/// Sends `len` bytes of `f` from its start on `sock` by `sendfile(2)`, then reads the daemon's answer
/// up to its close. A daemon that answered before taking everything (a full disk) has its answer read
/// all the same.
fn file_to_socket(f: &File, sock: &std::net::TcpStream, len: u64) -> io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut offset: nix::libc::off_t = 0;
    let mut sent = 0u64;
    let mut send_failed = None;
    while sent < len {
        let want = usize::try_from(len - sent).unwrap_or(usize::MAX).min(STEP);
        match nix::sys::sendfile::sendfile(sock.as_fd(), f.as_fd(), Some(&mut offset), want) {
            Ok(0) => {
                // The file shrank: closing short tells the daemon to write nothing.
                return Err(io::Error::other(format!(
                    "the file ended after {sent} of its {len} bytes"
                )));
            }
            Ok(n) => sent += n as u64,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                send_failed = Some(io::Error::from(e));
                break;
            }
        }
    }
    let mut answer = Vec::new();
    let r = sock;
    match r.take(1 << 20).read_to_end(&mut answer) {
        Ok(_) => {}
        Err(_) if !answer.is_empty() => {}
        Err(e) => return Err(send_failed.unwrap_or(e)),
    }
    if answer.is_empty() {
        return Err(send_failed.unwrap_or_else(|| {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the daemon closed the connection without an answer",
            )
        }));
    }
    Ok(answer)
}

fn read_failed(e: &io::Error) -> Error {
    Error::io(
        "reading the file's content",
        io::Error::new(e.kind(), e.to_string()),
    )
}

fn create(local: &Path) -> Result<File> {
    File::create(local).map_err(|e| Error::io(format!("cannot create {}", local.display()), e))
}

/// A download's outcome; one that failed removes `local` rather than leave it short.
fn finish(local: &Path, r: Result<u64>) -> Result<u64> {
    if r.is_err() {
        let _ = std::fs::remove_file(local);
    }
    r
}

/// Streams `chunks` into the local file `local` (created or truncated); returns the bytes written.
/// Chunks go straight from the connection to a blocking writer thread, with no copy between (a
/// `tokio::fs::File` behind `tokio::io::copy` copies each chunk twice more and hops threads per write).
pub(crate) async fn stream_to_file(
    chunks: impl Stream<Item = Result<Bytes>> + Send,
    local: &Path,
) -> Result<u64> {
    let f = create(local)?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let writer = tokio::task::spawn_blocking(move || -> io::Result<u64> {
        use std::io::Write as _;
        let mut f = f;
        let mut n = 0u64;
        while let Some(chunk) = rx.blocking_recv() {
            f.write_all(&chunk)?;
            n += chunk.len() as u64;
        }
        Ok(n)
    });
    let mut failed = None;
    let mut chunks = std::pin::pin!(chunks);
    while let Some(chunk) = chunks.next().await {
        match chunk {
            Ok(c) => {
                if tx.send(c).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    drop(tx);
    let written = writer
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)))
        .map_err(|e| Error::io(format!("writing {}", local.display()), e));
    finish(
        local,
        match (failed, written) {
            (None, Ok(n)) => Ok(n),
            (Some(e), _) | (None, Err(e)) => Err(e),
        },
    )
}

/// Which side of a switched download failed.
enum Failed {
    /// The connection (or the pipe between).
    Read(io::Error),
    /// The local file.
    Write(io::Error),
}

/// Writes `ahead` (what hyper read past the 101), then moves the rest of `len` bytes from `sock` to `f`
/// by `splice(2)` through a pipe. A connection that ends first is an error.
fn socket_to_file(
    sock: &std::net::TcpStream,
    ahead: &[u8],
    len: u64,
    f: &File,
) -> Result<(), Failed> {
    use std::io::Write as _;
    sock.set_nonblocking(false).map_err(Failed::Read)?;
    sock.set_read_timeout(Some(IDLE_LIMIT))
        .map_err(Failed::Read)?;
    let got = ahead.len() as u64;
    if got > len {
        return Err(Failed::Read(io::Error::other(
            "the daemon sent more than it announced",
        )));
    }
    let mut w = f;
    w.write_all(ahead).map_err(Failed::Write)?;
    let (pipe_r, pipe_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Failed::Read(e.into()))?;
    // Refused above the user's pipe allowance: the default size only makes more steps.
    let _ = fcntl(&pipe_w, FcntlArg::F_SETPIPE_SZ(STEP as i32));
    let mut left = len - got;
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(STEP);
        let n = step(sock.as_fd(), pipe_w.as_fd(), want).map_err(Failed::Read)?;
        if n == 0 {
            return Err(Failed::Read(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the download ended {left} bytes short"),
            )));
        }
        left -= n as u64;
        let mut queued = n;
        while queued > 0 {
            match step(pipe_r.as_fd(), f.as_fd(), queued).map_err(Failed::Write)? {
                0 => return Err(Failed::Write(io::ErrorKind::WriteZero.into())),
                k => queued -= k,
            }
        }
    }
    Ok(())
}

/// One `splice`, retried on EINTR.
fn step(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
    loop {
        match splice(from, None, to, None, len, SpliceFFlags::SPLICE_F_MOVE) {
            Err(nix::errno::Errno::EINTR) => {}
            r => return r.map_err(io::Error::from),
        }
    }
}
