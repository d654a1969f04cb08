//! The daemon's API end to end over HTTP, with a fake backend (see `common`): auth, lifecycle and its
//! conflicts, input validation, TTL, proxying (plain, SSE, WebSocket), auto-resume, agent loss, restart
//! recovery, metrics and the `OpenAPI` document.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{Daemon, FakeBackend, KEY, call, client};
use futures_util::{SinkExt, StreamExt};
use sandpit_server::time::ManualClock;
use serde_json::{Value, json};

async fn create(d: &Daemon, body: Value) -> Value {
    let (status, v) = call(client().post(d.url("/v1/sandboxes")).json(&body)).await;
    assert_eq!(status, 201, "{v}");
    v
}

#[tokio::test]
async fn every_call_but_health_needs_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), FakeBackend::new()).await;
    let anon = reqwest::Client::new();
    let (status, _) = call(anon.get(d.url("/health"))).await;
    assert_eq!(status, 200);
    for path in [
        "/v1/sandboxes",
        "/metrics",
        "/openapi.json",
        "/v1/sandboxes/x/exec",
        "/nope",
    ] {
        let resp = anon.get(d.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 401, "{path}");
        assert_eq!(resp.headers()["www-authenticate"], "Bearer");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], "unauthenticated");
    }
    let (status, _) = call(
        anon.get(d.url("/v1/sandboxes"))
            .bearer_auth("wrong-key-0123456789abcdef"),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = call(anon.get(d.url("/v1/sandboxes")).bearer_auth(KEY)).await;
    assert_eq!(status, 200);
    // Browsers cannot set headers on WebSocket/EventSource: the key may come as `access_token`.
    let (status, _) = call(anon.get(d.url(&format!("/v1/sandboxes?access_token={KEY}")))).await;
    assert_eq!(status, 200);
    let (status, _) = call(anon.get(d.url("/v1/sandboxes?access_token=nope"))).await;
    assert_eq!(status, 401);
    d.stop().await.unwrap();
}

/// The web console's page and bundle need no key (the page signs in through the API), carry a strict
/// Content-Security-Policy, and answer a repeated request with 304; `/` leads to it; nothing else is opened.
#[tokio::test]
async fn the_console_is_served_without_a_key_and_nothing_else_is() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), FakeBackend::new()).await;
    let anon = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let root = anon.get(d.url("/")).send().await.unwrap();
    assert_eq!(root.status(), 307);
    assert_eq!(root.headers()["location"], "/console");
    for (path, kind) in [
        ("/console", "text/html"),
        ("/console/", "text/html"),
        ("/console/console.js", "text/javascript"),
        ("/console/console.css", "text/css"),
    ] {
        let resp = anon.get(d.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let h = resp.headers().clone();
        assert!(
            h["content-type"].to_str().unwrap().starts_with(kind),
            "{path}: {h:?}"
        );
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{csp}"
        );
        assert_eq!(h["x-content-type-options"], "nosniff");
        let body = resp.bytes().await.unwrap();
        assert!(body.len() > 100, "{path}");
        let again = anon
            .get(d.url(path))
            .header("if-none-match", h["etag"].clone())
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{path}");
    }
    let page = anon
        .get(d.url("/console"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("/console/console.js") && page.contains("/console/console.css"));
    // Only the console's own files: no path escapes, and the API behind it still wants the key.
    for path in ["/console/nope.js", "/console/..%2FCargo.toml"] {
        let resp = anon.get(d.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 404, "{path}");
    }
    for path in ["/console/a/b", "/v1/sandboxes"] {
        let resp = anon.get(d.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 401, "{path}");
    }
    d.stop().await.unwrap();
}

/// Every route the daemon's `/openapi.json` lists, with every method, on a real sandbox id (so that a call that
/// got through would reach the sandbox's agent and succeed), refuses each way of getting the key wrong.
#[tokio::test]
async fn every_documented_route_refuses_every_wrong_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), FakeBackend::new()).await;
    let id = create(&d, json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, doc) = call(client().get(d.url("/openapi.json"))).await;
    assert_eq!(s, 200);
    let wrong: [(&str, Option<String>, &str); 8] = [
        ("no key", None, ""),
        (
            "wrong key",
            Some(format!("Bearer {}x", &KEY[..KEY.len() - 1])),
            "",
        ),
        ("key with a suffix", Some(format!("Bearer {KEY}x")), ""),
        (
            "key prefix",
            Some(format!("Bearer {}", &KEY[..KEY.len() / 2])),
            "",
        ),
        ("empty bearer", Some("Bearer ".into()), ""),
        ("basic scheme", Some(format!("Basic {KEY}")), ""),
        ("raw key, no scheme", Some(KEY.into()), ""),
        ("wrong access_token", None, "?access_token=nope"),
    ];
    let anon = reqwest::Client::new();
    let mut tried = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let concrete = path
            .replace("{id}", &id)
            .replace("{pid}", "p1")
            .replace("{name}", "t1");
        for method in item.as_object().unwrap().keys() {
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            for (what, header, query) in &wrong {
                let mut rb = anon
                    .request(m.clone(), d.url(&format!("{concrete}{query}")))
                    .header("content-type", "application/json")
                    .body("{}");
                if let Some(h) = header {
                    rb = rb.header("authorization", h);
                }
                let resp = rb.send().await.unwrap();
                let status = resp.status().as_u16();
                if path == "/health" {
                    assert_eq!(status, 200, "/health must stay open");
                    continue;
                }
                let v: Value = resp.json().await.unwrap_or(Value::Null);
                assert_eq!(
                    (status, v["error"]["code"].as_str()),
                    (401, Some("unauthenticated")),
                    "{method} {path} with {what}: {v}"
                );
                tried += 1;
            }
        }
    }
    // Routes only the agent knows (files, say) go through the same gate.
    for path in [
        format!("/v1/sandboxes/{id}/files?path=/etc/passwd"),
        format!("/v1/sandboxes/{id}/anything/at/all"),
    ] {
        let resp = anon.get(d.url(&path)).send().await.unwrap();
        assert_eq!(resp.status(), 401, "{path}");
        tried += 1;
    }
    // A WebSocket upgrade without the key is refused before the upgrade.
    let ws = d
        .url(&format!("/v1/sandboxes/{id}/processes/p1/ws"))
        .replacen("http://", "ws://", 1);
    match tokio_tungstenite::connect_async(ws).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("websocket without a key: {other:?}"),
    }
    tried += 1;
    eprintln!("{tried} unauthenticated calls refused");
    assert!(
        tried > 150,
        "only {tried} calls: the document lists too few routes"
    );
    d.stop().await.unwrap();
}

#[tokio::test]
async fn generated_key_is_stored_0600_and_accepted() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let mut config = Daemon::config(dir.path());
    config.api_key = None;
    let d = Daemon::start_with(config, FakeBackend::new()).await;
    let path = dir.path().join("api-key");
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let key = std::fs::read_to_string(&path).unwrap();
    assert!(key.trim().len() >= 32);
    let (status, _) = call(
        reqwest::Client::new()
            .get(d.url("/v1/sandboxes"))
            .bearer_auth(key.trim()),
    )
    .await;
    assert_eq!(status, 200);
    d.stop().await.unwrap();
}

#[tokio::test]
async fn lifecycle_and_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let backend = FakeBackend::new();
    let d = Daemon::start(dir.path(), backend.clone()).await;
    let c = client();

    let sb = create(
        &d,
        json!({"metadata": {"team": "ml"}, "env": {"A": "1"}, "cpu": 0.5, "memory_mb": 256}),
    )
    .await;
    let id = sb["id"].as_str().unwrap().to_owned();
    assert_eq!(sb["state"], "running");
    assert_eq!(sb["template"], "base");
    assert_eq!(sb["on_timeout"], "kill");
    assert!(sb["expires_at"].as_str().unwrap().ends_with('Z'));
    let other = create(&d, json!({})).await;

    let (s, v) = call(c.get(d.url(&format!("/v1/sandboxes/{id}")))).await;
    assert_eq!((s, &v["id"]), (200, &json!(id)));
    let (_, v) = call(c.get(d.url("/v1/sandboxes?metadata=team=ml"))).await;
    assert_eq!(v["sandboxes"].as_array().unwrap().len(), 1);
    let (_, v) = call(c.get(d.url("/v1/sandboxes?state=running"))).await;
    assert_eq!(v["sandboxes"].as_array().unwrap().len(), 2);

    let (s, v) = call(c.post(d.url(&format!("/v1/sandboxes/{id}/pause")))).await;
    assert_eq!(
        (s, &v["state"], &v["expires_at"]),
        (200, &json!("paused"), &Value::Null)
    );
    let (s, v) = call(c.post(d.url(&format!("/v1/sandboxes/{id}/pause")))).await;
    assert_eq!((s, &v["error"]["code"]), (409, &json!("conflict")));
    let (_, v) = call(c.get(d.url("/v1/sandboxes?state=paused,stopped"))).await;
    assert_eq!(v["sandboxes"].as_array().unwrap().len(), 1);

    let (s, v) = call(c.post(d.url(&format!("/v1/sandboxes/{id}/resume")))).await;
    assert_eq!((s, &v["state"]), (200, &json!("running")));
    let (s, _) = call(c.post(d.url(&format!("/v1/sandboxes/{id}/resume")))).await;
    assert_eq!(s, 409);
    let (s, v) = call(c.post(d.url(&format!("/v1/sandboxes/{id}/connect")))).await;
    assert_eq!((s, &v["state"]), (200, &json!("running")));

    let before = sb["expires_at"].as_str().unwrap().to_owned();
    let (s, v) = call(
        c.post(d.url(&format!("/v1/sandboxes/{id}/timeout")))
            .json(&json!({"timeout": 3600})),
    )
    .await;
    assert_eq!(s, 200);
    assert!(v["expires_at"].as_str().unwrap() > before.as_str());

    let (s, _) = call(c.delete(d.url(&format!("/v1/sandboxes/{id}")))).await;
    assert_eq!(s, 204);
    assert_eq!(backend.destroys.load(Ordering::SeqCst), 1);
    assert!(!dir.path().join("sandboxes").join(&id).exists());
    for (method, path) in [
        ("GET", format!("/v1/sandboxes/{id}")),
        ("DELETE", format!("/v1/sandboxes/{id}")),
        ("POST", format!("/v1/sandboxes/{id}/pause")),
        ("POST", format!("/v1/sandboxes/{id}/resume")),
        ("POST", format!("/v1/sandboxes/{id}/exec")),
        ("GET", "/v1/sandboxes/unknown".to_owned()),
    ] {
        let (s, v) = call(c.request(method.parse().unwrap(), d.url(&path))).await;
        assert_eq!(
            (s, &v["error"]["code"]),
            (404, &json!("not_found")),
            "{method} {path}"
        );
    }
    let (_, v) = call(c.get(d.url("/v1/sandboxes"))).await;
    assert_eq!(v["sandboxes"].as_array().unwrap().len(), 1);
    assert_eq!(v["sandboxes"][0]["id"], other["id"]);
    d.stop().await.unwrap();
}

