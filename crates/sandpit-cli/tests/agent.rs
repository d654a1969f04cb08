//! The agent's process API, driven over HTTP, SSE and WebSocket against the real `sandpit agent` binary.

mod common;

use std::time::{Duration, Instant};

use common::{AgentProc, count_procs, eventually, zombies_of};
use futures_util::{SinkExt as _, StreamExt as _};
use sandpit_types::{Channel, Frame};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
}

#[tokio::test]
async fn exec_returns_output_exit_code_env_and_cwd() {
    let a = AgentProc::start(&[]);
    let r = a
        .exec(json!({"cmd": "echo out; echo err >&2; echo $FOO; pwd; exit 3", "env": {"FOO": "bar"}, "cwd": "/tmp"}))
        .await;
    assert_eq!(r["status"], "exited");
    assert_eq!(r["exit_code"], 3);
    assert_eq!(r["stdout"], "out\nbar\n/tmp\n");
    assert_eq!(r["stderr"], "err\n");
    let r = a
        .exec(json!({"argv": ["printf", "%s-%s", "a b", "c"]}))
        .await;
    assert_eq!(r["stdout"], "a b-c");
    let r = a
        .exec(json!({"argv": ["cat"], "stdin": {"text": "piped"}}))
        .await;
    assert_eq!(r["stdout"], "piped");
}

/// Issue 20: an ended process reports its cpu time and peak memory (the kernel's account at `wait4`), a
/// shell's including the children it waited for; a running one has none yet.
#[tokio::test]
async fn an_ended_process_reports_its_cpu_time_and_peak_memory() {
    let a = AgentProc::start(&[]);
    let r = a
        .exec(json!({"cmd": "python3 -c 'import time\nx = bytearray(64 << 20)\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass'"}))
        .await;
    assert_eq!(r["status"], "exited", "{r}");
    let res = &r["resources"];
    let cpu = res["cpu_user_ms"].as_u64().unwrap() + res["cpu_system_ms"].as_u64().unwrap();
    assert!(cpu >= 300, "{r}");
    assert!(res["max_rss_bytes"].as_u64().unwrap() >= 64 << 20, "{r}");
    let r = a.exec(json!({"argv": ["true"]})).await;
    assert!(
        r["resources"]["max_rss_bytes"].as_u64().unwrap() < 64 << 20,
        "{r}"
    );
}

#[tokio::test]
async fn start_failures_are_failed_status_with_a_clear_error() {
    let a = AgentProc::start(&[]);
    let r = a.exec(json!({"argv": ["/no/such/program"]})).await;
    assert_eq!(r["status"], "failed");
    assert_eq!(r["exit_code"], 127);
    assert!(r["error"].as_str().unwrap().contains("not found"), "{r}");
    let r = a.exec(json!({"argv": ["no-such-program-xyz"]})).await;
    assert_eq!(r["status"], "failed");
    let r = a.exec(json!({"cmd": "true", "cwd": "/no/such/dir"})).await;
    assert_eq!(r["status"], "failed");
    assert!(r["error"].as_str().unwrap().contains("/no/such/dir"), "{r}");
    let r = a.exec(json!({"cmd": "true", "user": "no-such-user"})).await;
    assert_eq!(r["status"], "failed");
    assert!(r["error"].as_str().unwrap().contains("no-such-user"), "{r}");
    // A file that exists but is not executable: exec itself fails, and says so.
    let r = a.exec(json!({"argv": ["/etc/hostname"]})).await;
    assert_eq!(r["status"], "failed");
    assert!(
        r["error"].as_str().unwrap().contains("cannot execute"),
        "{r}"
    );
    // A shell command that is not found is the shell's business: exit 127, by convention.
    let r = a.exec(json!({"cmd": "no-such-program-xyz"})).await;
    assert_eq!(
        (r["status"].as_str(), r["exit_code"].as_i64()),
        (Some("exited"), Some(127))
    );
}

