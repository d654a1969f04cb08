//! Cross-origin access for browser clients (the TypeScript SDK in a web page): which origins may call the
//! daemon, the answer to their preflights, and the headers on their actual responses.
//!
//! This is a small middleware of its own rather than `tower_http::cors` because the contract differs from
//! that layer's in ways a browser can observe: a preflight is answered `204` (tower-http: `200`, for any
//! `OPTIONS`, origin or not), an origin that is not allowed gets no CORS header at all (tower-http still
//! sends the allowed methods and headers), and a configured `*` echoes the caller's origin instead of a
//! literal `*`, so that responses read the same whichever way the origin was allowed.
//!
//! The middleware sits outside authentication: a preflight never carries the API key, and a 401 must
//! still carry `Access-Control-Allow-Origin` or the page could not even read why it was refused.

use std::collections::HashSet;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Methods a cross-origin page may use: everything the API has (`PUT` writes files, network policies
/// and quotas; `HEAD` reads a file's size).
pub const ALLOW_METHODS: &str = "GET, HEAD, POST, PUT, DELETE, OPTIONS";
/// Request headers a cross-origin page may send: the key, JSON bodies, SSE resumption, a byte range of a
/// file, a gzipped upload.
pub const ALLOW_HEADERS: &str =
    "authorization, content-type, last-event-id, range, content-encoding";
/// Response headers a cross-origin page may read beyond the safelisted ones: where to poll a template
/// build, how to authenticate, when to retry and the create rate left, and a file's range, name and
/// modification time.
pub const EXPOSE_HEADERS: &str = "location, www-authenticate, retry-after, x-ratelimit-limit, \
     x-ratelimit-remaining, x-ratelimit-reset, content-range, content-disposition, last-modified, \
     accept-ranges";
/// How long a browser may cache a preflight answer, in seconds.
const MAX_AGE_SECS: &str = "600";

/// The configured origins, checked once at start-up by [`Cors::new`].
#[derive(Debug, Clone)]
pub struct Cors {
    any: bool,
    origins: HashSet<String>,
}

/// Why a configured origin cannot be used.
#[derive(Debug, thiserror::Error)]
#[error(
    "CORS origin {0:?} is invalid: give `*` or a scheme, host and optional port without a path, \
     e.g. `https://app.example.com` or `http://localhost:5173`"
)]
pub struct InvalidOrigin(pub String);

impl Cors {
    /// `None` when no origin is configured: then no CORS header is ever sent and a page on another origin
    /// cannot use the API, which is the safe default.
    pub fn new(origins: &[String]) -> Result<Option<Self>, InvalidOrigin> {
        let mut cors = Self {
            any: false,
            origins: HashSet::new(),
        };
        for o in origins {
            let o = o.trim();
            if o == "*" {
                cors.any = true;
            } else {
                cors.origins.insert(normalize(o)?);
            }
        }
        Ok((cors.any || !cors.origins.is_empty()).then_some(cors))
    }

    fn allows(&self, origin: &HeaderValue) -> bool {
        // `null` (sandboxed iframes, file:// pages) is shared by unrelated documents: never trust it by name.
        origin.to_str().is_ok_and(|o| {
            o != "null" && (self.any || self.origins.contains(&o.to_ascii_lowercase()))
        })
    }
}

/// Browsers send an origin as `scheme://host[:port]`, lower-case and without a path; a configured origin
/// is brought to that form so that `https://App.example.com` in a config file still matches.
fn normalize(origin: &str) -> Result<String, InvalidOrigin> {
    let bad = || InvalidOrigin(origin.to_owned());
    let (scheme, rest) = origin.split_once("://").ok_or_else(bad)?;
    let scheme_ok = scheme
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    let host_ok = !rest.is_empty()
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:[]_".contains(c));
    if !scheme_ok || !host_ok || HeaderValue::from_str(origin).is_err() {
        return Err(bad());
    }
    Ok(origin.to_ascii_lowercase())
}

/// Answers preflights of allowed origins and marks the responses to their actual requests.
pub async fn cors(State(cors): State<Arc<Cors>>, req: Request, next: Next) -> Response {
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .filter(|o| cors.allows(o))
        .cloned();
    let Some(origin) = origin else {
        let mut resp = next.run(req).await;
        // The answer depends on the Origin header even when it carries no CORS header: a cache must not
        // hand this response to an allowed origin, nor an allowed origin's response to this one.
        add_vary(resp.headers_mut(), "origin");
        return resp;
    };
    let is_preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if is_preflight {
        let mut resp = StatusCode::NO_CONTENT.into_response();
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOW_METHODS),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOW_HEADERS),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(MAX_AGE_SECS),
        );
        add_vary(
            h,
            "origin, access-control-request-method, access-control-request-headers",
        );
        return resp;
    }
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    // `insert`, not `append`: a proxied agent response must not smuggle in a second, different origin.
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSE_HEADERS),
    );
    add_vary(h, "origin");
    resp
}

fn add_vary(h: &mut HeaderMap, value: &'static str) {
    h.append(header::VARY, HeaderValue::from_static(value));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_checked_and_normalized() {
        let c = Cors::new(&[
            "https://App.example.com".into(),
            "http://localhost:5173".into(),
        ])
        .unwrap()
        .unwrap();
        assert!(c.allows(&HeaderValue::from_static("https://app.example.com")));
        assert!(c.allows(&HeaderValue::from_static("http://localhost:5173")));
        assert!(!c.allows(&HeaderValue::from_static("http://localhost:5174")));
        assert!(!c.allows(&HeaderValue::from_static("null")));
        for bad in [
            "app.example.com",
            "https://x/path",
            "https://",
            "://x",
            "https://x y",
        ] {
            assert!(Cors::new(&[bad.into()]).is_err(), "{bad}");
        }
        assert!(Cors::new(&[]).unwrap().is_none());
        let any = Cors::new(&["*".into()]).unwrap().unwrap();
        assert!(any.allows(&HeaderValue::from_static("https://anything.test")));
        assert!(!any.allows(&HeaderValue::from_static("null")));
    }
}