#[tokio::test]
#[allow(clippy::too_many_lines)] // one table of cases reads better than several tests
async fn bad_input_is_a_4xx_json_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), FakeBackend::new()).await;
    let c = client();
    let url = d.url("/v1/sandboxes");
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            c.post(&url).json(&json!({"tempalte": "base"})),
            400,
            "invalid_argument",
        ),
        (
            c.post(&url)
                .header("content-type", "application/json")
                .body("{"),
            400,
            "invalid_argument",
        ),
        (
            c.post(&url)
                .header("content-type", "application/json")
                .body("[]"),
            400,
            "invalid_argument",
        ),
        (
            c.post(&url).header("content-type", "text/plain").body("{}"),
            400,
            "invalid_argument",
        ),
        (
            c.post(&url).json(&json!({"timeout": 0})),
            400,
            "invalid_argument",
        ),
        (
            c.post(&url).json(&json!({"timeout": 10_000_000})),
            400,
            "invalid_argument",
        ),
        (
            c.post(&url).json(&json!({"cpu": -1})),
            400,
            "invalid_argument",
        ),
        (
            c.post(&url).json(&json!({"memory_mb": "lots"})),
            400,
            "invalid_argument",
        ),
        (
            c.post(&url).json(&json!({"on_timeout": "explode"})),
            400,
            "invalid_argument",
        ),
        (
            c.post(&url).json(&json!({"env": {"A=B": "x"}})),
            400,
            "invalid_argument",
        ),
        (
            c.post(&url).json(&json!({"template": "missing"})),
            404,
            "not_found",
        ),
        (
            c.post(&url)
                .json(&json!({"metadata": {"x": "a".repeat(2 << 20)}})),
            413,
            "payload_too_large",
        ),
        (
            c.get(d.url("/v1/sandboxes?state=sleeping")),
            400,
            "invalid_argument",
        ),
        (
            c.get(d.url("/v1/sandboxes?metadata=novalue")),
            400,
            "invalid_argument",
        ),
        (
            c.get(d.url("/v1/sandboxes?bogus=1")),
            400,
            "invalid_argument",
        ),
        (c.get(d.url("/v2/nothing")), 404, "not_found"),
        (c.put(&url), 405, "invalid_argument"),
    ];
    for (i, (rb, status, code)) in cases.into_iter().enumerate() {
        let (s, v) = call(rb).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (status, Some(code)),
            "case {i}: {v}"
        );
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let sb = create(&d, json!({})).await;
    let id = sb["id"].as_str().unwrap();
    for body in [
        json!({}),
        json!({"timeout": 5, "extra": 1}),
        json!({"timeout": -3}),
    ] {
        let (s, _) = call(
            c.post(d.url(&format!("/v1/sandboxes/{id}/timeout")))
                .json(&body),
        )
        .await;
        assert_eq!(s, 400, "{body}");
    }
    // An empty body is `{}`: every create field is optional.
    let (s, _) = call(c.post(&url)).await;
    assert_eq!(s, 201);
    d.stop().await.unwrap();
}

#[tokio::test]
async fn proxy_strips_the_prefix_and_the_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), FakeBackend::new()).await;
    let sb = create(&d, json!({"env": {"GREETING": "hi"}})).await;
    let id = sb["id"].as_str().unwrap();
    // Larger than the daemon's own JSON limit (1 MiB): proxied bodies are the agent's business.
    let body = "x".repeat(1536 << 10);
    let (s, v) = call(
        client()
            .post(d.url(&format!(
                "/v1/sandboxes/{id}/processes/7/stdin?eof=true&x=%2F"
            )))
            .header("last-event-id", "12")
            .body(body.clone()),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["uri"], "/processes/7/stdin?eof=true&x=%2F");
    assert_eq!(v["body_len"], body.len());
    assert_eq!(v["headers"]["last-event-id"], "12");
    assert!(v["headers"].get("authorization").is_none(), "{v}");
    let url = d.url(&format!(
        "/v1/sandboxes/{id}/x?a=1&access_token={KEY}&b=%20"
    ));
    let (_, v) = call(reqwest::Client::new().get(url)).await;
    assert_eq!(v["uri"], "/x?a=1&b=%20", "the key must not reach the agent");
    let (_, v) = call(client().get(d.url(&format!("/v1/sandboxes/{id}/env")))).await;
    assert_eq!(v["GREETING"], "hi");
    d.stop().await.unwrap();
}

#[tokio::test]
async fn a_call_on_a_paused_sandbox_resumes_it() {
    let dir = tempfile::tempdir().unwrap();
    let backend = FakeBackend::new();
    let d = Daemon::start(dir.path(), backend.clone()).await;
    let id = create(&d, json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, _) = call(client().post(d.url(&format!("/v1/sandboxes/{id}/pause")))).await;
    assert_eq!(s, 200);
    let (s, v) = call(
        client()
            .post(d.url(&format!("/v1/sandboxes/{id}/exec")))
            .json(&json!({"cmd": "true"})),
    )
    .await;
    assert_eq!(s, 200, "the fake agent answers 500 while frozen: {v}");
    assert_eq!(v["uri"], "/exec");
    assert_eq!(backend.resumes.load(Ordering::SeqCst), 1);
    let (_, v) = call(client().get(d.url(&format!("/v1/sandboxes/{id}")))).await;
    assert_eq!(v["state"], "running");
    assert!(v["expires_at"].is_string());
    d.stop().await.unwrap();
}

