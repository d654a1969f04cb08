//! Issue 20: lifecycle events (pages, streams, tenants, restarts), webhooks (signed, retried, never in the
//! API's way) against the in-process daemon with the fake backend, and per-sandbox metrics against the real
//! daemon with the isolate backend (root; SKIPPED otherwise, a failure under CI).

mod common;
mod daemon;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::{Daemon, FakeBackend, call, client};
use futures_util::StreamExt;
use sandpit_server::time::ManualClock;
use serde_json::{Value, json};

async fn create(d: &Daemon, body: Value) -> String {
    let (s, v) = call(client().post(d.url("/v1/sandboxes")).json(&body)).await;
    assert_eq!(s, 201, "{v}");
    v["id"].as_str().unwrap().to_owned()
}

fn types(v: &Value) -> Vec<String> {
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect()
}

/// Reads SSE messages (`id`, `event`, `data` JSON) from a response until `n` arrived or 10 s passed.
async fn read_sse(resp: reqwest::Response, n: usize) -> Vec<(String, String, Value)> {
    let mut body = resp.bytes_stream();
    let mut parser = sandpit_types::sse::SseParser::default();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while out.len() < n {
        let Ok(Some(Ok(chunk))) = tokio::time::timeout_at(deadline, body.next()).await else {
            break;
        };
        for e in parser.push(&chunk) {
            if !e.data.is_empty() {
                out.push((
                    e.id.unwrap_or_default(),
                    e.event,
                    serde_json::from_str(&e.data).unwrap(),
                ));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn every_lifecycle_transition_is_one_event_in_order_in_pages_streams_and_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::default());
    let d = Daemon::start_with_clock(
        Daemon::config(dir.path()),
        FakeBackend::new(),
        clock.clone(),
    )
    .await;
    let stream = client()
        .get(d.url("/v1/events/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert!(
        stream.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );

    let id = create(&d, json!({"timeout": 60})).await;
    let sb = d.url(&format!("/v1/sandboxes/{id}"));
    for verb in ["pause", "resume"] {
        let (s, v) = call(client().post(format!("{sb}/{verb}"))).await;
        assert_eq!(s, 200, "{verb}: {v}");
    }
    let (s, v) = call(
        client()
            .post(format!("{sb}/timeout"))
            .json(&json!({"timeout": 600})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    // A paused sandbox that a call reaches is resumed: `auto`.
    call(client().post(format!("{sb}/pause"))).await;
    let (s, _) = call(client().get(format!("{sb}/processes"))).await;
    assert_eq!(s, 200);
    let (s, _) = call(client().delete(&sb)).await;
    assert_eq!(s, 204);

    let want = [
        "sandbox.created",
        "sandbox.paused",
        "sandbox.resumed",
        "sandbox.timeout_extended",
        "sandbox.paused",
        "sandbox.resumed",
        "sandbox.killed",
    ];
    let (s, page) = call(client().get(d.url(&format!("/v1/events?sandbox={id}")))).await;
    assert_eq!(s, 200, "{page}");
    assert_eq!(types(&page), want);
    let ev = page["events"].as_array().unwrap();
    assert_eq!(ev[0]["data"], json!({"template": "base", "pooled": false}));
    assert_eq!(ev[1]["data"], json!({"reason": "api"}));
    assert_eq!(ev[3]["data"]["timeout_s"], 600);
    assert_eq!(ev[5]["data"], json!({"reason": "auto"}));
    assert_eq!(ev[6]["data"], json!({"reason": "api"}));
    assert!(
        ev.iter()
            .all(|e| e["sandbox_id"] == id.as_str() && e["tenant"] == "default")
    );
    let ids: Vec<u64> = ev.iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

    // The stream opened before saw the same, once each, in order.
    let live = read_sse(stream, want.len()).await;
    let live_types: Vec<&str> = live.iter().map(|(_, t, _)| t.as_str()).collect();
    assert_eq!(live_types, want);
    assert_eq!(live[2].0, ids[2].to_string());
    assert_eq!(live[2].2, ev[2]);

    // Resuming with Last-Event-ID replays what came after, then follows.
    let resumed = client()
        .get(d.url(&format!("/v1/events/stream?sandbox={id}")))
        .header("Last-Event-ID", ids[4].to_string())
        .send()
        .await
        .unwrap();
    let again = read_sse(resumed, 2).await;
    assert_eq!(
        again.iter().map(|(i, _, _)| i.clone()).collect::<Vec<_>>(),
        [ids[5].to_string(), ids[6].to_string()]
    );

    // Filters and pages.
    let (_, paused) = call(client().get(d.url(&format!(
        "/v1/events?sandbox={id}&type=sandbox.paused,sandbox.killed"
    ))))
    .await;
    assert_eq!(
        types(&paused),
        ["sandbox.paused", "sandbox.paused", "sandbox.killed"]
    );
    let (_, p1) = call(client().get(d.url(&format!("/v1/events?sandbox={id}&limit=4")))).await;
    assert_eq!(types(&p1), want[..4]);
    let after = p1["next_after"].as_u64().unwrap();
    let (_, p2) =
        call(client().get(d.url(&format!("/v1/events?sandbox={id}&after={after}")))).await;
    assert_eq!(types(&p2), want[4..]);
    assert!(p2.get("next_after").is_none(), "{p2}");
    // A deleted sandbox's own path is gone; its history is not.
    let (s, _) = call(client().get(format!("{sb}/events"))).await;
    assert_eq!(s, 404);

    // Bad input is a 400 that names the problem.
    for (q, says) in [
        ("type=sandbox.exploded", "unknown event type"),
        ("limit=0", "limit"),
        ("limit=5000", "limit"),
        ("after=-1", "after"),
        ("since=yesterday", "since"),
        ("colour=red", "unknown query parameter"),
    ] {
        let (s, v) = call(client().get(d.url(&format!("/v1/events?{q}")))).await;
        assert_eq!(s, 400, "{q}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(says),
            "{q}: {v}"
        );
    }

    // The deadline: a sandbox that times out says so, then is killed.
    let short = create(&d, json!({"timeout": 1})).await;
    clock.advance(Duration::from_millis(1_500));
    sandpit_testkit::eventually("the timed-out events", Duration::from_secs(10), || async {
        let (_, v) = call(client().get(d.url(&format!("/v1/events?sandbox={short}")))).await;
        (types(&v) == ["sandbox.created", "sandbox.timed_out", "sandbox.killed"]).then_some(v)
    })
    .await;

    // Another tenant's key sees none of these; its own sandbox's only.
    let (s, k) = call(client().post(d.url("/v1/keys")).json(&json!({
        "name": "other", "tenant": "team-b", "scopes": ["sandboxes"]
    })))
    .await;
    assert_eq!(s, 201, "{k}");
    let other = reqwest::Client::new();
    let key = k["key"].as_str().unwrap();
    let (_, theirs) = call(other.get(d.url("/v1/events")).bearer_auth(key)).await;
    assert_eq!(types(&theirs), Vec::<String>::new());
    let (s, v) = call(
        other
            .post(d.url("/v1/sandboxes"))
            .bearer_auth(key)
            .json(&json!({})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let (_, theirs) = call(other.get(d.url("/v1/events")).bearer_auth(key)).await;
    assert_eq!(types(&theirs), ["sandbox.created"]);
    assert_eq!(theirs["events"][0]["tenant"], "team-b");

    // Events outlive the daemon.
    let before = call(client().get(d.url("/v1/events?limit=1000"))).await.1;
    d.stop().await.unwrap();
    let d = Daemon::start(dir.path(), FakeBackend::new()).await;
    let (_, after_restart) = call(client().get(d.url("/v1/events?limit=1000"))).await;
    let n = before["events"].as_array().unwrap().len();
    assert_eq!(
        after_restart["events"].as_array().unwrap()[..n],
        before["events"].as_array().unwrap()[..]
    );
    d.stop().await.unwrap();
}

/// What the test receiver saw: (headers, body) per request.
type Seen = Arc<Mutex<Vec<(HeaderMap, bytes::Bytes)>>>;

async fn receiver(fail_first: usize) -> (String, Seen, tokio::task::JoinHandle<()>) {
    #[derive(Clone)]
    struct Rx {
        seen: Seen,
        n: Arc<AtomicUsize>,
        fail_first: usize,
    }
    async fn hook(State(rx): State<Rx>, headers: HeaderMap, body: bytes::Bytes) -> StatusCode {
        rx.seen.lock().unwrap().push((headers, body));
        if rx.n.fetch_add(1, Ordering::SeqCst) < rx.fail_first {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::NO_CONTENT
        }
    }
    let seen: Seen = Arc::default();
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .with_state(Rx {
            seen: seen.clone(),
            n: Arc::default(),
            fail_first,
        });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(l, app).await.unwrap();
    });
    (url, seen, task)
}

fn signature_ok(secret: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    let ts = headers["sandpit-timestamp"].to_str().unwrap();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let want = ring::hmac::sign(
        &key,
        format!("{ts}.{}", String::from_utf8_lossy(body)).as_bytes(),
    );
    let hex = want.as_ref().iter().fold(String::new(), |mut s, b| {
        use std::fmt::Write as _;
        let _ = write!(s, "{b:02x}");
        s
    });
    headers["sandpit-signature"].to_str().unwrap() == format!("v1={hex}")
}

#[tokio::test(flavor = "multi_thread")]
async fn webhooks_get_signed_events_retried_with_backoff_and_a_dead_receiver_never_holds_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Daemon::config(dir.path());
    cfg.webhook_backoff_ms = 50;
    cfg.webhook_max_attempts = 4;
    cfg.webhook_timeout_ms = 30_000;
    let d = Daemon::start_with(cfg, FakeBackend::new()).await;

    // Bad requests, and admin only.
    for (body, says) in [
        (
            json!({"url": "ftp://x", "events": ["*"], "secret": "s3cret-s3cret"}),
            "url",
        ),
        (
            json!({"url": "http://127.0.0.1:1/h", "events": [], "secret": "s3cret-s3cret"}),
            "events",
        ),
        (
            json!({"url": "http://127.0.0.1:1/h", "events": ["sandbox.nope"], "secret": "s3cret-s3cret"}),
            "unknown event type",
        ),
        (
            json!({"url": "http://127.0.0.1:1/h", "events": ["*"], "secret": "short"}),
            "secret",
        ),
        (
            json!({"url": "http://127.0.0.1:1/h", "events": ["*"], "secret": "s3cret-s3cret", "colour": 1}),
            "colour",
        ),
    ] {
        let (s, v) = call(client().post(d.url("/v1/webhooks")).json(&body)).await;
        assert_eq!(s, 400, "{body}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(says),
            "{v}"
        );
    }
    let (_, k) = call(client().post(d.url("/v1/keys")).json(&json!({
        "name": "user", "scopes": ["sandboxes"]
    })))
    .await;
    let (s, v) = call(
        reqwest::Client::new()
            .get(d.url("/v1/webhooks"))
            .bearer_auth(k["key"].as_str().unwrap()),
    )
    .await;
    assert_eq!(s, 403, "{v}");

    // A receiver that fails twice, then answers.
    let (url, seen, _rx) = receiver(2).await;
    let secret = "the-webhook-secret";
    let (s, hook) = call(client().post(d.url("/v1/webhooks")).json(&json!({
        "url": url, "events": ["sandbox.created"], "secret": secret, "description": "test"
    })))
    .await;
    assert_eq!(s, 201, "{hook}");
    assert!(
        hook.get("secret").is_none(),
        "the secret is never shown: {hook}"
    );
    let wid = hook["id"].as_str().unwrap().to_owned();
    let id = create(&d, json!({})).await;
    let (s, _) = call(client().delete(d.url(&format!("/v1/sandboxes/{id}")))).await;
    assert_eq!(s, 204);
    let deliveries =
        sandpit_testkit::eventually("three attempts", Duration::from_secs(10), || async {
            let (_, v) = call(client().get(d.url(&format!("/v1/webhooks/{wid}/deliveries")))).await;
            (v["deliveries"].as_array().unwrap().len() == 3).then_some(v)
        })
        .await;
    let rows = deliveries["deliveries"].as_array().unwrap();
    let outcomes: Vec<&str> = rows
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        ["delivered", "retrying", "retrying"],
        "{deliveries}"
    );
    assert_eq!(rows[0]["status_code"], 204);
    assert_eq!(rows[2]["status_code"], 500);
    assert!(
        rows.iter()
            .all(|r| r["id"] == rows[0]["id"] && r["event_type"] == "sandbox.created")
    );
    assert_eq!(
        rows.iter()
            .map(|r| r["attempt"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [3, 2, 1]
    );
    {
        let seen = seen.lock().unwrap();
        // Only the type it asked for (no `sandbox.killed`), and every attempt is signed and the same delivery.
        assert_eq!(seen.len(), 3);
        for (h, body) in seen.iter() {
            assert!(signature_ok(secret, h, body), "{h:?}");
            assert!(!signature_ok("another-secret", h, body));
            assert_eq!(h["sandpit-event"], "sandbox.created");
            assert_eq!(h["sandpit-delivery"], rows[0]["id"].as_str().unwrap());
            let e: Value = serde_json::from_slice(body).unwrap();
            assert_eq!(
                (e["type"].as_str(), e["sandbox_id"].as_str()),
                (Some("sandbox.created"), Some(id.as_str()))
            );
        }
    }

    // A receiver that accepts connections and never answers: deliveries wait, the API does not.
    let hang = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hang_url = format!("http://{}/hook", hang.local_addr().unwrap());
    let held = Arc::new(Mutex::new(Vec::new()));
    let held2 = held.clone();
    let _hang = tokio::spawn(async move {
        while let Ok((s, _)) = hang.accept().await {
            held2.lock().unwrap().push(s);
        }
    });
    let (s, dead) = call(client().post(d.url("/v1/webhooks")).json(&json!({
        "url": hang_url, "events": ["*"], "secret": secret
    })))
    .await;
    assert_eq!(s, 201);
    for _ in 0..10 {
        let started = Instant::now();
        let id = create(&d, json!({})).await;
        call(client().post(d.url(&format!("/v1/sandboxes/{id}/pause")))).await;
        call(client().delete(d.url(&format!("/v1/sandboxes/{id}")))).await;
        // Each attempt may take 30 s; none of it is the API's.
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }
    sandpit_testkit::eventually(
        "the hung deliveries to be in flight",
        Duration::from_secs(10),
        || async { (held.lock().unwrap().len() >= 30).then_some(()) },
    )
    .await;

    // Deleting stops it; the registry answers 404 for it afterwards.
    let dead_id = dead["id"].as_str().unwrap();
    let (s, _) = call(client().delete(d.url(&format!("/v1/webhooks/{dead_id}")))).await;
    assert_eq!(s, 204);
    let (s, _) = call(client().get(d.url(&format!("/v1/webhooks/{dead_id}")))).await;
    assert_eq!(s, 404);
    let (_, list) = call(client().get(d.url("/v1/webhooks"))).await;
    assert_eq!(list["webhooks"].as_array().unwrap().len(), 1, "{list}");
    d.stop().await.unwrap();

    // The registry survives a restart.
    let d = Daemon::start(dir.path(), FakeBackend::new()).await;
    let (s, again) = call(client().get(d.url(&format!("/v1/webhooks/{wid}")))).await;
    assert_eq!((s, &again["url"]), (200, &json!(url)));
    d.stop().await.unwrap();
}

/// The real daemon, isolate backend: a spinning cpu shows as ~100 % of one cpu, a 300 MiB allocation and
/// a written file show in memory and disk within two samples, and the gauges and the stream carry them.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_show_a_busy_cpu_an_allocation_and_written_bytes_within_two_samples() {
    let Some(fx) = daemon::Fixture::new() else {
        return;
    };
    let serve = daemon::serve_with(
        &fx.bin,
        &fx.state,
        daemon::free_port(),
        &["--metrics-interval-ms", "500"],
    )
    .await;
    let id = daemon::create(&serve, json!({"memory_mb": 1024, "cpu": 2, "disk_mb": 256})).await;
    let root = serve.url(&format!("/v1/sandboxes/{id}"));
    let samples = |q: &'static str| {
        let url = format!("{root}/metrics{q}");
        async move {
            let (s, v) = daemon::call(daemon::client().get(url)).await;
            assert_eq!(s, 200, "{v}");
            v.as_array().unwrap().clone()
        }
    };
    let first = sandpit_testkit::eventually("a first sample", Duration::from_secs(10), || async {
        samples("").await.last().cloned()
    })
    .await;
    assert_eq!(first["cpu_count"], 2.0);
    assert_eq!(first["mem_limit"], 1024u64 << 20);
    assert_eq!(first["disk_limit"], 256u64 << 20);
    assert!(first["pids"].as_u64().unwrap() >= 1, "{first}");

    let (s, p) = daemon::post(
        format!("{root}/processes"),
        json!({"cmd": "while :; do :; done", "id": "spin"}),
    )
    .await;
    assert_eq!(s, 201, "{p}");
    let busy =
        sandpit_testkit::eventually("~100 % of one cpu", Duration::from_secs(20), || async {
            samples("")
                .await
                .into_iter()
                .rev()
                .find(|m| m["cpu_used_pct"].as_f64().unwrap() > 70.0)
        })
        .await;
    assert!(
        busy["cpu_used_pct"].as_f64().unwrap() < 130.0,
        "one spinning process: {busy}"
    );
    let (s, _) = daemon::call(daemon::client().delete(format!("{root}/processes/spin"))).await;
    assert!(s == 200 || s == 204);

    let (s, p) = daemon::post(
        format!("{root}/processes"),
        json!({"cmd": "python3 -c 'import time; x = bytearray(300 << 20); time.sleep(600)' & \
                       head -c 40000000 /dev/urandom > /home/user/blob; wait", "id": "hog"}),
    )
    .await;
    assert_eq!(s, 201, "{p}");
    let started = Instant::now();
    let full = sandpit_testkit::eventually(
        "300 MiB in use and 40 MB written",
        Duration::from_secs(30),
        || async {
            samples("").await.into_iter().rev().find(|m| {
                m["mem_used"].as_u64().unwrap() >= 300 << 20
                    && m["disk_used"].as_u64().unwrap() >= 40_000_000
            })
        },
    )
    .await;
    eprintln!("allocation seen after {:?}: {full}", started.elapsed());

    // The window: start/end pick samples; bad bounds are 400s.
    let all = sandpit_testkit::eventually("four samples", Duration::from_secs(10), || async {
        let all = samples("").await;
        (all.len() >= 4).then_some(all)
    })
    .await;
    let ts = all[1]["timestamp"].as_str().unwrap().to_owned();
    let (_, from) = daemon::call(
        daemon::client()
            .get(format!("{root}/metrics"))
            .query(&[("start", &ts)]),
    )
    .await;
    assert_eq!(from[0]["timestamp"].as_str(), Some(ts.as_str()));
    let (_, to) = daemon::call(
        daemon::client()
            .get(format!("{root}/metrics"))
            .query(&[("end", &ts)]),
    )
    .await;
    assert_eq!(to.as_array().unwrap().len(), 2);
    let (s, v) = daemon::call(daemon::client().get(format!("{root}/metrics?start=soon"))).await;
    assert_eq!(s, 400, "{v}");
    let (s, _) = daemon::call(daemon::client().get(serve.url("/v1/sandboxes/nope/metrics"))).await;
    assert_eq!(s, 404);

    // The stream carries the next sample; the Prometheus page names the sandbox.
    let resp = daemon::client()
        .get(format!("{root}/metrics/stream"))
        .send()
        .await
        .unwrap();
    let got = read_sse(resp, 2).await;
    assert_eq!(got.len(), 2);
    assert!(
        got.iter()
            .all(|(_, e, m)| e == "metrics" && m["mem_used"].as_u64().unwrap() > 0)
    );
    let prom = daemon::get_text(serve.url("/metrics")).await;
    assert!(
        prom.contains(&format!(
            "sandpit_sandbox_memory_used_bytes{{sandbox=\"{id}\"}}"
        )),
        "{prom}"
    );
    assert!(prom.contains("sandpit_sandbox_series_omitted 0"), "{prom}");

    // Regression: the stream outlived its deleted sandbox while another one's samples kept arriving.
    let other = daemon::create(&serve, json!({})).await;
    let resp = daemon::client()
        .get(format!("{root}/metrics/stream"))
        .send()
        .await
        .unwrap();
    let (s, _) = daemon::call(daemon::client().delete(&root)).await;
    assert_eq!(s, 204);
    let mut body = resp.bytes_stream();
    let ended = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(Ok(_)) = body.next().await {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "the metrics stream of a deleted sandbox did not end"
    );
    let (s, _) =
        daemon::call(daemon::client().delete(serve.url(&format!("/v1/sandboxes/{other}")))).await;
    assert_eq!(s, 204);
}
