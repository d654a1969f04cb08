//! The reverse proxy from `/v1/sandboxes/{id}/…` to a sandbox's agent over its unix socket.
//!
//! The daemon never interprets process traffic: request and response bodies are handed through as streams
//! (so SSE arrives event by event and large stdin writes are never held in memory), and WebSocket upgrades
//! are completed on both sides and then spliced with `copy_bidirectional`. Only hop-by-hop headers and the
//! client's credentials are dropped on the way: the API key is the daemon's, never the sandbox's.

use std::path::Path;

use axum::body::Body;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The agent socket did not accept the connection: the agent is probably gone.
    #[error("cannot connect to the agent socket: {0}")]
    Connect(std::io::Error),
    /// The connection broke before a response head arrived.
    #[error("the agent did not answer: {0}")]
    Exchange(hyper::Error),
    #[error("cannot build the proxied request: {0}")]
    Build(String),
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

/// Sends `req` to the agent at `socket` as `path_and_query` and returns the agent's response, streaming.
pub async fn forward(
    socket: &Path,
    mut req: Request<Body>,
    path_and_query: &str,
) -> Result<Response<Body>, ProxyError> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(ProxyError::Connect)?;
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake::<_, Body>(TokioIo::new(stream))
        .await
        .map_err(ProxyError::Exchange)?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "agent connection ended with an error");
        }
    });

    let upgrade = wants_upgrade(req.headers()).then(|| {
        let protocol = req.headers().get(header::UPGRADE).cloned();
        (hyper::upgrade::on(&mut req), protocol)
    });
    let (parts, body) = req.into_parts();
    let mut out = Request::builder().method(parts.method).uri(path_and_query);
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
    let out = out
        .body(body)
        .map_err(|e| ProxyError::Build(e.to_string()))?;

    let mut resp = sender
        .send_request(out)
        .await
        .map_err(ProxyError::Exchange)?;

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let agent_upgrade = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                match tokio::try_join!(client_upgrade, agent_upgrade) {
                    Ok((client, agent)) => {
                        let (mut client, mut agent) = (TokioIo::new(client), TokioIo::new(agent));
                        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut agent).await
                        {
                            tracing::debug!(error = %e, "upgraded connection ended with an error");
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "connection upgrade failed"),
                }
            });
        }
        let (parts, _) = resp.into_parts();
        // A 101 keeps its Connection/Upgrade headers: they are what the client's upgrade is checked against.
        return Ok(Response::from_parts(parts, Body::empty()));
    }

    let (mut parts, body) = resp.into_parts();
    let headers = std::mem::take(&mut parts.headers);
    copy_end_to_end(&headers, &mut parts.headers);
    Ok(Response::from_parts(parts, Body::new(body)))
}

fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
        })
}

/// Copies every header except the hop-by-hop ones, including those the `Connection` header names.
fn copy_end_to_end(from: &HeaderMap, to: &mut HeaderMap) {
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
