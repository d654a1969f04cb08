//! End-to-end tests of the SDK against a real `sandpit serve --backend process` (one daemon per test),
//! including the five seed pages' examples translated to Rust.

#![allow(
    clippy::many_single_char_names,
    clippy::too_many_lines,
    clippy::format_collect
)]

mod common;

use std::future::IntoFuture;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Daemon;
use futures_util::StreamExt;
use sandpit::TemplateSource;
use sandpit::{
    Client, Error, ErrorCode, ExecEvent, NO_ARGS, OnTimeout, ProcessStatus, ProcessStreamEvent,
    RlimitResource, Sandbox, SandboxState, Signal,
};

async fn sandbox(d: &Daemon) -> Sandbox {
    Sandbox::create().client(&d.client()).await.unwrap()
}

fn collector() -> (Arc<Mutex<Vec<String>>>, impl FnMut(&str) + Send + 'static) {
    let v = Arc::new(Mutex::new(Vec::new()));
    let w = v.clone();
    (v, move |s: &str| w.lock().unwrap().push(s.to_owned()))
}

// ---------------------------------------------------------------- lifecycle

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_create_list_info_pause_resume_timeout_kill() {
    let d = Daemon::start();
    let client = d.client();
    let mut sbx = Sandbox::create()
        .client(&client)
        .env("GREETING", "hi")
        .metadata("suite", "lifecycle")
        .timeout_secs(120)
        .on_timeout(OnTimeout::Kill)
        .await
        .unwrap();
    assert_eq!(sbx.cached_info().state, SandboxState::Running);
    assert_eq!(sbx.cached_info().metadata["suite"], "lifecycle");
    let other = sandbox(&d).await;

    let listed = client
        .list_sandboxes()
        .metadata("suite", "lifecycle")
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, sbx.id());
    let all = client
        .list_sandboxes()
        .state(SandboxState::Running)
        .await
        .unwrap();
    assert_eq!(all.len(), 2);

    let out = sbx.commands().run("echo $GREETING").await.unwrap();
    assert_eq!(out.stdout, "hi\n");

    assert_eq!(sbx.pause().await.unwrap().state, SandboxState::Paused);
    assert_eq!(sbx.info().await.unwrap().state, SandboxState::Paused);
    assert_eq!(sbx.resume().await.unwrap().state, SandboxState::Running);

    let before = sbx.info().await.unwrap().expires_at;
    let after = sbx
        .set_timeout(Duration::from_secs(3600))
        .await
        .unwrap()
        .expires_at;
    assert!(after > before, "{after:?} should be later than {before:?}");

    // A paused sandbox is resumed by connect.
    sbx.pause().await.unwrap();
    let again = client.connect(sbx.id()).await.unwrap();
    assert_eq!(again.cached_info().state, SandboxState::Running);

    sbx.kill().await.unwrap();
    assert!(matches!(sbx.info().await, Err(Error::NotFound(_))));
    assert!(matches!(
        Sandbox::connect_with(&client, sbx.id()).await,
        Err(Error::NotFound(_))
    ));
    other.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_own_log_is_readable() {
    let d = Daemon::start();
    let sbx = sandbox(&d).await;
    let log = sbx.logs(None).await.unwrap();
    assert!(log.contains("agent listening"), "{log}");
    assert_eq!(sbx.logs(Some(10)).await.unwrap().len(), 10);
    let e = sbx.logs(Some(1 << 40)).await.unwrap_err();
    assert!(
        matches!(&e, Error::InvalidArgument(a) if a.message.contains("tail_bytes")),
        "{e:?}"
    );
    sbx.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_carry_the_servers_code_and_message() {
    let d = Daemon::start();
    let bad = Client::new(&d.url, "wrong-key").unwrap();
    let e = bad.list_sandboxes().await.unwrap_err();
    assert!(
        matches!(&e, Error::Authentication(a) if a.status == 401),
        "{e}"
    );
    assert_eq!(e.code(), Some(ErrorCode::Unauthenticated));

    let client = d.client();
    let e = Sandbox::get(&client, "nope").await.unwrap_err();
    assert!(
        matches!(&e, Error::NotFound(a) if !a.message.is_empty()),
        "{e}"
    );

    let sbx = sandbox(&d).await;
    let e = sbx.commands().connect(1).signal("NOPE").await.unwrap_err();
    assert!(
        matches!(e, Error::NotFound(_) | Error::InvalidArgument(_)),
        "{e}"
    );
    let h = sbx.commands().run("sleep 5").background().await.unwrap();
    let e = h.signal("NOPE").await.unwrap_err();
    assert!(
        matches!(&e, Error::InvalidArgument(a) if a.status == 400),
        "{e}"
    );
    let e = h
        .wait()
        .timeout(Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(matches!(&e, Error::Timeout(a) if a.status == 408), "{e}");
    assert!(h.kill().await.unwrap());
    // stdin of a process without a pipe: conflict.
    let p = sbx.processes().start("sleep 5").stdin_null().await.unwrap();
    let e = p.write_stdin("x", false).await.unwrap_err();
    assert!(matches!(&e, Error::Conflict(a) if a.status == 409), "{e}");
    p.kill().await.unwrap();
    // A command's own timeout is Error::Timeout for run().
    let e = sbx
        .commands()
        .run("sleep 5")
        .timeout_ms(200)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Timeout(_)), "{e}");
    sbx.kill().await.unwrap();
}

