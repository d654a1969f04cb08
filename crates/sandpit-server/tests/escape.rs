//! The escape suite (issue 9): the real daemon with the `isolate` backend, the `sandpit-probe` binary
//! uploaded into a sandbox and run as `root` and as `user`; every attempt it reports must be blocked, and
//! the host must show none of the effects the probe cannot judge from inside (hostname, clock, processes,
//! listeners, the neighbour sandbox, the sandbox's own cgroup limits).
//!
//! The probe only knows the inside; this file owns the host facts (pids, paths, ports, secrets) it hands
//! in, and the host-side checks. Positive controls (the secrets really exist on the host, the neighbour's
//! marker really is at the path the probe tries) make sure a "blocked" is not just a wrong path.
//!
//! Needs root, a host the isolator accepts, and `target/debug/{sandpit,sandpit-probe}` (`cargo build
//! --workspace`; `$SANDPIT_BIN` / `$SANDPIT_PROBE_BIN` override). Not root or no isolation on this host: a
//! loud SKIPPED line and a pass. A missing binary is a failure. The attempt table of
//! `docs/reliability.md` is printed to stderr (`cargo test -p sandpit-server --test escape -- --nocapture`).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

mod daemon;
mod netkit;

use netkit::{TestDns, TestHosts, ip_host, sandbox_link};

// Fixed escapes this suite found (regression checks, keep them):
// - `run_dir_host_write`: `/run/sandpit` used to be a writable host directory (agent socket and logs),
//   so root inside could fill the host's disk outside the `disk_mb` cap. Now no host directory is
//   mounted: the host binds the agent's socket in a root-only directory and hands the sandbox only
//   the listening fd (`sandpit agent --listen fd:4`); the agent's logs live inside the sandbox.
// - `agent_stdio_host_file`: the agent's stdout/stderr used to be a host file that root inside could
//   take with `pidfd_getfd` and grow without limit. They are /dev/null now.
// - agent.sock symlink swap: the daemon connected by a path that root inside could replace with a
//   symlink to any host socket. The path is no longer reachable from inside at all.

/// The daemon and probe binaries, or `None` (reason printed) when this host cannot run the suite.
fn prerequisites() -> Option<(PathBuf, PathBuf)> {
    if !nix::unistd::geteuid().is_root() {
        sandpit_testkit::skip(format_args!(
            "the escape suite needs root (CI runs it as root)"
        ));
        return None;
    }
    // A missing binary is a failure, not a skip: the suite must not stop running for lack of a build.
    let bin = sandpit_testkit::target_dir().join("debug/sandpit");
    let bin = std::env::var_os("SANDPIT_BIN").map_or(bin, PathBuf::from);
    let probe = sandpit_testkit::target_dir().join("debug/sandpit-probe");
    let probe = std::env::var_os("SANDPIT_PROBE_BIN").map_or(probe, PathBuf::from);
    for b in [&bin, &probe] {
        assert!(
            b.exists(),
            "{} not found: run `cargo build --workspace` before the tests",
            b.display()
        );
    }
    let dir = tempfile::tempdir().unwrap();
    match sandpit_isolate::Isolator::new(sandpit_isolate::IsolateConfig::new(dir.path(), &bin)) {
        Ok(_) => Some((bin, probe)),
        Err(
            e @ (sandpit_isolate::IsolateError::Host(_)
            | sandpit_isolate::IsolateError::Cgroup(_)
            | sandpit_isolate::IsolateError::Filter(_)),
        ) => {
            sandpit_testkit::skip(format_args!("this host cannot run isolated sandboxes: {e}"));
            None
        }
        Err(e) => panic!("the isolator cannot start: {e}"),
    }
}