#[tokio::test]
async fn sse_is_streamed_not_buffered() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), FakeBackend::new()).await;
    let id = create(&d, json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let start = Instant::now();
    let resp = client()
        .get(d.url(&format!("/v1/sandboxes/{id}/processes/1/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut body = resp.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(2), body.next())
        .await
        .expect("first event held back");
    let first = String::from_utf8(first.unwrap().unwrap().to_vec()).unwrap();
    assert!(
        first.contains("event: stdout") && first.contains("data: first"),
        "{first:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(2));
    let mut rest = String::new();
    while let Some(chunk) = body.next().await {
        rest.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    assert!(rest.contains("event: exited"), "{rest:?}");
    assert!(start.elapsed() >= Duration::from_secs(3));
    d.stop().await.unwrap();
}

#[tokio::test]
async fn websocket_upgrades_are_proxied() {
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), FakeBackend::new()).await;
    let id = create(&d, json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = format!(
        "ws://{}/v1/sandboxes/{id}/processes/1/ws?from_seq=0",
        d.addr
    );

    let unauth = tokio_tungstenite::connect_async(url.as_str()).await;
    assert!(unauth.is_err(), "upgrade without a key must be refused");

    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {KEY}").parse().unwrap());
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.status(), 101);
    ws.send(Message::Text("hello".into())).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(reply, Message::Text("echo:hello".into()));
    let frame = vec![1u8, 0, 0, 0, 0, 0, 0, 0, 7, b'h', b'i'];
    ws.send(Message::Binary(frame.clone().into()))
        .await
        .unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(reply, Message::Binary(frame.into()));
    ws.close(None).await.unwrap();
    d.stop().await.unwrap();
}

async fn wait_state(d: &Daemon, id: &str, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, v) = call(client().get(d.url(&format!("/v1/sandboxes/{id}")))).await;
        if v["state"] == state {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "sandbox never became {state}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn deadlines_kill_or_pause() {
    let dir = tempfile::tempdir().unwrap();
    let backend = FakeBackend::new();
    let clock = Arc::new(ManualClock::default());
    let d =
        Daemon::start_with_clock(Daemon::config(dir.path()), backend.clone(), clock.clone()).await;
    let killed = create(&d, json!({"timeout": 1})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let paused = create(&d, json!({"timeout": 1, "on_timeout": "pause"})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let extended = create(&d, json!({"timeout": 1})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, _) = call(
        client()
            .post(d.url(&format!("/v1/sandboxes/{extended}/timeout")))
            .json(&json!({"timeout": 60})),
    )
    .await;
    assert_eq!(s, 200);

    // Time moves by hand: nothing expires until it does.
    let (_, v) = call(client().get(d.url(&format!("/v1/sandboxes/{killed}")))).await;
    assert_eq!(v["state"], "running", "{v}");
    clock.advance(Duration::from_millis(1_500));
    let v = wait_state(&d, &killed, "stopped").await;
    assert!(v["error"].as_str().unwrap().contains("deadline"), "{v}");
    let v = wait_state(&d, &paused, "paused").await;
    assert_eq!(v["expires_at"], Value::Null);
    let (_, v) = call(client().get(d.url(&format!("/v1/sandboxes/{extended}")))).await;
    assert_eq!(v["state"], "running");
    clock.advance(Duration::from_secs(60));
    wait_state(&d, &extended, "stopped").await;

    // A stopped sandbox cannot serve processes or be resumed; a paused one can, after an automatic resume.
    let (s, v) = call(
        client()
            .post(d.url(&format!("/v1/sandboxes/{killed}/exec")))
            .json(&json!({})),
    )
    .await;
    assert_eq!((s, &v["error"]["code"]), (409, &json!("conflict")));
    let (s, _) = call(client().post(d.url(&format!("/v1/sandboxes/{killed}/resume")))).await;
    assert_eq!(s, 409);
    let (s, _) = call(
        client()
            .post(d.url(&format!("/v1/sandboxes/{killed}/timeout")))
            .json(&json!({"timeout": 5})),
    )
    .await;
    assert_eq!(s, 409);
    let (s, _) = call(client().get(d.url(&format!("/v1/sandboxes/{paused}/health")))).await;
    assert_eq!(s, 200);
    // Stopped sandboxes can still be deleted.
    let (s, _) = call(client().delete(d.url(&format!("/v1/sandboxes/{killed}")))).await;
    assert_eq!(s, 204);
    d.stop().await.unwrap();
}

#[tokio::test]
async fn a_dead_agent_is_unavailable_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let backend = FakeBackend::new();
    let d = Daemon::start(dir.path(), backend.clone()).await;
    let id = create(&d, json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for pid in backend.pids() {
        backend.kill_agent(pid);
    }
    // The fake "kill" aborts the server task; its socket file stays but nobody listens.
    let (s, v) = call(
        client()
            .post(d.url(&format!("/v1/sandboxes/{id}/exec")))
            .json(&json!({})),
    )
    .await;
    assert_eq!(
        (s, &v["error"]["code"]),
        (503, &json!("unavailable")),
        "{v}"
    );
    let v = wait_state(&d, &id, "failed").await;
    assert!(v["error"].as_str().unwrap().contains("gone"), "{v}");
    let (s, _) = call(
        client()
            .post(d.url(&format!("/v1/sandboxes/{id}/exec")))
            .json(&json!({})),
    )
    .await;
    assert_eq!(s, 409);
    d.stop().await.unwrap();
}

#[tokio::test]
async fn restart_keeps_live_sandboxes_and_reports_lost_ones() {
    let dir = tempfile::tempdir().unwrap();
    let backend = FakeBackend::new();
    let d = Daemon::start(dir.path(), backend.clone()).await;
    let alive = create(&d, json!({"metadata": {"keep": "yes"}})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let paused = create(&d, json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, _) = call(client().post(d.url(&format!("/v1/sandboxes/{paused}/pause")))).await;
    assert_eq!(s, 200);
    let lost = create(&d, json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, lost_info) = call(client().get(d.url(&format!("/v1/sandboxes/{lost}")))).await;
    d.stop().await.unwrap();
    assert_eq!(
        backend.destroys.load(Ordering::SeqCst),
        0,
        "shutdown must leave sandboxes running"
    );

    // "Host reboot" for one of them while the daemon is down.
    let pids = backend.pids();
    backend.kill_agent(*pids.iter().max().unwrap());

    let d = Daemon::start(dir.path(), backend.clone()).await;
    let (_, v) = call(client().get(d.url(&format!("/v1/sandboxes/{alive}")))).await;
    assert_eq!(v["state"], "running");
    assert_eq!(v["metadata"]["keep"], "yes");
    let (s, _) = call(client().get(d.url(&format!("/v1/sandboxes/{alive}/health")))).await;
    assert_eq!(s, 200);
    let (_, v) = call(client().get(d.url(&format!("/v1/sandboxes/{paused}")))).await;
    assert_eq!(v["state"], "paused");
    let (_, v) = call(client().get(d.url(&format!("/v1/sandboxes/{lost}")))).await;
    assert_eq!(v["state"], "failed", "{v} (was {lost_info})");
    assert!(v["error"].as_str().unwrap().contains("lost"), "{v}");
    d.stop().await.unwrap();
}

#[tokio::test]
async fn a_second_daemon_on_the_same_state_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), FakeBackend::new()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = sandpit_server::run_with_backend(
        Daemon::config(dir.path()),
        FakeBackend::new(),
        listener,
        async {},
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, sandpit_server::ServerError::Locked(_)),
        "{err}"
    );
    d.stop().await.unwrap();
}

#[tokio::test]
async fn metrics_count_requests_and_sandboxes() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), FakeBackend::new()).await;
    create(&d, json!({})).await;
    let id = create(&d, json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    call(client().post(d.url(&format!("/v1/sandboxes/{id}/pause")))).await;
    call(client().get(d.url("/v1/sandboxes/nope"))).await;
    let resp = client().get(d.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("sandpit_sandboxes{state=\"running\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("sandpit_sandboxes{state=\"paused\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("route=\"/v1/sandboxes\",status=\"201\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("route=\"/v1/sandboxes/{id}\",status=\"404\"} 1"),
        "{text}"
    );
    assert!(text.contains("sandpit_http_request_duration_seconds_bucket{method=\"POST\",route=\"/v1/sandboxes\",le=\"+Inf\"} 2"), "{text}");
    d.stop().await.unwrap();
}

#[tokio::test]
async fn openapi_document_lists_every_route() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), FakeBackend::new()).await;
    let (s, doc) = call(client().get(d.url("/openapi.json"))).await;
    assert_eq!(s, 200);
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/health", "get"),
        ("/openapi.json", "get"),
        ("/metrics", "get"),
        ("/v1/sandboxes", "post"),
        ("/v1/sandboxes", "get"),
        ("/v1/sandboxes/{id}", "get"),
        ("/v1/sandboxes/{id}", "delete"),
        ("/v1/sandboxes/{id}/pause", "post"),
        ("/v1/sandboxes/{id}/resume", "post"),
        ("/v1/sandboxes/{id}/connect", "post"),
        ("/v1/sandboxes/{id}/timeout", "post"),
        ("/v1/sandboxes/{id}/exec", "post"),
        ("/v1/sandboxes/{id}/processes", "post"),
        ("/v1/sandboxes/{id}/processes", "get"),
        ("/v1/sandboxes/{id}/processes/{pid}", "get"),
        ("/v1/sandboxes/{id}/processes/{pid}", "delete"),
        ("/v1/sandboxes/{id}/processes/{pid}/events", "get"),
        ("/v1/sandboxes/{id}/processes/{pid}/ws", "get"),
        ("/v1/sandboxes/{id}/processes/{pid}/stdin", "post"),
        ("/v1/sandboxes/{id}/processes/{pid}/signal", "post"),
        ("/v1/sandboxes/{id}/processes/{pid}/resize", "post"),
        ("/v1/sandboxes/{id}/processes/{pid}/wait", "get"),
        ("/v1/templates", "get"),
        ("/v1/templates", "post"),
        ("/v1/templates/{name}", "get"),
        ("/v1/templates/{name}", "delete"),
        ("/v1/templates/{name}/build", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing"
        );
    }
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in [
        "CreateSandboxRequest",
        "SandboxInfo",
        "ErrorBody",
        "StartRequest",
        "ExecResult",
        "ProcessInfo",
        "TemplateInfo",
        "TemplateBuild",
        "CreateTemplateRequest",
    ] {
        assert!(schemas.contains_key(name), "schema {name} missing");
    }
    // What the daemon accepts, said truthfully: an absent create body is `{}`, stdin is raw bytes.
    assert_ne!(
        paths["/v1/sandboxes"]["post"]["requestBody"]["required"],
        true
    );
    let stdin = &paths["/v1/sandboxes/{id}/processes/{pid}/stdin"]["post"]["requestBody"];
    assert_eq!(
        stdin["content"]["application/octet-stream"]["schema"],
        serde_json::json!({"type": "string", "format": "binary"})
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    d.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_waits_for_requests_but_not_forever() {
    let dir = tempfile::tempdir().unwrap();
    let backend = FakeBackend::new();
    let mut config = Daemon::config(dir.path());
    config.shutdown_grace_secs = 1;
    let d = Daemon::start_with(config, backend.clone()).await;
    let id = create(&d, json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // An open event stream (the fake one lasts 3 s) must not hold the daemon past its 1 s grace.
    let resp = client()
        .get(d.url(&format!("/v1/sandboxes/{id}/processes/1/events")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let addr = d.addr;
    let start = Instant::now();
    d.stop().await.unwrap();
    assert!(
        start.elapsed() < Duration::from_millis(2500),
        "{:?}",
        start.elapsed()
    );
    assert!(
        reqwest::get(format!("http://{addr}/health")).await.is_err(),
        "still accepting"
    );
    assert_eq!(
        backend.destroys.load(Ordering::SeqCst),
        0,
        "sandboxes must keep running"
    );
    drop(resp);
}

#[tokio::test]
async fn a_deadline_that_cannot_be_enforced_is_retried_later_not_spun_on() {
    let dir = tempfile::tempdir().unwrap();
    let backend = FakeBackend::new();
    backend.fail_destroy.store(true, Ordering::SeqCst);
    let clock = Arc::new(ManualClock::default());
    let d =
        Daemon::start_with_clock(Daemon::config(dir.path()), backend.clone(), clock.clone()).await;
    let id = create(&d, json!({"timeout": 1})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    clock.advance(Duration::from_millis(1_500));
    sandpit_testkit::eventually(
        "the first expiry attempt",
        Duration::from_secs(10),
        || async { (backend.destroys.load(Ordering::SeqCst) >= 1).then_some(()) },
    )
    .await;
    // Within the retry delay (30 s) nothing is tried again, however often the timer wakes (a negative
    // check: give the woken timer a moment).
    clock.advance(Duration::from_secs(10));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, v) = call(client().get(d.url(&format!("/v1/sandboxes/{id}")))).await;
    assert_eq!(v["state"], "running", "{v}");
    assert!(v["expires_at"].is_string(), "{v}");
    assert_eq!(
        backend.destroys.load(Ordering::SeqCst),
        1,
        "the timer must back off after a failure"
    );
    // After it, the deadline is enforced again.
    backend.fail_destroy.store(false, Ordering::SeqCst);
    clock.advance(Duration::from_secs(25));
    wait_state(&d, &id, "stopped").await;
    d.stop().await.unwrap();
}

/// A request body that stops arriving is cut after `body_idle_timeout_secs`: the request ends with an
/// answer and the connection closes, instead of the handler waiting for ever (issue 13: "a body that
/// never finishes").
#[tokio::test]
async fn a_request_body_that_never_finishes_is_cut_after_the_idle_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let mut config = Daemon::config(dir.path());
    config.body_idle_timeout_secs = 1;
    let d = Daemon::start_with(config, FakeBackend::new()).await;
    let mut s = tokio::net::TcpStream::connect(d.addr).await.unwrap();
    s.write_all(
        format!(
            "POST /v1/sandboxes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"memory_mb\""
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut answer)).await;
    assert!(
        read.is_ok(),
        "the daemon kept waiting for the rest of the body"
    );
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 4"), "{text}");
    assert!(text.contains("\"code\""), "a JSON error body: {text}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    // A sandbox was not half-made from the cut request.
    let (_, v) = call(client().get(d.url("/v1/sandboxes"))).await;
    assert_eq!(v["sandboxes"].as_array().map(Vec::len), Some(0), "{v}");
    d.stop().await.unwrap();
}

/// hyper refuses an oversized request head (431) or URI (414) by itself, before any handler: those
/// answers now carry the same JSON error body as every other (they had none).
#[tokio::test]
async fn hypers_own_431_and_414_carry_the_json_error_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), FakeBackend::new()).await;
    let big_header = format!("X-Big: {}\r\n", "a".repeat(600 * 1024));
    let long_uri = format!("/v1/sandboxes?x={}", "b".repeat(70 * 1024));
    for (request, status) in [
        (
            format!("GET /v1/sandboxes HTTP/1.1\r\nHost: x\r\n{big_header}\r\n"),
            "431",
        ),
        (format!("GET {long_uri} HTTP/1.1\r\nHost: x\r\n\r\n"), "414"),
    ] {
        let mut s = tokio::net::TcpStream::connect(d.addr).await.unwrap();
        // The daemon may answer and close before it has read everything: a failed write is fine.
        let _ = s.write_all(request.as_bytes()).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer)).await;
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with(&format!("HTTP/1.1 {status} ")), "{text}");
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
        let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!(v["error"]["code"], "invalid_argument", "{text}");
        assert!(
            text.to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{text}"
        );
    }
    // The daemon still serves.
    let (s, _) = call(client().get(d.url("/v1/sandboxes"))).await;
    assert_eq!(s, 200);
    d.stop().await.unwrap();
}