// ---------------------------------------------------------------- seed 000/001: Superserve

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_superserve_spawn_python_repl() {
    let d = Daemon::start();
    let sandbox = sandbox(&d).await;
    let (out, on_stdout) = collector();
    let session = sandbox
        .commands()
        .spawn("python3 -i")
        .on_stdout(on_stdout)
        .await
        .unwrap();
    session.stdin().write("print(2 + 2)\n").await.unwrap();
    session.stdin().close().await.unwrap(); // EOF, so the REPL exits
    let result = session.wait().await.unwrap();
    assert_eq!(result.exit_code, 0, "{result:?}");
    assert_eq!(out.lock().unwrap().concat(), "4\n");
    assert_eq!(result.stdout, "4\n");
    sandbox.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_superserve_run_streams_with_an_idle_timeout() {
    let d = Daemon::start();
    let sandbox = sandbox(&d).await;
    // Runs 1.2 s in all but never goes silent for 1 s: the idle timeout never trips.
    let (chunks, on_stdout) = collector();
    let r = sandbox
        .commands()
        .run("for i in 1 2 3 4 5 6; do echo $i; sleep 0.2; done; echo err >&2")
        .on_stdout(on_stdout)
        .on_stderr(|_| {})
        .timeout_ms(1000)
        .await
        .unwrap();
    assert_eq!(r.stdout, "1\n2\n3\n4\n5\n6\n");
    assert_eq!(r.stderr, "err\n");
    assert!(
        chunks.lock().unwrap().len() >= 2,
        "output arrived in pieces"
    );
    // A command that goes silent still has to finish before the timeout.
    let e = sandbox
        .commands()
        .run("echo start; sleep 5")
        .on_stdout(|_| {})
        .timeout_ms(1000)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Timeout(_)), "{e}");
    // Non-zero exit is a result.
    let r = sandbox.commands().run("exit 3").await.unwrap();
    assert_eq!((r.exit_code, r.success()), (3, false));
    sandbox.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn superserve_session_kill_close_and_pick_up_after_drop() {
    let d = Daemon::start();
    let client = d.client();
    let sandbox = sandbox(&d).await;

    // kill(signal) with the default SIGTERM.
    let s = sandbox.commands().spawn("sleep 30").await.unwrap();
    s.kill(Signal::default()).await.unwrap();
    let r = s.wait().await.unwrap();
    assert_eq!((r.status, r.exit_code), (ProcessStatus::Killed, 143));

    // close() kills the process.
    let s = sandbox.commands().spawn("sleep 30").await.unwrap();
    let id = s.id().to_owned();
    s.close().await.unwrap();
    let info = sandbox.commands().connect(&id).info().await.unwrap();
    assert_eq!(info.status, ProcessStatus::Killed);

    // Dropping a session leaves the process running; reconnecting replays what was missed.
    let s = sandbox
        .commands()
        .spawn("read x; for i in 1 2 3; do echo $x$i; sleep 0.2; done")
        .await
        .unwrap();
    s.stdin().write("n").await.unwrap();
    s.stdin().write("\n").await.unwrap();
    let id = s.id().to_owned();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(s);
    let again = Sandbox::connect_with(&client, sandbox.id()).await.unwrap();
    let handle = again.commands().connect(&id);
    assert_eq!(handle.info().await.unwrap().status, ProcessStatus::Running);
    let (seen, on_stdout) = collector();
    let r = handle.wait().on_stdout(on_stdout).await.unwrap();
    assert_eq!(r.stdout, "n1\nn2\nn3\n");
    assert_eq!(seen.lock().unwrap().concat(), "n1\nn2\nn3\n");

    // A session can also be reopened on a running process.
    let h = sandbox.commands().run("cat").background().await.unwrap();
    let s = h.session().await.unwrap();
    s.stdin().write(b"bytes\n".as_slice()).await.unwrap();
    s.stdin().close().await.unwrap();
    assert_eq!(s.wait().await.unwrap().stdout, "bytes\n");
    sandbox.kill().await.unwrap();
}