#[tokio::test]
async fn background_processes_list_info_and_wait() {
    let a = AgentProc::start(&[]);
    let id = a.spawn(json!({"cmd": "sleep 30", "id": "sleeper"})).await;
    assert_eq!(id, "sleeper");
    let done = a.spawn(json!({"cmd": "echo quick"})).await;
    let w = a.wait(&done).await;
    assert_eq!(w["stdout"], "quick\n");
    let (_, list) = a.get("/processes?status=running").await;
    let ids: Vec<&str> = list["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["sleeper"]);
    let (_, list) = a.get("/processes?limit=1").await;
    assert_eq!(list["processes"].as_array().unwrap().len(), 1);
    // By numeric pid too.
    let (_, info) = a.get("/processes/sleeper").await;
    let pid = info["pid"].as_u64().unwrap();
    let (s, by_pid) = a.get(&format!("/processes/{pid}")).await;
    assert_eq!((s, by_pid["id"].as_str()), (200, Some("sleeper")));
    // Idempotent start: the same id returns the same process, with 200 instead of 201.
    let (s, again) = a
        .post("/processes", json!({"cmd": "sleep 30", "id": "sleeper"}))
        .await;
    assert_eq!((s, again["pid"].as_u64()), (200, Some(pid)));
    // The same id with a different request is a conflict, not a silent reuse.
    let (s, e) = a
        .post("/processes", json!({"cmd": "sleep 31", "id": "sleeper"}))
        .await;
    assert_eq!((s, e["error"]["code"].as_str()), (409, Some("conflict")));
    // Assigned ids never collide with client-chosen ones.
    let next = a.spawn(json!({"cmd": "true", "id": "p9"})).await;
    assert_eq!(next, "p9");
    for _ in 0..8 {
        let id = a.spawn(json!({"cmd": "true"})).await;
        assert_ne!(id, "p9");
    }
    // Long-poll wait that gives up is a 408, not a hang.
    let (s, e) = a.get("/processes/sleeper/wait?timeout_ms=50").await;
    assert_eq!((s, e["error"]["code"].as_str()), (408, Some("timeout")));
    let r = a
        .http
        .delete(format!("{}/processes/sleeper", a.base))
        .send()
        .await
        .unwrap();
    let k: Value = r.json().await.unwrap();
    assert_eq!(k["killed"], true);
    assert_eq!(k["process"]["status"], "killed");
    assert_eq!(k["process"]["exit_code"], 137);
    assert_eq!(k["process"]["signal"], "SIGKILL");
}

#[tokio::test]
async fn sse_replays_from_any_seq_after_a_disconnect_with_zero_bytes_lost() {
    let a = AgentProc::start(&[]);
    let id = a.spawn(json!({"cmd": "for i in $(seq 1 60); do echo line $i; echo err $i >&2; sleep 0.005; done"})).await;
    a.wait(&id).await;
    let expected_out: String = (1..=60).fold(String::new(), |s, i| s + &format!("line {i}\n"));
    let expected_err: String = (1..=60).fold(String::new(), |s, i| s + &format!("err {i}\n"));

    // A first client reads part of the stream over a raw connection and drops it mid-way.
    let mut resp = a
        .http
        .get(format!("{}/processes/{id}/events", a.base))
        .send()
        .await
        .unwrap();
    let mut partial = String::new();
    while partial.matches("\nid: ").count() < 5 {
        partial.push_str(&String::from_utf8_lossy(
            &resp.chunk().await.unwrap().unwrap(),
        ));
    }
    drop(resp);
    let seen = common::parse_sse(partial.rsplit_once("\n\n").map_or("", |(a, _)| a));
    let last_id = seen.iter().filter_map(|(_, id, _)| *id).max().unwrap();

    // It resumes with Last-Event-ID; the union is exactly the output.
    let rest = a.sse(&id, "", Some(last_id)).await;
    let (mut out, mut err) = (String::new(), String::new());
    let mut seqs = Vec::new();
    for (ev, sid, data) in seen.iter().chain(rest.iter()) {
        match ev.as_str() {
            "stdout" => out.push_str(data["data"].as_str().unwrap()),
            "stderr" => err.push_str(data["data"].as_str().unwrap()),
            _ => continue,
        }
        seqs.push(sid.unwrap());
    }
    assert_eq!(out, expected_out);
    assert_eq!(err, expected_err);
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "seqs are contiguous: {seqs:?}"
    );
    assert_eq!(rest.first().unwrap().0, "started");
    assert_eq!(rest.last().unwrap().0, "exited");
    assert_eq!(rest.last().unwrap().2["exit_code"], 0);

    // from_seq works the same way, and any number of clients may read at once.
    let (x, y) = tokio::join!(
        a.sse(&id, "?from_seq=3", None),
        a.sse(&id, "?from_seq=3", None)
    );
    assert_eq!(x.len(), y.len());
    assert_eq!(x[1].1, Some(3));
}

/// Output read in large chunks split off a shared buffer, small ones copied out, and spilled to disk by
/// gathered writes: whatever the write sizes, a replay from seq 1 is the output, byte for byte, and no
/// chunk splits a character.
/// A Python program writing `total` bytes of 1- to 4-byte characters in writes of every size (1 byte
/// to 300 KB, so reads cut characters), and what it writes.
fn writes_of_every_size(total: usize) -> (String, Vec<u8>) {
    let script = format!(
        "import os\n\
         data = ('a\\u00e9\\u20ac\\U0001F600\\n' * {reps}).encode()[:{total}]\n\
         sizes = [1, 3, 70000, 300000, 2, 65536, 7, 131071]\n\
         i = k = 0\n\
         while i < len(data):\n\
         \x20   n = sizes[k % len(sizes)]; k += 1\n\
         \x20   view = memoryview(data)[i:i + n]\n\
         \x20   while view:\n\
         \x20       view = view[os.write(1, view):]\n\
         \x20   i += n\n",
        reps = total / 11 + 1
    );
    let expected: Vec<u8> = "a\u{e9}\u{20ac}\u{1F600}\n"
        .repeat(total / 11 + 1)
        .into_bytes()
        .into_iter()
        .take(total)
        .collect();
    (script, expected)
}

