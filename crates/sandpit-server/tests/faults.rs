//! Faults, against the real daemon (`sandpit serve`, spawned) and real isolated sandboxes: a client that
//! drops its stream mid-way, a daemon killed with SIGKILL under load, an agent killed from the host, a state
//! directory whose disk is full, and 100 create/delete cycles. Each test says what must survive and
//! checks it from the host side too (processes, mounts, cgroups, id ranges, files), not only via the API.
//!
//! Output is checked byte for byte against what the command must print (numbered lines, so a difference
//! says where it is), and chunk `seq`s must be contiguous: a lost, duplicated or reordered chunk fails.
//! Needs root and `target/debug/sandpit` (see `daemon::prerequisites`); CI runs it as root.

mod daemon;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use daemon::{
    DestroyLeftovers, Fixture, KEY, Serve, call, cgroup_dirs, client, count_entries, create,
    import_busybox_template, isolate_handle, pid_ns, post, processes_in, running, sh,
};
use futures_util::StreamExt;
use serde_json::{Value, json};

/// A shell loop that prints `seq FIRST ..` in `rounds` rounds of `per` numbers, sleeping between rounds,
/// so the output is produced while clients stream it (not all before they connect).
fn paced_seq(first: u64, rounds: u64, per: u64, sleep: &str) -> String {
    format!(
        "i=0; while [ $i -lt {rounds} ]; do s=$(({first} + i * {per})); seq $s $((s + {per} - 1)); \
         i=$((i + 1)); sleep {sleep}; done"
    )
}

/// What [`paced_seq`] prints.
fn expected_seq(first: u64, rounds: u64, per: u64) -> Vec<u8> {
    (first..first + rounds * per)
        .flat_map(|n| format!("{n}\n").into_bytes())
        .collect()
}

/// Where two outputs part, for a failure message that says what was lost.
fn first_difference(got: &[u8], want: &[u8]) -> String {
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let line = want[..at].split(|&b| b == b'\n').count();
    let show = |b: &[u8]| String::from_utf8_lossy(&b[at..(at + 40).min(b.len())]).into_owned();
    format!(
        "got {} bytes, want {}; first difference at byte {at} (line {line}): got {:?}, want {:?}",
        got.len(),
        want.len(),
        show(got),
        show(want)
    )
}

/// One process's output as a client collected it across reconnections.
#[derive(Debug, Default)]
struct Collected {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    last_seq: u64,
    lost: Vec<Value>,
    exited: Option<Value>,
    connections: usize,
    /// Broken connections (the daemon went away), as opposed to the ones the client dropped.
    broken: usize,
}

impl Collected {
    /// Takes one output chunk; a `seq` that is not the next one is a lost, repeated or reordered chunk.
    fn chunk(&mut self, channel: &str, seq: u64, data: &[u8]) {
        assert_eq!(
            seq,
            self.last_seq + 1,
            "chunk seq {seq} after {}: output lost, repeated or reordered",
            self.last_seq
        );
        self.last_seq = seq;
        match channel {
            "stdout" => self.stdout.extend_from_slice(data),
            "stderr" => self.stderr.extend_from_slice(data),
            other => panic!("unknown channel {other}"),
        }
    }
}

/// How a client resumes: the SSE `Last-Event-ID` header, the `from_seq` query, or a WebSocket.
#[derive(Debug, Clone, Copy)]
enum Resume {
    LastEventId,
    FromSeq,
    WebSocket,
}

/// Streams the process's events from where `c` stopped, through the daemon. Stops after `budget` output
/// chunks (dropping the connection without a goodbye, as a crashing client would), at `exited`, or when
/// the connection breaks. Returns `Err` only for a broken connection.
async fn stream_once(
    root: &str,
    pid: &str,
    c: &mut Collected,
    how: Resume,
    budget: Option<usize>,
) -> Result<(), String> {
    c.connections += 1;
    match how {
        Resume::WebSocket => stream_ws(root, pid, c, budget).await,
        Resume::LastEventId | Resume::FromSeq => stream_sse(root, pid, c, how, budget).await,
    }
}

