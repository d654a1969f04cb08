//! Test support for suites that drive the real daemon (`sandpit serve`, spawned as its own process) with
//! the real `isolate` backend: the prerequisites check, the spawned daemon, leftover clean-up, and the
//! host-side views (handles, pid namespaces, cgroups) that let a test check what the API cannot show.
//!
//! Shared so that the fault, bad-input and load-adjacent suites start the daemon the same way; the daemon
//! is a separate process so that a test can SIGKILL it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const KEY: &str = "daemon-test-key-0123456789";

/// The binary to test, or `None` (after [`sandpit_testkit::skip`]: a failure under CI) when these tests
/// cannot run here: they need root, a host `sandpit_isolate::Isolator` accepts, and the `sandpit` binary
/// built beforehand (`cargo build -p sandpit-cli`; `$SANDPIT_BIN` overrides the path).
pub fn prerequisites() -> Option<PathBuf> {
    if !sandpit_testkit::require_root("the isolate backend") {
        return None;
    }
    let bin = sandpit_testkit::sandpit_bin()?;
    let probe = tempfile::tempdir().unwrap();
    match sandpit_isolate::Isolator::new(sandpit_isolate::IsolateConfig::new(probe.path(), &bin)) {
        Ok(_) => {}
        // What the host lacks (a kernel feature, cgroup controllers, seccomp) is a reason to skip; any
        // other failure is a bug to report.
        Err(
            e @ (sandpit_isolate::IsolateError::Host(_)
            | sandpit_isolate::IsolateError::Cgroup(_)
            | sandpit_isolate::IsolateError::Filter(_)),
        ) => {
            sandpit_testkit::skip(format_args!("this host cannot run isolated sandboxes: {e}"));
            return None;
        }
        Err(e) => panic!("the isolator cannot start: {e}"),
    }
    Some(bin)
}

#[allow(unused_imports)] // Each suite uses its own part.
pub use sandpit_testkit::{Serve, free_port, sandpit_bin as built_binary};

/// Destroys every sandbox left under a state directory when dropped, so that a failing test does not
/// leave running sandboxes (which outlive their daemon by design) behind. Declare it before the daemon.
pub struct DestroyLeftovers {
    pub state_dir: PathBuf,
    pub bin: PathBuf,
}