#[tokio::test]
async fn writes_of_every_size_replay_byte_exact_with_characters_whole() {
    const TOTAL: usize = 6_000_000;
    let a = AgentProc::start(&[]);
    let (script, expected) = writes_of_every_size(TOTAL);
    let id = a.spawn(json!({"argv": ["python3", "-c", script]})).await;
    a.wait(&id).await;
    let events = a.sse(&id, "", None).await;
    let mut got = Vec::new();
    for (ev, _, data) in &events {
        if ev == "stdout" {
            // Text that JSON carries cheaply stays text: every chunk here is whole characters.
            let text = data["data"].as_str().expect("a text chunk");
            got.extend_from_slice(text.as_bytes());
        }
    }
    assert_eq!(got.len(), expected.len());
    assert!(
        got == expected,
        "replayed output differs from what was written"
    );
    assert_eq!(events.last().unwrap().2["stdout_bytes"], TOTAL as u64);
}

/// Binary frames are made in place when output is read (header space kept before each chunk, moved
/// past the bytes of a cut character): followed live, replayed from disk, or from the middle, each
/// frame is `[stdout][its seq]` and whole characters, the seqs run on without a gap, and together they
/// are the output byte for byte.
#[tokio::test]
async fn websocket_frames_made_in_place_are_the_output_live_and_replayed() {
    const TOTAL: usize = 6_000_000;
    let a = AgentProc::start(&[]);
    let (script, expected) = writes_of_every_size(TOTAL);
    let id = a.spawn(json!({"argv": ["python3", "-c", script]})).await;
    let session = |query: String| {
        let url = format!("ws://{}/processes/{id}/ws{query}", a.addr);
        async move {
            let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
            let mut frames = Vec::new();
            while let Some(Ok(m)) = ws.next().await {
                match m {
                    Message::Binary(b) => frames.push(Frame::decode(&b).unwrap()),
                    Message::Close(_) => break,
                    _ => {}
                }
            }
            frames
        }
    };
    let check = |frames: &[Frame], from: u64| -> Vec<u8> {
        let mut out = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            assert_eq!((f.channel, f.seq), (Channel::Stdout, from + i as u64));
            assert!(
                std::str::from_utf8(&f.data).is_ok(),
                "frame {} cuts a character",
                f.seq
            );
            out.extend_from_slice(&f.data);
        }
        out
    };
    let live = session(String::new()).await;
    assert!(
        check(&live, 1) == expected,
        "the live frames differ from the output"
    );
    let replayed = session(String::new()).await;
    assert!(
        check(&replayed, 1) == expected,
        "the replay differs from the output"
    );
    let mid = live[live.len() / 2].seq;
    let tail = session(format!("?from_seq={mid}")).await;
    let skipped: usize = live[..live.len() / 2].iter().map(|f| f.data.len()).sum();
    assert!(
        check(&tail, mid) == expected[skipped..],
        "the replay from {mid} differs"
    );
}

#[tokio::test]
async fn sse_follows_a_live_process_and_chunks_keep_utf8_whole() {
    let a = AgentProc::start(&[]);
    // The euro sign is written in two halves with a pause between them.
    let id = a
        .spawn(json!({"cmd": "printf 'a\\342'; sleep 0.3; printf '\\202\\254b'"}))
        .await;
    let events = a.sse(&id, "", None).await;
    let text: String = events
        .iter()
        .filter(|(e, _, _)| e == "stdout")
        .map(|(_, _, d)| {
            d["data"]
                .as_str()
                .expect("every chunk is text, none base64")
                .to_owned()
        })
        .collect();
    assert_eq!(text, "a€b");
}