async fn make_key(d: &Daemon, body: Value) -> (String, String) {
    let (s, v) = call(client().post(d.url("/v1/keys")).json(&body)).await;
    assert_eq!(s, 201, "{v}");
    (
        v["id"].as_str().unwrap().to_owned(),
        v["key"].as_str().unwrap().to_owned(),
    )
}

/// What each scope may do, over every route and method the `OpenAPI` document lists (plus the agent's
/// routes and a WebSocket upgrade): `read` only reads, `sandboxes` everything but keys, `/metrics` and
/// template imports, `admin` everything. A refusal is a 403 `permission_denied` naming the scope.
#[tokio::test]
async fn every_documented_route_obeys_the_keys_scopes() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), FakeBackend::new()).await;
    let id = create(&d, json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, read) = make_key(&d, json!({"name": "reader", "scopes": ["read"]})).await;
    let (_, user) = make_key(&d, json!({"name": "bot", "scopes": ["sandboxes"]})).await;
    let (_, doc) = call(client().get(d.url("/openapi.json"))).await;
    let anon = reqwest::Client::new();
    let (mut allowed, mut refused) = (0, 0);
    for (path, item) in doc["paths"].as_object().unwrap() {
        if path == "/health" || path.contains("{port}") {
            continue; // open, and preview URLs have their own rules (tests/preview.rs)
        }
        let concrete = path
            .replace("{id}", &id)
            .replace("{pid}", "p1")
            .replace("{name}", "t1");
        for method in item.as_object().unwrap().keys() {
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let admin_only = path == "/metrics"
                || path.starts_with("/v1/keys")
                || path == "/v1/tenants"
                || path == "/v1/audit"
                || path.starts_with("/v1/webhooks")
                || (path == "/v1/tenants/{name}" && method != "get")
                || (path == "/v1/templates" && method == "post")
                || (path == "/v1/templates/{name}/pool" && method == "put");
            // A GET without `Upgrade` is a read even on a WebSocket route (checked below with one).
            let reading = method == "get";
            for (who, key, may) in [
                ("read", &read, reading && !admin_only),
                ("sandboxes", &user, !admin_only),
            ] {
                let resp = anon
                    .request(m.clone(), d.url(&concrete))
                    .bearer_auth(key)
                    .header("content-type", "application/json")
                    .body("{}")
                    .send()
                    .await
                    .unwrap();
                let status = resp.status().as_u16();
                // A live stream (events, metrics) never ends: its status is the answer.
                let streaming = resp
                    .headers()
                    .get("content-type")
                    .is_some_and(|c| c.as_bytes().starts_with(b"text/event-stream"));
                let v: Value = if streaming {
                    Value::Null
                } else {
                    resp.json().await.unwrap_or(Value::Null)
                };
                if may {
                    assert!(
                        status != 401 && status != 403,
                        "{method} {path} as {who}: {status} {v}"
                    );
                    allowed += 1;
                } else {
                    assert_eq!(
                        (status, v["error"]["code"].as_str()),
                        (403, Some("permission_denied")),
                        "{method} {path} as {who}: {v}"
                    );
                    assert!(
                        v["error"]["message"].as_str().unwrap().contains("scope"),
                        "{v}"
                    );
                    refused += 1;
                }
            }
        }
    }
    // A read key cannot open a process's WebSocket (it could type into a PTY).
    let ws = format!(
        "{}?access_token={read}",
        d.url(&format!("/v1/sandboxes/{id}/processes/p1/ws"))
            .replacen("http://", "ws://", 1)
    );
    match tokio_tungstenite::connect_async(ws).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
        other => panic!("websocket with a read key: {other:?}"),
    }
    eprintln!("{allowed} calls allowed, {refused} refused by scope");
    assert!(
        allowed > 50 && refused > 25,
        "{allowed} / {refused}: the document lists too few routes"
    );
    d.stop().await.unwrap();
}

