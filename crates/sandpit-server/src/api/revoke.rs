//! Responses that end when their credential does: a stream (SSE output, a file download, a long-poll)
//! opened with a key that is then revoked, or with a sandbox token that is rotated, or that expires, stops
//! within moments instead of running on. An SSE stream ends with an `error` event saying why; any other
//! body is cut (the client sees a broken transfer, never a silently short one).
//!
//! Only responses to other credentials than the key file's are wrapped: that key cannot be revoked, and
//! the hot paths (benchmarks, the CLI on the host) pay nothing.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::header;
use axum::response::Response;
use bytes::Bytes;
use http_body_util::BodyExt;

use crate::auth::{FILE_KEY_ID, Keys, Principal};

/// The SSE event a stream ends with when its credential stops working.
fn sse_error(message: &str) -> Bytes {
    let body = sandpit_types::ErrorBody::new(sandpit_types::ErrorCode::Unauthenticated, message);
    let json = serde_json::to_string(&body).unwrap_or_default();
    Bytes::from(format!("event: error\ndata: {json}\n\n"))
}

/// Resolves, with why, when `who`'s credential stops working (revoked, rotated, expired): what ends an
/// open WebSocket session. Never for the key file's key.
pub async fn until_invalid(keys: Arc<Keys>, who: Principal) -> String {
    if who.key_id == FILE_KEY_ID {
        return std::future::pending().await;
    }
    let mut rx = keys.revocations();
    let expiry = async {
        match who.expires_at_ms {
            Some(exp) => {
                let left = u64::try_from(exp - crate::time::now_ms()).unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(left)).await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::pin!(expiry);
    loop {
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    // The daemon is going away; its shutdown ends the session.
                    return std::future::pending().await;
                }
                if !keys.still_valid(&who) {
                    break;
                }
            }
            () = &mut expiry => break,
        }
    }
    tracing::info!(key = %who.key_id, "ending a session: its credential stopped working");
    format!(
        "the credential of this session ({}) was revoked or expired",
        who.key_id
    )
}

/// Wraps `resp`'s body so that it ends when `who`'s credential stops working.
pub fn revocable(resp: Response, keys: Arc<Keys>, who: Principal) -> Response {
    use http_body::Body as _;
    // Only open-ended bodies (a stream, a download without a length): a sized answer is over as soon as
    // it is written, and an upgrade's body is empty (a WebSocket session is not ended by a revocation yet).
    let open_ended = resp.body().size_hint().exact().is_none()
        && resp.status().is_success()
        && resp.status() != axum::http::StatusCode::SWITCHING_PROTOCOLS;
    if who.key_id == FILE_KEY_ID || !open_ended {
        return resp;
    }
    let sse = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/event-stream"));
    let (parts, body) = resp.into_parts();
    let deadline = who.expires_at_ms.map(|exp| {
        tokio::time::Instant::now()
            + Duration::from_millis(u64::try_from(exp - crate::time::now_ms()).unwrap_or(0))
    });
    let state = (body, keys.revocations(), Some((keys, who)), deadline, sse);
    let stream = futures_util::stream::unfold(
        state,
        |(mut body, mut rx, guard, deadline, sse)| async move {
            let (keys, who) = guard?;
            let expiry = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::pin!(expiry);
            loop {
                let ended = tokio::select! {
                    frame = body.frame() => match frame {
                        None => return None,
                        Some(Err(e)) => return Some((Err(std::io::Error::other(e)), (body, rx, None, None, sse))),
                        Some(Ok(f)) => match f.into_data() {
                            Ok(data) => {
                                return Some((Ok(data), (body, rx, Some((keys, who)), deadline, sse)));
                            }
                            Err(_trailers) => continue,
                        },
                    },
                    changed = rx.changed() => changed.is_err() || !keys.still_valid(&who),
                    () = &mut expiry => true,
                };
                if !ended {
                    continue;
                }
                let why = format!(
                    "the credential of this stream ({}) was revoked or expired",
                    who.key_id
                );
                tracing::info!(key = %who.key_id, "ending a stream: its credential stopped working");
                let item = if sse {
                    Ok(sse_error(&why))
                } else {
                    Err(std::io::Error::other(why))
                };
                return Some((item, (body, rx, None, None, sse)));
            }
        },
    );
    Response::from_parts(parts, Body::from_stream(stream))
}
