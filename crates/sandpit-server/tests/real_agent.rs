//! End to end with the real agent: the daemon (in-process, and as a spawned `sandpit serve` for the
//! SIGKILL test) with the `process` backend, starting `target/debug/sandpit agent` for each sandbox.
//!
//! These tests need the `sandpit` binary built beforehand (`cargo build -p sandpit-cli`; CI does it first).
//! They never build it themselves: when it is missing they print a loud SKIPPED line and pass.

mod daemon;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use sandpit_server::{BackendHandle, BackendKind, Config, ProcessBackend, SandboxBackend};
use sandpit_types::{Channel, Frame};
use serde_json::{Value, json};

const KEY: &str = "real-agent-test-key-0123456789";

/// `$SANDPIT_BIN`, else `target/debug/sandpit`, when it exists and has the subcommands the test needs.
fn sandpit_binary(subcommands: &[&str]) -> Option<PathBuf> {
    let bin = daemon::built_binary()?;
    for sub in subcommands {
        let ok = std::process::Command::new(&bin)
            .args([sub, "--help"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            sandpit_testkit::skip(format_args!(
                "{} has no `{sub}` subcommand; rebuild it",
                bin.display()
            ));
            return None;
        }
    }
    Some(bin)
}

/// Kills every agent started under `state_dir` when dropped, whatever happened in the test: agents are
/// detached on purpose and would otherwise outlive it.
struct KillAgents(PathBuf);

impl Drop for KillAgents {
    fn drop(&mut self) {
        let needle = format!("{}/", self.0.display());
        let backend = ProcessBackend::new(PathBuf::new(), Duration::from_secs(1));
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            if cmdline.contains("\0agent\0") && cmdline.contains(&needle) {
                let handle = BackendHandle {
                    agent_socket: PathBuf::new(),
                    init_pid: pid,
                    data: Value::Null,
                };
                let _ = backend.destroy(&handle);
            }
        }
    }
}

struct InProcess {
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), sandpit_server::ServerError>>,
}