/// Keys are made, listed without secrets, revoked (effective on the next request, including for an
/// open stream's next request), expire, and survive a restart; bad requests get their codes.
#[tokio::test]
async fn keys_are_listed_revoked_expire_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), FakeBackend::new()).await;
    let (id, key) = make_key(
        &d,
        json!({"name": "ci-bot", "tenant": "team-a", "scopes": ["sandboxes", "read"]}),
    )
    .await;
    assert!(key.starts_with(&format!("sp_{id}_")), "{key}");
    let (_, short) = make_key(
        &d,
        json!({"name": "short", "scopes": ["read"], "expires_in": 1}),
    )
    .await;
    let (s, list) = call(client().get(d.url("/v1/keys"))).await;
    assert_eq!(s, 200);
    let keys = list["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2, "{list}");
    assert_eq!(keys[0]["name"], "ci-bot");
    assert_eq!(keys[0]["tenant"], "team-a");
    assert_eq!(keys[0]["scopes"], json!(["sandboxes", "read"]));
    assert!(keys[0]["expires_at"].is_null());
    assert!(keys[1]["expires_at"].is_string());
    assert!(
        !list.to_string().contains(&key) && !list.to_string().contains("\"key\""),
        "a list must never carry a secret: {list}"
    );
    let anon = reqwest::Client::new();
    let (s, _) = call(anon.get(d.url("/v1/sandboxes")).bearer_auth(&key)).await;
    assert_eq!(s, 200);
    // The secret is checked, not only the id in it.
    let forged = format!("{}0", &key[..key.len() - 1]);
    let forged = if forged == key {
        format!("{}1", &key[..key.len() - 1])
    } else {
        forged
    };
    let (s, _) = call(anon.get(d.url("/v1/sandboxes")).bearer_auth(&forged)).await;
    assert_eq!(s, 401);
    // Expiry: the one-second key stops working.
    sandpit_testkit::eventually(
        "the short-lived key to expire",
        Duration::from_secs(10),
        || {
            let anon = anon.clone();
            let url = d.url("/v1/sandboxes");
            let short = short.clone();
            async move { (call(anon.get(url).bearer_auth(short)).await.0 == 401).then_some(()) }
        },
    )
    .await;
    // Bad input.
    for (body, code) in [
        (json!({"name": "x", "scopes": ["root"]}), "invalid_argument"),
        (json!({"name": "x", "scopes": []}), "invalid_argument"),
        (
            json!({"name": "a b", "scopes": ["read"]}),
            "invalid_argument",
        ),
        (
            json!({"name": "x", "scopes": ["read"], "expires_in": 0}),
            "invalid_argument",
        ),
        (
            json!({"name": "x", "scopes": ["read"], "extra": 1}),
            "invalid_argument",
        ),
        (
            json!({"name": "x", "tenant": "../t", "scopes": ["read"]}),
            "invalid_argument",
        ),
    ] {
        let (s, v) = call(client().post(d.url("/v1/keys")).json(&body)).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (400, Some(code)),
            "{body}: {v}"
        );
    }
    let (s, v) = call(client().delete(d.url("/v1/keys/k_nope"))).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{v}"
    );
    // Keys survive a restart; revocation is immediate and survives one too.
    d.stop().await.unwrap();
    let d = Daemon::start(dir.path(), FakeBackend::new()).await;
    let (s, _) = call(anon.get(d.url("/v1/sandboxes")).bearer_auth(&key)).await;
    assert_eq!(s, 200, "a key must survive a restart");
    let (s, _) = call(client().delete(d.url(&format!("/v1/keys/{id}")))).await;
    assert_eq!(s, 204);
    let (s, v) = call(anon.get(d.url("/v1/sandboxes")).bearer_auth(&key)).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("unauthenticated"))
    );
    d.stop().await.unwrap();
    let d = Daemon::start(dir.path(), FakeBackend::new()).await;
    let (s, _) = call(anon.get(d.url("/v1/sandboxes")).bearer_auth(&key)).await;
    assert_eq!(s, 401, "a revoked key must stay revoked across a restart");
    let (_, list) = call(client().get(d.url("/v1/keys"))).await;
    assert_eq!(list["keys"].as_array().unwrap().len(), 1, "{list}");
    // The secret is nowhere in the state directory.
    for f in ["sandpit.db", "sandpit.db-wal"] {
        let bytes = std::fs::read(dir.path().join(f)).unwrap_or_default();
        assert!(
            !bytes.windows(key.len()).any(|w| w == key.as_bytes()),
            "{f}"
        );
    }
    d.stop().await.unwrap();
}

/// Two tenants: each key sees and reaches only its own tenant's sandboxes — another tenant's sandbox
/// answers every documented route exactly as a sandbox that does not exist — and an admin key sees all.
#[tokio::test]
async fn a_tenant_cannot_see_or_touch_another_tenants_sandboxes() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), FakeBackend::new()).await;
    let (_, a) = make_key(
        &d,
        json!({"name": "a", "tenant": "a", "scopes": ["sandboxes"]}),
    )
    .await;
    let (_, b) = make_key(
        &d,
        json!({"name": "b", "tenant": "b", "scopes": ["sandboxes"]}),
    )
    .await;
    let (_, a_reader) =
        make_key(&d, json!({"name": "ar", "tenant": "a", "scopes": ["read"]})).await;
    let anon = reqwest::Client::new();
    let made = |key: String| {
        let anon = anon.clone();
        let url = d.url("/v1/sandboxes");
        async move {
            let (s, v) = call(anon.post(url).bearer_auth(key).json(&json!({}))).await;
            assert_eq!(s, 201, "{v}");
            v
        }
    };
    let sa = made(a.clone()).await;
    assert_eq!(sa["tenant"], "a");
    let sb = made(b.clone()).await;
    assert_eq!(sb["tenant"], "b");
    let mine = create(&d, json!({})).await;
    assert_eq!(mine["tenant"], "default");
    let a_id = sa["id"].as_str().unwrap().to_owned();
    let ids = |v: &Value| -> Vec<String> {
        v["sandboxes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, la) = call(anon.get(d.url("/v1/sandboxes")).bearer_auth(&a)).await;
    assert_eq!(ids(&la), [a_id.as_str()]);
    let (_, lr) = call(anon.get(d.url("/v1/sandboxes")).bearer_auth(&a_reader)).await;
    assert_eq!(
        ids(&lr),
        [a_id.as_str()],
        "a read key of tenant a sees tenant a's"
    );
    let (_, lb) = call(anon.get(d.url("/v1/sandboxes")).bearer_auth(&b)).await;
    assert_eq!(ids(&lb), [sb["id"].as_str().unwrap()]);
    let (_, all) = call(client().get(d.url("/v1/sandboxes"))).await;
    assert_eq!(ids(&all).len(), 3, "the admin sees every tenant's");

    // Every documented per-sandbox route, with b's key on a's sandbox and on an id that does not exist.
    let (_, doc) = call(client().get(d.url("/openapi.json"))).await;
    let ghost = "0123456789abcdef";
    let mut tried = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        if !path.starts_with("/v1/sandboxes/{id}") || path.contains("{port}") {
            continue;
        }
        for method in item.as_object().unwrap().keys() {
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let mut answers = Vec::new();
            for id in [a_id.as_str(), ghost] {
                let url = d.url(&path.replace("{id}", id).replace("{pid}", "p1"));
                let resp = anon
                    .request(m.clone(), url)
                    .bearer_auth(&b)
                    .header("content-type", "application/json")
                    .body("{}")
                    .send()
                    .await
                    .unwrap();
                let status = resp.status().as_u16();
                let text = resp.text().await.unwrap().replace(id, "ID");
                answers.push((status, text));
            }
            assert_eq!(answers[0].0, 404, "{method} {path}: {:?}", answers[0]);
            assert_eq!(
                answers[0], answers[1],
                "{method} {path}: b on a's sandbox vs a ghost"
            );
            tried += 1;
        }
    }
    assert!(tried > 25, "only {tried} routes tried");
    // A preview URL by path with b's key is refused too.
    let (s, _) = call(
        anon.get(d.url(&format!("/v1/sandboxes/{a_id}/ports/8000/")))
            .bearer_auth(&b),
    )
    .await;
    assert!(
        s == 401 || s == 404,
        "preview with another tenant's key: {s}"
    );
    // a's sandbox is untouched: a still reaches it (the sweep above included DELETE).
    let (s, v) = call(
        anon.get(d.url(&format!("/v1/sandboxes/{a_id}")))
            .bearer_auth(&a),
    )
    .await;
    assert_eq!((s, v["state"].as_str()), (200, Some("running")), "{v}");
    // Ownership survives a restart.
    d.stop().await.unwrap();
    let d = Daemon::start(dir.path(), FakeBackend::new()).await;
    let (_, lb) = call(anon.get(d.url("/v1/sandboxes")).bearer_auth(&b)).await;
    assert!(!ids(&lb).contains(&a_id), "{lb}");
    let (s, _) = call(
        anon.get(d.url(&format!("/v1/sandboxes/{a_id}")))
            .bearer_auth(&b),
    )
    .await;
    assert_eq!(s, 404);
    let (s, _) = call(
        anon.get(d.url(&format!("/v1/sandboxes/{a_id}")))
            .bearer_auth(&a),
    )
    .await;
    assert_eq!(s, 200);
    d.stop().await.unwrap();
}

/// A sandbox's access token (returned by create) reaches that sandbox's processes, files, ports, info
/// and pause/resume, and nothing else: not its deletion, deadline, network policy or token, not another
/// sandbox (404, as if missing), not the list; rotating it ends the old one at once, across a restart.
#[tokio::test]
async fn an_access_token_opens_one_sandbox_and_rotation_ends_it() {
    use reqwest::Method as M;
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), FakeBackend::new()).await;
    let made = create(&d, json!({})).await;
    let id = made["id"].as_str().unwrap().to_owned();
    let token = made["access_token"].as_str().unwrap().to_owned();
    assert!(token.starts_with(&format!("spa_{id}_")), "{token}");
    let other = create(&d, json!({})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Not shown again.
    let (_, info) = call(client().get(d.url(&format!("/v1/sandboxes/{id}")))).await;
    assert!(info.get("access_token").is_none(), "{info}");

    let anon = reqwest::Client::new();
    let as_token = |m: reqwest::Method, path: String, tok: &str| {
        anon.request(m, d.url(&path))
            .bearer_auth(tok)
            .header("content-type", "application/json")
            .body("{}")
    };
    for (m, path) in [
        (M::GET, format!("/v1/sandboxes/{id}")),
        (M::GET, format!("/v1/sandboxes/{id}/processes")),
        (M::POST, format!("/v1/sandboxes/{id}/exec")),
        (
            M::GET,
            format!("/v1/sandboxes/{id}/files?path=/etc/hostname"),
        ),
        (M::GET, format!("/v1/sandboxes/{id}/network")),
        (M::POST, format!("/v1/sandboxes/{id}/pause")),
        (M::POST, format!("/v1/sandboxes/{id}/resume")),
    ] {
        let resp = as_token(m.clone(), path.clone(), &token)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        assert!(
            status != 401 && status != 403 && status != 404,
            "{m} {path}: {status}"
        );
    }
    for (m, path) in [
        (M::DELETE, format!("/v1/sandboxes/{id}")),
        (M::POST, format!("/v1/sandboxes/{id}/timeout")),
        (M::PUT, format!("/v1/sandboxes/{id}/network")),
        (M::POST, format!("/v1/sandboxes/{id}/access-token")),
        (M::GET, "/v1/sandboxes".to_owned()),
        (M::POST, "/v1/sandboxes".to_owned()),
        (M::GET, "/v1/templates".to_owned()),
        (M::GET, "/v1/keys".to_owned()),
        (M::GET, "/metrics".to_owned()),
    ] {
        let (s, v) = call(as_token(m.clone(), path.clone(), &token)).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (403, Some("permission_denied")),
            "{m} {path}: {v}"
        );
    }
    // Another sandbox is as good as missing.
    let (s, v) = call(as_token(M::GET, format!("/v1/sandboxes/{other}"), &token)).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{v}"
    );
    // Browsers send it as `access_token`.
    let (s, _) = call(anon.get(d.url(&format!("/v1/sandboxes/{id}?access_token={token}")))).await;
    assert_eq!(s, 200);

    // Rotation: the old token fails at once, the new one works, also after a restart.
    let (s, v) = call(client().post(d.url(&format!("/v1/sandboxes/{id}/access-token")))).await;
    assert_eq!(s, 200, "{v}");
    let fresh = v["access_token"].as_str().unwrap().to_owned();
    assert_ne!(fresh, token);
    let (s, _) = call(as_token(M::GET, format!("/v1/sandboxes/{id}"), &token)).await;
    assert_eq!(s, 401);
    d.stop().await.unwrap();
    let d = Daemon::start(dir.path(), FakeBackend::new()).await;
    let (s, _) = call(
        anon.get(d.url(&format!("/v1/sandboxes/{id}")))
            .bearer_auth(&fresh),
    )
    .await;
    assert_eq!(s, 200, "a token must survive a restart");
    let (s, _) = call(
        anon.get(d.url(&format!("/v1/sandboxes/{id}")))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(s, 401);
    // Deleting the sandbox ends its token.
    let (s, _) = call(client().delete(d.url(&format!("/v1/sandboxes/{id}")))).await;
    assert_eq!(s, 204);
    let (s, _) = call(
        anon.get(d.url(&format!("/v1/sandboxes/{id}")))
            .bearer_auth(&fresh),
    )
    .await;
    assert_eq!(s, 401);
    let (s, v) = call(client().post(d.url("/v1/sandboxes/0123456789abcdef/access-token"))).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{v}"
    );
    d.stop().await.unwrap();
}