impl DestroyLeftovers {
    pub fn destroy(&self) {
        let cfg = sandpit_isolate::IsolateConfig::new(self.state_dir.join("isolate"), &self.bin);
        if let Ok(iso) = sandpit_isolate::Isolator::new(cfg) {
            for h in iso.sandboxes() {
                let _ = iso.destroy(&h);
            }
        }
        // Volumes stay mounted on the host (by design: they outlive the daemon); a test that failed
        // before deleting its volumes must not leave loop mounts under a removed directory.
        for e in std::fs::read_dir(self.state_dir.join("isolate/volumes"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(e.path().join("mnt"))
                .stderr(std::process::Stdio::null())
                .status();
        }
        // A killed daemon leaves its firewall tables (by design: sandboxes stay confined): remove them.
        sandpit_net::remove_leftovers(
            std::path::Path::new(sandpit_net::DEFAULT_LEASE_DIR),
            &self.state_dir,
        );
    }
}

impl Drop for DestroyLeftovers {
    fn drop(&mut self) {
        self.destroy();
    }
}

/// What every test of a real daemon starts from: the binary, a temporary directory, a state directory
/// in it (not yet created), and the clean-up of the sandboxes left in it. Fields drop in order: the
/// sandboxes go before the directory they live in.
pub struct Fixture {
    pub leftovers: DestroyLeftovers,
    pub bin: PathBuf,
    pub state: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Fixture {
    /// `None` (with the reason printed) when these tests cannot run here.
    pub fn new() -> Option<Self> {
        let bin = prerequisites()?;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        Some(Self {
            leftovers: DestroyLeftovers {
                state_dir: state.clone(),
                bin: bin.clone(),
            },
            bin,
            state,
            dir,
        })
    }
}

/// `sandpit serve --backend isolate` on a free port with the test key; template imports come from the
/// test's own temporary directory (the state directory's parent).
pub async fn serve(bin: &Path, state_dir: &Path) -> Serve {
    serve_with(bin, state_dir, free_port(), &[]).await
}

/// [`serve`] on a given port: a restarted daemon must be where its clients reconnect.
pub async fn serve_on(bin: &Path, state_dir: &Path, port: u16) -> Serve {
    serve_with(bin, state_dir, port, &[]).await
}

/// [`serve_on`] with extra `sandpit serve` flags.
pub async fn serve_with(bin: &Path, state_dir: &Path, port: u16, extra: &[&str]) -> Serve {
    let serve = Serve::builder(bin, state_dir)
        .backend("isolate")
        .port(port)
        .key(KEY)
        .arg("--import-root")
        .arg(state_dir.parent().unwrap().display().to_string())
        .args(extra.iter().copied())
        .start()
        .await;
    let health: Value = client()
        .get(serve.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["backend"], "isolate");
    serve
}

pub fn client() -> reqwest::Client {
    let mut h = reqwest::header::HeaderMap::new();
    h.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {KEY}").parse().unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(h)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

pub async fn call(rb: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = rb.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// GETs `url` and returns the whole body as text (an SSE stream: until it ends).
pub async fn get_text(url: String) -> String {
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

pub async fn post(url: String, body: Value) -> (u16, Value) {
    call(client().post(url).json(&body)).await
}

/// Creates a sandbox and returns its id.
pub async fn create(serve: &Serve, body: Value) -> String {
    let (s, sb) = post(serve.url("/v1/sandboxes"), body).await;
    assert_eq!(s, 201, "{sb}");
    sb["id"].as_str().unwrap().to_owned()
}

/// Runs `cmd` in the sandbox and returns (exit code, stdout).
pub async fn sh(root: &str, cmd: &str, user: Option<&str>) -> (i64, String) {
    let mut body = json!({"cmd": cmd, "timeout_ms": 20_000});
    if let Some(u) = user {
        body["user"] = json!(u);
    }
    let (s, r) = post(format!("{root}/exec"), body).await;
    assert_eq!(s, 200, "{cmd}: {r}");
    (
        r["exit_code"].as_i64().unwrap_or(-1),
        r["stdout"].as_str().unwrap_or_default().to_owned(),
    )
}

/// Everything the isolator recorded about the sandbox (read from the host, as an operator would).
pub fn isolate_handle(state_dir: &Path, id: &str) -> Value {
    let path = state_dir.join(format!("isolate/sandboxes/{id}/handle.json"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The host directories of a sandbox's cgroups, from its handle.
pub fn cgroup_dirs(handle: &Value) -> Vec<PathBuf> {
    let cgroups = &handle["cgroups"];
    cgroups["controllers"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
        .chain(cgroups.get("unified"))
        .filter_map(Value::as_str)
        .map(PathBuf::from)
        .collect()
}

/// Whether `pid` exists and is not a zombie.
pub fn running(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z")
    })
}

/// The pid namespace of a process (a `/proc/PID/ns/pid` link target).
///
/// The name is `pid:[inode]`, and the kernel reuses a freed namespace's inode number for the next
/// namespace anyone creates (a parallel test's sandbox, say). So this also returns an open handle
/// on the namespace: while it is held the number stays taken, and a later [`processes_in`] cannot
/// count another namespace's processes as leftovers of this one.
pub fn pid_ns(pid: i64) -> (String, std::fs::File) {
    let path = format!("/proc/{pid}/ns/pid");
    let hold = std::fs::File::open(&path).unwrap();
    let name = std::fs::read_link(&path)
        .unwrap()
        .to_string_lossy()
        .into_owned();
    (name, hold)
}

/// Pids of every host process in the pid namespace `ns`.
pub fn processes_in(ns: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter(|e| {
            std::fs::read_link(e.path().join("ns/pid")).is_ok_and(|l| l.to_string_lossy() == ns)
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Entries of a directory (0 when it does not exist).
pub fn count_entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, Iterator::count)
}

/// Imports a root filesystem of the host's static busybox (no libc: the agent is the static one; plus
/// what `extra` puts in it) as template `tiny` and waits until it is ready.
pub async fn import_busybox_template(
    serve: &Serve,
    bin: &Path,
    rootfs: &Path,
    extra: impl FnOnce(&Path),
) {
    for d in ["bin", "etc", "tmp", "home/user"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox (scripts/setup.sh installs busybox-static)");
    std::fs::copy(busybox, rootfs.join("bin/busybox")).unwrap();
    for applet in ["sh", "echo", "cat", "sleep", "seq", "id", "true"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    // No libc and no loader: the agent bound in from the host is the static one.
    assert!(
        sandpit_testkit::static_agent(bin).is_some(),
        "a busybox template needs the static agent (scripts/build-agent.sh)"
    );
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(rootfs.join("etc/group"), "root:x:0:\nuser:x:1000:\n").unwrap();
    extra(rootfs);
    import_dir_template(serve, "tiny", rootfs).await;
}

/// Imports directory `rootfs` as template `name` and waits until it is ready.
pub async fn import_dir_template(serve: &Serve, name: &str, rootfs: &Path) {
    let (s, v) = post(
        serve.url("/v1/templates"),
        json!({"name": name, "source": {"dir": rootfs.display().to_string()}}),
    )
    .await;
    assert_eq!(s, 202, "{v}");
    let t = Instant::now();
    loop {
        let (s, b) = call(client().get(serve.url(&format!("/v1/templates/{name}/build")))).await;
        assert_eq!(s, 200, "{b}");
        if b["state"] != "building" {
            assert_eq!(b["state"], "ready", "{b}");
            return;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "{b}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
