//! `GET /ports/{port}/connect` with `Upgrade: sandpit-tcp`: a raw TCP tunnel to a server inside the
//! sandbox, for the daemon's preview URLs.
//!
//! The agent runs in the sandbox's network namespace, so it reaches servers bound to `127.0.0.1` (or
//! `::1`) as well as those bound to every address, whether or not the sandbox has a network link at all.
//! The connection is made before the upgrade is answered: nothing listening is a `502 bad_gateway`
//! that says so, not a tunnel that closes at once.

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use sandpit_types::ErrorCode;
use tokio::net::TcpStream;

use super::error::{ApiError, PathParam};

/// The `Upgrade` protocol name of a port tunnel.
pub const TUNNEL_PROTOCOL: &str = "sandpit-tcp";

pub async fn connect(PathParam(port): PathParam<u16>, mut req: Request) -> Response {
    let wants = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(TUNNEL_PROTOCOL));
    if !wants {
        return ApiError::invalid(format!(
            "a port tunnel needs `Connection: upgrade` and `Upgrade: {TUNNEL_PROTOCOL}`"
        ))
        .into_response();
    }
    if port == 0 {
        return ApiError::invalid("port must be 1-65535").into_response();
    }
    let stream = match TcpStream::connect(("127.0.0.1", port)).await {
        Ok(s) => s,
        Err(v4) => match TcpStream::connect(("::1", port)).await {
            Ok(s) => s,
            Err(_) => {
                return ApiError::new(
                    ErrorCode::BadGateway,
                    format!("nothing is listening on port {port} in the sandbox ({v4})"),
                )
                .into_response();
            }
        },
    };
    let _ = stream.set_nodelay(true);
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut client = TokioIo::new(upgraded);
        let mut server = stream;
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
    });
    let mut resp = StatusCode::SWITCHING_PROTOCOLS.into_response();
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    resp.headers_mut()
        .insert(header::UPGRADE, HeaderValue::from_static(TUNNEL_PROTOCOL));
    resp
}
