//! End-to-end tests of the client verbs: the real `sandpit` binary against a real
//! `sandpit serve --backend process`, `attach` driven through a real pseudo-terminal.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_sandpit");

/// A daemon on a free port with its own state directory; its sandboxes are deleted on drop.
struct Daemon {
    serve: sandpit_testkit::Serve,
    url: String,
    key: String,
    dir: tempfile::TempDir,
}

impl Daemon {
    fn start() -> Self {
        Self::start_with_backend("process")
    }

    fn start_with_backend(backend: &str) -> Self {
        Self::start_with_args(backend, &[])
    }

    fn start_with_args(backend: &str, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let serve = sandpit_testkit::Serve::builder(BIN, dir.path())
            .backend(backend)
            .args(extra.iter().copied())
            .arg("--import-root")
            .arg(std::env::temp_dir().display().to_string())
            .log(dir.path().join("daemon.log"))
            .start_blocking();
        Self {
            url: serve.base.clone(),
            key: serve.key.clone(),
            serve,
            dir,
        }
    }

    /// `sandpit ARGS` configured for this daemon through the environment.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("SANDPIT_URL", &self.url)
            .env("SANDPIT_API_KEY", &self.key)
            .env_remove("SANDPIT_STATE_DIR");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).stdin(Stdio::null()).output().unwrap()
    }

    /// Runs and requires success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "sandpit {args:?} failed ({:?}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        serde_json::from_str(&self.ok(args)).unwrap()
    }

    fn create(&self) -> String {
        self.ok(&["create"]).trim().to_owned()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(o) = self.cmd(&["ls", "--json"]).output() {
            if let Ok(Value::Array(list)) = serde_json::from_slice::<Value>(&o.stdout) {
                for s in list {
                    let _ = self.cmd(&["rm", s["id"].as_str().unwrap_or("")]).output();
                }
            }
        }
        self.serve.stop(Duration::from_secs(5));
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn create_ls_info_pause_resume_rm() {
    let d = Daemon::start();
    let info = d.json(&[
        "create",
        "--memory",
        "256",
        "--timeout",
        "600",
        "-e",
        "A=1",
        "-m",
        "suite=cli",
        "--json",
    ]);
    let id = info["id"].as_str().unwrap().to_owned();
    assert_eq!(info["memory_mb"], 256);
    assert_eq!(info["env"]["A"], "1");
    let other = d.create();
    assert_eq!(other.len(), id.len());

    let table = d.ok(&["ls"]);
    assert!(table.starts_with("ID"), "{table}");
    assert!(table.contains(&id) && table.contains(&other));
    let filtered = d.json(&["ls", "-m", "suite=cli", "--json"]);
    assert_eq!(filtered.as_array().unwrap().len(), 1);
    assert_eq!(filtered[0]["id"], id.as_str());

    let human = d.ok(&["info", &id]);
    assert!(
        human.contains("state:       running") && human.contains("metadata:    suite=cli"),
        "{human}"
    );
    assert_eq!(d.json(&["info", &id, "--json"])["state"], "running");

    // Without a PID, `logs` prints the sandbox agent's own log.
    let log = d.ok(&["logs", &id]);
    assert!(log.contains("agent listening"), "{log}");
    assert_eq!(d.ok(&["logs", &id, "--tail-bytes", "10"]).len(), 10);
    let o = d.run(&["logs", &id, "--tail-bytes", "99999999"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("tail_bytes"),
        "{}",
        text(&o.stderr)
    );

    assert!(d.ok(&["pause", &id]).contains("paused"));
    assert_eq!(d.json(&["info", &id, "--json"])["state"], "paused");
    assert_eq!(d.json(&["resume", &id, "--json"])["state"], "running");

    d.ok(&["rm", &id, &other]);
    assert_eq!(d.json(&["ls", "--json"]), Value::Array(vec![]));
    let o = d.run(&["info", &id]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("not found"), "{}", text(&o.stderr));
}

#[test]
fn exec_streams_live_and_passes_the_exit_code_through() {
    let d = Daemon::start();
    let id = d.create();
    let o = d.run(&[
        "exec",
        &id,
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 7",
    ]);
    assert_eq!(o.status.code(), Some(7));
    assert_eq!(text(&o.stdout), "out\n");
    assert_eq!(text(&o.stderr), "err\n");

    // One word is a shell command line; options go before `--`.
    let o = d.ok(&[
        "exec",
        "-w",
        "/tmp",
        "-e",
        "FOO=bar",
        &id,
        "--",
        "echo $FOO; pwd",
    ]);
    assert_eq!(o, "bar\n/tmp\n");

    // stdin with -i.
    let mut child = d
        .cmd(&["exec", "-i", &id, "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"piped\n").unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        (o.status.code(), text(&o.stdout)),
        (Some(0), "piped\n".to_owned())
    );

    // Output arrives while the command still runs.
    let mut child = d
        .cmd(&["exec", &id, "--", "echo first; sleep 3; echo second"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let mut out = child.stdout.take().unwrap();
    let mut buf = [0u8; 6];
    out.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"first\n");
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "not streamed: {:?}",
        t0.elapsed()
    );
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "second\n");
    assert!(child.wait().unwrap().success());

    // Killed by a signal: 128 + n; not found: 127; a timeout names itself.
    let o = d.run(&["exec", &id, "--", "kill -KILL $$"]);
    assert_eq!(o.status.code(), Some(137));
    let o = d.run(&["exec", &id, "--", "no-such-program-xyz", "arg"]);
    assert_eq!(o.status.code(), Some(127));
    assert!(!text(&o.stderr).is_empty());
    let o = d.run(&["exec", "--cmd-timeout", "0.3", &id, "--", "sleep 5"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(text(&o.stderr).contains("sleep 5"), "{}", text(&o.stderr));
}

#[test]
fn run_creates_execs_and_deletes() {
    let d = Daemon::start();
    let o = d.run(&[
        "run",
        "-e",
        "GREETING=hi",
        "--",
        "python3",
        "-c",
        "import os; print(os.environ['GREETING']); exit(3)",
    ]);
    assert_eq!(
        (o.status.code(), text(&o.stdout)),
        (Some(3), "hi\n".to_owned())
    );
    assert_eq!(d.json(&["ls", "--json"]), Value::Array(vec![]));
    let o = d.run(&["run", "--keep", "--memory", "128", "--", "true"]);
    assert!(o.status.success());
    let kept = text(&o.stderr);
    let id = kept.trim().rsplit(' ').next().unwrap();
    assert_eq!(d.json(&["info", id, "--json"])["memory_mb"], 128);
}

#[test]
fn ps_logs_kill() {
    let d = Daemon::start();
    let id = d.create();
    // Start a background process through the SDK (the CLI's way is `attach` + detach).
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = sandpit::Client::new(&d.url, &d.key).unwrap();
    let pid = rt.block_on(async {
        let sbx = sandpit::Sandbox::get(&client, &id).await.unwrap();
        let p = sbx
            .processes()
            .start("echo l1; sleep 0.1; echo e1 >&2; sleep 0.1; echo l2; sleep 60")
            .id("bg-1")
            .await
            .unwrap();
        // Wait until the three chunks are there.
        let end = Instant::now() + Duration::from_secs(10);
        let mut p = p;
        while p.refresh().await.unwrap().last_seq < 3 && Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        p.pid()
    });

    let table = d.ok(&["ps", &id]);
    assert!(
        table.contains("bg-1") && table.contains("running"),
        "{table}"
    );
    let list = d.json(&["ps", &id, "--status", "running", "--limit", "5", "--json"]);
    assert_eq!(list[0]["id"], "bg-1");
    assert_eq!(list[0]["pid"], pid);

    // Without --follow: what is there now, then return.
    let o = d.run(&["logs", &id, "bg-1"]);
    assert!(o.status.success());
    assert_eq!(
        (text(&o.stdout), text(&o.stderr)),
        ("l1\nl2\n".into(), "e1\n".into())
    );
    let o = d.run(&["logs", "--from-seq", "3", &id, &pid.to_string()]);
    assert_eq!(text(&o.stdout), "l2\n");

    // --follow ends when the process does; the signal reaches it.
    let follower = d
        .cmd(&["logs", "--follow", &id, "bg-1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    d.ok(&["kill", "--signal", "TERM", &id, "bg-1"]);
    let o = follower.wait_with_output().unwrap();
    assert!(o.status.success());
    assert_eq!(text(&o.stdout), "l1\nl2\n");
    let info = d.json(&["ps", &id, "--json"]);
    assert_eq!(info[0]["status"], "killed");
    assert_eq!(info[0]["signal"], "SIGTERM");

    // kill of an ended process says so; kill of a running one kills it.
    let o = d.run(&["kill", &id, "bg-1"]);
    assert!(o.status.success());
    assert!(text(&o.stderr).contains("already ended"));
    let o = d.run(&["kill", "-s", "NOPE", &id, "bg-1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("invalid argument") || text(&o.stderr).contains("conflict"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn errors_name_the_problem_and_exit_non_zero() {
    let d = Daemon::start();
    let o = d.run(&["info", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).starts_with("sandpit: error: "),
        "{}",
        text(&o.stderr)
    );
    assert!(text(&o.stderr).contains("nope"));

    let o = d
        .cmd(&["ls"])
        .env("SANDPIT_API_KEY", "wrong")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("authentication"),
        "{}",
        text(&o.stderr)
    );
    // The global flags win over the environment.
    let o = d
        .cmd(&["--api-key", &d.key, "ls", "--url", &d.url])
        .env("SANDPIT_API_KEY", "wrong")
        .env("SANDPIT_URL", "http://127.0.0.1:9")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));

    // Without a key, the client finds the daemon's key file: $SANDPIT_STATE_DIR, then XDG_DATA_HOME.
    let o = d
        .cmd(&["ls"])
        .env_remove("SANDPIT_API_KEY")
        .env("SANDPIT_STATE_DIR", d.dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    let xdg = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(xdg.path().join("sandpit")).unwrap();
    std::fs::write(xdg.path().join("sandpit/api-key"), format!("{}\n", d.key)).unwrap();
    let o = d
        .cmd(&["ls"])
        .env_remove("SANDPIT_API_KEY")
        .env("XDG_DATA_HOME", xdg.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    // No key anywhere: the error says where it looked.
    let empty = tempfile::tempdir().unwrap();
    let o = d
        .cmd(&["ls"])
        .env_remove("SANDPIT_API_KEY")
        .env("XDG_DATA_HOME", empty.path())
        .env("HOME", empty.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("no API key"),
        "{}",
        text(&o.stderr)
    );

    let o = Command::new(BIN)
        .args(["ls", "--url", "http://127.0.0.1:9", "--api-key", "k"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("cannot reach"),
        "{}",
        text(&o.stderr)
    );

    let o = d.run(&["exec", "someid"]);
    assert_eq!(o.status.code(), Some(2), "usage errors are clap's exit 2");
    let o = d.run(&["attach", "--detach-keys", "alt-x", "someid"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("detach key"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn help_everywhere_has_examples() {
    for verb in [
        vec![],
        vec!["create"],
        vec!["ls"],
        vec!["info"],
        vec!["exec"],
        vec!["run"],
        vec!["attach"],
        vec!["ps"],
        vec!["logs"],
        vec!["kill"],
        vec!["pause"],
        vec!["resume"],
        vec!["rm"],
        vec!["template", "ls"],
        vec!["template", "import"],
        vec!["template", "build"],
        vec!["template", "export"],
        vec!["template", "upload"],
        vec!["snapshot"],
        vec!["fork"],
        vec!["volume", "create"],
        vec!["volume", "ls"],
        vec!["volume", "info"],
        vec!["volume", "rm"],
        vec!["template", "pool"],
    ] {
        let mut args = verb.clone();
        args.push("--help");
        let o = Command::new(BIN).args(&args).output().unwrap();
        assert!(o.status.success(), "{verb:?}");
        let help = text(&o.stdout);
        assert!(
            help.contains("Examples:"),
            "{verb:?} --help has no examples:\n{help}"
        );
        assert!(
            help.contains("--url") && help.contains("--api-key"),
            "{verb:?}: global flags missing"
        );
    }
}

#[test]
fn template_ls_import_rm() {
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
    let rootfs = d.dir.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::write(rootfs.join("etc/hostname"), "mini\n").unwrap();
    let out = d.ok(&["template", "import", "mini", rootfs.to_str().unwrap()]);
    assert!(out.starts_with("mini (built in"), "{out}");
    let list = d.json(&["template", "ls", "--json"]);
    assert!(
        list.as_array().unwrap().iter().any(|t| t["name"] == "mini"),
        "{list}"
    );
    let table = d.ok(&["template", "ls"]);
    assert!(table.contains("NAME") && table.contains("mini"), "{table}");
    d.ok(&["template", "rm", "mini"]);
    let list = d.json(&["template", "ls", "--json"]);
    assert!(
        !list.as_array().unwrap().iter().any(|t| t["name"] == "mini"),
        "{list}"
    );
}

#[test]
fn snapshot_fork_export_upload() {
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
    // A busybox-only template: small enough to export.
    let rootfs = d.dir.path().join("rootfs");
    for dir in ["bin", "etc", "tmp", "home/user"] {
        std::fs::create_dir_all(rootfs.join(dir)).unwrap();
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    for applet in ["sh", "cat", "echo"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n",
    )
    .unwrap();
    d.ok(&["template", "import", "bb", rootfs.to_str().unwrap()]);
    // A warm pool of one, shown as a table, emptied again.
    d.ok(&["template", "pool", "bb", "--size", "1"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while d.json(&["template", "pool", "bb", "--json"])["ready"] != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the pool never filled"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let table = d.ok(&["template", "pool", "bb"]);
    assert!(table.contains("READY") && table.contains("bb"), "{table}");
    d.ok(&["template", "pool", "bb", "--size", "0"]);
    while d.json(&["template", "pool", "bb", "--json"])["ready"] != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the pool never emptied"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let id = d.ok(&["create", "--template", "bb"]).trim().to_owned();
    d.ok(&["exec", &id, "--", "sh", "-c", "echo kept > /home/user/f"]);

    assert_eq!(d.ok(&["snapshot", &id, "snap"]).trim(), "snap");
    let snap = d.json(&["snapshot", &id, "snap2", "--json"]);
    assert_eq!(snap["template"]["parent"], "bb", "{snap}");
    let table = d.ok(&["template", "ls"]);
    assert!(
        table.contains("PARENT") && table.contains("snap2"),
        "{table}"
    );

    let forks = d.ok(&["fork", &id, "--count", "2", "-m", "k=v"]);
    let forks: Vec<&str> = forks.lines().collect();
    assert_eq!(forks.len(), 2, "{forks:?}");
    for f in &forks {
        assert_eq!(d.ok(&["exec", f, "--", "cat", "/home/user/f"]), "kept\n");
        assert_eq!(d.json(&["info", f, "--json"])["metadata"]["k"], "v");
    }
    let o = d.run(&["fork", &id, "--template", "bb"]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("--template"),
        "{}",
        text(&o.stderr)
    );

    let file = d.dir.path().join("snap.tar.zst");
    d.ok(&["template", "export", "snap", "-o", file.to_str().unwrap()]);
    assert!(std::fs::metadata(&file).unwrap().len() > 0);
    assert_eq!(
        d.ok(&["template", "upload", "moved", file.to_str().unwrap()])
            .trim(),
        "moved"
    );
    let moved = d.ok(&["create", "--template", "moved"]).trim().to_owned();
    assert_eq!(
        d.ok(&["exec", &moved, "--", "cat", "/home/user/f"]),
        "kept\n"
    );
    // A template in use is not deleted, and the error says why.
    let o = d.run(&["template", "rm", "bb"]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("in use"), "{}", text(&o.stderr));

    // Volumes: made, mounted by two sandboxes (one read-only), listed, kept while mounted.
    assert_eq!(
        d.ok(&["volume", "create", "vol", "--size-mb", "16"]).trim(),
        "vol"
    );
    let w = d
        .ok(&["create", "--template", "bb", "--volume", "vol:/data"])
        .trim()
        .to_owned();
    let r = d
        .ok(&["create", "--template", "bb", "-v", "vol:/ro:ro"])
        .trim()
        .to_owned();
    d.ok(&["exec", &w, "--", "sh", "-c", "echo v > /data/x"]);
    assert_eq!(d.ok(&["exec", &r, "--", "cat", "/ro/x"]), "v\n");
    let o = d.run(&["exec", &r, "--", "sh", "-c", "echo no > /ro/y"]);
    assert!(!o.status.success(), "a read-only volume took a write");
    let table = d.ok(&["volume", "ls"]);
    assert!(
        table.contains("MOUNTED BY") && table.contains(&w),
        "{table}"
    );
    assert_eq!(d.json(&["volume", "info", "vol", "--json"])["size_mb"], 16);
    let o = d.run(&["volume", "rm", "vol"]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("mounted"), "{}", text(&o.stderr));
    let o = d.run(&["create", "--template", "bb", "--volume", "nocolon"]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("NAME:PATH"), "{}", text(&o.stderr));
    d.ok(&["rm", &w, &r]);
    assert_eq!(d.ok(&["volume", "rm", "vol"]).trim(), "vol");
}

// ---------------------------------------------------------------- attach through a real PTY

/// `sandpit ARGS` on the slave side of a new pseudo-terminal, as the session leader with it as its
/// controlling terminal; the test holds the master.
struct PtyRun {
    child: Child,
    master: std::fs::File,
    slave: std::os::fd::OwnedFd,
    screen: Arc<Mutex<Vec<u8>>>,
}

impl PtyRun {
    fn start(d: &Daemon, args: &[&str]) -> Self {
        let ws = nix::pty::Winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(&ws, None).unwrap();
        let mut c = Command::new("setsid");
        c.arg("-c").arg(BIN).args(args);
        c.env("SANDPIT_URL", &d.url)
            .env("SANDPIT_API_KEY", &d.key)
            .stdin(Stdio::from(pty.slave.try_clone().unwrap()))
            .stdout(Stdio::from(pty.slave.try_clone().unwrap()))
            .stderr(Stdio::from(pty.slave.try_clone().unwrap()));
        let child = c.spawn().unwrap();
        let master = std::fs::File::from(pty.master);
        let screen = Arc::new(Mutex::new(Vec::new()));
        let (mut r, s) = (master.try_clone().unwrap(), screen.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                s.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Self {
            child,
            master,
            slave: pty.slave,
            screen,
        }
    }

    fn screen(&self) -> String {
        text(&self.screen.lock().unwrap())
    }

    fn expect(&self, needle: &str) {
        let end = Instant::now() + Duration::from_secs(15);
        while !self.screen().contains(needle) {
            assert!(
                Instant::now() < end,
                "{needle:?} never appeared on the terminal:\n{}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn type_(&mut self, s: &[u8]) {
        self.master.write_all(s).unwrap();
        self.master.flush().unwrap();
    }

    /// Resizes the terminal the way a terminal emulator does (the kernel then sends SIGWINCH).
    fn resize(&self, cols: u16, rows: u16) {
        let st = Command::new("stty")
            .args(["cols", &cols.to_string(), "rows", &rows.to_string()])
            .stdin(Stdio::from(self.slave.try_clone().unwrap()))
            .status()
            .unwrap();
        assert!(st.success());
    }

    fn wait(&mut self) -> i32 {
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < end,
                "attach did not end:\n{}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for PtyRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pty_processes(d: &Daemon, id: &str) -> Vec<Value> {
    d.json(&["ps", id, "--json"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["is_pty"] == true)
        .cloned()
        .collect()
}

#[test]
fn attach_types_sees_echo_resizes_detaches_and_reattaches() {
    assert!(
        !(!Path::new("/usr/bin/setsid").exists() && !Path::new("/bin/setsid").exists()),
        "setsid (util-linux) is needed to give the attach test a controlling terminal"
    );
    let d = Daemon::start();
    let id = d.create();
    let mut t = PtyRun::start(&d, &["attach", &id, "--", "sh"]);
    // Type a line: the PTY echoes it, and sh runs it (the arithmetic proves it ran remotely).
    std::thread::sleep(Duration::from_millis(300));
    t.type_(b"echo hel''lo-$((6*7))\r");
    t.expect("echo hel''lo-$((6*7))");
    t.expect("hello-42");
    // Resizing the local terminal resizes the remote PTY.
    t.resize(100, 30);
    std::thread::sleep(Duration::from_millis(300));
    t.type_(b"stty size\r");
    t.expect("30 100");
    // ctrl-] detaches; the process keeps running.
    t.type_(b"\x1d");
    assert_eq!(t.wait(), 0);
    t.expect("detached from process");
    let procs = pty_processes(&d, &id);
    assert_eq!(procs.len(), 1);
    assert_eq!(procs[0]["status"], "running");
    let pid = procs[0]["id"].as_str().unwrap().to_owned();

    // Attach again with other detach keys: the scrollback is replayed, the shell still answers.
    let mut t = PtyRun::start(
        &d,
        &[
            "attach",
            "--pid",
            &pid,
            "--detach-keys",
            "ctrl-p,ctrl-q",
            &id,
        ],
    );
    t.expect("hello-42");
    t.type_(b"echo again-$((1+1))\r");
    t.expect("again-2");
    t.type_(b"\x10\x11");
    assert_eq!(t.wait(), 0);
    assert_eq!(pty_processes(&d, &id)[0]["status"], "running");

    // Attach once more and let the shell exit: its code is passed through.
    let mut t = PtyRun::start(&d, &["attach", "--pid", &pid, &id]);
    t.expect("again-2");
    t.type_(b"exit 5\r");
    assert_eq!(t.wait(), 5);
    assert_eq!(pty_processes(&d, &id)[0]["status"], "exited");
}

#[test]
fn attach_runs_a_command_to_its_end() {
    let d = Daemon::start();
    let id = d.create();
    let mut t = PtyRun::start(
        &d,
        &[
            "attach",
            "-e",
            "X=42",
            &id,
            "sh",
            "-c",
            "test -t 0 && echo tty-$X; exit 3",
        ],
    );
    t.expect("tty-42");
    assert_eq!(t.wait(), 3);
}

#[test]
fn port_prints_a_preview_url_that_opens_the_port() {
    let d = Daemon::start();
    let id = d.create();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let daemon_port = d.url.rsplit(':').next().unwrap().to_owned();
    // Private: the URL carries the port's token once.
    let o = d.run(&["port", &id, &port]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let url = text(&o.stdout).trim().to_owned();
    let prefix = format!("http://{port}-{id}.localhost:{daemon_port}/?sandpit_token=spt_");
    assert!(url.starts_with(&prefix), "{url}");
    let p = d.json(&["port", &id, &port, "--public", "--json"]);
    assert_eq!(p["public"], true);
    assert_eq!(
        p["url"],
        format!("http://{port}-{id}.localhost:{daemon_port}/")
    );
    let o = d.run(&["port", &id, &port, "--close"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = d.run(&["port", &id, "0"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("port"), "{}", text(&o.stderr));
    // `network` needs the isolate backend: the process backend says so.
    let o = d.run(&["network", &id]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("without sandbox networking"),
        "{}",
        text(&o.stderr)
    );
}

/// `sandpit cp` both ways (files, directories, tars on stdin and stdout) and `sandpit fs`. The process
/// backend runs the agent on this host, so every path is in this test's temporary directory.
#[test]
fn cp_and_fs_move_files_and_directories() {
    let d = Daemon::start();
    let id = d.create();
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let remote = |p: &str| format!("{id}:{}/remote{p}", w.display());
    std::fs::create_dir_all(w.join("src/sub")).unwrap();
    std::fs::write(w.join("src/a.txt"), "alpha").unwrap();
    std::fs::write(w.join("src/sub/b.bin"), [0u8, 255, 7]).unwrap();
    std::fs::write(w.join("one.txt"), "one").unwrap();
    d.ok(&["fs", "mkdir", &remote("")]);
    // A file into an existing directory keeps its name; a directory is copied recursively.
    d.ok(&["cp", &w.join("one.txt").display().to_string(), &remote("/")]);
    d.ok(&["cp", &w.join("src").display().to_string(), &remote("/copy")]);
    assert_eq!(
        std::fs::read_to_string(w.join("remote/one.txt")).unwrap(),
        "one"
    );
    assert_eq!(
        std::fs::read(w.join("remote/copy/sub/b.bin")).unwrap(),
        [0, 255, 7]
    );
    let ls = d.ok(&["fs", "ls", "-d", "2", &remote("/copy")]);
    assert!(
        ls.starts_with("MODE") && ls.contains("sub/b.bin") && ls.contains("a.txt"),
        "{ls}"
    );
    let stat = d.json(&["fs", "stat", &remote("/copy/a.txt")]);
    assert_eq!(
        (stat["type"].as_str(), stat["size"].as_u64()),
        (Some("file"), Some(5))
    );
    // Back again: a directory and a file.
    d.ok(&[
        "cp",
        &remote("/copy"),
        &w.join("back").display().to_string(),
    ]);
    assert_eq!(
        std::fs::read_to_string(w.join("back/a.txt")).unwrap(),
        "alpha"
    );
    assert_eq!(
        std::fs::read(w.join("back/sub/b.bin")).unwrap(),
        [0, 255, 7]
    );
    d.ok(&[
        "cp",
        &remote("/one.txt"),
        &w.join("back").display().to_string(),
    ]);
    assert_eq!(
        std::fs::read_to_string(w.join("back/one.txt")).unwrap(),
        "one"
    );
    // `-`: a tar to stdout, and one from stdin.
    let tar_out = d.run(&["cp", &remote("/copy"), "-"]);
    assert!(tar_out.status.success());
    let mut child = d
        .cmd(&["cp", "-", &remote("/from-stdin")])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&tar_out.stdout)
        .unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(
        std::fs::read_to_string(w.join("remote/from-stdin/copy/a.txt")).unwrap(),
        "alpha"
    );
    // rm, and errors that name the problem.
    let o = d.run(&["fs", "rm", &remote("/copy")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("not empty"), "{}", text(&o.stderr));
    d.ok(&["fs", "rm", "-r", &remote("/copy")]);
    assert!(!w.join("remote/copy").exists());
    let o = d.run(&["fs", "stat", &remote("/nope")]);
    assert!(text(&o.stderr).contains("not found"), "{}", text(&o.stderr));
    let o = d.run(&["cp", "a", "b"]);
    assert!(text(&o.stderr).contains("ID:PATH"), "{}", text(&o.stderr));
}

#[test]
fn keys_create_ls_revoke_and_scopes_hold() {
    let d = Daemon::start();
    let key = d.ok(&["keys", "create", "--name", "reader", "--scope", "read"]);
    let key = key.trim().to_owned();
    assert!(key.starts_with("sp_k_"), "{key}");
    let made = d.json(&[
        "keys",
        "create",
        "--name",
        "bot",
        "--scope",
        "sandboxes",
        "--tenant",
        "team-a",
        "--expires-in",
        "3600",
        "--json",
    ]);
    assert_eq!(made["tenant"], "team-a");
    let listed = d.json(&["keys", "ls", "--json"]);
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    assert!(
        !listed.to_string().contains(&key),
        "ls must not print secrets"
    );
    let table = d.ok(&["keys", "ls"]);
    assert!(
        table.contains("reader") && table.contains("team-a"),
        "{table}"
    );

    // The read key can list but not create; the message names the scope.
    let as_reader = |args: &[&str]| {
        let mut c = d.cmd(args);
        c.env("SANDPIT_API_KEY", &key);
        c.stdin(Stdio::null()).output().unwrap()
    };
    assert!(as_reader(&["ls"]).status.success());
    let o = as_reader(&["create"]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("`sandboxes` scope"),
        "{}",
        text(&o.stderr)
    );

    // Revoke: the key stops working; an unknown id is named in the error.
    let id = listed[0]["id"].as_str().unwrap();
    assert_eq!(d.ok(&["keys", "revoke", id]).trim(), id);
    let o = as_reader(&["ls"]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("API key"), "{}", text(&o.stderr));
    let o = d.run(&["keys", "revoke", "k_nope"]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("k_nope"), "{}", text(&o.stderr));
    // A sandbox's access token: `create --json` shows it; `access-token` rotates it.
    let made = d.json(&["create", "--json"]);
    let sid = made["id"].as_str().unwrap().to_owned();
    let first = made["access_token"].as_str().unwrap().to_owned();
    let as_token = |tok: &str, args: &[&str]| {
        let mut c = d.cmd(args);
        c.env("SANDPIT_API_KEY", tok);
        c.stdin(Stdio::null()).output().unwrap()
    };
    let o = as_token(&first, &["exec", &sid, "--", "echo", "via-token"]);
    assert_eq!(text(&o.stdout), "via-token\n", "{}", text(&o.stderr));
    assert!(!as_token(&first, &["ls"]).status.success());
    let fresh = d.ok(&["access-token", &sid]).trim().to_owned();
    assert!(fresh.starts_with(&format!("spa_{sid}_")), "{fresh}");
    assert!(!as_token(&first, &["info", &sid]).status.success());
    assert!(as_token(&fresh, &["info", &sid]).status.success());
    // `console` prints the console's address; with an id, a link carrying a new token of that sandbox.
    let base = d.ok(&["console"]).trim().to_owned();
    assert!(
        base.starts_with("http://127.0.0.1:") && base.ends_with("/console"),
        "{base}"
    );
    let link = d.ok(&["console", &sid]).trim().to_owned();
    let token = link
        .strip_prefix(&format!("{base}#sandbox={sid}&token="))
        .unwrap_or_else(|| panic!("{link}"));
    assert!(as_token(token, &["info", &sid]).status.success());
    assert!(!as_token(&fresh, &["info", &sid]).status.success());
    let o = d.run(&["console", "nope"]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("nope"), "{}", text(&o.stderr));
    let o = d.run(&["keys", "create", "--name", "x", "--scope", "root"]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("unknown scope"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn tenants_set_get_ls_and_a_quota_refuses_a_create() {
    let d = Daemon::start();
    let t = d.json(&[
        "tenants",
        "set",
        "team-q",
        "--max-sandboxes",
        "1",
        "--max-creates-per-second",
        "5",
        "--json",
    ]);
    assert_eq!(t["quotas"]["max_sandboxes"], 1, "{t}");
    // Quotas not named keep their value; `none` lifts one.
    let t = d.json(&[
        "tenants",
        "set",
        "team-q",
        "--max-disk-mb",
        "4096",
        "--json",
    ]);
    assert_eq!(
        (
            t["quotas"]["max_sandboxes"].as_u64(),
            t["quotas"]["max_disk_mb"].as_u64()
        ),
        (Some(1), Some(4096)),
        "{t}"
    );
    let key = d.ok(&[
        "keys",
        "create",
        "--name",
        "q",
        "--scope",
        "sandboxes",
        "--tenant",
        "team-q",
    ]);
    let as_q = |args: &[&str]| {
        let mut c = d.cmd(args);
        c.env("SANDPIT_API_KEY", key.trim());
        c.stdin(Stdio::null()).output().unwrap()
    };
    let o = as_q(&["create"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = as_q(&["create"]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("max_sandboxes quota (1)"),
        "{}",
        text(&o.stderr)
    );
    // Its own tenant reads; the table shows usage against the quota.
    let o = as_q(&["tenants", "get", "team-q"]);
    assert!(text(&o.stdout).contains("1/1"), "{}", text(&o.stdout));
    let o = as_q(&["tenants", "ls"]);
    assert!(
        text(&o.stderr).contains("`admin` scope"),
        "{}",
        text(&o.stderr)
    );
    let t = d.json(&[
        "tenants",
        "set",
        "team-q",
        "--max-sandboxes",
        "none",
        "--json",
    ]);
    assert!(t["quotas"]["max_sandboxes"].is_null(), "{t}");
    assert!(as_q(&["create"]).status.success());
    let table = d.ok(&["tenants", "ls"]);
    assert!(
        table.contains("team-q") && table.contains("default"),
        "{table}"
    );
    let o = d.run(&["tenants", "set", "team-q", "--max-sandboxes", "many"]);
    assert!(
        text(&o.stderr).contains("\"many\" is not a whole number"),
        "{}",
        text(&o.stderr)
    );
    let o = d.run(&["tenants", "set", "team-q", "--max-creates-per-second", "0"]);
    assert!(
        text(&o.stderr).contains("max_creates_per_second must be"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn audit_lists_who_ran_what() {
    let d = Daemon::start();
    let made = d.json(&["create", "--json"]);
    let sid = made["id"].as_str().unwrap().to_owned();
    d.ok(&["exec", &sid, "--", "echo", "audited words"]);
    // Written off the request path: poll.
    let mut page = Value::Null;
    for _ in 0..100 {
        page = d.json(&["audit", "--sandbox", &sid, "--json"]);
        if page.to_string().contains("audited words") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let entries = page["entries"].as_array().unwrap();
    assert_eq!(entries[0]["action"], "sandbox.create", "{page}");
    assert!(
        entries.iter().any(|e| e["detail"]
            .as_str()
            .is_some_and(|d| d.contains("echo 'audited words'"))),
        "{page}"
    );
    let table = d.ok(&["audit", "--limit", "1"]);
    assert!(table.contains("sandbox.create"), "{table}");
    let o = d.run(&["audit", "--since", "yesterday"]);
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("since"), "{}", text(&o.stderr));
}

/// Issue 20: `events` (a page, `-f`), `metrics`, `top --once` and `webhook` against the real daemon.
#[test]
fn events_follow_metrics_top_and_webhooks() {
    use std::io::BufRead as _;
    let d = Daemon::start_with_args(
        "process",
        &["--metrics-interval-ms", "200", "--webhook-backoff-ms", "50"],
    );
    // A receiver on loopback that answers 200 and hands over what it got.
    let rx = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hook_url = format!("http://{}/hook", rx.local_addr().unwrap());
    let (got_tx, got) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for conn in rx.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut buf = vec![0u8; 65536];
            let mut req = Vec::new();
            // Head and body arrive in a few reads; the body is small.
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                let n = conn.read(&mut buf).unwrap_or(0);
                req.extend_from_slice(&buf[..n]);
                let t = String::from_utf8_lossy(&req).into_owned();
                if let Some((head, body)) = t.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if body.len() >= len {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = got_tx.send(String::from_utf8_lossy(&req).into_owned());
        }
    });
    let wid = d
        .ok(&[
            "webhook",
            "create",
            &hook_url,
            "--events",
            "sandbox.created",
            "--secret",
            "s3cret-s3cret",
        ])
        .trim()
        .to_owned();
    assert!(wid.starts_with("wh_"), "{wid}");
    assert!(d.ok(&["webhook", "ls"]).contains(&wid));
    let o = d.run(&[
        "webhook",
        "create",
        &hook_url,
        "--events",
        "sandbox.nope",
        "--secret",
        "s3cret-s3cret",
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("unknown event type"),
        "{}",
        text(&o.stderr)
    );

    // Follow from the last stored event, so the create below is replayed even when it lands
    // before the stream attaches (regression: a CI run created the sandbox first and the follow
    // printed nothing).
    let before = d.json(&["events", "--json", "--limit", "1000"]);
    let last = before["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["id"].as_u64())
        .max()
        .unwrap_or(0)
        .to_string();
    let mut follow = d
        .cmd(&["events", "-f", "--json", "--after", &last])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = std::io::BufReader::new(follow.stdout.take().unwrap());
    let (line_tx, followed) = std::sync::mpsc::channel::<Value>();
    std::thread::spawn(move || {
        for l in lines.lines().map_while(Result::ok) {
            let _ = line_tx.send(serde_json::from_str(&l).unwrap());
        }
    });
    let sid = d.create();
    let first = followed
        .recv_timeout(Duration::from_secs(10))
        .expect("sandpit events -f printed nothing");
    assert_eq!(
        (first["type"].as_str(), first["sandbox_id"].as_str()),
        (Some("sandbox.created"), Some(sid.as_str()))
    );

    // Metrics of a running sandbox, and the live table.
    let samples = (0..100)
        .find_map(|_| {
            let v = d.json(&["metrics", &sid, "--json"]);
            if v.as_array().is_some_and(|a| a.len() >= 2) {
                Some(v)
            } else {
                std::thread::sleep(Duration::from_millis(100));
                None
            }
        })
        .expect("two samples within 10 s");
    assert!(samples[1]["pids"].as_u64().unwrap() >= 1, "{samples}");
    assert!(samples[1]["mem_used"].as_u64().unwrap() > 0, "{samples}");
    let table = d.ok(&["metrics", &sid]);
    assert!(table.starts_with("TIME") && table.contains('%'), "{table}");
    let top = d.ok(&["top", "--once", "--sort", "mem"]);
    assert!(
        top.starts_with("ID") && top.contains(&sid) && top.contains('%'),
        "{top}"
    );

    d.ok(&["pause", &sid]);
    d.ok(&["resume", &sid]);
    d.ok(&["rm", &sid]);
    let mut seen = vec![first["type"].as_str().unwrap().to_owned()];
    while seen.len() < 4 {
        let e = followed
            .recv_timeout(Duration::from_secs(10))
            .expect("the followed events");
        seen.push(e["type"].as_str().unwrap().to_owned());
    }
    let _ = follow.kill();
    let _ = follow.wait();
    assert_eq!(
        seen,
        [
            "sandbox.created",
            "sandbox.paused",
            "sandbox.resumed",
            "sandbox.killed"
        ]
    );
    let page = d.json(&["events", "--sandbox", &sid, "--json"]);
    let types: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, seen);
    let listed = d.ok(&["events", "--sandbox", &sid, "--type", "sandbox.paused"]);
    assert!(
        listed.starts_with("ID")
            && listed.contains("sandbox.paused")
            && !listed.contains("sandbox.killed"),
        "{listed}"
    );
    let o = d.run(&["events", "--type", "sandbox.exploded"]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("unknown event type"),
        "{}",
        text(&o.stderr)
    );

    // The webhook got the create, signed; the delivery log says so.
    let req = got
        .recv_timeout(Duration::from_secs(10))
        .expect("the webhook delivery");
    assert!(req.starts_with("POST /hook"), "{req}");
    assert!(
        req.to_ascii_lowercase().contains("sandpit-signature: v1="),
        "{req}"
    );
    assert!(req.contains(&sid), "{req}");
    let deliveries = d.json(&["webhook", "deliveries", &wid, "--json"]);
    assert_eq!(deliveries[0]["outcome"], "delivered", "{deliveries}");
    d.ok(&["webhook", "rm", &wid]);
    let o = d.run(&["webhook", "get", &wid]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("no webhook"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn fs_url_prints_a_url_that_needs_no_key() {
    let d = Daemon::start();
    let id = d.create();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("report.txt");
    std::fs::write(&file, "the report").unwrap();
    let target = format!("{id}:{}", file.display());
    let url = d.ok(&["fs", "url", &target]).trim().to_owned();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let plain = reqwest::Client::new();
    let body = rt.block_on(async { plain.get(&url).send().await.unwrap().text().await.unwrap() });
    assert_eq!(body, "the report");
    let up = d
        .ok(&["fs", "url", "--write", "--expires-in", "60", &target])
        .trim()
        .to_owned();
    let status = rt.block_on(async { plain.put(&up).body("new").send().await.unwrap().status() });
    assert_eq!(status, 200);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "new");
    let o = d.run(&["fs", "url", "--expires-in", "0", &target]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("expires_in"),
        "{}",
        text(&o.stderr)
    );
}
