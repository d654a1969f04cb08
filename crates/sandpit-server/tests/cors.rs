//! CORS as a browser sees it: preflights of allowed origins answered without the key, actual responses
//! (errors, proxied calls and SSE streams included) marked for allowed origins only.

mod common;

use common::{Daemon, FakeBackend, client};
use reqwest::Method;
use reqwest::header::HeaderMap;

const PAGE: &str = "http://localhost:5173";

async fn daemon(dir: &std::path::Path, origins: &[&str]) -> Daemon {
    let mut config = Daemon::config(dir);
    config.cors_origins = origins.iter().map(|o| (*o).to_owned()).collect();
    Daemon::start_with(config, FakeBackend::new()).await
}

fn cors_headers(h: &HeaderMap) -> Vec<String> {
    h.keys()
        .map(ToString::to_string)
        .filter(|k| k.starts_with("access-control-"))
        .collect()
}

fn varies_on_origin(h: &HeaderMap) -> bool {
    h.get_all("vary")
        .iter()
        .any(|v| v.to_str().unwrap().to_ascii_lowercase().contains("origin"))
}

async fn preflight(d: &Daemon, path: &str, origin: &str) -> reqwest::Response {
    reqwest::Client::new()
        .request(Method::OPTIONS, d.url(path))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn allowed_origin_preflight_and_responses() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(dir.path(), &[PAGE, "https://app.example.com"]).await;

    // Preflight: no key, 204, the allow lists.
    for path in ["/v1/sandboxes", "/v1/sandboxes/abc/exec", "/v1/nowhere"] {
        let r = preflight(&d, path, PAGE).await;
        assert_eq!(r.status(), 204, "{path}");
        let h = r.headers();
        assert_eq!(h["access-control-allow-origin"], PAGE);
        assert_eq!(
            h["access-control-allow-methods"],
            "GET, HEAD, POST, PUT, DELETE, OPTIONS"
        );
        assert_eq!(
            h["access-control-allow-headers"],
            "authorization, content-type, last-event-id, range, content-encoding"
        );
        assert!(varies_on_origin(h));
    }

    // Actual requests: the origin echoed, also on a 401 so that the page can read why.
    let r = client()
        .get(d.url("/v1/sandboxes"))
        .header("origin", PAGE)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["access-control-allow-origin"], PAGE);
    assert!(varies_on_origin(r.headers()));
    let r = reqwest::Client::new()
        .get(d.url("/v1/sandboxes"))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(
        r.headers()["access-control-expose-headers"],
        sandpit_server::api::cors::EXPOSE_HEADERS
    );
    assert!(
        sandpit_server::api::cors::EXPOSE_HEADERS.contains("retry-after"),
        "a page must be able to read when to retry a 429"
    );

    // Proxied calls and SSE streams carry it too.
    let (status, sb) = common::call(
        client()
            .post(d.url("/v1/sandboxes"))
            .header("origin", PAGE)
            .json(&serde_json::json!({})),
    )
    .await;
    assert_eq!(status, 201);
    let id = sb["id"].as_str().unwrap();
    let r = client()
        .get(d.url(&format!("/v1/sandboxes/{id}/processes?status=running")))
        .header("origin", PAGE)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["access-control-allow-origin"], PAGE);
    let r = client()
        .get(d.url(&format!("/v1/sandboxes/{id}/processes/1/events")))
        .header("origin", PAGE)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert_eq!(r.headers()["access-control-allow-origin"], PAGE);
    drop(r);
    d.stop().await.unwrap();
}

#[tokio::test]
async fn disallowed_origins_get_no_cors_headers() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(dir.path(), &[PAGE]).await;
    for origin in ["http://localhost:5174", "https://evil.example", "null"] {
        let r = preflight(&d, "/v1/sandboxes", origin).await;
        assert_ne!(r.status(), 204);
        assert!(cors_headers(r.headers()).is_empty(), "{origin}");
        let r = client()
            .get(d.url("/v1/sandboxes"))
            .header("origin", origin)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(cors_headers(r.headers()).is_empty(), "{origin}");
    }
    d.stop().await.unwrap();
}

#[tokio::test]
async fn star_echoes_any_origin_and_no_config_means_no_cors() {
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(dir.path(), &["*"]).await;
    let r = preflight(&d, "/v1/sandboxes", "https://anything.example").await;
    assert_eq!(r.status(), 204);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://anything.example"
    );
    d.stop().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let d = daemon(dir.path(), &[]).await;
    let r = preflight(&d, "/v1/sandboxes", PAGE).await;
    assert_eq!(r.status(), 401);
    assert!(cors_headers(r.headers()).is_empty());
    d.stop().await.unwrap();
}
