//! Agent health (issue 13), against the real daemon and a real isolated sandbox: the sandbox's agent is
//! stopped from the host (`kill -STOP`, what a ptrace attach used to do from inside). The sandbox must
//! report `unhealthy` within 5 s, a call must fail fast with `503 unavailable` instead of hanging, an open
//! event stream must end with an `error` event and a WebSocket with a close frame (1011), `SIGCONT` must bring it back to `running` (and a command
//! must run again), and DELETE must work while it is unhealthy. Needs root (SKIPPED otherwise).

#![allow(clippy::many_single_char_names)]

mod daemon;

use std::time::{Duration, Instant};

use daemon::{Fixture, Serve, call, client, create, isolate_handle, post, sh};
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

async fn state(serve: &Serve, id: &str) -> Value {
    let (s, info) = call(client().get(serve.url(&format!("/v1/sandboxes/{id}")))).await;
    assert_eq!(s, 200, "{info}");
    info
}

/// Polls until the sandbox's state is `want`, for at most `within`; returns the info and how long it took.
async fn wait_state(serve: &Serve, id: &str, want: &str, within: Duration) -> (Value, Duration) {
    let t = Instant::now();
    loop {
        let info = state(serve, id).await;
        if info["state"] == want {
            return (info, t.elapsed());
        }
        assert!(
            t.elapsed() < within,
            "sandbox {id} not {want} within {within:?}: {info}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn signal(pid: i64, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()), sig).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_agent_is_reported_unhealthy_fails_calls_fast_and_recovers() {
    use nix::sys::signal::Signal;
    let Some(fx) = Fixture::new() else {
        return;
    };
    let serve = daemon::serve(&fx.bin, &fx.state).await;
    let id = create(&serve, json!({})).await;
    let root = serve.url(&format!("/v1/sandboxes/{id}"));
    let agent = isolate_handle(&fx.state, &id)["init_pid"].as_i64().unwrap();
    assert_eq!(sh(&root, "echo up", None).await.1, "up\n");

    // A stream open on a long process when the agent stops.
    let (s, p) = post(format!("{root}/processes"), json!({"cmd": "sleep 600"})).await;
    assert_eq!(s, 201, "{p}");
    let pid = p["id"].as_str().unwrap().to_owned();
    let resp = client()
        .get(format!("{root}/processes/{pid}/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    // Read until `started` is through, so the stream is known to be open end to end.
    let mut seen = String::new();
    while !seen.contains("event: started") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("no started event")
            .expect("stream ended early")
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }

    // And a WebSocket on the same process.
    let mut ws_req = format!(
        "ws://127.0.0.1:{}/v1/sandboxes/{id}/processes/{pid}/ws",
        serve.port
    )
    .into_client_request()
    .unwrap();
    ws_req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", daemon::KEY).parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_req).await.unwrap();

    signal(agent, Signal::SIGSTOP);
    let (info, took) = wait_state(&serve, &id, "unhealthy", Duration::from_secs(5)).await;
    assert!(
        info["error"].as_str().unwrap_or_default().contains("agent"),
        "unhealthy without a reason: {info}"
    );
    eprintln!("unhealthy after {took:?}: {}", info["error"]);

    // The open stream ends with an explicit error event.
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        let mut rest = String::new();
        while let Some(c) = body.next().await {
            match c {
                Ok(c) => rest.push_str(&String::from_utf8_lossy(&c)),
                Err(_) => break,
            }
        }
        rest
    })
    .await
    .expect("the event stream did not end while the agent was stopped");
    assert!(
        ended.contains("event: error") && ended.contains("\"code\":\"unavailable\""),
        "the stream ended without an error event: {ended:?}"
    );

    // The WebSocket ends with a close frame that says why.
    let close = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(m) = ws.next().await {
            match m {
                Ok(Message::Close(c)) => return c,
                Ok(_) => {}
                Err(e) => panic!("the WebSocket broke without a close frame: {e}"),
            }
        }
        None
    })
    .await
    .expect("the WebSocket stayed open while the agent was stopped")
    .expect("the WebSocket ended without a close frame");
    assert_eq!(u16::from(close.code), 1011, "{close:?}");
    assert!(close.reason.starts_with("unavailable"), "{close:?}");

    // Calls fail fast with the documented code instead of hanging.
    let t = Instant::now();
    let (s, e) = post(format!("{root}/exec"), json!({"cmd": "true"})).await;
    assert_eq!(s, 503, "{e}");
    assert_eq!(e["error"]["code"], "unavailable", "{e}");
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "a call to an unhealthy sandbox took {:?}",
        t.elapsed()
    );
    // It is listed as unhealthy too, and filtered by that state.
    let (s, list) = call(client().get(serve.url("/v1/sandboxes?state=unhealthy"))).await;
    assert_eq!(s, 200, "{list}");
    assert!(
        list["sandboxes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["id"] == id.as_str()),
        "{list}"
    );

    // SIGCONT: back to running, and commands run again.
    signal(agent, Signal::SIGCONT);
    wait_state(&serve, &id, "running", Duration::from_secs(5)).await;
    let t = Instant::now();
    assert_eq!(sh(&root, "echo back", None).await.1, "back\n");
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());

    // DELETE works on an unhealthy sandbox.
    signal(agent, Signal::SIGSTOP);
    wait_state(&serve, &id, "unhealthy", Duration::from_secs(5)).await;
    let (s, d) = call(client().delete(&root)).await;
    assert!(s == 200 || s == 204, "{s} {d}");
    let (s, _) = call(client().get(&root)).await;
    assert!(s == 404 || state(&serve, &id).await["state"] == "stopped");
}
