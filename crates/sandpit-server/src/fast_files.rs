//! The daemon's side of the file fast path ([`sandpit_types::files::SPLICE_PATH`]): large file content
//! between a client and an agent crosses the agent's connection raw, and the agent splices it to or from
//! the file, instead of reading it through its memory and framing it as an HTTP body.
//!
//! [`offer`] decides which requests take the path (a `GET /files`, and a `PUT /files` with a known
//! length of at least [`SPLICE_MIN_BYTES`] and no content encoding); [`forward`] carries one out. An
//! agent from before the path answers 404, and the request is then handed back untouched to go the
//! ordinary way ([`Fast::Declined`]). Everything the client sees (status, headers, errors) is what the
//! ordinary path gives.

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

use crate::proxy::{AgentConns, ProxyError};

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
    let identity = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.trim().is_empty() || v.trim().eq_ignore_ascii_case("identity"));
    method == Method::PUT && identity && declared_length(headers) >= Some(SPLICE_MIN_BYTES)
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
    req: Request<Body>,
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
    let len = declared_length(req.headers()).unwrap_or(0);
    if upload {
        headers.insert(HeaderName::from_static(SPLICE_LENGTH_HEADER), len.into());
    }
    let head = head
        .body(Body::empty())
        .map_err(|e| ProxyError::Build(e.to_string()))?;
    let mut resp = conns.request(head).await?;
    if resp.status() == StatusCode::NOT_FOUND {
        // An agent from before the fast path has no such route. (A new agent's 404 for a missing file
        // is asked again the ordinary way and comes back the same.)
        return Ok(Fast::Declined(req));
    }
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        // An error, or content small enough to come as an ordinary body.
        return Ok(Fast::Done(crate::proxy::end_to_end(resp)));
    }
    let io = hyper::upgrade::on(&mut resp)
        .await
        .map_err(|e| ProxyError::Exchange(format!("the fast path's upgrade failed: {e}")))?;
    let io = TokioIo::new(io);
    if upload {
        upload_content(io, req, len).await.map(Fast::Done)
    } else {
        download_content(io, &resp).map(Fast::Done)
    }
}

/// The client's answer to a download: the 101's headers as the real status's, and a body of exactly
/// the announced length read from the connection (shorter breaks the body off with an error).
fn download_content(
    io: TokioIo<hyper::upgrade::Upgraded>,
    switched: &Response<hyper::body::Incoming>,
) -> Result<Response<Body>, ProxyError> {
    let header_of = |name: &str| {
        switched
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let (Some(len), Some(status)) = (
        header_of(SPLICE_LENGTH_HEADER),
        header_of(SPLICE_STATUS_HEADER)
            .and_then(|s| u16::try_from(s).ok())
            .and_then(|s| StatusCode::from_u16(s).ok()),
    ) else {
        return Err(ProxyError::Exchange(
            "the agent switched to the file fast path without saying the status and length".into(),
        ));
    };
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
