//! The E2B surface's own answers, against the real daemon (a fake backend): bad input is E2B's error shape
//! with a 4xx (the control API's `{"code": status, "message"}`, Connect's `{"code": "…", "message"}`),
//! never a 5xx or a hang; tokens are the sandbox's; what sandpit lacks is refused by name. The stock SDKs'
//! end-to-end suites are compat/e2b/.

mod common;

use common::{Daemon, FakeBackend, KEY, call};
use serde_json::{Value, json};

fn e2b() -> reqwest::Client {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert("x-api-key", KEY.parse().unwrap());
    reqwest::Client::builder()
        .default_headers(h)
        .build()
        .unwrap()
}

async fn create(d: &Daemon, body: Value) -> (u16, Value) {
    call(e2b().post(d.url("/e2b/v2/sandboxes")).json(&body)).await
}

/// A Connect unary call as the SDKs send it.
async fn rpc(
    d: &Daemon,
    token: &str,
    id: &str,
    method: &str,
    ct: &str,
    body: &[u8],
) -> (u16, Value) {
    call(
        reqwest::Client::new()
            .post(d.url(&format!("/e2b/sandbox/{method}")))
            .header("x-access-token", token)
            .header("e2b-sandbox-id", id)
            .header("content-type", ct)
            .body(body.to_vec()),
    )
    .await
}

#[tokio::test]
async fn control_api_answers_e2b_shapes_and_refuses_bad_input_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), FakeBackend::new()).await;

    // No key, a wrong key.
    let (s, b) = call(
        reqwest::Client::new()
            .post(d.url("/e2b/sandboxes"))
            .json(&json!({"templateID": "base"})),
    )
    .await;
    assert_eq!((s, b["code"].as_u64()), (401, Some(401)), "{b}");
    let (s, _) = call(
        reqwest::Client::new()
            .get(d.url("/e2b/v2/sandboxes"))
            .header("x-api-key", "sp_nobody_0123"),
    )
    .await;
    assert_eq!(s, 401);

    // Bad bodies: each a 400 naming what is wrong.
    for (body, word) in [
        (json!({}), "templateID"),
        (json!({"templateID": "base", "surprise": true}), "surprise"),
        (json!({"templateID": "base", "timeout": "soon"}), "timeout"),
        (
            json!({"templateID": "base", "autoResume": {"enabled": true}}),
            "autoResume",
        ),
        (
            json!({"templateID": "base", "network": {"egressProxy": {}}}),
            "egressProxy",
        ),
        (json!({"templateID": "base", "mcp": {"srv": {}}}), "mcp"),
    ] {
        let (s, b) = create(&d, body.clone()).await;
        assert_eq!(s, 400, "{body} → {b}");
        assert_eq!(b["code"], 400);
        assert!(
            b["message"].as_str().unwrap().contains(word),
            "{body} → {b}"
        );
    }
    let (s, b) = call(
        e2b()
            .post(d.url("/e2b/sandboxes"))
            .header("content-type", "application/json")
            .body("{not json"),
    )
    .await;
    assert_eq!((s, b["code"].as_u64()), (400, Some(400)), "{b}");

    // A create: E2B's Sandbox, whose token is the sandbox's own (derived, stable across connects).
    let (s, sb) = create(
        &d,
        json!({"templateID": "base", "metadata": {"k": "v"}, "timeout": 60}),
    )
    .await;
    assert_eq!(s, 201, "{sb}");
    let id = sb["sandboxID"].as_str().unwrap().to_owned();
    let token = sb["envdAccessToken"].as_str().unwrap().to_owned();
    assert!(token.starts_with(&format!("spa_{id}_")), "{token}");
    assert_eq!(sb["envdVersion"], "0.5.7");
    assert_eq!(sb["trafficAccessToken"], Value::Null);
    let (s, got) = call(e2b().get(d.url(&format!("/e2b/sandboxes/{id}")))).await;
    assert_eq!(s, 200);
    assert_eq!(
        (got["state"].as_str(), got["envdAccessToken"].as_str()),
        (Some("running"), Some(&*token))
    );
    assert_eq!(got["metadata"], json!({"k": "v"}));
    let (s, again) = call(
        e2b()
            .post(d.url(&format!("/e2b/sandboxes/{id}/connect")))
            .json(&json!({"timeout": 30})),
    )
    .await;
    assert_eq!((s, again["envdAccessToken"].as_str()), (200, Some(&*token)));
    // A read key sees the sandbox but is not handed its token, and cannot connect.
    let (s, rk) = call(
        common::client()
            .post(d.url("/v1/keys"))
            .json(&json!({"name": "reader", "scopes": ["read"]})),
    )
    .await;
    assert_eq!(s, 201, "{rk}");
    let reader = rk["key"].as_str().unwrap().to_owned();
    let (s, seen) = call(
        reqwest::Client::new()
            .get(d.url(&format!("/e2b/sandboxes/{id}")))
            .header("x-api-key", &reader),
    )
    .await;
    assert_eq!(s, 200, "{seen}");
    assert_eq!(seen["envdAccessToken"], Value::Null, "{seen}");
    let (s, _) = call(
        reqwest::Client::new()
            .post(d.url(&format!("/e2b/sandboxes/{id}/connect")))
            .header("x-api-key", &reader)
            .json(&json!({})),
    )
    .await;
    assert_eq!(s, 403);
    // The token works on sandpit's own API, for that sandbox only.
    let (s, _) = call(
        reqwest::Client::new()
            .get(d.url(&format!("/v1/sandboxes/{id}")))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(s, 200);

    // Listing: metadata filter, paging by x-next-token, bad parameters.
    let (s, l) = call(e2b().get(d.url("/e2b/v2/sandboxes?metadata=k%3Dv&state=running"))).await;
    assert_eq!(s, 200);
    assert_eq!(l.as_array().unwrap().len(), 1, "{l}");
    let (s, b) = call(e2b().get(d.url("/e2b/v2/sandboxes?state=sleeping"))).await;
    assert_eq!((s, b["code"].as_u64()), (400, Some(400)));
    let (s, _) = call(e2b().get(d.url("/e2b/v2/sandboxes?limit=0"))).await;
    assert_eq!(s, 400);
    let (s, _) = call(e2b().get(d.url("/e2b/v2/sandboxes?nextToken=abc"))).await;
    assert_eq!(s, 400);

    // What sandpit lacks is a 501 naming it; unknown routes a 404.
    let (s, b) = call(e2b().get(d.url(&format!("/e2b/sandboxes/{id}/metrics")))).await;
    assert_eq!(s, 501);
    assert!(b["message"].as_str().unwrap().contains("metrics"), "{b}");
    let (s, b) = call(e2b().get(d.url("/e2b/templates"))).await;
    assert_eq!((s, b["code"].as_u64()), (501, Some(501)), "{b}");
    let (s, b) = call(e2b().get(d.url("/e2b/nowhere"))).await;
    assert_eq!((s, b["code"].as_u64()), (404, Some(404)), "{b}");

    // Timeout, kill, and a killed sandbox is gone for E2B.
    let (s, _) = call(
        e2b()
            .post(d.url(&format!("/e2b/sandboxes/{id}/timeout")))
            .json(&json!({"timeout": 90})),
    )
    .await;
    assert_eq!(s, 204);
    let (s, _) = call(
        e2b()
            .post(d.url(&format!("/e2b/sandboxes/{id}/timeout")))
            .json(&json!({"timeout": -1})),
    )
    .await;
    assert_eq!(s, 400);
    let (s, _) = call(e2b().delete(d.url(&format!("/e2b/sandboxes/{id}")))).await;
    assert_eq!(s, 204);
    let (s, _) = call(e2b().delete(d.url(&format!("/e2b/sandboxes/{id}")))).await;
    assert_eq!(s, 404);
    let (s, _) = call(e2b().get(d.url(&format!("/e2b/sandboxes/{id}")))).await;
    assert_eq!(s, 404);
    d.stop().await.unwrap();
}