// ---------------------------------------------------------------- seed 003: Declaw

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_declaw_commands() {
    let d = Daemon::start();
    let sbx = sandbox(&d).await;
    // Foreground.
    let result = sbx.commands().run("echo hello").await.unwrap();
    assert_eq!(result.stdout, "hello\n");
    assert_eq!(result.exit_code, 0);
    // Background.
    let handle = sbx.commands().run("sleep 30").background().await.unwrap();
    assert!(handle.pid() > 0);
    // list: pid, cmd, is_pty, envs.
    let processes = sbx.commands().list().await.unwrap();
    let p = processes.iter().find(|p| p.pid == handle.pid()).unwrap();
    assert_eq!(p.cmd, "sleep 30");
    assert!(!p.is_pty);
    assert!(p.envs.contains_key("PATH"));
    // kill(pid): true, then false when already dead.
    assert!(sbx.commands().kill(handle.pid()).await.unwrap());
    assert!(!sbx.commands().kill(handle.pid()).await.unwrap());

    // runStream.
    let (lines, on_stdout) = collector();
    let result = sbx
        .commands()
        .run_stream("for i in $(seq 1 50); do echo \"line $i\"; sleep 0.02; done")
        .on_stdout(on_stdout)
        .on_stderr(|c| eprint!("{c}"))
        .await
        .unwrap();
    assert_eq!(result.exit_code, 0);
    assert_eq!(lines.lock().unwrap().concat().lines().count(), 50);

    // sendStdin to a background process.
    let handle = sbx.commands().run("cat").background().await.unwrap();
    sbx.commands()
        .send_stdin(handle.pid(), "hello\n")
        .await
        .unwrap();
    sbx.commands()
        .send_stdin(handle.pid(), "world\n")
        .await
        .unwrap();
    handle.close_stdin().await.unwrap();
    let r = handle.wait().await.unwrap();
    assert_eq!(r.stdout, "hello\nworld\n");

    // Background process with stdin, upper-casing (python instead of node).
    let handle = sbx
        .commands()
        .run("python3 -u -c \"import sys\nfor l in sys.stdin: print(l.upper(), end='')\"")
        .background()
        .await
        .unwrap();
    sbx.commands()
        .send_stdin(handle.pid(), "hello\n")
        .await
        .unwrap();
    let (up, on_stdout) = collector();
    let waiter = tokio::spawn(handle.wait().on_stdout(on_stdout).into_future());
    let t0 = Instant::now();
    while up.lock().unwrap().concat() != "HELLO\n" && t0.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(up.lock().unwrap().concat(), "HELLO\n");
    assert!(sbx.commands().kill(handle.pid()).await.unwrap());
    let e = waiter.await.unwrap().unwrap_err();
    assert!(
        matches!(&e, Error::CommandExit(r) if r.exit_code == 137),
        "{e}"
    );

    // handle.wait with callbacks; CommandExitError on non-zero exit.
    let handle = sbx
        .commands()
        .run("echo out; echo err >&2; exit 2")
        .background()
        .await
        .unwrap();
    let (o, on_stdout) = collector();
    let (er, on_stderr) = collector();
    let e = handle
        .wait()
        .on_stdout(on_stdout)
        .on_stderr(on_stderr)
        .await
        .unwrap_err();
    let Error::CommandExit(r) = e else {
        panic!("expected CommandExit, got {e}")
    };
    assert_eq!(
        (r.exit_code, r.stdout.as_str(), r.stderr.as_str()),
        (2, "out\n", "err\n")
    );
    assert_eq!(
        (o.lock().unwrap().concat(), er.lock().unwrap().concat()),
        ("out\n".into(), "err\n".into())
    );

    // connect(pid) without an API call, then wait.
    let bg = sbx
        .commands()
        .run("sleep 0.2; echo late")
        .background()
        .await
        .unwrap();
    let handle = sbx.commands().connect(bg.pid());
    assert_eq!(handle.wait().await.unwrap().stdout, "late\n");
    handle.disconnect();

    // Environment variables, user and cwd.
    let result = sbx
        .commands()
        .run("echo $SECRET; pwd")
        .envs([("SECRET", "supersecret")])
        .cwd("/tmp")
        .timeout_secs(10)
        .await
        .unwrap();
    assert_eq!(result.stdout, "supersecret\n/tmp\n");
    sbx.kill().await.unwrap();
}