/// Host-side leftovers of a run: the daemon (killed), sandboxes (destroyed: they outlive the daemon by
/// design), the host sleeper and the secret planted in /root.
struct Cleanup {
    daemon: Option<sandpit_testkit::Serve>,
    sleeper: Option<Child>,
    state_dir: PathBuf,
    bin: PathBuf,
    files: Vec<PathBuf>,
    shm_id: i32,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        drop(self.daemon.take());
        if let Some(c) = self.sleeper.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let cfg = sandpit_isolate::IsolateConfig::new(self.state_dir.join("isolate"), &self.bin);
        if let Ok(iso) = sandpit_isolate::Isolator::new(cfg) {
            for h in iso.sandboxes() {
                let _ = iso.destroy(&h);
            }
        }
        // The killed daemon's firewall tables (kept by design while sandboxes run: they are gone now).
        sandpit_net::remove_leftovers(Path::new(sandpit_net::DEFAULT_LEASE_DIR), &self.state_dir);
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
        // SAFETY: removes the segment this test created.
        unsafe { libc::shmctl(self.shm_id, libc::IPC_RMID, std::ptr::null_mut()) };
    }
}

fn random_token() -> String {
    let mut b = [0u8; 12];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut b)
        .unwrap();
    b.iter().fold(String::new(), |mut s, x| {
        use std::fmt::Write as _;
        let _ = write!(s, "{x:02x}");
        s
    })
}

/// Standard base64 (the server's dev-dependencies have no encoder, and this is all it takes).
fn b64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One attempt's outcome per role ("root", "user"): blocked, detail.
type ByRole = BTreeMap<&'static str, (bool, String)>;

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .put(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    /// Runs `argv` in a sandbox; the whole `ExecResult`.
    async fn exec(&self, id: &str, mut body: Value) -> Value {
        body["timeout_ms"] = json!(60_000);
        let (s, r) = self
            .post(&format!("/v1/sandboxes/{id}/exec"), body.clone())
            .await;
        assert_eq!(s, 200, "exec {body}: {r}");
        r
    }

    async fn create(&self) -> String {
        let (s, sb) = self
            .post(
                "/v1/sandboxes",
                json!({"memory_mb": 256, "pids": 128, "timeout": 600}),
            )
            .await;
        assert_eq!(s, 201, "{sb}");
        sb["id"].as_str().unwrap().to_owned()
    }
}

fn handle(state: &Path, id: &str) -> Value {
    let p = state.join(format!("isolate/sandboxes/{id}/handle.json"));
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn alive(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rfind(')')
            .and_then(|i| s[i + 1..].split_whitespace().next())
            .is_some_and(|st| st != "Z")
    })
}

/// The sandbox's cgroup limit files, read from the host: they must be what the daemon set.
fn cgroup_limits(h: &Value) -> BTreeMap<String, String> {
    let cg = &h["cgroups"];
    let dirs = cg["controllers"]
        .as_object()
        .into_iter()
        .flat_map(|o| o.values())
        .chain(cg.get("unified"))
        .filter_map(Value::as_str)
        // The sandbox's own directories and `work`, where its processes' limits are.
        .flat_map(|d| [PathBuf::from(d), Path::new(d).join("work")]);
    let mut out = BTreeMap::new();
    for d in dirs {
        for f in [
            "memory.max",
            "memory.limit_in_bytes",
            "pids.max",
            "cpu.max",
            "cpu.cfs_quota_us",
        ] {
            if let Ok(v) = std::fs::read_to_string(d.join(f)) {
                out.insert(d.join(f).display().to_string(), v);
            }
        }
    }
    out
}

/// The host facts whose change would be an escape.
fn host_snapshot() -> BTreeMap<&'static str, String> {
    let mut m = BTreeMap::new();
    for (k, p) in [
        ("hostname", "/proc/sys/kernel/hostname"),
        ("core_pattern", "/proc/sys/kernel/core_pattern"),
        ("modprobe", "/proc/sys/kernel/modprobe"),
        ("domainname", "/proc/sys/kernel/domainname"),
    ] {
        m.insert(k, std::fs::read_to_string(p).unwrap_or_default());
    }
    m
}

/// The addresses of the network attempts' test hosts, unique to this process (other test runs on the
/// machine hold others): "public" ones in 198.18.0.0/15 (the benchmarking range, never routed on the
/// internet), a private, a shared and a link-local one (never 169.254.169.254), and two IPv6 ones.
struct NetPlan {
    /// Allowed by CIDR; runs the "other DNS server".
    allowed: String,
    /// The answer for the allowed name.
    named: String,
    /// The public answer of the rebinding name.
    rebind_public: String,
    /// Public, allowed by nothing.
    denied: String,
    private: [String; 3],
    v6: [String; 2],
}