async fn stream_sse(
    root: &str,
    pid: &str,
    c: &mut Collected,
    how: Resume,
    budget: Option<usize>,
) -> Result<(), String> {
    let url = format!("{root}/processes/{pid}/events");
    let req = match how {
        Resume::LastEventId if c.last_seq > 0 => client()
            .get(url)
            .header("Last-Event-ID", c.last_seq.to_string()),
        _ => client().get(format!("{url}?from_seq={}", c.last_seq + 1)),
    };
    let resp = req.send().await.map_err(|e| e.to_string())?;
    if resp.status() != 200 {
        return Err(format!("events: HTTP {}", resp.status()));
    }
    let mut body = resp.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    let mut chunks = 0;
    loop {
        let Some(next) = tokio::time::timeout(Duration::from_secs(30), body.next())
            .await
            .map_err(|_| "no event for 30 s".to_owned())?
        else {
            return if c.exited.is_some() {
                Ok(())
            } else {
                Err("the event stream ended before `exited`".into())
            };
        };
        buf.extend_from_slice(&next.map_err(|e| e.to_string())?);
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let block: Vec<u8> = buf.drain(..end + 2).collect();
            let text = String::from_utf8(block).expect("SSE is UTF-8");
            let (mut event, mut data) = ("message", String::new());
            for line in text.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.strip_prefix(' ').unwrap_or(v));
                }
            }
            match event {
                "stdout" | "stderr" => {
                    let v: Value = serde_json::from_str(&data).unwrap();
                    let text = v["data"]
                        .as_str()
                        .unwrap_or_else(|| panic!("expected text output: {v}"));
                    c.chunk(event, v["seq"].as_u64().unwrap(), text.as_bytes());
                    chunks += 1;
                    if budget.is_some_and(|b| chunks >= b) {
                        return Ok(()); // drop the connection mid-stream
                    }
                }
                "lost" => {
                    let v: Value = serde_json::from_str(&data).unwrap();
                    c.last_seq = v["to_seq"].as_u64().unwrap();
                    c.lost.push(v);
                }
                "exited" => {
                    c.exited = Some(serde_json::from_str(&data).unwrap());
                    return Ok(());
                }
                _ => {}
            }
        }
    }
}

async fn stream_ws(
    root: &str,
    pid: &str,
    c: &mut Collected,
    budget: Option<usize>,
) -> Result<(), String> {
    use tokio_tungstenite::tungstenite::Message;
    let url = format!(
        "{}/processes/{pid}/ws?from_seq={}&access_token={KEY}",
        root.replacen("http://", "ws://", 1),
        c.last_seq + 1
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(|e| e.to_string())?;
    let mut chunks = 0;
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .map_err(|_| "no frame for 30 s".to_owned())?;
        match msg {
            None => {
                return if c.exited.is_some() {
                    Ok(())
                } else {
                    Err("the websocket ended before `exited`".into())
                };
            }
            Some(Err(e)) => return Err(e.to_string()),
            Some(Ok(Message::Binary(b))) => {
                let channel = match b[0] {
                    1 => "stdout",
                    2 => "stderr",
                    other => panic!("unknown channel byte {other}"),
                };
                let seq = u64::from_be_bytes(b[1..9].try_into().unwrap());
                c.chunk(channel, seq, &b[9..]);
                chunks += 1;
                if budget.is_some_and(|n| chunks >= n) {
                    return Ok(()); // dropped without a close frame
                }
            }
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                match v["type"].as_str() {
                    Some("lost") => {
                        c.last_seq = v["to_seq"].as_u64().unwrap();
                        c.lost.push(v);
                    }
                    Some("exited") => {
                        c.exited = Some(v["process"].clone());
                        return Ok(());
                    }
                    _ => {}
                }
            }
            Some(Ok(_)) => {}
        }
    }
}

