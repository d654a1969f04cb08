//! The web console's assets, embedded in the binary: `GET /console` (and `/console/`) is its page,
//! `/console/console.js` and `/console/console.css` its bundle (built from `console/` with esbuild and
//! committed in `console/dist/`; `console/build.mjs --check` keeps the two equal), and `GET /` redirects
//! to `/console`. Nothing here is behind the API key: the page holds no data, and signs in through the API
//! like any client. The answers carry a strict Content-Security-Policy (same-origin scripts and connections
//! only, no framing) and an `ETag`, so a reload costs a 304.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use std::sync::LazyLock;

/// Where the console is served.
pub const PATH: &str = "/console";

/// The page's policy: its own scripts and styles (xterm.js sets inline styles), connections to the daemon
/// only (HTTP and WebSocket), images from itself or blobs, never framed.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; \
                   frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../../../console/dist/index.html"),
    },
    Asset {
        name: "console.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../../console/dist/console.js"),
    },
    Asset {
        name: "console.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../../console/dist/console.css"),
    },
];

/// Each asset's `ETag`: a hash of its bytes, worked out once.
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| {
            let d = ring::digest::digest(&ring::digest::SHA256, a.body);
            let hex = d.as_ref()[..12].iter().fold(String::new(), |mut s, b| {
                use std::fmt::Write as _;
                let _ = write!(s, "{b:02x}");
                s
            });
            format!("\"{hex}\"")
        })
        .collect()
});

/// The routes: `/`, `/console`, `/console/`, `/console/{file}`.
pub fn router() -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::temporary(PATH) }))
        .route(
            PATH,
            get(|h: HeaderMap| async move { serve("index.html", &h) }),
        )
        .route(
            "/console/",
            get(|h: HeaderMap| async move { serve("index.html", &h) }),
        )
        .route(
            "/console/{file}",
            get(|Path(file): Path<String>, h: HeaderMap| async move { serve(&file, &h) }),
        )
}

fn serve(name: &str, req: &HeaderMap) -> Response {
    let Some(i) = ASSETS.iter().position(|a| a.name == name) else {
        return crate::api::error::ApiError::NotFound(format!("no console file {name:?}"))
            .into_response();
    };
    let asset = &ASSETS[i];
    let etag = &ETAGS[i];
    let mut headers = HeaderMap::new();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::ETAG,
        HeaderValue::from_str(etag).expect("hex in quotes is a valid header value"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    let fresh = req
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if fresh {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    (headers, asset.body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_the_page_names_is_embedded() {
        let page = std::str::from_utf8(ASSETS[0].body).unwrap();
        for a in &ASSETS[1..] {
            assert!(
                page.contains(&format!("{PATH}/{}", a.name)),
                "{} not linked",
                a.name
            );
            assert!(!a.body.is_empty());
        }
    }

    #[test]
    fn a_matching_etag_is_a_304_and_an_unknown_file_a_404() {
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, ETAGS[1].parse().unwrap());
        assert_eq!(serve("console.js", &h).status(), StatusCode::NOT_MODIFIED);
        assert_eq!(
            serve("console.js", &HeaderMap::new()).status(),
            StatusCode::OK
        );
        assert_eq!(
            serve("../Cargo.toml", &HeaderMap::new()).status(),
            StatusCode::NOT_FOUND
        );
    }
}