/// A stream opened with a key ends with an `error` event as soon as the key is revoked (and one opened
/// with a sandbox token when the token is rotated), instead of running on.
#[tokio::test]
async fn an_open_stream_ends_when_its_key_is_revoked_or_its_token_rotated() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), FakeBackend::new()).await;
    let made = create(&d, json!({})).await;
    let id = made["id"].as_str().unwrap().to_owned();
    let token = made["access_token"].as_str().unwrap().to_owned();
    let (key_id, key) = make_key(&d, json!({"name": "streamer", "scopes": ["read"]})).await;
    let anon = reqwest::Client::new();
    for (who, cred) in [("key", key.as_str()), ("token", token.as_str())] {
        let start = Instant::now();
        let resp = anon
            .get(d.url(&format!("/v1/sandboxes/{id}/processes/1/events")))
            .bearer_auth(cred)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{who}");
        let mut body = resp.bytes_stream();
        let first = body.next().await.unwrap().unwrap();
        assert!(
            String::from_utf8_lossy(&first).contains("data: first"),
            "{who}"
        );
        // The fake process ends after 3 s: revoke long before that.
        if who == "key" {
            let (s, _) = call(client().delete(d.url(&format!("/v1/keys/{key_id}")))).await;
            assert_eq!(s, 204);
        } else {
            let (s, _) =
                call(client().post(d.url(&format!("/v1/sandboxes/{id}/access-token")))).await;
            assert_eq!(s, 200);
        }
        let mut rest = String::new();
        while let Some(chunk) = body.next().await {
            rest.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        }
        assert!(
            rest.contains("event: error") && rest.contains("unauthenticated"),
            "{who}: {rest:?}"
        );
        assert!(
            !rest.contains("event: exited"),
            "{who}: the stream ran on: {rest:?}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{who}: {:?}",
            start.elapsed()
        );
    }
    // The admin key's streams are untouched by all this.
    let (s, _) = call(client().get(d.url(&format!("/v1/sandboxes/{id}")))).await;
    assert_eq!(s, 200);
    d.stop().await.unwrap();
}

/// Tenant quotas: over `max_sandboxes`, `max_memory_mb` or `max_disk_mb` a create is 429
/// `quota_exceeded` with `Retry-After` and the limit named, and works again once room is made; over
/// `max_creates_per_second` it is 429 `rate_limited` with `Retry-After` and `X-RateLimit-*` (which every
/// create of a rate-limited tenant carries), and works again after that many seconds. Quotas survive a
/// restart; a tenant's key reads its own tenant only; only an admin sets them; bad quotas are 400.
#[tokio::test]
#[allow(clippy::too_many_lines)] // one scenario, told in order
async fn quotas_answer_429_with_retry_after_and_recover() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), FakeBackend::new()).await;
    let anon = reqwest::Client::new();
    let put = |name: &str, body: Value| {
        let url = d.url(&format!("/v1/tenants/{name}"));
        async move { call(client().put(url).json(&body)).await }
    };
    let (s, v) = put("q", json!({"max_sandboxes": 2, "max_memory_mb": 300})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["quotas"]["max_sandboxes"], 2);
    assert_eq!(v["usage"]["sandboxes"], 0);
    let (_, q) = make_key(
        &d,
        json!({"name": "q", "tenant": "q", "scopes": ["sandboxes"]}),
    )
    .await;
    let create_as = |key: &str, body: Value| {
        let req = anon
            .post(d.url("/v1/sandboxes"))
            .bearer_auth(key)
            .json(&body);
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let headers = r.headers().clone();
            let v: Value = r.json().await.unwrap();
            (status, headers, v)
        }
    };
    let header = |h: &reqwest::header::HeaderMap, name: &str| {
        h.get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let (s, _, first) = create_as(&q, json!({"memory_mb": 100})).await;
    assert_eq!(s, 201, "{first}");
    let (s, _, v) = create_as(&q, json!({"memory_mb": 100})).await;
    assert_eq!(s, 201, "{v}");
    // The count.
    let (s, h, v) = create_as(&q, json!({"memory_mb": 100})).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (429, Some("quota_exceeded")),
        "{v}"
    );
    assert_eq!(header(&h, "retry-after"), "5");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("max_sandboxes quota (2)") && msg.contains("has 2"),
        "{msg}"
    );
    // The memory: 100 + 100 + 200 > 300.
    let (s, v) = put("q", json!({"max_sandboxes": 3, "max_memory_mb": 300})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["usage"],
        json!({"sandboxes": 2, "memory_mb": 200, "disk_mb": 2048})
    );
    let (s, _, v) = create_as(&q, json!({"memory_mb": 200})).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (429, Some("quota_exceeded")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_memory_mb quota (300 MiB)"),
        "{v}"
    );
    // Under a memory quota a create names its memory.
    let (s, _, v) = create_as(&q, json!({})).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("invalid_argument")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("memory_mb"),
        "{v}"
    );
    // The disk: two default layers (2048 MiB) and 100 more > 2100.
    let (s, _) = put(
        "q",
        json!({"max_sandboxes": 3, "max_memory_mb": 300, "max_disk_mb": 2100}),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _, v) = create_as(&q, json!({"memory_mb": 16, "disk_mb": 100})).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (429, Some("quota_exceeded")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_disk_mb quota (2100 MiB)"),
        "{v}"
    );
    // Recovers once room is made.
    let first_id = first["id"].as_str().unwrap();
    let (s, _) = call(client().delete(d.url(&format!("/v1/sandboxes/{first_id}")))).await;
    assert_eq!(s, 204);
    let (s, h, v) = create_as(&q, json!({"memory_mb": 150, "disk_mb": 50})).await;
    assert_eq!(s, 201, "{v}");
    assert!(
        h.get("x-ratelimit-limit").is_none(),
        "no rate quota, no rate headers"
    );

    // The rate: one create every 4 s (slow enough that a loaded machine cannot refill the bucket between
    // the two calls).
    let (s, _) = put("r", json!({"max_creates_per_second": 0.25})).await;
    assert_eq!(s, 200);
    let (_, r) = make_key(
        &d,
        json!({"name": "r", "tenant": "r", "scopes": ["sandboxes"]}),
    )
    .await;
    let (s, h, v) = create_as(&r, json!({})).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        (
            header(&h, "x-ratelimit-limit"),
            header(&h, "x-ratelimit-remaining")
        ),
        ("1".into(), "0".into())
    );
    let (s, h, v) = create_as(&r, json!({})).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (429, Some("rate_limited")),
        "{v}"
    );
    let retry: u64 = header(&h, "retry-after").parse().unwrap();
    assert!((1..=4).contains(&retry), "Retry-After {retry}");
    assert_eq!(header(&h, "x-ratelimit-remaining"), "0");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_creates_per_second"),
        "{v}"
    );
    // Another tenant is not slowed by it.
    let (s, _, v) = create_as(&q, json!({"memory_mb": 16, "disk_mb": 16})).await;
    assert_eq!(s, 201, "{v}");
    // Recovers after Retry-After.
    tokio::time::sleep(Duration::from_secs(retry)).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (s, _, v) = create_as(&r, json!({})).await;
        if s == 201 {
            break;
        }
        assert_eq!(s, 429, "{v}");
        assert!(Instant::now() < deadline, "the rate never recovered: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Reading: a tenant's key reads its own tenant, not another's, and sets nothing.
    let (s, v) = call(anon.get(d.url("/v1/tenants/q")).bearer_auth(&q)).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["usage"]["sandboxes"], 3);
    let (s, v) = call(anon.get(d.url("/v1/tenants/r")).bearer_auth(&q)).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{v}"
    );
    let (s, v) = call(
        anon.put(d.url("/v1/tenants/q"))
            .bearer_auth(&q)
            .json(&json!({})),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (403, Some("permission_denied")),
        "{v}"
    );
    let (s, v) = call(client().get(d.url("/v1/tenants"))).await;
    assert_eq!(s, 200);
    let names: Vec<&str> = v["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default", "q", "r"]);

    // Bad quotas and names.
    for (name, body, what) in [
        (
            "q",
            json!({"max_creates_per_second": 0}),
            "max_creates_per_second",
        ),
        ("q", json!({"max_sandboxes": -1}), "-1"),
        ("q", json!({"max_sandbox": 1}), "max_sandbox"),
        ("a%20b", json!({}), "tenant"),
    ] {
        let (s, v) = put(name, body).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (400, Some("invalid_argument")),
            "{v}"
        );
        assert!(
            v["error"]["message"].as_str().unwrap().contains(what),
            "{what}: {v}"
        );
    }

    // Quotas survive a restart; clearing them lifts them.
    d.stop().await.unwrap();
    let d = Daemon::start(dir.path(), FakeBackend::new()).await;
    let (s, v) = call(client().get(d.url("/v1/tenants/q"))).await;
    assert_eq!(s, 200);
    assert_eq!(v["quotas"]["max_disk_mb"], 2100, "{v}");
    let (s, v) = call(client().put(d.url("/v1/tenants/q")).json(&json!({}))).await;
    assert_eq!(s, 200);
    assert_eq!(
        v["quotas"],
        json!({"max_sandboxes": null, "max_creates_per_second": null, "max_memory_mb": null, "max_disk_mb": null})
    );
    d.stop().await.unwrap();
}