#[tokio::test]
async fn envd_answers_connect_errors_for_bad_calls() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(dir.path(), FakeBackend::new()).await;
    let (_, sb) = create(&d, json!({"templateID": "base"})).await;
    let id = sb["sandboxID"].as_str().unwrap().to_owned();
    let token = sb["envdAccessToken"].as_str().unwrap().to_owned();
    let json_ct = "application/json";

    // No token, a wrong one.
    let (s, b) = call(
        reqwest::Client::new()
            .post(d.url("/e2b/sandbox/filesystem.Filesystem/Stat"))
            .header("content-type", json_ct)
            .body("{}"),
    )
    .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (401, Some("unauthenticated")),
        "{b}"
    );
    let (s, b) = rpc(
        &d,
        &format!("spa_{id}_wrong"),
        &id,
        "filesystem.Filesystem/Stat",
        json_ct,
        br#"{"path":"/"}"#,
    )
    .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (401, Some("unauthenticated")),
        "{b}"
    );

    // The protobuf codec, bad JSON, unknown fields and methods, an empty path.
    let (s, b) = rpc(
        &d,
        &token,
        &id,
        "filesystem.Filesystem/Stat",
        "application/proto",
        b"\x0a\x01/",
    )
    .await;
    assert_eq!((s, b["code"].as_str()), (501, Some("unimplemented")), "{b}");
    assert!(b["message"].as_str().unwrap().contains("JSON"), "{b}");
    let (s, b) = rpc(
        &d,
        &token,
        &id,
        "filesystem.Filesystem/Stat",
        json_ct,
        b"{nope",
    )
    .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (400, Some("invalid_argument")),
        "{b}"
    );
    let (s, b) = rpc(
        &d,
        &token,
        &id,
        "filesystem.Filesystem/Stat",
        json_ct,
        br#"{"path":"/","x":1}"#,
    )
    .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (400, Some("invalid_argument")),
        "{b}"
    );
    let (s, b) = rpc(
        &d,
        &token,
        &id,
        "filesystem.Filesystem/Stat",
        json_ct,
        br#"{"path":""}"#,
    )
    .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (400, Some("invalid_argument")),
        "{b}"
    );
    let (s, b) = rpc(
        &d,
        &token,
        &id,
        "filesystem.Filesystem/Teleport",
        json_ct,
        b"{}",
    )
    .await;
    assert_eq!((s, b["code"].as_str()), (501, Some("unimplemented")), "{b}");
    let (s, b) = rpc(
        &d,
        &token,
        &id,
        "process.Process/SendSignal",
        json_ct,
        br#"{"process":{"pid":1},"signal":"SIGNAL_SIGHUP"}"#,
    )
    .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (400, Some("invalid_argument")),
        "{b}"
    );
    let (s, b) = rpc(
        &d,
        &token,
        &id,
        "process.Process/SendInput",
        json_ct,
        br#"{"process":{},"input":{"stdin":"aGk="}}"#,
    )
    .await;
    assert_eq!(
        (s, b["code"].as_str()),
        (400, Some("invalid_argument")),
        "{b}"
    );
    let (s, b) = rpc(&d, &token, &id, "nowhere.Service/Do", json_ct, b"{}").await;
    assert_eq!((s, b["code"].as_str()), (501, Some("unimplemented")), "{b}");

    // A stream that starts wrong: 200 and an end message carrying the error.
    let resp = reqwest::Client::new()
        .post(d.url("/e2b/sandbox/process.Process/Start"))
        .header("x-access-token", &token)
        .header("e2b-sandbox-id", &id)
        .header("content-type", "application/connect+json")
        .body(vec![0u8, 0, 0, 0])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.bytes().await.unwrap();
    assert_eq!(body[0], 2, "an end-of-stream envelope");
    let end: Value = serde_json::from_slice(&body[5..]).unwrap();
    assert_eq!(end["error"]["code"], "invalid_argument", "{end}");

    // /files: no credential, a bad parameter, a forged signature.
    let (s, b) = call(reqwest::Client::new().get(d.url("/e2b/sandbox/files?path=/x"))).await;
    assert_eq!((s, b["code"].as_u64()), (401, Some(401)), "{b}");
    let (s, b) = call(
        reqwest::Client::new()
            .get(d.url("/e2b/sandbox/files?path=/x&bogus=1"))
            .header("x-access-token", &token),
    )
    .await;
    assert_eq!((s, b["code"].as_u64()), (400, Some(400)), "{b}");
    let (s, _) =
        call(reqwest::Client::new().get(d.url("/e2b/sandbox/files?path=/x&signature=v1_forged")))
            .await;
    assert_eq!(s, 401);

    // Once the sandbox is gone, its own token hears "was not found" (the SDKs' "not running"); others learn
    // nothing.
    let (s, _) = call(e2b().delete(d.url(&format!("/e2b/sandboxes/{id}")))).await;
    assert_eq!(s, 204);
    let (s, b) = rpc(
        &d,
        &token,
        &id,
        "filesystem.Filesystem/Stat",
        json_ct,
        br#"{"path":"/"}"#,
    )
    .await;
    assert_eq!((s, b["code"].as_str()), (503, Some("unavailable")), "{b}");
    assert!(
        b["message"].as_str().unwrap().contains("was not found"),
        "{b}"
    );
    let (s, _) = call(
        reqwest::Client::new()
            .get(d.url("/e2b/sandbox/health"))
            .header("x-access-token", &token)
            .header("e2b-sandbox-id", &id),
    )
    .await;
    assert_eq!(s, 502);
    let (s, _) = rpc(
        &d,
        &format!("spa_{id}_guess"),
        &id,
        "filesystem.Filesystem/Stat",
        json_ct,
        br#"{"path":"/"}"#,
    )
    .await;
    assert_eq!(s, 401);
    d.stop().await.unwrap();
}

#[tokio::test]
async fn the_e2b_listener_serves_the_surface_at_its_root() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Daemon::config(dir.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    config.e2b_listen = Some(format!("127.0.0.1:{port}").parse().unwrap());
    let d = Daemon::start_with(config, FakeBackend::new()).await;
    let root = format!("http://127.0.0.1:{port}");
    let (s, sb) = call(
        e2b()
            .post(format!("{root}/sandboxes"))
            .json(&json!({"templateID": "base"})),
    )
    .await;
    assert_eq!(s, 201, "{sb}");
    let (s, b) = call(reqwest::Client::new().get(format!("{root}/files?path=/x"))).await;
    assert_eq!((s, b["code"].as_u64()), (401, Some(401)), "{b}");
    // sandpit's own API is not on that listener.
    let (s, _) = call(common::client().get(format!("{root}/v1/sandboxes"))).await;
    assert_eq!(s, 404);
    d.stop().await.unwrap();
}