#[tokio::test]
async fn websocket_session_stdin_eof_signals_and_binary_frames() {
    let a = AgentProc::start(&[]);
    let id = a.spawn(json!({"argv": ["cat"], "stdin": "pipe"})).await;
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/processes/{id}/ws", a.addr))
            .await
            .unwrap();
    let first = ws.next().await.unwrap().unwrap();
    let v: Value = serde_json::from_str(first.to_text().unwrap()).unwrap();
    assert_eq!(v["type"], "started");
    ws.send(Message::Binary(
        Frame::encode(Channel::Stdin, 0, b"hello ").into(),
    ))
    .await
    .unwrap();
    ws.send(Message::Text(
        json!({"type": "stdin", "data": "world"}).to_string().into(),
    ))
    .await
    .unwrap();
    ws.send(Message::Text(
        json!({"type": "stdin_eof"}).to_string().into(),
    ))
    .await
    .unwrap();
    let mut out = Vec::new();
    let mut exited = None;
    while let Some(Ok(m)) = ws.next().await {
        match m {
            Message::Binary(b) => {
                let f = Frame::decode(&b).unwrap();
                assert_eq!(f.channel, Channel::Stdout);
                out.extend_from_slice(&f.data);
            }
            Message::Text(t) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] == "exited" {
                    exited = Some(v);
                }
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    assert_eq!(out, b"hello world");
    assert_eq!(exited.unwrap()["process"]["exit_code"], 0);

    // A bad control frame is answered with an error, and the session stays usable.
    let id = a
        .spawn(json!({"cmd": "trap 'echo got-usr1; exit 7' USR1; while :; do sleep 0.05; done"}))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/processes/{id}/ws", a.addr))
            .await
            .unwrap();
    ws.send(Message::Text(
        r#"{"type":"signal","signal":"BOGUS"}"#.into(),
    ))
    .await
    .unwrap();
    ws.send(Message::Binary(vec![9u8; 3].into())).await.unwrap();
    ws.send(Message::Text(r#"{"type":"signal","signal":"USR1"}"#.into()))
        .await
        .unwrap();
    let mut errors = 0;
    let mut text = String::new();
    while let Some(Ok(m)) = ws.next().await {
        match m {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] == "error" {
                    assert_eq!(v["code"], "invalid_argument");
                    errors += 1;
                }
                if v["type"] == "exited" {
                    assert_eq!(v["process"]["exit_code"], 7);
                }
            }
            Message::Binary(b) => {
                text.push_str(&String::from_utf8_lossy(&Frame::decode(&b).unwrap().data));
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    assert_eq!(errors, 2);
    // The signal reaches the whole group: the shell's trap runs (its `sleep` child dies of it too).
    assert!(text.contains("got-usr1\n"), "{text:?}");
}

#[tokio::test]
async fn stdin_over_http_with_eof_and_signals_by_name_or_number() {
    let a = AgentProc::start(&[]);
    let id = a
        .spawn(
            json!({"cmd": "read line; echo stdout:$line; echo stderr:$line 1>&2", "stdin": "pipe"}),
        )
        .await;
    let r = a
        .http
        .post(format!("{}/processes/{id}/stdin?eof=true", a.base))
        .body("hello\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let w = a.wait(&id).await;
    assert_eq!(
        (w["stdout"].as_str(), w["stderr"].as_str()),
        (Some("stdout:hello\n"), Some("stderr:hello\n"))
    );

    // cat only ends on EOF.
    let id = a.spawn(json!({"argv": ["cat"], "stdin": "pipe"})).await;
    a.http
        .post(format!("{}/processes/{id}/stdin", a.base))
        .body("abc")
        .send()
        .await
        .unwrap();
    a.http
        .post(format!("{}/processes/{id}/stdin?eof=true", a.base))
        .send()
        .await
        .unwrap();
    assert_eq!(a.wait(&id).await["stdout"], "abc");

    for (sig, n) in [
        (json!("TERM"), 15),
        (json!("SIGINT"), 2),
        (json!(10), 10),
        (json!("RTMIN+1"), 35),
    ] {
        let id = a.spawn(json!({"argv": ["sleep", "30"]})).await;
        let (s, _) = a
            .post(&format!("/processes/{id}/signal"), json!({"signal": sig}))
            .await;
        assert_eq!(s, 204);
        let w = a.wait(&id).await;
        assert_eq!(w["status"], "killed", "{sig}");
        assert_eq!(w["exit_code"], 128 + n, "{sig}");
    }
}

#[tokio::test]
async fn kill_reaches_background_grandchildren() {
    let a = AgentProc::start(&[]);
    let m101 = common::marker(1);
    let id = a
        .spawn(json!({"cmd": format!("{m101} & {m101} & ({m101} &) ; {m101}")}))
        .await;
    assert!(eventually(10, || count_procs(&m101) >= 4).await);
    let r = a
        .http
        .delete(format!("{}/processes/{id}", a.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        eventually(10, || count_procs(&m101) == 0).await,
        "every descendant is gone"
    );
    // The orphans were reaped by the agent, not left as zombies.
    assert!(eventually(10, || zombies_of(a.pid()) == 0).await);
}

#[tokio::test]
async fn orphans_are_reaped_and_exit_does_not_wait_for_background_children() {
    let a = AgentProc::start(&[]);
    let t = Instant::now();
    let m102 = common::marker(2);
    let r = a
        .exec(json!({"cmd": format!("{m102} & echo started")}))
        .await;
    assert_eq!(r["stdout"], "started\n");
    assert!(
        t.elapsed() < Duration::from_secs(50),
        "exec returns although a background child holds stdout"
    );
    a.exec(json!({"cmd": "(sleep 0.1 &) ; true"})).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(zombies_of(a.pid()), 0);
    let _ = a
        .http
        .delete(format!(
            "{}/processes/{}",
            a.base,
            r["id"].as_str().unwrap()
        ))
        .send()
        .await;
    assert!(eventually(10, || count_procs(&m102) == 0).await);
}

/// Regression (found by the load test, `sandpit-bench load`): when one output pipe reached EOF within
/// the exit grace and the other did not, the supervisor awaited the finished pump's `JoinHandle` a
/// second time, panicked, and the process stayed `running` for ever: `exec` never returned and no
/// `exited` event came. A background child holding only stdout (or only stderr) did it every time;
/// a busy agent, whose pumps drain late, did it now and then.
#[tokio::test]
async fn exec_returns_when_a_background_child_holds_only_one_pipe() {
    let a = AgentProc::start(&[]);
    let m = common::marker(6);
    for (cmd, stdout, stderr) in [
        (format!("{m} 2>/dev/null & echo out"), "out\n", ""),
        (format!("{m} >/dev/null & echo err >&2"), "", "err\n"),
    ] {
        let r = tokio::time::timeout(Duration::from_secs(20), a.exec(json!({ "cmd": cmd })))
            .await
            .unwrap_or_else(|_| panic!("exec of {cmd:?} never returned"));
        assert_eq!(r["status"], "exited", "{r}");
        assert_eq!(r["exit_code"], 0, "{r}");
        assert_eq!(
            (r["stdout"].as_str(), r["stderr"].as_str()),
            (Some(stdout), Some(stderr))
        );
        let _ = a
            .http
            .delete(format!(
                "{}/processes/{}",
                a.base,
                r["id"].as_str().unwrap()
            ))
            .send()
            .await;
    }
    assert!(eventually(10, || count_procs(&m) == 0).await);
}

#[tokio::test]
async fn pty_echo_and_resize_are_seen_by_stty() {
    let a = AgentProc::start(&[]);
    let id = a
        .spawn(json!({"cmd": "stty size; read x; stty size; echo got:$x", "tty": {"cols": 100, "rows": 30}}))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (s, _) = a
        .post(
            &format!("/processes/{id}/resize"),
            json!({"cols": 120, "rows": 40}),
        )
        .await;
    assert_eq!(s, 204);
    a.http
        .post(format!("{}/processes/{id}/stdin", a.base))
        .body("typed\n")
        .send()
        .await
        .unwrap();
    let w = a.wait(&id).await;
    let out = w["stdout"].as_str().unwrap();
    assert!(out.contains("30 100"), "{out:?}");
    assert!(out.contains("typed"), "terminal echo: {out:?}");
    assert!(out.contains("40 120"), "{out:?}");
    assert!(out.contains("got:typed"), "{out:?}");
    assert_eq!(w["is_pty"], true);
}

#[tokio::test]
async fn timeouts_are_enforced_by_the_agent() {
    let a = AgentProc::start(&[]);
    let m103 = common::marker(3);
    let r = a.exec(json!({"cmd": m103, "timeout_ms": 300})).await;
    assert_eq!(r["status"], "timed_out");
    assert!(r["error"].as_str().unwrap().contains("timeout_ms"));
    // Idle timeout: output keeps it alive, silence ends it.
    let r = a
        .exec(json!({"cmd": format!("for i in 1 2 3 4 5; do echo $i; sleep 0.1; done; {m103}"), "idle_timeout_ms": 500}))
        .await;
    assert_eq!(r["status"], "timed_out");
    assert_eq!(r["stdout"], "1\n2\n3\n4\n5\n");
    assert!(r["error"].as_str().unwrap().contains("idle_timeout_ms"));
    // A dropped client does not cancel a timeout: start, never look again, and it still ends.
    let id = a.spawn(json!({"cmd": m103, "timeout_ms": 200})).await;
    assert_eq!(a.wait(&id).await["status"], "timed_out");
    assert!(eventually(10, || count_procs(&m103) == 0).await);
}

#[tokio::test]
async fn rlimits_and_user_switching() {
    let a = AgentProc::start(&[]);
    let r = a
        .exec(json!({"cmd": "ulimit -n", "rlimits": [{"resource": "nofile", "soft": 100}]}))
        .await;
    assert_eq!(r["stdout"], "100\n");
    if is_root() {
        let r = a
            .exec(json!({"cmd": "id -u; id -g; echo $USER $HOME", "user": "nobody"}))
            .await;
        assert_eq!(r["stdout"], "65534\n65534\nnobody /nonexistent\n");
        assert_eq!(r["user"], "nobody");
    } else {
        eprintln!("not root: user switching checked only for the error case");
        let r = a.exec(json!({"cmd": "true", "user": "root"})).await;
        assert_eq!(r["status"], "failed");
    }
}

#[tokio::test]
async fn output_cap_reports_dropped_output_as_lost() {
    let a = AgentProc::start(&["--output-cap", "65536"]);
    let id = a
        .spawn(json!({"cmd": "head -c 1000000 /dev/zero | tr '\\0' x"}))
        .await;
    let w = a.wait(&id).await;
    let kept = w["stdout"].as_str().unwrap().len() as u64;
    let lost = w["lost_bytes"].as_u64().unwrap();
    assert!(kept <= 65536, "kept {kept}");
    assert_eq!(kept + lost, 1_000_000);
    let events = a.sse(&id, "", None).await;
    assert_eq!(events[1].0, "lost");
    assert_eq!(events[1].2["from_seq"], 1);
    assert_eq!(events[1].2["bytes"], lost);
    let streamed: u64 = events
        .iter()
        .filter(|e| e.0 == "stdout")
        .map(|e| e.2["data"].as_str().unwrap().len() as u64)
        .sum();
    assert_eq!(streamed, kept);
}

/// Regression (issue 21): a WebSocket client reading as fast as it can still lost output to the cap,
/// because the process wrote faster than the session sent and the log dropped what the client had not
/// read yet. A live follower now holds the writer back (as a pipe would) instead: nothing is lost.
#[tokio::test]
async fn a_websocket_follower_that_keeps_reading_loses_nothing_to_the_cap() {
    const TOTAL: u64 = 48 << 20;
    let a = AgentProc::start(&["--output-cap", "1048576"]);
    // The process writes only once the client is attached (it waits for a line on stdin).
    let id = a
        .spawn(json!({"cmd": format!("read go; head -c {TOTAL} /dev/zero"), "stdin": "pipe"}))
        .await;
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/processes/{id}/ws", a.addr))
            .await
            .unwrap();
    ws.send(Message::Text(
        json!({"type": "stdin", "data": "go\n"}).to_string().into(),
    ))
    .await
    .unwrap();
    let (mut got, mut frames, mut lost, mut exited) = (0u64, 0u64, Vec::new(), None);
    while let Some(Ok(m)) = ws.next().await {
        match m {
            Message::Binary(b) => {
                got += Frame::decode(&b).unwrap().data.len() as u64;
                frames += 1;
                // Slower than `head`, but always reading: a pause now and then.
                if frames % 32 == 0 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            Message::Text(t) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                match v["type"].as_str() {
                    Some("lost") => lost.push(v),
                    Some("exited") => exited = Some(v),
                    _ => {}
                }
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    assert!(lost.is_empty(), "lost: {lost:?}");
    assert_eq!(got, TOTAL);
    let exited = exited.expect("an exited message");
    assert_eq!(exited["process"]["status"], "exited");
    // The log still keeps only its cap for later readers (`lost_bytes` counts what it no longer keeps);
    // the follower got every byte before it went.
    assert_eq!(exited["process"]["stdout_bytes"], TOTAL);
}

/// A follower that stops reading holds its process back for at most `flow::STALL` (10 s), then the
/// process goes on without it: a dead client never wedges a process.
#[tokio::test]
async fn a_websocket_follower_that_stops_reading_holds_the_process_only_for_a_while() {
    let a = AgentProc::start(&["--output-cap", "1048576"]);
    let id = a
        .spawn(json!({"cmd": "read go; head -c 33554432 /dev/zero", "stdin": "pipe"}))
        .await;
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/processes/{id}/ws", a.addr))
            .await
            .unwrap();
    ws.send(Message::Text(
        json!({"type": "stdin", "data": "go\n"}).to_string().into(),
    ))
    .await
    .unwrap();
    // Never read from `ws` again; the process must still end.
    let (s, w) = a
        .get(&format!(
            "/processes/{id}/wait?timeout_ms=60000&output=false"
        ))
        .await;
    assert_eq!(s, 200, "{w}");
    assert_eq!(w["status"], "exited");
    assert_eq!(w["stdout_bytes"], 33_554_432u64);
    drop(ws);
}

#[tokio::test]
async fn a_gigabyte_with_no_reader_finishes_and_agent_memory_stays_bounded() {
    let a = AgentProc::start(&[]);
    let t = Instant::now();
    let id = a
        .spawn(json!({"argv": ["head", "-c", "1073741824", "/dev/zero"]}))
        .await;
    let (s, w) = a
        .get(&format!(
            "/processes/{id}/wait?timeout_ms=120000&output=false"
        ))
        .await;
    // Only the info is needed; the result carries the kept 64 MiB.
    assert_eq!(s, 200);
    assert_eq!(w["status"], "exited");
    assert_eq!(w["stdout_bytes"], 1_073_741_824u64);
    // The cap keeps the newest output (at most 64 MiB, dropped a segment at a time) and reports the rest.
    let kept = 1_073_741_824 - w["lost_bytes"].as_u64().unwrap();
    assert!((32 << 20..=64 << 20).contains(&kept), "kept {kept}");
    let rss_kib: u64 = std::fs::read_to_string(format!("/proc/{}/status", a.pid()))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap();
    eprintln!(
        "1 GiB through the agent in {:?}, peak agent RSS {} MiB",
        t.elapsed(),
        rss_kib / 1024
    );
    assert!(rss_kib < 400 * 1024, "peak RSS {rss_kib} KiB");
    assert!(t.elapsed() < Duration::from_secs(100), "did not stall");
}

#[tokio::test]
async fn bad_input_gets_4xx_with_code_and_message() {
    let a = AgentProc::start(&[]);
    let cases: Vec<(&str, &str, Value, u16)> = vec![
        ("POST", "/exec", json!({"cmd": "true", "nope": 1}), 400),
        ("POST", "/exec", json!({}), 400),
        ("POST", "/exec", json!({"cmd": "a", "argv": ["b"]}), 400),
        ("POST", "/exec", json!({"argv": []}), 400),
        (
            "POST",
            "/exec",
            json!({"cmd": "true", "tty": {"cols": -1, "rows": 5}}),
            400,
        ),
        (
            "POST",
            "/exec",
            json!({"cmd": "true", "tty": {"cols": 0, "rows": 5}}),
            400,
        ),
        (
            "POST",
            "/exec",
            json!({"cmd": "true", "timeout_ms": -1}),
            400,
        ),
        (
            "POST",
            "/exec",
            json!({"cmd": "true", "env": {"A=B": "x"}}),
            400,
        ),
        ("POST", "/exec", json!({"cmd": "a\u{0}b"}), 400),
        ("POST", "/exec", json!({"cmd": "cat", "stdin": "pipe"}), 400),
        ("POST", "/exec", json!({"cmd": "true", "id": "../etc"}), 400),
        (
            "POST",
            "/exec",
            json!({"cmd": "true", "rlimits": [{"resource": "bogus", "soft": 1}]}),
            400,
        ),
        ("GET", "/processes/nope", Value::Null, 404),
        ("GET", "/processes/nope/events", Value::Null, 404),
        ("GET", "/processes/nope/ws", Value::Null, 404),
        ("GET", "/processes?status=sleeping", Value::Null, 400),
        ("GET", "/processes?limit=-1", Value::Null, 400),
        ("GET", "/no/such/endpoint", Value::Null, 404),
    ];
    for (method, path, body, want) in cases {
        let url = format!("{}{path}", a.base);
        let req = if method == "POST" {
            a.http.post(&url).json(&body)
        } else {
            a.http.get(&url)
        };
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(status, want, "{method} {path} {body}: {v}");
        assert!(
            v["error"]["code"].is_string() && v["error"]["message"].is_string(),
            "{path}: {v}"
        );
    }
    let id = a.spawn(json!({"argv": ["sleep", "30"]})).await;
    // A plain GET on the WebSocket endpoint is a JSON 400, not a bare-text rejection.
    let (s, v) = a.get(&format!("/processes/{id}/ws")).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("invalid_argument")),
        "{v}"
    );
    let (s, v) = a
        .post(
            &format!("/processes/{id}/signal"),
            json!({"signal": "NOTASIGNAL"}),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("invalid_argument"))
    );
    let (s, _) = a
        .post(&format!("/processes/{id}/signal"), json!({"signal": 99}))
        .await;
    assert_eq!(s, 400);
    let (s, v) = a
        .post(
            &format!("/processes/{id}/resize"),
            json!({"cols": 10, "rows": 10}),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("conflict")),
        "no tty to resize"
    );
    let r = a
        .http
        .post(format!("{}/processes/{id}/stdin", a.base))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 409, "no stdin pipe");
    // Invalid UTF-8 where JSON text is required.
    let r = a
        .http
        .post(format!("{}/exec", a.base))
        .header("content-type", "application/json")
        .body(b"{\"cmd\": \"\xff\xfe\"}".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    // Oversized body.
    // (On its own connection: the server closes it after refusing the body.)
    let big = "x".repeat(17 << 20);
    let r = reqwest::Client::new()
        .post(format!("{}/exec", a.base))
        .json(&json!({"cmd": big}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    // The agent is still fine.
    assert_eq!(a.exec(json!({"cmd": "echo ok"})).await["stdout"], "ok\n");
}

#[tokio::test]
async fn sigterm_stops_processes_and_the_agent_exits_cleanly() {
    let mut a = AgentProc::start(&["--shutdown-grace-secs", "1"]);
    let m104 = common::marker(4);
    a.spawn(json!({"cmd": m104})).await;
    a.spawn(json!({"cmd": format!("trap '' TERM; {m104}")}))
        .await;
    assert!(eventually(10, || count_procs(&m104) >= 2).await);
    std::process::Command::new("kill")
        .args(["-TERM", &a.pid().to_string()])
        .status()
        .unwrap();
    let status = a.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        eventually(10, || count_procs(&m104) == 0).await,
        "TERM, then KILL after the grace"
    );
}

/// The cgroup directory this test process lives in on the v2 (or unified) hierarchy, if writable.
fn own_v2_cgroup() -> Option<std::path::PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))?
        .trim_start_matches('/');
    let root = if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "/sys/fs/cgroup"
    } else {
        "/sys/fs/cgroup/unified"
    };
    let dir = std::path::Path::new(root)
        .join(rel)
        .join(format!("sandpit-test-{}", std::process::id()));
    std::fs::create_dir(&dir).ok()?;
    Some(dir)
}

#[tokio::test]
async fn kill_reaches_daemonized_descendants_through_the_process_cgroup() {
    let Some(cg) = own_v2_cgroup() else {
        sandpit_testkit::skip(format_args!("no writable cgroup v2 directory (needs root)"));
        return;
    };
    let a = AgentProc::start(&["--cgroup", cg.to_str().unwrap()]);
    let m = common::marker(5);
    // setsid puts the grandchild in its own session and process group: only the cgroup still holds it.
    let id = a.spawn(json!({"cmd": format!("setsid {m} & {m}")})).await;
    assert!(eventually(10, || count_procs(&m) >= 2).await);
    let r = a
        .http
        .delete(format!("{}/processes/{id}", a.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        eventually(10, || count_procs(&m) == 0).await,
        "the setsid'd grandchild was killed too"
    );
    drop(a);
    // The agent removes a process's cgroup once it is empty.
    let leftovers: Vec<_> = std::fs::read_dir(&cg)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .collect();
    for e in &leftovers {
        let _ = std::fs::remove_dir(e.path());
    }
    let _ = std::fs::remove_dir(&cg);
    assert!(leftovers.is_empty(), "cgroups left behind: {leftovers:?}");
}

#[tokio::test]
async fn serves_http_on_a_unix_socket() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agent.sock");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sandpit"))
        .args([
            "agent",
            "--listen",
            &format!("unix:{}", sock.display()),
            "--log-dir",
        ])
        .arg(dir.path().join("logs"))
        .spawn()
        .unwrap();
    assert!(eventually(10, || sock.exists()).await);
    let body = r#"{"cmd":"echo over-unix"}"#;
    let mut s = tokio::net::UnixStream::connect(&sock).await.unwrap();
    let req = format!(
        "POST /exec HTTP/1.1\r\nHost: agent\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains(r#""stdout":"over-unix\n""#), "{resp}");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn as_pid_1_of_a_pid_namespace_it_reaps_every_orphan() {
    // `unshare` ignores SIGTERM while it waits; if an assertion fails, SIGKILL the agent (PID 1), which
    // ends the whole namespace, so that nothing outlives the test.
    struct KillNamespace(u32);
    impl Drop for KillNamespace {
        fn drop(&mut self) {
            let kids = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", self.0));
            if let Ok(k) = kids {
                for pid in k.split_whitespace() {
                    let _ = std::process::Command::new("kill")
                        .args(["-KILL", pid])
                        .status();
                }
            }
        }
    }
    if !is_root() {
        sandpit_testkit::skip(format_args!("needs root for a pid namespace"));
        return;
    }
    let logs = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
        .arg(env!("CARGO_BIN_EXE_sandpit"))
        .args(["agent", "--listen", "127.0.0.1:0", "--log-dir"])
        .arg(logs.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let _guard = KillNamespace(child.id());
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let base = format!(
        "http://{}",
        line.trim().strip_prefix("listening on ").unwrap()
    );
    let http = reqwest::Client::new();
    let exec = |cmd: &str| {
        let req = http.post(format!("{base}/exec")).json(&json!({"cmd": cmd}));
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let r = exec("cat /proc/1/cmdline | tr '\\0' ' '; echo; echo $$").await;
    assert!(
        r["stdout"].as_str().unwrap().contains("sandpit agent"),
        "{r}"
    );
    // Double-forked orphans are re-parented to PID 1 (the agent) and must be reaped when they exit.
    for i in 0..20 {
        let r = exec("(sh -c 'sleep 0.05' &) ; (true &) ; true").await;
        assert_eq!(r["status"], "exited", "round {i}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = exec("grep -l '^State:.*Z' /proc/[0-9]*/status | wc -l").await;
    assert_eq!(
        r["stdout"].as_str().unwrap().trim(),
        "0",
        "no zombies in the namespace: {r}"
    );
    // SIGTERM to PID 1 (unshare itself ignores it while waiting): an orderly shutdown ends the namespace.
    let unshare = child.id();
    let agent_pid =
        std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children")).unwrap();
    std::process::Command::new("kill")
        .args(["-TERM", agent_pid.trim()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "the agent exits 0 on SIGTERM: {status:?}");
}

/// Regression (issue 14): the output spill did its disk I/O under the log's lock with `expect`s, so a
/// failing disk could poison the lock and break `GET /processes` for the whole sandbox. With the spill
/// directory on a full 128 KiB tmpfs, 8 MiB of output: the process list keeps answering, the process
/// finishes normally, and the output it could not keep is reported (`lost_bytes`, `error`).
#[tokio::test]
async fn a_full_disk_under_the_output_spill_leaves_the_process_list_answering() {
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    if !sandpit_testkit::require_root("mounting a small tmpfs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=128k", "tmpfs"])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(mounted.success(), "mount tmpfs");
    let _unmount = Unmount(dir.path().to_owned());
    let a = AgentProc::start_with_log_dir(dir, &[]);
    let id = a
        .spawn(json!({"cmd": "head -c 8388608 /dev/zero | tr '\\0' x; echo done >&2"}))
        .await;
    // The list answers while the spill fails underneath.
    let (s, list) = a.get("/processes").await;
    assert_eq!(s, 200, "{list}");
    let w = a.wait(&id).await;
    assert_eq!(w["exit_code"], 0, "{w}");
    let (s, list) = a.get("/processes").await;
    assert_eq!(s, 200, "{list}");
    let info = list["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id.as_str())
        .cloned()
        .expect("the process is listed");
    assert_eq!(info["stdout_bytes"], 8 << 20, "{info}");
    assert!(info["lost_bytes"].as_u64().unwrap() > 0, "{info}");
    assert!(
        info["error"]
            .as_str()
            .is_some_and(|e| e.contains("could not be written to disk")),
        "{info}"
    );
    // A second process still starts and runs.
    let r = a.exec(json!({"cmd": "echo still here"})).await;
    assert_eq!(r["stdout"], "still here\n", "{r}");
}

/// Regression (issue 14): the agent answered a wrong method with 400 while the daemon answers 405; both
/// now use `ErrorBody::method_not_allowed`.
#[tokio::test]
async fn a_wrong_method_is_405_invalid_argument_like_the_daemons() {
    let a = AgentProc::start(&[]);
    let r = a
        .http
        .put(format!("{}/processes", a.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 405);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_argument", "{v}");
    assert_eq!(
        v["error"]["message"], "method PUT is not allowed on /processes",
        "{v}"
    );
}