impl InProcess {
    async fn start(state_dir: &Path, bin: &Path) -> Self {
        let mut config = Config::with_state_dir(state_dir);
        config.api_key = Some(KEY.into());
        config.backend = BackendKind::Process;
        config.agent_binary = Some(bin.to_owned());
        config.shutdown_grace_secs = 1;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(sandpit_server::run(config, listener, async {
            let _ = rx.await;
        }));
        wait_healthy(&base).await;
        Self {
            base,
            stop: Some(tx),
            task,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

async fn wait_healthy(base: &str) {
    sandpit_testkit::eventually(
        "the daemon to answer /health",
        Duration::from_secs(10),
        || async {
            reqwest::get(format!("{base}/health"))
                .await
                .is_ok_and(|r| r.status().is_success())
                .then_some(())
        },
    )
    .await;
}

fn client() -> reqwest::Client {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {KEY}").parse().unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(h)
        .build()
        .unwrap()
}

async fn call(rb: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = rb.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn post(url: String, body: Value) -> (u16, Value) {
    call(client().post(url).json(&body)).await
}

fn proc_state(pid: u64) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

async fn sse_text(url: String) -> String {
    let resp = client().get(url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    tokio::time::timeout(Duration::from_secs(20), resp.text())
        .await
        .expect("SSE stream did not end")
        .unwrap()
}

#[tokio::test]
async fn exec_stream_and_websocket_through_the_daemon() {
    let Some(bin) = sandpit_binary(&["agent"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let _cleanup = KillAgents(dir.path().to_owned());
    let daemon = InProcess::start(dir.path(), &bin).await;
    let (s, sb) = post(
        format!("{}/v1/sandboxes", daemon.base),
        json!({"env": {"GREETING": "hello"}}),
    )
    .await;
    assert_eq!(s, 201, "{sb}");
    let root = format!(
        "{}/v1/sandboxes/{}",
        daemon.base,
        sb["id"].as_str().unwrap()
    );

    let (s, r) = post(
        format!("{root}/exec"),
        json!({"cmd": "echo $GREETING; echo oops >&2; exit 3"}),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(
        (
            r["stdout"].as_str(),
            r["stderr"].as_str(),
            r["exit_code"].as_i64()
        ),
        (Some("hello\n"), Some("oops\n"), Some(3))
    );

    let (s, p) = post(
        format!("{root}/processes"),
        json!({"cmd": "for i in 1 2 3; do echo line$i; sleep 0.2; done", "id": "loop"}),
    )
    .await;
    assert!(s == 200 || s == 201, "{s} {p}");
    let events = sse_text(format!("{root}/processes/loop/events")).await;
    for needle in ["event: started", "line1", "line2", "line3", "event: exited"] {
        assert!(events.contains(needle), "{needle} missing in {events}");
    }

    // Interactive stdin over the WebSocket, proxied through the daemon.
    let (s, p) = post(
        format!("{root}/processes"),
        json!({"cmd": "cat", "stdin": "pipe", "id": "cat"}),
    )
    .await;
    assert!(s == 200 || s == 201, "{s} {p}");
    let ws_url = format!("{}/processes/cat/ws", root.replacen("http://", "ws://", 1));
    let mut req =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(ws_url)
            .unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {KEY}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::Binary(
        Frame::encode(Channel::Stdin, 0, b"ping\n").into(),
    ))
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut echoed = Vec::new();
    while !echoed.ends_with(b"ping\n") {
        assert!(
            Instant::now() < deadline,
            "no echo from cat over the websocket"
        );
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let tokio_tungstenite::tungstenite::Message::Binary(b) = msg {
            let f = Frame::decode(&b).unwrap();
            assert_eq!(f.channel, Channel::Stdout);
            echoed.extend_from_slice(&f.data);
        }
    }
    let _ = ws.close(None).await;

    let (s, _) = call(client().delete(&root)).await;
    assert_eq!(s, 204);
    daemon.stop().await;
}

#[tokio::test]
async fn pause_freezes_processes_and_a_call_resumes_them() {
    let Some(bin) = sandpit_binary(&["agent"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let _cleanup = KillAgents(dir.path().to_owned());
    let d = InProcess::start(dir.path(), &bin).await;
    let (_, sb) = post(format!("{}/v1/sandboxes", d.base), json!({})).await;
    let root = format!("{}/v1/sandboxes/{}", d.base, sb["id"].as_str().unwrap());
    let (_, p) = post(
        format!("{root}/processes"),
        json!({"argv": ["sleep", "600"]}),
    )
    .await;
    let pid = p["pid"].as_u64().expect("pid");
    assert_ne!(proc_state(pid), Some('T'));

    let (s, _) = post(format!("{root}/pause"), json!({})).await;
    assert_eq!(s, 200);
    assert_eq!(
        proc_state(pid),
        Some('T'),
        "the sandbox's process is not stopped"
    );

    let (s, r) = post(format!("{root}/exec"), json!({"cmd": "echo awake"})).await;
    assert_eq!((s, r["stdout"].as_str()), (200, Some("awake\n")), "{r}");
    assert_ne!(proc_state(pid), Some('T'));

    // Delete kills the whole tree.
    let (s, _) = call(client().delete(&root)).await;
    assert_eq!(s, 204);
    let deadline = Instant::now() + Duration::from_secs(5);
    while proc_state(pid).is_some_and(|s| s != 'Z') {
        assert!(
            Instant::now() < deadline,
            "process {pid} survived the delete"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    d.stop().await;
}

#[tokio::test]
async fn the_deadline_kills_the_sandbox() {
    let Some(bin) = sandpit_binary(&["agent"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let _cleanup = KillAgents(dir.path().to_owned());
    let d = InProcess::start(dir.path(), &bin).await;
    let (_, sb) = post(format!("{}/v1/sandboxes", d.base), json!({"timeout": 1})).await;
    let root = format!("{}/v1/sandboxes/{}", d.base, sb["id"].as_str().unwrap());
    let (_, p) = post(
        format!("{root}/processes"),
        json!({"argv": ["sleep", "600"]}),
    )
    .await;
    let pid = p["pid"].as_u64().expect("pid");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, v) = call(client().get(&root)).await;
        if v["state"] == "stopped" {
            break;
        }
        assert!(Instant::now() < deadline, "still {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        proc_state(pid).is_none_or(|s| s == 'Z'),
        "process {pid} outlived its sandbox"
    );
    let (s, _) = post(format!("{root}/exec"), json!({"cmd": "true"})).await;
    assert_eq!(s, 409);
    d.stop().await;
}

/// A spawned `sandpit serve` child, killed with SIGKILL on drop if still running.
/// `sandpit serve --backend process` on `port`, its output appended to `STATE/serve.log`.
async fn serve(bin: &Path, state_dir: &Path, port: u16) -> sandpit_testkit::Serve {
    sandpit_testkit::Serve::builder(bin, state_dir)
        .backend("process")
        .port(port)
        .key(KEY)
        .log(state_dir.join("serve.log"))
        .start()
        .await
}

#[tokio::test]
async fn processes_and_their_output_survive_a_daemon_sigkill() {
    let Some(bin) = sandpit_binary(&["agent", "serve"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let _cleanup = KillAgents(dir.path().to_owned());
    let port = sandpit_testkit::free_port();
    let daemon = serve(&bin, dir.path(), port).await;
    let base = daemon.base.clone();
    let (s, sb) = post(format!("{base}/v1/sandboxes"), json!({})).await;
    assert_eq!(s, 201, "{sb}");
    let root = format!("{base}/v1/sandboxes/{}", sb["id"].as_str().unwrap());
    let (_, p) = post(
        format!("{root}/processes"),
        json!({"cmd": "for i in 1 2 3 4 5 6; do echo n$i; sleep 0.3; done", "id": "ticker"}),
    )
    .await;
    assert!(p["pid"].is_u64(), "{p}");

    daemon.sigkill();
    tokio::time::sleep(Duration::from_millis(2500)).await; // the ticker finishes while no daemon runs

    let _daemon = serve(&bin, dir.path(), port).await;
    let (_, v) = call(client().get(&root)).await;
    assert_eq!(v["state"], "running", "{v}");
    let events = sse_text(format!("{root}/processes/ticker/events?from_seq=0")).await;
    for i in 1..=6 {
        assert!(
            events.contains(&format!("n{i}")),
            "n{i} missing after restart: {events}"
        );
    }
    let (s, r) = post(format!("{root}/exec"), json!({"cmd": "echo still here"})).await;
    assert_eq!(
        (s, r["stdout"].as_str()),
        (200, Some("still here\n")),
        "{r}"
    );
    let (s, _) = call(client().delete(&root)).await;
    assert_eq!(s, 204);
}

#[tokio::test]
async fn a_dead_agent_is_reported_after_restart() {
    let Some(bin) = sandpit_binary(&["agent"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let _cleanup = KillAgents(dir.path().to_owned());
    let d = InProcess::start(dir.path(), &bin).await;
    let (_, sb) = post(format!("{}/v1/sandboxes", d.base), json!({})).await;
    let id = sb["id"].as_str().unwrap().to_owned();
    d.stop().await;
    // Simulate a host reboot: every agent of this state dir is gone.
    drop(KillAgents(dir.path().to_owned()));

    let d = InProcess::start(dir.path(), &bin).await;
    let (_, v) = call(client().get(format!("{}/v1/sandboxes/{id}", d.base))).await;
    assert_eq!(v["state"], "failed", "{v}");
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains("lost")),
        "{v}"
    );
    d.stop().await;
}