// ---------------------------------------------------------------- seed 002: microsandbox

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_microsandbox_exec_and_shell() {
    let d = Daemon::start();
    let sandbox = sandbox(&d).await;
    let result = sandbox
        .exec("python3", ["-c", "print(1 + 1)"])
        .await
        .unwrap();
    assert_eq!(result.stdout(), "2\n");
    assert_eq!(result.code(), 0);
    assert!(result.success());
    assert_eq!(result.stdout_bytes(), b"2\n");

    std::fs::create_dir_all(d.dir.path().join("app/lib")).unwrap();
    std::fs::write(
        d.dir.path().join("app/script.py"),
        "import os, sys\nprint(os.environ['PYTHONPATH'], os.getcwd())\nsys.exit(4)\n",
    )
    .unwrap();
    let app = d.dir.path().join("app").display().to_string();
    let out = sandbox
        .exec_with("python3", |e| {
            e.args(["script.py"])
                .cwd(&app)
                .env("PYTHONPATH", format!("{app}/lib"))
                .timeout(Duration::from_secs(30))
        })
        .await
        .unwrap();
    assert_eq!(out.stdout(), format!("{app}/lib {app}\n"));
    assert_eq!((out.code(), out.success()), (4, false));

    // stdin bytes, tty, rlimit, user.
    let out = sandbox
        .exec_with("cat", |e| e.stdin_bytes("fed"))
        .await
        .unwrap();
    assert_eq!(out.stdout(), "fed");
    let out = sandbox
        .exec_with("test -t 0 && test -t 1 && echo tty", |e| e.tty(true))
        .await
        .unwrap();
    assert_eq!(out.stdout().trim(), "tty");
    let out = sandbox
        .exec_with("ulimit -n", |e| {
            e.rlimit(RlimitResource::Nofile, 77).user("root")
        })
        .await
        .unwrap();
    assert_eq!(out.stdout(), "77\n");
    let out = sandbox
        .exec_with("sleep 5", |e| e.timeout_ms(200).stdin_null())
        .await
        .unwrap();
    assert_eq!(out.status().status, ProcessStatus::TimedOut);

    let out = sandbox
        .shell("echo a | tr a b && echo done >&2")
        .await
        .unwrap();
    assert_eq!(
        (out.stdout().as_str(), out.stderr().as_str()),
        ("b\n", "done\n")
    );
    // Binary output survives.
    let out = sandbox.shell("printf '\\377\\376'").await.unwrap();
    assert_eq!(out.stdout_bytes(), [0xff, 0xfe]);
    sandbox.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_microsandbox_exec_stream_handle() {
    let d = Daemon::start();
    let sandbox = sandbox(&d).await;
    let log = d.dir.path().join("app.log");
    std::fs::write(&log, "first\n").unwrap();
    // tail -f, iterated as a Stream until we have seen enough, then killed.
    let mut handle = sandbox
        .exec_stream("tail", ["-f", &log.display().to_string()])
        .await
        .unwrap();
    let mut seen = String::new();
    let mut started = false;
    while let Some(event) = handle.next().await {
        match event {
            ExecEvent::Started { pid } => started = pid > 0,
            ExecEvent::Stdout(data) => {
                seen.push_str(&String::from_utf8_lossy(&data));
                if seen.contains("first") {
                    break;
                }
            }
            ExecEvent::Exited { .. } => break,
            _ => {}
        }
    }
    assert!(started && seen.contains("first"));
    handle.kill().await.unwrap();
    let status = handle.wait().await.unwrap();
    assert_eq!((status.code, status.success), (137, false));

    // stdin pipe through take_stdin, then collect.
    let mut h = sandbox
        .exec_stream_with("cat", sandpit::ExecOptionsBuilder::stdin_pipe)
        .await
        .unwrap();
    let stdin = h.take_stdin().unwrap();
    assert!(h.take_stdin().is_none());
    stdin.write("hi\n").await.unwrap();
    stdin.write(b"there\n".as_slice()).await.unwrap();
    stdin.close().await.unwrap();
    let out = h.collect().await.unwrap();
    assert_eq!(out.stdout(), "hi\nthere\n");

    // recv() and signal().
    let mut h = sandbox
        .shell_stream("trap 'echo got-int; exit 5' INT; echo ready; while :; do sleep 0.05; done")
        .await
        .unwrap();
    loop {
        match h.recv().await.unwrap() {
            ExecEvent::Stdout(d) if String::from_utf8_lossy(&d).contains("ready") => break,
            _ => {}
        }
    }
    h.signal("INT").await.unwrap();
    let out = h.collect().await.unwrap();
    assert_eq!((out.code(), out.stdout().as_str()), (5, "got-int\n"));

    let mut h = sandbox.shell_stream("exit 3").await.unwrap();
    assert_eq!(h.wait().await.unwrap().code, 3);
    assert!(h.recv().await.is_none());
    sandbox.kill().await.unwrap();
}

// ---------------------------------------------------------------- seed 004: Hyperbrowser

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_hyperbrowser_exec_and_processes() {
    let d = Daemon::start();
    let sandbox = sandbox(&d).await;
    let result = sandbox.exec("python3 -V", NO_ARGS).await.unwrap();
    assert_eq!(result.exit_code(), 0);
    assert!(result.stdout().trim().starts_with("Python 3"));
    assert_eq!(result.stderr().trim(), "");

    let result = sandbox
        .exec("pwd && echo $FOO && whoami", NO_ARGS)
        .cwd("/tmp")
        .env("FOO", "bar")
        .timeout_ms(5_000)
        .run_as("root")
        .await
        .unwrap();
    assert_eq!(result.stdout(), "/tmp\nbar\nroot\n");

    // Start a background process, feed stdin with EOF, wait.
    let process = sandbox
        .processes()
        .start("read line; echo stdout:$line; echo stderr:$line 1>&2")
        .run_as("root")
        .await
        .unwrap();
    process.write_stdin("hello\n", true).await.unwrap();
    let result = process.wait().await.unwrap();
    assert_eq!(result.stdout, "stdout:hello\n");
    assert_eq!(result.stderr, "stderr:hello\n");

    // Get, list and signal.
    let process = sandbox
        .processes()
        .start("sleep 30")
        .run_as("root")
        .await
        .unwrap();
    let fetched = sandbox.get_process(process.id()).await.unwrap();
    let listing = sandbox
        .processes()
        .list()
        .status(ProcessStatus::Running)
        .limit(20)
        .await
        .unwrap();
    assert!(listing.iter().any(|p| p.id == process.id()));
    assert!(listing.iter().all(|p| p.status == ProcessStatus::Running));
    fetched.signal("TERM").await.unwrap();
    let result = fetched.result().await.unwrap();
    assert_eq!(result.status, ProcessStatus::Killed);

    // Stream stdout and stderr as server-sent events.
    let process = sandbox
        .processes()
        .start("echo stream-out; sleep 0.1; echo stream-err 1>&2")
        .await
        .unwrap();
    let mut events = Vec::new();
    let mut stream = std::pin::pin!(process.stream());
    while let Some(event) = stream.next().await {
        match event.unwrap() {
            ProcessStreamEvent::Exit { result } => {
                assert_eq!(result.exit_code, 0);
                assert_eq!(result.stdout, "stream-out\n");
                break;
            }
            ProcessStreamEvent::Stdout { data, .. } => events.push(("stdout", data)),
            ProcessStreamEvent::Stderr { data, .. } => events.push(("stderr", data)),
            ProcessStreamEvent::Lost { .. } => {}
        }
    }
    assert_eq!(
        events,
        vec![
            ("stdout", "stream-out\n".into()),
            ("stderr", "stream-err\n".into())
        ]
    );
    sandbox.kill().await.unwrap();
}

// ---------------------------------------------------------------- resume after a cut

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_stream_resumes_from_the_last_seq() {
    let d = Daemon::start();
    let sandbox = sandbox(&d).await;
    let h = sandbox
        .commands()
        .run("for i in $(seq 1 40); do echo line-$i; sleep 0.02; done")
        .background()
        .await
        .unwrap();
    // Cut the first two event streams 600 bytes in (headers + `started` + a few chunks).
    let (proxy, cuts) = common::cutting_proxy(d.url.clone(), "/events", 2, 900).await;
    let via = Client::new(&proxy, &d.key).unwrap();
    let sbx2 = Sandbox::get(&via, sandbox.id()).await.unwrap();
    let (seen, on_stdout) = collector();
    let r = sbx2
        .commands()
        .connect(h.id())
        .wait()
        .on_stdout(on_stdout)
        .await
        .unwrap();
    let expect: String = (1..=40).map(|i| format!("line-{i}\n")).collect();
    assert_eq!(r.stdout, expect);
    assert_eq!(
        seen.lock().unwrap().concat(),
        expect,
        "every chunk exactly once"
    );
    assert_eq!(
        cuts.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "the stream was cut twice"
    );

    // A stream that is cut every time is reported as Error::Sandbox.
    let h = sandbox
        .commands()
        .run("sleep 0.5; echo x; sleep 30")
        .background()
        .await
        .unwrap();
    let (proxy, _) = common::cutting_proxy(d.url.clone(), "/events", usize::MAX, 10).await;
    let via = Client::new(&proxy, &d.key).unwrap();
    let sbx3 = Sandbox::get(&via, sandbox.id()).await.unwrap();
    let e = sbx3
        .commands()
        .connect(h.id())
        .wait()
        .on_stdout(|_| {})
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Sandbox { .. }), "{e}");
    h.kill().await.unwrap();
    sandbox.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_websocket_session_resumes() {
    let d = Daemon::start();
    let sandbox = sandbox(&d).await;
    let h = sandbox
        .commands()
        .run("read x; for i in $(seq 1 30); do echo $x-$i; sleep 0.02; done")
        .background()
        .await
        .unwrap();
    h.send_stdin("w\n").await.unwrap();
    let (proxy, cuts) = common::cutting_proxy(d.url.clone(), "/ws", 1, 400).await;
    let via = Client::new(&proxy, &d.key).unwrap();
    let sbx2 = Sandbox::get(&via, sandbox.id()).await.unwrap();
    let s = sbx2.commands().connect(h.id()).session().await.unwrap();
    let r = s.wait().await.unwrap();
    let expect: String = (1..=30).map(|i| format!("w-{i}\n")).collect();
    assert_eq!(r.stdout, expect);
    assert_eq!(cuts.load(std::sync::atomic::Ordering::SeqCst), 1);
    sandbox.kill().await.unwrap();
}