impl NetPlan {
    const NAME: &'static str = "allowed.escape.test";
    const REBIND: &'static str = "rebind.escape.test";

    fn new() -> Self {
        let k = std::process::id() % 4000;
        let public = |i: u32| std::net::Ipv4Addr::from(0xc612_0000 + k * 32 + i).to_string();
        let (hi, lo) = (k / 64, (k % 64) * 4 + 1);
        Self {
            allowed: public(1),
            named: public(2),
            rebind_public: public(3),
            denied: public(4),
            private: [
                format!("10.77.{hi}.{lo}"),
                format!("100.64.{hi}.{lo}"),
                format!("169.254.{}.{lo}", hi + 100),
            ],
            v6: [format!("fd77::{k:x}:1"), format!("2001:db8::{k:x}:1")],
        }
    }

    fn v4(&self) -> Vec<&str> {
        let mut v = vec![
            self.allowed.as_str(),
            self.named.as_str(),
            self.rebind_public.as_str(),
            self.denied.as_str(),
        ];
        v.extend(self.private.iter().map(String::as_str));
        v
    }
}

/// A non-loopback address of the host, when it has a route to one (no packet is sent).
fn host_ip() -> Option<String> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then(|| ip.to_string())
}

#[tokio::test(flavor = "multi_thread")]
#[allow(clippy::too_many_lines)] // one scenario, read top to bottom
async fn no_way_out_of_an_isolated_sandbox() {
    let Some((bin, probe_bin)) = prerequisites() else {
        return;
    };
    let t0 = Instant::now();
    let wall0 = SystemTime::now();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let token = random_token();
    let root_secret = PathBuf::from(format!("/root/.sandpit-escape-{token}"));
    std::fs::write(&root_secret, format!("root-secret-{token}\n")).unwrap();
    // A host process with a unique command line (sleep accepts any duration).
    let marker = format!(
        "{}",
        900_000 + u32::from_str_radix(&token[..4], 16).unwrap()
    );
    let sleeper = Command::new("sleep").arg(&marker).spawn().unwrap();
    let sleeper_pid = sleeper.id();
    // Secrets in the host's shared scratch places: the sandbox has its own /tmp and /dev/shm.
    let tmp_secret = PathBuf::from(format!("/tmp/sandpit-escape-{token}"));
    std::fs::write(&tmp_secret, format!("tmp-secret-{token}\n")).unwrap();
    let shm_secret = PathBuf::from(format!("/dev/shm/sandpit-escape-{token}"));
    let shm_ok = std::fs::write(&shm_secret, format!("shm-secret-{token}\n")).is_ok();
    // A host System V shared memory segment (IPC namespaces must hide it), removed at the end.
    let ipc_key = i32::from_str_radix(&token[..7], 16).unwrap();
    // SAFETY: creates a 4 KiB segment; removed with IPC_RMID below.
    let shm_id = unsafe { libc::shmget(ipc_key, 4096, libc::IPC_CREAT | 0o600) };
    assert!(shm_id >= 0, "shmget: {}", std::io::Error::last_os_error());
    let mut cleanup = Cleanup {
        daemon: None,
        sleeper: Some(sleeper),
        state_dir: state.clone(),
        bin: bin.clone(),
        files: vec![root_secret.clone(), tmp_secret.clone(), shm_secret.clone()],
        shm_id,
    };

    // Host listeners the sandbox must not reach: TCP on every address, and an abstract unix socket
    // (those live in the network namespace).
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let listener_port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let abstract_name = format!("sandpit-escape-{token}");
    let unix = {
        use std::os::linux::net::SocketAddrExt;
        let a =
            std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes()).unwrap();
        std::os::unix::net::UnixListener::bind_addr(&a).unwrap()
    };
    unix.set_nonblocking(true).unwrap();
    // A host unix socket by path: the target of the agent-socket symlink swap below.
    let host_sock = dir.path().join("host.sock");
    let path_listener = std::os::unix::net::UnixListener::bind(&host_sock).unwrap();
    path_listener.set_nonblocking(true).unwrap();
    let swap_hits = Arc::new(AtomicUsize::new(0));
    let hits = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acceptor = std::thread::spawn({
        let (hits, stop, swap_hits) = (hits.clone(), stop.clone(), swap_hits.clone());
        move || {
            while !stop.load(Ordering::Relaxed) {
                if path_listener.accept().is_ok() {
                    swap_hits.fetch_add(1, Ordering::Relaxed);
                }
                if listener.accept().is_ok() {
                    hits.fetch_add(1, Ordering::Relaxed);
                }
                if unix.accept().is_ok() {
                    hits.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    });

    // Test hosts for the network attempts, in a network namespace of their own, and the DNS server
    // the daemon's resolver forwards to: an allowed name, and one that rebinds to a private address.
    let plan = NetPlan::new();
    let v6: Vec<&str> = plan.v6.iter().map(String::as_str).collect();
    let hosts = TestHosts::start_with(
        21,
        &plan.v4(),
        &v6,
        &[("DNS_ANSWER", &plan.denied), ("DNS_BIND", &plan.allowed)],
    );
    let dns = TestDns::start_seq(&[
        (NetPlan::NAME, &[&[plan.named.as_str()]]),
        (
            NetPlan::REBIND,
            &[&[plan.rebind_public.as_str()], &[plan.private[0].as_str()]],
        ),
    ])
    .await;

    // The daemon, as an operator runs it: default backend, generated API key. The sandboxes' resolver
    // forwards to the test's DNS server (the test hosts' names).
    let serve = sandpit_testkit::Serve::builder(&bin, &state)
        .args(["--dns-upstream".to_owned(), dns.addr.to_string()])
        .start()
        .await;
    let daemon_pid = serve.pid();
    let port = serve.port;
    let key_path = state.join("api-key");
    let base = serve.base.clone();
    let key = serve.key.clone();
    let h: Value = reqwest::get(format!("{base}/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(h["backend"], "isolate", "{h}");
    cleanup.daemon = Some(serve);
    assert!(!key.is_empty());
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {key}").parse().unwrap(),
    );
    let api = Api {
        base,
        http: reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .unwrap(),
    };

    // The sandbox under attack and a neighbour with a marker file.
    let id = api.create().await;
    let other = api.create().await;
    let other_token = format!("neighbour-{token}");
    let r = api
        .exec(
            &other,
            json!({"argv": ["sh", "-c", "printf %s \"$1\" > /tmp/other-marker", "sh", other_token]}),
        )
        .await;
    assert_eq!(r["exit_code"], 0, "{r}");
    let h = handle(&state, &id);
    let other_pid = handle(&state, &other)["init_pid"].as_i64().unwrap();
    // The network: the probed sandbox gets an allow-list (a name, a rebinding name, one test host by
    // CIDR); the neighbour serves on port 7000, which the daemon reaches (positive control) and the
    // probed sandbox must not.
    let (s, p) = api
        .put(
            &format!("/v1/sandboxes/{id}/network"),
            json!({"egress": "deny", "allow_out": [NetPlan::NAME, NetPlan::REBIND, format!("{}/32", plan.allowed)]}),
        )
        .await;
    assert_eq!(s, 200, "{p}");
    let (s, p) = api
        .post(
            &format!("/v1/sandboxes/{other}/processes"),
            json!({"argv": ["python3", "-m", "http.server", "7000"], "user": "user"}),
        )
        .await;
    assert_eq!(s, 201, "{p}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = api
            .http
            .get(format!("{}/v1/sandboxes/{other}/ports/7000/", api.base))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the neighbour's server never came up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (sandbox_addr, host_if) = sandbox_link(h["init_pid"].as_i64().unwrap());
    let (other_addr, _) = sandbox_link(other_pid);
    let gateway = {
        let a: std::net::Ipv4Addr = sandbox_addr.parse().unwrap();
        // The block's gateway is its first address (blocks are /22-aligned).
        std::net::Ipv4Addr::from((u32::from(a) & !0x3ff) + 1).to_string()
    };
    // Positive controls: the paths handed to the probe are right, seen from the host.
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{other_pid}/root/tmp/other-marker")).unwrap(),
        other_token
    );
    let limits = cgroup_limits(&h);
    assert!(!limits.is_empty(), "no cgroup limit files found: {h}");
    let snapshot = host_snapshot();
    let secret_files = [&root_secret, &key_path, &tmp_secret];
    let secret_contents: Vec<Vec<u8>> = secret_files
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();

    // Upload the probe (a stripped copy when `strip` is there: smaller and faster to send) in chunks that
    // stay under the daemon's JSON body limit.
    let stripped = dir.path().join("probe-stripped");
    let probe_bytes = match Command::new("strip")
        .arg("-o")
        .arg(&stripped)
        .arg(&probe_bin)
        .status()
    {
        Ok(s) if s.success() => std::fs::read(&stripped).unwrap(),
        _ => std::fs::read(&probe_bin).unwrap(),
    };
    for (i, chunk) in probe_bytes.chunks(512 * 1024).enumerate() {
        let redirect = if i == 0 { ">" } else { ">>" };
        let r = api
            .exec(
                &id,
                json!({
                    "argv": ["sh", "-c", format!("cat {redirect} /tmp/probe && chmod 755 /tmp/probe")],
                    "stdin": {"bytes_b64": b64(chunk)},
                }),
            )
            .await;
        assert_eq!(r["exit_code"], 0, "upload: {r}");
    }
    let mut args = vec![
        "/tmp/probe".to_owned(),
        format!(
            "--secret=root:{}:root-secret-{token}",
            root_secret.display()
        ),
        format!("--secret=api-key:{}:{key}", key_path.display()),
        format!("--secret=tmp:{}:tmp-secret-{token}", tmp_secret.display()),
        format!("--ipc-key={ipc_key}"),
        format!("--host-pid={sleeper_pid}"),
        format!("--host-marker={marker}"),
        format!("--daemon-pid={daemon_pid}"),
        format!("--daemon-port={port}"),
        format!("--listener-port={listener_port}"),
        format!("--abstract={abstract_name}"),
        format!("--other-pid={other_pid}"),
        format!("--other-marker=/tmp/other-marker:{other_token}"),
    ];
    args.extend(host_ip().map(|ip| format!("--host-ip={ip}")));
    args.extend([
        format!("--net-addr={sandbox_addr}"),
        format!("--net-gateway={gateway}"),
        format!("--net-other={other_addr}:7000"),
        format!("--net-allowed={}", plan.allowed),
        format!("--net-denied={}", plan.denied),
        format!("--net-name={}", NetPlan::NAME),
        format!("--net-rebind={}", NetPlan::REBIND),
        format!("--net-tag={token}"),
    ]);
    args.extend(plan.private.iter().map(|a| format!("--net-private={a}")));
    args.extend(plan.v6.iter().map(|a| format!("--net-v6={a}")));
    if shm_ok {
        args.push(format!(
            "--secret=shm:{}:shm-secret-{token}",
            shm_secret.display()
        ));
    }

    // Root first: it plants the setuid / file-capability binaries the user run then executes.
    let mut results: BTreeMap<(String, String), ByRole> = BTreeMap::new();
    for who in ["root", "user"] {
        let r = api.exec(&id, json!({"argv": args, "user": who})).await;
        let stdout = r["stdout"].as_str().unwrap_or_default();
        assert_eq!(
            r["exit_code"], 0,
            "the probe as {who} did not finish cleanly: {r}"
        );
        let mut n = 0;
        for line in stdout.lines() {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("probe output as {who} is not JSON ({e}): {line}"));
            let name = v["name"].as_str().unwrap().to_owned();
            let category = v["category"].as_str().unwrap().to_owned();
            let blocked = v["blocked"].as_bool().unwrap();
            let detail = v["detail"].as_str().unwrap_or_default().to_owned();
            results
                .entry((category, name))
                .or_default()
                .insert(who, (blocked, detail));
            n += 1;
        }
        assert!(
            n >= 30,
            "the probe as {who} reported only {n} attempts: {r}"
        );
    }

    // Host-side checks: what the probe cannot judge from inside.
    let mut host_checks: Vec<(&str, bool, String)> = Vec::new();
    let run_dir = state.join(format!("isolate/sandboxes/{id}/run"));
    let run_entries: Vec<String> = std::fs::read_dir(&run_dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    host_checks.push((
        "nothing left in the host-side run dir",
        // Only the agent's socket, which the host bound there itself.
        run_entries.iter().all(|n| n == "agent.sock"),
        format!("{}: {run_entries:?}", run_dir.display()),
    ));
    // The agent socket lives in a host directory that root inside may write: swap it for a symlink to a
    // host socket (in the neighbour, which is not needed any more) and see whether the daemon follows it.
    // Also plant links to a host canary: deleting the sandbox must not follow them.
    let canary_dir = dir.path().join("canary");
    std::fs::create_dir_all(&canary_dir).unwrap();
    std::fs::write(canary_dir.join("file"), "canary").unwrap();
    let swap = format!(
        "cd /run/sandpit && ln -s {c} canary-dir && ln -s {c}/file canary-file && ln -s {c} log/canary-dir \
         && mv agent.sock .agent.sock.real && ln -s {} agent.sock && ls -la",
        host_sock.display(),
        c = canary_dir.display(),
    );
    let r = api
        .exec(&other, json!({"argv": ["sh", "-c", swap], "user": "root"}))
        .await;
    let swapped = r["exit_code"] == 0;
    for _ in 0..3 {
        let _ = api
            .http
            .get(format!("{}/v1/sandboxes/{other}/processes", api.base))
            .send()
            .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let followed = swap_hits.load(Ordering::Relaxed);
    host_checks.push((
        "daemon does not follow an agent.sock symlink planted by sandbox root",
        followed == 0,
        format!(
            "swap {}; the daemon connected to the host socket {followed} times",
            if swapped { "done" } else { "refused" }
        ),
    ));
    // The network, from the host: what reached the test hosts, what the host learnt on the veth.
    let log = hosts.log_text();
    host_checks.push((
        "root's raw control datagram reached the test host (the forged ones had a way)",
        log.contains(&format!("ctl-{token}")),
        String::new(),
    ));
    let forged: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains(&format!("spoof-{token}"))
                || l.contains(&format!("v6-{token}"))
                || l.contains(&format!("v6frame-{token}"))
                || l.starts_with(&format!("tcp {other_addr}"))
                || (l.starts_with("tcp ") && l.contains(':'))
        })
        .collect();
    host_checks.push((
        "no forged-source or IPv6 packet from the sandbox reached a test host",
        forged.is_empty(),
        format!("{forged:?}"),
    ));
    let neigh4 = ip_host(&["-4", "neigh", "show", "dev", &host_if]);
    let neigh6 = ip_host(&["-6", "neigh", "show", "dev", &host_if]);
    let learnt: Vec<&str> = neigh4
        .lines()
        .filter(|l| l.split_whitespace().next() != Some(sandbox_addr.as_str()))
        .chain(neigh6.lines())
        .collect();
    host_checks.push((
        "the host learnt no spoofed neighbour (ARP, ND) on the sandbox's veth",
        learnt.is_empty(),
        format!("{host_if}: {learnt:?}"),
    ));
    let v6_state = format!(
        "{}{}",
        ip_host(&["-6", "addr", "show", "dev", &host_if]),
        ip_host(&["-6", "route", "show", "dev", &host_if])
    );
    let routes4 = ip_host(&["-4", "route", "show", "dev", &host_if]);
    host_checks.push((
        "the host end of the veth has no IPv6 and only the sandbox's own route",
        v6_state.trim().is_empty()
            && routes4.lines().count() == 1
            && routes4.starts_with(&format!("{sandbox_addr} ")),
        format!("{host_if}: v6 {v6_state:?}; v4 routes {routes4:?}"),
    ));
    drop(hosts);
    drop(dns);

    let now = host_snapshot();
    for (k, v) in &snapshot {
        host_checks.push((
            k,
            now[k] == *v,
            format!("{:?} -> {:?}", v.trim(), now[k].trim()),
        ));
    }
    // Wall-clock steps show as a difference between wall and monotonic elapsed time.
    let skew = wall0.elapsed().unwrap_or_default().as_secs_f64() - t0.elapsed().as_secs_f64();
    host_checks.push((
        "host clock not stepped",
        skew.abs() < 2.0,
        format!("skew {skew:.3}s"),
    ));
    let sleeper_alive = cleanup
        .sleeper
        .as_mut()
        .unwrap()
        .try_wait()
        .unwrap()
        .is_none();
    host_checks.push((
        "host process alive",
        sleeper_alive,
        format!("pid {sleeper_pid}"),
    ));
    let daemon_alive = cleanup
        .daemon
        .as_mut()
        .unwrap()
        .child
        .try_wait()
        .unwrap()
        .is_none();
    host_checks.push(("daemon alive", daemon_alive, format!("pid {daemon_pid}")));
    host_checks.push((
        "neighbour sandbox alive",
        alive(other_pid),
        format!("init pid {other_pid}"),
    ));
    host_checks.push((
        "neighbour marker intact",
        std::fs::read_to_string(format!("/proc/{other_pid}/root/tmp/other-marker"))
            .is_ok_and(|s| s == other_token),
        String::new(),
    ));
    let got = hits.load(Ordering::Relaxed);
    host_checks.push((
        "host listeners got no connection",
        got == 0,
        format!("{got} connections"),
    ));
    let unchanged = secret_files
        .iter()
        .zip(&secret_contents)
        .all(|(p, c)| std::fs::read(p).is_ok_and(|n| n == *c));
    host_checks.push(("host secret files unchanged", unchanged, String::new()));
    let limits_now = cgroup_limits(&h);
    host_checks.push((
        "sandbox cgroup limits unchanged",
        limits_now == limits,
        format!("{limits_now:?}"),
    ));
    let (s, info) = api
        .post(&format!("/v1/sandboxes/{id}/connect"), json!({}))
        .await;
    host_checks.push((
        "probed sandbox still served",
        s == 200,
        format!("{s} {}", info["state"]),
    ));
    stop.store(true, Ordering::Relaxed);
    acceptor.join().unwrap();
    for sb in [&id, &other] {
        let r = api
            .http
            .delete(format!("{}/v1/sandboxes/{sb}", api.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "delete {sb}");
    }
    host_checks.push((
        "deleting a sandbox does not follow links planted in its run dir",
        std::fs::read_to_string(canary_dir.join("file")).is_ok_and(|c| c == "canary"),
        format!("{}", canary_dir.display()),
    ));

    // The table for docs/reliability.md, then the verdict.
    let mark = |r: Option<&(bool, String)>| match r {
        Some((true, _)) => "blocked",
        Some((false, _)) => "**NOT BLOCKED**",
        None => "—",
    };
    eprintln!("\n| category | attempt | as user | as root | detail (root run, else user run) |");
    eprintln!("|---|---|---|---|---|");
    let mut escapes = Vec::new();
    for ((category, name), by) in &results {
        // Root is the stronger attacker: its detail says more.
        let detail = by
            .get("root")
            .or_else(|| by.get("user"))
            .map(|(_, d)| d.replace('|', "\\|"))
            .unwrap_or_default();
        let detail: String = detail.chars().take(260).collect();
        eprintln!(
            "| {category} | `{name}` | {} | {} | {detail} |",
            mark(by.get("user")),
            mark(by.get("root"))
        );
        for (who, (blocked, d)) in by {
            if !blocked {
                escapes.push(format!("{name} as {who}: {d}"));
            }
        }
    }
    eprintln!("\n| host-side check | result | detail |\n|---|---|---|");
    for (name, ok, d) in &host_checks {
        eprintln!(
            "| {name} | {} | {} |",
            if *ok { "ok" } else { "**FAILED**" },
            d.replace('|', "\\|")
        );
        if !ok {
            escapes.push(format!("host check {name}: {d}"));
        }
    }
    eprintln!(
        "\n{} distinct attempts, {} host-side checks, {:?}",
        results.len(),
        host_checks.len(),
        t0.elapsed()
    );

    drop(cleanup);
    assert!(
        results.len() >= 30,
        "only {} distinct attempts",
        results.len()
    );
    assert!(escapes.is_empty(), "ESCAPES:\n{}", escapes.join("\n"));
}