/// key id, tenant, action, sandbox, detail, status, outcome.
type AuditRowView = (
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    u64,
    String,
);

/// The audit log: every change is recorded with the key's id (never a secret), its tenant, the sandbox,
/// the command line of an exec or the path of a file write, and the status — refusals included; reads
/// are not recorded; filters and pages work; bad parameters are 400; only an admin reads it; the rows
/// survive a restart.
#[tokio::test]
#[allow(clippy::too_many_lines)] // one scenario, told in order
async fn the_audit_log_records_who_did_what_and_never_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), FakeBackend::new()).await;
    let anon = reqwest::Client::new();
    let (a_id, a) = make_key(
        &d,
        json!({"name": "a", "tenant": "a", "scopes": ["sandboxes"]}),
    )
    .await;
    let (_, b) = make_key(
        &d,
        json!({"name": "b", "tenant": "b", "scopes": ["sandboxes"]}),
    )
    .await;
    let (r_id, r) = make_key(&d, json!({"name": "r", "tenant": "a", "scopes": ["read"]})).await;
    let (s, sb) = call(
        anon.post(d.url("/v1/sandboxes"))
            .bearer_auth(&a)
            .json(&json!({})),
    )
    .await;
    assert_eq!(s, 201, "{sb}");
    let id = sb["id"].as_str().unwrap().to_owned();
    let token = sb["access_token"].as_str().unwrap().to_owned();
    // An exec: the command line is recorded, and the body still reaches the agent whole.
    let (s, v) = call(
        anon.post(d.url(&format!("/v1/sandboxes/{id}/exec")))
            .bearer_auth(&a)
            .json(&json!({"argv": ["echo", "hi there"]})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert!(v["body"].as_str().unwrap().contains("hi there"), "{v}");
    // A file write through the sandbox's token, with a (wrong) token in the query too: only the path
    // is recorded.
    let (s, _) = call(
        anon.put(d.url(&format!(
            "/v1/sandboxes/{id}/files?path=%2Ftmp%2Fnotes.txt&access_token=spa_{id}_querysecret"
        )))
        .bearer_auth(&token)
        .body("text"),
    )
    .await;
    assert_eq!(s, 200);
    // Reads are not recorded.
    let (s, _) = call(
        anon.get(d.url(&format!("/v1/sandboxes/{id}")))
            .bearer_auth(&a),
    )
    .await;
    assert_eq!(s, 200);
    // Refusals are: a read key's create (403), another tenant's exec (404).
    let (s, _) = call(
        anon.post(d.url("/v1/sandboxes"))
            .bearer_auth(&r)
            .json(&json!({})),
    )
    .await;
    assert_eq!(s, 403);
    let (s, _) = call(
        anon.post(d.url(&format!("/v1/sandboxes/{id}/exec")))
            .bearer_auth(&b)
            .json(&json!({"cmd": "id"})),
    )
    .await;
    assert_eq!(s, 404);
    let (s, _) = call(
        client()
            .put(d.url("/v1/tenants/a"))
            .json(&json!({"max_sandboxes": 5})),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = call(client().delete(d.url(&format!("/v1/sandboxes/{id}")))).await;
    assert_eq!(s, 204);

    // The writer is off the request path: poll until the last row is there.
    let mut all = Value::Null;
    for _ in 0..100 {
        let (s, v) = call(client().get(d.url("/v1/audit"))).await;
        assert_eq!(s, 200, "{v}");
        if v["entries"]
            .as_array()
            .unwrap()
            .last()
            .is_some_and(|e| e["action"] == "sandbox.delete")
        {
            all = v;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rows: Vec<AuditRowView> = all["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("the audit log never got the delete: {all}"))
        .iter()
        .map(|e| {
            (
                e["key_id"].as_str().unwrap().to_owned(),
                e["tenant"].as_str().unwrap().to_owned(),
                e["action"].as_str().unwrap().to_owned(),
                e["sandbox"].as_str().map(str::to_owned),
                e["detail"].as_str().map(str::to_owned),
                e["status"].as_u64().unwrap(),
                e["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let s = |x: &str| x.to_owned();
    let sid = Some(id.clone());
    assert_eq!(rows[0].2, "key.create");
    assert_eq!(rows[0].0, "file");
    assert_eq!(
        rows[0].4.as_deref(),
        Some(format!("id={a_id} name=a tenant=a scopes=sandboxes").as_str())
    );
    assert_eq!(
        rows[3..],
        [
            (
                s(&a_id),
                s("a"),
                s("sandbox.create"),
                sid.clone(),
                Some(s("template=base")),
                201,
                s("ok")
            ),
            (
                s(&a_id),
                s("a"),
                s("process.exec"),
                sid.clone(),
                Some(s("echo 'hi there'")),
                200,
                s("ok")
            ),
            (
                format!("access-token:{id}"),
                s("a"),
                s("file.write"),
                sid.clone(),
                Some(s("path=/tmp/notes.txt")),
                200,
                s("ok")
            ),
            (
                s(&r_id),
                s("a"),
                s("sandbox.create"),
                None,
                None,
                403,
                s("denied")
            ),
            (
                rows[7].0.clone(),
                s("b"),
                s("process.exec"),
                sid.clone(),
                None,
                404,
                s("failed")
            ),
            (
                s("file"),
                s("default"),
                s("tenant.quotas"),
                None,
                Some(s(
                    r#"tenant=a quotas={"max_sandboxes":5,"max_creates_per_second":null,"max_memory_mb":null,"max_disk_mb":null}"#
                )),
                200,
                s("ok")
            ),
            (
                s("file"),
                s("default"),
                s("sandbox.delete"),
                sid.clone(),
                None,
                204,
                s("ok")
            ),
        ]
    );
    let text = all.to_string();
    for secret in [
        &a,
        &b,
        &r,
        &token,
        &format!("spa_{id}_querysecret"),
        &KEY.to_owned(),
    ] {
        assert!(
            !text.contains(secret.as_str()),
            "a secret in the audit log: {text}"
        );
    }

    // Filters, pages, bad parameters, scope.
    let get = |q: &str| {
        let url = d.url(&format!("/v1/audit{q}"));
        async move { call(client().get(url)).await }
    };
    let (_, v) = get("?tenant=b").await;
    assert_eq!(v["entries"].as_array().unwrap().len(), 1, "{v}");
    let (_, v) = get(&format!("?sandbox={id}")).await;
    assert_eq!(v["entries"].as_array().unwrap().len(), 5, "{v}");
    let (_, p1) = get("?limit=4").await;
    assert_eq!(p1["entries"].as_array().unwrap().len(), 4);
    let next = p1["next_after"].as_u64().unwrap();
    let (_, p2) = get(&format!("?limit=100&after={next}")).await;
    assert_eq!(p2["entries"].as_array().unwrap().len(), rows.len() - 4);
    assert!(p2["next_after"].is_null(), "{p2}");
    let (_, v) = get("?since=2999-01-01T00:00:00Z").await;
    assert_eq!(v["entries"], json!([]));
    let (_, v) = get(&format!("?since={}", 0)).await;
    assert_eq!(v["entries"].as_array().unwrap().len(), rows.len());
    for (q, what) in [
        ("?since=yesterday", "since"),
        ("?limit=0", "limit"),
        ("?limit=1001", "limit"),
        ("?after=-1", "after"),
        ("?tenant_id=a", "unknown query parameter"),
    ] {
        let (st, v) = get(q).await;
        assert_eq!(
            (st, v["error"]["code"].as_str()),
            (400, Some("invalid_argument")),
            "{q}: {v}"
        );
        assert!(
            v["error"]["message"].as_str().unwrap().contains(what),
            "{q}: {v}"
        );
    }
    let (st, v) = call(anon.get(d.url("/v1/audit")).bearer_auth(&a)).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (403, Some("permission_denied")),
        "{v}"
    );

    // Kept across a restart.
    d.stop().await.unwrap();
    let d = Daemon::start(dir.path(), FakeBackend::new()).await;
    let (_, v) = call(client().get(d.url("/v1/audit?limit=1000"))).await;
    assert!(v["entries"].as_array().unwrap().len() >= rows.len(), "{v}");
    d.stop().await.unwrap();
}

/// Signed file URLs: made by any key that may use the sandbox (its access token too), they read (GET,
/// HEAD) or write (PUT) one file as one user with no other credential, and the agent never sees the
/// signature; another method, an altered or added parameter, another sandbox, an expired URL or a
/// revoked signer is a 403 naming why; bad requests are 400; a read key cannot sign.
#[tokio::test]
#[allow(clippy::too_many_lines)] // one scenario, told in order
async fn signed_urls_open_one_file_until_they_expire() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), FakeBackend::new()).await;
    let anon = reqwest::Client::new();
    let (a_id, a) = make_key(
        &d,
        json!({"name": "a", "tenant": "a", "scopes": ["sandboxes"]}),
    )
    .await;
    let (_, r) = make_key(&d, json!({"name": "r", "tenant": "a", "scopes": ["read"]})).await;
    let (_, sb) = call(
        anon.post(d.url("/v1/sandboxes"))
            .bearer_auth(&a)
            .json(&json!({})),
    )
    .await;
    let id = sb["id"].as_str().unwrap().to_owned();
    let token = sb["access_token"].as_str().unwrap().to_owned();
    let (_, other) = call(
        anon.post(d.url("/v1/sandboxes"))
            .bearer_auth(&a)
            .json(&json!({})),
    )
    .await;
    let other = other["id"].as_str().unwrap().to_owned();
    let sign = |key: &str, body: Value| {
        let req = anon
            .post(d.url(&format!("/v1/sandboxes/{id}/files/signed-url")))
            .bearer_auth(key)
            .json(&body);
        async move { call(req).await }
    };
    let (s, v) = sign(
        &a,
        json!({"path": "/tmp/a b.txt", "op": "read", "user": "root"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["method"], "GET");
    let url = v["url"].as_str().unwrap().to_owned();
    assert!(
        url.starts_with(&format!(
            "http://{}/v1/sandboxes/{id}/files?path=/tmp/a%20b.txt&user=root&expires=",
            d.addr
        )),
        "{url}"
    );
    assert_eq!(
        v["path"].as_str().unwrap(),
        &url[url.find("/v1/").unwrap()..]
    );
    assert!(!url.contains(&a), "the signer's secret is in the URL");
    // No other credential; the agent sees the call without the signature (on the file fast path's
    // route, which this stand-in agent answers as an ordinary read).
    let (s, got) = call(anon.get(&url)).await;
    assert_eq!(s, 200, "{got}");
    assert_eq!(
        got["uri"], "/_daemon/files?path=/tmp/a%20b.txt&user=root",
        "{got}"
    );
    let (s, _) = call(anon.head(&url)).await;
    assert_eq!(s, 200);
    let refused = |resp: (u16, Value), why: &str| {
        assert_eq!(
            (resp.0, resp.1["error"]["code"].as_str()),
            (403, Some("permission_denied")),
            "{why}: {}",
            resp.1
        );
        assert!(
            resp.1["error"]["message"].as_str().unwrap().contains(why),
            "{why}: {}",
            resp.1
        );
    };
    refused(call(anon.put(&url).body("x")).await, "does not match");
    refused(
        call(anon.get(url.replace("a%20b", "c"))).await,
        "does not match",
    );
    refused(
        call(anon.get(url.replace("user=root", "user=user"))).await,
        "does not match",
    );
    refused(
        call(anon.get(url.replace(&id, &other))).await,
        "does not match",
    );
    refused(
        call(anon.get(format!("{url}&mode=0777"))).await,
        "not \"mode\"",
    );
    refused(
        call(anon.get(url.replace("/files?", "/files/tar?"))).await,
        "/files only",
    );
    // A write URL writes, and does not read.
    let (s, v) = sign(&token, json!({"path": "up.bin", "op": "write"})).await;
    assert_eq!(s, 200, "a sandbox's token signs for its sandbox: {v}");
    assert_eq!(v["method"], "PUT");
    let put_url = v["url"].as_str().unwrap().to_owned();
    let (s, got) = call(anon.put(&put_url).body("payload")).await;
    assert_eq!(s, 200, "{got}");
    assert_eq!(
        (got["uri"].as_str(), got["body"].as_str()),
        (Some("/files?path=up.bin"), Some("payload")),
        "{got}"
    );
    refused(call(anon.get(&put_url)).await, "does not match");
    // Expiry.
    let (s, v) = sign(
        &a,
        json!({"path": "/tmp/soon", "op": "read", "expires_in": 1}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let soon = v["url"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (s, v) = call(anon.get(&soon)).await;
        if s == 403 {
            assert!(
                v["error"]["message"].as_str().unwrap().contains("expired"),
                "{v}"
            );
            break;
        }
        assert_eq!(s, 200, "{v}");
        assert!(Instant::now() < deadline, "the URL never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Bad requests; a read key; an unknown sandbox.
    for (body, what) in [
        (json!({"path": "/x", "op": "exec"}), "`read` or `write`"),
        (
            json!({"path": "/x", "op": "read", "expires_in": 0}),
            "expires_in",
        ),
        (
            json!({"path": "/x", "op": "read", "expires_in": 604_801}),
            "expires_in",
        ),
        (json!({"path": "", "op": "read"}), "path"),
        (
            json!({"path": "/x", "op": "read", "method": "GET"}),
            "method",
        ),
    ] {
        let (s, v) = sign(&a, body).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (400, Some("invalid_argument")),
            "{what}: {v}"
        );
        assert!(
            v["error"]["message"].as_str().unwrap().contains(what),
            "{what}: {v}"
        );
    }
    let (s, v) = sign(&r, json!({"path": "/x", "op": "read"})).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (403, Some("permission_denied")),
        "{v}"
    );
    let (s, _) = call(
        client()
            .post(d.url("/v1/sandboxes/nope/files/signed-url"))
            .json(&json!({"path": "/x", "op": "read"})),
    )
    .await;
    assert_eq!(s, 404);
    // Revoking the signer ends its URLs.
    let (s, _) = call(client().delete(d.url(&format!("/v1/keys/{a_id}")))).await;
    assert_eq!(s, 204);
    refused(call(anon.get(&url)).await, "no longer valid");
    // Audited: the signing, and a write through the URL, by the signer's id (reads are not recorded).
    let mut text = String::new();
    for _ in 0..100 {
        let (_, v) = call(client().get(d.url(&format!("/v1/audit?sandbox={id}&limit=1000")))).await;
        text = v.to_string();
        if text.contains(&format!("signed-url:access-token:{id}")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        text.contains("\"file.sign\"") && text.contains("op=read path=/tmp/a b.txt"),
        "{text}"
    );
    assert!(!text.contains("signature="), "{text}");
    d.stop().await.unwrap();
}

/// An open WebSocket session ends when its credential does: a key revoked, a sandbox token rotated. The
/// client gets a close frame 1008 whose reason starts `unauthenticated:`, within moments; a session of
/// another credential runs on.
#[tokio::test]
async fn an_open_websocket_ends_when_its_key_is_revoked_or_its_token_rotated() {
    use tokio_tungstenite::tungstenite::Message;
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), FakeBackend::new()).await;
    let made = create(&d, json!({})).await;
    let id = made["id"].as_str().unwrap().to_owned();
    let token = made["access_token"].as_str().unwrap().to_owned();
    let (key_id, key) = make_key(&d, json!({"name": "typist", "scopes": ["sandboxes"]})).await;
    let (_, other) = make_key(&d, json!({"name": "bystander", "scopes": ["sandboxes"]})).await;
    let open = |cred: String| {
        let url = format!(
            "{}?access_token={cred}",
            d.url(&format!("/v1/sandboxes/{id}/processes/p1/ws"))
                .replacen("http://", "ws://", 1)
        );
        async move {
            let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
            ws.send(Message::text("hi")).await.unwrap();
            let echo = ws.next().await.unwrap().unwrap();
            assert_eq!(echo, Message::text("echo:hi"));
            ws
        }
    };
    let bystander = open(other.clone()).await;
    for (who, cred) in [("key", key.clone()), ("token", token.clone())] {
        let mut ws = open(cred).await;
        let start = Instant::now();
        if who == "key" {
            let (s, _) = call(client().delete(d.url(&format!("/v1/keys/{key_id}")))).await;
            assert_eq!(s, 204);
        } else {
            let (s, _) =
                call(client().post(d.url(&format!("/v1/sandboxes/{id}/access-token")))).await;
            assert_eq!(s, 200);
        }
        let ended = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match ws.next().await {
                    Some(Ok(Message::Close(Some(f)))) => return Some(f),
                    Some(Ok(_)) => {}
                    _ => return None,
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{who}: the session ran on after the revocation"));
        let f = ended.unwrap_or_else(|| panic!("{who}: no close frame"));
        assert_eq!(u16::from(f.code), 1008, "{who}: {f:?}");
        assert!(f.reason.starts_with("unauthenticated:"), "{who}: {f:?}");
        eprintln!(
            "{who}: session closed {:?} after the revocation",
            start.elapsed()
        );
    }
    // The other key's session is untouched.
    let mut bystander = bystander;
    bystander.send(Message::text("still")).await.unwrap();
    assert_eq!(
        bystander.next().await.unwrap().unwrap(),
        Message::text("echo:still")
    );
    d.stop().await.unwrap();
}