/// `Process::stream` reads the WebSocket session: a cut socket resumes (the proxy cuts the first `/ws`
/// connection `after` bytes in), and a socket that cannot be opened at all (cut at 0 bytes: a proxy that
/// drops the upgrade) leaves the stream to SSE. Either way every line arrives once.
async fn stream_through_cutting_ws_proxy(after: usize) {
    let d = Daemon::start();
    let sandbox = sandbox(&d).await;
    let (proxy, cuts) = common::cutting_proxy(d.url.clone(), "/ws", 1, after).await;
    let via = Client::new(&proxy, &d.key).unwrap();
    let sbx2 = Sandbox::get(&via, sandbox.id()).await.unwrap();
    let process = sbx2
        .processes()
        .start("for i in $(seq 1 30); do echo s-$i; sleep 0.02; done")
        .await
        .unwrap();
    let mut text = String::new();
    let mut exit = None;
    let mut stream = std::pin::pin!(process.stream());
    while let Some(event) = stream.next().await {
        match event.unwrap() {
            ProcessStreamEvent::Stdout { data, .. } => text.push_str(&data),
            ProcessStreamEvent::Exit { result } => exit = Some(result.stdout),
            _ => {}
        }
    }
    let expect: String = (1..=30).map(|i| format!("s-{i}\n")).collect();
    assert_eq!(text, expect);
    assert_eq!(exit.as_deref(), Some(expect.as_str()));
    assert_eq!(cuts.load(std::sync::atomic::Ordering::SeqCst), 1);
    sandbox.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_stream_reads_the_websocket_and_resumes_it() {
    stream_through_cutting_ws_proxy(400).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_stream_falls_back_to_sse_when_no_socket_opens() {
    stream_through_cutting_ws_proxy(0).await;
}

// ---------------------------------------------------------------- templates

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_import_list_get_wait_and_delete() {
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    if !root {
        sandpit_testkit::skip(format_args!(
            "templates need the isolate backend, which needs root"
        ));
        return;
    }
    let d = Daemon::start_with_backend("isolate");
    let t = d.client().templates();
    let rootfs = d.dir.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("etc/hostname"), "mini\n").unwrap();
    let build = t
        .start("mini", TemplateSource::Dir(rootfs.to_str().unwrap().into()))
        .await
        .unwrap();
    assert_eq!(build.name, "mini");
    let mut lines = Vec::new();
    let info = t.wait("mini", |l| lines.push(l.to_owned())).await.unwrap();
    assert_eq!(info.name, "mini");
    assert!(t.list().await.unwrap().iter().any(|x| x.name == "mini"));
    assert_eq!(t.get("mini").await.unwrap().name, "mini");
    // Templates are immutable: the same name again is a conflict.
    let again = t
        .start("mini", TemplateSource::Dir(rootfs.to_str().unwrap().into()))
        .await;
    assert!(
        matches!(again, Err(sandpit::Error::Conflict(_))),
        "{again:?}"
    );
    // A source that does not exist fails the build, with the daemon's reason.
    let bad = t
        .import("nope", TemplateSource::Tar("/no/such.tar".into()))
        .await;
    assert!(
        matches!(
            bad,
            Err(sandpit::Error::TemplateBuild { .. } | sandpit::Error::InvalidArgument(_))
        ),
        "{bad:?}"
    );
    t.delete("mini").await.unwrap();
    assert!(matches!(
        t.get("mini").await,
        Err(sandpit::Error::NotFound(_))
    ));
}

/// A template holding only a static busybox and a `user`: small enough to export in a test.
fn busybox_rootfs(dir: &std::path::Path) -> std::path::PathBuf {
    let root = dir.join("busybox-rootfs");
    for d in ["bin", "etc", "tmp", "home/user"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for applet in ["sh", "cat", "echo", "test"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\nuser:x:1000:\n").unwrap();
    root
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_fork_export_and_import_archive() {
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    if !root {
        sandpit_testkit::skip(format_args!(
            "snapshots need the isolate backend, which needs root"
        ));
        return;
    }
    let d = Daemon::start_with_backend("isolate");
    let client = d.client();
    let t = client.templates();
    let rootfs = busybox_rootfs(d.dir.path());
    t.import("bb", TemplateSource::Dir(rootfs.to_str().unwrap().into()))
        .await
        .unwrap();
    // A warm pool of one: filled in the background, claimed by a create that keeps its env.
    assert_eq!(t.set_pool("bb", 1).await.unwrap().size, 1);
    sandpit_testkit::eventually(
        "the pool to fill",
        std::time::Duration::from_secs(30),
        || async {
            t.pool("bb")
                .await
                .ok()
                .filter(|p| p.ready == 1 && p.filling == 0)
        },
    )
    .await;
    let pooled = Sandbox::create()
        .client(&client)
        .template("bb")
        .env("FROM", "pool")
        .await
        .unwrap();
    let out = pooled.exec("echo $FROM", NO_ARGS).await.unwrap();
    assert_eq!(out.stdout(), "pool\n");
    pooled.kill().await.unwrap();
    t.set_pool("bb", 0).await.unwrap();
    sandpit_testkit::eventually(
        "the pool to empty",
        std::time::Duration::from_secs(30),
        || async {
            t.pool("bb")
                .await
                .ok()
                .filter(|p| p.ready == 0 && p.filling == 0)
        },
    )
    .await;
    let sbx = Sandbox::create()
        .client(&client)
        .template("bb")
        .await
        .unwrap();
    let run = |s: &Sandbox, cmd: &str| {
        let (s, cmd) = (s.clone(), cmd.to_owned());
        async move {
            let out = s.exec(&cmd, NO_ARGS).await.unwrap();
            assert_eq!(out.code(), 0, "{cmd}: {}", out.stderr());
            out.stdout()
        }
    };
    run(&sbx, "echo before > /home/user/f").await;
    let snap = sbx.snapshot("snap").await.unwrap();
    assert_eq!(snap.template.name, "snap");
    assert_eq!(snap.template.parent.as_deref(), Some("bb"));
    run(&sbx, "echo after > /home/user/g").await;

    let from_snap = Sandbox::create()
        .client(&client)
        .template("snap")
        .await
        .unwrap();
    assert_eq!(run(&from_snap, "cat /home/user/f").await, "before\n");
    assert_eq!(
        run(&from_snap, "test -e /home/user/g || echo absent").await,
        "absent\n"
    );
    // In use: not deleted.
    assert!(matches!(t.delete("snap").await, Err(Error::Conflict(_))));

    let fork = sbx
        .fork(2, Sandbox::create().metadata("branch", "b"))
        .await
        .unwrap();
    assert_eq!(fork.sandboxes.len(), 2);
    assert!(fork.snapshot.template.auto_remove);
    for (i, f) in fork.sandboxes.iter().enumerate() {
        assert_eq!(f.cached_info().metadata["branch"], "b");
        assert_eq!(run(f, "cat /home/user/g").await, "after\n");
        run(f, &format!("echo {i} > /home/user/mine")).await;
    }
    assert_eq!(run(&fork.sandboxes[1], "cat /home/user/mine").await, "1\n");
    assert!(matches!(
        sbx.fork(0, Sandbox::create()).await,
        Err(Error::InvalidArgument(_))
    ));

    // Volumes: one made, mounted by a sandbox, its data there for the next one; kept while mounted.
    let vols = client.volumes();
    let v = vols.create("vol", 16).await.unwrap();
    assert_eq!((v.name.as_str(), v.size_mb), ("vol", 16));
    let w = Sandbox::create()
        .client(&client)
        .template("bb")
        .volume("vol", "/data")
        .await
        .unwrap();
    run(&w, "echo kept > /data/f").await;
    assert_eq!(
        vols.get("vol").await.unwrap().mounted_by,
        vec![w.id().to_owned()]
    );
    assert!(matches!(vols.delete("vol").await, Err(Error::Conflict(_))));
    w.kill().await.unwrap();
    let r = Sandbox::create()
        .client(&client)
        .template("bb")
        .volume_read_only("vol", "/ro")
        .await
        .unwrap();
    assert_eq!(run(&r, "cat /ro/f").await, "kept\n");
    r.kill().await.unwrap();
    assert!(vols.list().await.unwrap().iter().any(|x| x.name == "vol"));
    vols.delete("vol").await.unwrap();
    assert!(matches!(vols.get("vol").await, Err(Error::NotFound(_))));

    // Export to a file, import it under another name: same files.
    let file = d.dir.path().join("snap.tar.zst");
    let size = t.export_to_file("snap", &file).await.unwrap();
    assert_eq!(size, std::fs::metadata(&file).unwrap().len());
    assert!(size > 0);
    let moved = t.import_archive("moved", &file).await.unwrap();
    assert_eq!(moved.name, "moved");
    assert_eq!(moved.parent, None);
    let from_file = Sandbox::create()
        .client(&client)
        .template("moved")
        .await
        .unwrap();
    assert_eq!(run(&from_file, "cat /home/user/f").await, "before\n");

    for s in fork.sandboxes.iter().chain([&sbx, &from_snap, &from_file]) {
        s.kill().await.unwrap();
    }
    for name in ["moved", "snap", "bb"] {
        t.delete(name).await.unwrap();
    }
    // The fork's snapshot went with its last sandbox.
    assert!(
        !t.list()
            .await
            .unwrap()
            .iter()
            .any(|x| x.name == fork.snapshot.template.name)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_with_a_stdin_pipe_streams_instead_of_failing() {
    let d = Daemon::start();
    let sandbox = sandbox(&d).await;
    // `POST /exec` refuses a pipe nothing could write to; the SDK streams and closes it at once.
    let out = sandbox
        .exec("cat", NO_ARGS)
        .with(sandpit::ExecOptionsBuilder::stdin_pipe)
        .await
        .unwrap();
    assert_eq!((out.code(), out.stdout().as_str()), (0, ""));
    let out = sandbox
        .exec("echo ok", NO_ARGS)
        .with(|b| b.stdin_pipe().timeout_ms(5_000))
        .await
        .unwrap();
    assert_eq!(out.stdout(), "ok\n");
    sandbox.kill().await.unwrap();
}

// ---------------------------------------------------------------- network and ports

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_policy_and_exposed_ports() {
    use sandpit::types::network::{Egress, NetworkPolicy};
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    // Policies need the isolate backend (root); ports work with either.
    let d = if root {
        Daemon::start_with_backend("isolate")
    } else {
        sandpit_testkit::skip(format_args!(
            "policy half: network policies need the isolate backend, which needs root"
        ));
        Daemon::start()
    };
    let client = d.client();
    let mut builder = Sandbox::create().client(&client);
    if root {
        builder = builder.network(NetworkPolicy {
            egress: Some(Egress::Deny),
            allow_out: vec!["pypi.org".into(), "10.0.0.0/8".into()],
            deny_out: vec![],
        });
    }
    let sbx = builder.await.unwrap();
    if root {
        let p = sbx.network().await.unwrap();
        assert_eq!(p.egress, Some(Egress::Deny));
        assert_eq!(p.allow_out, ["pypi.org", "10.0.0.0/8"]);
        let p = sbx
            .set_network(NetworkPolicy {
                egress: Some(Egress::Allow),
                allow_out: vec![],
                deny_out: vec!["*.example.com".into()],
            })
            .await
            .unwrap();
        assert_eq!(p.egress, Some(Egress::Allow));
        let err = sbx
            .set_network(NetworkPolicy {
                allow_out: vec!["10.0.0.1/8".into()],
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::InvalidArgument), "{err}");
        assert!(err.to_string().contains("10.0.0.1/8"), "{err}");
    }

    // A server bound to loopback inside the sandbox, reached through a private preview URL.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    sbx.processes()
        .start(format!("python3 -m http.server {port} --bind 127.0.0.1"))
        .stdin_null()
        .await
        .unwrap();
    let daemon_port = d.url.rsplit(':').next().unwrap().to_owned();
    let host = sbx.get_host(port);
    assert_eq!(host, format!("{port}-{}.localhost:{daemon_port}", sbx.id()));
    let exposed = sbx.expose_port(port, false).await.unwrap();
    assert_eq!(exposed.url, format!("http://{host}/"));
    let token = exposed.token.clone().unwrap();
    let http = reqwest::Client::builder()
        .resolve(
            host.split(':').next().unwrap(),
            std::net::SocketAddr::from(([127, 0, 0, 1], daemon_port.parse().unwrap())),
        )
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = http
            .get(&exposed.url)
            .header("X-Sandpit-Token", &token)
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            break;
        }
        assert_eq!(r.status(), 502, "{}", r.text().await.unwrap());
        assert!(Instant::now() < deadline, "the server never answered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(http.get(&exposed.url).send().await.unwrap().status(), 401);
    assert_eq!(sbx.ports().await.unwrap().len(), 1);
    sbx.close_port(port).await.unwrap();
    let r = http
        .get(&exposed.url)
        .header("X-Sandpit-Token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    sbx.kill().await.unwrap();
}

// ---------------------------------------------------------------- keys

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_made_scoped_listed_and_revoked() {
    use sandpit::{CreateKeyRequest, Scope};
    let d = Daemon::start();
    let admin = d.client();
    let req = |name: &str, scopes: Vec<Scope>| CreateKeyRequest {
        name: name.into(),
        scopes,
        tenant: None,
        expires_in: None,
    };
    let reader = admin
        .keys()
        .create(&req("reader", vec![Scope::Read]))
        .await
        .unwrap();
    let bot = admin
        .keys()
        .create(&req("bot", vec![Scope::Sandboxes]))
        .await
        .unwrap();
    assert!(bot.key.starts_with("sp_"), "{}", bot.key);
    assert_eq!(bot.info.tenant, "default");
    let listed = admin.keys().list().await.unwrap();
    let names: Vec<&str> = listed.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names, ["reader", "bot"]);

    // The read key lists but cannot create; the sandboxes key creates and runs but cannot manage keys.
    let as_reader = Client::new(&d.url, &reader.key).unwrap();
    as_reader.list_sandboxes().await.unwrap();
    let e = Sandbox::create().client(&as_reader).await.unwrap_err();
    assert!(matches!(e, Error::PermissionDenied(_)), "{e:?}");
    let as_bot = Client::new(&d.url, &bot.key).unwrap();
    let sbx = Sandbox::create().client(&as_bot).await.unwrap();
    let out = sbx.commands().run("echo hi").await.unwrap();
    assert_eq!(out.stdout, "hi\n");
    let e = as_bot.keys().list().await.unwrap_err();
    assert!(matches!(e, Error::PermissionDenied(_)), "{e:?}");

    // Revocation: the very next call is refused.
    admin.keys().revoke(&bot.info.id).await.unwrap();
    let e = as_bot.list_sandboxes().await.unwrap_err();
    assert!(matches!(e, Error::Authentication(_)), "{e:?}");
    let e = admin.keys().revoke("k_nope").await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::NotFound), "{e:?}");
    let e = admin
        .keys()
        .create(&req("bad name", vec![Scope::Read]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidArgument), "{e:?}");
    // The sandbox outlives its maker's key: an admin still reaches it.
    // Its access token (from create) opens it and nothing else; rotation ends the old one.
    let token = sbx
        .cached_info()
        .access_token
        .clone()
        .expect("create returns an access token");
    let scoped = Client::new(&d.url, &token).unwrap();
    let mine = scoped.connect(sbx.id()).await.unwrap();
    assert_eq!(
        mine.commands().run("echo scoped").await.unwrap().stdout,
        "scoped\n"
    );
    let e = scoped.list_sandboxes().await.unwrap_err();
    assert!(matches!(e, Error::PermissionDenied(_)), "{e:?}");
    let owned = admin.connect(sbx.id()).await.unwrap();
    let fresh = owned.rotate_access_token().await.unwrap();
    assert_ne!(fresh, token);
    let e = mine.commands().run("true").await.unwrap_err();
    assert!(matches!(e, Error::Authentication(_)), "{e:?}");
    let renewed = Client::new(&d.url, &fresh).unwrap();
    renewed.connect(sbx.id()).await.unwrap();
    admin.connect(sbx.id()).await.unwrap().kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_quotas_are_set_read_and_refuse_a_create() {
    use sandpit::{CreateKeyRequest, ErrorCode, Scope, TenantQuotas};
    let d = Daemon::start();
    let admin = d.client();
    let t = admin
        .tenants()
        .set_quotas(
            "rs-quota",
            &TenantQuotas {
                max_sandboxes: Some(1),
                max_memory_mb: Some(256),
                ..TenantQuotas::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(t.quotas.max_sandboxes, Some(1));
    assert_eq!(t.usage.sandboxes, 0);
    let bot = admin
        .keys()
        .create(&CreateKeyRequest {
            name: "rs-quota-bot".into(),
            scopes: vec![Scope::Sandboxes],
            tenant: Some("rs-quota".into()),
            expires_in: None,
        })
        .await
        .unwrap();
    let as_bot = Client::new(&d.url, &bot.key).unwrap();
    let sbx = Sandbox::create()
        .client(&as_bot)
        .memory_mb(128)
        .await
        .unwrap();
    let e = Sandbox::create()
        .client(&as_bot)
        .memory_mb(64)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::QuotaExceeded), "{e:?}");
    assert_eq!(e.api().and_then(|a| a.retry_after), Some(5), "{e:?}");
    assert!(e.to_string().contains("max_sandboxes quota (1)"), "{e}");
    let own = as_bot.tenants().get("rs-quota").await.unwrap();
    assert_eq!((own.usage.sandboxes, own.usage.memory_mb), (1, 128));
    let e = as_bot.tenants().get("default").await.unwrap_err();
    assert!(matches!(e, Error::NotFound(_)), "{e:?}");
    let e = as_bot
        .tenants()
        .set_quotas("rs-quota", &TenantQuotas::default())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::PermissionDenied(_)), "{e:?}");
    sbx.kill().await.unwrap();
    // The rate: one create per 10 s.
    admin
        .tenants()
        .set_quotas(
            "rs-quota",
            &TenantQuotas {
                max_creates_per_second: Some(0.1),
                ..TenantQuotas::default()
            },
        )
        .await
        .unwrap();
    let first = Sandbox::create().client(&as_bot).await.unwrap();
    let e = Sandbox::create().client(&as_bot).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::RateLimited), "{e:?}");
    assert!(
        e.api()
            .and_then(|a| a.retry_after)
            .is_some_and(|s| (1..=10).contains(&s)),
        "{e:?}"
    );
    first.kill().await.unwrap();
    let names: Vec<String> = admin
        .tenants()
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert!(names.contains(&"rs-quota".to_owned()), "{names:?}");
    let cleared = admin
        .tenants()
        .set_quotas("rs-quota", &TenantQuotas::default())
        .await
        .unwrap();
    assert!(cleared.quotas.is_unlimited());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_names_who_ran_what() {
    use sandpit::AuditQuery;
    let d = Daemon::start();
    let admin = d.client();
    let sbx = Sandbox::create().client(&admin).await.unwrap();
    sbx.commands().run("echo audited").await.unwrap();
    let q = AuditQuery {
        sandbox: Some(sbx.id().to_owned()),
        ..AuditQuery::default()
    };
    // Written off the request path: poll.
    let mut page = admin.audit().list(&q).await.unwrap();
    for _ in 0..100 {
        if page
            .entries
            .iter()
            .any(|e| e.action == "process.start" || e.action == "process.exec")
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        page = admin.audit().list(&q).await.unwrap();
    }
    let ran = page
        .entries
        .iter()
        .find(|e| e.action == "process.start" || e.action == "process.exec")
        .unwrap_or_else(|| panic!("no exec in {page:?}"));
    assert!(
        ran.detail
            .as_deref()
            .unwrap_or_default()
            .contains("echo audited"),
        "{ran:?}"
    );
    assert_eq!((ran.key_id.as_str(), ran.outcome.as_str()), ("file", "ok"));
    assert_eq!(page.entries[0].action, "sandbox.create");
    let one = admin
        .audit()
        .list(&AuditQuery {
            limit: Some(1),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(one.entries.len(), 1);
    assert!(one.next_after.is_some());
    let e = admin
        .audit()
        .list(&AuditQuery {
            since: Some("yesterday".into()),
            ..AuditQuery::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
    sbx.kill().await.unwrap();
}