/// Streams until `exited`, reconnecting after every broken connection (the daemon may be down for a
/// while: retried for up to 60 s). With `budgets`, the client also drops its connection after that many
/// chunks, cycling through the list and through the three ways of resuming.
async fn stream_to_end(root: String, pid: String, budgets: Vec<usize>) -> Collected {
    let mut c = Collected::default();
    let ways = [Resume::LastEventId, Resume::FromSeq, Resume::WebSocket];
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut i = 0;
    while c.exited.is_none() {
        let budget = (!budgets.is_empty()).then(|| budgets[i % budgets.len()]);
        if let Err(e) = stream_once(&root, &pid, &mut c, ways[i % ways.len()], budget).await {
            c.broken += 1;
            assert!(
                Instant::now() < deadline,
                "{pid}: could not stream for 60 s: {e}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        i += 1;
    }
    c
}

async fn start_process(root: &str, cmd: &str) -> String {
    let (s, p) = post(format!("{root}/processes"), json!({"cmd": cmd})).await;
    assert_eq!(s, 201, "{p}");
    p["id"].as_str().unwrap().to_owned()
}

fn assert_complete(what: &str, c: &Collected, want: &[u8]) {
    assert!(
        c.lost.is_empty(),
        "{what}: output reported lost: {:?}",
        c.lost
    );
    assert!(
        c.stdout == want,
        "{what}: {}",
        first_difference(&c.stdout, want)
    );
    assert!(
        c.stderr.is_empty(),
        "{what}: stderr {:?}",
        String::from_utf8_lossy(&c.stderr)
    );
    let exited = c.exited.as_ref().unwrap();
    assert_eq!(exited["exit_code"], 0, "{what}: {exited}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_drops_its_stream_mid_way_resumes_without_losing_a_byte() {
    let Some(fx) = Fixture::new() else {
        return;
    };
    let (bin, state) = (fx.bin.clone(), fx.state.clone());
    let serve = daemon::serve(&bin, &state).await;
    let id = create(&serve, json!({})).await;
    let root = serve.url(&format!("/v1/sandboxes/{id}"));

    // 200 000 numbered lines (1.3 MB) over about three seconds.
    let pid = start_process(&root, &paced_seq(1, 100, 2000, "0.02")).await;
    let want = expected_seq(1, 100, 2000);
    let c = stream_to_end(root.clone(), pid.clone(), vec![7, 23, 3, 31, 11, 1]).await;
    assert_complete("dropping client", &c, &want);
    assert!(
        c.connections >= 10,
        "only {} connections: the test did not disconnect mid-stream",
        c.connections
    );
    eprintln!(
        "{} bytes in {} chunks over {} connections (SSE by Last-Event-ID, SSE by from_seq, \
         WebSocket, each dropped mid-stream): identical",
        c.stdout.len(),
        c.last_seq,
        c.connections
    );

    // A reader that never dropped sees the same, from the start, after the process is gone.
    let whole = stream_to_end(root.clone(), pid, vec![]).await;
    assert_complete("full replay", &whole, &want);
    assert_eq!(whole.last_seq, c.last_seq);
    let (s, _) = call(client().delete(&root)).await;
    assert_eq!(s, 204);
}

#[tokio::test(flavor = "multi_thread")]
#[allow(clippy::too_many_lines)] // one scenario, told in order
async fn a_daemon_sigkilled_under_load_loses_no_sandbox_process_or_byte() {
    let Some(fx) = Fixture::new() else {
        return;
    };
    let (bin, state) = (fx.bin.clone(), fx.state.clone());
    let serve = daemon::serve(&bin, &state).await;
    let port = serve.port;
    let base = serve.base.clone();

    // 3 sandboxes × 4 processes, each printing 20 000 lines over ~4 s, each followed by a client.
    let mut ids = Vec::new();
    let mut streams = Vec::new();
    for s in 0..3u64 {
        let id = create(&serve, json!({})).await;
        let root = format!("{base}/v1/sandboxes/{id}");
        for p in 0..4u64 {
            let first = (s * 4 + p) * 1_000_000 + 1;
            let pid = start_process(&root, &paced_seq(first, 40, 500, "0.1")).await;
            let task = tokio::spawn(stream_to_end(root.clone(), pid, vec![]));
            streams.push((first, task));
        }
        ids.push(id);
    }
    // More load while the daemon dies: exec calls, and creates and deletes.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let exec_root = format!("{base}/v1/sandboxes/{}", ids[0]);
    let exec_load = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0, 0);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = client()
                    .post(format!("{exec_root}/exec"))
                    .json(&json!({"cmd": "echo x"}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => {
                        let v: Value = r.json().await.unwrap();
                        assert_eq!(v["stdout"], "x\n", "{v}");
                        ok += 1;
                    }
                    Ok(r) => panic!("exec answered {}: {}", r.status(), r.text().await.unwrap()),
                    Err(_) => failed += 1, // the daemon is down
                }
            }
            (ok, failed)
        })
    };
    let churn = {
        let (stop, base) = (stop.clone(), base.clone());
        tokio::spawn(async move {
            // A delete the SIGKILL cut off was never answered: that sandbox may be gone or still there,
            // and a retry may then answer 404. Anything else but 204 is a failure.
            let mut kept = Vec::new();
            let mut in_doubt = std::collections::HashSet::new();
            // Likewise a create: one the daemon finished and recorded just before the SIGKILL, whose
            // answer never arrived, is a whole sandbox (it may run on); each attempt is tagged so that
            // such a one can be told from a sandbox nobody asked for.
            let mut creates_in_doubt = std::collections::HashSet::new();
            let mut attempt = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                attempt += 1;
                let tag = attempt.to_string();
                match client()
                    .post(format!("{base}/v1/sandboxes"))
                    .json(&json!({"metadata": {"churn": tag}}))
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 201 => match r.json::<Value>().await {
                        Ok(v) => kept.push(v["id"].as_str().unwrap().to_owned()),
                        Err(_) => {
                            creates_in_doubt.insert(tag);
                        }
                    },
                    Ok(_) => {}
                    Err(_) => {
                        creates_in_doubt.insert(tag);
                    }
                }
                if kept.len() > 2 {
                    let id = kept.remove(0);
                    match client()
                        .delete(format!("{base}/v1/sandboxes/{id}"))
                        .send()
                        .await
                    {
                        Ok(r) if r.status() == 204 => {}
                        Ok(r) if r.status() == 404 && in_doubt.contains(&id) => {}
                        Ok(r) => panic!(
                            "delete {id} answered {}: {}",
                            r.status(),
                            r.text().await.unwrap()
                        ),
                        Err(_) => {
                            in_doubt.insert(id.clone());
                            kept.insert(0, id);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (kept, in_doubt, creates_in_doubt)
        })
    };

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let t = Instant::now();
    serve.sigkill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let serve = daemon::serve_on(&bin, &state, port).await;
    eprintln!("daemon down for {:?}", t.elapsed());

    let mut total = 0;
    let mut broken = 0;
    for (first, task) in streams {
        let c = task.await.unwrap();
        assert_complete(
            &format!("stream from {first}"),
            &c,
            &expected_seq(first, 40, 500),
        );
        total += c.stdout.len();
        broken += c.broken;
    }
    assert!(broken > 0, "no stream noticed the daemon going away");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = exec_load.await.unwrap();
    let (kept, in_doubt, creates_in_doubt) = churn.await.unwrap();
    eprintln!(
        "12 streams, {total} bytes: identical; {broken} broken connections resumed; exec load: {ok} \
         ok, {failed} refused while down"
    );

    // Every sandbox a client was told about is there and works; nothing else is.
    let (s, list) = call(client().get(serve.url("/v1/sandboxes"))).await;
    assert_eq!(s, 200);
    let running: Vec<&Value> = list
        .as_array()
        .unwrap_or_else(|| list["sandboxes"].as_array().unwrap())
        .iter()
        .filter(|v| v["state"] == "running")
        .collect();
    let mut listed: Vec<String> = running
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_owned())
        .collect();
    // A create the SIGKILL cut off after the daemon had recorded it: a whole sandbox, known by its tag.
    let answered_lost: Vec<String> = running
        .iter()
        .filter(|v| {
            v["metadata"]["churn"]
                .as_str()
                .is_some_and(|t| creates_in_doubt.contains(t))
        })
        .map(|v| v["id"].as_str().unwrap().to_owned())
        .collect();
    if !answered_lost.is_empty() {
        eprintln!("created before the SIGKILL, answer lost: {answered_lost:?}");
    }
    // A delete the SIGKILL cut off may have happened or not: such a sandbox is either listed and works,
    // or gone.
    let mut known: Vec<String> = ids
        .iter()
        .chain(&kept)
        .filter(|id| !in_doubt.contains(*id) || listed.contains(*id))
        .chain(&answered_lost)
        .cloned()
        .collect();
    listed.sort();
    known.sort();
    // A create the SIGKILL interrupted before it was recorded was never answered: the restarted daemon
    // must have destroyed it (listed as failed, or gone) rather than run it. (One recorded just before the
    // SIGKILL runs, its answer lost: `answered_lost` above, checked and deleted like the rest. Regression:
    // a clean-clone run failed with "… runs but no client created it" for such a create.)
    assert!(
        known.iter().all(|id| listed.contains(id)),
        "listed {listed:?}, known {known:?}"
    );
    for id in &listed {
        assert!(known.contains(id), "{id} runs but no client created it");
    }
    for id in &known {
        let root = serve.url(&format!("/v1/sandboxes/{id}"));
        assert_eq!(sh(&root, "echo ok", None).await, (0, "ok\n".into()));
        let (s, _) = call(client().delete(&root)).await;
        assert_eq!(s, 204);
    }
    assert_eq!(
        count_entries(&state.join("isolate/sandboxes")),
        0,
        "sandbox directories left"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sigkilled_agent_marks_its_sandbox_failed_and_releases_it() {
    let Some(fx) = Fixture::new() else {
        return;
    };
    let (bin, state) = (fx.bin.clone(), fx.state.clone());
    let serve = daemon::serve(&bin, &state).await;
    let victim = create(&serve, json!({})).await;
    let neighbour = create(&serve, json!({})).await;
    let root = serve.url(&format!("/v1/sandboxes/{victim}"));
    start_process(&root, "sleep 1000 & sleep 1000").await;
    let handle = isolate_handle(&state, &victim);
    let init = handle["init_pid"].as_i64().unwrap();
    let (ns, _ns_held) = pid_ns(init);
    let t = Instant::now();
    while processes_in(&ns).len() < 3 {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the sleeps did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(init).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();

    // The next look at the sandbox tells the truth, with the reason.
    let t = Instant::now();
    let info = loop {
        let (s, v) = call(client().get(&root)).await;
        assert_eq!(s, 200, "{v}");
        if v["state"] == "failed" {
            break v;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "still {v} after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("marked failed after {:?}: {}", t.elapsed(), info["error"]);
    assert!(
        info["error"].as_str().is_some_and(|e| e.contains("agent")),
        "{info}"
    );
    // Calls into it get a clear error, not a hang or a 500.
    let (s, v) = post(format!("{root}/exec"), json!({"cmd": "true"})).await;
    assert!(s == 409 || s == 503, "{s} {v}");
    assert!(v["error"]["message"].as_str().is_some(), "{v}");

    // Released without anyone asking: processes, mounts, cgroups, its directory and id range.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let procs = processes_in(&ns);
        let cgroups: Vec<PathBuf> = cgroup_dirs(&handle)
            .into_iter()
            .filter(|d| d.exists())
            .collect();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .contains(&victim);
        let dir = state.join(format!("isolate/sandboxes/{victim}")).exists();
        if procs.is_empty() && cgroups.is_empty() && !mounts && !dir {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left after the agent died: processes {procs:?}, cgroups {cgroups:?}, mount {mounts}, \
             directory {dir}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        count_entries(&state.join("isolate/idranges")),
        1,
        "only the neighbour's id range stays reserved"
    );

    // The neighbour did not notice; the failed record can be deleted.
    let nroot = serve.url(&format!("/v1/sandboxes/{neighbour}"));
    assert_eq!(sh(&nroot, "echo fine", None).await, (0, "fine\n".into()));
    let (s, _) = call(client().delete(&root)).await;
    assert_eq!(s, 204);
    let (s, _) = call(client().get(&root)).await;
    assert_eq!(s, 404);
    let (s, _) = call(client().delete(&nroot)).await;
    assert_eq!(s, 204);
}

/// A tmpfs of `mb` MiB mounted as the fixture's state directory; when dropped, the sandboxes living on
/// it are destroyed first, then it is unmounted.
struct SmallDisk(PathBuf, DestroyLeftovers);

impl SmallDisk {
    fn mount(fx: &Fixture, mb: u64) -> Self {
        let path = &fx.state;
        std::fs::create_dir_all(path).unwrap();
        let st = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mb}m,mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs");
        let leftovers = DestroyLeftovers {
            state_dir: path.clone(),
            bin: fx.bin.clone(),
        };
        Self(path.clone(), leftovers)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        self.1.destroy();
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Fills the filesystem of `dir` with one file until the disk says no.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![0xa5u8; 64 * 1024];
    loop {
        match f.write_all(&block) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
    // Also the last few bytes, so that no page is left for a small write.
    while f.write(&[0u8; 512]).is_ok_and(|n| n > 0) {}
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_state_disk_is_a_clear_error_and_corrupts_nothing() {
    let Some(fx) = Fixture::new() else {
        return;
    };
    let (bin, state) = (fx.bin.clone(), fx.state.clone());
    let _disk = SmallDisk::mount(&fx, 32);
    let serve = daemon::serve(&bin, &state).await;
    // The daemon starts building `base` in the background; on this small disk it fails (the disk fills,
    // the half-made copy is removed). Wait for that, so that it does not free space after `fill`.
    // It is reported as a build (`GET /v1/templates/base/build`), which must end `failed` with why.
    let build =
        sandpit_testkit::eventually("the base build to end", Duration::from_secs(60), || async {
            let (_, b) = call(client().get(serve.url("/v1/templates/base/build"))).await;
            (b["state"] != "building").then_some(b)
        })
        .await;
    assert_eq!(build["state"], "failed", "{build}");
    assert!(build["error"].is_string(), "{build}");
    // The `base` template is a copy of the host's /usr on a different filesystem (gigabytes): a busybox
    // root filesystem fits the small disk.
    import_busybox_template(&serve, &bin, &fx.dir.path().join("rootfs"), |_| {}).await;
    let before = create(
        &serve,
        json!({"template": "tiny", "metadata": {"n": "before"}}),
    )
    .await;
    let root = serve.url(&format!("/v1/sandboxes/{before}"));
    let filler = fill(&state);

    // Creating needs the disk: a clear error that says so, and nothing half-made left behind.
    let mut refused = 0;
    for _ in 0..3 {
        let (s, v) = post(serve.url("/v1/sandboxes"), json!({"template": "tiny"})).await;
        assert_eq!(s, 507, "{v}");
        assert_eq!(v["error"]["code"], "insufficient_storage", "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("No space left")),
            "{v}"
        );
        if refused == 0 {
            eprintln!("refused: {v}");
        }
        refused += 1;
    }
    // Nothing half-made: one sandbox's worth of directories, id ranges and records.
    assert_eq!(count_entries(&state.join("isolate/sandboxes")), 1);
    assert_eq!(count_entries(&state.join("isolate/idranges")), 1);
    // The engine makes no directory of its own for an isolate sandbox (`SandboxSpec::dir`).
    assert_eq!(count_entries(&state.join("sandboxes")), 0);
    let (s, list) = call(client().get(serve.url("/v1/sandboxes"))).await;
    assert_eq!(s, 200);
    assert_eq!(
        list.as_array()
            .map_or_else(|| list["sandboxes"].as_array().unwrap().len(), Vec::len),
        1,
        "{list}"
    );
    // What needs no disk goes on working: reading state, running commands in a live sandbox.
    let (s, v) = call(client().get(&root)).await;
    assert_eq!((s, v["state"].as_str()), (200, Some("running")), "{v}");
    assert_eq!(sh(&root, "echo alive", None).await, (0, "alive\n".into()));
    let (s, _) = call(client().get(serve.url("/health"))).await;
    assert_eq!(s, 200);
    eprintln!("{refused} creates refused with 507 insufficient_storage while the disk was full");

    // Space again: everything works, and a restart finds a consistent store.
    std::fs::remove_file(&filler).unwrap();
    let after = create(
        &serve,
        json!({"template": "tiny", "metadata": {"n": "after"}}),
    )
    .await;
    serve.sigkill();
    let db = state.join("sandpit.db");
    if db.exists() {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
    }
    let serve = daemon::serve(&bin, &state).await;
    let (s, list) = call(client().get(serve.url("/v1/sandboxes"))).await;
    assert_eq!(s, 200);
    let items = list
        .as_array()
        .unwrap_or_else(|| list["sandboxes"].as_array().unwrap());
    let mut ids: Vec<&str> = items.iter().map(|v| v["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    let mut want = vec![before.as_str(), after.as_str()];
    want.sort_unstable();
    assert_eq!(ids, want, "{list}");
    assert!(items.iter().all(|v| v["state"] == "running"), "{list}");
    assert_eq!(count_entries(&state.join("isolate/sandboxes")), 2);
    for id in [&before, &after] {
        let (s, _) = call(client().delete(serve.url(&format!("/v1/sandboxes/{id}")))).await;
        assert_eq!(s, 204);
    }
}

/// What the host holds for one daemon: its open fds and threads, and the entries of its state dir.
fn footprint(serve: &Serve, state: &Path) -> Vec<(&'static str, usize)> {
    let pid = serve.pid();
    vec![
        (
            "daemon fds",
            count_entries(Path::new(&format!("/proc/{pid}/fd"))),
        ),
        (
            "daemon threads",
            count_entries(Path::new(&format!("/proc/{pid}/task"))),
        ),
        ("sandbox dirs", count_entries(&state.join("sandboxes"))),
        (
            "isolate sandbox dirs",
            count_entries(&state.join("isolate/sandboxes")),
        ),
        ("id ranges", count_entries(&state.join("isolate/idranges"))),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_create_delete_cycles_leak_nothing() {
    let Some(fx) = Fixture::new() else {
        return;
    };
    let (bin, state) = (fx.bin.clone(), fx.state.clone());
    let serve = daemon::serve(&bin, &state).await;
    // One cycle first: the daemon's lazy set-up (template, pools) is not a leak.
    let warm = create(&serve, json!({})).await;
    let (s, _) = call(client().delete(serve.url(&format!("/v1/sandboxes/{warm}")))).await;
    assert_eq!(s, 204);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = footprint(&serve, &state);

    let t = Instant::now();
    let mut seen = Vec::new();
    for i in 0..100 {
        let id = create(&serve, json!({})).await;
        let root = serve.url(&format!("/v1/sandboxes/{id}"));
        // A process with a child that outlives it, and a streamed command, so that delete has
        // something to kill and the proxy a connection to drop.
        start_process(&root, "sleep 600 & exec sleep 600").await;
        assert_eq!(
            sh(&root, &format!("echo {i}"), None).await,
            (0, format!("{i}\n"))
        );
        let handle = isolate_handle(&state, &id);
        let (ns, ns_held) = pid_ns(handle["init_pid"].as_i64().unwrap());
        let (s, v) = call(client().delete(&root)).await;
        assert_eq!(s, 204, "{v}");
        seen.push((id, ns, ns_held, cgroup_dirs(&handle)));
    }
    let elapsed = t.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = footprint(&serve, &state);
    eprintln!("100 cycles in {elapsed:?}; before {before:?}, after {after:?}");

    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for (id, ns, _held, cgroups) in &seen {
        let left = processes_in(ns);
        assert!(left.is_empty(), "{id}: processes left: {left:?}");
        assert!(!mountinfo.contains(id.as_str()), "{id}: a mount left");
        for d in cgroups {
            assert!(!d.exists(), "{id}: cgroup {} left", d.display());
        }
    }
    for ((what, b), (_, a)) in before.iter().zip(&after) {
        // A pooled keep-alive connection or a blocking-pool thread may come and go; a leak per cycle
        // would show as +100.
        let slack = if what.starts_with("daemon") { 8 } else { 0 };
        assert!(*a <= b + slack, "{what}: {b} before, {a} after 100 cycles");
    }
    let (s, list) = call(client().get(serve.url("/v1/sandboxes"))).await;
    assert_eq!(s, 200);
    assert_eq!(
        list.as_array()
            .map_or_else(|| list["sandboxes"].as_array().unwrap().len(), Vec::len),
        0
    );
    assert!(running(i64::from(serve.pid())));
}

/// Issue 13: on a new state directory the `base` template is prepared as soon as the daemon starts,
/// reported like any build (`GET /v1/templates/base/build`: building, then ready, with its log), and a
/// create sent meanwhile waits for it and succeeds: never a 500, never silence.
#[tokio::test(flavor = "multi_thread")]
async fn the_base_template_is_prepared_at_start_and_reported_as_a_build() {
    let Some(fx) = Fixture::new() else {
        return;
    };
    let serve = daemon::serve(&fx.bin, &fx.state).await;
    let (s, b) = call(client().get(serve.url("/v1/templates/base/build"))).await;
    assert_eq!(s, 200, "{b}");
    assert!(b["state"] == "building" || b["state"] == "ready", "{b}");
    // A create now waits for the build rather than failing.
    let (s, sb) = post(serve.url("/v1/sandboxes"), json!({})).await;
    assert_eq!(s, 201, "{sb}");
    let b = sandpit_testkit::eventually(
        "the base build to finish",
        Duration::from_secs(120),
        || async {
            let (_, b) = call(client().get(serve.url("/v1/templates/base/build"))).await;
            (b["state"] != "building").then_some(b)
        },
    )
    .await;
    assert_eq!(b["state"], "ready", "{b}");
    assert!(
        b["log"].as_array().is_some_and(|l| l
            .iter()
            .any(|x| x.as_str().is_some_and(|x| x.contains("hard links")))),
        "{b}"
    );
    assert_eq!(b["template"]["name"], "base", "{b}");
    let (s, _) =
        call(client().delete(serve.url(&format!("/v1/sandboxes/{}", sb["id"].as_str().unwrap()))))
            .await;
    assert_eq!(s, 204);
}
