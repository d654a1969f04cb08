//! Slow clients (issue 13) against the real daemon: a client that trickles its request head a byte at a
//! time (slowloris), one that connects and says nothing, and one that goes quiet between two requests on a
//! kept-alive connection are all cut off after `header_timeout_secs` (2 s here), while the daemon keeps
//! answering everyone else — and a response that streams for longer than that is not cut. Needs root
//! (SKIPPED otherwise).

mod daemon;

use std::time::{Duration, Instant};

use daemon::{Fixture, call, client, create, free_port, post};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Reads until the daemon closes the connection; returns what it sent and when it closed.
async fn until_closed(s: &mut TcpStream, started: Instant) -> (String, Duration) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => {
                return (
                    String::from_utf8_lossy(&got).into_owned(),
                    started.elapsed(),
                );
            }
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(tokio::time::error::Elapsed { .. }) => {
                panic!("the daemon kept a silent connection open for 20 s")
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_and_silent_clients_are_cut_off_and_streams_are_not() {
    let Some(fx) = Fixture::new() else {
        return;
    };
    let conf = fx.dir.path().join("sandpit.toml");
    std::fs::write(&conf, "header_timeout_secs = 2\n").unwrap();
    let serve = daemon::serve_with(
        &fx.bin,
        &fx.state,
        free_port(),
        &["--config", conf.to_str().unwrap()],
    )
    .await;
    let addr = format!("127.0.0.1:{}", serve.port);

    // 1. Connects and says nothing.
    let mut silent = TcpStream::connect(&addr).await.unwrap();
    let t = Instant::now();
    // 2. Trickles a request head, a byte every 300 ms (it would take ~12 s to finish).
    let mut trickle = TcpStream::connect(&addr).await.unwrap();
    let head = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: aaaaaaaa\r\n\r\n";
    let trickler = tokio::spawn(async move {
        for b in head {
            if trickle.write_all(&[*b]).await.is_err() {
                return (true, trickle);
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        (false, trickle)
    });
    // Meanwhile everyone else is served.
    let (s, h) = call(client().get(serve.url("/health"))).await;
    assert_eq!(s, 200, "{h}");

    let (_, took) = until_closed(&mut silent, t).await;
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(10),
        "a silent connection was closed after {took:?} (limit 2 s)"
    );
    let (cut_while_writing, mut trickle) = trickler.await.unwrap();
    let (answer, took) = until_closed(&mut trickle, t).await;
    assert!(
        cut_while_writing || took < Duration::from_secs(10),
        "the trickling client was not cut: {took:?}"
    );
    assert!(
        !answer.contains("200 OK"),
        "the trickled request was served: {answer}"
    );

    // 3. A kept-alive connection that goes quiet after its first request.
    let mut idle = TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let t = Instant::now();
    let (answer, took) = until_closed(&mut idle, t).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        took < Duration::from_secs(10),
        "an idle keep-alive held for {took:?}"
    );

    // 4. A response that streams for longer than the head deadline is not cut.
    let id = create(&serve, json!({})).await;
    let root = serve.url(&format!("/v1/sandboxes/{id}"));
    let (s, p) = post(
        format!("{root}/processes"),
        json!({"cmd": "for i in 1 2 3 4 5; do echo tick $i; sleep 1; done"}),
    )
    .await;
    assert_eq!(s, 201, "{p}");
    let pid = p["id"].as_str().unwrap();
    let t = Instant::now();
    let body = client()
        .get(format!("{root}/processes/{pid}/events"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        body.contains("event: exited") && t.elapsed() >= Duration::from_secs(4),
        "a {:?} stream was cut: {body}",
        t.elapsed()
    );
    let (s, h) = call(client().get(serve.url("/health"))).await;
    assert_eq!(s, 200, "{h}");
}
